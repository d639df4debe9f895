#!/usr/bin/env python3
"""The local pieces every script and test needs, in one place: the shipped Envoy configuration
rendered for a run on free ports, the ECDS file (the one writer of dbfault's plugin configuration
into YAML), the plugin configuration read back through the crate's own reader, and a throwaway
PostgreSQL 15.

  localenv.py envoy-config --dir DIR --module WASM [--plugin-config JSON] [--upstream NAME=PORT ...]
      DIR/envoy.yaml: envoy/envoy.yaml with the admin and every listener on port 0, the ECDS file
      DIR/dbfault.yaml watched in DIR, and cluster NAME's endpoint on PORT for each --upstream.
      DIR/dbfault.yaml: envoy/dbfault.yaml with module WASM and the given plugin configuration
      (default: the shipped one).
  localenv.py ecds --module WASM --plugin-config JSON
      prints that ECDS file.
  localenv.py postgres-start --dir DIR [--port PORT]
      initdb and start PostgreSQL 15 on 127.0.0.1 (data, socket and log in DIR); prints its port.
      Without --port it picks a free port and retries with another if the bind fails.
  localenv.py postgres-stop --dir DIR
      stops it (immediate shutdown; nothing to do when it is not running).

As a module (scripts/ is on sys.path of the scripts beside it): write_envoy_config, render_ecds,
set_plugin_config, read_plugin_config, postgres_start, postgres_stop, postgres_data, free_port.

The YAML files are edited in place, line by line, after locating each value by its path in the
document (listener and cluster names included): comments, anchors and layout survive, and a
shipped file whose shape no longer allows an edit is an error naming what is missing, never a
silent no-op. Only the block-style YAML subset the shipped files use is understood (block
mappings and sequences, one-line scalars and flow mappings).
"""
import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_ENVOY = os.path.join(ROOT, "envoy", "envoy.yaml")
SHIPPED_ECDS = os.path.join(ROOT, "envoy", "dbfault.yaml")
def newest_pg_bin(root="/usr/lib/postgresql"):
    """The bin directory of the newest PostgreSQL server Debian installed side by side
    (/usr/lib/postgresql/<major>/bin with an initdb), or None."""
    try:
        majors = sorted((int(v) for v in os.listdir(root) if v.isdigit()), reverse=True)
    except OSError:
        return None
    for major in majors:
        path = os.path.join(root, str(major), "bin")
        if os.access(os.path.join(path, "initdb"), os.X_OK):
            return path
    return None


# PG_BIN (documented) wins; else the newest installed server.
PG_BIN = os.environ.get("PG_BIN") or newest_pg_bin() or "/usr/lib/postgresql/15/bin"
# Where the scripts find the crate's configuration reader (a Cargo build; tests pass their own).
DBFAULT_BIN = os.environ.get("DBFAULT_BIN", os.path.join(ROOT, "target", "release", "dbfault"))


class LocalEnvError(Exception):
    """Something the caller should see as one clear message (the CLI exits 1 with it)."""


# -- a located outline of block-style YAML ------------------------------------------------------

class Node:
    """A `key: value` of a block mapping (or a `- ` item of a block sequence, key None), with the
    column span of its inline value so that the value can be replaced in place."""

    def __init__(self, key, line, col, value="", start=0, end=0):
        self.key, self.line, self.col = key, line, col
        self.value, self.start, self.end = value, start, end
        self.children = []

    def where(self):
        return f"line {self.line + 1}"


def _scan(text, line_no):
    """(end of the content before any comment, bracket depth left open) for one line's text;
    quotes are honoured. An unterminated quote is an error: multi-line scalars are not supported."""
    i, depth, quote = 0, 0, None
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                if text[i + 1:i + 2] == "'":
                    i += 1
                else:
                    quote = None
        elif quote == '"':
            if c == "\\":
                i += 1
            elif c == '"':
                quote = None
        elif c in "'\"" and (i == 0 or text[i - 1] in " \t[{,:"):
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t"):
            break
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    if quote:
        raise LocalEnvError(f"line {line_no + 1}: a quoted scalar continues on the next line (not supported)")
    return len(text[:i].rstrip()), depth


_PLAIN_KEY = re.compile(r"([^\s'\"#\-?:,\[\]{}&*!|>%@`][^:#]*?|-[^\s:#][^:#]*?)\s*:(?=\s|$)")


def _key(text):
    """(key, offset of what follows the colon) when `text` starts with a mapping key, else None."""
    if text[:1] in ("'", '"'):
        end, quote = 1, text[0]
        while end < len(text):
            if text[end] == "\\" and quote == '"':
                end += 2
                continue
            if text[end] == quote:
                if quote == "'" and text[end + 1:end + 2] == "'":
                    end += 2
                    continue
                break
            end += 1
        m = re.match(r"\s*:(?=\s|$)", text[end + 1:])
        return (scalar(text[:end + 1]), end + 1 + m.end()) if m else None
    m = _PLAIN_KEY.match(text)
    return (m.group(1), m.end()) if m else None


def outline(text, name):
    """The tree of block mappings and sequences in `text` (root: a Node with key None)."""
    root = Node(None, -1, -1)
    stack = [root]
    for n, raw in enumerate(text.split("\n")):
        body = raw.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        if body.startswith("\t"):
            raise LocalEnvError(f"{name}: line {n + 1}: tab indentation")
        col = len(raw) - len(body)
        is_item = body == "-" or body.startswith("- ")
        if is_item:
            # A sequence may sit at its key's own column (`listeners:` then `- name: ...`).
            while stack[-1].col > col or (stack[-1].col == col and stack[-1].key is None):
                stack.pop()
            item = Node(None, n, col)
            stack[-1].children.append(item)
            stack.append(item)
            rest = body[1:].lstrip(" ")
            if not rest:
                continue
            col = len(raw) - len(rest)
            body = rest
        else:
            while stack[-1].col >= col:
                stack.pop()
        end, depth = _scan(body, n)
        if depth != 0:
            raise LocalEnvError(f"{name}: line {n + 1}: a flow collection spans lines (not supported)")
        found = _key(body[:end])
        if found is None:
            if not is_item:
                raise LocalEnvError(f"{name}: line {n + 1}: neither `key: value` nor `- item`: {body.strip()!r}")
            item.value, item.start, item.end = body[:end], col, col + end
            continue
        key, after = found
        lead = len(body[after:end]) - len(body[after:end].lstrip())
        node = Node(key, n, col, body[after + lead:end], col + after + lead, col + end)
        if re.fullmatch(r"[|>][-+0-9]*", node.value):
            raise LocalEnvError(f"{name}: line {n + 1}: a block scalar (`{key}: {node.value}`) is not supported")
        stack[-1].children.append(node)
        stack.append(node)
    return root


def scalar(text):
    """The string a one-line YAML scalar stands for (enough for names and paths)."""
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) > 1:
        return text[1:-1].replace("''", "'")
    if text.startswith('"') and text.endswith('"') and len(text) > 1:
        try:
            return json.loads(text)
        except ValueError:
            raise LocalEnvError(f"cannot read the double-quoted scalar {text}") from None
    return text


def yaml_string(text):
    """`text` as a one-line YAML scalar that reads back exactly: single-quoted when every character
    is printable, else double-quoted with escapes (ASCII only, so the file's encoding is moot)."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise LocalEnvError("the text is not valid Unicode (YAML strings cannot carry raw bytes)")
    printable = all(0x20 <= ord(c) <= 0x7E or (ord(c) >= 0xA0 and c not in "\u2028\u2029\ufeff\ufffe\uffff")
                    for c in text)
    if printable:
        return "'" + text.replace("'", "''") + "'"
    out = []
    for c in text:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif 0x20 <= o <= 0x7E:
            out.append(c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif o <= 0xFF:
            out.append(f"\\x{o:02x}")
        elif o <= 0xFFFF:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    return '"' + "".join(out) + '"'


class Document:
    """A YAML file as lines plus its outline; `set_*` edit one value each, in place."""

    def __init__(self, text, name):
        self.name = name
        self.lines = text.split("\n")
        self.root = outline(text, name)
        self.edited = set()

    def text(self):
        return "\n".join(self.lines)

    def fail(self, node, what):
        at = f" (under {node.key or 'item'} at {node.where()})" if node is not self.root else ""
        raise LocalEnvError(f"{self.name}: {what}{at}; cannot render it for a local run")

    def child(self, node, key):
        found = [c for c in node.children if c.key == key]
        if len(found) != 1:
            self.fail(node, f"{'no' if not found else 'more than one'} `{key}`")
        return found[0]

    def path(self, node, *keys):
        for key in keys:
            node = self.child(node, key)
        return node

    def items(self, node):
        found = [c for c in node.children if c.key is None]
        if not found or len(found) != len(node.children):
            self.fail(node, f"`{node.key}` is not a non-empty block sequence")
        return found

    def name_of(self, item):
        return scalar(self.child(item, "name").value)

    def walk(self, node=None):
        node = node or self.root
        for c in node.children:
            yield c
            yield from self.walk(c)

    def _replace(self, line, start, end, new):
        if line in self.edited:
            raise LocalEnvError(f"{self.name}: line {line + 1}: two values to change on one line")
        self.edited.add(line)
        text = self.lines[line]
        self.lines[line] = text[:start] + new + text[end:]

    def set_field(self, node, key, new):
        """Sets `key` of the mapping `node`, written as a block child or as a one-line flow mapping
        (`{address: 127.0.0.1, port_value: 9901}`)."""
        block = [c for c in node.children if c.key == key]
        if len(block) == 1 and not block[0].children:
            c = block[0]
            self._replace(c.line, c.start, c.end, new)
            return
        if not node.children and node.value.startswith("{") and node.value.endswith("}"):
            spans = [s for k, s in _flow_entries(node.value) if k == key]
            if len(spans) == 1:
                a, b = spans[0]
                self._replace(node.line, node.start + a, node.start + b, new)
                return
        self.fail(node, f"`{node.key}` has no single `{key}` value to set")


def _flow_entries(text):
    """[(key, (start, end) of its value)] of a one-line flow mapping `{k: v, ...}`."""
    entries, i, depth, quote, begin = [], 1, 0, None, 1
    bounds = []
    while i < len(text) - 1:
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        elif c == "," and depth == 0:
            bounds.append((begin, i))
            begin = i + 1
        i += 1
    bounds.append((begin, len(text) - 1))
    for a, b in bounds:
        found = _key(text[a:b].lstrip())
        if found is None:
            continue
        key, after = found
        lead = len(text[a:b]) - len(text[a:b].lstrip())
        v0 = a + lead + after
        v0 += len(text[v0:b]) - len(text[v0:b].lstrip())
        v1 = a + len(text[a:b].rstrip())
        entries.append((key, (v0, v1)))
    return entries


# -- the Envoy bootstrap and the ECDS file ------------------------------------------------------

def render_envoy_config(ecds_path, upstreams=None, text=None, name="envoy/envoy.yaml"):
    """The shipped bootstrap (or `text`) with the admin and every listener on port 0, the ECDS
    source at `ecds_path` (watched in its directory), and each {cluster name: port} applied."""
    doc = Document(read(SHIPPED_ENVOY) if text is None else text, name)
    doc.set_field(doc.path(doc.root, "admin", "address", "socket_address"), "port_value", "0")
    resources = doc.child(doc.root, "static_resources")
    for listener in doc.items(doc.child(resources, "listeners")):
        doc.set_field(doc.path(listener, "address", "socket_address"), "port_value", "0")
    clusters = {}
    for cluster in doc.items(doc.child(resources, "clusters")):
        cname = doc.name_of(cluster)
        if cname in clusters:
            doc.fail(cluster, f"two clusters named {cname!r}")
        clusters[cname] = cluster
    for cname, port in (upstreams or {}).items():
        if cname not in clusters:
            raise LocalEnvError(f"{name}: no cluster named {cname!r} (clusters: {', '.join(clusters)})")
        cluster = clusters[cname]
        sockets = [doc.path(lb, "endpoint", "address", "socket_address")
                   for group in doc.items(doc.path(cluster, "load_assignment", "endpoints"))
                   for lb in doc.items(doc.child(group, "lb_endpoints"))]
        if len(sockets) != 1:
            doc.fail(cluster, f"cluster {cname!r} has {len(sockets)} endpoints, not one")
        doc.set_field(sockets[0], "port_value", str(int(port)))
    # The ECDS source is written once behind an anchor and aliased by every listener.
    sources = [n for n in doc.walk() if n.key == "path_config_source"]
    if not sources:
        doc.fail(doc.root, "no `path_config_source` (the ECDS file of the dbfault filter)")
    for source in sources:
        doc.set_field(source, "path", yaml_string(os.path.abspath(ecds_path)))
        doc.set_field(doc.child(source, "watched_directory"), "path",
                      yaml_string(os.path.dirname(os.path.abspath(ecds_path))))
    return doc.text()


def render_ecds(module=None, plugin_config=None, text=None, name="envoy/dbfault.yaml"):
    """The shipped ECDS file (or `text`) with the module file `module` (made absolute) and the
    plugin configuration `plugin_config` (a string, passed to the filter as is); None keeps one."""
    doc = Document(read(SHIPPED_ECDS) if text is None else text, name)
    resources = doc.items(doc.child(doc.root, "resources"))
    if len(resources) != 1:
        doc.fail(doc.root, f"{len(resources)} resources, not one")
    config = doc.path(resources[0], "typed_config", "config")
    if module is not None:
        doc.set_field(doc.path(config, "vm_config", "code", "local"), "filename",
                      yaml_string(os.path.abspath(module)))
    if plugin_config is not None:
        doc.set_field(doc.child(config, "configuration"), "value", yaml_string(plugin_config))
    return doc.text()


def write_envoy_config(directory, module, plugin_config=None, upstreams=None):
    """Writes DIR/envoy.yaml and DIR/dbfault.yaml (see render_envoy_config, render_ecds);
    returns the path of envoy.yaml."""
    os.makedirs(directory, exist_ok=True)
    ecds = os.path.join(directory, "dbfault.yaml")
    bootstrap = render_envoy_config(ecds, upstreams)
    write_atomic(ecds, render_ecds(module, plugin_config))
    path = os.path.join(directory, "envoy.yaml")
    write_atomic(path, bootstrap)
    return path


def start_envoy(directory, binary, extra_args=(), new_session=False, timeout=30):
    """Starts Envoy on DIR/envoy.yaml (see write_envoy_config) with its admin address written to
    DIR/admin and its log in DIR/envoy.log, and waits until it is ready. Returns (the process,
    the admin "host:port", {listener name: port}). Raises LocalEnvError (with the log's tail)
    when it does not become ready."""
    admin_path = os.path.join(directory, "admin")
    log_path = os.path.join(directory, "envoy.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [binary, "-c", "envoy.yaml", "--concurrency", "2", "--disable-hot-restart",
             "--admin-address-path", admin_path, "--log-level", "info", *extra_args],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=new_session)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            with open(admin_path) as f:
                admin = f.read().strip()
            if admin and urllib.request.urlopen(f"http://{admin}/ready", timeout=1).status == 200:
                with urllib.request.urlopen(f"http://{admin}/listeners?format=json", timeout=2) as r:
                    listeners = {l["name"]: l["local_address"]["socket_address"]["port_value"]
                                 for l in json.load(r)["listener_statuses"]}
                return proc, admin, listeners
        except OSError:
            pass
        time.sleep(0.1)
    if proc.poll() is None:
        proc.terminate()
    with open(log_path, errors="replace") as f:
        tail = f.read()[-2000:]
    raise LocalEnvError(f"Envoy did not become ready (log: {log_path}):\n{tail}")


def set_plugin_config(path, plugin_config):
    """Replaces the plugin configuration in the ECDS file `path` atomically (Envoy reloads it)."""
    write_atomic(path, render_ecds(plugin_config=plugin_config, text=read(path), name=path))


def dbfault(*args):
    """Runs the `dbfault` command; its completed process. Raises LocalEnvError with what it said
    when it fails."""
    if not os.access(DBFAULT_BIN, os.X_OK):
        raise LocalEnvError(f"{DBFAULT_BIN} is missing: build it with "
                            "`cargo build --release --bin dbfault` (the make targets do)")
    out = subprocess.run([DBFAULT_BIN, *args], capture_output=True)
    if out.returncode != 0:
        raise LocalEnvError(out.stderr.decode(errors="replace").strip()
                            or f"dbfault {' '.join(args)} failed")
    return out


def switch_rule(path, name, on):
    """Switches rule `name` on or off in the ECDS file `path` in place (`dbfault on|off`: only its
    `enabled` changes; Envoy reloads the file). An unknown name raises LocalEnvError naming the
    known ones."""
    dbfault("on" if on else "off", name, path, "--in-place")


def run_drill(path, drill, *args):
    """Merges `dbfault drill DRILL ARGS` into the ECDS file `path` in place (Envoy reloads it)."""
    dbfault("drill", drill, *args, path, "--in-place")


def read_plugin_config(path):
    """The plugin configuration in `path` (ECDS file, WasmPlugin or JSON), as the crate reads it."""
    out = dbfault("show", path)
    try:
        # `dbfault show` ends the configuration with one newline of its own.
        return out.stdout.decode().removesuffix("\n")
    except UnicodeDecodeError:
        raise LocalEnvError(f"{path}: the plugin configuration is not UTF-8") from None


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def write_atomic(path, text):
    # A temporary file in the same directory, then a rename: a watcher (Envoy) sees one complete
    # file appear, never a half-written one.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".dbfault-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# -- PostgreSQL -----------------------------------------------------------------------------------

def _as_db_user(cmd):
    # PostgreSQL refuses to run as root: use the `postgres` system user then.
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


def free_port():
    """A port free on 127.0.0.1 now; another process may take it before the caller binds it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BIND_FAILED = ("could not bind", "could not create any TCP/IP sockets", "Address already in use")


def postgres_data(directory):
    """The data directory of the PostgreSQL that postgres_start runs in `directory`."""
    return os.path.join(os.path.abspath(directory), "data")


def postgres_start(directory, port=None, prefix=(), attempts=8):
    """initdb (once) and start a throwaway PostgreSQL (the newest installed, or PG_BIN's) in `directory` (data in DIR/data; socket
    and log in DIR; trust auth, user `postgres`, fsync off) on 127.0.0.1; returns its port.
    Without `port`, a free port is picked and another tried when the bind fails (a free port can
    be taken by another process before PostgreSQL binds it). `prefix` wraps pg_ctl (e.g. taskset)."""
    directory = os.path.abspath(directory)
    if not os.access(os.path.join(PG_BIN, "initdb"), os.X_OK):
        raise LocalEnvError(f"no PostgreSQL server binaries in {PG_BIN}: install Debian's `postgresql` package "
                            "(apt-get install postgresql), or set PG_BIN to the directory holding initdb and pg_ctl")
    os.makedirs(directory, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data = postgres_data(directory)
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        out = subprocess.run(_as_db_user([f"{PG_BIN}/initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", data]),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise LocalEnvError(f"initdb failed:\n{out.stdout}{out.stderr}")
    log = os.path.join(directory, "postgres.log")
    for _ in range(1 if port else attempts):
        chosen = port or free_port()
        seen = os.path.getsize(log) if os.path.exists(log) else 0
        options = (f"-c listen_addresses=127.0.0.1 -p {chosen} -k {shlex.quote(directory)} -c fsync=off"
                   " -c lc_messages=C")  # English log lines, so that a bind failure is recognised
        out = subprocess.run(_as_db_user(list(prefix) + [f"{PG_BIN}/pg_ctl", "-D", data, "-l", log, "-w",
                                                         "-o", options, "start"]),
                             capture_output=True, text=True)
        if out.returncode == 0:
            return chosen
        with open(log, errors="replace") as f:
            f.seek(seen)
            tail = f.read()
        if port or not any(marker in tail for marker in BIND_FAILED):
            raise LocalEnvError(f"PostgreSQL did not start on 127.0.0.1:{chosen}:\n{out.stderr}{tail}")
    raise LocalEnvError(f"PostgreSQL could not bind a free port in {attempts} attempts (see {log})")


def postgres_standby(directory, primary_port):
    """A hot standby of the throwaway PostgreSQL on `primary_port`, in `directory` (base backup with
    `-R`: it streams from the primary and refuses writes as a read replica does); returns its port."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres")
    data = postgres_data(directory)
    if not os.path.exists(os.path.join(data, "PG_VERSION")):
        out = subprocess.run(_as_db_user([f"{PG_BIN}/pg_basebackup", "-h", "127.0.0.1", "-p", str(primary_port),
                                          "-U", "postgres", "-D", data, "-R", "-X", "stream", "--no-sync"]),
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise LocalEnvError(f"pg_basebackup failed:\n{out.stdout}{out.stderr}")
    return postgres_start(directory)


def postgres_stop(directory):
    """Stops the PostgreSQL of `directory` (immediate shutdown); nothing to do if it is not running."""
    data = postgres_data(directory)
    if not os.path.exists(os.path.join(data, "postmaster.pid")):
        return
    out = subprocess.run(_as_db_user([f"{PG_BIN}/pg_ctl", "-D", data, "-m", "immediate", "stop"]),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise LocalEnvError(f"pg_ctl stop failed:\n{out.stdout}{out.stderr}")


# -- command line ---------------------------------------------------------------------------------

def _upstream(text):
    name, sep, port = text.rpartition("=")
    if not sep or not name or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {text!r}")
    return name, int(port)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="localenv.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("envoy-config", help="write DIR/envoy.yaml and DIR/dbfault.yaml")
    p.add_argument("--dir", required=True)
    p.add_argument("--module", required=True, help="the dbfault .wasm file")
    p.add_argument("--plugin-config", help="plugin configuration JSON (default: the shipped one)")
    p.add_argument("--upstream", type=_upstream, action="append", default=[], metavar="NAME=PORT",
                   help="point cluster NAME at 127.0.0.1:PORT (repeatable)")
    p = sub.add_parser("ecds", help="print the ECDS file")
    p.add_argument("--module", required=True)
    p.add_argument("--plugin-config", required=True)
    p = sub.add_parser("postgres-start", help="start a throwaway PostgreSQL 15; prints its port")
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, help="a fixed port (no retry)")
    p = sub.add_parser("postgres-standby", help="start a hot standby of a postgres-start server; prints its port")
    p.add_argument("--dir", required=True)
    p.add_argument("--primary-port", type=int, required=True)
    p = sub.add_parser("postgres-stop", help="stop it")
    p.add_argument("--dir", required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "envoy-config":
            names = [name for name, _ in args.upstream]
            if len(set(names)) != len(names):
                raise LocalEnvError("an --upstream is given twice")
            write_envoy_config(args.dir, args.module, args.plugin_config, dict(args.upstream))
        elif args.command == "ecds":
            sys.stdout.write(render_ecds(args.module, args.plugin_config))
        elif args.command == "postgres-start":
            print(postgres_start(args.dir, args.port), flush=True)
        elif args.command == "postgres-standby":
            print(postgres_standby(args.dir, args.primary_port), flush=True)
        else:
            postgres_stop(args.dir)
    except (LocalEnvError, OSError) as err:
        sys.exit(f"localenv: {err}")


if __name__ == "__main__":
    main()
