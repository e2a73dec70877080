#!/usr/bin/env bash
# lakevault end to end on one local Azurite, next to a bare Copy Blob From URL loop (the
# ceiling) and rclone sync, with the same seeded blobs (tests/src/bin/lakevault-e2e/):
# wall time, blobs/s, CPU per blob, peak RSS, requests per blob, the emulator's CPU, and
# the no-change reruns next to a bare listing of both sides. Not part of `make test`: it
# measures, it does not assert. Writes target/bench/e2e.md, e2e.json and e2e-*.svg.
#   scripts/bench-e2e.sh [--small 20000] [--medium 500] [--no-large] [--large-mib 1024]
#                        [--concurrency 32] [--workers 1,2,4] [--rounds 3] [--out DIR] [--docs]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/azurite.sh install
rclone="$(bash scripts/rclone.sh install)"
cargo build --release -p lakevault-coordinator -p lakevault-worker -p lakevault-tests \
  --bin lakevault-coordinator --bin lakevault-worker --bin lakevault-e2e

# The bench finds the coordinator and the worker next to itself, in the same target directory.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
exec "$target_dir/release/lakevault-e2e" --rclone "$rclone" "$@"
