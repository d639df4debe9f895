#!/usr/bin/env python3
"""`make bench`'s headline: Envoy's own CPU time per request, as a sidecar pays it.

One Envoy (the shipped envoy/envoy.yaml: listeners in front of PostgreSQL, Redis and MariaDB,
the filter delivered by ECDS from a watched file) with one worker, pinned to CPU 0; servers and
load generators on CPU 1. The filter's configuration alternates between the modes compared by
rewriting the ECDS file (module and plugin configuration), in interleaved rounds: for each
repetition, each workload, each mode (the order rotated from one repetition to the next). A
round's cost is Envoy's CPU time over the round (user + system, the sum of its threads'
/proc/PID/task/*/schedstat, nanoseconds where /proc/PID/stat counts 10 ms ticks) divided by the requests
served, counted by the load generator and cross-checked against the server's own counters (a
round whose server saw fewer requests than the load generator claims fails the run). Figures
are medians over repetitions.

Modes:
  noop    the no-op Wasm filter (what any Wasm filter pays; bench/noop-filter)
  floor   the no-op module configured `floor`: each direction's bytes read once, one clock read
          and one histogram sample per answer, nothing else (the least request telemetry needs)
  bytes   dbfault, `metrics.requests: false` (byte counters only, no byte read)
  aware   dbfault's defaults (request metrics on: every request read)
  rule    aware + one request rule per protocol that judges every request and matches none

Workloads (each a round's load):
  pg_simple    pgbench -S, simple protocol, 4 clients        requests: transactions
  pg_prepared  pgbench -S -M prepared, 4 clients             requests: transactions
  mysql        mariadb-slap SELECT 1, 4 clients              requests: Com_select (server)
  redis_p1     redis-benchmark GET/SET -P 1, 4 clients       requests: commands
  redis_p16    redis-benchmark GET/SET -P 16, 4 clients      requests: commands
  connect      connect, Redis PING, close (loadgen pings)    per connection
  redis_large  redis-benchmark GET of 100 KB values          per GET (CPU per byte: same ratio)
  pg_large     psql SELECTs of ~10 MB (10,000 rows of 1 KB)  per SELECT
  mysql_large  mariadb SELECTs of ~10 MB                     per SELECT

With --host-calls: what each kind of host call costs Envoy, from pg_simple rounds with the no-op
module configured to make one host call HOST_CALLS times per data event (`buffer`: read the event's
bytes; `clock`; `histogram`: record a sample; `counter`: add to a counter; `property`: read
`xds.cluster_name`), less the no-op rounds, per call. The data events per request come from the
`counter` rounds' own counter.

Writes bench/results/cpu.json and bench/results/cpu.md (host-calls.json / .md) and prints the table.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import bench
import localenv

ROOT = localenv.ROOT
ENVOY_CPU, LOAD_CPU = bench.ENVOY_CPU, bench.LOAD_CPU

RULES = {"faults": [
    {"name": "nomatch-postgres", "match": {"hosts": ["*"], "protocol": "postgres",
                                           "queryContains": ["no_such_table_anywhere"]},
     "error": {"sqlstate": "40001", "message": "never"}},
    {"name": "nomatch-mysql", "match": {"hosts": ["*"], "protocol": "mysql",
                                        "queryContains": ["no_such_table_anywhere"]},
     "error": {"errno": 1213, "message": "never"}},
    {"name": "nomatch-redis", "match": {"hosts": ["*"], "protocol": "redis",
                                        "queryContains": ["no_such_key_anywhere"]},
     "error": {"message": "READONLY never"}},
]}
MODES = {
    "noop": (bench.NOOP, ""),
    "floor": (bench.NOOP, "floor"),
    "bytes": (bench.DBFAULT, json.dumps({"metrics": {"requests": False}})),
    "aware": (bench.DBFAULT, json.dumps({})),
    "rule": (bench.DBFAULT, json.dumps(RULES)),
}
PER_REQUEST = ["noop", "floor", "bytes", "aware", "rule"]
WORKLOADS = {
    "pg_simple": PER_REQUEST,
    "pg_prepared": PER_REQUEST,
    "mysql": PER_REQUEST,
    "redis_p1": PER_REQUEST,
    "redis_p16": PER_REQUEST,
    "connect": ["noop", "bytes", "aware"],
    # The floor here reads every byte of every event once: what any filter that frames the
    # stream pays when it cannot skip (dbfault skips what no rule needs where it can).
    "redis_large": ["floor", "bytes", "aware"],
    "pg_large": ["floor", "bytes", "aware"],
    "mysql_large": ["floor", "bytes", "aware"],
}
LARGE_ROWS, LARGE_ROW = 10_000, 1_000


class Failed(Exception):
    pass


def run(cmd, timeout=300, **kw):
    out = subprocess.run(bench.pinned(LOAD_CPU, cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if out.returncode != 0:
        raise Failed(f"{cmd[0]} exited {out.returncode}: {(out.stderr or out.stdout).strip()[-400:]}")
    return out.stdout


class Envoy:
    """The shipped bootstrap, one worker, its filter from the ECDS file `ecds`."""

    def __init__(self, binary, tmp, upstreams):
        self.dir = os.path.join(tmp, "envoy")
        os.makedirs(self.dir, exist_ok=True)
        self.ecds = os.path.join(self.dir, "dbfault.yaml")
        localenv.write_atomic(self.ecds, localenv.render_ecds(*MODES["bytes"]))
        localenv.write_atomic(os.path.join(self.dir, "envoy.yaml"),
                              localenv.render_envoy_config(self.ecds, upstreams))
        self.log = open(os.path.join(self.dir, "envoy.log"), "w")
        admin_path = os.path.join(self.dir, "admin")
        self.proc = subprocess.Popen(bench.pinned(ENVOY_CPU, [
            binary, "-c", "envoy.yaml", "--concurrency", "1", "--disable-hot-restart",
            "--admin-address-path", admin_path, "--log-level", "warn"]),
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline and self.proc.poll() is None:
            try:
                with open(admin_path) as f:
                    self.admin = f.read().strip()
                if self.admin and self.get("/ready") == "LIVE\n":
                    listeners = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
                    self.ports = {l["name"]: l["local_address"]["socket_address"]["port_value"] for l in listeners}
                    self.mode = "bytes"
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise Failed(f"Envoy did not become ready; see {self.log.name}")

    def get(self, path):
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as r:
            return r.read().decode()

    def reloads(self):
        """Configurations of the filter's ECDS resource Envoy has taken, so far."""
        stats = self.get("/stats?filter=extension_config_discovery.*dbfault.config_reload$")
        return sum(int(v) for v in re.findall(r"config_reload: (\d+)", stats))

    def switch(self, mode):
        if mode == self.mode:
            return
        before = self.reloads()
        module, config = MODES[mode]
        localenv.write_atomic(self.ecds, localenv.render_ecds(module, config))
        deadline = time.time() + 30
        while self.reloads() == before:
            if time.time() > deadline or self.proc.poll() is not None:
                raise Failed(f"Envoy did not take the {mode} configuration; see {self.log.name}")
            time.sleep(0.05)
        self.mode = mode
        # A new module starts a new VM: its first connection pays for it, not the round.
        time.sleep(0.3)

    def cpu_seconds(self):
        """Envoy's CPU time so far: the sum of its threads' time on a CPU (user and system, in
        nanoseconds, /proc/PID/task/*/schedstat); utime + stime count in 10 ms ticks, too coarse
        for a round. Envoy's threads live as long as it does, so none is lost."""
        total = 0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
        return total / 1e9

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


# -- the servers' own counters ---------------------------------------------------------------------

def pg_commits(port):
    out = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                          "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"],
                         capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.strip())


def mysql_status(port, name):
    out = subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--skip-ssl",
                          "-N", "-B", "-e", f"SHOW GLOBAL STATUS LIKE '{name}'"],
                         capture_output=True, text=True, check=True, timeout=30)
    return int(out.stdout.split()[1])


def redis_calls(port, *commands):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    total = 0
    for c in commands:
        m = re.search(rf"^cmdstat_{c}:calls=(\d+)", out, re.M)
        total += int(m.group(1)) if m else 0
    return total


def server_count(counted, claimed, what, settle=None):
    """Fails the run unless the server counted at least the requests the load generator claims
    (`counted()` gives the server's count; PostgreSQL flushes its statistics as backends exit,
    so it is read again for a few seconds)."""
    deadline = time.time() + 5
    while True:
        got = counted()
        if got >= claimed or time.time() > deadline:
            break
        time.sleep(0.2)
    if got < claimed:
        raise Failed(f"{what}: the load generator claims {claimed} requests, the server counted {got}")
    return got


# -- workloads: each returns the requests served ------------------------------------------------------

def pgbench(envoy, servers, mode, seconds):
    before = pg_commits(servers["postgres"])
    out = run(["pgbench", "-h", "127.0.0.1", "-p", str(envoy.ports["postgres"]), "-U", "postgres", "-S", "-c", "4",
               "-j", "1", "-M", mode, "-T", str(seconds), "-n", "postgres"], timeout=seconds + 60)
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    if not m or int(m.group(1)) == 0 or "number of failed transactions: 0" not in out:
        raise Failed("pgbench: " + out[-400:])
    n = int(m.group(1))
    server_count(lambda: pg_commits(servers["postgres"]) - before, n, "pgbench")
    return n


def mysql(envoy, servers, queries):
    before = mysql_status(servers["mariadb"], "Com_select")
    out = subprocess.run(bench.pinned(LOAD_CPU, [
        "mariadb-slap", "--no-defaults", "-h", "127.0.0.1", "-P", str(envoy.ports["mariadb"]), "-u", "root",
        "--skip-ssl", "--concurrency=4", f"--number-of-queries={queries}", "--query=SELECT 1", "--iterations=1"]),
        capture_output=True, text=True, timeout=300)
    if out.returncode != 0 or "Error" in out.stderr:
        raise Failed("mariadb-slap: " + out.stderr[-400:])
    # mariadb-slap exits 0 even when it could not run its queries: the server says what ran.
    n = mysql_status(servers["mariadb"], "Com_select") - before
    if n < queries:
        raise Failed(f"mariadb-slap: {queries} queries asked, the server ran {n} SELECTs")
    return n


def redis_benchmark(envoy, servers, requests, pipeline):
    before = redis_calls(servers["redis"], "get", "set")
    out = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(envoy.ports["redis"]), "-t", "set,get",
               "-n", str(requests), "-c", "4", "-P", str(pipeline), "--csv"])
    if out.count('"SET"') + out.count('"GET"') < 2:
        raise Failed("redis-benchmark: " + out[-400:])
    n = 2 * requests
    server_count(lambda: redis_calls(servers["redis"], "get", "set") - before, n, "redis-benchmark")
    return n


def connect(envoy, servers, n):
    before = redis_calls(servers["redis"], "ping")
    out = json.loads(run([bench.LOADGEN, "pings", f"127.0.0.1:{envoy.ports['redis']}", str(n)]))
    if out["failed"] or out["connections"] != n:
        raise Failed(f"loadgen pings: {out}")
    server_count(lambda: redis_calls(servers["redis"], "ping") - before, n, "loadgen pings")
    return n


def redis_large(envoy, servers, n):
    before = redis_calls(servers["redis"], "get")
    out = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(envoy.ports["redis"]), "-t", "get",
               "-d", "100000", "-n", str(n), "-c", "4", "--csv"])
    if '"GET"' not in out:
        raise Failed("redis-benchmark: " + out[-400:])
    server_count(lambda: redis_calls(servers["redis"], "get") - before, n, "redis-benchmark GET 100 KB")
    return n


def pg_large(envoy, servers, n):
    before = pg_commits(servers["postgres"])
    query = f"SELECT repeat('x', {LARGE_ROW}) FROM generate_series(1, {LARGE_ROWS});\n"
    out = run(["psql", "-X", "-At", "-h", "127.0.0.1", "-p", str(envoy.ports["postgres"]), "-U", "postgres",
               "-v", "ON_ERROR_STOP=1", "-o", "/dev/null"] + ["-c", query] * n
              + ["-c", "\\o", "-c", "SELECT 'done'"])
    if out.strip() != "done":
        raise Failed(f"psql: {out[-200:]}")
    server_count(lambda: pg_commits(servers["postgres"]) - before, n, "psql large SELECTs")
    return n


def mysql_large(envoy, servers, n):
    before = mysql_status(servers["mariadb"], "Com_select")
    query = f"SELECT REPEAT('x', {LARGE_ROW}) FROM seq_1_to_{LARGE_ROWS};"
    out = run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(envoy.ports["mariadb"]), "-u", "root",
               "--skip-ssl", "-D", "mysql", "-N", "-B", "-e", query * n])
    rows = out.count("\n")
    if rows != n * LARGE_ROWS:
        raise Failed(f"mariadb: {rows} rows, not {n * LARGE_ROWS}")
    server_count(lambda: mysql_status(servers["mariadb"], "Com_select") - before, n, "mariadb large SELECTs")
    return n


def workload(name, envoy, servers, args):
    return {
        "pg_simple": lambda: pgbench(envoy, servers, "simple", args.seconds),
        "pg_prepared": lambda: pgbench(envoy, servers, "prepared", args.seconds),
        "mysql": lambda: mysql(envoy, servers, args.mysql_queries),
        "redis_p1": lambda: redis_benchmark(envoy, servers, args.redis_requests, 1),
        "redis_p16": lambda: redis_benchmark(envoy, servers, args.redis_requests * 8, 16),
        "connect": lambda: connect(envoy, servers, args.connections),
        "redis_large": lambda: redis_large(envoy, servers, args.large_gets),
        "pg_large": lambda: pg_large(envoy, servers, args.large_selects),
        "mysql_large": lambda: mysql_large(envoy, servers, args.large_selects),
    }[name]()


def round_(envoy, servers, name, mode, args):
    envoy.switch(mode)
    cpu0, t0 = envoy.cpu_seconds(), time.time()
    n = workload(name, envoy, servers, args)
    cpu, wall = envoy.cpu_seconds() - cpu0, time.time() - t0
    return {"us": cpu * 1e6 / n, "per_second": n / wall, "requests": n, "cpu_s": cpu}


def start_servers(tmp):
    procs = []
    redis_port = localenv.free_port()
    procs.append(subprocess.Popen(bench.pinned(LOAD_CPU, [
        "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    mysql_port, mysql_proc = bench.mariadb_start(tmp)
    procs.append(mysql_proc)
    pg = localenv.postgres_start(tmp, prefix=["taskset", "-c", LOAD_CPU])
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pg), "-U", "postgres", "-i", "-s", "1", "-q", "postgres"],
                   check=True, capture_output=True)
    deadline = time.time() + 30
    while subprocess.run(["redis-cli", "-p", str(redis_port), "PING"], capture_output=True).stdout.strip() != b"PONG":
        if time.time() > deadline:
            raise Failed("Redis did not start")
        time.sleep(0.1)
    # The value the large GETs fetch (redis-benchmark's fixed key without -r).
    subprocess.run(["redis-benchmark", "-p", str(redis_port), "-t", "set", "-d", "100000", "-n", "1", "-q"],
                   check=True, capture_output=True)
    return {"postgres": pg, "redis": redis_port, "mariadb": mysql_port}, procs


CALLS = ["buffer", "clock", "histogram", "counter", "property"]


def host_calls(envoy, servers, args):
    """Per-call costs (µs of Envoy CPU), medians over repetitions."""
    n = args.host_calls
    for c in CALLS:
        MODES[c] = (bench.NOOP, f"{c} {n}")
    modes = ["noop"] + CALLS
    runs = {m: [] for m in modes}
    events = []
    for rep in range(args.reps + 1):
        k = rep % len(modes)
        for m in modes[k:] + modes[:k]:
            envoy.switch(m)
            counted = counter(envoy) if m == "counter" else 0
            r = round_(envoy, servers, "pg_simple", m, args)
            if m == "counter":
                events.append((counter(envoy) - counted) / n / r["requests"])
            if rep:  # the first repetition warms up
                runs[m].append(r["us"])
                print(f"  rep {rep} {m:9} {r['us']:8.2f} µs/request", flush=True)
    per_request = statistics.median(events)
    noop = statistics.median(runs["noop"])
    return {
        "events_per_request": per_request,
        "calls_per_event": n,
        "noop_us_per_request": noop,
        "us_per_call": {c: (statistics.median(runs[c]) - noop) / (n * per_request) for c in CALLS},
        "spread_us_per_request": {m: [min(v), max(v)] for m, v in runs.items()},
    }


def counter(envoy):
    # Envoy names a Wasm module's own metrics `wasmcustom.<name>` in its admin stats.
    m = re.search(r"calls_counter: (\d+)", envoy.get("/stats?filter=calls_counter$"))
    return int(m.group(1)) if m else 0


def host_calls_markdown(r):
    lines = ["Envoy CPU per host call (µs), from pgbench -S rounds with the no-op module making one kind of call "
             f"{r['calls_per_event']} times per data event ({r['events_per_request']:.2f} data events per request; "
             f"no-op: {r['noop_us_per_request']:.2f} µs per request)", "",
             "| host call | µs per call |", "|---|---|"]
    for c, v in r["us_per_call"].items():
        lines.append(f"| {c} | {v:.3f} |")
    return "\n".join(lines) + "\n"


def summarize(runs, args, envoy_version):
    table = {}
    for (name, mode), rs in runs.items():
        us = [r["us"] for r in rs]
        rate = [r["per_second"] for r in rs]
        table.setdefault(name, {})[mode] = {
            "us_median": statistics.median(us), "us_min": min(us), "us_max": max(us),
            "per_second_median": statistics.median(rate), "n": len(rs),
            "requests_median": statistics.median(r["requests"] for r in rs)}
    return {
        "machine": {"cpus": os.cpu_count(), "cpu": bench.cpu_model(), "kernel": platform.release(),
                    "envoy": envoy_version},
        "settings": {"reps": args.reps, "seconds": args.seconds, "redis_requests": args.redis_requests,
                     "mysql_queries": args.mysql_queries, "connections": args.connections,
                     "pinning": f"envoy on CPU {ENVOY_CPU} (--concurrency 1), load and servers on CPU {LOAD_CPU}",
                     "dbfault_wasm_bytes": os.path.getsize(bench.DBFAULT)},
        "results": table,
    }


def markdown(summary):
    res = summary["results"]

    def cell(w, m):
        v = res.get(w, {}).get(m)
        return f"{v['us_median']:.2f} ({v['us_min']:.2f}–{v['us_max']:.2f})" if v else "–"

    def ratio(w, a, b):
        r = res.get(w, {})
        return f"**{r[a]['us_median'] / r[b]['us_median']:.3f}**" if a in r and b in r else "–"

    def rate(w, m):
        v = res.get(w, {}).get(m)
        return f"{v['per_second_median']:.0f}" if v else "–"

    def share(w):
        # How much of awareness's cost the floor's host calls alone take.
        r = res.get(w, {})
        if all(k in r for k in ("noop", "floor", "bytes", "aware")):
            floor = r["floor"]["us_median"] - r["noop"]["us_median"]
            aware = r["aware"]["us_median"] - r["bytes"]["us_median"]
            return f"{floor:+.2f} / {aware:+.2f}"
        return "–"

    lines = [
        "Envoy CPU µs per request (user + system CPU time / requests served; median, min–max)",
        "",
        "| workload | noop | floor | bytes only | aware | + rule | aware / bytes | rule / bytes "
        "| floor / bytes | aware / floor | floor − noop / aware − bytes (µs) | requests/s bytes · aware |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in WORKLOADS:
        if w not in res:
            continue
        lines.append(f"| {w} | {cell(w, 'noop')} | {cell(w, 'floor')} | {cell(w, 'bytes')} | {cell(w, 'aware')} "
                     f"| {cell(w, 'rule')} | {ratio(w, 'aware', 'bytes')} | {ratio(w, 'rule', 'bytes')} "
                     f"| {ratio(w, 'floor', 'bytes')} | {ratio(w, 'aware', 'floor')} "
                     f"| {share(w)} | {rate(w, 'bytes')} · {rate(w, 'aware')} |")
    if "connect" in res:
        lines += ["", f"Per connection, aware / noop: {ratio('connect', 'aware', 'noop')}, "
                  f"bytes / noop: {ratio('connect', 'bytes', 'noop')}."]
    m, s = summary["machine"], summary["settings"]
    lines += ["", f"Machine: {m['cpus']} CPUs ({m['cpu']}), Linux {m['kernel']}, Envoy {m['envoy']}; {s['pinning']}; "
              f"medians of {s['reps']} interleaved repetitions; dbfault.wasm {s['dbfault_wasm_bytes']} bytes."]
    return "\n".join(lines) + "\n"


def save(out, name, data, md):
    """Writes OUT/NAME.json and OUT/NAME.md; returns the markdown."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as f:
        json.dump(data, f, indent=2)
    with open(os.path.join(out, f"{name}.md"), "w") as f:
        f.write(md)
    return md


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", default=os.path.join(ROOT, ".venv", "bin", "envoy"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4, help="pgbench rounds")
    parser.add_argument("--redis-requests", type=int, default=20000, help="each of GET and SET, -P 1 (x8 at -P 16)")
    parser.add_argument("--mysql-queries", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--large-gets", type=int, default=2000)
    parser.add_argument("--large-selects", type=int, default=5)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=list(MODES))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--render", action="store_true", help="only re-render cpu.md from cpu.json")
    parser.add_argument("--host-calls", type=int, metavar="N", help="measure host calls instead, N per data event")
    args = parser.parse_args()
    if args.render:
        with open(os.path.join(args.out, "cpu.json")) as f:
            md = markdown(json.load(f))
    else:
        for path in (bench.DBFAULT, bench.NOOP, bench.LOADGEN):
            if not os.path.exists(path):
                raise SystemExit(f"{path} is missing (make bench builds it)")
        version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip().split()[-1]
        tmp = tempfile.mkdtemp(prefix="dbfault-cpu-bench-")
        servers, procs = start_servers(tmp)
        envoy = None
        runs = {}
        try:
            envoy = Envoy(args.envoy, tmp, {"postgres": servers["postgres"], "redis": servers["redis"],
                                            "mariadb": servers["mariadb"]})
            if args.host_calls:
                result = host_calls(envoy, servers, args)
                print(save(args.out, "host-calls", result, host_calls_markdown(result)))
                return 0
            plan = [(w, [m for m in WORKLOADS[w] if m in args.modes]) for w in args.workloads]
            print(f"warm-up, then {args.reps} interleaved repetitions", flush=True)
            for w, modes in plan:
                for m in modes:
                    round_(envoy, servers, w, m, argparse.Namespace(**{**vars(args), "seconds": 1}))
            for rep in range(args.reps):
                for w, modes in plan:
                    k = rep % len(modes)
                    for m in modes[k:] + modes[:k]:
                        r = round_(envoy, servers, w, m, args)
                        runs.setdefault((w, m), []).append(r)
                        print(f"  rep {rep + 1} {w:12} {m:6} {r['us']:8.2f} µs/request  {r['per_second']:9.0f}/s",
                              flush=True)
        except Failed as e:
            raise SystemExit(f"cpu bench: {e}")
        finally:
            if envoy:
                envoy.stop()
            for p in procs:
                p.terminate()
            localenv.postgres_stop(tmp)
            shutil.rmtree(tmp, ignore_errors=True)
        summary = summarize(runs, args, version)
        md = save(args.out, "cpu", summary, markdown(summary))
    print(md)


if __name__ == "__main__":
    sys.exit(main())
