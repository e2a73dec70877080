//! lakevault planning engine: what both binaries need to decide what to copy.
//!
//! Streaming flat and hierarchical listings (`listing`), the merge-join diff of source
//! against backup in constant memory (`diff`), shard planning (`shard`), scanning one
//! shard: list, diff, snapshot, batch, enqueue (`scan`), incremental watermarks
//! (`watermark`), which versions a restore or a purge takes (`versions`), retention
//! for one backup container (`purge`), and the order of accounts with a hierarchical
//! namespace with the walk that brings them into the flat order (`hns`). The coordinator runs scans itself; workers run them
//! as scan tasks of a distributed scan. Neither binary's HTTP service, CLI or table printing lives here, so
//! the worker links the planning engine without linking the coordinator.

pub mod diff;
pub mod hns;
pub mod listing;
pub mod page;
pub mod probe;
pub mod purge;
pub mod scan;
pub mod shard;
pub mod versions;
pub mod watermark;
