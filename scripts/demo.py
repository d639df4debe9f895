#!/usr/bin/env python3
"""`make demo`: the dbfault story end to end on one machine, without Docker or Kubernetes.

The Firestore story (`--db firestore`, the default): Google's Firestore emulator, Envoy with
dbfault in front of it on the cluster Istio would name (`outbound|8080||firestore.googleapis.com`),
and the `plants` app writing a plant every half second with Google's official client over one
gRPC channel. The PostgreSQL story (`--db postgres`): a throwaway PostgreSQL and the Rust `plants`
app on one pooled connection. Beside the app's lines, a live view of what dbfault measures
(throughput in bits per second, as a service graph shows it). Then a scripted timeline: healthy,
an outage switched on through the ECDS file (the app fails, on its open connection too),
switched off (the app recovers), for PostgreSQL a statement rule (the app's INSERTs fail with a
real serialization failure, SQLSTATE 40001, and it retries: the status line shows the errors per
second), a delay rule (writes slow down by the configured latency), then a failover drill
(`dbfault drill failover`: the primary ends the app's session with FATAL 57P01 and refuses new ones
with 57P03, then answers writes as a read-only standby, 25006), and a summary with the app's
recovery as dbfault measured it (`dbfault_fault_recovery_ms`) and the requests each phase failed.

  demo.py [--db firestore|postgres] [--healthy S] [--outage S] [--recover S] [--conflicts S]
          [--delay S] [--latency 300ms] [--down S] [--read-only S]
  demo.py --interactive        toggle rules yourself: on NAME / off NAME / list / quit

Ctrl-C stops and removes everything the demo started.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import localenv

ROOT = localenv.ROOT
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "dbfault.wasm")
# Each story: the Envoy cluster the app goes through (and its listener), the `upstream` label,
# the shipped rules the timeline toggles.
STORIES = {
    "firestore": {"cluster": "outbound|8080||firestore.googleapis.com", "listener": "firestore",
                  "upstream": "firestore.googleapis.com", "outage": "firestore-outage",
                  "slow": "firestore-slow", "conflict": None, "database": "Firestore",
                  "connection": "one gRPC channel"},
    "postgres": {"cluster": "postgres", "listener": "postgres", "upstream": "postgres",
                 "outage": "postgres-outage", "slow": "postgres-slow", "conflict": "postgres-conflict",
                 "database": "PostgreSQL", "connection": "one pooled connection"},
}
FIRESTORE_APP = os.path.join(localenv.ROOT, "examples", "plants_firestore.py")


def quantile(buckets, q):
    """The upper bound (µs, shown in ms) of the histogram bucket holding quantile q; buckets are
    (le, cumulative count) in ascending order."""
    total = buckets[-1][1]
    for le, count in buckets:
        if count >= q * total:
            return "∞" if le == float("inf") else f"{le / 1000:g} ms"
    return "–"


def bits(bytes_per_second):
    """A rate in bits per second, as a service graph shows throughput."""
    n = bytes_per_second * 8
    for unit in ("b/s", "kb/s", "Mb/s", "Gb/s"):
        if abs(n) < 1000 or unit == "Gb/s":
            return f"{n:.0f} {unit}" if unit == "b/s" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} Gb/s"


def human(n):
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


class Screen:
    """App lines scroll; on a terminal one status line stays at the bottom and refreshes in place.
    Elsewhere (a pipe, a log) the status is printed as a line every few seconds, and once in each
    phase that has not had one, so a log shows every phase however short."""

    def __init__(self):
        self.tty = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.status = ""
        self.last_plain = 0.0
        self.shown = set()

    def line(self, text):
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K" + text + "\n" + self.status)
            else:
                sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def set_status(self, text, phase):
        """`phase`: the phase the status describes, or None while it still shows the last one."""
        with self.lock:
            self.status = text
            if self.tty:
                sys.stdout.write("\r\033[K" + text)
                sys.stdout.flush()
            elif time.time() - self.last_plain >= 4 or (phase is not None and phase not in self.shown):
                self.last_plain = time.time()
                self.shown.add(phase)
                sys.stdout.write("  ┄ " + text + "\n")
                sys.stdout.flush()

    def close(self):
        with self.lock:
            if self.tty:
                sys.stdout.write("\r\033[K")
                sys.stdout.flush()


class Demo:
    def __init__(self, args):
        self.args = args
        self.screen = Screen()
        self.tmp = tempfile.mkdtemp(prefix="dbfault-demo-")
        self.procs = []
        self.started = time.time()
        self.phase = "starting"
        self.phase_at = time.time()
        self.phases = []  # [name, ok, failed, [latencies ms]]
        self.stop = threading.Event()
        self.admin = None
        self.story = STORIES[args.db]
        self.emulator = None

    # -- setup -----------------------------------------------------------------------------
    def start(self):
        if self.args.db == "firestore":
            self.start_firestore()
        else:
            self.start_postgres()
        self.start_envoy()
        self.start_plants()
        threading.Thread(target=self.watch_stats, daemon=True).start()

    def start_firestore(self):
        gcloud = self.args.gcloud
        if shutil.which(gcloud) is None or subprocess.run(
                [gcloud, "emulators", "firestore", "--help"], capture_output=True).returncode != 0:
            raise localenv.LocalEnvError(
                "the Firestore emulator is missing: install Google's google-cloud-cli and "
                "google-cloud-cli-firestore-emulator packages (Java 17+), or run the PostgreSQL story: "
                "make demo DB=postgres")
        self.db_port = localenv.free_port()
        log = open(os.path.join(self.tmp, "firestore.log"), "w")
        self.emulator = subprocess.Popen(
            [gcloud, "emulators", "firestore", "start", "--quiet", f"--host-port=127.0.0.1:{self.db_port}"],
            env=dict(os.environ, CLOUDSDK_CONFIG=os.path.join(self.tmp, "gcloud")),
            stdout=log, stderr=log, start_new_session=True)
        deadline = time.time() + 90
        while time.time() < deadline:
            with open(log.name) as f:
                if "Dev App Server is now running" in f.read():
                    break
            if self.emulator.poll() is not None:
                with open(log.name) as f:
                    raise localenv.LocalEnvError(emulator_failure(f.read(), gcloud, "exited"))
            time.sleep(0.2)
        else:
            with open(log.name) as f:
                raise localenv.LocalEnvError(emulator_failure(f.read(), gcloud, "did not start within 90 s"))
        self.screen.line(f"demo: Firestore emulator on 127.0.0.1:{self.db_port} (throwaway, in memory)")

    def start_postgres(self):
        self.db_port = localenv.postgres_start(self.tmp)
        self.screen.line(f"demo: PostgreSQL 15 on 127.0.0.1:{self.db_port} (throwaway, {localenv.postgres_data(self.tmp)})")

    def start_envoy(self):
        # The shipped envoy/envoy.yaml, its listeners on free ports and the story's cluster
        # pointed at the throwaway database.
        localenv.write_envoy_config(self.tmp, WASM, upstreams={self.story["cluster"]: self.db_port})
        self.ecds = os.path.join(self.tmp, "dbfault.yaml")
        self.set_latency(self.args.latency)
        envoy, self.admin, listeners = localenv.start_envoy(self.tmp, self.args.envoy, new_session=True)
        self.procs.append(envoy)
        self.listener = listeners[self.story["listener"]]
        self.screen.line(f"demo: Envoy with dbfault on 127.0.0.1:{self.listener} → {self.story['database']} "
                         f"(cluster {self.story['cluster']}); admin http://{self.admin}")

    def start_plants(self):
        if self.args.db == "firestore":
            env = dict(os.environ, FIRESTORE_EMULATOR_HOST=f"127.0.0.1:{self.listener}", PLANTS_TIMEOUT_S="2")
            cmd = [self.args.python, FIRESTORE_APP]
        else:
            env = dict(os.environ, DATABASE_URL=f"host=127.0.0.1 port={self.listener} user=postgres dbname=postgres connect_timeout=3")
            cmd = [self.args.plants]
        plants = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, bufsize=1, start_new_session=True)
        self.procs.append(plants)
        threading.Thread(target=self.read_plants, args=(plants,), daemon=True).start()
        self.screen.line(f"demo: plants app started (one write every 500 ms, {self.story['connection']})")

    # -- running -----------------------------------------------------------------------------
    def read_plants(self, proc):
        for line in proc.stdout:
            line = line.rstrip("\n")
            if self.phases:
                tally = self.phases[-1]
                if "✅" in line:
                    tally[1] += 1
                    m = re.search(r", (\d+) ms\)", line)
                    if m:
                        tally[3].append(int(m.group(1)))
                elif "🚫" in line:
                    tally[2] += 1
            self.screen.line(f"{time.time() - self.started:6.1f}s  {line}")

    def metrics(self):
        """dbfault's series from Envoy's /stats/prometheus, name{labels} → value."""
        series = {}
        with urllib.request.urlopen(f"http://{self.admin}/stats/prometheus", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("dbfault_"):
                    name, _, value = line.rpartition(" ")
                    series[name] = float(value)
        return series

    def watch_stats(self):
        # Statements and errors per second from the counters' growth between polls; latency
        # quantiles from the histogram's growth (it moves at Envoy's stats flush, every 5 s).
        last, last_at, latency = None, None, "p50 – p99 –"
        while not self.stop.is_set():
            try:
                m = self.metrics()
                now = time.time()
                up = f'{{upstream="{self.story["upstream"]}"}}'
                active = sorted(re.search(r'fault="([^"]+)"', k).group(1) for k, v in m.items()
                                if k.startswith("dbfault_fault_active") and v == 1)
                mine = f'upstream="{self.story["upstream"]}"'
                def total(name):
                    return sum(v for k, v in m.items() if k.startswith(name + "{") and mine in k)
                buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v)
                                 for k, v in m.items()
                                 if k.startswith("dbfault_upstream_request_duration_us_bucket{") and mine in k)
                now_counts = (total("dbfault_upstream_requests_total"),
                              total("dbfault_upstream_request_errors_total"), buckets)
                rates = ""
                if last is not None:
                    dt = max(now - last_at, 1e-3)
                    qps = (now_counts[0] - last[0]) / dt
                    eps = (now_counts[1] - last[1]) / dt
                    grown = [(le, v - dict(last[2]).get(le, 0)) for le, v in buckets]
                    if grown and grown[-1][1] > 0:
                        latency = f"p50 {quantile(grown, 0.5)} p99 {quantile(grown, 0.99)}"
                    # Request rates for the protocols dbfault reads (not gRPC).
                    if any(k.startswith("dbfault_upstream_requests_total{") and mine in k for k in m):
                        rates = f"  · {qps:.0f} stmt/s {eps:.0f} err/s {latency}"
                last, last_at = now_counts, now
                # A phase's own line once its first second is in the rates.
                label, since = self.phase, self.phase_at
                self.screen.set_status(
                    f"[{label:^9}] {self.story['upstream']} ↑ {bits(m.get('dbfault_upstream_tx_bytes_per_second' + up, 0))}"
                    f"  ↓ {bits(m.get('dbfault_upstream_rx_bytes_per_second' + up, 0))}"
                    f"  · {m.get('dbfault_upstream_cx_active' + up, 0):.0f} open{rates}"
                    f"  · faults: {', '.join(active) if active else 'none'}",
                    label if now - since >= 1 else None)
            except OSError:
                pass
            self.stop.wait(1)

    # The plugin configuration is read by the crate's own reader and written by localenv.
    def plugin_config(self):
        return json.loads(localenv.read_plugin_config(self.ecds))

    def set_latency(self, latency):
        config = self.plugin_config()
        for rule in config["faults"]:
            if rule["name"] == self.story["slow"]:
                rule["delay"]["latency"] = latency
        localenv.set_plugin_config(self.ecds, json.dumps(config))

    def toggle(self, name, on):
        try:
            localenv.switch_rule(self.ecds, name, on)
        except localenv.LocalEnvError as e:
            self.screen.line(f"demo: {e}")
            return
        self.screen.line(f"demo: ▶ rule {name} switched {'ON' if on else 'off'} (ECDS file replaced; no restart)")

    def enter(self, phase, note):
        self.phase = phase
        self.phase_at = time.time()
        self.phases.append([phase, 0, 0, []])
        self.screen.line(f"demo: ━━ {phase}: {note}")

    def wait(self, seconds):
        return not self.stop.wait(seconds)

    def timeline(self):
        a = self.args
        outage, slow, conflict = self.story["outage"], self.story["slow"], self.story["conflict"]
        steps = [
            ("healthy", a.healthy, "the app writes through Envoy; dbfault counts its traffic", None),
            ("outage", a.outage, f"{outage} (abort, applyTo all): the open connection is cut, new ones fail",
             (outage, True)),
            ("recovery", a.recover, "outage off: the app reconnects", (outage, False)),
        ]
        if conflict:
            steps += [
                ("conflicts", a.conflicts, f"{conflict} (60% of INSERTs into plants fail with SQLSTATE 40001): "
                 "the app retries on its connection; errors per second on the status line", (conflict, True)),
                ("slow", a.delay, f"{conflict} off, {slow} (delay {a.latency}): every write waits",
                 [(conflict, False), (slow, True)]),
            ]
        else:
            steps.append(("slow", a.delay, f"{slow} (delay {a.latency}): every write waits", (slow, True)))
        for phase, seconds, note, toggles in steps:
            for toggle in ([toggles] if isinstance(toggles, tuple) else toggles or []):
                self.toggle(*toggle)
            self.enter(phase, note)
            if not self.wait(seconds):
                return
        self.toggle(slow, False)
        if conflict and a.down > 0:
            if not self.failover():
                return
        self.wait(1.5)
        self.summary()

    def failover(self):
        """The failover drill, merged into the ECDS file: down, read-only, then back."""
        a = self.args
        # Windows start on a whole second: the drill starts at the next one.
        start = int(time.time()) + 1
        try:
            localenv.run_drill(self.ecds, "failover", "--host", self.story["upstream"], "--protocol", "postgres",
                               "--start", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                               "--down", f"{a.down:g}s", "--read-only", f"{a.read_only:g}s")
        except localenv.LocalEnvError as e:
            self.screen.line(f"demo: {e}")
            return False
        self.screen.line("demo: ▶ dbfault drill failover merged into the ECDS file (its rules: dbfault list)")
        if not self.wait(max(0.0, start - time.time())):
            return False
        self.enter("down", "the primary goes away: FATAL 57P01 ends the app's session, new ones get 57P03")
        if not self.wait(a.down):
            return False
        self.enter("read-only", "the old primary answers writes as a standby: 25006 read-only transaction")
        if not self.wait(a.read_only):
            return False
        self.enter("after", "the drill is over: the app writes again")
        return self.wait(a.recover)

    def interactive(self):
        self.enter("live", "type: on NAME | off NAME | list | quit")
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words[0] in ("quit", "q", "exit"):
                break
            if words[0] == "list":
                for r in self.plugin_config().get("faults", []):
                    kind = next(k for k in ("abort", "blackhole", "delay", "cut", "error") if k in r)
                    self.screen.line(f"demo:   {r['name']:18} {'ON ' if r.get('enabled', True) else 'off'} {kind} {json.dumps(r[kind])}")
            elif words[0] in ("on", "off") and len(words) == 2:
                self.toggle(words[1], words[0] == "on")
                self.enter(words[1] if words[0] == "on" else "live", f"{words[1]} {words[0]}")
            else:
                self.screen.line("demo: on NAME | off NAME | list | quit")
        self.summary()

    def summary(self):
        self.stop.set()
        time.sleep(0.2)
        self.screen.close()
        out = ["", "summary", f"  {'phase':10} {'writes':>6} {'ok':>5} {'failed':>6} {'median write':>13}"]
        for name, ok, failed, lat in self.phases:
            med = f"{sorted(lat)[len(lat) // 2]} ms" if lat else "-"
            out.append(f"  {name:10} {ok + failed:6} {ok:5} {failed:6} {med:>13}")
        try:
            m = self.metrics()
            upstream = self.story["upstream"]
            up = f'{{upstream="{upstream}"}}'
            out.append(f"  dbfault metrics for upstream=\"{upstream}\" (Envoy /stats/prometheus):")
            out.append(f"    connections {m.get('dbfault_upstream_cx_total' + up, 0):.0f}"
                       f" · to the database {human(m.get('dbfault_upstream_tx_bytes_total' + up, 0))}"
                       f" · from it {human(m.get('dbfault_upstream_rx_bytes_total' + up, 0))}"
                       f" · dropped {human(m.get('dbfault_upstream_dropped_bytes_total' + up, 0))}")
            injected = {re.search(r'fault="([^"]+)"', k).group(1): v for k, v in m.items()
                        if k.startswith("dbfault_faults_injected_total") and f'upstream="{upstream}"' in k}
            out.append("    faults injected: " + (", ".join(f"{k} {v:.0f}" for k, v in sorted(injected.items())) or "none"))
            by_fault = lambda prefix: {re.search(r'fault="([^"]+)"', k).group(1): v for k, v in m.items()
                                       if k.startswith(prefix) and f'upstream="{upstream}"' in k}
            failed, recovery = by_fault("dbfault_fault_failed_requests_total"), by_fault("dbfault_fault_recovery_ms")
            for name in sorted(set(failed) | set(recovery)):
                back = f"the app's first success {recovery[name] / 1000:.1f} s after it stopped" \
                    if name in recovery else "no success since it stopped"
                out.append(f"    {name}: {failed.get(name, 0):.0f} requests failed; {back}")
        except OSError as err:
            out.append(f"  (metrics unavailable: {err})")
        print("\n".join(out), flush=True)

    def cleanup(self):
        self.stop.set()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.emulator is not None and self.emulator.poll() is None:
            # The emulator's whole process group: gcloud starts Java.
            try:
                os.killpg(self.emulator.pid, signal.SIGTERM)
                self.emulator.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.args.db == "postgres":
            try:
                localenv.postgres_stop(self.tmp)
            except localenv.LocalEnvError as err:
                print(f"demo: {err}", flush=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def emulator_failure(log_text, gcloud, what):
    """Why the Firestore emulator did not come up, said in full: the demo deletes its directory,
    log included, on the way out, so the message must not point at it."""
    # gcloud without the emulator component starts, then says "You need the
    # [cloud-firestore-emulator] component to use the Firestore emulator." (and, installed from
    # apt, which package to install instead).
    if "cloud-firestore-emulator" in log_text:
        return (f"the Firestore emulator is not installed in {gcloud}: install the "
                "google-cloud-cli-firestore-emulator package (gcloud from apt) or run "
                "`gcloud components install cloud-firestore-emulator` (Java 17+), "
                "or run the PostgreSQL story: make demo DB=postgres")
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    tail = " | ".join(lines[-3:]) if lines else "(it printed nothing)"
    return (f"the Firestore emulator {what}; its last words: {tail} "
            "(or run the PostgreSQL story: make demo DB=postgres)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=sorted(STORIES), default="firestore")
    parser.add_argument("--healthy", type=float, default=8)
    parser.add_argument("--outage", type=float, default=8)
    parser.add_argument("--recover", type=float, default=6)
    parser.add_argument("--conflicts", type=float, default=8)
    parser.add_argument("--delay", type=float, default=8)
    parser.add_argument("--latency", default="300ms")
    parser.add_argument("--down", type=float, default=4, help="failover drill: seconds down (0: no drill)")
    parser.add_argument("--read-only", type=float, default=4, help="failover drill: seconds read-only")
    parser.add_argument("--interactive", action="store_true")
    parser.add_argument("--envoy", default=os.path.join(ROOT, ".venv", "bin", "envoy"))
    parser.add_argument("--plants", default=os.path.join(ROOT, "target", "release", "examples", "plants"))
    parser.add_argument("--python", default=os.path.join(ROOT, ".venv", "bin", "python"))
    parser.add_argument("--gcloud", default="gcloud", help="the Google Cloud CLI that starts the Firestore emulator")
    args = parser.parse_args()
    demo = Demo(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    failure = None
    try:
        demo.start()
        demo.interactive() if args.interactive else demo.timeline()
    except KeyboardInterrupt:
        demo.screen.close()
        print("\ndemo: interrupted", flush=True)
    except localenv.LocalEnvError as err:
        demo.screen.close()
        failure = f"demo: {err}"
    finally:
        demo.cleanup()
        print(f"demo: stopped {demo.story['database']}, Envoy and plants; removed " + demo.tmp, flush=True)
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
