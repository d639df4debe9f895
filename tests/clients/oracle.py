"""The safety oracle (issue 19): a seeded workload of what real apps send, through Envoy with
dbfault under seeded rules, checked against what the database itself says it ran.

    oracle.py rules --protocol P --seed S
        the plugin configuration (JSON) for seed S
    oracle.py run --protocol P --seed S --proxy PORT --direct PORT --statements N [--log FILE]
        runs the workload through PORT (Envoy) and again straight on DIRECT (the reference),
        prints one JSON report on its last line: counts and every violation found

P is `mysql` (MariaDB: its general log, read from `mysql.general_log`) or `postgres`
(PostgreSQL: `log_statement = all`, read from its log FILE). The contract checked, per message
the client sent (a whole COM_QUERY, a whole simple Query, one extended-protocol Execute):

1. the server logged it byte for byte, in the client's order; or, where a rule acted on a
   statement inside it, the statements before that one as sent and then dbfault's stand-in
   (recognised by its marker), nothing else;
2. a statement a rule answered never ran (only its stand-in did);
3. a message no rule acted on was logged exactly once;
4. the replies to the messages no rule acted on equal those of the reference run: the same
   workload sent straight to a second, identical database, each acted-on statement replaced by
   the real error's equivalent (PostgreSQL: a statement that fails; MySQL: nothing, or a
   ROLLBACK for an error that rolls back the transaction) and each aborted connection closed
   at the same place;
5. hence the transaction state after an injected error is the real error's: the workload reads
   it (`@@in_transaction`, 25P02 in a failed PostgreSQL transaction, rows after COMMIT).

Statement boundaries come from the generator (it joins the statements it made), never from
dbfault's lexer. Percentage draws are the module's own: a seed reproduces the workload and the
rules, not which statements a percentage picked.
"""
import argparse
import json
import os
import random
import re
import sys
import time

TIMEOUT = 20
MARKER = "oracle"
TABLE_ROWS = 20

# -- the workload -------------------------------------------------------------------------------

MYSQL_LITERALS = [
    r"'it\'s; x'", "'a''b;c'", r'"dq;\"x"', "'# not a comment'", "'-- nor this'",
    "'/* nor; this */'", "'zz1'", "'zz2;'", r"'back\\slash'", "'plain'", "`v`",
]
PG_LITERALS = [
    "'it''s; x'", r"E'esc\'aped; x'", "$$dollar; x$$", "$tag$ $$ ; $tag$", "'-- not a comment'",
    "'/* nor; this */'", "'zz1'", "'zz2;'", "'plain'",
]
MYSQL_DECOR = ["", "", "", "/* c; */ ", "# c; zz2\n", "-- c; x\n", "/*!40101 */ ", "/*M!100100 */ "]
PG_DECOR = ["", "", "", "/* c; /* nested; */ */ ", "-- c; zz2\n"]


class Statement:
    def __init__(self, text, command):
        self.text = text
        self.command = command


class Workload:
    """Messages of 1 to 4 statements, transactions with savepoints among them."""

    def __init__(self, protocol, seed):
        self.protocol = protocol
        self.rng = random.Random(seed)
        self.next_id = 1000
        self.in_txn = False

    def literal(self):
        pool = MYSQL_LITERALS if self.protocol == "mysql" else PG_LITERALS
        return self.rng.choice(pool)

    def decorate(self, text):
        pool = MYSQL_DECOR if self.protocol == "mysql" else PG_DECOR
        before = self.rng.choice(pool)
        after = self.rng.choice(["", "", " /* tail; zz1 */"])
        return before + text + after

    def statement(self):
        r = self.rng
        i = r.randint(1, TABLE_ROWS)
        pg = self.protocol == "postgres"
        table = r.choice(["t", '"t"' if pg else "`t`"])
        choices = [
            (f"SELECT v FROM {table} WHERE id = {i}", "select"),
            (f"SELECT id, v FROM t ORDER BY id LIMIT 3", "select"),
            (f"SELECT {self.literal()} AS x FROM t WHERE id = {i}", "select"),
            (f"SELECT count(*) FROM {table}", "select"),
            (f"UPDATE {table} SET v = {self.literal()} WHERE id = {i}", "update"),
            (f"DELETE FROM t WHERE id = {r.randint(1, TABLE_ROWS * 2)}", "delete"),
            # The transaction state, as the server sees it.
            ("SELECT pg_current_xact_id_if_assigned() IS NULL" if pg else "SELECT @@in_transaction",
             "select"),
        ]
        self.next_id += 1
        choices.append((f"INSERT INTO t (id, v) VALUES ({self.next_id}, {self.literal()})", "insert"))
        text, command = r.choice(choices)
        return Statement(self.decorate(text), command)

    def control(self):
        """Transaction control, kept consistent with what the workload opened."""
        r = self.rng
        if not self.in_txn:
            self.in_txn = True
            return Statement("START TRANSACTION" if self.protocol == "mysql" else "BEGIN",
                             "start" if self.protocol == "mysql" else "begin")
        pick = r.random()
        if pick < 0.3:
            return Statement("SAVEPOINT sp1", "savepoint")
        if pick < 0.5:
            return Statement("ROLLBACK TO SAVEPOINT sp1", "rollback")
        self.in_txn = False
        end = r.choice(["COMMIT", "ROLLBACK"])
        return Statement(end, end.lower())

    def message(self):
        r = self.rng
        n = r.choice([1, 1, 2, 2, 3, 4])
        parts = []
        for _ in range(n):
            parts.append(self.control() if r.random() < 0.15 else self.statement())
        seps = [r.choice(["; ", ";\n", ";  "]) for _ in parts[1:]]
        text = parts[0].text
        # Where each statement's text starts, and the offset just past the `;` before it.
        starts, semis = [0], [None]
        for sep, p in zip(seps, parts[1:]):
            semis.append(len(text) + 1)
            text += sep
            starts.append(len(text))
            text += p.text
        return {"kind": "query", "text": text, "parts": parts, "starts": starts, "semis": semis}

    def extended(self):
        """PostgreSQL only: one statement by the extended protocol (unnamed or prepared)."""
        r = self.rng
        i = r.randint(1, TABLE_ROWS)
        text, command, params = r.choice([
            ("SELECT v FROM t WHERE id = %s", "select", (i,)),
            ("UPDATE t SET v = %s WHERE id = %s", "update", (f"x{i}; zz1", i)),
            ("SELECT count(*) FROM t WHERE v <> %s", "select", ("zz2",)),
        ])
        return {"kind": "extended", "text": text, "params": params, "prepare": r.random() < 0.5,
                "parts": [Statement(text, command)]}

    def messages(self, statements):
        out, count = [], 0
        while count < statements:
            m = self.extended() if self.protocol == "postgres" and self.rng.random() < 0.25 else self.message()
            out.append(m)
            count += len(m["parts"])
        return out


# -- the rules ----------------------------------------------------------------------------------

# Per protocol: what a rule's match names, the errors it answers with (each naming its rule),
# and the commands it may list.
RULE_VOCABULARY = {
    "mysql": ('"clusters": ["mariadb"], "protocol": "mysql"', [
        '"errno": 1213, "sqlstate": "40001", "message": "Deadlock found (oracle %s)"',
        '"errno": 1205, "sqlstate": "HY000", "message": "Lock wait timeout (oracle %s)"',
        '"errno": 1105, "sqlstate": "HY000", "message": "Unknown (oracle %s)", "rollback": true',
    ], ["INSERT", "UPDATE", "DELETE", "SELECT", "COMMIT", "START"]),
    "postgres": ('"clusters": ["postgres"], "protocol": "postgres"', [
        '"sqlstate": "40001", "message": "could not serialize access (oracle %s)"',
        '"sqlstate": "40P01", "message": "deadlock detected (oracle %s)"',
        '"sqlstate": "57014", "message": "canceling statement (oracle %s)"',
    ], ["INSERT", "UPDATE", "DELETE", "SELECT", "COMMIT", "BEGIN"]),
    "redis": ('"clusters": ["redis"], "protocol": "redis"', [
        '"message": "READONLY You can\'t write against a read only replica (oracle %s)"',
        '"message": "LOADING Redis is loading the dataset in memory (oracle %s)"',
        '"message": "MASTERDOWN Link with MASTER is down (oracle %s)"',
    ], ["SET", "GET", "INCR", "HSET", "EVAL", "PING", "LPUSH"]),
}


def dump_path(args):
    """DBFAULT_ORACLE_DUMP, per protocol: the tests run the three protocols one after another."""
    return f"{os.environ['DBFAULT_ORACLE_DUMP']}.{args.protocol}"


def rules(protocol, seed):
    r = random.Random(seed * 7919 + 1)
    match, errors, commands = RULE_VOCABULARY[protocol]
    out = []
    for n in range(r.randint(2, 4)):
        name = f"r{n}"
        keys = []
        if n == 0:
            # At least one rule that acts often, so that no seed checks nothing.
            keys.append('"commands": ["GET", "SET"]' if protocol == "redis" else '"commands": ["SELECT", "UPDATE"]')
            out.append('{"name": "%s", "match": {%s, %s}, "percentage": 30, "error": {%s}}'
                       % (name, match, keys[0], r.choice(errors) % name))
            continue
        if r.random() < 0.7:
            keys.append('"commands": [%s]' % ", ".join(f'"{c}"' for c in r.sample(commands, r.randint(1, 2))))
        if not keys or r.random() < 0.4:
            keys.append('"queryContains": ["%s"]' % r.choice(["zz1", "zz2", "it", "sp1"] if protocol != "redis" else ["zz1", "zz2", "k1"]))
        kind = r.random()
        if protocol == "redis" and kind < 0.15:
            # A cache-miss storm on some keys (k1, k10-k12): their GETs answered as for a
            # missing key. First, so that it decides for them.
            out.insert(0, '{"name": "%s", "match": {%s, "commands": ["GET"], "queryContains": ["k1"]}, "miss": {}}'
                       % (name, match))
            continue
        if kind < 0.3:
            # A read-only server: writes answered with its error, reads run.
            out.append('{"name": "%s", "match": {%s, "access": "write"}, "percentage": %d, "error": {%s}}'
                       % (name, match, r.choice([30, 100]), r.choice(errors) % name))
            continue
        if kind < 0.75:
            act = '"error": {%s}' % (r.choice(errors) % name)
        elif kind < 0.88:
            act = '"delay": {"latency": "2ms"}'
        else:
            act = '"abort": {}'
        pct = r.choice([10, 30, 50, 100]) if not act.startswith('"abort"') else r.choice([2, 5])
        out.append('{"name": "%s", "match": {%s, %s}, "percentage": %d, %s}' % (name, match, ", ".join(keys), pct, act))
    return '{"metrics": {"interval": "100ms"}, "faults": [%s]}' % ", ".join(out)


# The writes among the generator's requests, as a read-only server refuses them: SQL's
# INSERT, UPDATE and DELETE (its other statements read or control transactions); Redis's
# commands flagged `write` in its command table (`COMMAND INFO` on Redis 7.0: SET, INCR, DEL,
# HSET, LPUSH; EVAL is not flagged; GET, EXISTS, HGET, LRANGE, ECHO and PING read).
WRITES = {"insert", "update", "delete", "set", "incr", "del", "hset", "lpush"}


def first_rule(faults, command, text, queued=False):
    """The rule that decides for a request (`command` label, `text` as matched): the first
    whose `commands`, `queryContains` and `access` all match, ignoring case — dbfault's
    documented matching, computed here on the generator's own statements."""
    low = text.lower()
    for rule in faults:
        m = rule["match"]
        commands = [c.lower() for c in m.get("commands", [])]
        contains = [q.lower() for q in m.get("queryContains", [])]
        access = m.get("access")
        if access is not None and (access == "write") != (command in WRITES):
            continue
        # A miss does not stand in for a command queued in MULTI: the next rule decides.
        if queued and "miss" in rule:
            continue
        if (not commands or command in commands) and (not contains or any(q in low for q in contains)):
            return rule
    return None


def acts(rule, certainly=False):
    """Whether `rule` answers or aborts (with `certainly`: every time, percentage 100)."""
    return (rule is not None and ("error" in rule or "abort" in rule)
            and (not certainly or rule.get("percentage", 100) == 100))


def check_rules(faults, units, at, heard, aborted):
    """What the rules must have done to one message: `units` are its requests as dbfault
    judges them ((command, text), in order), `at` the one acted on (None: none), `heard` the
    rule named in the error the client heard (None: none). Returns what is wrong, if anything."""
    decided = [first_rule(faults, c, t) for c, t in units]
    if aborted:
        if not any(r is not None and "abort" in r for r in decided):
            return "the connection was closed though no abort rule names any statement of it"
        return None
    if at is not None:
        rule = decided[at] if at < len(decided) else None
        if rule is None or "error" not in rule:
            return f"statement {at} was answered though the rule deciding it is {rule and rule['name']}"
        if heard is not None and heard != rule["name"]:
            return f"statement {at} got rule {heard}'s error, but rule {rule['name']} decides it"
    certain = next((k for k, r in enumerate(decided) if acts(r, certainly=True)), None)
    if certain is not None and (at is None or at > certain):
        return f"statement {certain} ran though rule {decided[certain]['name']} acts on all of it"
    return None


def rule_named(message):
    found = re.search(r"\(oracle (r\d+)\)", message or "")
    return found.group(1) if found else None


def rolls_back(message):
    """Whether the rule whose error has `message` rolls back a MySQL transaction (the errno
    table: 1213 does; `rollback: true` does). None: the client heard a real error instead."""
    return message is not None and (message.startswith("Deadlock") or message.startswith("Unknown"))


# -- MySQL --------------------------------------------------------------------------------------

MYSQL_STANDIN = re.compile(r"^(dbfault_injected_\d+|ROLLBACK AND NO CHAIN NO RELEASE /\* dbfault_injected_\d+ \*/)$")


class Mysql:
    def __init__(self, direct):
        import pymysql
        self.pymysql = pymysql
        self.direct = direct

    def connect(self, port, database=None):
        from pymysql.constants import CLIENT
        return self.pymysql.connect(host="127.0.0.1", port=port, user="root", database=database,
                                    autocommit=True, connect_timeout=TIMEOUT, read_timeout=TIMEOUT,
                                    write_timeout=TIMEOUT, client_flag=CLIENT.MULTI_STATEMENTS)

    def script(self, sql):
        c = self.connect(self.direct)
        cur = c.cursor()
        cur.execute(sql)
        while cur.nextset():
            pass
        c.close()

    def setup(self, databases):
        rows = ", ".join(f"({i}, 'v{i}')" for i in range(1, TABLE_ROWS + 1))
        sql = "SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1;"
        for db in databases:
            sql += (f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id int PRIMARY KEY, v text) ENGINE=InnoDB;"
                    f"INSERT INTO {db}.t VALUES {rows};")
        self.script(sql)

    def session(self, port, database):
        c = self.connect(port, database)
        return c, c.thread_id()

    def send(self, conn, m):
        """Every result of the message: rows or affected counts, or the error that ended it.
        None when the connection was lost (an abort)."""
        p = self.pymysql
        cur = conn.cursor()
        out = []
        try:
            cur.execute(m["text"])
            out.append(["rows", [list(x) for x in cur.fetchall()]])
            while cur.nextset():
                out.append(["rows", [list(x) for x in cur.fetchall()]])
        except (p.err.OperationalError, p.err.InterfaceError) as e:
            if e.args and e.args[0] in (2006, 2013, 0):
                return None
            out.append(["error", e.args[0], str(e.args[1]) if len(e.args) > 1 else ""])
        except p.err.MySQLError as e:
            out.append(["error", e.args[0], str(e.args[1]) if len(e.args) > 1 else ""])
        return out

    def logged(self, threads):
        c = self.connect(self.direct)
        cur = c.cursor()
        cur.execute("SELECT thread_id, argument FROM mysql.general_log WHERE command_type = 'Query'")
        out = {t: [] for t in threads}
        for thread, arg in cur.fetchall():
            if thread in out:
                out[thread].append(arg.decode("utf-8", "replace") if isinstance(arg, bytes) else arg)
        c.close()
        return out

    @staticmethod
    def setup_query(q):
        # PyMySQL's own, when it connects.
        return q.startswith("SET NAMES") or q.startswith("SET AUTOCOMMIT")

    @staticmethod
    def same(logged, sent):
        # MariaDB's general log drops trailing whitespace.
        return logged == sent.rstrip()

    @staticmethod
    def units(m):
        # A `"…"` holding a backslash reads differently under ANSI_QUOTES, and where that moves
        # a statement's start dbfault takes the query as one statement: such queries are
        # checked against the server's log only (the log walk above), not against the rules.
        if '\\"' in m["text"]:
            return None
        return [(p.command, p.text) for p in m["parts"]]

    def reference_text(self, m, acted_at, message):
        """What the reference sends for a message acted on at statement `acted_at`."""
        before = m["text"][:m["starts"][acted_at]].rstrip()
        before = before[:-1] if before.endswith(";") else before
        tail = "ROLLBACK" if rolls_back(message) else ""
        text = "; ".join(x for x in (before, tail) if x.strip())
        return text


# -- PostgreSQL ---------------------------------------------------------------------------------

PG_STANDIN = re.compile(r'^FETCH "dbfault: injected [0-9A-Z]{5}"$')


class Postgres:
    def __init__(self, direct, log):
        import psycopg
        self.psycopg = psycopg
        self.direct = direct
        self.log = log

    def connect(self, port, dbname="postgres"):
        return self.psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=dbname,
                                    autocommit=True, connect_timeout=TIMEOUT,
                                    options=f"-c statement_timeout={TIMEOUT * 1000}")

    def setup(self, databases):
        c = self.connect(self.direct)
        c.execute("ALTER SYSTEM SET log_statement = 'all'")
        c.execute("ALTER SYSTEM SET log_line_prefix = '@@%p@@ '")
        c.execute("SELECT pg_reload_conf()")
        for db in databases:
            c.execute(f"CREATE DATABASE {db}")
        c.close()
        rows = ", ".join(f"({i}, 'v{i}')" for i in range(1, TABLE_ROWS + 1))
        for db in databases:
            d = self.connect(self.direct, db)
            d.execute(f"CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES {rows}")
            d.close()
        # New sessions log every statement once the postmaster has read the configuration.
        deadline = time.monotonic() + TIMEOUT
        while True:
            c = self.connect(self.direct)
            on = c.execute("SHOW log_statement").fetchone()[0] == "all"
            c.close()
            if on:
                break
            if time.monotonic() > deadline:
                raise SystemExit("log_statement never became 'all'")
            time.sleep(0.05)

    def session(self, port, database):
        c = self.connect(port, database)
        return c, c.info.backend_pid

    def send(self, conn, m):
        ps = self.psycopg
        try:
            if m["kind"] == "extended":
                cur = conn.cursor()
                cur.execute(m["text"], m["params"], prepare=m["prepare"])
                return [["rows", [list(x) for x in cur.fetchall()] if cur.description else cur.rowcount]]
            cur = ps.ClientCursor(conn)
            cur.execute(m["text"])
            out = []
            while True:
                out.append(["rows", [list(x) for x in cur.fetchall()] if cur.description else cur.rowcount])
                if not cur.nextset():
                    break
            return out
        except ps.OperationalError as e:
            if conn.closed or conn.broken:
                return None
            self.finish_maintenance(conn)
            return [["error", e.sqlstate, str(e).split("\n")[0]]]
        except ps.Error as e:
            self.finish_maintenance(conn)
            return [["error", e.sqlstate, str(e).split("\n")[0]]]

    @staticmethod
    def finish_maintenance(conn):
        """Works around a psycopg 3.3 bug: when a query's results hold a ROLLBACK (a COMMIT of a
        failed transaction answers so) and an error, psycopg forgets its prepared statements
        but its DEALLOCATE ALL is skipped by the exception and runs after the next query. When
        that query prepared a statement (`prepare=True`), the server drops it while psycopg
        still uses it: 26000 on its next execution. Real errors do it too, without dbfault
        (psycopg 3.3.9 on PostgreSQL 15: `COMMIT; SELECT 1/0` in a failed transaction, then
        `execute(q, prepare=True)` twice). Run the deferred maintenance now, as psycopg would
        have without the exception, so that the oracle compares dbfault, not this bug."""
        try:
            conn.wait(conn._prepared.maintain_gen(conn))
        except Exception:
            pass

    def logged(self, pids):
        with open(self.log, errors="replace") as f:
            text = f.read()
        out = {p: [] for p in pids}
        for entry in re.split(r"^@@", text, flags=re.M):
            m = re.match(r"(\d+)@@ (\w+):  (.*)", entry, flags=re.S)
            if not m or int(m.group(1)) not in out:
                continue
            # Continuation lines of a multi-line statement are indented by a tab.
            level, body = m.group(2), m.group(3).rstrip("\n").replace("\n\t", "\n")
            if level == "LOG" and body.startswith("statement: "):
                out[int(m.group(1))].append(("query", body[len("statement: "):]))
            elif level == "LOG" and body.startswith("execute "):
                out[int(m.group(1))].append(("extended", body.split(": ", 1)[1]))
            elif level == "ERROR" and 'portal "dbfault: injected' in body:
                # An Execute's stand-in: the portal it names does not exist.
                out[int(m.group(1))].append(("standin", body))
        return out

    @staticmethod
    def setup_query(q):
        # psycopg's own: forgetting its prepared statements after an error.
        return q[1] == "DEALLOCATE ALL"

    @staticmethod
    def same(logged, sent):
        return logged == sent

    @staticmethod
    def units(m):
        if m["kind"] == "extended":
            return [(m["parts"][0].command, numbered(m["text"]))]
        return [(p.command, p.text) for p in m["parts"]]

    def reference_text(self, m, acted_at, message):
        before = m["text"][:m["starts"][acted_at]]
        return before + "SELECT 1/0"


# -- Redis --------------------------------------------------------------------------------------

class RedisWorkload:
    """Pipelines of commands (RESP arrays, and now and then an inline one), MULTI/EXEC blocks,
    EVAL, values with CRLF in them and values of 100 KB."""

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def value(self):
        r = self.rng
        pick = r.random()
        if pick < 0.05:
            return bytes(r.randrange(256) for _ in range(64)) * 1600  # 100 KB
        return r.choice([b"plain", b"zz1", b"with\r\nCRLF", b"zz2 two words", b"", b"*1\r\n$4\r\nPING"])

    def command(self):
        r = self.rng
        i = r.randint(1, 12)
        k, n, h, lst = b"k%d" % i, b"n%d" % i, b"h%d" % i, b"l%d" % i
        return r.choice([
            [b"SET", k, self.value()], [b"GET", k], [b"INCR", n], [b"DEL", k], [b"EXISTS", k],
            [b"HSET", h, b"f", self.value()], [b"HGET", h, b"f"], [b"LPUSH", lst, self.value()],
            [b"LRANGE", lst, b"0", b"2"], [b"ECHO", self.value()],
            [b"EVAL", b"return redis.call('INCR', KEYS[1])", b"1", n],
        ])

    def messages(self, statements):
        """Each message: a pipeline (commands written at once) or a MULTI/EXEC block."""
        out, count = [], 0
        r = self.rng
        while count < statements:
            if r.random() < 0.15:
                cmds = [[b"MULTI"]] + [self.command() for _ in range(r.randint(1, 4))] + [[b"EXEC"]]
                out.append({"kind": "multi", "commands": cmds, "inline": [False] * len(cmds)})
            else:
                cmds = [self.command() for _ in range(r.choice([1, 1, 2, 4, 8]))]
                if r.random() < 0.1:
                    cmds.append([b"PING"])
                inline = [c == [b"PING"] and r.random() < 0.5 for c in cmds]
                out.append({"kind": "pipeline", "commands": cmds, "inline": inline})
            count += len(out[-1]["commands"])
        return out


def resp(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class RespReader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("closed")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return ["ok", rest.decode("latin-1")]
        if kind == b"-":
            return ["error", rest.decode("latin-1")]
        if kind == b":":
            return ["int", int(rest)]
        if kind == b"$":
            n = int(rest)
            return ["bulk", None if n < 0 else self._exact(n).hex()]
        if kind == b"*":
            n = int(rest)
            return ["array", None if n < 0 else [self.reply() for _ in range(n)]]
        raise ValueError(f"not RESP: {line!r}")


class Redis:
    def __init__(self, direct):
        self.direct = direct

    def connect(self, port, db, name=None):
        import socket
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.settimeout(TIMEOUT)
        reader = RespReader(sock)
        for cmd in ([b"SELECT", b"%d" % db], [b"CLIENT", b"SETNAME", name.encode()] if name else None):
            if cmd:
                sock.sendall(resp(cmd))
                reader.reply()
        return sock, reader

    def admin(self, *args):
        sock, reader = self.connect(self.direct, 0)
        sock.sendall(resp([a.encode() if isinstance(a, str) else a for a in args]))
        out = reader.reply()
        sock.close()
        return out

    def send(self, conn, m):
        """The replies to a pipeline or MULTI block written at once; None when the connection
        was closed (an abort)."""
        sock, reader = conn
        data = b"".join(b" ".join(c) + b"\r\n" if inl else resp(c) for c, inl in zip(m["commands"], m["inline"]))
        try:
            sock.sendall(data)
            return [reader.reply() for _ in m["commands"]]
        except (ConnectionError, OSError):
            return None


def unrepr(arg):
    """An argument as MONITOR prints it (sdscatrepr), back to bytes."""
    out, i = bytearray(), 0
    simple = {"n": 10, "r": 13, "t": 9, "a": 7, "b": 8, "\\": 92, '"': 34}
    while i < len(arg):
        c = arg[i]
        if c == "\\":
            nxt = arg[i + 1]
            if nxt == "x":
                out.append(int(arg[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(simple[nxt])
            i += 2
            continue
        out.append(ord(c))
        i += 1
    return bytes(out)


def monitor_args(line):
    """The arguments of one MONITOR line and the client's address."""
    m = re.match(r'^\+[\d.]+ \[(\d+) ([^\]]+)\] (.*)$', line)
    if not m:
        return None, None
    args = [unrepr(a) for a in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(3))]
    return m.group(2), args


def run_redis(args):
    import socket
    import threading
    workload = RedisWorkload(args.seed)
    messages = workload.messages(args.statements)
    db = Redis(args.direct)
    db.admin("FLUSHALL")
    db.admin("CONFIG", "RESETSTAT")
    violations = []

    def violation(i, what):
        if len(violations) < 20:
            violations.append({"message": i, "what": what})

    # MONITOR straight on the server: what Redis ran, in order.
    mon = socket.create_connection(("127.0.0.1", args.direct), timeout=TIMEOUT)
    mon.settimeout(TIMEOUT)
    mreader = RespReader(mon)
    mon.sendall(resp([b"MONITOR"]))
    mreader.reply()
    lines = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                lines.append(mreader._line().decode("latin-1"))
            except (OSError, ConnectionError):
                return

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    conn = db.connect(args.proxy, 0, "oracle-through")
    sent, names = [], ["oracle-through"]
    for i, m in enumerate(messages):
        reply = db.send(conn, m)
        sent.append((i, reply))
        if reply is None:
            conn[0].close()
            names.append(f"oracle-through-{i}")
            conn = db.connect(args.proxy, 0, names[-1])
    conn[0].close()
    errorstats = db.admin("INFO", "errorstats")
    # The end of the through run is in the MONITOR stream once this marker is.
    db.admin("ECHO", "oracle-end")
    deadline = time.monotonic() + TIMEOUT
    while not any('"ECHO" "oracle-end"' in l for l in lines):
        if time.monotonic() > deadline:
            raise SystemExit("MONITOR never showed the end marker")
        time.sleep(0.01)
    stop.set()
    mon.close()
    # The through sessions' commands, by their address (the first command of each is its
    # CLIENT SETNAME); Lua's own calls and the transaction commands are left out.
    addrs, ran, ran_addr = set(), [], []
    for l in lines:
        addr, argv = monitor_args(l)
        if addr is None:
            continue
        if argv[:2] == [b"CLIENT", b"SETNAME"] and argv[2].decode().startswith("oracle-through"):
            addrs.add(addr)
            continue
        if addr in addrs and argv and argv[0].upper() not in (b"MULTI", b"EXEC", b"SELECT"):
            ran.append(argv)
            ran_addr.append(addr)
    # What should have run, walked along what did: every command of a message but those a rule
    # answered (the client heard the rule's error) and the queue of a MULTI that got one; of a
    # message whose connection an abort closed, the commands before the aborted one.
    faults = json.loads(rules("redis", args.seed))["faults"]

    def decides(c, queued=False):
        text = b" ".join(c)[:4096].decode("latin-1")
        return first_rule(faults, c[0].decode("latin-1").lower(), text, queued)

    def missed(m):
        """The commands of a message a `miss` rule answers (never queued ones: MULTI)."""
        if m["kind"] == "multi":
            return []
        return [k for k, c in enumerate(m["commands"]) if (rule := decides(c)) is not None and "miss" in rule]

    acted, aborted, statements, at, ran_before, unheard = {}, set(), 0, 0, {}, 0
    misses = 0
    for i, reply in sent:
        m = messages[i]
        statements += len(m["commands"])
        if reply is None:
            # Unheard: each command up to the aborted one ran, or was answered by a rule (its
            # stand-in ran). Those that ran are the ones on this connection, in order.
            aborted.add(i)
            done = []
            if m["kind"] == "pipeline" and at < len(ran):
                addr = ran_addr[at]
                for c in m["commands"]:
                    if at < len(ran) and ran_addr[at] == addr and ran[at] == c:
                        done.append(c)
                        at += 1
            ran_before[i] = done
            unheard += len(m["commands"]) - len(done)
            continue
        hits = [k for k, r in enumerate(reply) if r[0] == "error" and MARKER in r[1]]
        # A miss: the null a missing key's GET gets, and the command did not run.
        for k in missed(m):
            if k < len(reply) and reply[k] != ["bulk", None]:
                violation(i, f"command {k} got {reply[k]!r}, not a missing key's answer, from a miss rule")
            hits.append(k)
            misses += 1
        hits.sort()
        if hits:
            acted[i] = hits
        if m["kind"] == "multi":
            if hits:
                if reply[-1] != ["error", "EXECABORT Transaction discarded because of previous errors."]:
                    violation(i, f"a MULTI with an injected error was not discarded: {reply[-1]!r}")
                continue
            want = m["commands"][1:-1]
        else:
            want = [c for k, c in enumerate(m["commands"]) if k not in hits]
        for c in want:
            if at >= len(ran) or ran[at] != c:
                violation(i, f"Redis ran {[x[:2] for x in ran[at:at + 1]]!r} where {c[:2]!r} was sent")
                break
            at += 1
        else:
            continue
        break
    if os.environ.get("DBFAULT_ORACLE_DUMP"):
        with open(dump_path(args), "w") as f:
            json.dump({"sent": [([[a.hex() for a in c] for c in messages[i]["commands"]], r) for i, r in sent],
                       "ran": [[a.hex() for a in c] for c in ran]}, f, indent=1, default=str)
    if not violations and at != len(ran):
        violation(None, f"Redis ran {len(ran) - at} commands nobody sent: {[x[:2] for x in ran[at:at + 3]]!r}")
    # What the rules decide, by the oracle's own matching: each command answered by the rule
    # that decides it and names itself in the error, none that a 100% rule decides left to
    # run; in an aborted pipeline, the commands that did not run were answered or aborted.
    for i, reply in sent:
        m = messages[i]
        if m["kind"] == "multi" and reply is None:
            continue
        queued = m["kind"] == "multi"
        decided = [decides(c, queued and 0 < k < len(m["commands"]) - 1) for k, c in enumerate(m["commands"])]
        if reply is None:
            unrun = list(range(len(m["commands"])))
            for c in ran_before[i]:
                unrun.remove(next(k for k in unrun if m["commands"][k] == c))
            for k in unrun:
                rule = decided[k]
                if rule is not None and "abort" in rule:
                    break
                if rule is None or ("error" not in rule and "miss" not in rule):
                    violation(i, f"command {k} did not run, though no rule answers or aborts it")
                    break
            continue
        for k, (r, rule) in enumerate(zip(reply, decided)):
            named = rule_named(r[1]) if r[0] == "error" else None
            if named is not None and (rule is None or named != rule["name"] or "error" not in rule):
                violation(i, f"command {k} got rule {named}'s error, but {rule and rule['name']} decides it")
            if named is None and acts(rule, certainly=True) and "error" in rule:
                violation(i, f"command {k} ran though rule {rule['name']} answers all of it")

    # Each stand-in is one unknown command Redis refused (no real ERR error in this workload).
    standins = sum(len(h) for h in acted.values())
    refused = 0
    if errorstats[0] == "bulk":
        text = bytes.fromhex(errorstats[1]).decode()
        found = re.search(r"errorstat_ERR:count=(\d+)", text)
        refused = int(found.group(1)) if found else 0
    # (Commands of an aborted pipeline that did not run may have been stand-ins too.)
    if not standins <= refused <= standins + unheard:
        violation(None, f"Redis refused {refused} unknown commands, {standins} stand-ins were sent")
    # The reference: db 1, acted-on commands left out (inside MULTI: one that fails at queue
    # time, so that EXEC discards the queue as it did), aborted connections closed as they were.
    conn = db.connect(args.direct, 1)
    compared = 0
    for i, reply in sent:
        m = messages[i]
        if i in aborted:
            done = ran_before[i]
            if done:
                db.send(conn, {"commands": done, "inline": [False] * len(done)})
            conn[0].close()
            conn = db.connect(args.direct, 1)
            continue
        if i in acted:
            cmds = [c if k not in acted[i] else [b"dbfault-oracle-reference"] for k, c in enumerate(m["commands"])]
            if m["kind"] == "pipeline":
                cmds = [c for k, c in enumerate(m["commands"]) if k not in acted[i]]
            want = db.send(conn, {"commands": cmds, "inline": [False] * len(cmds)}) if cmds else []
            if m["kind"] == "pipeline":
                got = [r for k, r in enumerate(reply) if k not in acted[i]]
                compared += 1
                if got != want:
                    violation(i, f"replies {got!r} differ from the reference's {want!r}")
            continue
        want = db.send(conn, m)
        compared += 1
        if want != reply:
            violation(i, f"replies {str(reply)[:200]} differ from the reference's {str(want)[:200]}")
    conn[0].close()
    return {"protocol": "redis", "seed": args.seed, "messages": len(messages), "statements": statements,
            "acted": len(acted), "missed": misses, "aborted": len(aborted), "compared": compared, "sessions": len(names),
            "ran": len(ran), "violations": violations}


# -- the run ------------------------------------------------------------------------------------

def numbered(text):
    """psycopg's `%s` placeholders as the server logs them: `$1`, `$2`..."""
    n = 0

    def nth(_):
        nonlocal n
        n += 1
        return f"${n}"

    return re.sub(r"%s", nth, text)


def comparable(reply):
    """A reply without error messages, which name client-side state (psycopg's prepared
    statement names): rows, counts, and error codes."""
    return [r[:2] if r[0] == "error" else r for r in reply or []]


def injected(reply):
    """The index of the statement that got a rule's error, if one did."""
    for i, r in enumerate(reply or []):
        if r[0] == "error" and MARKER in r[2]:
            return i, r
    return None


def run(args):
    if args.protocol == "redis":
        return run_redis(args)
    workload = Workload(args.protocol, args.seed)
    messages = workload.messages(args.statements)
    db = Mysql(args.direct) if args.protocol == "mysql" else Postgres(args.direct, args.log)
    through_db, ref_db = "oracle_through", "oracle_ref"
    db.setup([through_db, ref_db])
    violations = []

    def violation(i, what):
        if len(violations) < 20:
            m = messages[i] if i is not None else {}
            violations.append({"message": i, "text": m.get("text"), "what": what})

    # Through Envoy.
    conn, session = db.session(args.proxy, through_db)
    sessions = [session]
    sent = []  # (message index, session, reply)
    for i, m in enumerate(messages):
        reply = db.send(conn, m)
        sent.append((i, session, reply))
        if reply is None:
            conn, session = db.session(args.proxy, through_db)
            sessions.append(session)
    conn.close()
    logs = db.logged(sessions)
    if os.environ.get("DBFAULT_ORACLE_DUMP"):
        with open(dump_path(args), "w") as f:
            json.dump({"sent": [(messages[i]["text"], r) for i, _, r in sent], "logs": logs}, f, indent=1, default=str)
    cursor = {s: 0 for s in sessions}
    acted, aborted, statements = {}, set(), 0

    def next_logged(s, kind=None):
        entries = logs[s]
        while cursor[s] < len(entries):
            e = entries[cursor[s]]
            cursor[s] += 1
            if db.setup_query(e):
                continue
            return e
        return None

    for i, s, reply in sent:
        m = messages[i]
        statements += len(m["parts"])
        if reply is None:
            aborted.add(i)
            continue
        hit = injected(reply)
        entry = next_logged(s)
        if args.protocol == "postgres":
            kind, text = entry if entry else (None, None)
            if m["kind"] == "extended":
                if hit:
                    # The Execute was replaced: the server ran the stand-in, not the statement.
                    if kind != "standin":
                        violation(i, f"logged {entry!r} where the Execute's stand-in belongs")
                    acted[i] = (0, hit[1][2])
                    continue
                # Refused before it ran (no execute line): its log line, if one matches, is a
                # later Execute's of the same text (psycopg re-prepares after a 26000).
                refused = bool(reply) and reply[0][0] == "error" and reply[0][1] in REFUSED
                ran = not refused and kind == "extended" and db.same(text, numbered(m["text"]))
                if not ran and entry is not None:
                    cursor[s] -= 1
                # A server that refuses the statement before it runs (a failed transaction's
                # 25P02, a Bind error) logs no execute line.
                if not ran and not (reply and reply[0][0] == "error"):
                    violation(i, f"logged {entry!r} instead of the Execute sent")
                continue
            entry = text
        if entry is None:
            violation(i, "never reached the server")
            continue
        if db.same(entry, m["text"]):
            if hit:
                violation(i, "ran on the server though the client heard the rule's error")
            continue
        # Not as sent: it must be the statements before one, then the stand-in.
        standin = MYSQL_STANDIN if args.protocol == "mysql" else PG_STANDIN
        at = None
        for k in range(len(m["parts"])):
            # dbfault keeps the text up to the `;` before the statement, then a space.
            before = m["text"][:m["semis"][k]] + " " if k else ""
            if entry.startswith(before) and standin.match(entry[len(before):]):
                at = k
                break
        if at is None:
            violation(i, f"the server ran {entry!r}, which is neither what was sent nor it with a stand-in")
            continue
        if hit and hit[0] != at and args.protocol == "mysql":
            violation(i, f"the rule's error came for statement {hit[0]}, the stand-in stood for {at}")
        if not hit:
            # The server failed the message for its own reason (an earlier statement's error,
            # a transaction already failed: 25P02), and the client hears that.
            real = [r for r in reply if r[0] == "error"]
            if not real:
                violation(i, "a stand-in reached the server but the client heard no error")
            acted[i] = (at, None)
            continue
        acted[i] = (at, hit[1][2])
    # What the rules decide, by the oracle's own matching of the generator's statements.
    faults = json.loads(rules(args.protocol, args.seed))["faults"]
    for i, _, reply in sent:
        at, message = acted.get(i, (None, None))
        units = db.units(messages[i])
        if units is None:
            continue
        wrong = check_rules(faults, units, at, rule_named(message), i in aborted)
        if wrong:
            violation(i, wrong)
    for s in sessions:
        rest = [e for e in logs[s][cursor[s]:] if not db.setup_query(e)]
        if rest:
            violation(None, f"logged but never sent in session {s}: {rest[:3]!r}")

    # The reference: straight to the server, acted-on statements replaced by the real error's
    # equivalent, aborted connections closed where they were.
    conn, _ = db.session(args.direct, ref_db)
    compared = 0
    for i, _, reply in sent:
        m = messages[i]
        if i in aborted:
            conn.close()
            conn, _ = db.session(args.direct, ref_db)
            continue
        if i in acted:
            at, message = acted[i]
            if m["kind"] == "extended":
                ref = {"kind": "query", "text": "SELECT 1/0"}
            else:
                text = db.reference_text(m, at, message)
                if not text.strip():
                    continue
                ref = {"kind": "query", "text": text}
            db.send(conn, ref)
            continue
        want = db.send(conn, m)
        compared += 1
        if comparable(want) != comparable(reply):
            violation(i, f"reply {reply!r} differs from the reference's {want!r}")
    conn.close()
    return {
        "protocol": args.protocol, "seed": args.seed, "messages": len(messages),
        "statements": statements, "acted": len(acted), "aborted": len(aborted),
        "compared": compared, "sessions": len(sessions), "violations": violations,
    }


# SQLSTATEs with which PostgreSQL refuses an Execute before running it (it logs no execute line):
# no such prepared statement or portal, a failed transaction.
REFUSED = {"26000", "34000", "25P02"}


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("rules")
    r.add_argument("--protocol", required=True, choices=["mysql", "postgres", "redis"])
    r.add_argument("--seed", type=int, required=True)
    u = sub.add_parser("run")
    u.add_argument("--protocol", required=True, choices=["mysql", "postgres", "redis"])
    u.add_argument("--seed", type=int, required=True)
    u.add_argument("--proxy", type=int, required=True)
    u.add_argument("--direct", type=int, required=True)
    u.add_argument("--statements", type=int, default=2000)
    u.add_argument("--log")
    args = p.parse_args()
    if args.cmd == "rules":
        print(rules(args.protocol, args.seed))
    else:
        print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
