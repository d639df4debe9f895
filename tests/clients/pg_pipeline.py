#!/usr/bin/env python3
"""PostgreSQL test client: named prepared statements sent in pipeline mode, one Sync group each.

  pg_pipeline.py --port PORT --inserts N [--selects M] [--table plants] [--bad-every K] [--batch B]

Runs N `INSERT INTO <table> (name) VALUES ($1)` and M `SELECT count(*) FROM <table> WHERE name = $1`
(spread evenly among the inserts) on 127.0.0.1:PORT as user/database postgres, then prints one JSON line:
  {"inserts": {"ok": a, "errors": {"23514": b}}, "selects": {"ok": c, "errors": {}}, "rows": R}
R is `SELECT count(*)` of the table afterwards. A connection lost mid-pipeline adds "fatal" (the SQLSTATE of
the server's FATAL error, else libpq's message), R then comes from a new connection (null if that fails),
and the exit status is 3. A failed connect or setup exits 1 (error on stderr); failed statements exit 0.

--bad-every K: every K-th insert uses name 'bad' (against a table with CHECK (name <> 'bad') it fails 23514).
--batch B: statements written to the socket together (TCP_CORK around every B of them; 1 = one write each).

Why libpq (psycopg.pq, via Connection.pgconn) instead of cursor.execute() + Pipeline.sync(): Pipeline.sync()
waits for every pending result, i.e. one round trip per statement when called after each one, and
without a Sync per statement one error aborts all later statements of the group. psycopg has no public
"send a Sync without waiting", so the pipeline is driven here with the libpq calls psycopg itself uses
(PQsendPrepare / PQsendQueryPrepared / PQpipelineSync); the wire messages are those of cursor.execute()
with prepare_threshold=0: Parse `_pg3_<n>` at the first use of a statement, then Bind/Describe/Execute
`_pg3_<n>`, followed here by a Sync for each statement.
"""
import argparse
import json
import os
import select
import socket
import sys
from collections import Counter, deque

import psycopg
from psycopg import pq, sql

S = pq.ExecStatus


class Fatal(Exception):
    """The connection is gone; args[0] is what to report."""


def plan(args, conn, table):
    """(kind, statement text, parameter) in sending order: M selects spread among N inserts."""
    ins = sql.SQL("INSERT INTO {} (name) VALUES ($1)").format(table).as_bytes(conn)
    sel = sql.SQL("SELECT count(*) FROM {} WHERE name = $1").format(table).as_bytes(conn)
    ops, done = [], 0
    for i in range(1, args.inserts + 1):
        ops.append(("inserts", ins, "bad" if args.bad_every and i % args.bad_every == 0 else f"p{i}"))
        while done < args.selects * i // args.inserts:
            ops.append(("selects", sel, f"p{i}"))
            done += 1
    ops += [("selects", sel, "p1")] * (args.selects - done)  # only when --inserts 0
    return ops


def read_answers(pg, pending, out, wait):
    """Consume the answers that have arrived (all pending ones if wait), oldest statement first,
    counting each statement's outcome in out[kind][None or SQLSTATE]. pending holds
    [kind, SQLSTATE of the statement's first error or None] per statement sent."""
    while pending:
        pg.consume_input()  # raises OperationalError once the connection is lost
        while pending and not pg.is_busy():
            head, r = pending[0], pg.get_result()
            if r is None:  # end of one command's results (Parse or Execute): more follow
                continue
            if r.status == S.PIPELINE_SYNC:  # end of the statement's Sync group
                kind, err = pending.popleft()
                out[kind][err] += 1
            elif r.status == S.FATAL_ERROR:  # an ErrorResponse, or libpq's own on a lost connection
                state = (r.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
                head[1] = head[1] or state
                severity = r.error_field(pq.DiagnosticField.SEVERITY_NONLOCALIZED)
                if severity in (b"FATAL", b"PANIC") or pg.status == pq.ConnStatus.BAD:
                    if state:  # the server's answer to this statement: count it, no Sync will come
                        out[pending.popleft()[0]][state] += 1
                    raise Fatal(state or " ".join(pg.get_error_message().split()))
            # PIPELINE_ABORTED: a command skipped after an error earlier in its Sync group (the
            # Execute after a failed Parse); COMMAND_OK / TUPLES_OK: success. No change to the outcome.
        if not wait or not pending:
            return
        # Wait for the server; keep writing what libpq still holds (nonblocking: flush() == 1).
        select.select([pg.socket], [pg.socket] if pg.flush() else [], [])


def run_pipeline(conn, ops, batch, out):
    pg = conn.pgconn  # psycopg's documented escape hatch to libpq
    # A second handle on the same TCP socket, only to toggle TCP_CORK: the kernel holds the writes
    # (libpq flushes at every Sync) until uncorked, so a batch of statements leaves as one segment.
    sock = socket.socket(fileno=os.dup(pg.socket)) if batch > 1 and hasattr(socket, "TCP_CORK") else None
    names, pending = {}, deque()
    pg.enter_pipeline_mode()
    try:
        for i, (kind, query, param) in enumerate(ops):
            if sock and i % batch == 0:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
            if query not in names:
                # First use: Parse the named statement, in this statement's Sync group (like psycopg).
                # Were that Parse to fail, later uses of the name fail with 26000, as sent blind.
                names[query] = b"_pg3_%d" % len(names)
                pg.send_prepare(names[query], query, [0])  # OID 0 ("unknown"): psycopg's type for str
            pg.send_query_prepared(names[query], [param.encode()], [pq.Format.TEXT])
            pg.pipeline_sync()  # own Sync group: an error aborts this statement only
            pending.append([kind, None])
            if sock and (i % batch == batch - 1 or i == len(ops) - 1):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
            # Take answers as they come, without waiting: a client that never reads can deadlock
            # with a server blocked on writing answers.
            read_answers(pg, pending, out, wait=False)
        read_answers(pg, pending, out, wait=True)
        pg.exit_pipeline_mode()
    except psycopg.OperationalError as e:  # connection lost without a FATAL ErrorResponse
        raise Fatal(" ".join(str(e).split())) from None  # libpq's message, on one line
    finally:
        if sock:
            sock.close()  # closes the duplicate descriptor only


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--inserts", type=int, required=True)
    ap.add_argument("--selects", type=int, default=0)
    ap.add_argument("--table", default="plants")
    ap.add_argument("--bad-every", type=int, default=0, metavar="K")
    ap.add_argument("--batch", type=int, default=8, metavar="B")
    args = ap.parse_args()
    table = sql.Identifier(args.table)
    # prepare_threshold=None: psycopg itself prepares nothing, so the _pg3_<n> names are ours alone.
    connect = lambda: psycopg.connect(host="127.0.0.1", port=args.port, user="postgres", dbname="postgres",
                                      autocommit=True, prepare_threshold=None, connect_timeout=10)
    count = sql.SQL("SELECT count(*) FROM {}").format(table)
    out = {"inserts": Counter(), "selects": Counter()}
    try:
        conn = connect()
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (id serial primary key, name text)").format(table))
    except psycopg.Error as e:
        print(f"pg_pipeline: {e}", file=sys.stderr)
        return 1
    fatal = None
    try:
        run_pipeline(conn, plan(args, conn, table), args.batch, out)
        rows = conn.execute(count).fetchone()[0]
    except Fatal as e:
        fatal, rows = e.args[0], None
        try:  # the caller still wants to know how many inserts took effect
            with connect() as c2:
                rows = c2.execute(count).fetchone()[0]
        except psycopg.Error:
            pass
    finally:
        conn.close()
    res = {k: {"ok": c.pop(None, 0), "errors": dict(c)} for k, c in out.items()}
    res["rows"] = rows
    if fatal is not None:
        res["fatal"] = fatal
    print(json.dumps(res))
    return 3 if fatal is not None else 0


if __name__ == "__main__":
    sys.exit(main())
