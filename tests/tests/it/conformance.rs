//! The storage seam's conformance suite, on both stores: the in-memory one the unit tests
//! use, and the emulator through the Azure SDK implementation.

use lakevault_common::store::azure::AzureStore;
use lakevault_common::store::memory::World;
use lakevault_tests::Lab;
use lakevault_tests::conformance::{Quirks, run_all};

#[tokio::test]
async fn the_in_memory_store_conforms() {
    let world = World::new();
    let (source, backup) = (world.account("source"), world.account("backup"));
    run_all(&source, &backup, "", Quirks::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_conforms() {
    let lab = Lab::start("conformance", &["unused"]).expect("lab");
    let (source, backup) = (
        AzureStore::new(lab.src.clone()),
        AzureStore::new(lab.bak.clone()),
    );
    run_all(&source, &backup, "", Quirks::EMULATOR).await;
}
