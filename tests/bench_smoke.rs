//! The benchmark of issue 5 in smoke mode, so it cannot rot: the load generator
//! (benches/loadgen.rs, code in benches/support/) runs every scenario with tiny numbers
//! against chatd over Socket.IO, chatd over plain WS, the Node.js peer
//! (benches/peers/node-socketio, whose npm dependencies are installed with `npm ci` on first
//! use if missing) and the ceiling relay (which has no storm and no idle scenario), and the
//! fan-out attached to two chatd nodes on PostgreSQL and Redis (benches/cluster.sh's path).
//! Asserts only that numbers are produced and that no message was lost; nothing here
//! measures anything.

mod common;
#[path = "../benches/support/mod.rs"]
mod support;

use std::sync::OnceLock;

use support::scenarios::{self, Config, Record};
use support::servers::{Launch, Target, peer_dir};
use support::wire::{Incoming, Proto, ack_ok, decode, find_u64, parse_frame, push_text};

/// Installs the Node peer's dependencies once per test run (better-sqlite3 compiles from
/// source: minutes the first time).
fn peer_dependencies() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = peer_dir();
        if !dir.join("node_modules/socket.io").exists() || !dir.join("node_modules/better-sqlite3").exists() {
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm runs (Node.js and npm are needed for the benchmark's Node peer)");
            assert!(status.success(), "npm ci in benches/peers/node-socketio failed");
        }
    });
}

/// Checks one scenario's record: numbers came out, nothing failed, nothing was lost.
fn check(record: &Record) {
    match record {
        Record::Fanout(f) | Record::Marketplace(f) => {
            assert!(!f.steps.is_empty(), "{}: no fan-out step ran", f.target);
            for step in &f.steps {
                assert!(step.expected > 0, "{}: nothing was sent at {} msg/s: {step:?}", f.target, step.rate);
                assert_eq!(step.delivered, step.expected, "{}: deliveries missing: {step:?}", f.target);
                assert_eq!(step.ack_errors, 0, "{}: failed sends: {step:?}", f.target);
                assert_eq!(step.closed, 0, "{}: connections closed: {step:?}", f.target);
                assert!(step.p99_ms.is_some() && step.deliveries_per_s > 0.0, "{}: {step:?}", f.target);
                assert!(step.ack_p99_ms.is_some(), "{}: no ack was timed: {step:?}", f.target);
            }
            assert!(f.best().is_some(), "{}: no fan-out step passed: {:?}", f.target, f.steps);
        }
        Record::Acks(a) => {
            assert!(a.acks > 0 && a.acks_per_s > 0.0 && a.p99_ms > 0.0, "{}: no acks: {a:?}", a.target);
            assert_eq!(a.errors, 0, "{}: failed sends: {a:?}", a.target);
        }
        Record::Storm(s) => {
            assert!(s.messages > 0 && s.expected_deliveries > 0, "{}: nothing was sent: {s:?}", s.target);
            assert_eq!(s.caught_up, s.clients, "{}: not every client caught up: {s:?}", s.target);
            assert!(s.caught_up_secs.is_some(), "{}: {s:?}", s.target);
            assert_eq!(s.lost, 0, "{}: messages lost: {s:?}", s.target);
            assert_eq!(s.not_stored, 0, "{}: messages not stored: {s:?}", s.target);
            assert_eq!(s.send_errors, 0, "{}: failed sends: {s:?}", s.target);
        }
        Record::Idle(i) => {
            assert_eq!(i.connect_failures, 0, "{}: connections failed to open: {i:?}", i.target);
            assert_eq!(i.dropped, 0, "{}: the server closed idle connections: {i:?}", i.target);
            assert!(i.baseline_rss > 0 && !i.points.is_empty(), "{}: no measurement: {i:?}", i.target);
            for p in &i.points {
                assert_eq!(p.connections, p.wanted, "{}: connections missing: {i:?}", i.target);
                assert!(p.rss > 0 && p.anon > 0, "{}: no RSS: {i:?}", i.target);
            }
            assert!(i.marginal(i.points.len() - 1).is_some(), "{}: no marginal figure: {i:?}", i.target);
            assert!(i.after_close_rss.is_some(), "{}: no RSS after closing: {i:?}", i.target);
        }
    }
}

/// Runs `scenarios` against `target` (a fresh server each) and checks every record.
fn smoke(target: Target, launch: Launch, scenarios: &[&str]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let config = Config { launch, ..Config::smoke(target) };
    for scenario in scenarios {
        let record = runtime
            .block_on(scenarios::run(&config, scenario))
            .unwrap_or_else(|err| panic!("{} {scenario}: {err:#}", target.key()));
        check(&record);
    }
}

#[test]
fn chatd_over_socketio() {
    smoke(Target::ChatdSio, Launch::default(), &["fanout", "acks", "storm", "idle", "marketplace"]);
}

#[test]
fn chatd_over_plain_websocket() {
    smoke(Target::ChatdWs, Launch::default(), &["fanout", "acks", "storm", "idle", "marketplace"]);
}

#[test]
fn node_peer() {
    peer_dependencies();
    smoke(Target::Node, Launch::default(), &["fanout", "acks", "storm", "idle", "marketplace"]);
}

/// The relay runs on a thread of this process here (the benchmark runs it as a process of
/// its own); it keeps no history, so there is no storm for it.
#[test]
fn ceiling_relay() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    std::thread::spawn(move || support::ceiling::serve(listener));
    let launch = Launch { attach: vec![(addr, None)], ..Launch::default() };
    smoke(Target::Ceiling, launch, &["fanout", "acks", "marketplace"]);
}

/// `--attach A,B` (benches/cluster.sh): two chatd nodes on one PostgreSQL schema and Redis,
/// clients spread over them round-robin so every room spans both nodes; every delivery
/// arrives. Needs PostgreSQL and Redis on 127.0.0.1, as tests/cluster.rs does.
#[test]
fn fanout_across_two_nodes() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    // Dropped in reverse order: the nodes stop before their schema is dropped.
    let schema = common::pg::Schema::fresh();
    let dir = tempfile::tempdir().expect("temp dir");
    let prefix = common::redis::unique_prefix();
    let nodes: Vec<common::ServerProcess> = runtime.block_on(async {
        let mut nodes = Vec::new();
        for i in 0..2 {
            let args = [
                "--media-dir-shared",
                "--database-url",
                &schema.url,
                "--redis-url",
                "redis://127.0.0.1:6379",
                "--redis-prefix",
                &prefix,
                "--jwt-secret",
                support::SECRET,
                "--rate-limit",
                "0",
            ];
            nodes.push(
                common::ServerProcess::start(dir.path(), &args, dir.path().join(format!("node{i}.log")))
                    .await,
            );
        }
        nodes
    });
    let launch =
        Launch { attach: nodes.iter().map(|node| (node.addr(), None)).collect(), ..Launch::default() };
    smoke(Target::ChatdWs, launch, &["fanout"]);
    drop(nodes);
}

#[test]
fn websocket_frames_round_trip() {
    let mut out = Vec::new();
    push_text(&mut out, b"hello");
    let long = vec![b'x'; 300];
    push_text(&mut out, &long);
    let head = parse_frame(&mut out).expect("first frame");
    assert_eq!(&out[head.payload.clone()], b"hello");
    let rest = &mut out[head.len..];
    let head = parse_frame(rest).expect("second frame");
    assert_eq!(&rest[head.payload], &long[..]);
}

#[test]
fn envelopes_are_recognised() {
    assert_eq!(decode(Proto::SocketIo, b"2"), Incoming::Ping);
    assert_eq!(decode(Proto::SocketIo, b"42[\"a:b\",{\"x\":1}]"), Incoming::Event(b"a:b", b"{\"x\":1}"));
    assert_eq!(decode(Proto::SocketIo, b"4317[{\"ok\":true}]"), Incoming::Ack(17, b"{\"ok\":true}"));
    assert_eq!(decode(Proto::Ws, b"{\"event\":\"e\",\"data\":[1]}"), Incoming::Event(b"e", b"[1]"));
    assert_eq!(decode(Proto::Ws, b"{\"id\":9,\"ack\":{\"ok\":false}}"), Incoming::Ack(9, b"{\"ok\":false}"));
    assert_eq!(find_u64(b"{\"seq\":42,\"x\":1}", b"\"seq\":"), Some(42));
    // chatd sorts its keys (`ok` last); the peer writes `ok` first.
    assert!(ack_ok(br#"{"message":{"ok":false},"ok":true}"#));
    assert!(ack_ok(br#"{"ok":true,"message":{}}"#));
    assert!(!ack_ok(br#"{"error":{"code":"invalid"},"ok":false}"#));
}
