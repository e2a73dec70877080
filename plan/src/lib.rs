//! lakevault planning engine: what both binaries need to decide what to copy.
//!
//! Streaming flat and hierarchical listings (`listing`), the merge-join diff of source
//! against backup in constant memory (`diff`), shard planning (`shard`), scanning one
//! shard: list, diff, snapshot, batch, enqueue (`scan`), incremental watermarks
//! (`watermark`), which versions a restore or a purge takes (`versions`), and retention
//! for one backup container (`purge`). The coordinator runs scans itself; workers run them
//! as scan tasks of a distributed scan. Neither binary's HTTP service, CLI or table printing lives here, so
//! the worker links the planning engine without linking the coordinator.

pub mod diff;
pub mod listing;
pub mod purge;
pub mod scan;
pub mod shard;
pub mod versions;
pub mod watermark;
