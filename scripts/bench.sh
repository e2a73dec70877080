#!/usr/bin/env bash
# Benchmarks the coordinator's list + diff at scale on a local Azurite and writes
# target/bench/emulator-plan.md (see tests/src/bin/lakevault-bench.rs). Not part of `make test`:
# it takes minutes and measures, it does not assert.
#   scripts/bench.sh [--sizes 50000,100000,200000] [--repeats 3] [--compare "ARGS"]...
#                    [--coordinator-arg ARG]... [--label NAME]... [--report FILE]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/azurite.sh install
# The in-memory emulator holds every blob of both accounts (about 400k at the default
# sizes) on the Node.js heap; give it room unless the caller chose a limit.
export NODE_OPTIONS="${NODE_OPTIONS:---max-old-space-size=8192}"
cargo build --release -p lakevault-coordinator -p lakevault-tests \
  --bin lakevault-coordinator --bin lakevault-bench

# The bench finds the coordinator next to itself, in the same target directory.
target_dir="${CARGO_TARGET_DIR:-$root/target}"
exec "$target_dir/release/lakevault-bench" "$@"
