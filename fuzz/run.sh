#!/usr/bin/env bash
# Runs every fuzz target for SECONDS, JOBS at a time (each target still gets its full time on a
# core of its own): builds them once (fuzz/build.sh), then runs the binaries from the kept
# corpus (corpus-min) and the seeds, new finds going to the untracked corpus/.
#   fuzz/run.sh SECONDS MAX_LEN JOBS TARGET...
set -euo pipefail
cd "$(dirname "$0")"
seconds=$1 max_len=$2 jobs=$3
shift 3
bin=$(./build.sh)
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run() {
  local t=$1
  mkdir -p "corpus/$t" "corpus-min/$t" "artifacts/$t"
  if "$bin/$t" "corpus/$t" "corpus-min/$t" "seeds/$t" -max_total_time="$seconds" -max_len="$max_len" \
      -artifact_prefix="artifacts/$t/" \
      >"$logs/$t" 2>&1; then
    echo "$t: $(grep -E '^Done' "$logs/$t")"
  else
    echo "$t: FAILED"; grep -vE '^#[0-9]' "$logs/$t" | tail -60; return 1
  fi
}
export -f run
export bin seconds max_len logs
printf '%s\n' "$@" | xargs -P "$jobs" -I{} bash -c 'run {}'
