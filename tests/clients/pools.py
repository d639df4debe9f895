"""A pooled app that goes quiet: one request, IDLE seconds of silence, then a write and a read.

    pools.py POOL SETTING PORT IDLE ID

POOL: `psycopg_pool` (psycopg 3's ConnectionPool), `sqlalchemy` (SQLAlchemy's QueuePool over
psycopg 3), `sqlalchemy_mysql` (the same over PyMySQL, to MariaDB's database `shop`), `redis`
(redis-py's ConnectionPool). SETTING: `plain` (the defaults) or `checked`
(psycopg_pool: `check=ConnectionPool.check_connection`; SQLAlchemy: `pool_pre_ping=True`;
redis-py: `health_check_interval=1`) or, for redis-py, `timeout` (`checked` and
`socket_timeout=1`). Each pool holds one connection, so the request after the
silence reuses the connection opened before it.

Prints one JSON line per step as it completes, so that a step that hangs (a blackholed
connection: no client here has a read timeout) is seen by the caller as the missing line:
  {"step": "first", "outcome": "ok", "at": <seconds since the start>}
  {"step": "write", "outcome": "ok" | "error: <exception class>"}  after the silence:
      PostgreSQL `INSERT INTO idle_probe VALUES (ID)`, Redis `SET idle:ID 1`
  {"step": "again", "outcome": ...}  the app's next request (a read), after a failed write
"""

import json
import sys
import time


START = time.monotonic()


def say(step, outcome):
    seconds = round(time.monotonic() - START, 3)
    print(json.dumps({"step": step, "outcome": outcome, "at": seconds}), flush=True)


def attempt(step, fn):
    try:
        fn()
        say(step, "ok")
    except Exception as e:  # the class is the outcome
        say(step, f"error: {type(e).__name__}")


def main():
    pool, setting, port, idle, ident = sys.argv[1:6]
    port, idle, ident = int(port), float(idle), int(ident)
    checked = setting == "checked"
    if pool == "psycopg_pool":
        from psycopg_pool import ConnectionPool

        p = ConnectionPool(
            f"host=127.0.0.1 port={port} user=postgres",
            min_size=1,
            max_size=1,
            open=True,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection if checked else None,
        )

        def run(sql):
            with p.connection() as c:
                c.execute(sql)

        write = lambda: run(f"INSERT INTO idle_probe VALUES ({ident})")
        read = lambda: run("SELECT 1")
    elif pool in ("sqlalchemy", "sqlalchemy_mysql"):
        import sqlalchemy

        url = (f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres" if pool == "sqlalchemy"
               else f"mysql+pymysql://root@127.0.0.1:{port}/shop")
        engine = sqlalchemy.create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=checked,
            isolation_level="AUTOCOMMIT",
        )

        def run(sql):
            with engine.connect() as c:
                c.execute(sqlalchemy.text(sql))

        write = lambda: run(f"INSERT INTO idle_probe VALUES ({ident})")
        read = lambda: run("SELECT 1")
    elif pool == "redis":
        import redis

        r = redis.Redis(
            connection_pool=redis.ConnectionPool(
                host="127.0.0.1",
                port=port,
                max_connections=1,
                health_check_interval=0 if setting == "plain" else 1,
                socket_timeout=1 if setting == "timeout" else None,
            )
        )
        write = lambda: r.set(f"idle:{ident}", 1)
        read = lambda: r.get("idle:none")
    else:
        sys.exit(f"unknown pool {pool}")
    attempt("first", read)
    time.sleep(idle)  # the silence under test, not a wait for anything
    attempt("write", write)
    attempt("again", read)


if __name__ == "__main__":
    main()
