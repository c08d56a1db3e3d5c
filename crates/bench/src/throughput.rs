//! `wyvern-bench throughput`: iperf3 TCP between two VMs on two chassis, through Wyvern's whole
//! pipeline with security groups, as a share of the same path with `actions=NORMAL`.
//!
//! A lab (server, two chassis with real userspace Open vSwitch and an agent each, Geneve) with one
//! network and VM `ta` on `c1`, VM `tb` on `c2`, both in group `bench` only: issue 11's 20 ingress
//! rules (TCP 8001-8020, remote group = itself) plus one for iperf3's port ([`IPERF_PORT`],
//! remote group = itself) and Neutron's egress rules. So every packet goes through the whole
//! pipeline: port security, egress conntrack and rules, L2, the tunnel, ingress conntrack and
//! rules on the other side. `tb` runs `iperf3 -s`, `ta` runs `iperf3 -c` `runs` times for
//! `seconds` each.
//!
//! The baseline is the same lab, same VMs, same switches afterwards: both agents are killed,
//! each `br-int` gets one more Geneve port with a fixed `remote_ip` (the other chassis; the
//! agent's tunnel port has `remote_ip=flow`, which `NORMAL` cannot use) and its flows are
//! replaced by one `actions=NORMAL`. The share is the pipeline's median over the baseline's.
//! The lab is removed at the end, also on errors and signals (the lab's `Drop`).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use lab::{Lab, LabOptions, Topology};
use serde_json::{Value, json};

use crate::median;
use crate::slice::BR_INT;

/// The port iperf3 listens on.
const IPERF_PORT: u16 = 5201;
const CHASSIS: [&str; 2] = ["c1", "c2"];
const FROM_VM: &str = "ta";
const TO_VM: &str = "tb";
/// The baseline's tunnel port (fixed remote).
const BASE_TUNNEL: &str = "tun-base";

pub struct Params {
    pub wyvern: PathBuf,
    pub runs: usize,
    pub seconds: u32,
}

fn progress(what: &str) {
    crate::progress("throughput", what);
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    crate::until_signal(bench(p)).await
}

fn topology(name: &str) -> anyhow::Result<Topology> {
    let mut rules: Vec<String> = (8001..=8020)
        .chain([IPERF_PORT])
        .map(|port| {
            format!(
                "  {{ direction = \"ingress\", protocol = \"tcp\", port_range_min = {port}, \
                 port_range_max = {port}, remote_group = \"bench\" }},"
            )
        })
        .collect();
    rules.insert(0, "rules = [".into());
    rules.push("]".into());
    let mut text = crate::geneve_lab(name, &CHASSIS);
    text.push_str(&format!(
        "[[network]]\nname = \"tp\"\n[[network.subnet]]\ncidr = \"10.77.0.0/24\"\n\
         [[security_group]]\nname = \"bench\"\n{}\n\
         [[vm]]\nname = \"{FROM_VM}\"\nnetwork = \"tp\"\nchassis = \"{}\"\nsecurity_groups = [\"bench\"]\n\
         [[vm]]\nname = \"{TO_VM}\"\nnetwork = \"tp\"\nchassis = \"{}\"\nsecurity_groups = [\"bench\"]\n",
        rules.join("\n"),
        CHASSIS[0],
        CHASSIS[1],
    ));
    Ok(Topology::parse(&text, "throughput-bench.toml".as_ref())?)
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    let wyvern = std::fs::canonicalize(&p.wyvern)
        .with_context(|| format!("the wyvern binary {}", p.wyvern.display()))?;
    let name = format!("tp-{}", std::process::id());
    let topo = topology(&name)?;
    let opts = LabOptions {
        wyvern: wyvern.clone(),
        progress: false,
    };
    progress(&format!("lab {name}: 2 chassis, vm {FROM_VM} → vm {TO_VM}"));
    let mut lab = tokio::task::block_in_place(|| Lab::up(&topo, &opts))?;
    let report = tokio::task::block_in_place(|| measure(&p, &mut lab));
    progress("tearing the lab down");
    tokio::task::block_in_place(|| lab.down())?;
    let mut report = report?;
    report["setup"]["wyvern"] = wyvern.display().to_string().into();
    Ok(report)
}

/// A process the bench started, killed (and reaped) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exec(lab: &Lab, host: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = lab.exec(host, args)?;
    if !out.status.success() {
        bail!(
            "{args:?} in {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One iperf3 run from VM `from` to `to_ip`:`port`: received Gbit/s and the sender's
/// retransmits.
pub(crate) fn iperf(
    lab: &Lab,
    from: &str,
    to_ip: &str,
    port: u16,
    seconds: u32,
) -> anyhow::Result<(f64, u64)> {
    let port = port.to_string();
    let t = seconds.to_string();
    let args = [
        "iperf3",
        "-c",
        to_ip,
        "-p",
        &port,
        "-t",
        &t,
        "-O",
        "1",
        "-J",
        "--connect-timeout",
        "1000",
    ];
    // iperf3 -J reports its errors in the JSON, with a failure status.
    let out = lab.exec(from, &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).context("iperf3's JSON")?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 gave no result: {}", v["error"]))?;
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok(((bps / 1e7).round() / 100.0, retransmits))
}

fn runs(lab: &Lab, p: &Params, to_ip: &str, what: &str) -> anyhow::Result<(Vec<f64>, Vec<u64>)> {
    let (mut gbps, mut retransmits) = (Vec::new(), Vec::new());
    for r in 0..p.runs {
        std::thread::sleep(Duration::from_millis(500));
        let (g, re) = iperf(lab, FROM_VM, to_ip, IPERF_PORT, p.seconds)?;
        progress(&format!(
            "{what} run {}: {g} Gbit/s, {re} retransmits",
            r + 1
        ));
        gbps.push(g);
        retransmits.push(re);
    }
    Ok((gbps, retransmits))
}

fn measure(p: &Params, lab: &mut Lab) -> anyhow::Result<Value> {
    let to_ip = lab
        .vm(TO_VM)
        .and_then(|vm| vm.addresses.first())
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| anyhow!("vm {TO_VM} has no address"))?
        .to_owned();
    // The iperf3 server, in tb's namespace (`ip netns exec` execs it: the child is iperf3).
    let mut cmd = lab::exec_command(lab.name(), TO_VM)?;
    cmd.args(["iperf3", "-s", "-p", &IPERF_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Spawned(cmd.spawn().context("starting iperf3 -s")?);
    // A one-second run until one works (the agents converged, the server listens; the group
    // admits no ICMP, so no ping).
    let t0 = Instant::now();
    while let Err(e) = iperf(lab, FROM_VM, &to_ip, IPERF_PORT, 1) {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("no iperf3 from {FROM_VM} to {TO_VM} ({to_ip}) after 60 s: {e:#}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A port no rule admits: the connection times out (filtered, not refused).
    let closed_port_filtered = iperf(lab, FROM_VM, &to_ip, IPERF_PORT + 1, 1)
        .err()
        .is_some_and(|e| format!("{e:#}").contains("timed out"));
    let mtu = exec(lab, FROM_VM, &["cat", "/sys/class/net/eth0/mtu"])
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    let flows: Vec<usize> = CHASSIS
        .iter()
        .map(|c| {
            lab.chassis(c)
                .and_then(|ch| ch.ovs_ofctl(&["dump-flows", BR_INT]).ok())
                .map_or(0, |t| t.lines().filter(|l| l.contains("cookie=")).count())
        })
        .collect();

    progress("through the pipeline");
    let (pipeline, pipeline_re) = runs(lab, p, &to_ip, "pipeline")?;
    // The connections went through conntrack (the security groups' zones) on the receiver.
    let tracked = lab
        .chassis(CHASSIS[1])
        .and_then(|ch| ch.ovs_appctl(&["dpctl/dump-conntrack"]).ok())
        .map_or(0, |t| {
            t.lines()
                .filter(|l| l.contains(&format!("dport={IPERF_PORT}")))
                .count()
        });

    progress("baseline: agents stopped, br-int flows replaced by actions=NORMAL");
    let local_ips: Vec<String> = CHASSIS
        .iter()
        .map(|c| {
            let ch = lab
                .chassis(c)
                .ok_or_else(|| anyhow!("chassis {c} is gone"))?;
            let ip = ch.ovs_vsctl(&["get", "Interface", "tun-geneve", "options:local_ip"])?;
            Ok(ip.trim().trim_matches('"').to_owned())
        })
        .collect::<anyhow::Result<_>>()?;
    for (i, c) in CHASSIS.iter().enumerate() {
        lab.kill_agent(c)?;
        let ch = lab
            .chassis(c)
            .ok_or_else(|| anyhow!("chassis {c} is gone"))?;
        let remote = format!("options:remote_ip={}", local_ips[1 - i]);
        let local = format!("options:local_ip={}", local_ips[i]);
        ch.ovs_vsctl(&[
            "add-port",
            BR_INT,
            BASE_TUNNEL,
            "--",
            "set",
            "Interface",
            BASE_TUNNEL,
            "type=geneve",
            &remote,
            &local,
        ])?;
        ch.ovs_ofctl(&["del-flows", BR_INT])?;
        ch.ovs_ofctl(&["add-flow", BR_INT, "actions=NORMAL"])?;
    }
    let t0 = Instant::now();
    while !lab
        .exec(FROM_VM, &["ping", "-c", "1", "-W", "1", &to_ip])
        .is_ok_and(|o| o.status.success())
    {
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("no ping from {FROM_VM} to {TO_VM} with actions=NORMAL");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (normal, normal_re) = runs(lab, p, &to_ip, "NORMAL")?;
    let (mp, mn) = (median(&pipeline), median(&normal));
    let share = if mn > 0.0 {
        (mp / mn * 1000.0).round() / 10.0
    } else {
        0.0
    };
    Ok(json!({
        "benchmark": "throughput",
        "setup": {
            "chassis": CHASSIS.len(), "encap": "geneve", "datapath": "userspace (netdev)",
            "vms": [format!("{FROM_VM} on {}", CHASSIS[0]), format!("{TO_VM} on {}", CHASSIS[1])],
            "vm_mtu": mtu,
            "security_group": format!("bench: TCP 8001-8020 and {IPERF_PORT}, each remote group = itself, plus Neutron's egress rules; both VMs members"),
            "runs": p.runs, "seconds_per_run": p.seconds,
            "iperf3": format!("-c {to_ip} -p {IPERF_PORT} -t {} -O 1 (one TCP stream)", p.seconds),
            "baseline": "agents killed, each br-int: one more Geneve port with a fixed remote_ip, flows replaced by actions=NORMAL",
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "pipeline": {
            "flows_per_chassis": flows, "gbit_s": pipeline, "median_gbit_s": mp,
            "retransmits": pipeline_re, "iperf_connections_in_conntrack_of_receiver": tracked,
            "port_without_rule_times_out": closed_port_filtered,
        },
        "normal": {"gbit_s": normal, "median_gbit_s": mn, "retransmits": normal_re},
        "targets": {
            "pipeline_share_of_normal_percent": {
                "target": 80.0, "measured": share, "met": share >= 80.0,
            },
        },
    }))
}
