# lakevault: two commands on a fresh machine.
#   make demo   back up a sample data lake on a local Azure Storage emulator, verify it
#   make test   unit, property and Azurite integration tests, and the offline checks of
#               the deployment files (docker/, infra/: make check-infra)
#   make bench  coordinator list + diff at 50k/100k/200k blobs; writes docs/benchmarks.md (slow)
.PHONY: demo test bench azurite build check-infra fmt lint clean

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
