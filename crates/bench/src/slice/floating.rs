//! `slice --floating-ips`: the outside of issue 12's workload, and its two phases on the loaded
//! system (after the bulk's 1000 floating IPs).
//!
//! The lab has a physical segment [`PHYSNET`] (a switch with an uplink from every chassis), the
//! external host [`EXTERNAL_HOST`] on it (untagged; it stands for the internet) and the flat
//! external network [`EXTERNAL_NET`] there, made by the lab before the timed part. For the
//! phases the lab grows by VM [`VM`] on the bench's first network and VM [`PEER_VM`] on its
//! second, both on the first chassis, both in group [`GROUP`] (ICMP and TCP in from anywhere).
//!
//! - *Associate → first packet*: one more floating IP, made unassociated. Per sample the
//!   external host pings it every 2 ms (one `ping -D`; its neighbour cache flushed first and ARP
//!   retried every 10 ms, so its own 1 s retry does not hide the controller), the bench
//!   associates it with [`VM`]'s port and takes the time from the start of the call to the first
//!   echo reply, and when the floating IP's flows (cookie kind 0x07, table `external-input`)
//!   are on [`VM`]'s chassis. Then the floating IP is disassociated again, the agents converge,
//!   and one ping must fail (the path is cut) before the next sample.
//! - *New connections per second* ([`connections`]): from [`VM`] (no floating IP now) to the
//!   external host, through distributed SNAT (the chassis' own address on the external network),
//!   against from [`VM`] to [`PEER_VM`], through plain routing by the same router on the same
//!   chassis. The SNAT path also crosses the chassis' provider bridge and the segment's switch
//!   (a second userspace vswitchd): costs of the lab's outside, not of the pipeline.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use lab::Lab;
use pipeline::cookie::Owner;
use serde_json::{Value, json};

use super::connections::{self, Target};
use super::probe::{Ping, fast_arp, forget_neighbours, ping_once};
use super::{Ctx, SAMPLE_GAP, STEP_TIMEOUT, first_seen, ms, network_name, progress, stats_json};
use crate::put;

/// The physical segment.
const PHYSNET: &str = "physnet1";
/// The external network (flat on [`PHYSNET`]) and its subnet: room for the bulk's floating IPs,
/// the chassis' SNAT addresses and the router's gateway.
const EXTERNAL_NET: &str = "public";
const EXTERNAL_CIDR: &str = "172.24.0.0/20";
const EXTERNAL_GATEWAY: &str = "172.24.0.1";
/// The external host, at the top of the subnet (the server allocates from the bottom).
const EXTERNAL_HOST: &str = "inet";
const EXTERNAL_HOST_IP: &str = "172.24.15.250";
/// The external host's interface.
const EXTERNAL_DEV: &str = testbed::HOST_IF;
/// The VM whose floating IP is associated and that makes the connections, and its peer on
/// another network behind the router (both on the first chassis).
const VM: &str = "fa";
const PEER_VM: &str = "fb";
/// The group of both VMs: ICMP and TCP in from anywhere.
const GROUP: &str = "reachable";

/// What the floating-IP phases do.
#[derive(Debug, Clone)]
pub struct Params {
    /// Associate → first packet samples.
    pub samples: usize,
    /// The connection-rate client.
    pub connections: connections::Options,
}

/// The lab's part for the outside: segment, external host, external network.
pub(super) fn outside() -> String {
    format!(
        "[[physical]]\nname = \"{PHYSNET}\"\n\
         [[external]]\nname = \"{EXTERNAL_HOST}\"\nphysical = \"{PHYSNET}\"\n\
         ip = \"{EXTERNAL_HOST_IP}/{prefix}\"\n\
         [[network]]\nname = \"{EXTERNAL_NET}\"\nnetwork_type = \"flat\"\n\
         physical_network = \"{PHYSNET}\"\nexternal = true\n\
         [[network.subnet]]\ncidr = \"{EXTERNAL_CIDR}\"\ngateway = \"{EXTERNAL_GATEWAY}\"\n",
        prefix = EXTERNAL_CIDR.rsplit_once('/').map_or("", |(_, p)| p),
    )
}

/// The id of the external network the lab made.
pub(super) fn external_network(lab: &Lab) -> anyhow::Result<String> {
    lab.state()
        .networks
        .get(EXTERNAL_NET)
        .map(|n| n.id.clone())
        .ok_or_else(|| anyhow!("the lab made no network {EXTERNAL_NET}"))
}

/// The setup's description of the outside.
pub(super) fn setup(ports: usize) -> Value {
    json!({
        "physical_segment": PHYSNET,
        "external_network": {"name": EXTERNAL_NET, "type": "flat", "cidr": EXTERNAL_CIDR},
        "external_host": {"name": EXTERNAL_HOST, "ip": EXTERNAL_HOST_IP},
        "router_gateway": EXTERNAL_NET,
        "floating_ips": ports,
        "floating_ips_made": "one per port of the bulk, created with its port_id right after the port's VIF is plugged",
        "snat": "distributed (the router's default)",
    })
}

/// Runs both phases (see the module's documentation).
pub(super) async fn run(
    p: &super::Params,
    fp: &Params,
    ctx: &mut Ctx,
    lab: &mut Lab,
) -> anyhow::Result<Value> {
    let chassis = ctx.nodes[0].name.clone();
    progress(&format!(
        "floating IPs: vm {VM} on {} and vm {PEER_VM} on {}, both on {chassis}",
        network_name(0),
        network_name(1)
    ));
    let vms = format!(
        "[[security_group]]\nname = \"{GROUP}\"\n\
         rules = [{{ direction = \"ingress\", protocol = \"icmp\" }}, \
         {{ direction = \"ingress\", protocol = \"tcp\" }}]\n\
         [[vm]]\nname = \"{VM}\"\nnetwork = \"{}\"\nchassis = \"{chassis}\"\nsecurity_groups = [\"{GROUP}\"]\n\
         [[vm]]\nname = \"{PEER_VM}\"\nnetwork = \"{}\"\nchassis = \"{chassis}\"\nsecurity_groups = [\"{GROUP}\"]\n",
        network_name(0),
        network_name(1),
    );
    ctx.grow_lab(p, lab, &[0, 1], &vms)
        .context("adding the floating-IP phases' VMs")?;
    ctx.converge(STEP_TIMEOUT).await?;
    let associate = associate(fp, ctx, lab).await?;
    ctx.converge(STEP_TIMEOUT).await?;
    progress(&format!(
        "new connections: {VM} to {EXTERNAL_HOST} (SNAT) and to {PEER_VM} (routed)"
    ));
    let connections = tokio::task::block_in_place(|| rate(fp, ctx, lab))?;
    Ok(json!({"associate_to_first_packet": associate, "new_connections": connections}))
}

/// VM `vm`'s first IPv4 address.
fn vm_ip(lab: &Lab, vm: &str) -> anyhow::Result<IpAddr> {
    lab.vm(vm)
        .and_then(|v| v.addresses.iter().find(|a| !a.contains(':')))
        .and_then(|a| a.split('/').next()?.parse().ok())
        .ok_or_else(|| anyhow!("vm {vm} has no IPv4 address"))
}

/// One associate sample's figures.
struct Sample {
    cut_before: bool,
    api: Duration,
    reply: Duration,
    /// When the floating IP's flows were on the VM's chassis (from the call).
    flows: Option<Duration>,
}

/// Associate → first packet through (see the module's documentation).
async fn associate(fp: &Params, ctx: &mut Ctx, lab: &Lab) -> anyhow::Result<Value> {
    let port = lab
        .port_id(VM)
        .ok_or_else(|| anyhow!("the lab made no vm {VM}"))?
        .to_owned();
    let (fip, address) = ctx.create_floating_ip(None).await?;
    let url = format!("{}/v2.0/floatingips/{fip}", ctx.apis[0]);
    progress(&format!(
        "floating IP {address}: associated with {VM} {} times while {EXTERNAL_HOST} pings it",
        fp.samples
    ));
    fast_arp(lab, EXTERNAL_HOST, EXTERNAL_DEV)?;
    let of = ctx.nodes[0].of.clone();
    let mut samples = Vec::new();
    for s in 0..fp.samples {
        tokio::time::sleep(SAMPLE_GAP).await;
        let cut_before = !ping_once(lab, EXTERNAL_HOST, &address)?;
        forget_neighbours(lab, EXTERNAL_HOST, EXTERNAL_DEV)?;
        let ping = Ping::start(lab, EXTERNAL_HOST, &address).await?;
        let called = SystemTime::now();
        let t0 = Instant::now();
        let poller = tokio::spawn(first_seen(
            of.clone(),
            pipeline::tables::EXTERNAL_IN,
            Owner::FloatingIp(fip.as_str().into()),
            t0,
        ));
        put(&ctx.http, &url, json!({"floatingip": {"port_id": port}})).await?;
        let api = t0.elapsed();
        let (at, _) = ping
            .first_reply(called, STEP_TIMEOUT)
            .await
            .with_context(|| format!("pinging {address} from {EXTERNAL_HOST}"))?;
        let flows = poller.await?.ok().map(|at| at - t0);
        let sample = Sample {
            cut_before,
            api,
            reply: at.duration_since(called).unwrap_or_default(),
            flows,
        };
        progress(&format!(
            "floating IP {s}: first reply after {:.1} ms",
            sample.reply.as_secs_f64() * 1000.0
        ));
        samples.push(sample);
        put(&ctx.http, &url, json!({"floatingip": {"port_id": null}})).await?;
        wait_down(ctx, &fip).await?;
        ctx.converge(STEP_TIMEOUT).await?;
    }
    let col = |f: &dyn Fn(&Sample) -> Option<Duration>| -> Vec<Duration> {
        samples.iter().filter_map(f).collect()
    };
    Ok(json!({
        "samples": samples.len(),
        "floating_ip": address,
        "vm": {"name": VM, "network": network_name(0), "chassis": ctx.nodes[0].name},
        "from": EXTERNAL_HOST,
        "note": "ms from the start of the associate call (PUT port_id); ping every 2 ms, \
                 the external host's neighbour cache flushed and ARP retried every 10 ms",
        "api_call_ms": stats_json(col(&|s| Some(s.api))),
        "first_reply_ms": stats_json(col(&|s| Some(s.reply))),
        "first_reply_after_call_returned_ms": stats_json(col(&|s| Some(s.reply.saturating_sub(s.api)))),
        "flows_on_chassis_ms": stats_json(col(&|s| s.flows)),
        "first_reply_after_flows_ms": stats_json(col(&|s| s.flows.map(|f| s.reply.saturating_sub(f)))),
        "flows_never_seen": samples.iter().filter(|s| s.flows.is_none()).count(),
        "path_cut_before_every_sample": samples.iter().all(|s| s.cut_before),
        "per_sample": samples.iter().map(|s| json!({
            "path_cut_before": s.cut_before, "api_call_ms": ms(s.api),
            "first_reply_ms": ms(s.reply), "flows_ms": s.flows.map(ms),
        })).collect::<Vec<_>>(),
    }))
}

/// Waits until the bench's view of the server shows floating IP `fip` DOWN (disassociated).
async fn wait_down(ctx: &Ctx, fip: &str) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while ctx.view().floating_ips.get(fip) != Some(&false) {
        if t0.elapsed() > STEP_TIMEOUT {
            bail!("floating IP {fip} is not DOWN after its disassociation");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// New connections per second: SNAT against plain routing (see the module's documentation).
fn rate(fp: &Params, ctx: &Ctx, lab: &Lab) -> anyhow::Result<Value> {
    let netns = |host: &str| lab::names::host_netns(lab.name(), host);
    let external_ip: IpAddr = EXTERNAL_HOST_IP.parse()?;
    let targets = [
        Target {
            name: "snat",
            netns: netns(EXTERNAL_HOST),
            ip: external_ip,
        },
        Target {
            name: "routed",
            netns: netns(PEER_VM),
            ip: vm_ip(lab, PEER_VM)?,
        },
    ];
    // The path out is open (the chassis resolves the external host on its first packet).
    if !ping_once(lab, VM, EXTERNAL_HOST_IP)? && !ping_once(lab, VM, EXTERNAL_HOST_IP)? {
        bail!("vm {VM} cannot ping {EXTERNAL_HOST} ({EXTERNAL_HOST_IP})");
    }
    // The switches on the paths: the chassis' (both paths) and the segment's (SNAT only).
    let chassis = &ctx.nodes[0].name;
    let segment = lab.state().physical.get(PHYSNET).and_then(|s| {
        let pid = std::fs::read_to_string(s.rundir.join("ovs-vswitchd.pid")).ok()?;
        pid.trim().parse().ok()
    });
    let processes: Vec<(String, u32)> = [
        (
            format!("vswitchd_{chassis}"),
            lab.chassis(chassis).and_then(|c| c.vswitchd_pid()),
        ),
        (format!("vswitchd_{PHYSNET}"), segment),
    ]
    .into_iter()
    .filter_map(|(name, pid)| Some((name, pid?)))
    .collect();
    let mut report = connections::compare(&netns(VM), &targets, &fp.connections, &processes)?;
    report["from"] = json!({"vm": VM, "ip": vm_ip(lab, VM)?.to_string(), "floating_ip": null});
    report["routed"]["vm"] = PEER_VM.into();
    report["snat"]["host"] = EXTERNAL_HOST.into();
    report["options"] = json!({
        "seconds": fp.connections.seconds, "runs": fp.connections.runs,
        "parallel": fp.connections.parallel, "server_ports": fp.connections.ports,
        "connection": "TCP handshake, one byte from the server, the server's close, then the client's",
    });
    Ok(report)
}
