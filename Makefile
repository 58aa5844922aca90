# shoal — top-level commands. `make run` starts the main example server; `make test` runs
# every test and check of the project (what CI runs); `make` builds libshoal and the examples.

CARGO ?= cargo
PYTHON ?= python3
CC ?= cc
PREFIX ?= /usr/local
LDCONFIG ?= ldconfig
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MAJOR := $(firstword $(subst ., ,$(VERSION)))
LIBDIR := target/release
C_SRCS := $(wildcard examples/c/*.c)
C_BINS := $(patsubst examples/c/%.c,target/c/%,$(C_SRCS))
C_FLAGS := -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Werror -Iinclude

VENV := target/venv
VPY := $(VENV)/bin/python

.PHONY: all lib examples run run-rust run-python run-echo test lint test-rust test-python \
	wheel header install test-faults faults-quick fuzz soak \
	bench bench-quick bench-echo bench-echo-quick bench-http bench-python bench-python-quick \
	bench-callgrind clean

all: lib examples

## libshoal.so (SONAME libshoal.so.$(MAJOR)) and libshoal.a in target/release.
lib:
	$(CARGO) build --release -p shoal-capi
	ln -sf libshoal.so $(LIBDIR)/libshoal.so.$(MAJOR)

## The examples: Rust ones in target/release/examples, C ones (linked to libshoal.so) in
## target/c.
examples: lib $(C_BINS)
	$(CARGO) build --release -p shoal-core --examples

target/c/%: examples/c/%.c examples/c/cli.h include/shoal.h lib
	@mkdir -p target/c
	$(CC) $(C_FLAGS) $< -o $@ -L$(LIBDIR) -Wl,-rpath,$(abspath $(LIBDIR)) -lshoal -lpthread

## Build in release mode and start the main example server (HTTP hello, the C version:
## examples/c/http_hello.c against libshoal.so) on 127.0.0.1:8080.
run: target/c/http_hello
	./target/c/http_hello --host 127.0.0.1 --port 8080

## The same server written in Rust (examples/rust/http_hello.rs).
run-rust:
	$(CARGO) build --release -p shoal-core --example http_hello
	./target/release/examples/http_hello --host 127.0.0.1 --port 8080

run-echo:
	$(CARGO) build --release -p shoal-core --example echo
	./target/release/examples/echo --host 127.0.0.1 --port 9000

## The same server written in Python (examples/python/http_hello.py, on the built wheel).
run-python: wheel
	$(VPY) examples/python/http_hello.py --host 127.0.0.1 --port 8080

## Every test and check.
test: lint test-rust test-python faults-quick bench-quick

## The fast subset of the fault suite (no external attack tools), against the release examples.
faults-quick: examples wheel
	$(PYTHON) faults/run.py --quick

## The whole fault and attack suite (installs slowhttptest when missing); report in
## target/faults/report.md.
test-faults: examples wheel
	faults/setup.sh
	$(PYTHON) faults/run.py --report target/faults/report.md

## Fuzz each target for FUZZ_SECONDS (default 60) with cargo-fuzz, when a nightly toolchain is
## installed (skipped with a message otherwise); crashes land in fuzz/artifacts.
FUZZ_SECONDS ?= 60
fuzz:
	@if ! rustup run nightly rustc --version >/dev/null 2>&1; then \
		echo "fuzz: no nightly toolchain; skipping (rustup toolchain install nightly)"; exit 0; fi; \
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz; \
	for t in parse_head chunked connection; do \
		mkdir -p target/fuzz-corpus/$$t && \
		(cd fuzz && $(CARGO) +nightly fuzz run $$t ../target/fuzz-corpus/$$t corpus/$$t seeds/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -timeout=10) || exit 1; \
	done

## Soak for SOAK_SECONDS (default 600): wrk, slowloris and resets together; see faults/soak.py.
## The plot needs matplotlib, installed into the project's venv.
soak: examples $(VENV)/.ready
	bash bench/setup.sh wrk
	faults/setup.sh
	$(VPY) -m pip install -q matplotlib
	$(VPY) faults/soak.py

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS=-Dwarnings $(CARGO) doc --no-deps --workspace

# The C tests (capi/tests) need libshoal.so next to the test binaries; cargo builds it with
# the library, and capi/tests/c.rs builds it itself if it is missing.
test-rust:
	capi/tests/install-test-tools.sh
	$(CARGO) build -p shoal-capi
	$(CARGO) test --workspace

## A virtualenv with the Python build and test tools (python/requirements-dev.txt).
$(VENV)/.ready: python/requirements-dev.txt
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && python/install-venv-support.sh && \
		$(PYTHON) -m venv $(VENV); }
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r python/requirements-dev.txt
	touch $@

## Build the package with pip (maturin as the PEP 517 backend, reusing cargo's target
## directory) and install it into the virtualenv.
wheel: $(VENV)/.ready
	PATH=$(abspath $(VENV))/bin:$$PATH CARGO_TARGET_DIR=$(abspath target) \
		$(VPY) -m pip install -q --no-build-isolation \
		--force-reinstall ./python

## The Python tests, against the installed wheel, and mypy --strict on the examples.
test-python: wheel
	cd python && ../$(VPY) -m pytest -q
	$(VPY) -m mypy --strict examples/python python/tests

## Regenerate include/shoal.h from capi/src (make test fails when it is stale).
header:
	SHOAL_WRITE_HEADER=1 $(CARGO) test -p shoal-capi --test header header_matches_the_sources

## Install the libraries, the header and a pkg-config file under PREFIX.
install: lib
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 0755 $(LIBDIR)/libshoal.so $(DESTDIR)$(PREFIX)/lib/libshoal.so.$(VERSION)
	ln -sf libshoal.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libshoal.so.$(MAJOR)
	ln -sf libshoal.so.$(MAJOR) $(DESTDIR)$(PREFIX)/lib/libshoal.so
	install -m 0644 $(LIBDIR)/libshoal.a $(DESTDIR)$(PREFIX)/lib/libshoal.a
	install -m 0644 include/shoal.h $(DESTDIR)$(PREFIX)/include/shoal.h
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' capi/shoal.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/shoal.pc
	@# Into the system (no DESTDIR), as root: refresh the loader's cache so programs find
	@# libshoal.so.0 without LD_LIBRARY_PATH (LDCONFIG= skips it).
	@if [ -z "$(DESTDIR)" ] && [ -n "$(LDCONFIG)" ] && [ "$$(id -u)" -eq 0 ] && \
		command -v "$(LDCONFIG)" >/dev/null 2>&1; then \
		"$(LDCONFIG)" || echo "ldconfig failed: run it before using $(PREFIX)/lib/libshoal.so" >&2; fi

## The whole benchmark suite (bench/suite.py, under 25 minutes on 2 cores): installs the peers
## (bench/setup.sh: apt-get; pip into target/bench-venv), builds, runs HTTP, echo, Python and
## callgrind against every peer, and rewrites the generated part of bench/RESULTS.md (between
## its bench:begin/bench:end markers) and bench/charts/*.png.
bench:
	$(PYTHON) bench/suite.py

## A smoke check of the benchmark harnesses (under 2 minutes): shoal and the C epoll reference
## only, one short point per workload, no installs, no network; report in
## target/bench/quick/report.md. Fails only when a harness breaks, never on a figure.
bench-quick: wheel
	$(PYTHON) bench/suite.py --quick

## Instructions per request under callgrind (bench/callgrind.py).
bench-callgrind:
	$(PYTHON) bench/callgrind.py --out bench/out/callgrind.md

## Echo benchmark against the peers (bench/echo.py; see bench/RESULTS.md).
bench-echo:
	$(PYTHON) bench/echo.py --out bench/out/echo.md

bench-echo-quick:
	$(PYTHON) bench/echo.py --quick --servers shoal,epoll

## HTTP benchmark against the peers (bench/http.py; installs wrk, Go and fasthttp).
bench-http:
	$(PYTHON) bench/http.py --out bench/out/http.md

## Python binding against granian and uvloop (bench/python_binding.py; see bench/RESULTS.md).
## Makes target/bench-venv (granian, uvloop, httptools from bench/python/requirements.txt)
## and builds shoal into it from ./python.
bench-python:
	$(PYTHON) bench/python_binding.py --conns 64,512 --out bench/out/python.md

bench-python-quick:
	$(PYTHON) bench/python_binding.py --quick

clean:
	$(CARGO) clean
