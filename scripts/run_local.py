#!/usr/bin/env python3
"""`make run`: a throwaway PostgreSQL (and Redis, when installed) on loopback, and Envoy with dbfault
in front of them, every port picked free and printed — nothing fails because a system PostgreSQL,
Redis or Prometheus already holds a default port. The live copy of the plugin configuration is
target/run/dbfault.yaml (envoy/dbfault.yaml stays as git has it): `make faults` and
`make fault-on RULE=...` act on it while this runs. Ctrl-C stops everything it started.
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import time

import localenv

ROOT = localenv.ROOT
RUN = os.path.join(ROOT, "target", "run")
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "dbfault.wasm")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", default=os.path.join(ROOT, ".venv", "bin", "envoy"))
    args = parser.parse_args()
    pid_file = os.path.join(RUN, "envoy.pid")
    if os.path.exists(pid_file):
        try:
            with open(pid_file) as f:
                os.kill(int(f.read().strip()), 0)
            sys.exit(f"run: another `make run` is running (its Envoy is pid {open(pid_file).read().strip()})")
        except (OSError, ValueError):
            pass
    shutil.rmtree(RUN, ignore_errors=True)
    os.makedirs(RUN)
    procs = []

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        pg_port = localenv.postgres_start(RUN)
        print(f"run: PostgreSQL on 127.0.0.1:{pg_port}")
        upstreams = {"postgres": pg_port}
        if shutil.which("redis-server"):
            redis_port = localenv.free_port()
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                stdout=open(os.path.join(RUN, "redis.log"), "w"), stderr=subprocess.STDOUT))
            upstreams["redis"] = redis_port
            print(f"run: Redis on 127.0.0.1:{redis_port}")
        else:
            print("run: Redis not started (redis-server is not installed)")
        # The shipped bootstrap and rules, listeners and admin on free ports.
        localenv.write_envoy_config(RUN, WASM, upstreams=upstreams)
        envoy, admin, listeners = localenv.start_envoy(RUN, args.envoy, ["--component-log-level", "wasm:debug"])
        procs.append(envoy)
        with open(pid_file, "w") as f:
            f.write(str(envoy.pid))
        log_path = os.path.join(RUN, "envoy.log")
        print(f"""
dbfault is running in Envoy. Connect through it:
  psql -h 127.0.0.1 -p {listeners['postgres']} -U postgres        (PostgreSQL)""")
        if "redis" in upstreams:
            print(f"  redis-cli -p {listeners['redis']}                             (Redis)")
        print(f"""Metrics:
  curl -s http://{admin}/stats/prometheus | grep ^dbfault_
Rules (target/run/dbfault.yaml, reloaded live; envoy/dbfault.yaml is not touched):
  make faults    make fault-on RULE=postgres-outage    make fault-off RULE=postgres-outage
Envoy log: {log_path}
Press Ctrl-C to stop.""", flush=True)
        with open(log_path) as log:
            log.seek(0, os.SEEK_END)
            while envoy.poll() is None:
                line = log.readline()
                if not line:
                    time.sleep(0.2)
                elif "dbfault" in line:
                    print(line.rstrip(), flush=True)
        print("run: Envoy exited; see " + log_path, file=sys.stderr)
    except KeyboardInterrupt:
        print("\nrun: stopping...")
    except localenv.LocalEnvError as err:
        print(f"run: {err}", file=sys.stderr)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        try:
            localenv.postgres_stop(RUN)
        except localenv.LocalEnvError:
            pass
        shutil.rmtree(RUN, ignore_errors=True)


if __name__ == "__main__":
    main()
