//! `external_ids:wyvern-installed=true` on a VIF's `Interface` row, end to end (server, agent,
//! real Open vSwitch):
//!
//! * a VM plugged for a port: the key appears, and when it is observed (an OVSDB `wait` that
//!   returns the moment it is written) the bridge already holds flows matching on the VIF's
//!   OpenFlow port and flows delivering to it;
//! * a VIF whose `iface-id` names no port of the API: no key, ever;
//! * the agent restarted: the key is not touched (no change of the row's `external_ids` at
//!   all while the new agent starts and converges), nor does a VM plugged on another network
//!   (the agent follows one more topic meanwhile);
//! * the port deleted in the API: the key goes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ovsdb::{
    Client, ClientOptions, Condition, MonitorRequest, Operation, Replica, ReplicaEvent,
    ReplicaOptions, ReplicaSpec, Row, Value, WaitUntil,
};
use serde_json::json;
use testbed::{Chassis, ChassisOpts, Host, HostOpts};

mod support;
use support::{call, id, metrics, post, server, start_agent, vm, wait_for};

const KEY: &str = "wyvern-installed";

/// Waits, inside ovsdb-server (a `wait` operation), until interface `name` carries the key;
/// whether it did within `timeout`.
async fn await_key(client: &Client, name: &str, timeout: Duration) -> bool {
    let wait = Operation::Wait {
        table: "Interface".into(),
        conditions: vec![
            Condition::eq("name", Value::atom(name)),
            Condition::includes("external_ids", Value::map([(KEY, "true")])),
        ],
        columns: vec!["name".into()],
        until: WaitUntil::Equal,
        rows: vec![Row::new().with("name", Value::atom(name))],
        timeout_ms: Some(timeout.as_millis() as u64),
    };
    client.transact("Open_vSwitch", &[wait]).await.is_ok()
}

/// The key's value on interface `name`, if any.
fn key_of(chassis: &Chassis, name: &str) -> Option<String> {
    chassis
        .ovs_vsctl(&[
            "--if-exists",
            "get",
            "Interface",
            name,
            &format!("external_ids:{KEY}"),
        ])
        .ok()
        .map(|s| s.trim().trim_matches('"').to_owned())
        .filter(|s| !s.is_empty())
}

fn ofport_of(chassis: &Chassis, name: &str) -> String {
    chassis
        .ovs_vsctl(&["get", "Interface", name, "ofport"])
        .unwrap()
        .trim()
        .to_owned()
}

/// The flows of `br-int` that match on `in_port=ofport` (the classifier's and port security's),
/// and the L2 lookup's that choose it for frames to `mac`.
fn flows_of(chassis: &Chassis, ofport: &str, mac: &str) -> (Vec<String>, Vec<String>) {
    let dump = chassis
        .ovs_ofctl(&["--no-names", "dump-flows", "br-int"])
        .unwrap_or_default();
    let has = |l: &str, t: &str| l.split([',', ' ']).any(|x| x == t);
    let ofport: u32 = ofport.parse().unwrap();
    let matching = format!("in_port={ofport}");
    let dst = format!("dl_dst={mac}");
    let out = format!("actions=set_field:{ofport:#x}->reg");
    (
        dump.lines()
            .filter(|l| has(l, &matching))
            .map(str::to_owned)
            .collect(),
        dump.lines()
            .filter(|l| has(l, &dst) && l.contains(&out))
            .map(str::to_owned)
            .collect(),
    )
}

/// The changes to interface `name`'s monitored columns that `watch` reported so far.
async fn changes_of(watch: &mut Replica, name: &str) -> Vec<ovsdb::RowChange> {
    let mut found = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), watch.next()).await
    {
        if let ReplicaEvent::Changes(changes) = event {
            for c in changes {
                let named = |r: &Option<Row>| {
                    r.as_ref()
                        .and_then(|r| r.get("name"))
                        .and_then(Value::as_atom)
                        .and_then(ovsdb::Atom::as_str)
                        == Some(name)
                };
                if named(&c.old) || named(&c.new) {
                    found.push(c);
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_follows_the_flows_and_survives_a_restart() {
    let (base, _dir) = server().await;
    let chassis = Chassis::start("inst1", &ChassisOpts::default()).unwrap();
    let (first_agent, metrics_at) = start_agent(&base, &chassis);
    let net = post(&base, "/v2.0/networks", "network", json!({"name": "n"})).await;
    post(
        &base,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.83.0.0/24"}),
    )
    .await;
    let port = post(
        &base,
        "/v2.0/ports",
        "port",
        json!({"network_id": id(&net), "name": "vm"}),
    )
    .await;
    wait_for("br-int", Duration::from_secs(30), async || {
        (chassis.ovs_vsctl(&["br-exists", "br-int"]).is_ok(), ())
    })
    .await;
    let client = Client::connect(
        &chassis.db_endpoint().parse().unwrap(),
        ClientOptions {
            request_timeout: Duration::from_secs(60),
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap();

    // A VIF for a port the API does not know: plugged first, never marked.
    let stray = Host::create(
        &chassis,
        &HostOpts {
            ip: Some("10.83.0.200/24".into()),
            ..HostOpts::default()
        },
    )
    .unwrap();
    chassis::plug_vif(
        &client,
        "br-int",
        stray.port(),
        "00000000-0000-4000-8000-0000000000ff",
        None,
    )
    .await
    .unwrap();

    // The VM: the key comes, and by then its flows are in the bridge.
    let started = Instant::now();
    let host = vm(&chassis, &port).await;
    assert!(
        await_key(&client, host.port(), Duration::from_secs(30)).await,
        "no {KEY} on {} within 30 s",
        host.port()
    );
    let ofport = ofport_of(&chassis, host.port());
    let (from, to) = flows_of(&chassis, &ofport, port["mac_address"].as_str().unwrap());
    assert!(
        !from.is_empty() && !to.is_empty(),
        "{KEY} set {:?} after plugging, but br-int has flows from port {ofport}: {from:?}, to it: {to:?}",
        started.elapsed()
    );
    assert_eq!(key_of(&chassis, host.port()).as_deref(), Some("true"));
    assert_eq!(
        key_of(&chassis, stray.port()),
        None,
        "the stray VIF is marked"
    );

    // A restarted agent leaves the key alone: the row's external_ids do not change at all.
    let mut tables = BTreeMap::new();
    tables.insert(
        "Interface".to_owned(),
        MonitorRequest::columns(&["name", "external_ids"]),
    );
    let mut watch = Replica::spawn(
        chassis.db_endpoint().parse().unwrap(),
        ReplicaSpec {
            db: "Open_vSwitch".into(),
            tables,
        },
        ReplicaOptions::default(),
    );
    // The first snapshot.
    loop {
        if let Some(ReplicaEvent::Changes(_)) = watch.next().await {
            break;
        }
    }
    first_agent.abort();
    let _ = first_agent.await;
    let (_second_agent, metrics_at_2) = start_agent(&base, &chassis);
    let _ = metrics_at;
    wait_for(
        "the new agent in sync",
        Duration::from_secs(60),
        async || {
            let m = metrics(metrics_at_2).await;
            (m.get("wyvern_agent_in_sync") == Some(&1), m)
        },
    )
    .await;
    // Time to write whatever it would write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let flaps = changes_of(&mut watch, host.port()).await;
    assert!(
        flaps.is_empty(),
        "the restart changed the VM's row: {flaps:?}"
    );
    assert_eq!(key_of(&chassis, host.port()).as_deref(), Some("true"));

    // A VM on another network (the agent follows one more topic meanwhile) leaves the first
    // VM's row alone too.
    let net2 = post(&base, "/v2.0/networks", "network", json!({"name": "n2"})).await;
    post(
        &base,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": id(&net2), "ip_version": 4, "cidr": "10.84.0.0/24"}),
    )
    .await;
    let port2 = post(
        &base,
        "/v2.0/ports",
        "port",
        json!({"network_id": id(&net2), "name": "vm2"}),
    )
    .await;
    let host2 = vm(&chassis, &port2).await;
    assert!(await_key(&client, host2.port(), Duration::from_secs(30)).await);
    let flaps = changes_of(&mut watch, host.port()).await;
    assert!(
        flaps.is_empty(),
        "another VM changed the first one's row: {flaps:?}"
    );

    // The port deleted in the API: the key goes.
    call(
        reqwest::Method::DELETE,
        format!("{base}/v2.0/ports/{}", id(&port)),
        json!({}),
    )
    .await;
    wait_for(
        "the key removed with the port",
        Duration::from_secs(30),
        async || {
            let k = key_of(&chassis, host.port());
            (k.is_none(), k)
        },
    )
    .await;
    assert_eq!(
        key_of(&chassis, stray.port()),
        None,
        "the stray VIF is marked"
    );
}
