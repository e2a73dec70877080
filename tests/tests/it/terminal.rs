//! What an operator at a terminal sees: progress lines on an interactive terminal (a
//! pseudo-terminal made by util-linux `script`), none when stderr is a pipe or the output
//! is JSON, and the documented exit codes.

use lakevault_tests::Lab;
use lakevault_tests::lake::{self, LakeSpec};
use lakevault_tests::scenario::{bin_dir, coordinator};
use std::path::Path;
use std::process::Command;

/// Runs the coordinator with its stdin, stdout and stderr on a pseudo-terminal and returns
/// everything the terminal received, with the exit code.
fn on_a_terminal(config: &Path, args: &[&str]) -> (i32, String) {
    let bin = bin_dir().expect("binaries").join("lakevault-coordinator");
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let command = std::iter::once(quote(&bin.to_string_lossy()))
        .chain(["--config".to_string(), quote(&config.to_string_lossy())])
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env_remove("LAKEVAULT_NO_PROGRESS")
        .env_remove("RUST_LOG")
        .output()
        .expect("util-linux `script` runs the coordinator on a pseudo-terminal");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_lines_show_on_a_terminal_and_nowhere_else() {
    let lab = Lab::start("terminal", &["data"]).expect("lab");
    let spec = LakeSpec {
        containers: vec!["data".into()],
        blobs: 400,
        large_bytes: 0,
        seed: 31,
    };
    lake::seed(&lab.src, &spec).await.expect("seed");

    // Interactive: the bar counts blobs as they are compared, then the table follows.
    let (code, screen) = on_a_terminal(&lab.path, &["backup", "--dry-run"]);
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("blobs compared"),
        "no progress line:\n{screen}"
    );
    assert!(
        screen.contains("400"),
        "the plan's counts are missing:\n{screen}"
    );

    // JSON on a terminal: no bar, and stdout is exactly one JSON document.
    let (code, screen) = on_a_terminal(&lab.path, &["backup", "--dry-run", "--output", "json"]);
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("blobs compared"), "{screen}");

    // Pipes: no bar either, however long the run.
    let out = coordinator(&lab.path)
        .expect("bin")
        .args(["backup", "--dry-run"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("blobs compared"), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "terminal control output on a pipe: {stderr:?}"
    );

    // Switched off explicitly on a terminal.
    let bin = bin_dir().expect("binaries").join("lakevault-coordinator");
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(format!(
            "LAKEVAULT_NO_PROGRESS=1 '{}' --config '{}' backup --dry-run",
            bin.display(),
            lab.path.display()
        ))
        .arg("/dev/null")
        .env("TERM", "xterm-256color")
        .output()
        .expect("script");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(!screen.contains("blobs compared"), "{screen}");

    // verify counts what it checked the same way.
    let (code, screen) = on_a_terminal(&lab.path, &["verify"]);
    // Nothing was copied (dry runs only): verify reports the blobs missing, exit code 1.
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("blobs checked"), "{screen}");
}

#[test]
fn exit_codes_are_documented_and_usage_errors_exit_2() {
    let bin = bin_dir().expect("binaries");
    for name in ["lakevault-coordinator", "lakevault-worker"] {
        let help = Command::new(bin.join(name))
            .arg("--help")
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&help.stdout);
        for line in [
            "Exit codes:",
            "0  success",
            "1  finished with failures",
            "2  usage or configuration error",
        ] {
            assert!(text.contains(line), "{name} --help lacks `{line}`:\n{text}");
        }
        let usage = Command::new(bin.join(name))
            .arg("--no-such-flag")
            .output()
            .expect("run");
        assert_eq!(usage.status.code(), Some(2), "{name} with an unknown flag");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("lakevault.toml");
    std::fs::write(&config, "[queue]\nname = 42\n").expect("write");
    let out = coordinator(&config)
        .expect("bin")
        .args(["backup", "--dry-run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "a bad config exits 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`queue.name`"),
        "the message names the field: {stderr}"
    );
}
