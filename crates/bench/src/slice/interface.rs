//! The routed variant's last phase: one router interface added to the loaded system until a
//! routed ping works.
//!
//! The bench makes an 11th network over the API (`probe`, one IPv4 subnet, on no router yet) and
//! the lab grows by VM `pa` on it on the first chassis and VM `pb` on the bench's first network on
//! the second chassis (ports, namespaces and VIFs as `lab up` makes them). Then, per sample: `pa`
//! pings `pb`
//! every 2 ms (one `ping -D` process, started before the call), the bench calls
//! `add_router_interface` for `probe`'s subnet, and the sample is the time from the call to the
//! first echo reply; meanwhile the switches are asked when the interface's L3-entry flow is on
//! each chassis. Then the interface is removed again, the agents converge, and one ping must
//! fail (the path is really cut) before the next sample.
//!
//! `pa` resends ARP for its gateway every 10 ms (`retrans_time_ms`; the kernel allows no less)
//! and its neighbour cache is flushed before each sample (each new interface has a new MAC), so
//! the guest's own 1 s ARP retry does not hide the controller: the figure's resolution is about
//! 10 ms. `pb` has resolved its gateway (an interface of the loaded system) beforehand, as a
//! running VM would have.
//!
//! The probe subnet has DHCP off. With DHCP on, the pipeline answers ARP for a subnet's gateway
//! address with the DHCP server's MAC while no port holds that address (the server identifier),
//! so `pa` would learn that MAC for its gateway before the interface exists and keep sending to
//! it until its neighbour entry expires (about 20 s with Linux's default timers): the figure
//! would be the guest's, not the controller's. (Agents now announce a new interface with a
//! gratuitous ARP; DHCP stays off so that the figure stays comparable with earlier runs.)

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use lab::Lab;
use pipeline::cookie::Owner;
use serde_json::{Value, json};

use crate::post;

use super::probe::{Ping, fast_arp, forget_neighbours, ping_once};
use super::{
    Ctx, Params, SAMPLE_GAP, STEP_TIMEOUT, first_seen, ms, network_name, progress, stats_json,
};

/// The 11th network, joined to the router only by the samples.
const PROBE_NET: &str = "probe";
const PROBE_CIDR: &str = "10.99.0.0/24";
/// The VM on the probe network, and the one on the bench's first network that it pings.
const FROM_VM: &str = "pa";
const TO_VM: &str = "pb";

/// One sample's figures.
struct Sample {
    cut_before: bool,
    api: Duration,
    ping: Duration,
    ttl: Option<u8>,
    /// When the interface's L3-entry flow was on each chassis (from the call).
    flows: Vec<Option<Duration>>,
}

/// Runs the phase (see the module's documentation).
pub(super) async fn run(p: &Params, ctx: &mut Ctx, lab: &mut Lab) -> anyhow::Result<Value> {
    let router = ctx
        .router
        .clone()
        .ok_or_else(|| anyhow!("the routed phase needs the router"))?;
    let (from_node, to_node) = (0, 1 % ctx.nodes.len());
    let (from_chassis, to_chassis) = (
        ctx.nodes[from_node].name.clone(),
        ctx.nodes[to_node].name.clone(),
    );
    let existing = network_name(0);
    let subnet = probe_network(ctx).await?;
    progress(&format!(
        "router interface: network {PROBE_NET} with vm {FROM_VM} on {from_chassis}, \
         vm {TO_VM} on {existing} on {to_chassis}"
    ));
    let vms = format!(
        "[[network]]\nname = \"{PROBE_NET}\"\n[[network.subnet]]\ncidr = \"{PROBE_CIDR}\"\n\
         [[vm]]\nname = \"{FROM_VM}\"\nnetwork = \"{PROBE_NET}\"\nchassis = \"{from_chassis}\"\n\
         [[vm]]\nname = \"{TO_VM}\"\nnetwork = \"{existing}\"\nchassis = \"{to_chassis}\"\n"
    );
    ctx.grow_lab(p, lab, &[0], &vms)
        .context("adding the probe VMs")?;
    let (to_ip, to_gateway) = {
        let vm = lab
            .vm(TO_VM)
            .ok_or_else(|| anyhow!("the lab made no vm {TO_VM}"))?;
        let ip = vm.addresses.first().and_then(|a| a.split('/').next());
        let ip = ip.ok_or_else(|| anyhow!("vm {TO_VM} has no address"))?;
        let gw = vm.gateway.clone();
        (
            ip.to_owned(),
            gw.ok_or_else(|| anyhow!("vm {TO_VM} has no gateway"))?,
        )
    };
    ctx.converge(STEP_TIMEOUT).await?;
    if !ping_once(lab, TO_VM, &to_gateway)? {
        bail!("vm {TO_VM} cannot ping its gateway {to_gateway} (the router's interface)");
    }
    fast_arp(lab, FROM_VM, "eth0")?;

    let mut samples = Vec::new();
    for s in 0..p.interface_samples {
        tokio::time::sleep(SAMPLE_GAP).await;
        let cut_before = !ping_once(lab, FROM_VM, &to_ip)?;
        forget_neighbours(lab, FROM_VM, "eth0")?;
        let sample = sample(ctx, lab, &router, &subnet, &to_ip, cut_before).await?;
        progress(&format!(
            "router interface {s}: first reply after {:.1} ms",
            sample.ping.as_secs_f64() * 1000.0
        ));
        samples.push(sample);
        ctx.remove_interface(&router, &subnet).await?;
        ctx.converge(STEP_TIMEOUT).await?;
    }

    let col = |f: &dyn Fn(&Sample) -> Option<Duration>| -> Vec<Duration> {
        samples.iter().filter_map(f).collect()
    };
    let local = col(&|s| s.flows[from_node]);
    let all = col(&|s| {
        s.flows
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max()
    });
    let missing = samples
        .iter()
        .map(|s| s.flows.iter().filter(|f| f.is_none()).count())
        .sum::<usize>();
    Ok(json!({
        "samples": samples.len(),
        "from": {"vm": FROM_VM, "network": PROBE_NET, "chassis": from_chassis},
        "to": {"vm": TO_VM, "network": existing, "chassis": to_chassis, "ip": to_ip},
        "note": "ms from the add_router_interface call; ping every 2 ms, ARP retried every 10 ms; \
                 the probe subnet has DHCP off (see the bench's source)",
        "api_call_ms": stats_json(col(&|s| Some(s.api))),
        "ping_ms": stats_json(col(&|s| Some(s.ping))),
        "interface_flows_on_pinging_chassis_ms": stats_json(local),
        "interface_flows_on_all_chassis_ms": stats_json(all),
        "interface_flows_never_seen": missing,
        "per_sample": samples.iter().map(|s| json!({
            "path_cut_before": s.cut_before, "api_call_ms": ms(s.api), "ping_ms": ms(s.ping),
            "ttl": s.ttl,
            "interface_flows_ms": s.flows.iter().map(|f| f.map(ms)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

/// Makes the probe network and its subnet (DHCP off, see the module's documentation); returns
/// the subnet's id.
async fn probe_network(ctx: &Ctx) -> anyhow::Result<String> {
    let net = post(
        &ctx.http,
        &format!("{}/v2.0/networks", ctx.apis[0]),
        json!({"network": {"name": PROBE_NET}}),
    )
    .await
    .context("creating the probe network")?;
    let net = net["network"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("network without id: {net}"))?;
    let subnet = post(
        &ctx.http,
        &format!("{}/v2.0/subnets", ctx.apis[0]),
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": PROBE_CIDR,
                          "enable_dhcp": false}}),
    )
    .await
    .context("creating the probe subnet")?;
    subnet["subnet"]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("subnet without id: {subnet}"))
}

/// Adds the interface while `FROM_VM` pings `to_ip`; the first reply ends the sample.
async fn sample(
    ctx: &Ctx,
    lab: &Lab,
    router: &str,
    subnet: &str,
    to_ip: &str,
    cut_before: bool,
) -> anyhow::Result<Sample> {
    let ping = Ping::start(lab, FROM_VM, to_ip).await?;
    let called = SystemTime::now();
    let t0 = Instant::now();
    let port = ctx.add_interface(router, subnet).await?;
    let api = t0.elapsed();
    let mut pollers = tokio::task::JoinSet::new();
    for (i, n) in ctx.nodes.iter().enumerate() {
        let (of, owner) = (n.of.clone(), Owner::RouterInterface(port.as_str().into()));
        pollers.spawn(async move {
            let seen = first_seen(of, pipeline::tables::L3_ENTRY, owner, t0).await;
            (i, seen.ok().map(|at| at - t0))
        });
    }
    let (at, ttl) = ping
        .first_reply(called, STEP_TIMEOUT)
        .await
        .with_context(|| format!("pinging {to_ip} after the call"))?;
    let mut flows = vec![None; ctx.nodes.len()];
    while let Some(r) = pollers.join_next().await {
        let (i, seen) = r?;
        flows[i] = seen;
    }
    Ok(Sample {
        cut_before,
        api,
        ping: at.duration_since(called).unwrap_or_default(),
        ttl,
        flows,
    })
}
