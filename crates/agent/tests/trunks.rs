//! Trunk subports' ports on `br-int`, end to end (server, agent, real Open vSwitch): a VM's port
//! is the parent of a trunk; the agent makes a patch pair per subport (`spt…`, the subport's VIF,
//! and `spi…`, the inner end) and the trunk's flows on them, follows subports added and removed,
//! and, restarted, adopts the pairs as they are (same rows, same OpenFlow ports) and sends the
//! switch nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts};

mod support;
use support::{call, id, metrics, post, server, start_agent, vm, wait_for};

/// One end of a pair as OVSDB has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct End {
    uuid: String,
    ofport: i64,
    peer: String,
    external_ids: String,
}

/// The pairs' ends on the chassis, by interface name (`spt…`, `spi…`).
fn ends(chassis: &Chassis) -> BTreeMap<String, End> {
    let out = chassis
        .ovs_vsctl(&[
            "--format=csv",
            "--data=bare",
            "--no-headings",
            "--columns=name,_uuid,ofport,options,external_ids",
            "list",
            "Interface",
        ])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.splitn(5, ',').collect();
            let [name, uuid, ofport, options, ids] = fields[..] else {
                return None;
            };
            (name.starts_with("spt") || name.starts_with("spi")).then(|| {
                (
                    name.to_string(),
                    End {
                        uuid: uuid.to_string(),
                        ofport: ofport.parse().unwrap_or(-1),
                        peer: options.trim_start_matches("peer=").to_string(),
                        external_ids: ids.to_string(),
                    },
                )
            })
        })
        .collect()
}

fn short(id: &str) -> String {
    id.chars().take(11).collect()
}

/// The flows of `br-int` in `ovs-ofctl` text.
fn flows(chassis: &Chassis) -> String {
    chassis
        .ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
        .unwrap_or_default()
}

/// Whether the switch holds the trunk's flows for a subport on VLAN `vlan` whose inner end is
/// OpenFlow port `inner`.
fn has_subport_flows(flows: &str, vlan: u16, inner: i64) -> bool {
    let untag = flows
        .lines()
        .any(|l| l.contains(&format!("dl_vlan={vlan}")) && l.contains(&format!("output:{inner}")));
    let retag = flows.lines().any(|l| {
        l.contains(&format!("in_port={inner} "))
            && l.contains("push_vlan")
            && l.contains(&format!("{}->vlan_vid", 0x1000 | vlan))
    });
    untag && retag
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subport_pairs_follow_the_trunk_and_survive_an_agent_restart() {
    let (base, _dir) = server().await;
    let chassis = Chassis::start("tr1", &ChassisOpts::default()).unwrap();
    let (first_agent, _) = start_agent(&base, &chassis);
    let mut nets = Vec::new();
    for (n, cidr) in [
        ("n1", "10.81.1.0/24"),
        ("n2", "10.81.2.0/24"),
        ("n3", "10.81.3.0/24"),
    ] {
        let net = post(&base, "/v2.0/networks", "network", json!({"name": n})).await;
        post(
            &base,
            "/v2.0/subnets",
            "subnet",
            json!({"network_id": id(&net), "ip_version": 4, "cidr": cidr}),
        )
        .await;
        nets.push(id(&net));
    }
    let port = |net: &str, name: &str| json!({"network_id": net, "name": name});
    let parent = post(&base, "/v2.0/ports", "port", port(&nets[0], "parent")).await;
    let s2 = post(&base, "/v2.0/ports", "port", port(&nets[1], "s2")).await;
    let s3 = post(&base, "/v2.0/ports", "port", port(&nets[2], "s3")).await;
    let (s2, s3) = (id(&s2), id(&s3));
    // The trunk before the parent is bound (Neutron's rule), with one subport.
    let trunk = post(
        &base,
        "/v2.0/trunks",
        "trunk",
        json!({"port_id": id(&parent), "name": "t", "sub_ports": [
            {"port_id": s2, "segmentation_type": "vlan", "segmentation_id": 101}]}),
    )
    .await;
    chassis
        .wait_until(Duration::from_secs(30), || {
            chassis.ovs_vsctl(&["br-exists", "br-int"]).is_ok()
        })
        .unwrap();
    // The VM of the parent port.
    let vm = vm(&chassis, &parent).await;

    // The pair of s2 appears, peers of each other, the outer end the subport's VIF, and the
    // trunk's flows use the inner end.
    let (spt2, spi2) = (format!("spt{}", short(&s2)), format!("spi{}", short(&s2)));
    let pair = wait_for("s2's pair and flows", Duration::from_secs(30), async || {
        let e = ends(&chassis);
        let inner = e.get(&spi2).map_or(-1, |i| i.ofport);
        let ok = e.get(&spt2).is_some_and(|o| o.ofport > 0)
            && inner > 0
            && has_subport_flows(&flows(&chassis), 101, inner);
        (ok, e)
    })
    .await;
    assert_eq!(pair[&spt2].peer, spi2);
    assert_eq!(pair[&spi2].peer, spt2);
    assert!(pair[&spt2].external_ids.contains(&format!("iface-id={s2}")));
    assert!(!pair[&spi2].external_ids.contains("iface-id"));
    assert!(pair[&spi2].external_ids.contains("wyvern-vlan=101"));
    // The subport is bound here, as its parent (its VIF is the outer end).
    let bound = wait_for("s2 bound here", Duration::from_secs(30), async || {
        let p = call(
            reqwest::Method::GET,
            format!("{base}/v2.0/ports/{s2}"),
            Value::Null,
        )
        .await;
        let ok = p["port"]["binding:host_id"] == "tr1";
        (ok, p)
    })
    .await;
    assert_eq!(bound["port"]["binding:host_id"], "tr1");

    // Adding s3 adds its pair; removing s2 removes s2's, and its flows.
    let trunk_url = format!("{base}/v2.0/trunks/{}", id(&trunk));
    call(
        reqwest::Method::PUT,
        format!("{trunk_url}/add_subports"),
        json!({"sub_ports": [{"port_id": s3, "segmentation_type": "vlan", "segmentation_id": 102}]}),
    )
    .await;
    let spi3 = format!("spi{}", short(&s3));
    wait_for("s3's pair and flows", Duration::from_secs(30), async || {
        let e = ends(&chassis);
        let inner = e.get(&spi3).map_or(-1, |i| i.ofport);
        let ok = inner > 0 && has_subport_flows(&flows(&chassis), 102, inner);
        (ok, e)
    })
    .await;
    call(
        reqwest::Method::PUT,
        format!("{trunk_url}/remove_subports"),
        json!({"sub_ports": [{"port_id": s2}]}),
    )
    .await;
    let inner2 = pair[&spi2].ofport;
    let before = wait_for("s2's pair gone", Duration::from_secs(30), async || {
        let e = ends(&chassis);
        let f = flows(&chassis);
        let ok = !e.contains_key(&spt2)
            && !e.contains_key(&spi2)
            && !f.contains("dl_vlan=101")
            && !f.contains(&format!("in_port={inner2} "));
        (ok, e)
    })
    .await;
    assert_eq!(before.len(), 2, "s3's pair alone: {before:?}");

    // The agent restarts: it adopts the pair as it is and sends nothing.
    let held_before = flows(&chassis);
    first_agent.abort();
    let _ = first_agent.await;
    let (_second, metrics_at) = start_agent(&base, &chassis);
    let m = wait_for(
        "the restarted agent in sync",
        Duration::from_secs(60),
        async || {
            let m = metrics(metrics_at).await;
            let ok = m.get("wyvern_agent_in_sync") == Some(&1)
                && m.get("wyvern_agent_flows_desired") == m.get("wyvern_agent_flows_installed");
            (ok, m)
        },
    )
    .await;
    // Give a late change a chance to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m2 = metrics(metrics_at).await;
    assert_eq!(
        m2.get("wyvern_agent_flow_mods_sent_total"),
        Some(&0),
        "a restart sends nothing: {m:?} then {m2:?}"
    );
    assert_eq!(
        ends(&chassis),
        before,
        "the pair is adopted, not re-created"
    );
    let strip = |f: &str| -> Vec<String> {
        let mut v: Vec<String> = f
            .lines()
            .filter(|l| l.contains("cookie=0xc"))
            .map(|l| {
                l.split_whitespace()
                    .filter(|w| {
                        !w.starts_with("duration=")
                            && !w.starts_with("n_packets=")
                            && !w.starts_with("n_bytes=")
                            && !w.starts_with("idle_age=")
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        v.sort();
        v
    };
    let trunk_flows = strip(&held_before);
    assert!(!trunk_flows.is_empty(), "{held_before}");
    assert_eq!(strip(&flows(&chassis)), trunk_flows);
    drop(vm);
}
