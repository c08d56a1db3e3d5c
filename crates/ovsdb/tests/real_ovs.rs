//! The client against a real `ovsdb-server` + `ovs-vswitchd` (test bed chassis): every
//! transaction operation, the three monitor methods, echo, and reconnect after a restart.

use std::collections::BTreeMap;
use std::time::Duration;

use ovsdb::tables::{Bridge, Interface, OpenVSwitch, Table};
use ovsdb::{
    Client, ClientOptions, Condition, Endpoint, Error, MonitorKind, MonitorRequest, Mutation,
    Notification, Operation, Replica, ReplicaEvent, ReplicaOptions, ReplicaSpec, Row, RowChange,
    RowOp, Uuid, Value, WaitUntil,
};
use testbed::{Chassis, ChassisOpts};

const DB: &str = "Open_vSwitch";

async fn connect(c: &Chassis) -> Client {
    let ep: Endpoint = c.db_endpoint().parse().unwrap();
    Client::connect(&ep, ClientOptions::default())
        .await
        .unwrap()
}

fn no_vswitchd() -> ChassisOpts {
    ChassisOpts {
        vswitchd: false,
        ..ChassisOpts::default()
    }
}

/// Operations that add bridge `name` (with its local port) to the root row.
fn add_bridge_ops(name: &str) -> Vec<Operation> {
    vec![
        Operation::Insert {
            table: "Interface".into(),
            row: Row::new()
                .with("name", Value::atom(name))
                .with("type", Value::atom("internal")),
            uuid_name: Some("iface".into()),
        },
        Operation::Insert {
            table: "Port".into(),
            row: Row::new().with("name", Value::atom(name)).with(
                "interfaces",
                Value::atom(ovsdb::Atom::NamedUuid("iface".into())),
            ),
            uuid_name: Some("port".into()),
        },
        Operation::Insert {
            table: "Bridge".into(),
            row: Row::new()
                .with("name", Value::atom(name))
                .with("datapath_type", Value::atom("netdev"))
                .with("fail_mode", Value::atom("secure"))
                .with("ports", Value::atom(ovsdb::Atom::NamedUuid("port".into()))),
            uuid_name: Some("br".into()),
        },
        Operation::Mutate {
            table: "Open_vSwitch".into(),
            conditions: vec![],
            mutations: vec![Mutation::insert(
                "bridges",
                Value::atom(ovsdb::Atom::NamedUuid("br".into())),
            )],
        },
    ]
}

#[tokio::test]
async fn transact_covers_every_operation() {
    let c = Chassis::start("tx", &ChassisOpts::default()).unwrap();
    let client = connect(&c).await;
    assert_eq!(
        client.list_dbs().await.unwrap(),
        vec!["Open_vSwitch", "_Server"]
    );
    let schema = client.get_schema(DB).await.unwrap();
    assert!(schema.tables.contains_key("Interface"));
    assert_eq!(
        client.echo(serde_json::json!(["hi", 1])).await.unwrap(),
        serde_json::json!(["hi", 1])
    );

    // insert with named-uuid references, plus comment and a durable commit
    let mut ops = add_bridge_ops("br-t");
    ops.push(Operation::Comment("wyvern test".into()));
    ops.push(Operation::Commit { durable: true });
    let r = client.transact(DB, &ops).await.unwrap();
    let br_uuid = r[2].uuid.unwrap();
    assert_eq!(c.ovs_vsctl(&["list-br"]).unwrap().trim(), "br-t");

    // select + typed row
    let sel = client
        .transact(
            DB,
            &[Operation::Select {
                table: "Bridge".into(),
                conditions: vec![Condition::eq("name", Value::atom("br-t"))],
                columns: None,
            }],
        )
        .await
        .unwrap();
    let rows = sel[0].rows.as_ref().unwrap();
    assert_eq!(rows.len(), 1);
    let br = Bridge::from_row(br_uuid, &rows[0]).unwrap();
    assert_eq!(
        (br.name.as_str(), br.datapath_type.as_str()),
        ("br-t", "netdev")
    );
    assert_eq!(br.fail_mode.as_deref(), Some("secure"));
    assert_eq!(br.ports.len(), 1);

    // update, mutate (map insert and delete), wait
    let upd = client
        .transact(
            DB,
            &[
                Operation::Update {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(br_uuid)],
                    row: Row::new().with("external_ids", Value::map([("a", "1"), ("b", "2")])),
                },
                Operation::Mutate {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(br_uuid)],
                    mutations: vec![
                        Mutation::delete("external_ids", Value::set(["a"])),
                        Mutation::insert("protocols", Value::set(["OpenFlow13", "OpenFlow15"])),
                    ],
                },
                Operation::Wait {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(br_uuid)],
                    columns: vec!["external_ids".into()],
                    until: WaitUntil::Equal,
                    rows: vec![Row::new().with("external_ids", Value::map([("b", "2")]))],
                    timeout_ms: Some(0),
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(upd[0].count, Some(1));
    assert_eq!(upd[1].count, Some(1));
    assert_eq!(
        c.ovs_vsctl(&["get", "Bridge", "br-t", "external_ids", "protocols"])
            .unwrap(),
        "{b=\"2\"}\n[OpenFlow13, OpenFlow15]\n"
    );

    // failures: wait that does not hold, assert without the lock, abort, bad column
    let wait_fail = Operation::Wait {
        table: "Bridge".into(),
        conditions: vec![Condition::uuid(br_uuid)],
        columns: vec!["external_ids".into()],
        until: WaitUntil::Equal,
        rows: vec![Row::new()],
        timeout_ms: Some(0),
    };
    for (op, want) in [
        (wait_fail, "timed out"),
        (
            Operation::Assert {
                lock: "nobody".into(),
            },
            "not owner",
        ),
        (Operation::Abort, "aborted"),
        (
            Operation::Update {
                table: "Bridge".into(),
                conditions: vec![],
                row: Row::new().with("no_such_column", Value::atom(1i64)),
            },
            "",
        ),
    ] {
        match client.transact(DB, &[op]).await {
            Err(Error::Transaction {
                index: 0, error, ..
            }) => {
                assert!(error.contains(want), "{error} vs {want}")
            }
            other => panic!("expected a transaction error, got {other:?}"),
        }
    }

    // assert holds once the lock is ours
    assert!(client.lock("wyvern").await.unwrap());
    client
        .transact(
            DB,
            &[Operation::Assert {
                lock: "wyvern".into(),
            }],
        )
        .await
        .unwrap();
    let other = connect(&c).await;
    assert!(
        !other.lock("wyvern").await.unwrap(),
        "held by the first client"
    );
    // A waiting lock request must be withdrawn before stealing.
    other.unlock("wyvern").await.unwrap();
    assert!(other.steal("wyvern").await.unwrap());
    let stolen = client
        .transact(
            DB,
            &[Operation::Assert {
                lock: "wyvern".into(),
            }],
        )
        .await;
    assert!(
        matches!(stolen, Err(Error::Transaction { .. })),
        "{stolen:?}"
    );
    other.unlock("wyvern").await.unwrap();

    // vswitchd's view: the bridge exists with its local interface and an ofport
    let ifaces = client
        .transact(
            DB,
            &[Operation::Select {
                table: "Interface".into(),
                conditions: vec![Condition::eq("name", Value::atom("br-t"))],
                columns: None,
            }],
        )
        .await
        .unwrap();
    let row = &ifaces[0].rows.as_ref().unwrap()[0];
    let iface = Interface::from_row(Uuid::nil(), row).unwrap();
    assert_eq!(iface.kind, "internal");

    // delete: remove the bridge from the root; unreferenced rows go away
    let del = client
        .transact(
            DB,
            &[
                Operation::Mutate {
                    table: "Open_vSwitch".into(),
                    conditions: vec![],
                    mutations: vec![Mutation::delete("bridges", Value::atom(br_uuid))],
                },
                Operation::Delete {
                    table: "Bridge".into(),
                    conditions: vec![Condition::uuid(br_uuid)],
                },
            ],
        )
        .await
        .unwrap();
    assert_eq!(del[1].count, Some(1));
    assert_eq!(c.ovs_vsctl(&["list-br"]).unwrap().trim(), "");
}

async fn next_update(m: &mut ovsdb::Monitor) -> Notification {
    tokio::time::timeout(Duration::from_secs(5), m.updates.recv())
        .await
        .expect("update in time")
        .expect("monitor open")
}

fn ops_of(n: &Notification) -> &ovsdb::TableUpdates {
    match n {
        Notification::Updates(u) => u,
        Notification::Updates3 { updates, .. } => updates,
    }
}

#[tokio::test]
async fn all_monitor_methods_see_changes_and_cancel() {
    let c = Chassis::start("mon", &no_vswitchd()).unwrap();
    let client = connect(&c).await;
    let mut reqs = BTreeMap::new();
    reqs.insert(
        "Bridge".to_owned(),
        MonitorRequest::columns(&["name", "external_ids"]),
    );
    let mut monitors = Vec::new();
    for (i, kind) in [
        MonitorKind::Monitor,
        MonitorKind::MonitorCond,
        MonitorKind::MonitorCondSince,
    ]
    .into_iter()
    .enumerate()
    {
        let m = client
            .monitor(DB, &format!("m{i}"), kind, &reqs, None)
            .await
            .unwrap();
        assert!(m.initial.0.is_empty());
        assert!(!m.found);
        assert_eq!(
            m.last_txn_id.is_some(),
            kind == MonitorKind::MonitorCondSince
        );
        monitors.push(m);
    }
    c.ovs_vsctl(&["--no-wait", "add-br", "br-m"]).unwrap();
    for m in &mut monitors {
        let n = next_update(m).await;
        let u = ops_of(&n);
        assert_eq!(u.0.len(), 1, "{u:?}");
        assert!(
            matches!(&u.0[0].2, RowOp::Insert(r) if r.get("name") == Some(&Value::atom("br-m")))
        );
        assert_eq!(
            matches!(n, Notification::Updates3 { .. }),
            m.kind == MonitorKind::MonitorCondSince
        );
    }
    c.ovs_vsctl(&["--no-wait", "br-set-external-id", "br-m", "k", "v"])
        .unwrap();
    for m in &mut monitors {
        let n = next_update(m).await;
        let op = &ops_of(&n).0[0].2;
        match m.kind {
            MonitorKind::Monitor => assert!(matches!(op, RowOp::Replace(_)), "{op:?}"),
            _ => assert_eq!(
                op,
                &RowOp::Modify(Row::new().with("external_ids", Value::map([("k", "v")])))
            ),
        }
    }
    for m in &mut monitors {
        client.monitor_cancel(&m.id).await.unwrap();
        assert!(m.updates.recv().await.is_none(), "stream ends after cancel");
    }
    assert!(matches!(
        client.monitor_cancel("m0").await,
        Err(Error::Server { .. })
    ));
}

/// A conditional monitor's clauses are a disjunction: rows matching any of them are reported,
/// the others not, and a row that comes to match (or stops) is reported as inserted (deleted).
#[tokio::test]
async fn a_conditional_monitor_reports_the_rows_matching_any_clause() {
    let c = Chassis::start("cond", &no_vswitchd()).unwrap();
    let client = connect(&c).await;
    let mark = |br: &str, k: &str| {
        c.ovs_vsctl(&["--no-wait", "br-set-external-id", br, "k", k])
            .unwrap()
    };
    for (br, k) in [("br-a", "a"), ("br-b", "b"), ("br-c", "c")] {
        c.ovs_vsctl(&["--no-wait", "add-br", br]).unwrap();
        mark(br, k);
    }
    let mut reqs = BTreeMap::new();
    reqs.insert(
        "Bridge".to_owned(),
        MonitorRequest::columns(&["name"]).rows_where(vec![
            Condition::includes("external_ids", Value::map([("k", "a")])),
            Condition::includes("external_ids", Value::map([("k", "b")])),
        ]),
    );
    for kind in [MonitorKind::MonitorCond, MonitorKind::MonitorCondSince] {
        let mut m = client
            .monitor(DB, &format!("{kind:?}"), kind, &reqs, None)
            .await
            .unwrap();
        let mut seen: Vec<String> = m
            .initial
            .0
            .iter()
            .filter_map(|(_, _, op)| match op {
                RowOp::Insert(r) => r.get("name")?.as_atom()?.as_str().map(str::to_owned),
                _ => None,
            })
            .collect();
        seen.sort();
        assert_eq!(seen, ["br-a", "br-b"], "{kind:?}");
        // br-c changing while outside the condition is not reported: the next update is br-a
        // leaving it, then br-a coming back.
        mark("br-c", "x");
        mark("br-a", "x");
        let n = next_update(&mut m).await;
        assert!(
            matches!(&ops_of(&n).0[0].2, RowOp::Delete),
            "br-a left the condition: {n:?}"
        );
        mark("br-a", "a");
        let n = next_update(&mut m).await;
        assert!(
            matches!(&ops_of(&n).0[0].2, RowOp::Insert(r) if r.get("name") == Some(&Value::atom("br-a"))),
            "br-a came back into the condition: {n:?}"
        );
        mark("br-c", "c");
        client.monitor_cancel(&m.id).await.unwrap();
    }
}

fn names(changes: &[RowChange]) -> Vec<(String, Option<String>, Option<String>)> {
    let name = |r: &Option<Row>| {
        r.as_ref()
            .and_then(|r| r.get("name"))
            .and_then(|v| v.as_atom())
            .and_then(|a| a.as_str())
            .map(str::to_owned)
    };
    let mut v: Vec<_> = changes
        .iter()
        .map(|c| (c.table.clone(), name(&c.old), name(&c.new)))
        .collect();
    v.sort();
    v
}

async fn next_event(r: &mut Replica) -> ReplicaEvent {
    tokio::time::timeout(Duration::from_secs(10), r.next())
        .await
        .expect("replica event in time")
        .expect("replica running")
}

/// ovsdb-server is killed; while it is down the database file is changed (one bridge
/// renamed via external_ids, one deleted, one added), then it is restarted. The replica
/// reconnects and reports exactly those changes, nothing else.
#[tokio::test]
async fn replica_reports_exactly_what_changed_while_the_server_was_down() {
    let c = Chassis::start("rc", &ChassisOpts::default()).unwrap();
    for b in ["br-keep", "br-edit", "br-gone"] {
        c.add_bridge(b).unwrap();
    }
    let mut tables = BTreeMap::new();
    tables.insert(
        "Bridge".to_owned(),
        MonitorRequest::columns(&["name", "external_ids"]),
    );
    tables.insert("Port".to_owned(), MonitorRequest::columns(&["name"]));
    let spec = ReplicaSpec {
        db: DB.into(),
        tables,
    };
    let mut r = Replica::spawn(
        c.db_endpoint().parse().unwrap(),
        spec,
        ReplicaOptions::default(),
    );
    assert_eq!(
        next_event(&mut r).await,
        ReplicaEvent::Connected {
            kind: MonitorKind::MonitorCondSince,
            resumed: false
        }
    );
    let ReplicaEvent::Changes(initial) = next_event(&mut r).await else {
        panic!("initial rows expected")
    };
    assert_eq!(initial.len(), 6, "3 bridges + 3 ports: {initial:?}");
    assert!(initial.iter().all(|c| c.old.is_none()));

    c.stop_ovsdb();
    assert!(matches!(
        next_event(&mut r).await,
        ReplicaEvent::Disconnected(_)
    ));
    let edit = r#"["Open_vSwitch",
      {"op":"mutate","table":"Bridge","where":[["name","==","br-edit"]],
       "mutations":[["external_ids","insert",["map",[["owner","wyvern"]]]]]},
      {"op":"insert","table":"Interface","row":{"name":"br-new","type":"internal"},"uuid-name":"i"},
      {"op":"insert","table":"Port","row":{"name":"br-new","interfaces":["named-uuid","i"]},"uuid-name":"p"},
      {"op":"insert","table":"Bridge","row":{"name":"br-new","ports":["named-uuid","p"],"datapath_type":"netdev"},"uuid-name":"b"},
      {"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["bridges","insert",["named-uuid","b"]]]},
      {"op":"select","table":"Bridge","where":[["name","==","br-gone"]],"columns":["_uuid"]}]"#;
    let out = c.ovsdb_tool(&["transact", edit]).unwrap();
    let gone: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gone_uuid = gone[5]["rows"][0]["_uuid"][1].as_str().unwrap().to_owned();
    let delete = format!(
        r#"["Open_vSwitch",{{"op":"mutate","table":"Open_vSwitch","where":[],
           "mutations":[["bridges","delete",["uuid","{gone_uuid}"]]]}}]"#
    );
    c.ovsdb_tool(&["transact", &delete]).unwrap();
    c.start_ovsdb().unwrap();

    let ReplicaEvent::Connected { resumed, .. } = next_event(&mut r).await else {
        panic!("reconnect expected")
    };
    eprintln!("reconnected, resumed from the last transaction id: {resumed}");
    let ReplicaEvent::Changes(changes) = next_event(&mut r).await else {
        panic!("changes expected")
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        names(&changes),
        vec![
            ("Bridge".into(), None, s("br-new")),
            ("Bridge".into(), s("br-edit"), s("br-edit")),
            ("Bridge".into(), s("br-gone"), None),
            ("Port".into(), None, s("br-new")),
            ("Port".into(), s("br-gone"), None),
        ],
        "resumed={resumed}: {changes:#?}"
    );
    let edited = changes
        .iter()
        .find(|c| c.old.is_some() && c.new.is_some())
        .unwrap();
    assert_eq!(
        edited.new.as_ref().unwrap().get("external_ids"),
        Some(&Value::map([("owner", "wyvern")]))
    );
    // Nothing else arrives: vswitchd reconnecting does not touch monitored columns.
    let quiet = tokio::time::timeout(Duration::from_millis(500), r.next()).await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");
    // The replica's cache equals the server's state.
    let snap = r.snapshot();
    let mut names_now: Vec<_> = snap
        .table("Bridge")
        .map(|(u, row)| Bridge::from_row(*u, row).unwrap().name)
        .collect();
    names_now.sort();
    assert_eq!(names_now, ["br-edit", "br-keep", "br-new"]);
    let root = connect(&c)
        .await
        .transact(
            DB,
            &[Operation::Select {
                table: OpenVSwitch::NAME.into(),
                conditions: vec![],
                columns: None,
            }],
        )
        .await
        .unwrap();
    let ovs = OpenVSwitch::from_row(Uuid::nil(), &root[0].rows.as_ref().unwrap()[0]).unwrap();
    assert_eq!(ovs.bridges.len(), 3);
    assert_eq!(ovs.external_ids["system-id"], "rc");
}

/// The server drops the connection but keeps running; changes made before the replica is
/// back arrive exactly once, incrementally if the server still has the transaction history.
#[tokio::test]
async fn replica_catches_up_after_a_dropped_connection() {
    let c = Chassis::start("rs", &no_vswitchd()).unwrap();
    c.ovs_vsctl(&["--no-wait", "add-br", "br-a"]).unwrap();
    let spec = ReplicaSpec {
        db: DB.into(),
        tables: [(
            "Bridge".to_owned(),
            MonitorRequest::columns(&["name", "external_ids"]),
        )]
        .into_iter()
        .collect(),
    };
    let opts = ReplicaOptions {
        backoff_min: Duration::from_millis(700),
        ..ReplicaOptions::default()
    };
    let mut r = Replica::spawn(c.db_endpoint().parse().unwrap(), spec, opts);
    assert!(matches!(
        next_event(&mut r).await,
        ReplicaEvent::Connected { .. }
    ));
    assert!(matches!(next_event(&mut r).await, ReplicaEvent::Changes(v) if v.len() == 1));
    c.ovs_vsctl(&["--no-wait", "br-set-external-id", "br-a", "seen", "yes"])
        .unwrap();
    assert!(matches!(next_event(&mut r).await, ReplicaEvent::Changes(v) if v.len() == 1));

    c.ovsdb_appctl(&["ovsdb-server/reconnect"]).unwrap();
    assert!(matches!(
        next_event(&mut r).await,
        ReplicaEvent::Disconnected(_)
    ));
    c.ovs_vsctl(&[
        "--no-wait",
        "add-br",
        "br-b",
        "--",
        "br-set-external-id",
        "br-a",
        "missed",
        "1",
    ])
    .unwrap();
    let ReplicaEvent::Connected { kind, resumed } = next_event(&mut r).await else {
        panic!("reconnect expected")
    };
    // It asks to resume (monitor_cond_since with its last transaction id), but a standalone
    // ovsdb-server keeps no transaction history (only clustered databases do), so the server
    // sends the whole monitored state again and the replica emits only what changed meanwhile.
    assert_eq!(kind, MonitorKind::MonitorCondSince);
    assert!(!resumed, "a standalone database cannot resume");
    let ReplicaEvent::Changes(changes) = next_event(&mut r).await else {
        panic!("changes expected")
    };
    let s = |x: &str| Some(x.to_owned());
    assert_eq!(
        names(&changes),
        vec![
            ("Bridge".into(), None, s("br-b")),
            ("Bridge".into(), s("br-a"), s("br-a")),
        ]
    );
    let quiet = tokio::time::timeout(Duration::from_millis(300), r.next()).await;
    assert!(quiet.is_err(), "unexpected event {quiet:?}");
}
