# lakevault: two commands on a fresh machine.
#   make demo   back up a sample data lake on a local Azure Storage emulator, verify it
#   make test   unit, property and Azurite integration tests, and the offline checks of
#               the deployment files (docker/, infra/: make check-infra)
#   make bench  coordinator list + diff at 50k/100k/200k blobs on the emulator (slow)
#   make bench-hns  listing requests of an ADLS Gen2 directory walk next to a flat listing
#   make bench-scale  plans of 1 to 10 million blobs on a synthetic storage endpoint
#   make bench-fleet  distributed scans by 1, 4 and 16 worker processes on the same endpoint
#   make bench-e2e  lakevault next to a bare copy loop and rclone on one emulator (slow)
#   make soak   20,000 blobs backed up under kills, faults and a writer; nothing may be lost (slow)
.PHONY: demo test bench bench-hns bench-scale bench-fleet bench-e2e soak azurite build check-infra fmt lint clean

CARGO ?= cargo

azurite:
	bash scripts/azurite.sh install

build:
	$(CARGO) build --workspace --bins

demo: azurite build
	./target/debug/lakevault-demo

# Dockerfiles, Kubernetes manifests (Kubernetes and KEDA schemas), systemd unit,
# cloud-init and Bicep, validated offline with pinned tools (scripts/check-infra.sh); then
# each file is broken in a copy to prove the checks catch it.
check-infra: build
	bash scripts/check-infra.sh
	bash scripts/check-infra.sh --self-test

test: azurite build check-infra
	$(CARGO) test --workspace --all-targets

bench:
	bash scripts/bench.sh

# Listing requests of an HNS walk next to a flat listing of the same lake (counts, not
# times). Writes target/hns-listing.md.
bench-hns: azurite
	$(CARGO) run --release -p lakevault-tests --bin lakevault-hns-listing

# The coordinator's plan of millions of blobs, List Blobs answered by a generator with
# a latency per page (tests/src/synthetic.rs). Writes target/bench/scale.md and .jsonl.
bench-scale:
	bash scripts/bench-scale.sh

# Distributed scans of one generated lake (FLEET_LAYOUT: 120 directories of 18 days of
# 1,000 files) by fleets of 1, 4 and 16 worker processes, each scanning one shard at a
# time, at a latency per page high enough that this host's CPUs are not what limits the
# fleet. Writes target/bench/fleet.md and .jsonl.
FLEET_LAYOUT ?= 120,18,1000
bench-fleet:
	bash scripts/bench-scale.sh --scan-workers 1,4,16 --layout $(FLEET_LAYOUT) \
	  --latency-ms 500 --report target/bench/fleet.md

# Copies of the same seeded blobs (20,000 × 1 KiB, 500 × 1 MiB, one 1 GiB) by a bare Copy
# Blob From URL loop, rclone sync and lakevault with 1, 2, 4 workers, on one Azurite; then
# the no-change reruns next to a bare listing; the small blobs in 3 rounds, the targets
# judged on the rounds' medians. Writes target/bench/e2e.md, .json and
# e2e-*.svg. Flags through E2E_ARGS, e.g. make bench-e2e E2E_ARGS="--no-large --docs".
bench-e2e:
	bash scripts/bench-e2e.sh $(E2E_ARGS)

# 20,000 blobs under kills, faults and a writer; not part of `make test` (its short
# version is: it::soak). Writes target/soak.json.
soak: azurite build
	$(CARGO) build --release -p lakevault-coordinator -p lakevault-worker --bins
	$(CARGO) build --release -p lakevault-tests --bin lakevault-soak
	./target/release/lakevault-soak

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	python3 scripts/check-deps.py --selftest
	python3 scripts/check-deps.py

clean:
	$(CARGO) clean
