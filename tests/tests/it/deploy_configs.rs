//! The topology files shipped for deployment (`infra/**/*.toml`: the sources of the
//! Kubernetes ConfigMaps and the VM scale set's file, which `infra/vmss/cloud-init.yaml`
//! embeds byte for byte, checked by `scripts/check-infra.sh`) are accepted by the parser
//! the binaries use, so a deployment cannot ship a config its processes refuse at start-up.

use lakevault_common::config::Config;
use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            // Third-party schemas vendored for the offline checks, not lakevault configs.
            if path.file_name().is_some_and(|n| n == "vendor") {
                continue;
            }
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn deployment_configs_are_accepted() {
    let infra = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra");
    let mut files = Vec::new();
    toml_files(&infra, &mut files);
    files.sort();
    assert!(
        files.len() >= 3,
        "expected the Kubernetes and VM scale set configs under infra/, found {files:?}"
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            Config::load(f)
                .err()
                .map(|e| format!("{}: {e}", f.display()))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "deployment configs refused by the config parser:\n{}",
        failures.join("\n")
    );
}
