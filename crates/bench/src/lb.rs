//! `wyvern-bench lb`: issue 13's distributed load balancing, on a lab.
//!
//! A lab (server, 3 chassis with real userspace Open vSwitch and an agent each, Geneve) with one
//! network [`NETWORK`] (subnet [`CIDR`]), `vms` member VMs `m0`.. spread round robin over the
//! chassis, the client VM [`CLIENT`] on `c1` and two server VMs on `c2`: [`MEMBER_VM`] (a member
//! of the load balancers of phases 2 and 3) and [`DIRECT_VM`] (reached directly in phase 3).
//! Everything is made in the admin project, the VMs in its `default` group (which lets in what
//! comes from the group: the client's connections, also through a VIP, which keeps the source).
//!
//! 1. *Bulk*: through the Octavia v2 API (`/v2.0/lbaas/...`), `concurrency` load balancers at a
//!    time (each one's requests in order): `load_balancers` load balancers with their VIP on the
//!    subnet (address allocated by the server), each with `listeners` TCP listeners (ports 80..),
//!    each with its own `ROUND_ROBIN` pool of `members` members (VMs `m(i+k) mod vms`, port
//!    [`MEMBER_PORT`]). Then, from the last write's answer, every chassis is polled until it
//!    holds all of it: its agent `in_sync` with installed == desired flows, and its switch with
//!    one `select` group per listener holding one bucket per member (`ovs-ofctl dump-groups`).
//!    Reported: seconds from the last answer until each chassis and all were complete, flows
//!    (before and after, per listener), groups and buckets per chassis, agent RSS and CPU.
//! 2. *Member added → used*: load balancer `probe` with one TCP listener (port [`PROBE_PORT`])
//!    whose pool is empty; [`MEMBER_VM`] runs a server (one byte, then its close) on
//!    [`connections::PORT`]. Per sample the bench, inside [`CLIENT`]'s namespace, starts a TCP
//!    connection to VIP:port every [`PROBE_EVERY`] (each with its own source port), the first
//!    ones refused (an empty pool answers with a reset), adds [`MEMBER_VM`] as the pool's member
//!    and takes the time from the create's answer (and from its start) to the first connection
//!    that got the member's byte; then deletes the member and times until a connection is
//!    refused again.
//! 3. *New connections per second* ([`connections::compare`]): from [`CLIENT`] (`c1`) through a
//!    VIP to [`MEMBER_VM`] (`c2`) against directly to [`DIRECT_VM`] (`c2`): the same path but for
//!    the load balancer. Load balancer `rate` has one TCP listener per server port (5300..), each
//!    with a one-member pool ([`MEMBER_VM`], the same port). The target: ≥ 70 % of the direct
//!    rate.
//!
//! The lab is removed at the end, also on errors and signals (the lab's `Drop`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lab::{Lab, LabOptions, Topology};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::slice::connections::{self, Target};
use crate::slice::{BR_INT, proc_usage, stats_json};
use crate::{percentile, post};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const NETWORK: &str = "lbnet";
const SUBNET: &str = "lbnet-v4";
const CIDR: &str = "10.80.0.0/16";
/// The client of phases 2 and 3 (on `c1`).
const CLIENT: &str = "lc";
/// The member of phases 2 and 3 (on `c2`).
const MEMBER_VM: &str = "ra";
/// The server reached directly in phase 3 (on `c2`).
const DIRECT_VM: &str = "rb";
/// The bulk's first listener port (then 81, 82, ...).
const FIRST_LISTENER_PORT: u16 = 80;
/// The bulk members' port (nothing listens there: the bulk is about the control plane).
const MEMBER_PORT: u16 = 8080;
/// The listener port of phase 2's load balancer.
const PROBE_PORT: u16 = 80;
/// How often phase 2's client starts a connection.
const PROBE_EVERY: Duration = Duration::from_millis(1);
/// The pause before each of phase 2's samples: the agent resets at most 100 connections per
/// client port and second (a fixed one-second window), and a sample takes some ten resets; so
/// the samples stay well below that and no reset is held back.
const SAMPLE_GAP: Duration = Duration::from_millis(250);
/// Longest wait for one connection (phase 2).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for one step of phases 2 and 3.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the bulk to be on every chassis.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the chassis are polled while waiting for the bulk.
const POLL_EVERY: Duration = Duration::from_millis(10);

pub struct Params {
    pub wyvern: PathBuf,
    pub load_balancers: usize,
    pub listeners: usize,
    pub members: usize,
    /// Member VMs of the bulk (spread over the chassis).
    pub vms: usize,
    /// Load balancers made at once (each one's requests in order).
    pub concurrency: usize,
    /// Phase 2's samples.
    pub samples: usize,
    pub connections: connections::Options,
}

fn progress(what: &str) {
    crate::progress("lb", what);
}

pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    if p.members > p.vms {
        bail!(
            "--members {} needs as many member VMs (--vms {})",
            p.members,
            p.vms
        );
    }
    if p.listeners == 0 || p.members == 0 {
        bail!("--listeners and --members must be at least 1");
    }
    crate::until_signal(bench(p)).await
}

fn vm_name(j: usize) -> String {
    format!("m{j}")
}

fn topology(name: &str, p: &Params) -> anyhow::Result<Topology> {
    let mut text = crate::geneve_lab(name, &CHASSIS);
    text.push_str(&format!(
        "[[network]]\nname = \"{NETWORK}\"\n[[network.subnet]]\nname = \"{SUBNET}\"\ncidr = \"{CIDR}\"\n"
    ));
    let vm = |name: &str, chassis: &str| {
        format!("[[vm]]\nname = \"{name}\"\nnetwork = \"{NETWORK}\"\nchassis = \"{chassis}\"\n")
    };
    for j in 0..p.vms {
        text.push_str(&vm(&vm_name(j), CHASSIS[j % CHASSIS.len()]));
    }
    text.push_str(&vm(CLIENT, CHASSIS[0]));
    text.push_str(&vm(MEMBER_VM, CHASSIS[1]));
    text.push_str(&vm(DIRECT_VM, CHASSIS[1]));
    Ok(Topology::parse(&text, "lb-bench.toml".as_ref())?)
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    let wyvern = std::fs::canonicalize(&p.wyvern)
        .with_context(|| format!("the wyvern binary {}", p.wyvern.display()))?;
    let name = format!("lb-{}", std::process::id());
    let topo = topology(&name, &p)?;
    let opts = LabOptions {
        wyvern: wyvern.clone(),
        progress: false,
    };
    progress(&format!(
        "lab {name}: {} chassis, {} member VMs, {CLIENT} on {}, {MEMBER_VM} and {DIRECT_VM} on {}",
        CHASSIS.len(),
        p.vms,
        CHASSIS[0],
        CHASSIS[1]
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

/// The first IPv4 address of VM `vm`.
pub(crate) fn vm_ip(lab: &Lab, vm: &str) -> anyhow::Result<IpAddr> {
    lab.vm(vm)
        .and_then(|v| v.addresses.first())
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| anyhow!("vm {vm} has no address"))?
        .parse()
        .with_context(|| format!("vm {vm}'s address"))
}

/// The network namespace of lab host `host`.
pub(crate) fn netns(lab: &Lab, host: &str) -> String {
    lab::names::host_netns(lab.name(), host)
}

/// The API's answers about the objects the bench makes.
struct Api {
    client: reqwest::Client,
    base: String,
    subnet: String,
}

impl Api {
    /// Creates `body` (`{kind: {...}}`) at `/v2.0/lbaas/<path>`; returns its id.
    async fn create(&self, path: &str, kind: &str, body: Value) -> anyhow::Result<String> {
        let url = format!("{}/v2.0/lbaas/{path}", self.base);
        let v = post(&self.client, &url, json!({ kind: body })).await?;
        v[kind]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("POST {url}: no id in {v}"))
    }

    async fn delete(&self, path: &str) -> anyhow::Result<()> {
        let url = format!("{}/v2.0/lbaas/{path}", self.base);
        let resp = self.client.delete(&url).send().await?;
        if !resp.status().is_success() {
            bail!("DELETE {url}: {}", resp.status());
        }
        Ok(())
    }

    /// A load balancer on the bench's subnet; its id and VIP address.
    async fn load_balancer(&self, name: &str) -> anyhow::Result<(String, IpAddr)> {
        let url = format!("{}/v2.0/lbaas/loadbalancers", self.base);
        let body = json!({"loadbalancer": {"name": name, "vip_subnet_id": self.subnet}});
        let v = post(&self.client, &url, body).await?;
        let lb = &v["loadbalancer"];
        let id = lb["id"].as_str().context("load balancer id")?.to_owned();
        let vip = lb["vip_address"]
            .as_str()
            .context("load balancer VIP")?
            .parse()?;
        Ok((id, vip))
    }

    /// A TCP listener on `port` of load balancer `lb`; its id.
    async fn listener(&self, lb: &str, name: &str, port: u16) -> anyhow::Result<String> {
        let body =
            json!({"name": name, "loadbalancer_id": lb, "protocol": "TCP", "protocol_port": port});
        self.create("listeners", "listener", body).await
    }

    /// The (default) `ROUND_ROBIN` pool of listener `listener`; its id.
    async fn pool(&self, listener: &str, name: &str) -> anyhow::Result<String> {
        let body = json!({"name": name, "listener_id": listener, "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"});
        self.create("pools", "pool", body).await
    }

    /// A member `address:port` of pool `pool`; its id.
    async fn member(&self, pool: &str, address: IpAddr, port: u16) -> anyhow::Result<String> {
        let body = json!({"address": address.to_string(), "protocol_port": port, "subnet_id": self.subnet});
        self.create(&format!("pools/{pool}/members"), "member", body)
            .await
    }
}

/// The group id of listener `id`: the first 32 bits of its UUID.
pub(crate) fn group_id(listener: &str) -> Option<u32> {
    u32::from_str_radix(listener.get(..8)?, 16).ok()
}

/// What a chassis' agent says about itself.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Agent {
    pub(crate) desired: u64,
    pub(crate) installed: u64,
    pub(crate) in_sync: bool,
}

impl Agent {
    fn parse(text: &str) -> Agent {
        let mut a = Agent::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<u64>() else {
                continue;
            };
            match name.split('{').next().unwrap_or_default() {
                "wyvern_agent_flows_desired" => a.desired = v,
                "wyvern_agent_flows_installed" => a.installed = v,
                "wyvern_agent_in_sync" => a.in_sync = v == 1,
                _ => {}
            }
        }
        a
    }

    pub(crate) fn settled(&self) -> bool {
        self.in_sync && self.installed == self.desired
    }
}

/// One chassis as the bench polls it.
#[derive(Clone)]
pub(crate) struct Node {
    pub(crate) name: String,
    metrics: String,
    pub(crate) rundir: PathBuf,
    pub(crate) agent_pid: Option<u32>,
    vswitchd_pid: Option<u32>,
}

impl Node {
    pub(crate) async fn agent(&self, http: &reqwest::Client) -> anyhow::Result<Agent> {
        let text = http.get(&self.metrics).send().await?.text().await?;
        Ok(Agent::parse(&text))
    }
}

pub(crate) fn nodes(lab: &Lab) -> anyhow::Result<Vec<Node>> {
    CHASSIS
        .iter()
        .map(|c| {
            let ch = lab
                .chassis(c)
                .ok_or_else(|| anyhow!("no chassis {c} in the lab"))?;
            Ok(Node {
                name: (*c).to_owned(),
                metrics: lab
                    .agent_metrics_url(c)
                    .ok_or_else(|| anyhow!("no agent metrics on {c}"))?,
                rundir: ch.rundir().to_owned(),
                agent_pid: lab.agent_pid(c),
                vswitchd_pid: ch.vswitchd_pid(),
            })
        })
        .collect()
}

/// `ovs-ofctl -O OpenFlow13 ARGS` against the switch whose run directory is `rundir`.
async fn ofctl(rundir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("ovs-ofctl")
        .env("OVS_RUNDIR", rundir)
        .args(["-O", "OpenFlow13"])
        .args(args)
        .output()
        .await
        .context("running ovs-ofctl")?;
    if !out.status.success() {
        bail!(
            "ovs-ofctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The groups on a switch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Groups {
    /// All groups.
    pub(crate) groups: usize,
    /// `select` groups, their buckets, and those of them with at least one bucket.
    pub(crate) select: usize,
    pub(crate) buckets: usize,
    pub(crate) with_buckets: usize,
}

impl Groups {
    fn parse(text: &str) -> Groups {
        let mut g = Groups::default();
        for line in text.lines().filter(|l| l.contains("group_id=")) {
            g.groups += 1;
            if line.contains("type=select") {
                g.select += 1;
                let b = line.matches("bucket=").count();
                g.buckets += b;
                g.with_buckets += usize::from(b > 0);
            }
        }
        g
    }

    pub(crate) fn json(&self) -> Value {
        json!({"groups": self.groups, "select_groups": self.select, "buckets": self.buckets,
               "select_groups_with_buckets": self.with_buckets})
    }
}

pub(crate) async fn groups(rundir: &Path) -> anyhow::Result<Groups> {
    Ok(Groups::parse(&dump_groups(rundir).await?))
}

/// `ovs-ofctl dump-groups br-int` on the switch whose run directory is `rundir`.
pub(crate) async fn dump_groups(rundir: &Path) -> anyhow::Result<String> {
    ofctl(rundir, &["dump-groups", BR_INT]).await
}

/// The switch's flows, by table.
pub(crate) async fn flows_by_table(rundir: &Path) -> anyhow::Result<BTreeMap<u8, usize>> {
    let text = ofctl(rundir, &["dump-flows", BR_INT]).await?;
    let mut by_table = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("cookie=")) {
        let table = line
            .split([',', ' '])
            .find_map(|f| f.trim().strip_prefix("table="))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        *by_table.entry(table).or_default() += 1;
    }
    Ok(by_table)
}

/// Flows added per table from `before` to `after` (tables that changed).
pub(crate) fn added_by_table(before: &BTreeMap<u8, usize>, after: &BTreeMap<u8, usize>) -> Value {
    let tables: BTreeSet<u8> = before.keys().chain(after.keys()).copied().collect();
    tables
        .into_iter()
        .filter_map(|t| {
            let (b, a) = (
                before.get(&t).copied().unwrap_or(0),
                after.get(&t).copied().unwrap_or(0),
            );
            (a != b).then(|| (t.to_string(), json!(a as i64 - b as i64)))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// RSS (MiB) and CPU seconds of a process.
pub(crate) fn usage(pid: Option<u32>) -> (Option<f64>, Option<f64>) {
    match pid.and_then(proc_usage) {
        Some((rss, cpu)) => (Some((rss as f64 / 1024.0 * 10.0).round() / 10.0), Some(cpu)),
        None => (None, None),
    }
}

/// Waits until every agent is in sync with installed == desired (the lab's own objects).
pub(crate) async fn settle(http: &reqwest::Client, nodes: &[Node]) -> anyhow::Result<Vec<Agent>> {
    let t0 = Instant::now();
    loop {
        let mut all = Vec::new();
        for n in nodes {
            all.push(n.agent(http).await.unwrap_or_default());
        }
        if all.iter().all(Agent::settled) {
            return Ok(all);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the agents are not in sync 60 s after the lab came up: {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn measure(p: &Params, lab: &Lab) -> anyhow::Result<Value> {
    let subnet = lab
        .state()
        .networks
        .get(NETWORK)
        .and_then(|n| n.subnets.first())
        .map(|s| s.id.clone())
        .ok_or_else(|| anyhow!("the lab made no subnet on {NETWORK}"))?;
    let api = Api {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(p.concurrency)
            .build()?,
        base: lab.server_url(),
        subnet,
    };
    let nodes = nodes(lab)?;
    let http = reqwest::Client::new();
    settle(&http, &nodes).await?;
    let bulk = bulk(p, lab, &api, &http, &nodes).await?;
    let member_added = member_added(p, lab, &api).await?;
    let rate = rate(p, lab, &api, &nodes).await?;
    let ratio = rate["vip_over_direct"].as_f64().unwrap_or(0.0);
    Ok(json!({
        "benchmark": "lb",
        "setup": {
            "chassis": CHASSIS.len(), "encap": "geneve", "datapath": "userspace (netdev)",
            "network": {"name": NETWORK, "cidr": CIDR},
            "member_vms": p.vms,
            "client": format!("{CLIENT} on {}", CHASSIS[0]),
            "servers": [format!("{MEMBER_VM} on {} (member)", CHASSIS[1]), format!("{DIRECT_VM} on {} (direct)", CHASSIS[1])],
            "load_balancers": p.load_balancers, "listeners_per_load_balancer": p.listeners,
            "members_per_pool": p.members, "api_concurrency": p.concurrency,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        },
        "bulk": bulk,
        "member_added": member_added,
        "connections": rate,
        "targets": {
            "vip_share_of_direct": {"target": 0.7, "measured": ratio, "met": ratio >= 0.7},
        },
    }))
}

/// Phase 1: the bulk (see the module's documentation).
async fn bulk(
    p: &Params,
    lab: &Lab,
    api: &Api,
    http: &reqwest::Client,
    nodes: &[Node],
) -> anyhow::Result<Value> {
    let ips: Vec<IpAddr> = (0..p.vms)
        .map(|j| vm_ip(lab, &vm_name(j)))
        .collect::<anyhow::Result<_>>()?;
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
    let listeners = p.load_balancers * p.listeners;
    let requests = p.load_balancers * (1 + p.listeners * (2 + p.members));
    progress(&format!(
        "bulk: {} load balancers × {} listeners × {} members ({requests} requests, {} load balancers at a time)",
        p.load_balancers, p.listeners, p.members, p.concurrency
    ));
    let one = |i: usize| {
        let ips = &ips;
        async move {
            let mut latencies = Vec::new();
            let t = Instant::now();
            let (lb, _) = api.load_balancer(&format!("lb{i}")).await?;
            latencies.push(t.elapsed());
            for l in 0..p.listeners {
                let port = FIRST_LISTENER_PORT + l as u16;
                let name = format!("lb{i}-{port}");
                let listener = timed(&mut latencies, api.listener(&lb, &name, port)).await?;
                let pool = timed(&mut latencies, api.pool(&listener, &name)).await?;
                for k in 0..p.members {
                    let ip = ips[(i + k) % ips.len()];
                    timed(&mut latencies, api.member(&pool, ip, MEMBER_PORT)).await?;
                }
            }
            anyhow::Ok((latencies, Instant::now()))
        }
    };
    let (mut latencies, last, writes) =
        crate::lb::write_bulk(p.load_balancers, p.concurrency, requests, one).await?;

    // Every chassis until it holds all of it, each polled on its own.
    let want_buckets = listeners * p.members;
    let base = before.iter().map(|b| b.2).collect::<Vec<_>>();
    let (done, converged) = converge(nodes, base, http, last, listeners, want_buckets).await?;

    let mut per_chassis = Vec::new();
    for ((n, (a0, f0_tables, g0, rss0, cpu0)), (at, polls)) in nodes.iter().zip(&before).zip(&done)
    {
        let a = n.agent(http).await?;
        let tables = flows_by_table(&n.rundir).await?;
        let flows: usize = tables.values().sum();
        let f0: usize = f0_tables.values().sum();
        let g = groups(&n.rundir).await?;
        let (rss, cpu) = usage(n.agent_pid);
        let added = flows.saturating_sub(f0);
        per_chassis.push(json!({
            "chassis": n.name,
            "complete_after_last_write_s": secs(at.saturating_duration_since(last)),
            "polls": polls,
            "flows_before": f0, "flows_after": flows,
            "agent_flows_desired_before": a0.desired, "agent_flows_desired_after": a.desired,
            "flows_added": added,
            "flows_added_by_table": added_by_table(f0_tables, &tables),
            "flows_added_per_listener": (added as f64 / listeners.max(1) as f64 * 100.0).round() / 100.0,
            "groups_before": g0.json(), "groups_after": g.json(),
            "buckets_per_select_group": (g.buckets as f64 / g.select.max(1) as f64 * 100.0).round() / 100.0,
            "agent_rss_mib_before": rss0, "agent_rss_mib_after": rss,
            "agent_cpu_s_for_bulk": cpu.zip(*cpu0).map(|(a, b)| ((a - b) * 100.0).round() / 100.0),
        }));
    }
    latencies.sort();
    Ok(json!({
        "load_balancers": p.load_balancers,
        "listeners": listeners,
        "members": listeners * p.members,
        "api_requests": latencies.len(),
        "api_seconds": secs(writes),
        "api_requests_per_s": (latencies.len() as f64 / writes.as_secs_f64().max(1e-9)).round(),
        "api_latency_ms": {"p50": percentile(&latencies, 0.5), "p99": percentile(&latencies, 0.99), "max": percentile(&latencies, 1.0)},
        "all_chassis_complete_after_last_write_s": secs(converged),
        "note": "complete: the agent in sync with installed == desired flows, and its switch with one more select group per listener and one more bucket per member (ovs-ofctl dump-groups); each chassis polled every 10 ms from the last write's answer, so the times are upper bounds by one poll",
        "per_chassis": per_chassis,
    }))
}

/// Awaits `f` (a create), adding its time to `latencies`.
async fn timed(
    latencies: &mut Vec<Duration>,
    f: impl std::future::Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<String> {
    let t = Instant::now();
    let id = f.await?;
    latencies.push(t.elapsed());
    Ok(id)
}

/// How one connection attempt of phase 2 ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The member's byte came, then its close.
    Served,
    /// Reset (the empty pool's answer).
    Refused,
    /// Timed out or anything else.
    Other,
}

async fn attempt(to: SocketAddr) -> Outcome {
    match tokio::time::timeout(ATTEMPT_TIMEOUT, tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(mut s)) => {
            let mut got = Vec::with_capacity(1);
            match tokio::time::timeout(ATTEMPT_TIMEOUT, s.read_to_end(&mut got)).await {
                Ok(Ok(_)) if got == b"x" => Outcome::Served,
                _ => Outcome::Other,
            }
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
        _ => Outcome::Other,
    }
}

/// What a prober saw.
#[derive(Debug, Default)]
struct Probed {
    /// When the first attempt that ended with `until` ended.
    at: Option<Instant>,
    /// Attempts started, and how those that ended before the prober did ended.
    launched: u64,
    refused: u64,
    served: u64,
    other: u64,
}

impl Probed {
    /// Attempts still waiting for an answer when the prober ended.
    fn pending(&self) -> u64 {
        self.launched - self.refused - self.served - self.other
    }
}

/// From namespace `netns`, a connection to `to` every [`PROBE_EVERY`] until one ends with
/// `until` (or [`STEP_TIMEOUT`]). `first` gets the outcome of the first attempt that ends.
fn probe(
    netns: &str,
    to: SocketAddr,
    until: Outcome,
    first: tokio::sync::oneshot::Sender<Outcome>,
) -> std::thread::JoinHandle<anyhow::Result<Probed>> {
    connections::in_netns(netns, move || {
        connections::block_on(async move {
            let start = Instant::now();
            let mut first = Some(first);
            let mut seen = Probed::default();
            let mut inflight = FuturesUnordered::new();
            let mut tick = tokio::time::interval(PROBE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if start.elapsed() > STEP_TIMEOUT {
                            return Ok(seen);
                        }
                        seen.launched += 1;
                        inflight.push(async move {
                            let o = attempt(to).await;
                            (o, Instant::now())
                        });
                    }
                    Some((o, at)) = inflight.next(), if !inflight.is_empty() => {
                        match o {
                            Outcome::Served => seen.served += 1,
                            Outcome::Refused => seen.refused += 1,
                            Outcome::Other => seen.other += 1,
                        }
                        if let Some(tx) = first.take() {
                            let _ = tx.send(o);
                        }
                        if o == until {
                            seen.at = Some(at);
                            return Ok(seen);
                        }
                    }
                }
            }
        })
    })
}

/// Starts [`probe`] and waits for its first attempt's outcome.
async fn start_probe(
    netns: &str,
    to: SocketAddr,
    until: Outcome,
) -> anyhow::Result<(Outcome, std::thread::JoinHandle<anyhow::Result<Probed>>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = probe(netns, to, until, tx);
    match rx.await {
        Ok(o) => Ok((o, thread)),
        Err(_) => Err(connections::join(thread)
            .err()
            .unwrap_or_else(|| anyhow!("the prober ended without an attempt"))),
    }
}

/// Phase 2: one member added until it is used (see the module's documentation).
async fn member_added(p: &Params, lab: &Lab, api: &Api) -> anyhow::Result<Value> {
    let client_ns = netns(lab, CLIENT);
    let member_ip = vm_ip(lab, MEMBER_VM)?;
    let (lb, vip) = api.load_balancer("probe").await?;
    let listener = api.listener(&lb, "probe", PROBE_PORT).await?;
    let pool = api.pool(&listener, "probe").await?;
    let to = SocketAddr::new(vip, PROBE_PORT);
    progress(&format!(
        "member added → used: VIP {to}, member {MEMBER_VM} {member_ip}:{}, {} samples",
        connections::PORT,
        p.samples
    ));
    // The listener is on the client's chassis once its empty pool refuses.
    let (_, first) = start_probe(&client_ns, to, Outcome::Refused).await?;
    let warm = connections::join(first)?;
    if warm.at.is_none() {
        bail!(
            "the load-balancing datapath does not answer: no connection to the VIP {to} from \
             {CLIENT} was refused within {STEP_TIMEOUT:?} (the listener's pool is empty: \
             expected a reset); {warm:?}"
        );
    }
    let server = connections::Server::start(&netns(lab, MEMBER_VM), 1)?;
    let mut samples = Vec::new();
    let result = async {
        for s in 0..p.samples {
            tokio::time::sleep(SAMPLE_GAP).await;
            let (o, prober) = start_probe(&client_ns, to, Outcome::Served).await?;
            if o != Outcome::Refused {
                bail!("sample {s}: before the member was added, a connection to {to} ended {o:?}");
            }
            let t0 = Instant::now();
            let member = api.member(&pool, member_ip, connections::PORT).await?;
            let answered = Instant::now();
            let seen = connections::join(prober)?;
            let Some(at) = seen.at else {
                bail!("sample {s}: the member is not used {STEP_TIMEOUT:?} after its create ({seen:?})");
            };
            // Deleted again, until a connection is refused again.
            let (o, prober) = start_probe(&client_ns, to, Outcome::Refused).await?;
            let d0 = Instant::now();
            api.delete(&format!("pools/{pool}/members/{member}")).await?;
            let deleted = Instant::now();
            let gone = connections::join(prober)?;
            let Some(refused) = gone.at else {
                bail!("sample {s}: connections are not refused {STEP_TIMEOUT:?} after the member's delete ({gone:?})");
            };
            samples.push(json!({
                "create_call_ms": ms(answered - t0),
                "first_served_after_answer_ms": ms(at.saturating_duration_since(answered)),
                "first_served_after_call_ms": ms(at.saturating_duration_since(t0)),
                "refused_before_served": seen.refused, "other_before_served": seen.other,
                "pending_when_served": seen.pending(),
                "served_just_before_delete": o == Outcome::Served,
                "delete_call_ms": ms(deleted - d0),
                "refused_after_delete_answer_ms": ms(refused.saturating_duration_since(deleted)),
                "served_after_delete": gone.served, "other_after_delete": gone.other,
                "pending_when_refused": gone.pending(),
            }));
            progress(&format!(
                "sample {}: member used {:.1} ms after the create's answer, refused {:.1} ms after the delete's",
                s + 1,
                ms(at.saturating_duration_since(answered)),
                ms(refused.saturating_duration_since(deleted))
            ));
        }
        anyhow::Ok(())
    }
    .await;
    server.stop()?;
    result?;
    let col = |key: &str| -> Vec<Duration> {
        samples
            .iter()
            .filter_map(|s| s[key].as_f64())
            .map(|v| Duration::from_secs_f64(v / 1000.0))
            .collect()
    };
    Ok(json!({
        "samples": samples.len(),
        "vip": to.to_string(),
        "listener_group_id": group_id(&listener),
        "client": format!("{CLIENT} on {}", CHASSIS[0]),
        "member": format!("{MEMBER_VM} {member_ip}:{} on {}", connections::PORT, CHASSIS[1]),
        "note": "a TCP connection to the VIP every 1 ms, each on a new source port; used: the member's one byte arrived (the handshake through the VIP, the byte, the close: one connection's time included); from the create's answer (and from the start of the call); samples 250 ms apart (the agent resets at most 100 connections per client port and second); times before the answer count as 0",
        "member_used_after_answer_ms": stats_json(col("first_served_after_answer_ms")),
        "member_used_after_call_ms": stats_json(col("first_served_after_call_ms")),
        "create_call_ms": stats_json(col("create_call_ms")),
        "refused_after_delete_answer_ms": stats_json(col("refused_after_delete_answer_ms")),
        "per_sample": samples,
    }))
}

/// Phase 3: new connections per second through a VIP against directly (see the module's
/// documentation).
async fn rate(p: &Params, lab: &Lab, api: &Api, nodes: &[Node]) -> anyhow::Result<Value> {
    let o = p.connections;
    let member_ip = vm_ip(lab, MEMBER_VM)?;
    let (lb, vip) = api.load_balancer("rate").await?;
    let before = groups(&nodes[0].rundir).await?;
    for port in connections::PORT..connections::PORT + o.ports {
        let name = format!("rate-{port}");
        let listener = api.listener(&lb, &name, port).await?;
        let pool = api.pool(&listener, &name).await?;
        api.member(&pool, member_ip, port).await?;
    }
    // Every listener on the client's chassis.
    let t0 = Instant::now();
    loop {
        let g = groups(&nodes[0].rundir).await?;
        if g.with_buckets >= before.with_buckets + usize::from(o.ports) {
            break;
        }
        if t0.elapsed() > STEP_TIMEOUT {
            bail!(
                "{} listeners of load balancer rate are not on {} after {STEP_TIMEOUT:?}: {g:?}, before {before:?}",
                o.ports,
                nodes[0].name
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    progress(&format!(
        "connections from {CLIENT}: VIP {vip} ({} listeners → {MEMBER_VM}) against {DIRECT_VM} directly",
        o.ports
    ));
    let targets = [
        Target {
            name: "vip",
            netns: netns(lab, MEMBER_VM),
            ip: vip,
        },
        Target {
            name: "direct",
            netns: netns(lab, DIRECT_VM),
            ip: vm_ip(lab, DIRECT_VM)?,
        },
    ];
    let processes: Vec<(String, u32)> = nodes[..2]
        .iter()
        .filter_map(|n| Some((format!("vswitchd_{}", n.name), n.vswitchd_pid?)))
        .collect();
    let client_ns = netns(lab, CLIENT);
    let mut report =
        tokio::task::block_in_place(|| connections::compare(&client_ns, &targets, &o, &processes))?;
    report["from"] =
        json!({"vm": CLIENT, "ip": vm_ip(lab, CLIENT)?.to_string(), "chassis": CHASSIS[0]});
    report["vip"]["member"] = json!(format!("{MEMBER_VM} {member_ip} on {}", CHASSIS[1]));
    report["direct"]["vm"] = json!(format!("{DIRECT_VM} on {}", CHASSIS[1]));
    report["options"] = json!({
        "seconds": o.seconds, "runs": o.runs, "parallel": o.parallel, "server_ports": o.ports,
        "connection": "TCP handshake, one byte from the server, the server's close, then the client's",
    });
    Ok(report)
}

/// Runs `one(i)` for every `i` below `n`, `concurrency` at a time, each answering its requests'
/// latencies and when it ended: all the latencies, when the last one ended, and how long they all
/// took.
pub(crate) async fn write_bulk<F, Fut>(
    n: usize,
    concurrency: usize,
    requests: usize,
    one: F,
) -> anyhow::Result<(Vec<Duration>, Instant, Duration)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<Duration>, Instant)>>,
{
    let t0 = Instant::now();
    let mut made = futures::stream::iter(0..n)
        .map(one)
        .buffer_unordered(concurrency.max(1));
    let (mut latencies, mut last) = (Vec::with_capacity(requests), t0);
    while let Some(r) = made.next().await {
        let (l, at) = r?;
        latencies.extend(l);
        last = last.max(at);
    }
    drop(made);
    let writes = last - t0;
    progress(&format!(
        "bulk written in {:.1} s; waiting for every chassis",
        writes.as_secs_f64()
    ));
    Ok((latencies, last, writes))
}

/// Polls every chassis (each on its own, every [`POLL_EVERY`]) until its agent is settled and its
/// switch holds `want_groups` more select groups and `want_buckets` more buckets than `base`;
/// when each got there (and after how many polls), and how long after `last` the slowest did.
pub(crate) async fn converge(
    nodes: &[Node],
    base: Vec<Groups>,
    http: &reqwest::Client,
    last: Instant,
    want_groups: usize,
    want_buckets: usize,
) -> anyhow::Result<(Vec<(Instant, u64)>, Duration)> {
    let polls = nodes.iter().zip(base).map(|(n, base)| async move {
        let mut polls = 0u64;
        let mut seen = Groups::default();
        loop {
            polls += 1;
            let a = n.agent(http).await.unwrap_or_default();
            if a.settled() {
                let g = groups(&n.rundir).await?;
                seen = g;
                let complete = g.select >= base.select + want_groups
                    && g.buckets >= base.buckets + want_buckets;
                if complete && n.agent(http).await.unwrap_or_default().settled() {
                    return anyhow::Ok((Instant::now(), polls));
                }
            }
            if last.elapsed() > CONVERGE_TIMEOUT {
                bail!(
                    "chassis {} does not hold the bulk {CONVERGE_TIMEOUT:?} after the last write: \
                     agent {a:?}, groups {seen:?} (want {want_groups} more select groups and \
                     {want_buckets} more buckets than {base:?})",
                    n.name
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    });
    let done = futures::future::try_join_all(polls).await?;
    let converged = done
        .iter()
        .map(|(at, _)| *at)
        .max()
        .unwrap_or(last)
        .saturating_duration_since(last);
    progress(&format!(
        "all chassis complete {:.3} s after the last write",
        converged.as_secs_f64()
    ));
    Ok((done, converged))
}
