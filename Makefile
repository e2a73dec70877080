# lakevault: two commands on a fresh machine.
#   make demo   back up a sample data lake on a local Azure Storage emulator, verify it
#   make test   unit, property and Azurite integration tests
#   make bench  coordinator list + diff at 50k/100k/200k blobs; writes docs/benchmarks.md (slow)
.PHONY: demo test bench azurite build fmt lint clean

CARGO ?= cargo

azurite:
	bash scripts/azurite.sh install

build:
	$(CARGO) build --workspace --bins

demo: azurite build
	./target/debug/lakevault-demo

test: azurite build
	$(CARGO) test --workspace --all-targets

bench:
	bash scripts/bench.sh

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean:
	$(CARGO) clean
