#!/usr/bin/env bash
# Fails when Cargo.lock resolves a crate lakevault must not depend on, directly or through
# another crate:
#   azure_storage_blobs, azure_storage_queues  the deprecated unofficial 0.x Azure crates
#                                             (lakevault uses the official 1.x SDK)
#   backoff                                   unmaintained (RUSTSEC-2025-0012); use backon
#                                             or the SDK pipeline's retry
# Reads the lockfile, so it needs no network and sees every target's dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
banned='azure_storage_blobs|azure_storage_queues|backoff'
found=$(grep -E "^name = \"(${banned})\"$" Cargo.lock | sed -E 's/^name = "(.*)"$/\1/' | sort -u || true)
if [[ -n "$found" ]]; then
    for crate in $found; do
        echo "banned crate in Cargo.lock: $crate (what pulls it in: cargo tree --workspace -i $crate)" >&2
    done
    exit 1
fi
echo "banned crates: none in Cargo.lock"
