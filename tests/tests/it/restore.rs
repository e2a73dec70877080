//! The restore drill: several backup cycles while the source changes (creates, overwrites,
//! deletes, re-creates), recording what the source held after each cycle; then a restore
//! as of each point into a fresh container, run by two real workers, compared blob by
//! blob (SHA-256 of the content, user metadata and tags) with the recorded state. The lake
//! has 1,000 blobs with awkward names and one blob above 256 MiB (the ranged copy path).

use azure_core::http::RequestContent;
use futures::StreamExt;
use lakevault_common::storage::StorageAccount;
use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{backup_pass, checked, coordinator, drain};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// What a blob holds, as far as a restore must bring it back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    sha256: String,
    metadata: BTreeMap<String, String>,
    /// User tags (lakevault's record left out).
    tags: BTreeMap<String, String>,
}

/// Every blob of a container, hashed.
async fn state(account: &StorageAccount, container: &str) -> BTreeMap<String, Held> {
    let entries = lake::entries(account, container, false)
        .await
        .expect("list");
    let hashed: Vec<(String, Held)> = futures::stream::iter(entries)
        .map(|e| async move {
            let (sha256, _) = lake::sha256_of(account, container, &e.name)
                .await
                .expect("hash");
            let mut tags = e.tags;
            tags.remove("lakevault");
            (
                e.name,
                Held {
                    sha256,
                    metadata: e.metadata,
                    tags,
                },
            )
        })
        .buffer_unordered(16)
        .collect()
        .await;
    hashed.into_iter().collect()
}

async fn put(lab: &Lab, name: &str, body: &str) {
    lab.src
        .blob("data", name)
        .expect("client")
        .upload(RequestContent::from(body.as_bytes().to_vec()), None)
        .await
        .unwrap_or_else(|e| panic!("upload {name}: {e}"));
}

async fn delete(lab: &Lab, name: &str) {
    lab.src
        .blob("data", name)
        .expect("client")
        .delete(None)
        .await
        .unwrap_or_else(|e| panic!("delete {name}: {e}"));
}

/// Names the lake does not have: empty segments, a trailing dot, `..`, reserved URL
/// characters.
const AWKWARD: &[&str] = &[
    "a//double slash.txt",
    "trailing dot.",
    "dots/../up.txt",
    "reserved ?#[]@!$&'()*+,;=.txt",
];

/// One backup cycle; returns the time just after it, which restores use.
fn cycle(lab: &Lab) -> OffsetDateTime {
    let pass = backup_pass(&lab.path, 2).expect("backup");
    assert_eq!(pass.poisoned, 0, "{pass:?}");
    // Backup times are recorded at copy time, all before this instant.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    OffsetDateTime::now_utc()
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drill_brings_back_each_point_in_time() {
    let lab = Lab::start("drill", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 1000,
        large_bytes: 260 * 1024 * 1024,
        seed: 41,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");
    for name in AWKWARD {
        put(&lab, name, &format!("first {name}")).await;
    }
    let names: Vec<String> = (0..1000).map(lake::blob_name).collect();

    // Point 1: the seeded lake.
    let t1 = cycle(&lab);
    let s1 = state(&lab.src, "data").await;
    assert_eq!(s1.len(), 1000 + 1 + AWKWARD.len());

    // Point 2: overwrites, deletions (a whole directory and single blobs), new blobs.
    lake::modify(&lab.src, &spec, 20, 1).await.expect("modify");
    for name in names.iter().filter(|n| n.starts_with("percent/")) {
        delete(&lab, name).await;
    }
    delete(&lab, AWKWARD[1]).await;
    for i in 0..10 {
        put(&lab, &format!("new/in point 2 #{i}.txt"), "point two").await;
    }
    put(&lab, AWKWARD[0], "second version").await;
    let t2 = cycle(&lab);
    let s2 = state(&lab.src, "data").await;

    // Point 3: deleted blobs come back with new content, more overwrites and deletions.
    let percent: Vec<&String> = names.iter().filter(|n| n.starts_with("percent/")).collect();
    for name in percent.iter().take(5) {
        put(&lab, name, "recreated in point 3").await;
    }
    put(&lab, AWKWARD[1], "recreated").await;
    lake::modify(&lab.src, &spec, 10, 2).await.expect("modify");
    for i in 0..10 {
        delete(&lab, &format!("new/in point 2 #{i}.txt")).await;
    }
    let t3 = cycle(&lab);
    let s3 = state(&lab.src, "data").await;
    assert_ne!(s1, s2);
    assert_ne!(s2, s3);

    let mut last_job = String::new();
    for (point, (at, expected)) in [(t1, &s1), (t2, &s2), (t3, &s3)].into_iter().enumerate() {
        let target = format!("restored-{}", point + 1);
        let out = checked(
            coordinator(&lab.path)
                .expect("bin")
                .args([
                    "restore",
                    "--from",
                    "data",
                    "--as-of",
                    &rfc3339(at),
                    "--to",
                    &format!("source/{target}"),
                    "--output",
                    "json",
                ])
                .output()
                .expect("restore"),
            "restore",
        )
        .expect("restore");
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
        assert_eq!(
            plan["restore"].as_u64(),
            Some(expected.len() as u64),
            "point {}: {plan}",
            point + 1
        );
        last_job = plan["job_id"].as_str().expect("job").to_string();
        let pass = drain(&lab.path, 2, &[]).expect("workers");
        assert_eq!(pass.poisoned, 0, "{pass:?}");
        let restored = state(&lab.src, &target).await;
        assert_eq!(
            restored.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "point {}: the restored names are the names the source had",
            point + 1
        );
        for (name, held) in expected {
            assert_eq!(&restored[name], held, "point {}: {name}", point + 1);
        }
    }

    // The last restore is a job like any other.
    let out = checked(
        coordinator(&lab.path)
            .expect("bin")
            .args(["status", &last_job, "--output", "json"])
            .output()
            .expect("status"),
        "status",
    )
    .expect("status");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(status["state"], "completed", "{status}");
    assert_eq!(status["planned_items"].as_u64(), Some(s3.len() as u64));
    assert_eq!(status["done"].as_u64(), Some(s3.len() as u64));

    // Restoring over existing blobs needs --overwrite: point 1 restored into the point 3
    // container leaves every blob that exists there alone and adds only the missing ones.
    let out = checked(
        coordinator(&lab.path)
            .expect("bin")
            .args([
                "restore",
                "--from",
                "data",
                "--as-of",
                &rfc3339(t1),
                "--to",
                "source/restored-3",
                "--output",
                "json",
            ])
            .output()
            .expect("restore"),
        "restore",
    )
    .expect("restore");
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan JSON");
    assert_eq!(plan["restore"].as_u64(), Some(s1.len() as u64), "{plan}");
    let pass = drain(&lab.path, 2, &[]).expect("workers");
    assert_eq!(pass.poisoned, 0, "{pass:?}");
    let merged = state(&lab.src, "restored-3").await;
    for (name, held) in &merged {
        let expected = s3.get(name).or_else(|| s1.get(name)).expect("known name");
        assert_eq!(held, expected, "{name}: existing blobs are not replaced");
    }
    let added = s1.keys().filter(|n| !s3.contains_key(*n)).count();
    assert!(added > 0);
    assert_eq!(merged.len(), s3.len() + added);
}
