#!/usr/bin/env bash
# Builds the fuzz targets as `cargo fuzz build` does (libFuzzer with SanitizerCoverage and
# AddressSanitizer; RUSTC_BOOTSTRAP lets the stable toolchain take -Z flags), without cargo-fuzz
# itself, which CI would otherwise compile from source on every run. Prints the binaries'
# directory; on a failed build, prints cargo's output to stderr and exits 1.
#   fuzz/build.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
host=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
  -Zsanitizer=address
  -Cdebug-assertions
  -Ccodegen-units=1
)
bins=()
for t in "$@"; do bins+=(--bin "$t"); done
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
if ! built=$(RUSTC_BOOTSTRAP=1 RUSTFLAGS="${flags[*]}" ASAN_OPTIONS=detect_odr_violation=0 \
    cargo build --release --target "$host" --config 'profile.release.debug="line-tables-only"' \
    "${bins[@]}" 2>&1); then
  echo "$built" >&2
  exit 1
fi
echo "target/$host/release"
