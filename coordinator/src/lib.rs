//! lakevault coordinator: lists what to back up, splits containers into shards, diffs
//! source against backup in constant memory, and enqueues batched copy work for the
//! workers. Listing, diff, shards, shard scans and watermarks are the planning engine
//! (`lakevault-plan`), which workers also run for scan tasks; the coordinator re-exports
//! those modules so its own paths (`crate::scan`, ...) read the same.

pub mod backup;
pub mod cli;
pub mod purge;
pub mod redrive;
pub mod restore;
pub mod serve;
pub mod verify;

pub use lakevault_plan::{diff, listing, probe, scan, shard, watermark};
