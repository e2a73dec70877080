//! lakevault worker: receives work from the queue — copy batches, which it copies blob by
//! blob server-side into the backup account, and scan tasks, which it lists, diffs and
//! turns into copy batches — and settles every message exactly once.

pub mod cli;
pub mod copy;
pub mod health;
pub mod message;
pub mod poison;
pub mod run;
pub mod scan;
