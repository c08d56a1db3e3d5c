//! A fake OVSDB server on a unix socket sends malformed, mistyped and oversized messages:
//! the client must answer with errors and never panic or hang.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ovsdb::tables::{Interface, Table};
use ovsdb::{Client, ClientOptions, Condition, Endpoint, Error, MonitorKind, Operation, Value};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

type Responder = Box<dyn Fn(&Json) -> Vec<u8> + Send>;

/// Serves one connection: `greeting` first, then for each request what `respond` returns.
/// Everything the client sent is collected in the returned list.
struct Fake {
    _dir: tempfile::TempDir,
    endpoint: Endpoint,
    received: Arc<Mutex<Vec<Json>>>,
}

fn fake(greeting: Vec<u8>, respond: Responder) -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let rec = received.clone();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        if !greeting.is_empty() {
            let _ = s.write_all(&greeting).await;
        }
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<Json>();
            let mut msgs = Vec::new();
            for m in it.by_ref() {
                match m {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
            let used = it.byte_offset();
            buf.drain(..used);
            for m in msgs {
                let out = respond(&m);
                rec.lock().unwrap().push(m);
                if s.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    });
    Fake {
        endpoint: Endpoint::Unix(path),
        _dir: dir,
        received,
    }
}

fn reply(req: &Json, result: Json) -> Vec<u8> {
    json!({"id": req["id"], "result": result, "error": null})
        .to_string()
        .into_bytes()
}

/// A hang guard, not a time limit: how long a wait for something that must happen (an answer, an
/// event, the connection closing) may last before the test gives up.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// Requests time out only after [`HANG_GUARD`]: whatever the fake answers arrives before that, even
/// on a loaded machine. The tests that check a timeout set a short one of their own.
fn opts() -> ClientOptions {
    ClientOptions {
        max_message: 1 << 20,
        request_timeout: HANG_GUARD,
        ..ClientOptions::default()
    }
}

/// Waits until `what` holds of what the fake received.
async fn until_received(f: &Fake, what: &str, holds: impl Fn(&[Json]) -> bool) {
    let started = std::time::Instant::now();
    while !holds(&f.received.lock().unwrap()) {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the fake never received {what}: {:?}",
            f.received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn client(f: &Fake) -> Client {
    Client::connect(&f.endpoint, opts()).await.unwrap()
}

#[tokio::test]
async fn bad_json_closes_the_connection_with_an_error() {
    for garbage in [
        &b"{\"id\":1,\"result\":[}"[..],
        b"[1,2,3]",
        b"{\"id\":1,\"result\":\"\xff\xfe\"}",
        b"{\"id\":1,\"result\":[1e999]}",
        b"nonsense",
    ] {
        let g = garbage.to_vec();
        let f = fake(Vec::new(), Box::new(move |_| g.clone()));
        let c = client(&f).await;
        let e = c.list_dbs().await.unwrap_err();
        let what = String::from_utf8_lossy(garbage);
        assert!(
            matches!(e, Error::Disconnected(ref r) if r.contains("JSON")),
            "{what}: {e}"
        );
        assert!(c.is_closed());
        assert!(matches!(
            c.echo(json!([])).await,
            Err(Error::Disconnected(_))
        ));
    }
}

#[tokio::test]
async fn wrong_types_fail_the_request_but_keep_the_connection() {
    let f = fake(
        Vec::new(),
        Box::new(|req| {
            let r = match req["method"].as_str().unwrap() {
                "list_dbs" => json!(5),
                "get_schema" => json!({"name": 5, "tables": []}),
                "echo" => req["params"].clone(),
                "monitor_cond" => json!({"Bridge": {"not-a-uuid": {"insert": {}}}}),
                "monitor" => json!({"Bridge": {"5e0b1c3a-9f6e-4b8a-8d3c-2a4b6c8d0e1f": 7}}),
                "transact" => match req["params"][1]["op"].as_str() {
                    Some("select") => {
                        json!([{"rows": [{"name": "x", "ofport": 99999999999999999999u128.to_string()}]}])
                    }
                    Some("insert") => json!([{"uuid": ["uuid", "zzz"]}]),
                    Some("delete") => json!([{"count": -1}]),
                    Some("comment") => json!("not an array"),
                    _ => json!([]),
                },
                _ => json!(null),
            };
            reply(req, r)
        }),
    );
    let c = client(&f).await;
    assert!(matches!(c.list_dbs().await, Err(Error::Protocol(_))));
    assert!(matches!(c.get_schema("x").await, Err(Error::Schema(_))));
    let sel = c
        .transact(
            "db",
            &[Operation::Select {
                table: "Interface".into(),
                conditions: vec![Condition::eq("name", Value::atom("x"))],
                columns: None,
            }],
        )
        .await
        .unwrap();
    let row = &sel[0].rows.as_ref().unwrap()[0];
    assert!(
        Interface::from_row(ovsdb::Uuid::nil(), row).is_err(),
        "ofport as a string"
    );
    for op in [
        Operation::Insert {
            table: "T".into(),
            row: ovsdb::Row::new(),
            uuid_name: None,
        },
        Operation::Delete {
            table: "T".into(),
            conditions: vec![],
        },
        Operation::Comment("x".into()),
        Operation::Abort,
    ] {
        assert!(matches!(
            c.transact("db", &[op]).await,
            Err(Error::Protocol(_))
        ));
    }
    let reqs = [("Bridge".to_owned(), Default::default())]
        .into_iter()
        .collect();
    for kind in [MonitorKind::MonitorCond, MonitorKind::Monitor] {
        assert!(matches!(
            c.monitor("db", "m", kind, &reqs, None).await,
            Err(Error::Protocol(_))
        ));
    }
    // The connection survived all of that.
    assert_eq!(
        c.echo(json!(["still", "here"])).await.unwrap(),
        json!(["still", "here"])
    );
}

#[tokio::test]
async fn huge_messages_are_refused() {
    let f = fake(
        Vec::new(),
        Box::new(|req| reply(req, json!(["x".repeat(2 << 20)]))),
    );
    let c = client(&f).await;
    let e = c.list_dbs().await.unwrap_err();
    assert!(
        matches!(e, Error::Disconnected(ref r) if r.contains("larger than")),
        "{e}"
    );

    // A huge nesting depth within the size limit is a JSON error, not a stack overflow.
    let f = fake(
        Vec::new(),
        Box::new(|req| {
            let mut m = format!("{{\"id\":{},\"result\":", req["id"]).into_bytes();
            m.extend(std::iter::repeat_n(b'[', 200_000));
            m.extend(std::iter::repeat_n(b']', 200_000));
            m.push(b'}');
            m
        }),
    );
    let c = client(&f).await;
    assert!(matches!(c.list_dbs().await, Err(Error::Disconnected(_))));
}

#[tokio::test]
async fn server_echo_is_answered_and_strays_are_ignored() {
    // Unsolicited: an echo request, a reply to a request never made, an unknown method
    // with an id, and an update for a monitor that does not exist (which ends the
    // connection, since a monitor may have missed it).
    let greeting = br#"{"method":"echo","params":["ping"],"id":"e1"}
        {"id":999,"result":[],"error":null}{"id":"str","result":1}
        {"method":"frobnicate","params":[],"id":7}{"method":"locked","params":["l"],"id":null}"#
        .to_vec();
    let f = fake(
        greeting,
        Box::new(|req| match req["method"].as_str() {
            Some("list_dbs") => reply(req, json!(["Open_vSwitch"])),
            Some("get_schema") => {
                br#"{"method":"update2","params":["nobody",{}],"id":null}"#.to_vec()
            }
            // A request that never gets its reply.
            _ => Vec::new(),
        }),
    );
    // A short timeout, for the request that is never answered; one that is answered but late (a
    // loaded machine) is asked again rather than failing the test: only the answer is checked.
    let c = Client::connect(
        &f.endpoint,
        ClientOptions {
            request_timeout: Duration::from_millis(500),
            ..opts()
        },
    )
    .await
    .unwrap();
    let dbs = loop {
        match c.list_dbs().await {
            Err(Error::Timeout(_)) => continue,
            other => break other.unwrap(),
        }
    };
    assert_eq!(dbs, vec!["Open_vSwitch"]);
    let want = json!({"id": 7, "result": null, "error": "unknown method"});
    until_received(&f, "the answer to the unknown method", |got| {
        got.contains(&want)
    })
    .await;
    let got = f.received.lock().unwrap().clone();
    assert!(
        got.contains(&json!({"id": "e1", "result": ["ping"], "error": null})),
        "{got:?}"
    );
    assert!(got.contains(&json!({"id": 7, "result": null, "error": "unknown method"})));
    assert!(matches!(c.echo(json!([])).await, Err(Error::Timeout(_))));
    assert!(matches!(
        c.get_schema("x").await,
        Err(Error::Disconnected(_) | Error::Timeout(_))
    ));
    assert!(c.is_closed());
}

#[tokio::test]
async fn server_hanging_up_mid_message_fails_pending_requests() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"{\"id\":1,\"res").await;
        // dropping `s` hangs up
    });
    let c = Client::connect(&Endpoint::Unix(path), opts())
        .await
        .unwrap();
    let e = c.list_dbs().await.unwrap_err();
    assert!(
        matches!(e, Error::Disconnected(ref r) if r.contains("middle")),
        "{e}"
    );
    assert!(c.closed().await.contains("middle"));
    assert!(matches!(c.list_dbs().await, Err(Error::Disconnected(_))));
}

const UUID_A: &str = "5e0b1c3a-9f6e-4b8a-8d3c-2a4b6c8d0e1f";

/// A server that knows only RFC 7047 `monitor`: the replica falls back to it, and a
/// malformed update later makes it drop the connection instead of keeping a wrong picture.
#[tokio::test]
async fn replica_falls_back_to_plain_monitor_and_survives_bad_updates() {
    let f = fake(
        Vec::new(),
        Box::new(|req| match req["method"].as_str() {
            Some("get_schema") => reply(
                req,
                json!({"name": "db", "version": "1", "tables": {"T": {"columns": {
                    "name": {"type": "string"}}}}}),
            ),
            Some("monitor") => {
                let mut out = reply(req, json!({"T": {UUID_A: {"new": {"name": "a"}}}}));
                out.extend_from_slice(
                    json!({"id": null, "method": "update", "params": [req["params"][1],
                        {"T": {UUID_A: {"old": {"name": "a"}, "new": {"name": "b"}}}}]})
                    .to_string()
                    .as_bytes(),
                );
                out.extend_from_slice(
                    json!({"id": null, "method": "update", "params": [req["params"][1],
                        {"T": {UUID_A: {"new": {"name": ["uuid", "bogus"]}}}}]})
                    .to_string()
                    .as_bytes(),
                );
                out
            }
            _ => json!({"id": req["id"], "result": null, "error": "unknown method"})
                .to_string()
                .into_bytes(),
        }),
    );
    let spec = ovsdb::ReplicaSpec {
        db: "db".into(),
        tables: [("T".to_owned(), ovsdb::MonitorRequest::columns(&["name"]))]
            .into_iter()
            .collect(),
    };
    let mut r = ovsdb::Replica::spawn(f.endpoint.clone(), spec, ovsdb::ReplicaOptions::default());
    let mut next = async || {
        tokio::time::timeout(HANG_GUARD, r.next())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        next().await,
        ovsdb::ReplicaEvent::Connected {
            kind: MonitorKind::Monitor,
            resumed: false
        }
    );
    let ovsdb::ReplicaEvent::Changes(c) = next().await else {
        panic!("initial row expected")
    };
    assert_eq!(
        c[0].new.as_ref().unwrap().get("name"),
        Some(&Value::atom("a"))
    );
    let ovsdb::ReplicaEvent::Changes(c) = next().await else {
        panic!("modification expected")
    };
    assert_eq!(
        c[0].old.as_ref().unwrap().get("name"),
        Some(&Value::atom("a"))
    );
    assert_eq!(
        c[0].new.as_ref().unwrap().get("name"),
        Some(&Value::atom("b"))
    );
    assert!(
        matches!(next().await, ovsdb::ReplicaEvent::Disconnected(why) if why.contains("bad update"))
    );
    let methods: Vec<Json> = f
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|m| m["method"].clone())
        .collect();
    assert_eq!(
        methods,
        [
            json!("get_schema"),
            json!("monitor_cond_since"),
            json!("monitor_cond"),
            json!("monitor")
        ]
    );
}

#[tokio::test]
async fn tcp_endpoint_works() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let req: Json = serde_json::from_slice(&buf[..n]).unwrap();
        s.write_all(&reply(&req, json!(["Open_vSwitch"])))
            .await
            .unwrap();
        let _ = s.read(&mut buf).await;
    });
    let ep: Endpoint = format!("tcp:{addr}").parse().unwrap();
    let c = Client::connect(&ep, opts()).await.unwrap();
    assert_eq!(c.list_dbs().await.unwrap(), ["Open_vSwitch"]);
}

/// A flood of notifications for a monitor nobody reads ends the connection once the queue
/// limit is reached, instead of growing without bound.
#[tokio::test]
async fn notification_flood_is_bounded() {
    let f = fake(
        Vec::new(),
        Box::new(|req| match req["method"].as_str() {
            Some("monitor_cond") => {
                let mut out = reply(req, json!({}));
                for i in 0..100 {
                    let u = format!("{:08x}-9f6e-4b8a-8d3c-2a4b6c8d0e1f", i);
                    out.extend_from_slice(
                        json!({"id": null, "method": "update2", "params": ["m",
                            {"T": {u: {"insert": {"n": i}}}}]})
                        .to_string()
                        .as_bytes(),
                    );
                }
                out
            }
            _ => reply(req, json!([])),
        }),
    );
    let c = Client::connect(
        &f.endpoint,
        ClientOptions {
            max_queue: 10,
            ..opts()
        },
    )
    .await
    .unwrap();
    let reqs = [("T".to_owned(), Default::default())].into_iter().collect();
    let mut m = c
        .monitor("db", "m", MonitorKind::MonitorCond, &reqs, None)
        .await
        .unwrap();
    let why = tokio::time::timeout(HANG_GUARD, c.closed())
        .await
        .expect("the connection closed (hang guard)");
    assert!(why.contains("behind"), "{why}");
    let mut n = 0;
    while m.updates.recv().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
}

/// With probes on, a server that stops answering is detected. The server answers everything, its
/// probes included, until it falls silent; the probe timeout is generous (a loaded machine does
/// not make a live server look dead), and the test waits for the detection, however long it takes.
#[tokio::test]
async fn inactivity_probe_detects_a_silent_server() {
    let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let quiet = silent.clone();
    let f = fake(
        Vec::new(),
        Box::new(move |req| {
            if quiet.load(std::sync::atomic::Ordering::SeqCst) {
                return Vec::new();
            }
            match req["method"].as_str() {
                Some("list_dbs") => reply(req, json!(["db"])),
                Some("echo") => reply(req, req["params"].clone()),
                _ => Vec::new(),
            }
        }),
    );
    let c = Client::connect(
        &f.endpoint,
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            probe_interval: Some(Duration::from_millis(100)),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(c.list_dbs().await.unwrap(), ["db"]);
    // Probes go out and are answered while the server is alive.
    until_received(&f, "a probe", |got| {
        got.iter().any(|m| m["method"] == "echo")
    })
    .await;
    assert!(!c.is_closed(), "closed while the server answered");
    let answered = f.received.lock().unwrap().len();
    silent.store(true, std::sync::atomic::Ordering::SeqCst);
    let why = tokio::time::timeout(HANG_GUARD, c.closed())
        .await
        .expect("the silent server detected (hang guard)");
    assert!(why.contains("probe"), "{why}");
    let sent = f.received.lock().unwrap().clone();
    assert!(
        sent[answered..].iter().any(|m| m["method"] == "echo"),
        "no probe after the server fell silent: {sent:?}"
    );
}
