//! lakevault worker: receives batched copy work from the queue and copies each blob
//! server-side into the backup account.

pub mod cli;
pub mod copy;
pub mod message;
pub mod poison;
pub mod run;
