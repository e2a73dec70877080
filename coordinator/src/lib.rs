//! lakevault coordinator: lists what to back up, diffs source against backup in constant
//! memory, and enqueues batched copy work for the workers.

pub mod backup;
pub mod cli;
pub mod diff;
pub mod listing;
pub mod serve;
pub mod watermark;
