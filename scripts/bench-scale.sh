#!/usr/bin/env bash
# Plans of 1 to 100 million blobs on the synthetic storage endpoint (tests/src/synthetic.rs,
# tests/src/bin/lakevault-scale/): the coordinator's peak RSS, CPU per listed entry and
# wall time, default against a single pass; with --scan-workers, distributed scans by
# fleets of worker processes. Not part of `make test`: it measures.
#   scripts/bench-scale.sh [--sizes 1000000,10000000,100000000] [--latency-ms 30]
#                          [--config 'LABEL=ARGS']... [--max-size LABEL=N]... [--report FILE]
#                          [--scan-workers 1,4,16 [--worker-prefetch N]] [--layout D,Y,F]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/azurite.sh install
cargo build --release -p lakevault-coordinator -p lakevault-worker -p lakevault-tests \
  --bin lakevault-coordinator --bin lakevault-worker --bin lakevault-scale

target_dir="${CARGO_TARGET_DIR:-$root/target}"
exec "$target_dir/release/lakevault-scale" "$@"
