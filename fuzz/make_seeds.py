"""Writes the protocol fuzz targets' seeds (fuzz/seeds/{postgres,mysql,redis}/gen-*).

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


# -- MySQL --------------------------------------------------------------------------------------

def packet(seq, payload):
    return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload


def com_query(text):
    return packet(0, b"\x03" + text.encode())


def mysql():
    write("mysql", "acting-queries", com_query("SELECT 1; UPDATE t SET v = '!'; SELECT 2")
          + com_query("INSERT INTO t VALUES ('@')") + com_query("SELECT '^'"))
    write("mysql", "quoting", com_query("SELECT 1 # ;!\nUNION SELECT 2")
          + com_query(r"INSERT INTO t VALUES ('it\'s; !')") + com_query("SELECT `a;!`; SELECT 5--1; SELECT '~'")
          + com_query("/*!40101 SET NAMES utf8 */; SELECT \"a\\\"; !\""))
    write("mysql", "prepared", packet(0, b"\x16UPDATE t SET v = ? WHERE '!' = '!'")
          + packet(0, b"\x17" + struct.pack("<I", 1) + b"\x00\x01\x00\x00\x00") + packet(0, b"\x0e"))
    write("mysql", "long-query", com_query("SELECT '" + "x" * 5000 + "!'"))


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
    write("redis", "large-value", resp(b"SET", b"big!", b"x" * 70000) + resp(b"GET", b"big!"))


if __name__ == "__main__":
    postgres()
    mysql()
    redis()
