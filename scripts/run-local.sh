#!/usr/bin/env bash
# `make run`: a throwaway PostgreSQL (and Redis, when installed) on loopback, and Envoy with
# dbfault in front of them, using envoy/envoy.yaml as is. Ctrl-C stops everything it started.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
envoy_bin=${ENVOY:-$root/.venv/bin/envoy}
localenv=("python3" "$root/scripts/localenv.py")
pg_port=5432
redis_port=6379

run=$(mktemp -d /tmp/dbfault-run.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "${localenv[@]}" postgres-stop --dir "$run" || true
  wait 2>/dev/null || true
  rm -rf "$run"
}
trap cleanup EXIT INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in $pg_port 15432 16379 13306 18443 9901; do
  if port_busy "$port"; then
    echo "port $port on 127.0.0.1 is in use; envoy/envoy.yaml needs it (stop what holds it)" >&2
    exit 1
  fi
done

echo "starting PostgreSQL on 127.0.0.1:$pg_port ..."
# The port envoy/envoy.yaml's postgres cluster names, as is.
"${localenv[@]}" postgres-start --dir "$run" --port "$pg_port" >/dev/null

if command -v redis-server >/dev/null && ! port_busy "$redis_port"; then
  echo "starting Redis on 127.0.0.1:$redis_port ..."
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >"$run/redis.log" 2>&1 &
  pids+=($!)
else
  echo "Redis not started (redis-server missing or port $redis_port busy)"
fi

echo "starting Envoy ..."
(cd "$root/envoy" && exec "$envoy_bin" -c envoy.yaml --concurrency 2 --disable-hot-restart \
  --log-level info --component-log-level wasm:debug) >"$run/envoy.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  curl -sf http://127.0.0.1:9901/ready >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -sf http://127.0.0.1:9901/ready >/dev/null; then
  echo "Envoy did not become ready:" >&2; tail -30 "$run/envoy.log" >&2; exit 1
fi

cat <<TXT

dbfault is running in Envoy. Connect through it:
  psql -h 127.0.0.1 -p 15432 -U postgres        (PostgreSQL)
  redis-cli -p 16379                            (Redis)
Metrics:
  curl -s http://127.0.0.1:9901/stats/prometheus | grep ^dbfault_
Plugin configuration (reloaded live when replaced atomically):
  envoy/dbfault.yaml
Envoy log: $run/envoy.log
Press Ctrl-C to stop.
TXT
tail -n 0 -f "$run/envoy.log" | grep --line-buffered 'dbfault' &
pids+=($!)
wait "${pids[0]}" 2>/dev/null || wait
