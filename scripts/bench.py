#!/usr/bin/env python3
"""`make bench`: dbfault side by side with plain Envoy, on loopback.

Configurations (identical Envoy bootstrap but for the filter chain):
  direct      no proxy
  tcp_proxy   Envoy, tcp_proxy only (the baseline for ratios)
  noop        tcp_proxy + a no-op Rust proxy-wasm filter (the Wasm floor; bench/noop-filter)
  dbfault     tcp_proxy + dbfault, metrics on (request metrics too: PostgreSQL is read), no rules
  dbfault20   tcp_proxy + dbfault with 20 rules that match nothing here
  dbfault-l4  tcp_proxy + dbfault with `metrics.requests: false` (no byte is read): the baseline of
              the PostgreSQL-awareness budget (dbfault / dbfault-l4)
  dbfault-stmt dbfault with statement rules for every upstream that match no statement or
              command of the workloads (PostgreSQL and Redis sessions are read and judged request
              by request)

Workloads: bulk (iperf3), connrate, latency (loadgen echo), pgbench (-S, simple and prepared, 4
clients), copy (a 100 MB COPY FROM STDIN through psql), redis (redis-benchmark SET/GET, 4
clients, pipelines of 16), mysql (mariadb-slap, 4 clients, SELECT 1), pgidle (idle PostgreSQL sessions: Envoy
memory added per session after its startup, a named prepared statement and a query), idle (raw
idle connections).

Envoy runs with --concurrency 1 pinned to CPU 0; load generators and servers are pinned to CPU 1,
so that Envoy is the bottleneck. Configurations run interleaved (A B C D E, A B C D E, ...) after
a warm-up round; each figure is the median of the repetitions, with min-max as spread.

Writes bench/results/latest.json and bench/results/latest.md and prints the table.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import localenv

ROOT = localenv.ROOT
LOADGEN = os.path.join(ROOT, "target", "release", "examples", "loadgen")
DBFAULT = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "dbfault.wasm")
NOOP = os.path.join(ROOT, "bench", "noop-filter", "target", "wasm32-wasip1", "release", "noop_filter.wasm")
CONFIGS = ["direct", "tcp_proxy", "noop", "dbfault", "dbfault20", "dbfault-l4", "dbfault-stmt"]
COPY_MB = 100
PG_IDLE = 80  # below PostgreSQL's default max_connections (100)
ENVOY_CPU, LOAD_CPU = "0", "1"


def pinned(cpu, cmd):
    return ["taskset", "-c", cpu] + cmd


def twenty_rules():
    rules = []
    for i in range(20):
        kind = [{"abort": {}}, {"delay": {"latency": "100ms"}}, {"blackhole": {}}, {"cut": {"afterBytes": 10}}][i % 4]
        rule = {"name": f"nomatch-{i}", "match": {"hosts": [f"db{i}.example.com", f"*.shard{i}.example.net"]}}
        rule.update(kind)
        rules.append(rule)
    return rules


def wasm_filter(path, config):
    value = json.dumps(config)
    return f"""
      - name: wasm
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm
          config:
            name: bench
            vm_config:
              runtime: envoy.wasm.runtime.v8
              code: {{local: {{filename: {path}}}}}
            configuration:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: {localenv.yaml_string(value)}"""


def bootstrap(config, ports, upstreams):
    filt = {
        "tcp_proxy": "",
        "noop": wasm_filter(NOOP, {}),
        "dbfault": wasm_filter(DBFAULT, {"metrics": {"enabled": True, "interval": "1s"}}),
        "dbfault20": wasm_filter(DBFAULT, {"metrics": {"enabled": True, "interval": "1s"}, "faults": twenty_rules()}),
        "dbfault-l4": wasm_filter(DBFAULT, {"metrics": {"enabled": True, "interval": "1s", "requests": False}}),
        "dbfault-stmt": wasm_filter(DBFAULT, {"metrics": {"enabled": True, "interval": "1s"}, "faults": [
            {"name": "nomatch-statements", "match": {"hosts": ["*"], "protocol": "postgres", "commands": ["INSERT"],
                                                      "queryContains": ["no_such_table"]},
             "error": {"sqlstate": "40001", "message": "never"}},
            {"name": "nomatch-commands", "match": {"hosts": ["*"], "protocol": "redis", "commands": ["SET"],
                                                    "queryContains": ["no_such_key"]},
             "error": {"message": "READONLY never"}},
            {"name": "nomatch-mysql", "match": {"hosts": ["*"], "protocol": "mysql", "commands": ["SELECT"],
                                                 "queryContains": ["no_such_table"]},
             "error": {"errno": 1213, "message": "never"}}]}),
    }[config]
    listeners, clusters = [], []
    for name in ("echo", "iperf", "pg", "redis", "mysql"):
        listeners.append(f"""
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {ports[name]}}}}}
    filter_chains:
    - filters:{filt}
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: {name}
          cluster: {name}""")
        clusters.append(f"""
  - name: {name}
    type: STATIC
    connect_timeout: 2s
    # Envoy's default circuit breaker stops at 1024 upstream connections; Istio lifts it too.
    circuit_breakers: {{thresholds: [{{max_connections: 1000000, max_pending_requests: 1000000, max_requests: 1000000}}]}}
    load_assignment:
      cluster_name: {name}
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstreams[name]}}}}}}}}}]}}]""")
    return f"""node: {{id: bench, cluster: bench}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {ports['admin']}}}}}
stats_config:
  stats_tags:
  - {{tag_name: upstream, regex: '(upstream=\\.=(.*?);\\.;)'}}
  - {{tag_name: fault, regex: '(fault=\\.=(.*?);\\.;)'}}
  - {{tag_name: protocol, regex: '(protocol=\\.=(.*?);\\.;)'}}
  - {{tag_name: command, regex: '(command=\\.=(.*?);\\.;)'}}
  - {{tag_name: code, regex: '(code=\\.=(.*?);\\.;)'}}
  - {{tag_name: config, regex: '(config=\\.=(.*?);\\.;)'}}
static_resources:
  listeners:{''.join(listeners)}
  clusters:{''.join(clusters)}
"""


class Envoy:
    def __init__(self, binary, config, upstreams, tmp):
        self.ports = {k: localenv.free_port() for k in ("admin", "echo", "iperf", "pg", "redis", "mysql")}
        path = os.path.join(tmp, f"envoy-{config}.yaml")
        with open(path, "w") as f:
            f.write(bootstrap(config, self.ports, upstreams))
        self.log = open(os.path.join(tmp, f"envoy-{config}.log"), "w")
        start = time.time()
        self.proc = subprocess.Popen(pinned(ENVOY_CPU, [binary, "-c", path, "--concurrency", "1", "--disable-hot-restart",
                                                        "--log-level", "warn"]), stdout=self.log, stderr=self.log)
        while time.time() - start < 30:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.01)
        else:
            raise SystemExit(f"Envoy ({config}) did not become ready; see {self.log.name}")
        self.ready_seconds = time.time() - start

    def cpu_seconds(self):
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def allocated_bytes(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['admin']}/memory", timeout=5) as r:
            return int(json.load(r)["allocated"])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def run_json(cmd, timeout=120):
    out = subprocess.run(pinned(LOAD_CPU, cmd), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {out.stderr.strip()[:300]}")
    return json.loads(out.stdout)


def iperf(port, seconds, bidir):
    cmd = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(seconds), "-J", "-l", "128K"]
    if bidir:
        cmd.append("--bidir")
    data = run_json(cmd, timeout=seconds + 30)
    end = data["end"]
    if bidir:
        return (end["sum_sent"]["bits_per_second"] + end["sum_sent_bidir_reverse"]["bits_per_second"]) / 1e9
    return end["sum_received"]["bits_per_second"] / 1e9


def pgbench(port, seconds, mode="simple"):
    out = subprocess.run(pinned(LOAD_CPU, ["pgbench", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-S", "-c", "4",
                                           "-j", "1", "-M", mode, "-T", str(seconds), "-n", "postgres"]),
                         capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("tps ="):
            return float(line.split()[2])
    raise RuntimeError("pgbench: " + out.stdout[-300:] + out.stderr[-300:])


def redis_benchmark(port, requests):
    """Requests per second of redis-benchmark's SET and GET (4 clients, pipelines of 16)."""
    out = subprocess.run(pinned(LOAD_CPU, ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "set,get",
                                           "-n", str(requests), "-c", "4", "-P", "16", "--csv"]),
                         capture_output=True, text=True, timeout=300)
    rates = {}
    for line in out.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) > 1 and cells[0] in ("SET", "GET"):
            rates[cells[0]] = float(cells[1])
    if len(rates) != 2:
        raise RuntimeError("redis-benchmark: " + out.stdout[-300:] + out.stderr[-300:])
    return rates


def mariadb_start(tmp):
    """A throwaway MariaDB (no grant tables) on a free port, pinned to the load CPU."""
    data = os.path.join(tmp, "mariadb")
    as_root = os.getuid() == 0
    if as_root:
        shutil.chown(tmp, user="mysql")
    install = ["mariadb-install-db", f"--datadir={data}", "--auth-root-authentication-method=normal",
               "--skip-test-db"] + (["--user=mysql"] if as_root else [])
    subprocess.run(install, check=True, capture_output=True)
    port = localenv.free_port()
    proc = subprocess.Popen(pinned(LOAD_CPU, [
        "mariadbd", "--no-defaults", f"--datadir={data}", f"--port={port}",
        f"--socket={os.path.join(tmp, 'mariadb.sock')}", f"--pid-file={os.path.join(tmp, 'mariadb.pid')}",
        "--bind-address=127.0.0.1", "--skip-grant-tables", "--skip-log-bin", "--innodb-buffer-pool-size=64M",
        "--skip-name-resolve", "--max-connections=500"] + (["--user=mysql"] if as_root else [])),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        # mariadb-slap runs its queries in the schema `mysqlslap`; without it, it fails to connect
        # and still exits 0.
        if subprocess.run(["mariadb", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "root",
                           "--skip-ssl", "-e", "CREATE DATABASE IF NOT EXISTS mysqlslap"],
                          capture_output=True).returncode == 0:
            return port, proc
        time.sleep(0.2)
    raise RuntimeError("MariaDB did not start")


def mysql_slap(port, queries):
    """Queries per second of mariadb-slap: 4 clients, `SELECT 1` each (the text protocol)."""
    out = subprocess.run(pinned(LOAD_CPU, [
        "mariadb-slap", "--no-defaults", "-h", "127.0.0.1", "-P", str(port), "-u", "root", "--skip-ssl",
        "--concurrency=4", f"--number-of-queries={queries}", "--query=SELECT 1", "--iterations=1"]),
        capture_output=True, text=True, timeout=300)
    if "Error" in out.stderr:
        raise RuntimeError("mariadb-slap: " + out.stderr[-300:])
    for line in out.stdout.splitlines():
        if "Average number of seconds to run all queries" in line:
            return queries / float(line.split(":")[1].split()[0])
    raise RuntimeError("mariadb-slap: " + out.stdout[-300:] + out.stderr[-300:])


def copy_file(tmp):
    """A COPY_MB file of rows for `bench_copy (id int, name text)`, written once."""
    path = os.path.join(tmp, "copy.tsv")
    if not os.path.exists(path):
        row = "x" * 90
        with open(path, "w") as f:
            for i in range(COPY_MB * 1024 * 1024 // 100):
                f.write(f"{i % 100000000:08d}\t{row}\n")
    return path


def copy_seconds(port, direct_port, path):
    """Seconds for psql to COPY the file through `port` (the table emptied first, directly)."""
    psql = ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1"]
    subprocess.run(psql + ["-p", str(direct_port), "-c",
                           "CREATE TABLE IF NOT EXISTS bench_copy (id int, name text); TRUNCATE bench_copy"],
                   check=True, capture_output=True)
    start = time.time()
    subprocess.run(pinned(LOAD_CPU, psql + ["-p", str(port), "-c", f"\\copy bench_copy FROM '{path}'"]),
                   check=True, capture_output=True, timeout=600)
    return time.time() - start


def pg_idle_memory(envoy, port, n):
    """Envoy allocated bytes and RSS added per idle PostgreSQL session: each has started (trust
    authentication), prepared a named statement and run a query, and waits."""
    import socket
    import struct

    def message(tag, body):
        return tag + struct.pack("!I", len(body) + 4) + body

    def until_ready(s):
        buf = b""
        while not buf.endswith(b"Z\x00\x00\x00\x05I"):
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("PostgreSQL closed an idle-bench session")
            buf += chunk

    time.sleep(0.5)
    rss0, alloc0 = envoy.rss_bytes(), envoy.allocated_bytes()
    sessions = []
    params = b"user\x00postgres\x00database\x00postgres\x00\x00"
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(struct.pack("!II", len(params) + 8, 196608) + params)
        until_ready(s)
        s.sendall(message(b"P", b"idle_stmt\x00SELECT count(*) FROM pgbench_accounts WHERE aid = $1\x00\x00\x00")
                  + message(b"S", b""))
        until_ready(s)
        s.sendall(message(b"Q", b"SELECT 1\x00"))
        until_ready(s)
        sessions.append(s)
    time.sleep(1.5)  # a metrics interval passes: per-interval state is included
    rss1, alloc1 = envoy.rss_bytes(), envoy.allocated_bytes()
    for s in sessions:
        s.close()
    return (rss1 - rss0) / n, (alloc1 - alloc0) / n


def idle_memory(envoy, port, n):
    """Envoy RSS and allocated bytes added per idle connection (each has exchanged 64 bytes)."""
    time.sleep(0.5)
    rss0, alloc0 = envoy.rss_bytes(), envoy.allocated_bytes()
    holder = subprocess.Popen(pinned(LOAD_CPU, [LOADGEN, "idle", f"127.0.0.1:{port}", str(n)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    opened = json.loads(holder.stdout.readline())["open"]
    time.sleep(1.5)  # let a metrics interval pass, so per-interval state is included
    rss1, alloc1 = envoy.rss_bytes(), envoy.allocated_bytes()
    holder.stdin.close()
    holder.wait(timeout=60)
    if opened != n:
        raise RuntimeError(f"only {opened} of {n} idle connections opened")
    return (rss1 - rss0) / n, (alloc1 - alloc0) / n


def measure(config, args, servers, tmp):
    r = {}
    envoy = None
    if config == "direct":
        ports = {k: servers[k] for k in ("echo", "iperf", "pg", "redis", "mysql")}
    else:
        envoy = Envoy(args.envoy, config, servers, tmp)
        ports = envoy.ports
        r["start_to_ready_ms"] = envoy.ready_seconds * 1000
    s = args.seconds
    w = args.workloads
    try:
        if "bulk" in w:
            r["bulk_one_way_gbps"] = iperf(ports["iperf"], s, False)
            r["bulk_both_ways_gbps"] = iperf(ports["iperf"], s, True)
        if "connrate" in w:
            cr = run_json([LOADGEN, "connrate", f"127.0.0.1:{ports['echo']}", "8", str(s)])
            r["connections_per_second"] = cr["per_second"]
        if "latency" in w:
            cpu0 = envoy.cpu_seconds() if envoy else 0
            lat = run_json([LOADGEN, "latency", f"127.0.0.1:{ports['echo']}", str(args.rate), str(s)])
            if envoy:
                # Each 64-byte request and its echo are one data callback each way.
                r["envoy_cpu_ns_per_callback"] = (envoy.cpu_seconds() - cpu0) * 1e9 / (2 * lat["requests"])
            r["latency_p50_us"] = lat["p50_ns"] / 1000
            r["latency_p99_us"] = lat["p99_ns"] / 1000
            r["latency_p999_us"] = lat["p999_ns"] / 1000
        if "pgbench" in w:
            r["pgbench_select_tps"] = pgbench(ports["pg"], s)
            r["pgbench_select_prepared_tps"] = pgbench(ports["pg"], s, "prepared")
        if "redis" in w:
            rates = redis_benchmark(ports["redis"], args.redis_requests)
            r["redis_set_rps"] = rates["SET"]
            r["redis_get_rps"] = rates["GET"]
        if "mysql" in w:
            r["mysql_select_qps"] = mysql_slap(ports["mysql"], args.mysql_queries)
        if "copy" in w:
            secs = copy_seconds(ports["pg"], servers["pg"], servers["copy_file"])
            r["copy_100mb_mb_per_second"] = COPY_MB / secs
        if envoy and "pgidle" in w:
            rss, alloc = pg_idle_memory(envoy, ports["pg"], PG_IDLE)
            r["pg_idle_session_rss_bytes_per_cx"] = rss
            r["pg_idle_session_allocated_bytes_per_cx"] = alloc
        if envoy and "idle" in w:
            for n in args.idle:
                rss, alloc = idle_memory(envoy, ports["echo"], n)
                r[f"idle_{n}_rss_bytes_per_cx"] = rss
                r[f"idle_{n}_allocated_bytes_per_cx"] = alloc
    finally:
        if envoy:
            envoy.stop()
    return r


def start_servers(tmp):
    procs = []
    echo = localenv.free_port()
    procs.append(subprocess.Popen(pinned(LOAD_CPU, [LOADGEN, "echo", str(echo)])))
    iperf_port = localenv.free_port()
    procs.append(subprocess.Popen(pinned(LOAD_CPU, ["iperf3", "-s", "-p", str(iperf_port)]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    redis_port = localenv.free_port()
    procs.append(subprocess.Popen(pinned(LOAD_CPU, ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                                    "--save", "", "--appendonly", "no"]),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    mysql_port, mysql_proc = mariadb_start(tmp)
    procs.append(mysql_proc)
    pg = localenv.postgres_start(tmp, prefix=["taskset", "-c", LOAD_CPU])
    subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", str(pg), "-U", "postgres", "-i", "-s", "1", "-q", "postgres"],
                   check=True, capture_output=True)
    time.sleep(0.3)
    return {"echo": echo, "iperf": iperf_port, "pg": pg, "redis": redis_port, "mysql": mysql_port,
            "copy_file": copy_file(tmp)}, procs


def callgrind(args):
    """Instructions per on_downstream_data of the pure core, measured natively with callgrind."""
    def run(n):
        out_file = tempfile.mktemp(prefix="callgrind.")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                        os.path.join(ROOT, "target", "release", "examples", "hotpath"), str(n)],
                       check=True, capture_output=True)
        with open(out_file) as f:
            total = next(int(l.split()[1]) for l in f if l.startswith("summary:") or l.startswith("totals:"))
        os.unlink(out_file)
        return total
    low, high = run(1000), run(1_001_000)
    return (high - low) / 1_000_000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envoy", default=os.path.join(ROOT, ".venv", "bin", "envoy"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rate", type=int, default=2000, help="requests/s of the latency workload")
    parser.add_argument("--idle", type=int, nargs="*", default=[1000, 9000])
    parser.add_argument("--configs", nargs="*", default=CONFIGS)
    parser.add_argument("--workloads", nargs="*",
                        default=["bulk", "connrate", "latency", "pgbench", "copy", "redis", "mysql", "pgidle", "idle"])
    parser.add_argument("--redis-requests", type=int, default=200000)
    parser.add_argument("--mysql-queries", type=int, default=40000)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--render", action="store_true", help="only re-render latest.md from latest.json")
    parser.add_argument("--print-bootstrap", metavar="CONFIG", help="print one configuration's Envoy bootstrap")
    args = parser.parse_args()
    if args.print_bootstrap:
        ports = {"admin": 9901, "echo": 10001, "iperf": 10002, "pg": 10003, "redis": 10004, "mysql": 10005}
        print(bootstrap(args.print_bootstrap, ports,
                        {"echo": 20001, "iperf": 20002, "pg": 20003, "redis": 20004, "mysql": 20005}))
        return
    if args.render:
        with open(os.path.join(args.out, "latest.json")) as f:
            md = markdown(json.load(f))
        with open(os.path.join(args.out, "latest.md"), "w") as f:
            f.write(md)
        print(md)
        return

    tmp = tempfile.mkdtemp(prefix="dbfault-bench-")
    servers, procs = start_servers(tmp)
    runs = {c: [] for c in args.configs}
    try:
        print(f"warm-up, then {args.reps} interleaved repetitions of {', '.join(args.configs)}", flush=True)
        for c in args.configs:
            measure(c, argparse.Namespace(**{**vars(args), "seconds": 1, "idle": []}), servers, tmp)
        for rep in range(args.reps):
            for c in args.configs:
                runs[c].append(measure(c, args, servers, tmp))
                print(f"  rep {rep + 1} {c}: " + ", ".join(f"{k}={v:.4g}" for k, v in runs[c][-1].items()), flush=True)
    finally:
        for p in procs:
            p.terminate()
        localenv.postgres_stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)

    summary = summarize(runs, args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(summary, f, indent=2)
    md = markdown(summary)
    with open(os.path.join(args.out, "latest.md"), "w") as f:
        f.write(md)
    print(md)


def summarize(runs, args):
    metrics = sorted({k for rs in runs.values() for r in rs for k in r})
    table = {}
    for m in metrics:
        table[m] = {}
        for c, rs in runs.items():
            vals = [r[m] for r in rs if m in r]
            if vals:
                table[m][c] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    extra = {
        "dbfault_wasm_bytes": os.path.getsize(DBFAULT),
        "noop_wasm_bytes": os.path.getsize(NOOP),
    }
    try:
        out = subprocess.run(["cargo", "run", "--quiet", "--release", "--example", "session_memory"],
                             cwd=ROOT, capture_output=True, text=True, check=True)
        extra["postgres_idle_session_heap_bytes"] = json.loads(out.stdout)["heap_bytes_per_session"]
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError) as err:
        extra["postgres_idle_session_heap_bytes"] = f"unavailable: {err}"
    try:
        extra["hotpath_instructions_per_on_downstream_data"] = callgrind(args)
    except (OSError, subprocess.CalledProcessError, StopIteration) as err:
        extra["hotpath_instructions_per_on_downstream_data"] = f"unavailable: {err}"
    return {
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                    "envoy": subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout.strip().split()[-1]},
        "settings": {"reps": args.reps, "seconds": args.seconds, "latency_rate": args.rate, "idle": args.idle,
                     "pinning": f"envoy on CPU {ENVOY_CPU} (--concurrency 1), load and servers on CPU {LOAD_CPU}"},
        "results": table,
        "extra": extra,
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


LOWER_IS_BETTER = ("latency", "cpu", "bytes_per_cx", "ready")


def markdown(summary):
    res = summary["results"]
    configs = [c for c in CONFIGS if any(c in v for v in res.values())]
    head = ("| metric | " + " | ".join(configs)
            + " | dbfault / tcp_proxy | dbfault / noop | dbfault20 / dbfault | dbfault / dbfault-l4"
            + " | dbfault-stmt / dbfault-l4 |")
    lines = [head, "|" + "---|" * (len(configs) + 6)]
    for m, per in res.items():
        cells = []
        for c in configs:
            v = per.get(c)
            cells.append(f"{v['median']:.4g} ({v['min']:.4g}–{v['max']:.4g})" if v else "–")
        def ratio(a, b):
            if a in per and b in per and per[b]["median"]:
                return f"{per[a]['median'] / per[b]['median']:.3f}"
            return "–"
        lines.append(f"| {m} | " + " | ".join(cells)
                     + f" | {ratio('dbfault', 'tcp_proxy')} | {ratio('dbfault', 'noop')} | {ratio('dbfault20', 'dbfault')}"
                     + f" | {ratio('dbfault', 'dbfault-l4')} | {ratio('dbfault-stmt', 'dbfault-l4')} |")
    e = summary["extra"]
    mach = summary["machine"]
    lines += [
        "",
        f"Machine: {mach['cpus']} CPUs ({mach['cpu']}), Linux {mach['kernel']}, Envoy {mach['envoy']}; "
        f"{summary['settings']['pinning']}; medians of {summary['settings']['reps']} interleaved repetitions "
        f"of {summary['settings']['seconds']} s (min–max in brackets).",
        f"Module size: dbfault.wasm {e['dbfault_wasm_bytes']} bytes, no-op filter {e['noop_wasm_bytes']} bytes. "
        f"Hot path (callgrind, native, pure core): {e['hotpath_instructions_per_on_downstream_data']} instructions "
        "per on_downstream_data. "
        f"Heap kept per idle PostgreSQL session by the protocol reader (native, counting allocator): "
        f"{e.get('postgres_idle_session_heap_bytes', '–')} bytes.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
