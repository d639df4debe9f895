"""MySQL/MariaDB clients for tests/protocol_safety.rs: what the app hears, and what the server
itself says it ran (its general log, read from the `mysql.general_log` table) and holds (its
rows and `@@in_transaction`). Every socket has a deadline (PyMySQL's read/write timeouts).

    mysql_safety.py lexing PROXY DIRECT
    mysql_safety.py deadlock PROXY DIRECT
    mysql_safety.py lockwait PROXY DIRECT

Prints one JSON object on its last line.
"""
import json
import sys
import threading

import pymysql
from pymysql.constants import CLIENT

TIMEOUT = 20


def connect(port, database=None, multi=False, autocommit=True):
    return pymysql.connect(host="127.0.0.1", port=port, user="root", database=database,
                           autocommit=autocommit, connect_timeout=TIMEOUT, read_timeout=TIMEOUT,
                           write_timeout=TIMEOUT,
                           client_flag=CLIENT.MULTI_STATEMENTS if multi else 0)


def general_log(direct, thread_id):
    """What the server logged as run for the session `thread_id`, in order."""
    c = connect(direct)
    cur = c.cursor()
    cur.execute("SELECT command_type, argument FROM mysql.general_log WHERE thread_id = %s",
                (thread_id,))
    rows = [(kind, arg.decode("utf-8", "replace") if isinstance(arg, bytes) else arg)
            for kind, arg in cur.fetchall()]
    c.close()
    return [arg for kind, arg in rows if kind == "Query"]


def setup(direct, sql):
    """Runs a multi-statement script straight on the server, every result read."""
    c = connect(direct, multi=True)
    cur = c.cursor()
    cur.execute(sql)
    while cur.nextset():
        pass
    c.close()


def start_log(direct):
    c = connect(direct)
    cur = c.cursor()
    cur.execute("SET GLOBAL log_output = 'TABLE'")
    cur.execute("SET GLOBAL general_log = 1")
    c.close()


def results(cur, sql):
    """Every result of a (multi-statement) query: rows, or an error's errno."""
    out = []
    try:
        cur.execute(sql)
        out.append(["rows", [list(r) for r in cur.fetchall()]])
        while cur.nextset():
            out.append(["rows", [list(r) for r in cur.fetchall()]])
    except pymysql.err.MySQLError as e:
        out.append(["error", e.args[0], e.args[1]])
    return out


def lexing(proxy, direct):
    """Queries whose statements only MySQL's own lexical rules split right."""
    start_log(direct)
    setup(direct, "CREATE DATABASE garden; CREATE TABLE garden.t (v text)")
    c = connect(proxy, "garden", multi=True)
    cur = c.cursor()
    cur.execute("SELECT CONNECTION_ID()")
    thread = cur.fetchone()[0]
    queries = [
        # Rule "unions": queryContains "union".
        "SELECT 1 # note; b\nUNION SELECT 2",
        # Rule "inserts": commands INSERT.
        r"INSERT INTO t (v) VALUES ('it\'s; x')",
        # Rule "second": queryContains "select 2".
        r"SELECT 'it\'s; ok'; SELECT 2",
        # Not acted on: all of it runs as sent.
        "SELECT 5--1; SELECT `v` FROM t -- ; SELECT 3\nWHERE 1",
    ]
    replies = [results(cur, q) for q in queries]
    c.close()
    check = connect(direct)
    ccur = check.cursor()
    ccur.execute("SELECT count(*) FROM garden.t")
    rows = ccur.fetchone()[0]
    check.close()
    return {"queries": queries, "replies": replies, "logged": general_log(direct, thread),
            "rows": rows}


DEADLOCK_SETUP = """
CREATE DATABASE shop;
CREATE TABLE shop.locks (id int PRIMARY KEY, n int) ENGINE=InnoDB;
INSERT INTO shop.locks VALUES (1, 0), (2, 0);
CREATE TABLE shop.orders (tag varchar(20)) ENGINE=InnoDB;
CREATE TABLE shop.ballast (i int) ENGINE=InnoDB;
"""


def state(cur):
    cur.execute("SELECT @@in_transaction")
    return cur.fetchone()[0]


def orders(direct, tag):
    c = connect(direct, "shop")
    cur = c.cursor()
    cur.execute("SELECT count(*) FROM orders WHERE tag = %s", (tag,))
    n = cur.fetchone()[0]
    c.close()
    return n


def real_deadlock(direct):
    """A real deadlock on the server, its victim the app's transaction (the other one has more
    work to undo, so InnoDB picks the app's). Returns what the victim's session looks like."""
    app = connect(direct, "shop", autocommit=False)
    other = connect(direct, "shop", autocommit=False)
    acur, ocur = app.cursor(), other.cursor()
    acur.execute("START TRANSACTION")
    acur.execute("INSERT INTO orders VALUES ('real')")
    acur.execute("UPDATE locks SET n = n + 1 WHERE id = 2")
    ocur.execute("START TRANSACTION")
    ocur.executemany("INSERT INTO ballast VALUES (%s)", [(i,) for i in range(50)])
    ocur.execute("UPDATE locks SET n = n + 1 WHERE id = 1")
    outcome = {}

    def other_side():
        try:
            ocur.execute("UPDATE locks SET n = n + 1 WHERE id = 2")
            outcome["other"] = "ok"
        except pymysql.err.MySQLError as e:
            outcome["other"] = e.args[0]

    t = threading.Thread(target=other_side)
    t.start()
    # The other session waits for row 2; the app now waits for row 1: a cycle.
    wait = connect(direct)
    wcur = wait.cursor()
    for _ in range(200):
        wcur.execute("SELECT count(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")
        if wcur.fetchone()[0] >= 1:
            break
        threading.Event().wait(0.05)
    wait.close()
    try:
        acur.execute("UPDATE locks SET n = n + 1 WHERE id = 1")
        errno = None
    except pymysql.err.MySQLError as e:
        errno = e.args[0]
    t.join(TIMEOUT)
    after = state(acur)
    other.commit()
    return {"errno": errno, "in_transaction": after, "other": outcome.get("other"),
            "rows": orders(direct, "real"), "app": app, "cur": acur}


def app_transaction(cur, tag, attempt):
    """The app's transaction, retried on 1213 as MySQL documents: from the start."""
    cur.execute("START TRANSACTION")
    cur.execute(f"INSERT INTO orders VALUES ('{tag}') /* try {attempt} */")
    cur.execute(f"UPDATE locks SET n = n + 1 WHERE id = 1 /* try {attempt} */")
    cur.execute("COMMIT")


def deadlock(proxy, direct):
    """The same 1213 for real and injected (rule: queryContains "locks", "try 1"): the session
    afterwards, then the retry pattern's rows."""
    setup(direct, DEADLOCK_SETUP)
    real = real_deadlock(direct)
    # The retry pattern after the real deadlock: one copy of the order.
    retried_real = None
    try:
        app_transaction(real["cur"], "real", 2)
        retried_real = orders(direct, "real")
    finally:
        real["app"].close()
    out = {"real": {k: real[k] for k in ("errno", "in_transaction", "other", "rows")},
           "real_retried_rows": retried_real}
    for tag, port in (("injected", proxy),):
        c = connect(port, "shop", autocommit=False)
        cur = c.cursor()
        errors = []
        for attempt in (1, 2, 3):
            try:
                app_transaction(cur, tag, attempt)
                break
            except pymysql.err.MySQLError as e:
                errors.append(e.args[0])
                if attempt == 1:
                    # The session right after the error: what a real deadlock leaves.
                    out[f"{tag}_in_transaction"] = state(cur)
                    out[f"{tag}_rows_after_error"] = orders(direct, tag)
        out[f"{tag}_errors"] = errors
        out[f"{tag}_rows"] = orders(direct, tag)
        c.close()
    # `rollback: false` on the rule "keep" (queryContains "keep"): only the statement fails,
    # the transaction stays open with the INSERT in it.
    c = connect(proxy, "shop", autocommit=False)
    cur = c.cursor()
    cur.execute("START TRANSACTION")
    cur.execute("INSERT INTO orders VALUES ('kept')")
    try:
        cur.execute("UPDATE locks SET n = n + 1 WHERE id = 1 /* keep */")
        out["kept_errno"] = None
    except pymysql.err.MySQLError as e:
        out["kept_errno"] = e.args[0]
    out["kept_in_transaction"] = state(cur)
    cur.execute("COMMIT")
    out["kept_rows"] = orders(direct, "kept")
    c.close()
    return out


def lockwait(proxy, direct):
    """A real lock wait timeout (1205) against an injected one: the statement only."""
    setup(direct, DEADLOCK_SETUP + "SET GLOBAL innodb_lock_wait_timeout = 1;")
    out = {}
    holder = connect(direct, "shop", autocommit=False)
    hcur = holder.cursor()
    hcur.execute("START TRANSACTION")
    hcur.execute("UPDATE locks SET n = n + 1 WHERE id = 1")
    for tag, port in (("real", direct), ("injected", proxy)):
        c = connect(port, "shop", autocommit=False)
        cur = c.cursor()
        cur.execute("START TRANSACTION")
        cur.execute(f"INSERT INTO orders VALUES ('{tag}')")
        try:
            # The injected one names the rule's marker; the real one waits for the holder.
            cur.execute("UPDATE locks SET n = n + 1 WHERE id = 1" +
                        (" /* waits */" if tag == "injected" else ""))
            out[f"{tag}_errno"] = None
        except pymysql.err.MySQLError as e:
            out[f"{tag}_errno"] = e.args[0]
        out[f"{tag}_in_transaction"] = state(cur)
        cur.execute("COMMIT")
        out[f"{tag}_rows"] = orders(direct, tag)
        c.close()
    holder.rollback()
    holder.close()
    return out


def main():
    mode, proxy, direct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps({"lexing": lexing, "deadlock": deadlock, "lockwait": lockwait}[mode](proxy, direct)))


if __name__ == "__main__":
    main()
