//! `wyvern-bench sfc`: issue 14's service function chaining, on a lab.
//!
//! A lab (server, 3 chassis with real userspace Open vSwitch and an agent each, Geneve) with one
//! network [`NETWORK`] (subnet [`CIDR`]), `sources` classifier source VMs `s0`.. spread round
//! robin over the chassis, VMs [`FROM_VM`] and [`TO_VM`] on `c1`, and two service-function VMs
//! (`sf = {}`: two ports without port security, a Linux bridge between them) [`SF1`] on `c2` and
//! [`SF2`] on `c3`, in the lab's port chain [`TP_CHAIN`] (hops [`SF1`], then [`SF2`]) with one
//! classifier: [`FROM_VM`]'s TCP to [`TO_VM`]'s port [`CHAINED_PORT`].
//!
//! 1. *Bulk*: first (untimed) the service functions' ports: per port pair two plain ports made
//!    through the API on the network, on one device (`device_id` equal), port security off,
//!    `binding:host_id` a chassis (pairs round robin over the chassis), each plugged into that
//!    chassis' `br-int` as an OVS internal port (as os-vif plugs a VM's tap), so the pairs' ports
//!    are where their bindings say. Then, timed, through networking-sfc's API
//!    (`/v2.0/sfc/...`), `concurrency` chains at a time (each one's requests in order): per
//!    chain `pairs` port pairs per group, `groups` port pair groups, one flow classifier (TCP
//!    to destination port 10000 + i from source VM `s(i mod sources)`; networking-sfc refuses
//!    overlapping classifiers) and the chain. From the last write's answer every chassis is
//!    polled until it holds all of it: its agent `in_sync` with installed == desired flows, and
//!    its switch with one more `select` group per hop of every chain, each with one bucket per
//!    pair (`ovs-ofctl dump-groups`). Reported: seconds from the last answer until each chassis
//!    and all were complete, flows and groups per chassis (and flows expected from where the
//!    classifiers' sources and the pairs' ports are), agent RSS and CPU.
//! 2. *Throughput* (measured first, before the bulk's ports are on the switches): iperf3 (one TCP stream) from [`FROM_VM`] to [`TO_VM`]: to port
//!    [`CHAINED_PORT`] through the chain (c1 → [`SF1`] on c2 → [`SF2`] on c3 → back to c1),
//!    against port [`DIRECT_PORT`] (no classifier: a to b directly, on c1), `runs` runs each,
//!    alternating; medians and the ratio. The service functions' TX counters show the chained
//!    runs went through both.
//!
//! The lab is removed at the end, also on errors and signals (the lab's `Drop`).

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use lab::{Lab, LabOptions, Topology};
use ovsdb::{Client, ClientOptions, Endpoint};
use serde_json::{Value, json};

use crate::lb::{
    Groups, Node, added_by_table, flows_by_table, groups, nodes, secs, settle, usage, vm_ip,
};
use crate::{median, percentile, post};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const NETWORK: &str = "sfcnet";
const CIDR: &str = "10.90.0.0/16";
const FROM_VM: &str = "a";
const TO_VM: &str = "b";
const SF1: &str = "f1";
const SF2: &str = "f2";
/// The lab's chain for phase 2.
const TP_CHAIN: &str = "tp";
/// iperf3's port through the chain.
const CHAINED_PORT: u16 = 5201;
/// iperf3's port without it.
const DIRECT_PORT: u16 = 5202;
/// The bulk's first classifier destination port (then 10001, ...).
const FIRST_CLASSIFIED_PORT: u16 = 10000;
/// Port creations (each followed by its plug) in flight at once while setting the bulk up.
const PORT_CONCURRENCY: usize = 16;
/// Longest wait for the bulk to be on every chassis.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);

pub struct Params {
    pub wyvern: PathBuf,
    pub chains: usize,
    /// Port pair groups (hops) per chain.
    pub groups: usize,
    /// Port pairs per group.
    pub pairs: usize,
    /// Classifier source VMs.
    pub sources: usize,
    /// Chains made at once (each one's requests in order).
    pub concurrency: usize,
    pub runs: usize,
    pub seconds: u32,
}

fn progress(what: &str) {
    crate::progress("sfc", what);
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    if p.groups == 0 || p.groups > 15 || p.pairs == 0 || p.pairs > 8 {
        bail!("--groups must be 1..=15 and --pairs 1..=8 (the chaining label's limits)");
    }
    if p.sources == 0 {
        bail!("--sources must be at least 1");
    }
    if p.chains > usize::from(u16::MAX - FIRST_CLASSIFIED_PORT) || p.chains > 2000 {
        bail!("--chains must be at most 2000");
    }
    crate::until_signal(bench(p)).await
}

fn source_vm(j: usize) -> String {
    format!("s{j}")
}

fn topology(name: &str, p: &Params) -> anyhow::Result<Topology> {
    let mut text = crate::geneve_lab(name, &CHASSIS);
    text.push_str(&format!(
        "[[network]]\nname = \"{NETWORK}\"\n[[network.subnet]]\ncidr = \"{CIDR}\"\n"
    ));
    let vm = |name: &str, chassis: &str, extra: &str| {
        format!(
            "[[vm]]\nname = \"{name}\"\nnetwork = \"{NETWORK}\"\nchassis = \"{chassis}\"\n{extra}"
        )
    };
    for j in 0..p.sources {
        text.push_str(&vm(&source_vm(j), CHASSIS[j % CHASSIS.len()], ""));
    }
    text.push_str(&vm(FROM_VM, CHASSIS[0], ""));
    text.push_str(&vm(TO_VM, CHASSIS[0], ""));
    text.push_str(&vm(SF1, CHASSIS[1], "sf = {}\n"));
    text.push_str(&vm(SF2, CHASSIS[2], "sf = {}\n"));
    text.push_str(&format!(
        "[[port_chain]]\nname = \"{TP_CHAIN}\"\ngroups = [[\"{SF1}\"], [\"{SF2}\"]]\n\
         classifiers = [{{ source_vm = \"{FROM_VM}\", destination_vm = \"{TO_VM}\", \
         protocol = \"tcp\", destination_port = {CHAINED_PORT} }}]\n"
    ));
    Ok(Topology::parse(&text, "sfc-bench.toml".as_ref())?)
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    let wyvern = std::fs::canonicalize(&p.wyvern)
        .with_context(|| format!("the wyvern binary {}", p.wyvern.display()))?;
    let name = format!("sfc-{}", std::process::id());
    let topo = topology(&name, &p)?;
    let opts = LabOptions {
        wyvern: wyvern.clone(),
        progress: false,
    };
    progress(&format!(
        "lab {name}: {} chassis, {} source VMs, {FROM_VM} and {TO_VM} on {}, {SF1} on {}, {SF2} on {}",
        CHASSIS.len(),
        p.sources,
        CHASSIS[0],
        CHASSIS[1],
        CHASSIS[2]
    ));
    let t = Instant::now();
    let lab = tokio::task::block_in_place(|| Lab::up(&topo, &opts))?;
    let lab_up = t.elapsed();
    let report = measure(&p, &lab).await;
    progress("tearing the lab down");
    tokio::task::block_in_place(|| lab.down())?;
    let mut report = report?;
    report["setup"]["wyvern"] = wyvern.display().to_string().into();
    report["setup"]["lab_up_seconds"] = secs(lab_up).into();
    Ok(report)
}

struct Api {
    client: reqwest::Client,
    base: String,
    network: String,
}

impl Api {
    /// Creates `body` as `{kind: body}` at `/v2.0/<path>`; returns the answer's object.
    async fn create(&self, path: &str, kind: &str, body: Value) -> anyhow::Result<Value> {
        let url = format!("{}/v2.0/{path}", self.base);
        let mut v = post(&self.client, &url, json!({ kind: body })).await?;
        let obj = v[kind].take();
        if obj["id"].as_str().is_none() {
            bail!("POST {url}: no id in {obj}");
        }
        Ok(obj)
    }

    async fn create_id(&self, path: &str, kind: &str, body: Value) -> anyhow::Result<String> {
        let obj = self.create(path, kind, body).await?;
        Ok(obj["id"].as_str().unwrap_or_default().to_owned())
    }
}

/// A service function's port made by the bench: id and MAC.
struct MadePort {
    id: String,
    mac: String,
}

/// Plugs `port` into `br-int` as an OVS internal port with its `iface-id` (as os-vif does).
async fn plug(db: &Client, port: &MadePort) -> anyhow::Result<()> {
    let ifname = format!("tap{}", port.id.chars().take(11).collect::<String>());
    let ids = [
        ("iface-id", port.id.as_str()),
        ("iface-status", "active"),
        ("attached-mac", port.mac.as_str()),
    ];
    let r = db
        .transact("Open_vSwitch", &crate::port_add::plug_ops(&ifname, &ids))
        .await?;
    if r.get(2).and_then(|r| r.count) != Some(1) {
        bail!("plugging {ifname}: no bridge br-int");
    }
    Ok(())
}

/// Waits until every agent is in sync with installed == desired flows and its desired flows
/// stayed the same for a second (the plugged ports seen and their flows installed).
async fn quiet(http: &reqwest::Client, nodes: &[Node]) -> anyhow::Result<Vec<crate::lb::Agent>> {
    let t0 = Instant::now();
    let mut last = settle(http, nodes).await?;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = settle(http, nodes).await?;
        if now.iter().zip(&last).all(|(a, b)| a.desired == b.desired) {
            return Ok(now);
        }
        if t0.elapsed() > CONVERGE_TIMEOUT {
            bail!("the agents' flows do not settle after the ports were plugged: {now:?}");
        }
        last = now;
    }
}

/// The chassis of pair `k` (over all chains, in order).
fn pair_chassis(k: usize) -> usize {
    k % CHASSIS.len()
}

async fn measure(p: &Params, lab: &Lab) -> anyhow::Result<Value> {
    let network = lab
        .state()
        .networks
        .get(NETWORK)
        .map(|n| n.id.clone())
        .ok_or_else(|| anyhow!("the lab made no network {NETWORK}"))?;
    let api = Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(PORT_CONCURRENCY.max(p.concurrency))
            .build()?,
        base: lab.server_url(),
        network,
    };
    let nodes = nodes(lab)?;
    let http = reqwest::Client::new();
    settle(&http, &nodes).await?;
    // Throughput first: the bulk's ports (internal ports, hundreds per switch) would be on the
    // switches otherwise.
    let throughput = tokio::task::block_in_place(|| throughput(p, lab))?;
    let bulk = bulk(p, lab, &api, &http, &nodes).await?;
    Ok(json!({
        "benchmark": "sfc",
        "setup": {
            "chassis": CHASSIS.len(), "encap": "geneve", "datapath": "userspace (netdev)",
            "network": {"name": NETWORK, "cidr": CIDR},
            "source_vms": p.sources,
            "chains": p.chains, "groups_per_chain": p.groups, "pairs_per_group": p.pairs,
            "api_concurrency": p.concurrency,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "bulk": bulk,
        "throughput": throughput,
    }))
}

/// Phase 1 (see the module's documentation).
async fn bulk(
    p: &Params,
    lab: &Lab,
    api: &Api,
    http: &reqwest::Client,
    nodes: &[Node],
) -> anyhow::Result<Value> {
    let sources: Vec<String> = (0..p.sources)
        .map(|j| {
            lab.port_id(&source_vm(j))
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("vm {} has no port", source_vm(j)))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut dbs = Vec::new();
    for c in CHASSIS {
        let ch = lab
            .chassis(c)
            .ok_or_else(|| anyhow!("chassis {c} is not running"))?;
        dbs.push(
            Client::connect(&Endpoint::Unix(ch.db_socket()), ClientOptions::default())
                .await
                .with_context(|| format!("OVSDB of {c}"))?,
        );
    }

    // The pairs' ports, made and plugged (not timed).
    let per_chain = p.groups * p.pairs;
    let total_pairs = p.chains * per_chain;
    progress(&format!(
        "setup: {} ports for {total_pairs} port pairs, bound and plugged round robin",
        total_pairs * 2
    ));
    let t = Instant::now();
    let dbs_ref = &dbs;
    let one_pair = |k: usize| async move {
        let c = pair_chassis(k);
        let device = format!("sfc-bench-pair-{k}");
        let mut made = Vec::new();
        for side in ["in", "out"] {
            let body = json!({
                "network_id": api.network, "name": format!("pp{k}-{side}"),
                "device_id": device, "device_owner": "compute:sfc-bench",
                "binding:host_id": CHASSIS[c], "port_security_enabled": false,
            });
            let port = api.create("ports", "port", body).await?;
            let port = MadePort {
                id: port["id"].as_str().unwrap_or_default().to_owned(),
                mac: port["mac_address"].as_str().unwrap_or_default().to_owned(),
            };
            plug(&dbs_ref[c], &port).await?;
            made.push(port.id);
        }
        anyhow::Ok((k, made))
    };
    let mut ports: Vec<(String, String)> = vec![Default::default(); total_pairs];
    let mut made = futures::stream::iter(0..total_pairs)
        .map(one_pair)
        .buffer_unordered(PORT_CONCURRENCY);
    while let Some(r) = made.next().await {
        let (k, mut pp) = r?;
        let egress = pp.pop().unwrap_or_default();
        let ingress = pp.pop().unwrap_or_default();
        ports[k] = (ingress, egress);
    }
    drop(made);
    let ports_setup = t.elapsed();
    let settled = quiet(http, nodes).await?;
    progress(&format!(
        "setup done in {:.1} s; agents in sync ({:?} flows)",
        ports_setup.as_secs_f64(),
        settled.iter().map(|a| a.installed).collect::<Vec<_>>()
    ));

    let mut before = Vec::new();
    for n in nodes {
        let (rss, cpu) = usage(n.agent_pid);
        before.push((
            n.agent(http).await?,
            flows_by_table(&n.rundir).await?,
            groups(&n.rundir).await?,
            rss,
            cpu,
        ));
    }
    let requests = p.chains * (per_chain + p.groups + 2);
    progress(&format!(
        "bulk: {} chains × {} groups × {} pairs ({requests} requests, {} chains at a time)",
        p.chains, p.groups, p.pairs, p.concurrency
    ));
    let ports = &ports;
    let sources = &sources;
    let one_chain = |i: usize| async move {
        let mut latencies = Vec::new();
        let mut groups = Vec::new();
        for g in 0..p.groups {
            let mut pairs = Vec::new();
            for j in 0..p.pairs {
                let k = i * per_chain + g * p.pairs + j;
                let (ingress, egress) = &ports[k];
                let body = json!({"name": format!("pp{k}"), "ingress": ingress, "egress": egress});
                let t = Instant::now();
                pairs.push(api.create_id("sfc/port_pairs", "port_pair", body).await?);
                latencies.push(t.elapsed());
            }
            let body = json!({"name": format!("ch{i}-g{g}"), "port_pairs": pairs});
            let t = Instant::now();
            groups.push(
                api.create_id("sfc/port_pair_groups", "port_pair_group", body)
                    .await?,
            );
            latencies.push(t.elapsed());
        }
        let port = FIRST_CLASSIFIED_PORT + i as u16;
        let body = json!({
            "name": format!("ch{i}-fc"), "ethertype": "IPv4", "protocol": "tcp",
            "destination_port_range_min": port, "destination_port_range_max": port,
            "logical_source_port": sources[i % sources.len()],
        });
        let t = Instant::now();
        let fc = api
            .create_id("sfc/flow_classifiers", "flow_classifier", body)
            .await?;
        latencies.push(t.elapsed());
        let body =
            json!({"name": format!("ch{i}"), "port_pair_groups": groups, "flow_classifiers": [fc]});
        let t = Instant::now();
        api.create_id("sfc/port_chains", "port_chain", body).await?;
        latencies.push(t.elapsed());
        anyhow::Ok((latencies, Instant::now()))
    };
    let (mut latencies, last, writes) =
        crate::lb::write_bulk(p.chains, p.concurrency, requests, one_chain).await?;

    // Every chassis until it holds all of it, each polled on its own.
    let want_groups = p.chains * p.groups;
    let want_buckets = want_groups * p.pairs;
    let base: Vec<Groups> = before.iter().map(|b| b.2).collect();
    let (done, converged) =
        crate::lb::converge(nodes, base, http, last, want_groups, want_buckets).await?;

    let mut per_chassis = Vec::new();
    for (c, ((n, (a0, f0_tables, g0, rss0, cpu0)), (at, polls))) in
        nodes.iter().zip(&before).zip(&done).enumerate()
    {
        let a = n.agent(http).await?;
        let tables = flows_by_table(&n.rundir).await?;
        let flows: usize = tables.values().sum();
        let f0: usize = f0_tables.values().sum();
        let g = groups(&n.rundir).await?;
        let (rss, cpu) = usage(n.agent_pid);
        // One classifier flow where its source is, one arrival flow per pair's ingress and
        // one flow per pair's egress here.
        let classifiers_here = (0..p.chains)
            .filter(|i| (i % p.sources) % CHASSIS.len() == c)
            .count();
        let pairs_here = (0..total_pairs).filter(|k| pair_chassis(*k) == c).count();
        per_chassis.push(json!({
            "chassis": n.name,
            "complete_after_last_write_s": secs(at.saturating_duration_since(last)),
            "polls": polls,
            "flows_before": f0, "flows_after": flows,
            "flows_added": flows.saturating_sub(f0),
            "flows_expected": classifiers_here + 2 * pairs_here,
            "classifiers_here": classifiers_here, "pairs_here": pairs_here,
            "agent_flows_desired_before": a0.desired, "agent_flows_desired_after": a.desired,
            "flows_added_by_table": added_by_table(f0_tables, &tables),
            "groups_before": g0.json(), "groups_after": g.json(),
            "agent_rss_mib_before": rss0, "agent_rss_mib_after": rss,
            "agent_cpu_s_for_bulk": cpu.zip(*cpu0).map(|(a, b)| ((a - b) * 100.0).round() / 100.0),
        }));
    }
    latencies.sort();
    Ok(json!({
        "chains": p.chains,
        "port_pair_groups": want_groups,
        "port_pairs": total_pairs,
        "flow_classifiers": p.chains,
        "ports_setup_s": secs(ports_setup),
        "api_requests": latencies.len(),
        "api_seconds": secs(writes),
        "api_requests_per_s": (latencies.len() as f64 / writes.as_secs_f64().max(1e-9)).round(),
        "api_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "all_chassis_complete_after_last_write_s": secs(converged),
        "all_chassis_complete_after_first_write_s": secs(writes + converged),
        "note": "the pairs' ports made, bound and plugged before (not timed); complete: the agent in sync with installed == desired flows, and its switch with one more select group per hop of every chain and one more bucket per pair (ovs-ofctl dump-groups: every chassis holds every chain's groups); each chassis polled every 10 ms from the last write's answer (a poll: the agent's metrics, then dump-groups, then the metrics again), so the times are upper bounds by one poll; with --concurrency 1 the chains are written one after the other, so the earlier ones are installed while the later ones are written",
        "per_chassis": per_chassis,
    }))
}

/// A process the bench started, killed (and reaped) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Frames service function `vm` passed on from its ingress to its egress (its `eth1`'s TX).
fn passed(lab: &Lab, vm: &str) -> anyhow::Result<u64> {
    let out = lab.exec(vm, &["cat", "/sys/class/net/eth1/statistics/tx_packets"])?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("{vm}'s eth1 counters"))
}

/// Phase 2 (see the module's documentation).
fn throughput(p: &Params, lab: &Lab) -> anyhow::Result<Value> {
    let to_ip = vm_ip(lab, TO_VM)?.to_string();
    let mut servers = Vec::new();
    for port in [CHAINED_PORT, DIRECT_PORT] {
        let mut cmd = lab::exec_command(lab.name(), TO_VM)?;
        cmd.args(["iperf3", "-s", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        servers.push(Spawned(cmd.spawn().context("starting iperf3 -s")?));
    }
    // A one-second run on each port until one works.
    for port in [CHAINED_PORT, DIRECT_PORT] {
        let t0 = Instant::now();
        while let Err(e) = crate::throughput::iperf(lab, FROM_VM, &to_ip, port, 1) {
            if t0.elapsed() > Duration::from_secs(60) {
                bail!("no iperf3 from {FROM_VM} to {TO_VM} ({to_ip}:{port}) after 60 s: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    progress(&format!(
        "throughput {FROM_VM} → {TO_VM}: port {CHAINED_PORT} through {SF1} and {SF2}, port {DIRECT_PORT} directly, {} runs of {} s each",
        p.runs, p.seconds
    ));
    let (mut chained, mut direct) = (Vec::new(), Vec::new());
    let (mut chained_re, mut direct_re) = (Vec::new(), Vec::new());
    let mut through = Vec::new();
    for r in 0..p.runs {
        std::thread::sleep(Duration::from_millis(500));
        let f0 = (passed(lab, SF1)?, passed(lab, SF2)?);
        let (g, re) = crate::throughput::iperf(lab, FROM_VM, &to_ip, CHAINED_PORT, p.seconds)?;
        let f1 = (passed(lab, SF1)?, passed(lab, SF2)?);
        through.push(json!({SF1: f1.0 - f0.0, SF2: f1.1 - f0.1}));
        progress(&format!(
            "chained run {}: {g} Gbit/s, {re} retransmits, frames passed: {SF1} {}, {SF2} {}",
            r + 1,
            f1.0 - f0.0,
            f1.1 - f0.1
        ));
        chained.push(g);
        chained_re.push(re);
        std::thread::sleep(Duration::from_millis(500));
        let d0 = (passed(lab, SF1)?, passed(lab, SF2)?);
        let (g, re) = crate::throughput::iperf(lab, FROM_VM, &to_ip, DIRECT_PORT, p.seconds)?;
        let d1 = (passed(lab, SF1)?, passed(lab, SF2)?);
        progress(&format!(
            "direct run {}: {g} Gbit/s, {re} retransmits, frames passed: {SF1} {}, {SF2} {}",
            r + 1,
            d1.0 - d0.0,
            d1.1 - d0.1
        ));
        direct.push(g);
        direct_re.push(re);
    }
    drop(servers);
    let (mc, md) = (median(&chained), median(&direct));
    let ratio = if md > 0.0 {
        (mc / md * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    Ok(json!({
        "from": format!("{FROM_VM} on {}", CHASSIS[0]),
        "to": format!("{TO_VM} {to_ip} on {}", CHASSIS[0]),
        "chain": format!("{TP_CHAIN}: {SF1} on {} (SF-unaware, a Linux bridge), then {SF2} on {}; classifier TCP to port {CHAINED_PORT}", CHASSIS[1], CHASSIS[2]),
        "iperf3": format!("-c {to_ip} -p PORT -t {} -O 1 (one TCP stream), chained and direct runs alternating", p.seconds),
        "runs": p.runs, "seconds_per_run": p.seconds,
        "chained": {"port": CHAINED_PORT, "gbit_s": chained, "median_gbit_s": mc, "retransmits": chained_re, "frames_passed_by_functions": through},
        "direct": {"port": DIRECT_PORT, "gbit_s": direct, "median_gbit_s": md, "retransmits": direct_re},
        "chained_over_direct": ratio,
    }))
}
