//! The agent brings its switch back to the desired state on its own, end to end (server, agent,
//! real Open vSwitch):
//!
//! * after a **refused bundle**: someone deletes the load balancer's select group behind the
//!   agent's back (which also deletes the flow naming it); the next change to the group goes out
//!   as a group *modify*, which the switch refuses (unknown group), and the agent reads the switch
//!   again and installs the group and its flow once more;
//! * after an **`ovs-vswitchd` restart** (bridge and ports persist in OVSDB, the flows and
//!   groups do not): the agent reconnects and installs every flow and group again, and traffic
//!   between two VMs flows again.
//!
//! "The desired set" is what the switch held once the agent had converged (its metrics say it is
//! in sync and the switch holds exactly as many flows as the pipeline wants), compared flow by
//! flow (match, priority, cookie, actions), groups by their normalized description.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use agent::Reconciler;
use openflow::Flow;
use openflow::conn::Connection;
use openflow::flow::FlowKey;
use openflow::message::Group;
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Host};

mod support;
use support::{Settling, call, id, metrics, post, server, start_agent, vm, wait_for};

/// What br-int holds: the flows the agent owns (not those the switch learned itself), by
/// identity, and the groups, normalized, by id. Empty while the switch does not answer.
async fn held(chassis: &Chassis) -> (HashMap<FlowKey, Flow>, HashMap<u32, Group>) {
    let mgmt = format!("unix:{}", chassis.mgmt_socket("br-int").display());
    let Ok((conn, _events, _)) = Connection::connect(&mgmt, Duration::from_secs(2)).await else {
        return Default::default();
    };
    let (Ok(flows), Ok(groups)) = (
        conn.dump_flows(Default::default()).await,
        conn.dump_groups().await,
    ) else {
        return Default::default();
    };
    let flows = flows
        .into_iter()
        .filter(|s| !pipeline::cookie::is_learned(s.flow.cookie))
        .map(|s| (s.flow.key(), s.flow))
        .collect();
    let groups = groups
        .iter()
        .map(|g| (g.group_id, Reconciler::normalized(g)))
        .collect();
    (flows, groups)
}

/// Waits until the agent is in sync and the switch holds exactly the flows it wants; returns
/// them and the switch's groups (the desired set).
async fn converged(
    chassis: &Chassis,
    metrics_at: SocketAddr,
) -> (HashMap<FlowKey, Flow>, HashMap<u32, Group>) {
    let mut settling = Settling::new();
    let (held, _) = wait_for("the agent converges", Duration::from_secs(60), async || {
        let m = metrics(metrics_at).await;
        let (flows, groups) = held(chassis).await;
        let desired = m.get("wyvern_agent_flows_desired").copied();
        let in_sync = m.get("wyvern_agent_in_sync") == Some(&1)
            && desired.is_some_and(|d| d > 0)
            && desired == m.get("wyvern_agent_flows_installed").copied()
            && desired == Some(flows.len() as u64)
            && groups.len() == 1;
        let now = (flows, groups);
        let settled = settling.settled(in_sync, &now).await;
        (settled, (now, m))
    })
    .await;
    held
}

/// Waits until the switch holds exactly `flows` and its groups satisfy `groups_ok`.
async fn restored(
    chassis: &Chassis,
    what: &str,
    flows: &HashMap<FlowKey, Flow>,
    groups_ok: impl Fn(&HashMap<u32, Group>) -> bool,
) {
    wait_for(what, Duration::from_secs(60), async || {
        let (now, groups) = held(chassis).await;
        let missing: Vec<&Flow> = flows
            .iter()
            .filter(|(k, f)| now.get(*k) != Some(*f))
            .map(|(_, f)| f)
            .collect();
        let extra: Vec<&Flow> = now
            .iter()
            .filter(|(k, _)| !flows.contains_key(*k))
            .map(|(_, f)| f)
            .collect();
        let ok = missing.is_empty() && extra.is_empty() && groups_ok(&groups);
        let summary = format!(
            "{} flows held, {} missing (first: {:?}), {} extra (first: {:?}); groups {:?}",
            now.len(),
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first(),
            groups
        );
        (ok, summary)
    })
    .await;
}

fn pings(host: &Host, ip: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if host.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok() {
            return true;
        }
    }
    false
}

/// One chassis with its agent, a network with two VMs on it, and a TCP load balancer whose
/// pool has the second VM as its member (so the switch holds a select group).
struct Bed {
    base: String,
    _dir: tempfile::TempDir,
    chassis: Chassis,
    metrics: SocketAddr,
    vms: [(Host, String); 2],
    pool: String,
    member: String,
}

async fn bed(name: &str) -> Bed {
    let (base, dir) = server().await;
    let chassis = Chassis::start(name, &ChassisOpts::default()).unwrap();
    let metrics = start_agent(&base, &chassis).1;
    let net = post(&base, "/v2.0/networks", "network", json!({"name": "n"})).await;
    let subnet = post(
        &base,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.78.0.0/24"}),
    )
    .await;
    let mut ports = Vec::new();
    for n in ["vm1", "vm2"] {
        ports.push(
            post(
                &base,
                "/v2.0/ports",
                "port",
                json!({"network_id": id(&net), "name": n}),
            )
            .await,
        );
    }
    let lb = post(
        &base,
        "/v2.0/lbaas/loadbalancers",
        "loadbalancer",
        json!({"name": "lb", "vip_subnet_id": id(&subnet)}),
    )
    .await;
    let listener = post(
        &base,
        "/v2.0/lbaas/listeners",
        "listener",
        json!({"name": "l", "protocol": "TCP", "protocol_port": 80, "loadbalancer_id": id(&lb)}),
    )
    .await;
    let pool = post(
        &base,
        "/v2.0/lbaas/pools",
        "pool",
        json!({"name": "p", "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN",
            "listener_id": id(&listener)}),
    )
    .await;
    let ip2 = ports[1]["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let member = post(
        &base,
        &format!("/v2.0/lbaas/pools/{}/members", id(&pool)),
        "member",
        json!({"address": ip2, "protocol_port": 8080, "subnet_id": id(&subnet), "weight": 1}),
    )
    .await;
    chassis
        .wait_until(Duration::from_secs(30), || {
            chassis.ovs_vsctl(&["br-exists", "br-int"]).is_ok()
        })
        .unwrap();
    let ip = |p: &Value| {
        p["fixed_ips"][0]["ip_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let vms = [
        (vm(&chassis, &ports[0]).await, ip(&ports[0])),
        (vm(&chassis, &ports[1]).await, ip(&ports[1])),
    ];
    Bed {
        base,
        _dir: dir,
        chassis,
        metrics,
        vms,
        pool: id(&pool),
        member: id(&member),
    }
}

impl Bed {
    /// Changes the member's weight (which changes the select group's bucket in place).
    async fn weigh(&self, weight: u32) {
        let url = format!(
            "{}/v2.0/lbaas/pools/{}/members/{}",
            self.base, self.pool, self.member
        );
        call(
            reqwest::Method::PUT,
            url,
            json!({"member": {"weight": weight}}),
        )
        .await;
    }
}

fn the_group(groups: &HashMap<u32, Group>) -> Group {
    assert_eq!(groups.len(), 1, "{groups:?}");
    groups.values().next().unwrap().clone()
}

fn weights(g: &Group) -> Vec<u16> {
    g.buckets.iter().map(|b| b.weight).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bundle_makes_the_agent_resync() {
    let bed = bed("rs1").await;
    let (flows, groups) = converged(&bed.chassis, bed.metrics).await;
    let group = the_group(&groups);
    assert_eq!(weights(&group), vec![1], "{group:?}");
    let resyncs = metrics(bed.metrics).await["wyvern_agent_resyncs_total"];

    // Behind the agent's back the group goes, and with it the flow naming it.
    bed.chassis
        .ovs_ofctl(&[
            "del-groups",
            "br-int",
            &format!("group_id={}", group.group_id),
        ])
        .unwrap();
    let (now, groups_now) = held(&bed.chassis).await;
    assert!(groups_now.is_empty(), "{groups_now:?}");
    assert_eq!(now.len(), flows.len() - 1, "the flow naming the group went");

    // The member's weight changes: the agent sends a group modify for a group the switch does not
    // hold, the switch refuses the bundle, and the agent reads the switch again and installs the
    // group (with the new weight) and its flow.
    bed.weigh(3).await;
    restored(
        &bed.chassis,
        "the switch holds the desired flows and the modified group after the refusal",
        &flows,
        |g| {
            g.len() == 1
                && g.get(&group.group_id)
                    .is_some_and(|g| weights(g) == vec![3])
        },
    )
    .await;
    let m = metrics(bed.metrics).await;
    assert!(
        m["wyvern_agent_resyncs_total"] > resyncs,
        "restored without a resync? {m:?}"
    );
    assert_eq!(m["wyvern_agent_in_sync"], 1, "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_restores_its_flows_after_ovs_vswitchd_restarts() {
    let bed = bed("rs2").await;
    let [(h1, _), (_, ip2)] = &bed.vms;
    assert!(
        pings(h1, ip2, Duration::from_secs(30)),
        "vm1 cannot reach vm2"
    );
    let (flows, groups) = converged(&bed.chassis, bed.metrics).await;
    let resyncs = metrics(bed.metrics).await["wyvern_agent_resyncs_total"];

    // The restarted switch holds nothing until the agent is back: the flows the test finds
    // afterwards are the agent's doing.
    let old = bed.chassis.vswitchd_pid().unwrap();
    bed.chassis.stop_vswitchd();
    assert!(bed.chassis.vswitchd_pid().is_none());
    bed.chassis.start_vswitchd().unwrap();
    assert_ne!(bed.chassis.vswitchd_pid(), Some(old));

    restored(
        &bed.chassis,
        "the switch holds the desired flows and groups again after the restart",
        &flows,
        |g| *g == groups,
    )
    .await;
    let m = metrics(bed.metrics).await;
    assert!(m["wyvern_agent_resyncs_total"] > resyncs, "{m:?}");
    assert!(
        pings(h1, ip2, Duration::from_secs(30)),
        "vm1 cannot reach vm2 after ovs-vswitchd restarted"
    );
}
