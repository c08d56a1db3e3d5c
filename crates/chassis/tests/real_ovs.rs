//! Chassis plumbing against real Open vSwitch (test bed chassis, userspace datapath).

use std::time::{Duration, Instant};

use chassis::{
    BridgeMapping, ChassisConfig, Encap, RowsEvent, VifEvent, VifWatcher, ensure, plug_vif,
    unplug_vif, wait_applied,
};
use ovsdb::{Atom, Client, ClientOptions, Endpoint, ReplicaOptions};
use testbed::{Chassis, ChassisOpts, Host, HostOpts};

/// A hang guard, not a requirement: how long a wait for something that must happen may last before
/// the test gives up (minutes, so that a loaded machine never trips it; the latency figures are the
/// benchmarks' business, `wyvern-bench ovs-port-add`).
const HANG_GUARD: Duration = Duration::from_secs(180);

async fn connect(c: &Chassis) -> Client {
    let ep: Endpoint = c.db_endpoint().parse().unwrap();
    Client::connect(&ep, ClientOptions::default())
        .await
        .unwrap()
}

fn get(c: &Chassis, args: &[&str]) -> String {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    c.ovs_vsctl(&all).unwrap().trim().to_owned()
}

async fn ensure_applied(client: &Client, cfg: &ChassisConfig) -> chassis::EnsureReport {
    let rep = ensure(client, cfg).await.unwrap();
    if let Some(seq) = rep.cfg_seq {
        wait_applied(client, seq, HANG_GUARD).await.unwrap();
    }
    rep
}

#[tokio::test]
async fn ensure_creates_converges_and_removes_only_its_own_ports() {
    let c = Chassis::start("ens", &ChassisOpts::default()).unwrap();
    let client = connect(&c).await;
    let mut cfg = ChassisConfig {
        encaps: vec![Encap::Geneve, Encap::Vxlan],
        bridge_mappings: BridgeMapping::parse_list("physnet1:br-ex").unwrap(),
        ..ChassisConfig::default()
    };
    let rep = ensure_applied(&client, &cfg).await;
    assert_eq!(rep.created_bridges, ["br-int", "br-ex"]);
    let mut added = rep.added_ports.clone();
    added.sort();
    assert_eq!(added, ["int-br-ex", "phy-br-ex", "tun-geneve", "tun-vxlan"]);

    assert_eq!(
        get(
            &c,
            &[
                "Bridge",
                "br-int",
                "datapath_type",
                "fail_mode",
                "protocols",
                "other_config:disable-in-band"
            ]
        ),
        "netdev\nsecure\n[OpenFlow13, OpenFlow15]\n\"true\""
    );
    assert_eq!(get(&c, &["Bridge", "br-ex", "datapath_type"]), "netdev");
    for (port, kind) in [("tun-geneve", "geneve"), ("tun-vxlan", "vxlan")] {
        assert_eq!(
            get(&c, &["Interface", port, "type", "options"]),
            format!("{kind}\n{{key=flow, remote_ip=flow}}")
        );
    }
    assert_eq!(
        get(&c, &["Interface", "int-br-ex", "options:peer"]),
        "phy-br-ex"
    );
    assert_eq!(
        get(&c, &["Interface", "phy-br-ex", "options:peer"]),
        "int-br-ex"
    );
    for port in ["tun-geneve", "tun-vxlan", "int-br-ex", "phy-br-ex"] {
        let ofport: i64 = get(&c, &["Interface", port, "ofport"]).parse().unwrap();
        assert!(ofport > 0, "{port} has ofport {ofport}");
        assert_eq!(get(&c, &["Interface", port, "error"]), "[]", "{port}");
    }
    // No flows at all, in particular no NORMAL; OpenFlow 1.3 and 1.5 both accepted.
    for v in ["OpenFlow13", "OpenFlow15"] {
        let flows = c.ovs_ofctl(&["-O", v, "dump-flows", "br-int"]).unwrap();
        assert!(!flows.contains("actions="), "{v}: {flows}");
    }
    assert!(
        c.ovs_ofctl(&["-O", "OpenFlow10", "dump-flows", "br-int"])
            .is_err()
    );

    // Idempotent.
    assert!(ensure(&client, &cfg).await.unwrap().is_noop());

    // Drift is corrected; a port the agent does not own is left alone.
    c.ovs_vsctl(&[
        "set",
        "Bridge",
        "br-int",
        "fail_mode=standalone",
        "protocols=OpenFlow10",
    ])
    .unwrap();
    c.ovs_vsctl(&[
        "set",
        "Interface",
        "tun-geneve",
        "options:remote_ip=10.0.0.9",
    ])
    .unwrap();
    c.ovs_vsctl(&[
        "add-port",
        "br-int",
        "admin-port",
        "--",
        "set",
        "Interface",
        "admin-port",
        "type=internal",
    ])
    .unwrap();
    let rep = ensure_applied(&client, &cfg).await;
    assert_eq!(rep.updated_bridges, ["br-int"]);
    assert_eq!(rep.updated_ports, ["tun-geneve"]);
    assert!(rep.added_ports.is_empty() && rep.removed_ports.is_empty());
    assert_eq!(get(&c, &["Bridge", "br-int", "fail_mode"]), "secure");
    assert_eq!(
        get(&c, &["Interface", "tun-geneve", "options:remote_ip"]),
        "flow"
    );

    // Fewer encapsulations, no provider network: only owned ports go.
    cfg.encaps = vec![Encap::Geneve];
    cfg.bridge_mappings.clear();
    let rep = ensure_applied(&client, &cfg).await;
    let mut removed = rep.removed_ports.clone();
    removed.sort();
    assert_eq!(removed, ["int-br-ex", "phy-br-ex", "tun-vxlan"]);
    let mut ports: Vec<String> = c
        .ovs_vsctl(&["list-ports", "br-int"])
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    ports.sort();
    assert_eq!(ports, ["admin-port", "tun-geneve"]);
    assert_eq!(c.ovs_vsctl(&["list-ports", "br-ex"]).unwrap().trim(), "");
    assert!(ensure(&client, &cfg).await.unwrap().is_noop());

    // A bridge mapping to the integration bridge is refused before anything is written.
    cfg.bridge_mappings = BridgeMapping::parse_list("p:br-int").unwrap();
    assert!(matches!(
        ensure(&client, &cfg).await,
        Err(chassis::Error::Config(_))
    ));
}

async fn next_event(w: &mut VifWatcher) -> VifEvent {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("a VIF event (hang guard)")
        .expect("watcher running")
}

/// The next VIF change, skipping the `Synced` markers of (re)connections.
async fn next_vif(w: &mut VifWatcher) -> VifEvent {
    loop {
        match next_event(w).await {
            VifEvent::Synced => continue,
            other => return other,
        }
    }
}

fn ofport_of(c: &Chassis, port: &str) -> u32 {
    get(c, &["Interface", port, "ofport"]).parse().unwrap()
}

/// A chassis whose bridges are in place, with no VIF yet, and a watcher of it that has said so
/// (its first event: the empty set is complete).
async fn watched_chassis(name: &str) -> (Chassis, Client, VifWatcher) {
    let c = Chassis::start(name, &ChassisOpts::default()).unwrap();
    let client = connect(&c).await;
    ensure_applied(&client, &ChassisConfig::default()).await;
    let mut w = VifWatcher::spawn(c.db_endpoint().parse().unwrap(), ReplicaOptions::default());
    assert_eq!(next_event(&mut w).await, VifEvent::Synced);
    (c, client, w)
}

#[tokio::test]
async fn vif_events_added_changed_removed_with_latency() {
    let (c, client, mut w) = watched_chassis("vif").await;

    let mut hosts = Vec::new();
    let mut latencies = Vec::new();
    for n in 0..6u32 {
        let h = Host::create(
            &c,
            &HostOpts {
                mac: Some(format!("02:00:00:00:01:{n:02x}")),
                ..HostOpts::default()
            },
        )
        .unwrap();
        let id = format!("lport-{n}");
        let t0 = Instant::now();
        plug_vif(&client, "br-int", h.port(), &id, Some(h.mac()))
            .await
            .unwrap();
        let VifEvent::Added(v) = next_vif(&mut w).await else {
            panic!("Added expected")
        };
        let dt = t0.elapsed();
        assert_eq!(v.iface_id, id);
        assert_eq!(v.name, h.port());
        assert_eq!(v.ofport, ofport_of(&c, h.port()));
        assert_eq!(v.mac.as_deref(), Some(h.mac()));
        assert!(v.admin_up && v.link_up, "{v:?}");
        // The first one also waits for the watcher's initial connection.
        if n > 0 {
            latencies.push(dt);
        }
        hosts.push(h);
    }
    latencies.sort();
    eprintln!(
        "VIF plug -> Added(ofport) latency: min {:?}, median {:?}, max {:?} (n={})",
        latencies[0],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        latencies.len()
    );
    // The figure is printed, not asserted: the 100 ms target is measured by the benchmark
    // (`wyvern-bench ovs-port-add`, react_to_ovsdb_ofport), on a machine that is not busy.

    // Link down is a change.
    let p0 = hosts[0].port().to_owned();
    c.netns().ip(&["link", "set", &p0, "down"]).unwrap();
    match next_vif(&mut w).await {
        VifEvent::Changed { old, new } => {
            assert!(old.link_up && !new.link_up);
            assert_eq!(new.iface_id, "lport-0");
        }
        e => panic!("Changed expected, got {e:?}"),
    }
    // So is a new MAC.
    c.ovs_vsctl(&[
        "set",
        "Interface",
        &p0,
        "external_ids:attached-mac=\"02:00:00:00:99:99\"",
    ])
    .unwrap();
    match next_vif(&mut w).await {
        VifEvent::Changed { new, .. } => assert_eq!(new.mac.as_deref(), Some("02:00:00:00:99:99")),
        e => panic!("Changed expected, got {e:?}"),
    }
    // Unplugged: removed.
    unplug_vif(&client, "br-int", &p0).await.unwrap();
    assert!(matches!(next_vif(&mut w).await, VifEvent::Removed(v) if v.iface_id == "lport-0"));
    // iface-id removed: no longer a VIF.
    let p1 = hosts[1].port().to_owned();
    c.ovs_vsctl(&["remove", "Interface", &p1, "external_ids", "iface-id"])
        .unwrap();
    assert!(matches!(next_vif(&mut w).await, VifEvent::Removed(v) if v.iface_id == "lport-1"));
    assert_eq!(w.vifs().len(), 4);

    // ovsdb-server restarts; meanwhile one VIF is unplugged and another gets a new MAC.
    // Exactly those two events follow the reconnect.
    let (p2, p3) = (hosts[2].port().to_owned(), hosts[3].port().to_owned());
    c.stop_ovsdb();
    let offline = format!(
        r#"["Open_vSwitch",
           {{"op":"select","table":"Port","where":[["name","==","{p2}"]],"columns":["_uuid"]}},
           {{"op":"mutate","table":"Interface","where":[["name","==","{p3}"]],
             "mutations":[["external_ids","delete",["set",["attached-mac"]]],
                          ["external_ids","insert",["map",[["attached-mac","02:00:00:00:77:77"]]]]]}}]"#
    );
    let out: serde_json::Value =
        serde_json::from_str(&c.ovsdb_tool(&["transact", &offline]).unwrap()).unwrap();
    let port2 = out[0]["rows"][0]["_uuid"][1].as_str().unwrap().to_owned();
    let unplug = format!(
        r#"["Open_vSwitch",{{"op":"mutate","table":"Bridge","where":[["name","==","br-int"]],
             "mutations":[["ports","delete",["uuid","{port2}"]]]}}]"#
    );
    c.ovsdb_tool(&["transact", &unplug]).unwrap();
    c.start_ovsdb().unwrap();
    let mut got = vec![next_vif(&mut w).await, next_vif(&mut w).await];
    got.sort_by_key(|e| matches!(e, VifEvent::Changed { .. }));
    assert!(
        matches!(&got[0], VifEvent::Removed(v) if v.iface_id == "lport-2"),
        "{got:?}"
    );
    assert!(
        matches!(&got[1], VifEvent::Changed { new, .. } if new.iface_id == "lport-3" && new.mac.as_deref() == Some("02:00:00:00:77:77")),
        "{got:?}"
    );
    // Nothing else changed (the reconnection's `Synced` marker is not a change): a marker change
    // made now is the very next event, whenever it comes (no window of time to guess).
    let p4 = hosts[4].port().to_owned();
    c.ovs_vsctl(&[
        "set",
        "Interface",
        &p4,
        "external_ids:attached-mac=\"02:00:00:00:44:44\"",
    ])
    .unwrap();
    match next_vif(&mut w).await {
        VifEvent::Changed { new, .. }
            if new.iface_id == "lport-4" && new.mac.as_deref() == Some("02:00:00:00:44:44") => {}
        e => panic!("the marker change expected next, got {e:?}"),
    }
}

/// End to end over the test bed's underlay: two chassis set up by `ensure` (Geneve and
/// VXLAN ports with `remote_ip=flow`, `key=flow`, `local_ip`), hosts plugged as VIFs whose
/// ofports come from the watcher; flows that use those ports carry pings over either
/// encapsulation.
#[tokio::test]
async fn tunnels_from_ensure_carry_traffic_between_chassis() {
    let mut ul = testbed::Underlay::create().unwrap();
    let mut nodes = Vec::new();
    for n in 1..=2u8 {
        let c = Chassis::start(&format!("e2e{n}"), &ChassisOpts::default()).unwrap();
        ul.attach(&c, &format!("172.31.0.{n}/24")).unwrap();
        let client = connect(&c).await;
        let cfg = ChassisConfig {
            encaps: vec![Encap::Geneve, Encap::Vxlan],
            local_ip: Some(format!("172.31.0.{n}").parse().unwrap()),
            ..ChassisConfig::default()
        };
        ensure_applied(&client, &cfg).await;
        let mut w = VifWatcher::spawn(c.db_endpoint().parse().unwrap(), ReplicaOptions::default());
        let h = Host::create(
            &c,
            &HostOpts {
                ip: Some(format!("10.0.0.{n}/24")),
                mac: Some(format!("02:00:00:00:00:0{n}")),
                mtu: Some(1400),
                ..HostOpts::default()
            },
        )
        .unwrap();
        plug_vif(
            &client,
            "br-int",
            h.port(),
            &format!("vm{n}"),
            Some(h.mac()),
        )
        .await
        .unwrap();
        let VifEvent::Added(vif) = next_vif(&mut w).await else {
            panic!("Added expected")
        };
        nodes.push((c, h, vif.ofport));
    }
    for encap in [Encap::Geneve, Encap::Vxlan] {
        for (i, (c, _, vif_port)) in nodes.iter().enumerate() {
            let tun = ofport_of(c, encap.port_name());
            let peer = 2 - i;
            c.ovs_ofctl(&["del-flows", "br-int"]).unwrap();
            for f in [
                format!(
                    "priority=10,in_port={vif_port},actions=set_field:0x64->tun_id,set_field:172.31.0.{peer}->tun_dst,output:{tun}"
                ),
                format!("priority=10,in_port={tun},tun_id=0x64,actions=output:{vif_port}"),
            ] {
                c.ovs_ofctl(&["add-flow", "br-int", &f]).unwrap();
            }
        }
        let h1 = &nodes[0].1;
        // The first packets to a new tunnel peer may be used up by next-hop resolution: ping
        // until one is answered (a hang guard, not a time limit, ends a datapath that never is).
        let started = Instant::now();
        while let Err(e) = h1.ping("10.0.0.2", 1) {
            assert!(
                started.elapsed() < HANG_GUARD,
                "{encap}: no ping over the tunnel answered: {e}"
            );
        }
        // Flow statistics come from the revalidator (about every 500 ms): poll.
        let hit = || {
            let dump = nodes[1].0.ovs_ofctl(&["dump-flows", "br-int"]).unwrap();
            dump.lines()
                .any(|l| l.contains("tun_id=0x64") && !l.contains("n_packets=0,"))
        };
        assert!(
            nodes[1].0.wait_until(HANG_GUARD, hit).is_ok(),
            "{encap}: the far side's tunnel flow was never hit"
        );
    }
}

/// Another reader of the watcher's rows (the agent's `wyvern-installed` writer) reads them
/// through the watcher's own monitor: told the rows are current when it starts sharing them,
/// then which rows changed, as the watcher takes the changes in.
#[tokio::test]
async fn shared_rows_follow_the_watchers_monitor() {
    let (c, client, mut w) = watched_chassis("shr").await;
    let (rows, mut events) = w.share_rows();
    assert_eq!(events.try_recv(), Ok(RowsEvent::Connected));

    let h = Host::create(&c, &HostOpts::default()).unwrap();
    plug_vif(&client, "br-int", h.port(), "lport-shared", Some(h.mac()))
        .await
        .unwrap();
    let VifEvent::Added(v) = next_vif(&mut w).await else {
        panic!("Added expected")
    };
    let mut changed = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event {
            RowsEvent::Changed(rows) => changed.extend(rows),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(changed.contains(&v.uuid), "{changed:?} lacks {}", v.uuid);
    let iface_id = rows.read(|cache| {
        let row = cache.row("Interface", &v.uuid)?;
        let ids = row.get("external_ids")?;
        ids.map_get(&Atom::from("iface-id"))
            .and_then(Atom::as_str)
            .map(str::to_owned)
    });
    assert_eq!(iface_id.as_deref(), Some("lport-shared"));
}
