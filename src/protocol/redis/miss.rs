//! What Redis answers a read of keys that do not exist (the `miss` kind): the commands that
//! have such an answer, and the answer in RESP2 and RESP3 (a session follows `HELLO 3`).
//! Each answer is the one Redis 7 gives for a missing key (`tests/redis_protocol.rs` compares
//! them with a real server, in both protocols).

/// The shape of a command's answer when its keys are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// A null (`GET`, `HGET`).
    Null,
    /// One null per argument from `skip` on (`MGET`: every key; `HMGET`: every field).
    NullEach { skip: u64 },
    /// One zero per argument from `skip` on (`SMISMEMBER`: every member).
    ZeroEach { skip: u64 },
    /// An integer (`EXISTS` 0, `TTL` -2).
    Integer(i8),
    /// An empty array (`LRANGE`, `ZRANGE`).
    Array,
    /// An empty set (`SMEMBERS`; RESP2: an empty array).
    Set,
    /// An empty map (`HGETALL`; RESP2: an empty array).
    Map,
    /// An empty string (`GETRANGE`).
    Empty,
    /// A status (`TYPE`: `none`).
    Status(&'static str),
}

/// The most arguments a per-argument answer is built for (a longer command passes: its
/// answer would be as large as the client claims).
const MAX_ARGS: u64 = 65_536;

/// The commands a `miss` rule may name, sorted, with their answers.
const TABLE: [(&str, Missing); 30] = [
    ("exists", Missing::Integer(0)),
    ("get", Missing::Null),
    ("getdel", Missing::Null),
    ("getex", Missing::Null),
    ("getrange", Missing::Empty),
    ("hexists", Missing::Integer(0)),
    ("hget", Missing::Null),
    ("hgetall", Missing::Map),
    ("hkeys", Missing::Array),
    ("hlen", Missing::Integer(0)),
    ("hmget", Missing::NullEach { skip: 1 }),
    ("hvals", Missing::Array),
    ("lindex", Missing::Null),
    ("llen", Missing::Integer(0)),
    ("lrange", Missing::Array),
    ("mget", Missing::NullEach { skip: 0 }),
    ("pttl", Missing::Integer(-2)),
    ("scard", Missing::Integer(0)),
    ("sismember", Missing::Integer(0)),
    ("smembers", Missing::Set),
    ("smismember", Missing::ZeroEach { skip: 1 }),
    ("strlen", Missing::Integer(0)),
    ("ttl", Missing::Integer(-2)),
    ("type", Missing::Status("none")),
    ("zcard", Missing::Integer(0)),
    ("zrange", Missing::Array),
    ("zrangebyscore", Missing::Array),
    ("zrank", Missing::Null),
    ("zrevrange", Missing::Array),
    ("zscore", Missing::Null),
];

/// The command labels a `miss` rule may name.
pub fn commands() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(c, _)| *c)
}

/// The answer's shape for `command` (a label), if it has one.
fn find(command: &str) -> Option<Missing> {
    let i = TABLE.binary_search_by(|(c, _)| (*c).cmp(command)).ok()?;
    TABLE.get(i).map(|(_, m)| *m)
}

/// Whether `command` (a label) has a "missing" answer.
pub fn has_answer(command: &str) -> bool {
    find(command).is_some()
}

/// Whether `command` with `args` arguments gets a "missing" answer.
pub fn answers(command: &str, args: u64) -> bool {
    match find(command) {
        Some(Missing::NullEach { .. } | Missing::ZeroEach { .. }) => args <= MAX_ARGS,
        Some(_) => true,
        None => false,
    }
}

/// The answer to `command` with `args` arguments (after its name) when its keys are missing,
/// in RESP3 when `resp3`; `None` for a command without one (or with more than `MAX_ARGS`).
pub fn answer(command: &str, args: u64, resp3: bool) -> Option<Vec<u8>> {
    let missing = find(command)?;
    let null: &[u8] = if resp3 { b"_\r\n" } else { b"$-1\r\n" };
    let each = |skip: u64, item: &[u8]| {
        let n = args.saturating_sub(skip);
        (n <= MAX_ARGS).then(|| {
            let mut out = format!("*{n}\r\n").into_bytes();
            for _ in 0..n {
                out.extend_from_slice(item);
            }
            out
        })
    };
    Some(match missing {
        Missing::Null => null.to_vec(),
        Missing::NullEach { skip } => each(skip, null)?,
        Missing::ZeroEach { skip } => each(skip, b":0\r\n")?,
        Missing::Integer(n) => format!(":{n}\r\n").into_bytes(),
        Missing::Array => b"*0\r\n".to_vec(),
        Missing::Set if resp3 => b"~0\r\n".to_vec(),
        Missing::Map if resp3 => b"%0\r\n".to_vec(),
        Missing::Set | Missing::Map => b"*0\r\n".to_vec(),
        Missing::Empty => b"$0\r\n\r\n".to_vec(),
        Missing::Status(s) => format!("+{s}\r\n").into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_names_only_redis_commands() {
        assert!(TABLE.windows(2).all(|w| w[0].0 < w[1].0));
        for (c, _) in TABLE {
            assert!(super::super::commands::COMMANDS.contains(&c), "{c}");
        }
    }

    #[test]
    fn answers_follow_the_protocol_version_and_the_argument_count() {
        let a = |c, n, r3| String::from_utf8(answer(c, n, r3).unwrap()).unwrap();
        assert_eq!(a("get", 1, false), "$-1\r\n");
        assert_eq!(a("get", 1, true), "_\r\n");
        assert_eq!(a("mget", 3, false), "*3\r\n$-1\r\n$-1\r\n$-1\r\n");
        assert_eq!(a("hmget", 3, true), "*2\r\n_\r\n_\r\n");
        assert_eq!(a("smismember", 3, false), "*2\r\n:0\r\n:0\r\n");
        assert_eq!(a("hgetall", 1, false), "*0\r\n");
        assert_eq!(a("hgetall", 1, true), "%0\r\n");
        assert_eq!(a("smembers", 1, true), "~0\r\n");
        assert_eq!(a("ttl", 1, true), ":-2\r\n");
        assert_eq!(a("type", 1, false), "+none\r\n");
        assert_eq!(answer("set", 2, false), None);
        assert!(has_answer("zscore") && !has_answer("incr"));
        assert_eq!(answer("mget", MAX_ARGS + 1, false), None);
    }
}
