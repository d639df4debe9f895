//! End to end: Redis awareness (issue 12) on a real Redis through a real Envoy 1.40 with dbfault
//! — per-command telemetry and injected Redis errors heard by redis-cli, the Rust `redis` crate
//! (pipelines, MULTI/EXEC, pub/sub), redis-py and redis-benchmark.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use dbfault_testkit::{
    config, output_with_input, python_json, run_ok, timed, wait_for, Envoy, OutputByDeadline,
    Redis, RedisConn,
};
use redis::{ConnectionLike, Value};
use std::process::Command;
use std::time::Duration;

const REDIS: &str = r#""match": {"clusters": ["redis"], "protocol": "redis""#;
const READONLY: &str = "READONLY You can't write against a read only replica.";

fn start(rules: &str) -> (Redis, Envoy) {
    let redis = Redis::start();
    let envoy = Envoy::builder()
        .redis(redis.port)
        .plugin_config(&config(rules))
        .start();
    (redis, envoy)
}

/// A `redis` crate connection whose every read and write has a deadline.
fn connect(port: u16) -> redis::Connection {
    let con = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    con
}

/// A dbfault series for upstream `redis` whose labels include `labels`.
fn series(envoy: &Envoy, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    envoy.series(name, &[&[("upstream", "redis")], labels].concat())
}

fn wait_series(envoy: &Envoy, name: &str, labels: &[(&str, &str)], want: f64) {
    envoy.wait_series(name, &[&[("upstream", "redis")], labels].concat(), want);
}

const REQUESTS: &str = "dbfault_upstream_requests_total";
const ERRORS: &str = "dbfault_upstream_request_errors_total";

/// Sends `pipe` as one pipeline and returns every reply, errors included, in order.
fn replies(con: &mut redis::Connection, pipe: &redis::Pipeline, n: usize) -> Vec<Value> {
    con.req_packed_commands(&pipe.get_packed_pipeline(), 0, n)
        .unwrap()
}

fn server_error(v: &Value) -> Option<String> {
    match v {
        Value::ServerError(e) => Some(format!("{} {}", e.code(), e.details().unwrap_or(""))),
        _ => None,
    }
}

#[test]
fn commands_of_a_pipeline_are_counted_and_timed_per_command() {
    let (_redis, envoy) = start("");
    let mut con = connect(envoy.redis());
    // 300 commands in one pipeline: 100 SET, 100 GET, 100 LPUSH on a string (WRONGTYPE).
    let mut pipe = redis::pipe();
    for i in 0..100 {
        pipe.cmd("SET").arg(format!("plant:{i}")).arg("fern");
        pipe.cmd("GET").arg(format!("plant:{i}"));
        pipe.cmd("LPUSH").arg(format!("plant:{i}")).arg("x");
    }
    let got = replies(&mut con, &pipe, 300);
    let wrongtype = got
        .iter()
        .filter_map(server_error)
        .filter(|e| e.starts_with("WRONGTYPE"))
        .count();
    assert_eq!(wrongtype, 100);
    // redis-cli, one command per connection.
    let out = Command::new("redis-cli")
        .args(["-p", &envoy.redis().to_string(), "DBSIZE"])
        .output_by_deadline()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
    for (command, n) in [
        ("set", 100.0),
        ("get", 100.0),
        ("lpush", 100.0),
        ("dbsize", 1.0),
    ] {
        wait_series(
            &envoy,
            REQUESTS,
            &[("protocol", "redis"), ("command", command)],
            n,
        );
    }
    wait_series(
        &envoy,
        ERRORS,
        &[("protocol", "redis"), ("code", "WRONGTYPE")],
        100.0,
    );
    wait_series(
        &envoy,
        "dbfault_upstream_sessions_total",
        &[("protocol", "redis")],
        2.0,
    );
    // Durations: one sample per round trip — commands written together and answered in one
    // read share a sample (each sample is a host call). The pipeline gives a few samples;
    // 20 commands one at a time give 20 more.
    let samples = || {
        series(
            &envoy,
            "dbfault_upstream_request_duration_us_count",
            &[("protocol", "redis")],
        )
    };
    let first = wait_for("the pipeline's samples", Duration::from_secs(15), || {
        samples().filter(|n| *n >= 1.0)
    });
    assert!(first < 300.0, "{first} samples for one pipelined write");
    for i in 0..20 {
        let _: Option<String> = redis::cmd("GET")
            .arg(format!("plant:{i}"))
            .query(&mut con)
            .unwrap();
    }
    wait_for("a sample per round trip", Duration::from_secs(15), || {
        samples().filter(|n| *n >= first + 20.0)
    });
}

#[test]
fn readonly_lands_in_its_place_of_a_pipeline_and_nothing_is_written() {
    let rule = format!(
        r#"{{"name": "replica", {REDIS}, "commands": ["SET", "HSET"], "queryContains": ["plant:"]}},
            "error": {{"message": "{READONLY}"}}}}"#
    );
    let (redis, envoy) = start(&rule);
    let mut con = connect(envoy.redis());
    let mut pipe = redis::pipe();
    pipe.cmd("SET").arg("other").arg("1");
    pipe.cmd("SET").arg("plant:1").arg("fern");
    pipe.cmd("GET").arg("other");
    pipe.cmd("HSET").arg("plant:2").arg("name").arg("rose");
    pipe.cmd("INCR").arg("counter");
    let got = replies(&mut con, &pipe, 5);
    assert_eq!(got[0], Value::Okay);
    assert_eq!(
        server_error(&got[1]).as_deref(),
        Some("READONLY You can't write against a read only replica."),
        "{got:?}"
    );
    assert_eq!(got[2], Value::BulkString(b"1".to_vec()));
    assert!(
        server_error(&got[3]).unwrap().starts_with("READONLY"),
        "{got:?}"
    );
    assert_eq!(got[4], Value::Int(1));
    // Straight to Redis: the keys were not written.
    let mut direct = connect(redis.port);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("plant:1")
        .arg("plant:2")
        .query(&mut direct)
        .unwrap();
    assert_eq!(exists, 0);
    // MULTI/EXEC: an injected error at queue time discards the transaction, as a real one does.
    let result: redis::RedisResult<Value> = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg("counter")
        .cmd("SET")
        .arg("plant:3")
        .arg("moss")
        .query(&mut con);
    // Redis answers the queued SET with the error and EXEC with EXECABORT; the client reports
    // the first error of the transaction.
    let err = result.unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    let counter: i64 = redis::cmd("GET").arg("counter").query(&mut direct).unwrap();
    assert_eq!(counter, 1, "nothing of the transaction ran");
    // The session stays usable.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    wait_series(
        &envoy,
        ERRORS,
        &[("protocol", "redis"), ("code", "READONLY")],
        3.0,
    );
    wait_series(
        &envoy,
        ERRORS,
        &[("protocol", "redis"), ("code", "EXECABORT")],
        1.0,
    );
    wait_for("3 injections counted", Duration::from_secs(10), || {
        (envoy.injected("redis", "replica") == 3.0).then_some(())
    });
}

#[test]
fn subscribe_mode_keeps_working_and_is_counted() {
    let rule = format!(
        r#"{{"name": "replica", {REDIS}, "commands": ["SET"]}}, "error": {{"message": "{READONLY}"}}}}"#
    );
    let (_redis, envoy) = start(&rule);
    let mut sub = connect(envoy.redis());
    let mut publisher = connect(envoy.redis());
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(&["plants", "trees"]).unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..5 {
        let n: i64 = redis::cmd("PUBLISH")
            .arg("plants")
            .arg(format!("fern {i}"))
            .query(&mut publisher)
            .unwrap();
        assert_eq!(n, 1);
        let msg = pubsub.get_message().unwrap();
        assert_eq!(msg.get_payload::<String>().unwrap(), format!("fern {i}"));
    }
    pubsub.unsubscribe(&["plants", "trees"]).unwrap();
    drop(pubsub);
    // Back to normal mode: replies pair again, and rules still act.
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut sub)
        .unwrap_err();
    assert_eq!(err.code(), Some("READONLY"), "{err}");
    let pong: String = redis::cmd("PING").query(&mut sub).unwrap();
    assert_eq!(pong, "PONG");
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "publish")],
        5.0,
    );
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "subscribe")],
        1.0,
    );
    wait_series(
        &envoy,
        ERRORS,
        &[("protocol", "redis"), ("code", "READONLY")],
        1.0,
    );
}

#[test]
fn a_replica_without_its_primary_answers_everything_and_fatal_closes() {
    let (_redis, envoy) = start("");
    let mut con = connect(envoy.redis());
    let masterdown =
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.";
    let rule =
        format!(r#"{{"name": "masterdown", {REDIS}}}, "error": {{"message": "{masterdown}"}}}}"#);
    assert!(envoy.push_plugin_config(&config(&rule)));
    for command in ["PING", "GET", "DBSIZE"] {
        let mut c = redis::cmd(command);
        if command == "GET" {
            c.arg("k");
        }
        let err = c.query::<Value>(&mut con).unwrap_err();
        assert_eq!(err.code(), Some("MASTERDOWN"), "{command}: {err}");
    }
    // fatal: the first command gets the error, then the connection closes.
    let rule = format!(
        r#"{{"name": "loading", {REDIS}}}, "error": {{"message": "LOADING Redis is loading the dataset in memory", "fatal": true}}}}"#
    );
    assert!(envoy.push_plugin_config(&config(&rule)));
    let mut fresh = dbfault_testkit::RedisConn::connect(envoy.redis());
    fresh.send(&dbfault_testkit::resp(&[b"PING"])).unwrap();
    let got = fresh.read_to_close(Duration::from_secs(5));
    assert_eq!(got, b"-LOADING Redis is loading the dataset in memory\r\n");
}

#[test]
fn delays_hold_only_the_listed_commands_and_aborts_never_reach_redis() {
    let rules = format!(
        r#"{{"name": "slow-gets", {REDIS}, "commands": ["GET"]}}, "delay": {{"latency": "150ms"}}}},
           {{"name": "no-flush", {REDIS}, "commands": ["FLUSHALL", "FLUSHDB"]}}, "abort": {{}}}}"#
    );
    let (redis, envoy) = start(&rules);
    let mut con = connect(envoy.redis());
    let mut timed_command = |c: &mut redis::Cmd| timed(|| c.query::<Value>(&mut con).unwrap()).1;
    let gets: Vec<Duration> = (0..4)
        .map(|_| timed_command(redis::cmd("GET").arg("k")))
        .collect();
    let sets: Vec<Duration> = (0..4)
        .map(|_| timed_command(redis::cmd("SET").arg("k").arg("v")))
        .collect();
    dbfault_testkit::assert_held(
        "GETs",
        &gets,
        Duration::from_millis(150),
        Duration::from_millis(2),
    );
    assert!(
        dbfault_testkit::median(sets.clone()) < Duration::from_millis(100),
        "{sets:?}"
    );
    let err = redis::cmd("FLUSHALL").query::<Value>(&mut con).unwrap_err();
    assert!(err.is_connection_dropped() || err.is_io_error(), "{err}");
    let mut direct = connect(redis.port);
    let size: i64 = redis::cmd("DBSIZE").query(&mut direct).unwrap();
    assert_eq!(size, 1, "FLUSHALL never reached Redis");
}

#[test]
fn a_megabyte_value_and_redis_cli_pipe_pass_byte_for_byte() {
    let rule = format!(
        r#"{{"name": "unrelated", {REDIS}, "commands": ["SET"], "queryContains": ["no-such-key"]}},
            "error": {{"message": "{READONLY}"}}}}"#
    );
    let (_redis, envoy) = start(&rule);
    let mut con = connect(envoy.redis());
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    let back: Vec<u8> = redis::cmd("GET").arg("big").query(&mut con).unwrap();
    assert!(back == big, "the value came back changed");
    // A blocking command that times out, then RESP3 (HELLO 3: maps, sets, pushes) with
    // redis-cli -3: replies keep pairing.
    let popped: Option<(String, String)> = redis::cmd("BLPOP")
        .arg("empty")
        .arg(0.2)
        .query(&mut con)
        .unwrap();
    assert_eq!(popped, None);
    let out = output_with_input(
        Command::new("redis-cli").args(["-3", "-p", &envoy.redis().to_string()]),
        b"HSET h a 1 b 2\nHGETALL h\nSMEMBERS nothing\nPING\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // A RESP3 map is printed one key and value per line.
    assert!(text.contains("PONG") && text.contains("a 1"), "{text}");
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "hgetall")],
        1.0,
    );
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "blpop")],
        1.0,
    );
    // redis-cli --pipe: 2000 commands written at once.
    let input: String = (0..2000).map(|i| format!("SET pipe:{i} {i}\r\n")).collect();
    let out = output_with_input(
        Command::new("redis-cli").args(["-p", &envoy.redis().to_string(), "--pipe"]),
        input.as_bytes(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("errors: 0, replies: 2000"), "{text}");
    // 2001 SETs (redis-cli --pipe adds an ECHO of its own to know when it is done).
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "set")],
        2001.0,
    );
    envoy.wait_byte_counters("redis", "redis");
}

#[test]
fn redis_benchmark_and_redis_py_are_counted_and_hear_the_injected_error() {
    let rule = format!(
        r#"{{"name": "replica", {REDIS}, "commands": ["SET"], "queryContains": ["plant:"]}}, "percentage": 50,
            "error": {{"message": "{READONLY}"}}}}"#
    );
    let (_redis, envoy) = start(&rule);
    // redis-benchmark: 2000 SET and 2000 GET in pipelines of 16 (its keys never match).
    run_ok(
        Command::new("redis-benchmark")
            .args([
                "-p",
                &envoy.redis().to_string(),
                "-n",
                "2000",
                "-c",
                "4",
                "-P",
                "16",
            ])
            .args(["-t", "set,get", "-q"]),
    );
    wait_series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "get")],
        2000.0,
    );
    let sets = series(
        &envoy,
        REQUESTS,
        &[("protocol", "redis"), ("command", "set")],
    )
    .unwrap();
    assert_eq!(sets, 2000.0);
    // redis-py, a pipeline of 400 SETs on plant keys: about half fail with its ReadOnlyError.
    let script = r#"
import json, sys, redis
r = redis.Redis(host="127.0.0.1", port=int(sys.argv[1]))
p = r.pipeline(transaction=False)
for i in range(400):
    p.set(f"plant:{i}", "fern")
out = p.execute(raise_on_error=False)
readonly = sum(isinstance(x, redis.exceptions.ReadOnlyError) for x in out)
print(json.dumps({"readonly": readonly, "ok": sum(x is True for x in out), "written": len(r.keys("plant:*"))}))
"#;
    let v = python_json(&["-c", script, &envoy.redis().to_string()]);
    let readonly = v["readonly"].as_i64().unwrap();
    assert_eq!(readonly + v["ok"].as_i64().unwrap(), 400, "{v}");
    // Binomial(400, 0.5): mean 200, standard deviation 10; ±5 of them.
    assert!((150..=250).contains(&readonly), "{v}");
    assert_eq!(v["written"].as_i64().unwrap(), 400 - readonly, "{v}");
    wait_series(
        &envoy,
        ERRORS,
        &[("protocol", "redis"), ("code", "READONLY")],
        readonly as f64,
    );
}

/// The reply to `args` on `con`, as text (an error as its code and message), so that two
/// servers' answers compare.
fn answer(con: &mut redis::Connection, args: &[&str]) -> String {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    match c.query::<Value>(con) {
        Ok(v) => format!("{v:?}"),
        Err(e) => format!("-{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or("")),
    }
}

#[test]
fn access_write_answers_each_command_as_a_read_only_replica_does() {
    // The reference is a real replica of the same primary: dbfault's answer to each command
    // through Envoy (to the primary) must be the replica's, writes refused, reads answered.
    let rule = format!(
        r#"{{"name": "replica", {REDIS}, "access": "write"}}, "error": {{"message": "{READONLY}"}}}}"#
    );
    let (primary, envoy) = start(&rule);
    let replica = Redis::start();
    let mut direct = connect(primary.port);
    for args in [
        &["SET", "k", "v"][..],
        &["RPUSH", "l", "b", "a"],
        &["HSET", "h", "f", "v"],
        &["SADD", "s", "m"],
        &["ZADD", "z", "1", "m"],
        &["XADD", "st", "1-1", "f", "v"],
        &["SET", "n", "1"],
    ] {
        answer(&mut direct, args);
    }
    let mut on_replica = connect(replica.port);
    answer(
        &mut on_replica,
        &["REPLICAOF", "127.0.0.1", &primary.port.to_string()],
    );
    wait_for(
        "the replica to hold the primary's data",
        Duration::from_secs(30),
        || (answer(&mut on_replica, &["XLEN", "st"]) == "int(1)").then_some(()),
    );
    let keys_before = answer(&mut direct, &["DBSIZE"]);
    let k_before = answer(&mut direct, &["GET", "k"]);
    let mut through = connect(envoy.redis());
    let writes: [&[&str]; 20] = [
        &["SET", "k2", "v"],
        &["DEL", "k"],
        &["INCR", "n"],
        &["LPUSH", "l", "x"],
        &["RPOP", "l"],
        &["HSET", "h", "f2", "v"],
        &["SADD", "s", "m2"],
        &["ZADD", "z", "2", "m2"],
        &["EXPIRE", "k", "100"],
        &["RENAME", "k", "k3"],
        &["APPEND", "k", "x"],
        &["GETDEL", "k"],
        &["MSET", "a", "1", "b", "2"],
        &["PFADD", "hll", "a"],
        &["COPY", "k", "k4"],
        &["SETEX", "k", "10", "v"],
        &["XADD", "st", "*", "a", "b"],
        &["XGROUP", "CREATE", "st", "g", "$"],
        &["SORT", "l", "ALPHA"],
        &["FLUSHDB"],
    ];
    let reads: [&[&str]; 14] = [
        &["GET", "k"],
        &["MGET", "k", "n"],
        &["LRANGE", "l", "0", "-1"],
        &["HGETALL", "h"],
        &["SMEMBERS", "s"],
        &["ZRANGE", "z", "0", "-1"],
        &["EXISTS", "k"],
        &["TYPE", "l"],
        &["XLEN", "st"],
        &["STRLEN", "k"],
        &["SORT_RO", "l", "ALPHA"],
        &["PING"],
        &["ECHO", "hi"],
        &["PUBLISH", "channel", "m"],
    ];
    for args in writes.iter().chain(reads.iter()) {
        let want = answer(&mut on_replica, args);
        assert_eq!(answer(&mut through, args), want, "{args:?}");
    }
    // Every write was refused by the replica (the reference is not vacuous) and none reached
    // the primary.
    for args in writes {
        assert!(
            answer(&mut on_replica, args).starts_with("-READONLY"),
            "{args:?}"
        );
    }
    assert!(!answer(&mut on_replica, reads[0]).starts_with('-'));
    assert_eq!(answer(&mut direct, &["DBSIZE"]), keys_before);
    assert_eq!(
        answer(&mut direct, &["GET", "k"]),
        answer(&mut on_replica, &["GET", "k"])
    );
    assert_eq!(
        answer(&mut direct, &["GET", "k2"]),
        answer(&mut direct, &["GET", "no-such-key"])
    );
    // Inside MULTI the refusal is queued as the replica's is: EXEC then fails.
    let mut pipe = redis::pipe();
    pipe.cmd("MULTI")
        .cmd("SET")
        .arg("k")
        .arg("w")
        .cmd("GET")
        .arg("k")
        .cmd("EXEC");
    let via = replies(&mut through, &pipe, 4);
    let reference = replies(&mut on_replica, &pipe, 4);
    assert_eq!(format!("{via:?}"), format!("{reference:?}"));
    assert_eq!(answer(&mut direct, &["GET", "k"]), k_before);
}

/// Each command a `miss` rule may name, with its arguments after the key, and the type of the
/// key it reads (created under `present:<command>` so that, executed, it would return data).
const MISS_READS: &[(&str, &[&str], &str)] = &[
    ("EXISTS", &[], "string"),
    ("GET", &[], "string"),
    ("GETDEL", &[], "string"),
    ("GETEX", &["PERSIST"], "string"),
    ("GETRANGE", &["0", "-1"], "string"),
    ("STRLEN", &[], "string"),
    ("TTL", &[], "string"),
    ("PTTL", &[], "string"),
    ("TYPE", &[], "string"),
    ("MGET", &["present:get", "x y"], "string"),
    ("HEXISTS", &["f"], "hash"),
    ("HGET", &["f"], "hash"),
    ("HGETALL", &[], "hash"),
    ("HKEYS", &[], "hash"),
    ("HLEN", &[], "hash"),
    ("HMGET", &["f", "g", "h"], "hash"),
    ("HVALS", &[], "hash"),
    ("LINDEX", &["0"], "list"),
    ("LLEN", &[], "list"),
    ("LRANGE", &["0", "-1"], "list"),
    ("SCARD", &[], "set"),
    ("SISMEMBER", &["m"], "set"),
    ("SMEMBERS", &[], "set"),
    ("SMISMEMBER", &["m", "n"], "set"),
    ("ZCARD", &[], "zset"),
    ("ZRANGE", &["0", "-1"], "zset"),
    ("ZRANGEBYSCORE", &["-inf", "+inf"], "zset"),
    ("ZRANK", &["m"], "zset"),
    ("ZREVRANGE", &["0", "-1"], "zset"),
    ("ZSCORE", &["m"], "zset"),
];

#[test]
fn miss_answers_each_read_as_redis_answers_a_missing_key_in_resp2_and_resp3() {
    let rule = format!(
        r#"{{"name": "cold-cache", {REDIS}, "queryContains": ["present:"]}}, "miss": {{}}}}"#
    );
    let (redis, envoy) = start(&rule);
    let mut direct = RedisConn::connect(redis.port);
    for (command, _, kind) in MISS_READS {
        let key = format!("present:{}", command.to_ascii_lowercase());
        let k = key.as_bytes();
        match *kind {
            "string" => direct.cmd(&[b"SET", k, b"v", b"EX", b"1000"]),
            "hash" => direct.cmd(&[b"HSET", k, b"f", b"1", b"g", b"2"]),
            "list" => direct.cmd(&[b"RPUSH", k, b"a", b"b"]),
            "set" => direct.cmd(&[b"SADD", k, b"m", b"n"]),
            _ => direct.cmd(&[b"ZADD", k, b"1", b"m"]),
        };
    }
    direct.cmd(&[b"CONFIG", b"RESETSTAT"]);
    // The reference answers come from another server, where the keys do not exist.
    let reference = Redis::start();
    for version in ["2", "3"] {
        let mut real = RedisConn::connect(reference.port);
        let mut faulted = RedisConn::connect(envoy.redis());
        for c in [&mut real, &mut faulted] {
            let hello = c.cmd(&[b"HELLO", version.as_bytes()]);
            assert!(
                !hello.starts_with(b"-"),
                "{}",
                String::from_utf8_lossy(&hello)
            );
        }
        for (command, rest, _) in MISS_READS {
            let ask = |key: &str| {
                let mut args = vec![command.to_string(), key.to_owned()];
                args.extend(rest.iter().map(|a| {
                    a.replace("present:", &format!("{}:", key.split(':').next().unwrap()))
                }));
                args
            };
            let present = ask(&format!("present:{}", command.to_ascii_lowercase()));
            let absent = ask("absent:key");
            let bytes = |v: &[String]| v.iter().map(|a| a.as_bytes().to_vec()).collect::<Vec<_>>();
            let (p, a) = (bytes(&present), bytes(&absent));
            let want = real.cmd(&a.iter().map(Vec::as_slice).collect::<Vec<_>>());
            let got = faulted.cmd(&p.iter().map(Vec::as_slice).collect::<Vec<_>>());
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "RESP{version} {present:?}"
            );
        }
    }
    // None of them executed on the server (its own per-command counts), and the keys are
    // still there; a read in MULTI is not acted on (answered at EXEC, with the data).
    let stats = String::from_utf8(direct.cmd(&[b"INFO", b"commandstats"])).unwrap();
    for (command, _, _) in MISS_READS {
        let stat = format!("cmdstat_{}:", command.to_ascii_lowercase());
        assert!(!stats.contains(&stat), "{command} executed: {stats}");
    }
    assert_eq!(direct.cmd(&[b"EXISTS", b"present:getdel"]), b":1\r\n");
    let mut faulted = RedisConn::connect(envoy.redis());
    assert_eq!(faulted.cmd(&[b"MULTI"]), b"+OK\r\n");
    assert_eq!(faulted.cmd(&[b"GET", b"present:get"]), b"+QUEUED\r\n");
    assert_eq!(faulted.cmd(&[b"EXEC"]), b"*1\r\n$1\r\nv\r\n");
    // A key the rule does not name is read for real.
    direct.cmd(&[b"SET", b"other", b"w"]);
    assert_eq!(faulted.cmd(&[b"GET", b"other"]), b"$1\r\nw\r\n");
    // A client library sees a cache miss, not an error.
    let mut con = connect(envoy.redis());
    let got: (Option<String>, Vec<Option<String>>, i64) = redis::pipe()
        .cmd("GET")
        .arg("present:get")
        .cmd("MGET")
        .arg("present:get")
        .arg("other")
        .cmd("EXISTS")
        .arg("present:get")
        .query(&mut con)
        .unwrap();
    assert_eq!(got, (None, vec![None, None], 0));
}
