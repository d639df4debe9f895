//! The names of real Redis commands (the `command` label values for Redis): the top-level
//! commands of Redis 7.0.15 as its `COMMAND LIST` gives them, and those Redis 7.2 and 7.4 added
//! (`waitaof`, the hash-field expiration commands). Sorted, for a binary search.

/// Whether a command is one a read-only replica refuses: flagged `write` in Redis 7.0.15's own
/// command table (`redis-cli --json COMMAND`; 99 commands), and in Redis 7.4's for the hash-field
/// expiration commands that change a TTL (`hexpire`, `hexpireat`, `hpexpire`, `hpexpireat`,
/// `hpersist`: 104 in all). Among them `sort` and `georadius`, whose optional `STORE` writes
/// (their `_ro` forms do not). Container commands are flagged per subcommand: see
/// [`WRITE_SUBCOMMANDS`].
const WRITE: bool = true;
const READ: bool = false;

/// Every command with its write flag, sorted by name.
const TABLE: [(&str, bool); 250] = [
    ("acl", READ),
    ("append", WRITE),
    ("asking", READ),
    ("auth", READ),
    ("bgrewriteaof", READ),
    ("bgsave", READ),
    ("bitcount", READ),
    ("bitfield", WRITE),
    ("bitfield_ro", READ),
    ("bitop", WRITE),
    ("bitpos", READ),
    ("blmove", WRITE),
    ("blmpop", WRITE),
    ("blpop", WRITE),
    ("brpop", WRITE),
    ("brpoplpush", WRITE),
    ("bzmpop", WRITE),
    ("bzpopmax", WRITE),
    ("bzpopmin", WRITE),
    ("client", READ),
    ("cluster", READ),
    ("command", READ),
    ("config", READ),
    ("copy", WRITE),
    ("dbsize", READ),
    ("debug", READ),
    ("decr", WRITE),
    ("decrby", WRITE),
    ("del", WRITE),
    ("discard", READ),
    ("dump", READ),
    ("echo", READ),
    ("eval", READ),
    ("eval_ro", READ),
    ("evalsha", READ),
    ("evalsha_ro", READ),
    ("exec", READ),
    ("exists", READ),
    ("expire", WRITE),
    ("expireat", WRITE),
    ("expiretime", READ),
    ("failover", READ),
    ("fcall", READ),
    ("fcall_ro", READ),
    ("flushall", WRITE),
    ("flushdb", WRITE),
    ("function", READ),
    ("geoadd", WRITE),
    ("geodist", READ),
    ("geohash", READ),
    ("geopos", READ),
    ("georadius", WRITE),
    ("georadius_ro", READ),
    ("georadiusbymember", WRITE),
    ("georadiusbymember_ro", READ),
    ("geosearch", READ),
    ("geosearchstore", WRITE),
    ("get", READ),
    ("getbit", READ),
    ("getdel", WRITE),
    ("getex", WRITE),
    ("getrange", READ),
    ("getset", WRITE),
    ("hdel", WRITE),
    ("hello", READ),
    ("hexists", READ),
    ("hexpire", WRITE),
    ("hexpireat", WRITE),
    ("hexpiretime", READ),
    ("hget", READ),
    ("hgetall", READ),
    ("hincrby", WRITE),
    ("hincrbyfloat", WRITE),
    ("hkeys", READ),
    ("hlen", READ),
    ("hmget", READ),
    ("hmset", WRITE),
    ("hpersist", WRITE),
    ("hpexpire", WRITE),
    ("hpexpireat", WRITE),
    ("hpexpiretime", READ),
    ("hpttl", READ),
    ("hrandfield", READ),
    ("hscan", READ),
    ("hset", WRITE),
    ("hsetnx", WRITE),
    ("hstrlen", READ),
    ("httl", READ),
    ("hvals", READ),
    ("incr", WRITE),
    ("incrby", WRITE),
    ("incrbyfloat", WRITE),
    ("info", READ),
    ("keys", READ),
    ("lastsave", READ),
    ("latency", READ),
    ("lcs", READ),
    ("lindex", READ),
    ("linsert", WRITE),
    ("llen", READ),
    ("lmove", WRITE),
    ("lmpop", WRITE),
    ("lolwut", READ),
    ("lpop", WRITE),
    ("lpos", READ),
    ("lpush", WRITE),
    ("lpushx", WRITE),
    ("lrange", READ),
    ("lrem", WRITE),
    ("lset", WRITE),
    ("ltrim", WRITE),
    ("memory", READ),
    ("mget", READ),
    ("migrate", WRITE),
    ("module", READ),
    ("monitor", READ),
    ("move", WRITE),
    ("mset", WRITE),
    ("msetnx", WRITE),
    ("multi", READ),
    ("object", READ),
    ("persist", WRITE),
    ("pexpire", WRITE),
    ("pexpireat", WRITE),
    ("pexpiretime", READ),
    ("pfadd", WRITE),
    ("pfcount", READ),
    ("pfdebug", WRITE),
    ("pfmerge", WRITE),
    ("pfselftest", READ),
    ("ping", READ),
    ("psetex", WRITE),
    ("psubscribe", READ),
    ("psync", READ),
    ("pttl", READ),
    ("publish", READ),
    ("pubsub", READ),
    ("punsubscribe", READ),
    ("quit", READ),
    ("randomkey", READ),
    ("readonly", READ),
    ("readwrite", READ),
    ("rename", WRITE),
    ("renamenx", WRITE),
    ("replconf", READ),
    ("replicaof", READ),
    ("reset", READ),
    ("restore", WRITE),
    ("restore-asking", WRITE),
    ("role", READ),
    ("rpop", WRITE),
    ("rpoplpush", WRITE),
    ("rpush", WRITE),
    ("rpushx", WRITE),
    ("sadd", WRITE),
    ("save", READ),
    ("scan", READ),
    ("scard", READ),
    ("script", READ),
    ("sdiff", READ),
    ("sdiffstore", WRITE),
    ("select", READ),
    ("set", WRITE),
    ("setbit", WRITE),
    ("setex", WRITE),
    ("setnx", WRITE),
    ("setrange", WRITE),
    ("shutdown", READ),
    ("sinter", READ),
    ("sintercard", READ),
    ("sinterstore", WRITE),
    ("sismember", READ),
    ("slaveof", READ),
    ("slowlog", READ),
    ("smembers", READ),
    ("smismember", READ),
    ("smove", WRITE),
    ("sort", WRITE),
    ("sort_ro", READ),
    ("spop", WRITE),
    ("spublish", READ),
    ("srandmember", READ),
    ("srem", WRITE),
    ("sscan", READ),
    ("ssubscribe", READ),
    ("strlen", READ),
    ("subscribe", READ),
    ("substr", READ),
    ("sunion", READ),
    ("sunionstore", WRITE),
    ("sunsubscribe", READ),
    ("swapdb", WRITE),
    ("sync", READ),
    ("time", READ),
    ("touch", READ),
    ("ttl", READ),
    ("type", READ),
    ("unlink", WRITE),
    ("unsubscribe", READ),
    ("unwatch", READ),
    ("wait", READ),
    ("waitaof", READ),
    ("watch", READ),
    ("xack", WRITE),
    ("xadd", WRITE),
    ("xautoclaim", WRITE),
    ("xclaim", WRITE),
    ("xdel", WRITE),
    ("xgroup", READ),
    ("xinfo", READ),
    ("xlen", READ),
    ("xpending", READ),
    ("xrange", READ),
    ("xread", READ),
    ("xreadgroup", WRITE),
    ("xrevrange", READ),
    ("xsetid", WRITE),
    ("xtrim", WRITE),
    ("zadd", WRITE),
    ("zcard", READ),
    ("zcount", READ),
    ("zdiff", READ),
    ("zdiffstore", WRITE),
    ("zincrby", WRITE),
    ("zinter", READ),
    ("zintercard", READ),
    ("zinterstore", WRITE),
    ("zlexcount", READ),
    ("zmpop", WRITE),
    ("zmscore", READ),
    ("zpopmax", WRITE),
    ("zpopmin", WRITE),
    ("zrandmember", READ),
    ("zrange", READ),
    ("zrangebylex", READ),
    ("zrangebyscore", READ),
    ("zrangestore", WRITE),
    ("zrank", READ),
    ("zrem", WRITE),
    ("zremrangebylex", WRITE),
    ("zremrangebyrank", WRITE),
    ("zremrangebyscore", WRITE),
    ("zrevrange", READ),
    ("zrevrangebylex", READ),
    ("zrevrangebyscore", READ),
    ("zrevrank", READ),
    ("zscan", READ),
    ("zscore", READ),
    ("zunion", READ),
    ("zunionstore", WRITE),
];

/// The command names alone (the `command` label values), sorted, for a binary search.
// Compile-time copies out of TABLE: an index out of bounds fails the build, not the module.
#[allow(clippy::indexing_slicing)]
pub const COMMANDS: [&str; 250] = {
    let mut out = [""; 250];
    let mut i = 0;
    while i < out.len() {
        out[i] = TABLE[i].0;
        i += 1;
    }
    out
};

/// Container commands whose subcommands named here are flagged `write`.
pub const WRITE_SUBCOMMANDS: [(&str, &[&str]); 2] = [
    ("function", &["delete", "flush", "load", "restore"]),
    (
        "xgroup",
        &[
            "create",
            "createconsumer",
            "delconsumer",
            "destroy",
            "setid",
        ],
    ),
];

/// Whether a command (its `command` label and its text, name first) is one a read-only replica
/// refuses as a write. What a script or a function does (`EVAL`, `FCALL`) cannot be told from
/// its text: they are not writes here.
pub fn writes(command: &str, text: &[u8]) -> bool {
    if let Ok(i) = COMMANDS.binary_search(&command) {
        if TABLE.get(i).is_some_and(|&(_, write)| write) {
            return true;
        }
    }
    let Some((_, subs)) = WRITE_SUBCOMMANDS.iter().find(|(c, _)| *c == command) else {
        return false;
    };
    let sub = text
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .nth(1)
        .unwrap_or_default();
    subs.iter().any(|s| s.as_bytes().eq_ignore_ascii_case(sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_with_redis_s_104_writes() {
        assert!(COMMANDS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(TABLE.iter().filter(|(_, write)| *write).count(), 104);
        assert!(writes("set", b"SET k v") && writes("del", b"DEL k"));
        assert!(!writes("get", b"GET k") && !writes("publish", b"PUBLISH c m"));
        assert!(writes("xgroup", b"XGROUP CREATE s g $") && !writes("xgroup", b"xgroup help"));
        assert!(!writes("eval", b"EVAL \"redis.call('set','k','v')\" 0"));
    }
}
