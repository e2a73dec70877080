//! lakevault's integration tests, one binary with a module per area: they run the real
//! binaries and the SDK against the emulator (started per test on loopback ports by the
//! harness in `tests/src/azurite.rs`), the fault proxy and the in-memory store.

mod auth;
mod backup_e2e;
mod bad_input;
mod conformance;
mod data_safety;
mod deploy_configs;
mod entra;
mod faults;
mod history;
mod hns_facade;
mod incremental;
mod lease;
mod ledger;
mod names;
mod namespaces;
mod network_faults;
mod purge;
mod put_from_url;
mod redrive;
mod restore;
mod selection;
mod serve;
mod sharding;
mod snapshots;
mod soak;
mod synthetic;
mod telemetry;
mod terminal;
mod tombstones;
mod verify;
mod worker_options;
