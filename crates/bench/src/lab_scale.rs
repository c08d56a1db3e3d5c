//! `wyvern-bench lab-scale`: how long `wyvern lab up` takes for many chassis and VMs on this one
//! machine, and `down` (issue 17: 100 chassis with 200 VMs in under 60 s).
//!
//! A topology of `chassis` chassis (`c1`..), `networks` networks and `vms` VMs, the VMs spread
//! round robin over the chassis and over the networks, is brought up through the lab (the
//! embedded store, userspace Open vSwitch and an agent per chassis, as `wyvern lab up` does it).
//! Reported: the time `up` took; the time until every agent says it is in sync with the server
//! (`wyvern_agent_in_sync`) and until a ping from the first VM reaches the last VM on its network
//! (the lab's first and last chassis); the machine's CPU while the idle lab runs for
//! `idle_seconds`, by program (BFD and the switches' main loops); the time `down` took. The lab
//! is removed at the end, also on errors and signals (the lab's `Drop`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lab::{Lab, LabOptions, Topology};
use serde_json::{Value, json};

/// The lab's name (`wyl` prefixed like every lab).
const NAME: &str = "scale";

pub struct Params {
    pub wyvern: PathBuf,
    pub chassis: usize,
    pub vms: usize,
    pub networks: usize,
    pub idle_seconds: u64,
}

fn progress(what: &str) {
    crate::progress("lab-scale", what);
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    crate::until_signal(bench(p)).await
}

/// The VM `v` (from 0): its name, chassis (from 0), network (from 0) and address.
fn vm(p: &Params, v: usize) -> (String, usize, usize, String) {
    let network = v % p.networks;
    // Hosts .2 onwards of the network's /22 (.1 is the gateway).
    let host = v / p.networks + 2;
    let ip = format!("10.{}.{}.{}", 100 + network, host / 256, host % 256);
    (format!("v{}", v + 1), v % p.chassis, network, ip)
}

/// The topology file's text.
fn topology(p: &Params) -> String {
    // The underlay's /20 holds up to 4 094 chassis.
    let mut t = format!("name = \"{NAME}\"\n[underlay]\ncidr = \"172.30.0.0/20\"\n");
    for c in 1..=p.chassis {
        t.push_str(&format!("[[chassis]]\nname = \"c{c}\"\n"));
    }
    for n in 0..p.networks {
        t.push_str(&format!(
            "[[network]]\nname = \"net{n}\"\n[[network.subnet]]\ncidr = \"10.{}.0.0/22\"\n",
            100 + n
        ));
    }
    for v in 0..p.vms {
        let (name, chassis, network, ip) = vm(p, v);
        t.push_str(&format!(
            "[[vm]]\nname = \"{name}\"\nnetwork = \"net{network}\"\nchassis = \"c{}\"\nip = \"{ip}\"\n",
            chassis + 1
        ));
    }
    t
}

/// Waits until every chassis' agent says it is in sync; the chassis still behind after `guard`.
fn agents_in_sync(lab: &Lab, chassis: usize, guard: Duration) -> Vec<String> {
    let end = Instant::now() + guard;
    let mut behind: Vec<String> = (1..=chassis).map(|c| format!("c{c}")).collect();
    while !behind.is_empty() && Instant::now() < end {
        behind.retain(|c| lab.agent_metric(c, "wyvern_agent_in_sync") != Some(1.0));
        std::thread::sleep(Duration::from_millis(200));
    }
    behind
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    if p.chassis == 0 || p.networks == 0 || p.vms < 2 * p.networks.max(1) {
        bail!("need at least one chassis and two VMs per network");
    }
    if p.vms / p.networks + 2 > 1021 {
        bail!("at most 1 019 VMs per network (each network is a /22)");
    }
    let text = topology(&p);
    let topo = Topology::parse(&text, std::path::Path::new("lab-scale.toml"))
        .context("the generated topology")?;
    let opts = LabOptions {
        wyvern: p.wyvern.clone(),
        progress: false,
    };
    // A lab left by an interrupted run goes first.
    let _ = lab::down(NAME, false);
    progress(&format!(
        "lab up: {} chassis, {} VMs, {} networks",
        p.chassis, p.vms, p.networks
    ));
    let start = Instant::now();
    let lab = tokio::task::block_in_place(|| Lab::up(&topo, &opts))?;
    let up = start.elapsed();
    progress(&format!(
        "up in {:.1} s; waiting for the agents",
        up.as_secs_f64()
    ));
    let behind =
        tokio::task::block_in_place(|| agents_in_sync(&lab, p.chassis, Duration::from_secs(300)));
    if !behind.is_empty() {
        bail!("agents not in sync after 300 s: {behind:?}");
    }
    let in_sync = start.elapsed();
    // The last VM on the first VM's network (its chassis is among the last).
    let last = (0..p.vms)
        .rev()
        .find(|v| vm(&p, *v).2 == 0)
        .unwrap_or_default();
    let (from, (_, _, _, to_ip)) = (vm(&p, 0).0, vm(&p, last));
    let mut ping_ok = None;
    let ping_end = Instant::now() + Duration::from_secs(60);
    while ping_ok.is_none() && Instant::now() < ping_end {
        let out = tokio::task::block_in_place(|| {
            lab.exec(&from, &["ping", "-c", "1", "-W", "1", &to_ip])
        })?;
        if out.status.success() {
            ping_ok = Some(start.elapsed());
        }
    }
    let Some(ping_ok) = ping_ok else {
        bail!("{from} does not reach {to_ip} within 60 s of the agents being in sync");
    };
    progress(&format!(
        "in sync after {:.1} s, {from} -> {to_ip} after {:.1} s; idle for {} s",
        in_sync.as_secs_f64(),
        ping_ok.as_secs_f64(),
        p.idle_seconds
    ));
    let before = crate::cpu::snapshot();
    tokio::time::sleep(Duration::from_secs(p.idle_seconds)).await;
    let idle = crate::cpu::since(&before, p.chassis);
    progress("lab down");
    let start = Instant::now();
    tokio::task::block_in_place(|| lab.down())?;
    let down = start.elapsed();
    Ok(json!({
        "benchmark": "lab-scale",
        "chassis": p.chassis,
        "vms": p.vms,
        "networks": p.networks,
        "up_seconds": up.as_secs_f64(),
        "agents_in_sync_seconds": in_sync.as_secs_f64(),
        "first_to_last_ping_seconds": ping_ok.as_secs_f64(),
        "ping": {"from": from, "to": to_ip},
        "idle_cpu": idle,
        "down_seconds": down.as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_spread_over_chassis_and_networks_with_unique_addresses() {
        let p = Params {
            wyvern: PathBuf::new(),
            chassis: 100,
            vms: 2_000,
            networks: 2,
            idle_seconds: 0,
        };
        let topo = Topology::parse(&topology(&p), std::path::Path::new("t.toml")).unwrap();
        topo.validate().unwrap();
        assert_eq!(topo.chassis.len(), 100);
        assert_eq!(topo.vms.len(), 2_000);
        assert_eq!(topo.networks.len(), 2);
        let ips: std::collections::BTreeSet<_> = (0..p.vms).map(|v| vm(&p, v).3).collect();
        assert_eq!(ips.len(), p.vms);
        assert_eq!(vm(&p, 0).1, 0);
        assert_eq!(vm(&p, 199).1, 99);
    }
}
