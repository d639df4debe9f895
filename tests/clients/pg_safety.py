"""psycopg 3 (libpq 18) through dbfault, for tests/protocol_safety.rs: its own transaction API
(nested `transaction()` blocks are savepoints), the retry pattern on 40001, and server-side
prepared statements re-executed. The rule fails statements that say `/* target */`.

    pg_safety.py PROXY DIRECT

Every session has a deadline: `statement_timeout` on the server and `tcp_user_timeout` and
keepalives on the socket, and the whole script runs under the test's process deadline. Prints one
JSON object on its last line.
"""
import json
import sys

import psycopg


def connect(port):
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                           connect_timeout=10, autocommit=True, tcp_user_timeout=20000,
                           keepalives_idle=5, keepalives_interval=2, keepalives_count=3,
                           options="-c statement_timeout=20000")


def main():
    proxy, direct = int(sys.argv[1]), int(sys.argv[2])
    out = {}
    with connect(proxy) as c:
        # A savepoint (a nested block) undoes the failed statement; the outer block commits.
        with c.transaction():
            c.execute("INSERT INTO plants VALUES (%s, %s)", (10, "sage"))
            try:
                with c.transaction():
                    c.execute("UPDATE plants SET name = %s WHERE id = 1 /* target */", ("x",))
                out["savepoint"] = "ok"
            except psycopg.Error as e:
                out["savepoint"] = e.sqlstate
            out["after_savepoint"] = c.execute("SELECT count(*) FROM plants").fetchone()[0]
            c.execute("INSERT INTO plants VALUES (%s, %s)", (11, "thyme"))
        # Without one, the block is rolled back whole.
        try:
            with c.transaction():
                c.execute("INSERT INTO plants VALUES (%s, %s)", (12, "lost"))
                c.execute("DELETE FROM plants /* target */")
            out["block"] = "ok"
        except psycopg.Error as e:
            out["block"] = e.sqlstate
        # The retry pattern: a serialization failure retries the whole transaction. A
        # duplicate key (23505) on the retry would mean the first attempt's INSERT survived.
        errors = []
        for attempt in (1, 2, 3):
            try:
                with c.transaction():
                    c.execute("INSERT INTO plants VALUES (%s, %s)", (13, "retried"))
                    c.execute("UPDATE plants SET name = name WHERE id = 1"
                              + (" /* target */" if attempt == 1 else ""))
                break
            except psycopg.Error as e:
                errors.append(e.sqlstate)
        out["retry_errors"] = errors
        # A server-side prepared statement, executed three times (Bind/Execute by name).
        prepared = []
        for _ in range(3):
            try:
                c.execute("UPDATE plants SET name = %s WHERE id = %s /* target */", ("p", 1),
                          prepare=True)
                prepared.append("ok")
            except psycopg.Error as e:
                prepared.append(e.sqlstate)
        out["prepared"] = prepared
        out["status"] = c.info.transaction_status.name
    with connect(direct) as d:
        out["rows"] = d.execute(
            "SELECT string_agg(id || name, ',' ORDER BY id) FROM plants").fetchone()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
