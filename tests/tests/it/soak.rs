//! The short soak (`make soak` runs the long one): 1,000 blobs backed up while a worker is
//! killed every 2 s, writes to the backup fail or lose their answers, and a writer rewrites
//! and deletes a tenth of the lake. Nothing may be lost, poisoned or restored wrong.

use lakevault_tests::soak::{self, SoakSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing() {
    let report = soak::run(&SoakSpec::short()).await.expect("soak");
    println!("{}", soak::describe(&report));
    assert!(report.kills >= 3, "{report:#?}");
    assert!(report.faults_injected > 0, "{report:#?}");
    assert!(report.rewritten > 0 && report.deleted > 0, "{report:#?}");
    assert_eq!(report.lost, 0, "{report:#?}");
    assert_eq!(report.poisoned, 0, "{report:#?}");
    assert_eq!(report.verify_deep_exit, 0, "{report:#?}");
    assert!(report.restored_checked > 0, "{report:#?}");
    assert_eq!(report.restore_mismatches, 0, "{report:#?}");
}
