//! `slice --security-groups`: issue 11's workload B on Wyvern. Before the ports the bench makes
//! one security group (Neutron gives it its two allow-all egress rules) with [`RULES`] ingress
//! rules, TCP [`FIRST_PORT`], [`FIRST_PORT`]+1, ... each with the group itself as remote group;
//! every port of the run (the bulk's and the single ones) is created in that group (and only in
//! it), so a single port is "one port added to the group of 1000". After the lab is down, Open
//! vSwitch's own floor for one port is measured in the same run (`ovs-port-add` with a third of
//! the ports on the bridge), and the report's targets are issue 11's.

use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::{Value, json};

use super::Ctx;
use crate::post;

/// Ingress rules of the group.
pub(super) const RULES: u16 = 20;
/// The first rule's TCP port.
const FIRST_PORT: u16 = 8001;

/// OVN 23.03's figures for workload B from issue 11.
const OVN_ISSUE: (f64, u64, f64, f64) = (27.8, 421_828, 4650.0, 421.0);

/// Makes the group and its rules; returns its id and what it took.
pub(super) async fn create(ctx: &Ctx) -> anyhow::Result<(String, Duration)> {
    let t0 = Instant::now();
    let api = &ctx.apis[0];
    let sg = post(
        &ctx.http,
        &format!("{api}/v2.0/security-groups"),
        json!({"security_group": {"name": "slice-sg"}}),
    )
    .await
    .context("creating the security group")?;
    let id = sg["security_group"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("security group without id: {sg}"))?
        .to_owned();
    for i in 0..RULES {
        let port = FIRST_PORT + i;
        post(
            &ctx.http,
            &format!("{api}/v2.0/security-group-rules"),
            json!({"security_group_rule": {
                "security_group_id": id, "direction": "ingress", "ethertype": "IPv4",
                "protocol": "tcp", "port_range_min": port, "port_range_max": port,
                "remote_group_id": id,
            }}),
        )
        .await
        .with_context(|| format!("creating the rule for TCP {port}"))?;
    }
    Ok((id, t0.elapsed()))
}

/// The setup's description of the group.
pub(super) fn setup() -> Value {
    json!({
        "groups": 1,
        "ingress_rules": RULES,
        "rules": format!("TCP {FIRST_PORT}..={} one port each, remote group = itself; plus Neutron's IPv4 and IPv6 allow-all egress rules", FIRST_PORT + RULES - 1),
        "members": "every port of the run (only this group)",
    })
}

/// Issue 11's targets, against what the run measured and Open vSwitch's floor (`floor`, the
/// `ovs-port-add` report of the same run).
pub(super) fn targets(
    bulk: &Value,
    flows: &Value,
    one_port: &Value,
    agents: &[Value],
    floor: &Value,
) -> Value {
    let after_write = bulk["converged_after_last_write_s"].as_f64();
    let per_chassis: Vec<u64> = flows["per_chassis"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["openflow_flow_stats"].as_u64())
        .collect();
    let rss: Vec<f64> = agents
        .iter()
        .filter_map(|a| a["usage"]["rss_mib"].as_f64())
        .collect();
    // Open vSwitch's floor: the VIF insert until a flow for it is confirmed, with the faster
    // of the two ways to learn the OpenFlow port.
    let floor_p50 = ["react_to_port_status", "react_to_ovsdb_ofport"]
        .iter()
        .filter_map(|k| floor["results"][k]["flow_confirmed_ms"]["p50"].as_f64())
        .reduce(f64::min);
    let p50 = one_port["local_flows_ms"]["p50"].as_f64();
    let (ovn_s, ovn_flows, ovn_port_ms, ovn_rss) = OVN_ISSUE;
    json!({
        "bulk_converged_after_last_write_s": {
            "target": 1.0, "measured": after_write, "ovn_issue_11": ovn_s,
            "met": after_write.is_some_and(|s| s <= 1.0),
        },
        "flows_per_chassis": {
            "target": 20_000, "measured": per_chassis, "ovn_issue_11": ovn_flows,
            "met": !per_chassis.is_empty() && per_chassis.iter().all(|f| *f <= 20_000),
        },
        "one_port_added_to_group_p50_ms": {
            "target": "Open vSwitch's floor + 15 ms",
            "measured": p50, "p99": one_port["local_flows_ms"]["p99"],
            "remote_chassis_p50": one_port["remote_flows_all_chassis_ms"]["p50"],
            "ovs_floor_p50_ms": floor_p50, "ovn_issue_11": ovn_port_ms,
            "met": p50.zip(floor_p50).is_some_and(|(m, f)| m <= f + 15.0),
        },
        "agent_rss_mib": {
            "target": 60.0, "measured": rss, "ovn_issue_11": ovn_rss,
            "met": !rss.is_empty() && rss.iter().all(|r| *r <= 60.0),
        },
    })
}
