//! The reconciler's groups against real Open vSwitch: a load balancer's select group and the flow
//! that sends to it go out in one bundle (Open vSwitch accepts a group-mod in an OpenFlow 1.3
//! bundle, and a flow naming a group added earlier in the same bundle); a fresh reconciler
//! finds them as it wants them and sends nothing (a restart without a flow or group removed);
//! the group's buckets are modified in place; the group goes with its flow.

use std::time::Duration;

use agent::Reconciler;
use openflow::conn::Connection;
use openflow::message::{Bucket, Group, GroupType};
use openflow::{Action, Flow};
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts};

const NET: &str = "aaaaaaaa-0000-4000-8000-0000000000a1";
const SUBNET: &str = "5aaaaaaa-0000-4000-8000-0000000000a1";
const LB: &str = "1b000000-0000-4000-8000-0000000000b1";
const LISTENER: &str = "1e000000-0000-4000-8000-0000000000b1";
const POOL: &str = "900f0000-0000-4000-8000-0000000000b1";
const VIP_PORT: &str = "f1000000-0000-4000-8000-0000000000b1";
const VIP: &str = "10.0.1.100";

/// (port id, MAC, address, OpenFlow port here): the client, then the two members.
const PORTS: [(&str, &str, &str, u32); 3] = [
    (
        "c1000000-0000-4000-8000-0000000000c1",
        "fa:16:3e:00:00:c1",
        "10.0.1.11",
        10,
    ),
    (
        "a1000000-0000-4000-8000-0000000000a1",
        "fa:16:3e:00:00:a1",
        "10.0.1.21",
        11,
    ),
    (
        "a2000000-0000-4000-8000-0000000000a2",
        "fa:16:3e:00:00:a2",
        "10.0.1.22",
        12,
    ),
];

fn put(p: &mut Pipeline, key: String, v: Value) -> pipeline::Delta {
    p.apply(Input::Object(key, Some(v)))
}

fn member_key(i: usize) -> String {
    format!("/r/members/3e3e0000-0000-4000-8000-00000000000{i}")
}

fn member(p: &mut Pipeline, i: usize, port: u16, weight: u16) -> pipeline::Delta {
    let (_, _, ip, _) = PORTS[i];
    put(
        p,
        member_key(i),
        json!({"id": format!("3e3e0000-0000-4000-8000-00000000000{i}"), "_pool_id": POOL,
            "_loadbalancer_id": LB, "address": ip, "protocol_port": port,
            "subnet_id": SUBNET, "weight": weight, "admin_state_up": true}),
    )
}

/// One network with a client on this chassis and two members on another, and a TCP listener on
/// the VIP's port 80 balancing over the members' port 8080.
fn pipeline() -> Pipeline {
    let mut p = Pipeline::new("ch1");
    put(
        &mut p,
        format!("/r/networks/{NET}"),
        json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 100}),
    );
    put(
        &mut p,
        format!("/r/subnets/{SUBNET}"),
        json!({"id": SUBNET, "network_id": NET, "cidr": "10.0.1.0/24", "enable_dhcp": false}),
    );
    put(
        &mut p,
        "/chassis/ch2".into(),
        json!({"id": "ch2", "tunnel_ip": "192.168.9.2"}),
    );
    put(&mut p, "/chassis-up/ch2".into(), json!({"lease": 1}));
    for (i, (id, mac, ip, ofport)) in PORTS.into_iter().enumerate() {
        // The client here, the members on the other chassis.
        let host = if i == 0 { "ch1" } else { "ch2" };
        put(
            &mut p,
            format!("/r/ports/{id}"),
            json!({"id": id, "network_id": NET, "mac_address": mac,
                "fixed_ips": [{"ip_address": ip}], "binding:host_id": host,
                "admin_state_up": true, "device_owner": "compute:nova",
                "port_security_enabled": false}),
        );
        if i == 0 {
            p.apply(Input::Vif(id.into(), Some(ofport)));
        }
    }
    put(
        &mut p,
        format!("/r/ports/{VIP_PORT}"),
        json!({"id": VIP_PORT, "network_id": NET, "mac_address": "fa:16:3e:00:00:99",
            "fixed_ips": [{"ip_address": VIP}], "admin_state_up": false,
            "device_owner": "Octavia", "device_id": format!("lb-{LB}")}),
    );
    p.apply(Input::Tunnel(Some(1)));
    put(
        &mut p,
        format!("/r/loadbalancers/{LB}"),
        json!({"id": LB, "name": "web", "vip_address": VIP, "vip_network_id": NET,
            "vip_subnet_id": SUBNET, "vip_port_id": VIP_PORT, "admin_state_up": true}),
    );
    put(
        &mut p,
        format!("/r/listeners/{LISTENER}"),
        json!({"id": LISTENER, "_loadbalancer_id": LB, "protocol": "TCP",
            "protocol_port": 80, "default_pool_id": POOL, "admin_state_up": true}),
    );
    put(
        &mut p,
        format!("/r/pools/{POOL}"),
        json!({"id": POOL, "lb_algorithm": "ROUND_ROBIN", "admin_state_up": true}),
    );
    member(&mut p, 1, 8080, 1);
    member(&mut p, 2, 8080, 1);
    p
}

fn the_group(p: &Pipeline) -> Group {
    let groups: Vec<&Group> = p.groups().collect();
    assert_eq!(groups.len(), 1, "one listener, one group: {groups:?}");
    groups[0].clone()
}

fn names(flow: &Flow, group: u32) -> bool {
    flow.instructions.apply.contains(&Action::Group(group))
}

/// What the switch holds: its groups (normalized, by id) and the flows naming `group`.
async fn held(conn: &Connection, group: u32) -> (Vec<Group>, Vec<Flow>) {
    let mut groups: Vec<Group> = conn
        .dump_groups()
        .await
        .unwrap()
        .iter()
        .map(Reconciler::normalized)
        .collect();
    groups.sort_by_key(|g| g.group_id);
    let flows = conn
        .dump_flows(Default::default())
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.flow)
        .filter(|f| names(f, group))
        .collect();
    (groups, flows)
}

/// A fresh reconciler (as after an agent restart) compares with the switch and sends nothing.
async fn restart_sends_nothing(conn: &Connection, p: &Pipeline) {
    let mut fresh = Reconciler::new(conn.clone());
    fresh.resync(p.flows(), p.groups(), None).await.unwrap();
    assert_eq!(fresh.sent, 0, "a restart sends nothing");
    assert_eq!(fresh.installed(), p.flow_count());
    assert_eq!(fresh.installed_groups(), p.groups().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_installed_kept_modified_and_deleted_with_their_flows() {
    let chassis = Chassis::start("g1", &ChassisOpts::default()).unwrap();
    chassis.add_bridge("br-int").unwrap();
    let mgmt = format!("unix:{}", chassis.mgmt_socket("br-int").display());
    let (conn, _events, _) = Connection::connect(&mgmt, Duration::from_secs(10))
        .await
        .unwrap();

    // Installed: the group and the flow naming it, in one bundle.
    let mut p = pipeline();
    let group = the_group(&p);
    assert_eq!(group.group_type, GroupType::Select);
    assert_eq!(group.buckets.len(), 2);
    let mut r = Reconciler::new(conn.clone());
    r.resync(p.flows(), p.groups(), None).await.unwrap();
    assert_eq!(
        r.sent as usize,
        p.flow_count() + 1,
        "every flow and the group"
    );
    let (groups, flows) = held(&conn, group.group_id).await;
    assert_eq!(groups, vec![Reconciler::normalized(&group)]);
    assert_eq!(
        flows.len(),
        1,
        "the flow sending new connections to the group"
    );
    let dump = chassis.ovs_ofctl(&["dump-groups", "br-int"]).unwrap();
    assert!(dump.contains("type=select"), "{dump}");
    assert_eq!(dump.matches("bucket=").count(), 2, "{dump}");
    restart_sends_nothing(&conn, &p).await;
    let flows_before = chassis.ovs_ofctl(&["dump-flows", "br-int"]).unwrap();

    // Modified in place: a member's weight and port change its bucket; the flow stays.
    let delta = member(&mut p, 2, 8081, 3);
    let changed: Vec<_> = delta.groups().collect();
    assert_eq!(changed.len(), 1, "{changed:?}");
    let sent = r.sent;
    r.apply(delta).await.unwrap().await.unwrap();
    assert!(r.sent > sent);
    let modified = the_group(&p);
    assert_ne!(modified, group);
    let (groups, flows) = held(&conn, group.group_id).await;
    assert_eq!(groups, vec![Reconciler::normalized(&modified)]);
    assert_eq!(flows.len(), 1, "the flow naming the group stays");
    let dump = chassis.ovs_ofctl(&["dump-groups", "br-int"]).unwrap();
    assert!(dump.contains("weight:3"), "{dump}");
    assert!(dump.contains("10.0.1.22:8081"), "{dump}");
    let flows_after = chassis.ovs_ofctl(&["dump-flows", "br-int"]).unwrap();
    let group_flow = |dump: &str| {
        dump.lines()
            .find(|l| l.contains(&format!("group:{}", group.group_id)))
            .map(|l| l.split("priority").nth(1).unwrap_or("").to_string())
    };
    assert_eq!(group_flow(&flows_before), group_flow(&flows_after));
    restart_sends_nothing(&conn, &p).await;

    // Deleted with its flow: the listener goes.
    let delta = p.apply(Input::Object(format!("/r/listeners/{LISTENER}"), None));
    assert_eq!(
        delta.groups().collect::<Vec<_>>(),
        vec![(group.group_id, None)]
    );
    r.apply(delta).await.unwrap().await.unwrap();
    let (groups, flows) = held(&conn, group.group_id).await;
    assert!(groups.is_empty(), "{groups:?}");
    assert!(flows.is_empty(), "{flows:?}");
    assert_eq!(r.installed_groups(), 0);
    assert_eq!(r.installed(), p.flow_count());
    restart_sends_nothing(&conn, &p).await;
}

/// Groups of every type compare equal to what the switch reports back, a restart sends nothing
/// for them: also an `all` group sent with a bucket weight and a watch port, which Open vSwitch
/// 3.1 drops (it reports weight 0 and no watch port), so only the normalized comparison finds it
/// as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_every_type_are_found_as_sent() {
    let chassis = Chassis::start("g2", &ChassisOpts::default()).unwrap();
    chassis.add_bridge("br-int").unwrap();
    let mgmt = format!("unix:{}", chassis.mgmt_socket("br-int").display());
    let (conn, _events, _) = Connection::connect(&mgmt, Duration::from_secs(10))
        .await
        .unwrap();
    let output = |port| Bucket::new(vec![Action::Output { port, max_len: 0 }]);
    let watching = |port| Bucket {
        watch_port: port,
        ..output(port)
    };
    let weighted = |port, weight| Bucket {
        weight,
        ..output(port)
    };
    let desired = [
        Group {
            group_id: 1,
            group_type: GroupType::All,
            buckets: vec![output(1), output(2)],
        },
        Group {
            group_id: 2,
            group_type: GroupType::Indirect,
            buckets: vec![output(1)],
        },
        Group {
            group_id: 3,
            group_type: GroupType::FastFailover,
            buckets: vec![watching(1), watching(2)],
        },
        Group {
            group_id: 4,
            group_type: GroupType::Select,
            buckets: vec![weighted(1, 1), weighted(2, 7)],
        },
        Group {
            group_id: 5,
            group_type: GroupType::Select,
            buckets: vec![output(1), output(2)],
        },
        // Weight and watch port where the type ignores them.
        Group {
            group_id: 6,
            group_type: GroupType::All,
            buckets: vec![Bucket {
                weight: 3,
                ..watching(1)
            }],
        },
    ];
    let mut r = Reconciler::new(conn.clone());
    r.resync(std::iter::empty(), desired.iter(), None)
        .await
        .unwrap();
    assert_eq!(r.sent as usize, desired.len());
    let mut fresh = Reconciler::new(conn.clone());
    fresh
        .resync(std::iter::empty(), desired.iter(), None)
        .await
        .unwrap();
    assert_eq!(fresh.sent, 0, "a restart sends nothing");
    assert_eq!(fresh.installed_groups(), desired.len());
}

/// The same through resyncs alone, with a group and a flow written here (no pipeline): a resync
/// adds them in one bundle, finds them again without sending anything, modifies the group's
/// buckets in place (the flow naming it stays), and deletes both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_adds_keeps_modifies_and_deletes_a_group() {
    let chassis = Chassis::start("g3", &ChassisOpts::default()).unwrap();
    chassis.add_bridge("br-int").unwrap();
    let mgmt = format!("unix:{}", chassis.mgmt_socket("br-int").display());
    let (conn, _events, _) = Connection::connect(&mgmt, Duration::from_secs(10))
        .await
        .unwrap();
    let bucket = |member: &str, weight| Bucket {
        weight,
        ..Bucket::new(
            openflow::text::parse_actions(&format!(
                "ct(commit,zone=NXM_NX_REG3[0..15],nat(dst={member}:8080),table=14)"
            ))
            .unwrap(),
        )
    };
    let mut group = Group {
        group_id: 0x1e00_0001,
        group_type: GroupType::Select,
        buckets: vec![bucket("10.0.1.21", 1), bucket("10.0.1.22", 1)],
    };
    let flow = openflow::text::parse_flow(
        "table=13,priority=100,ip,nw_dst=10.0.1.100,actions=group:503316481",
    )
    .unwrap();
    let flows = [flow.clone()];

    let mut r = Reconciler::new(conn.clone());
    r.resync(flows.iter(), [&group].into_iter(), None)
        .await
        .unwrap();
    assert_eq!(r.sent, 2, "the group and its flow");
    assert_eq!(
        held(&conn, group.group_id).await,
        (vec![group.clone()], vec![flow.clone()])
    );
    let mut fresh = Reconciler::new(conn.clone());
    fresh
        .resync(flows.iter(), [&group].into_iter(), None)
        .await
        .unwrap();
    assert_eq!(fresh.sent, 0, "a restart sends nothing");

    // The buckets change: one group-mod (a modify), and the flow stays.
    group.buckets = vec![bucket("10.0.1.21", 2), bucket("10.0.1.23", 5)];
    let mut r = Reconciler::new(conn.clone());
    r.resync(flows.iter(), [&group].into_iter(), None)
        .await
        .unwrap();
    assert_eq!(r.sent, 1, "the group only");
    assert_eq!(
        held(&conn, group.group_id).await,
        (vec![group.clone()], vec![flow.clone()])
    );
    let dump = chassis.ovs_ofctl(&["dump-groups", "br-int"]).unwrap();
    assert!(
        dump.contains("10.0.1.23:8080") && dump.contains("weight:5"),
        "{dump}"
    );

    // Neither is desired any more: both go.
    let mut r = Reconciler::new(conn.clone());
    r.resync(std::iter::empty(), std::iter::empty(), None)
        .await
        .unwrap();
    assert_eq!(r.sent, 2, "the flow, then the group");
    assert_eq!(held(&conn, group.group_id).await, (vec![], vec![]));
    assert_eq!((r.installed(), r.installed_groups()), (0, 0));
}
