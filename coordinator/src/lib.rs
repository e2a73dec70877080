//! lakevault coordinator: lists what to back up, splits containers into shards, diffs
//! source against backup in constant memory, and enqueues batched copy work for the
//! workers. The scan of one shard (`scan`) is also what workers run for scan tasks.

pub mod backup;
pub mod cli;
pub mod diff;
pub mod listing;
pub mod purge;
pub mod redrive;
pub mod restore;
pub mod scan;
pub mod serve;
pub mod shard;
pub mod verify;
pub mod watermark;
