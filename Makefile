# shoal — top-level commands. `make run` starts the main example server; `make test` runs
# every test and check of the project (what CI runs).

CARGO ?= cargo
PYTHON ?= python3

.PHONY: all run run-echo test lint test-rust bench-echo bench-echo-quick bench-http clean

all:
	$(CARGO) build --release --workspace --examples

## Build in release mode and start the main example server (HTTP hello) on 127.0.0.1:8080.
run:
	$(CARGO) build --release -p shoal-core --example http_hello
	./target/release/examples/http_hello --host 127.0.0.1 --port 8080

## The echo example on 127.0.0.1:9000.
run-echo:
	$(CARGO) build --release -p shoal-core --example echo
	./target/release/examples/echo --host 127.0.0.1 --port 9000

## Every test and check.
test: lint test-rust

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --workspace

test-rust:
	$(CARGO) test --workspace

## Echo benchmark against the peers (bench/echo.py; see bench/RESULTS.md).
bench-echo:
	$(PYTHON) bench/echo.py --out bench/out/echo.md

bench-echo-quick:
	$(PYTHON) bench/echo.py --quick --servers shoal,epoll

## HTTP benchmark against the peers (bench/http.py; installs wrk, Go and fasthttp).
bench-http:
	$(PYTHON) bench/http.py --out bench/out/http.md

clean:
	$(CARGO) clean
