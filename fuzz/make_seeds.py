"""Writes the protocol fuzz targets' seeds (fuzz/seeds/{postgres,mysql,redis}/gen-*).

A seed may also hold, after the marker SERVER, the replies a server sends to its client stream,
with the provoked errors in them, so that the targets' reply checks start from a realistic
exchange.

Every protocol target reads two bytes first (the chunk size, and the side: which direction goes
first, and for MySQL whether the client asked for CLIENT_DEPRECATE_EOF), then the stream. The
targets' rules act on a statement by its text: `!` fails it, `~` fatally, `^` aborts, `@`
delays. So each seed is a prefix and a well-framed client stream whose statements make the rules
act, in every way a session can carry them.

    python3 fuzz/make_seeds.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
# fuzz_targets/common.rs: SERVER
SERVER = b"\xffdbfault-server\xff"


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    for size in (1, 7, 255):
        with open(os.path.join(d, f"gen-{name}-{size}"), "wb") as f:
            f.write(bytes([size, 0]) + data)


# -- PostgreSQL ---------------------------------------------------------------------------------

def pg(tag, body):
    return tag + struct.pack(">I", len(body) + 4) + body


def startup(minor=0):
    params = b"user\0postgres\0database\0postgres\0\0"
    return struct.pack(">II", len(params) + 8, (3 << 16) | minor) + params


def query(text):
    return pg(b"Q", text.encode() + b"\0")


def extended(name, text, portal=b""):
    return (pg(b"P", name + b"\0" + text.encode() + b"\0\0\0")
            + pg(b"B", portal + b"\0" + name + b"\0\0\0\0\0\0\0")
            + pg(b"E", portal + b"\0\0\0\0\0")
            + pg(b"S", b""))


def cstr(text):
    return text.encode() + b"\0"


def pg_ready(status=b"I"):
    return pg(b"Z", status)


def pg_started(key=struct.pack(">I", 99)):
    """A server's answer to a startup: protocol 3.2's BackendKeyData has a key of up to 256
    bytes, 3.0's one of 4."""
    return (pg(b"R", struct.pack(">I", 0)) + pg(b"S", cstr("standard_conforming_strings") + cstr("on"))
            + pg(b"K", struct.pack(">I", 4242) + key) + pg_ready())


def pg_error(code, message):
    return pg(b"E", b"SERROR\0VERROR\0C" + code + b"\0M" + cstr(message) + b"\0")


def pg_row(*values):
    body = struct.pack(">H", len(values))
    for v in values:
        body += struct.pack(">I", len(v)) + v
    return pg(b"D", body)


def pg_select(value):
    field = cstr("?column?") + struct.pack(">IHIhih", 0, 0, 23, 4, -1, 0)
    return pg(b"T", struct.pack(">H", 1) + field) + pg_row(value) + pg(b"C", cstr("SELECT 1"))


def postgres():
    write("postgres", "acting-queries", startup() + query("SELECT 1; UPDATE t SET v = '!'; SELECT 2")
          + query("BEGIN; INSERT INTO t VALUES ('@'); COMMIT") + query("SELECT '^'"))
    write("postgres", "acting-extended", startup() + extended(b"s1", "UPDATE t SET v = '!' WHERE id = $1")
          + extended(b"", "SELECT '@'") + extended(b"s1", "SELECT 1"))
    write("postgres", "quoting", startup() + query("SELECT $$;!$$; SELECT E'\\';'; /* ; /* ! */ */ SELECT '!'")
          + query("-- ;\nSELECT \"a;!\"; SELECT '~'"))
    write("postgres", "protocol-3-2", startup(2) + query("SELECT '!'"))
    write("postgres", "long-statement", startup() + query("SELECT '" + "x" * 5000 + "!'"))
    write("postgres", "pipeline", startup() + b"".join(query(f"SELECT {i} -- !") for i in range(40)))
    provoked = pg_error(b"34000", 'cursor "dbfault: injected 40001" does not exist')
    write("postgres", "replies-queries", startup() + query("SELECT 1; UPDATE t SET v = '!'; SELECT 2")
          + query("BEGIN; INSERT INTO t VALUES ('@'); COMMIT") + query("BEGIN; SELECT '!'") + query("ROLLBACK")
          + SERVER + pg_started() + pg_select(b"1") + provoked + pg_ready()
          + pg(b"C", cstr("BEGIN")) + pg(b"C", cstr("INSERT 0 1")) + pg(b"C", cstr("COMMIT")) + pg_ready()
          + pg(b"C", cstr("BEGIN")) + provoked + pg_ready(b"E") + pg(b"C", cstr("ROLLBACK")) + pg_ready())
    write("postgres", "replies-protocol-3-2", startup(2) + query("SELECT 1; UPDATE t SET v = '!'")
          + SERVER + pg_started(bytes(range(32))) + pg_select(b"1") + provoked + pg_ready())
    write("postgres", "replies-extended", startup() + extended(b"s1", "UPDATE t SET v = '!' WHERE id = $1")
          + extended(b"", "SELECT '@'") + extended(b"s2", "SELECT '~'")
          + SERVER + pg_started() + pg(b"1", b"") + pg(b"2", b"")
          + pg_error(b"34000", 'portal "dbfault: injected 40001" does not exist') + pg_ready()
          + pg(b"1", b"") + pg(b"2", b"") + pg_row(b"@") + pg(b"C", cstr("SELECT 1")) + pg_ready()
          + pg(b"1", b"") + pg(b"2", b"") + pg_error(b"34000", 'portal "dbfault: injected 40001" does not exist')
          + pg_ready())


# -- MySQL --------------------------------------------------------------------------------------

def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def com_query(text):
    return packet(0, b"\x03" + text.encode())


SERVER_MORE_RESULTS = 0x0008


def my_ok(seq, status=0x0002, header=0x00):
    return packet(seq, bytes([header, 0, 0]) + struct.pack("<HH", status, 0))


def my_err(seq, errno, state, message):
    return packet(seq, b"\xff" + struct.pack("<H", errno) + b"#" + state + message.encode())


def my_select(seq, value, status=0x0002):
    """A one-column, one-row result set without CLIENT_DEPRECATE_EOF (EOF packets)."""
    column = b"".join(bytes([len(x)]) + x for x in (b"def", b"", b"", b"", b"1", b""))
    column += b"\x0c" + struct.pack("<HIBHB", 63, 1, 8, 0x81, 0) + b"\0\0"
    eof = lambda s, st: packet(s, b"\xfe\0\0" + struct.pack("<H", st))
    return (packet(seq, b"\x01") + packet(seq + 1, column) + eof(seq + 2, 0x0002)
            + packet(seq + 3, bytes([len(value)]) + value) + eof(seq + 4, status))


def mysql():
    write("mysql", "acting-queries", com_query("SELECT 1; UPDATE t SET v = '!'; SELECT 2")
          + com_query("INSERT INTO t VALUES ('@')") + com_query("SELECT '^'"))
    write("mysql", "quoting", com_query("SELECT 1 # ;!\nUNION SELECT 2")
          + com_query(r"INSERT INTO t VALUES ('it\'s; !')") + com_query("SELECT `a;!`; SELECT 5--1; SELECT '~'")
          + com_query("/*!40101 SET NAMES utf8 */; SELECT \"a\\\"; !\""))
    write("mysql", "prepared", packet(0, b"\x16UPDATE t SET v = ? WHERE '!' = '!'")
          + packet(0, b"\x17" + struct.pack("<I", 1) + b"\x00\x01\x00\x00\x00") + packet(0, b"\x0e"))
    write("mysql", "long-query", com_query("SELECT '" + "x" * 5000 + "!'"))
    # The targets' 1213 rolls back: its stand-in is a ROLLBACK whose OK becomes the rule's ERR.
    write("mysql", "replies-queries", com_query("SELECT 1; UPDATE t SET v = '!'; SELECT 2")
          + com_query("INSERT INTO t VALUES ('@')") + com_query("SELECT 'a\\'; !'") + com_query("SELECT 3")
          + SERVER + my_select(1, b"1", 0x0002 | SERVER_MORE_RESULTS) + my_ok(6)
          + my_ok(1) + my_ok(1) + my_select(1, b"3")
          + my_err(1, 1064, b"42000", "You have an error in your SQL syntax"))


# -- Redis --------------------------------------------------------------------------------------

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis():
    write("redis", "acting-pipeline", resp(b"SET", b"k", b"!") + resp(b"GET", b"k") + resp(b"SET", b"@", b"v")
          + resp(b"DEL", b"^"))
    write("redis", "multi", resp(b"MULTI") + resp(b"SET", b"k", b"!") + resp(b"INCR", b"n") + resp(b"EXEC"))
    write("redis", "inline", b"PING !\r\nSET k ~\r\n" + resp(b"GET", b"k"))
    write("redis", "replies-pipeline", resp(b"SET", b"k", b"!") + resp(b"GET", b"k") + resp(b"MULTI")
          + resp(b"SET", b"k", b"!") + resp(b"INCR", b"n") + resp(b"EXEC") + resp(b"HGETALL", b"h")
          + SERVER + b"-ERR unknown command 'dbfault-injected', with args beginning with: \r\n"
          + b"$1\r\nv\r\n+OK\r\n-ERR unknown command 'dbfault-injected', with args beginning with: \r\n"
          + b"+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n"
          + b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n")
    write("redis", "large-value", resp(b"SET", b"big!", b"x" * 70000) + resp(b"GET", b"big!"))


if __name__ == "__main__":
    postgres()
    mysql()
    redis()
