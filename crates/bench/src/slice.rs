//! `wyvern-bench slice`: the first real slice under load, end to end.
//!
//! One server (embedded store) or, with `--store etcd`, real etcd members and one or more servers
//! (the agents spread over them, each knowing all; port `k` made through server `k mod S`), N
//! chassis with real Open vSwitch and one agent each (through the lab library), then, timed: networks, subnets and ports created over the Neutron API with
//! `binding:host_id` set and each port's VIF plugged into its chassis' `br-int` as an OVS internal
//! port with `iface-id` and `attached-mac` (as Nova would), until every agent holds every flow.
//! Then single ports on the loaded system (create + plug until the port's L2 flow is on its own
//! chassis and on every other), with several servers server failovers (see [`server_failovers`]),
//! and agent restarts (`kill -9` + start until in sync again).
//!
//! With `--router` (the routed variant) the bulk phase also creates one router and adds an
//! interface on every network's subnet (before the ports), the flow counts say what the router
//! and its interfaces cost, and one more phase runs before the restarts: a router interface added
//! to the loaded system until a routed ping works (see [`interface`]).
//!
//! With `--floating-ips` (issue 12's workload, routed) the lab also has a physical segment with
//! an external host on it and a flat external network there ([`floating::outside`]); the router
//! has its gateway on that network, every port of the bulk gets a floating IP (created with
//! the port as its `port_id`, right after the port's VIF is plugged), convergence also waits for
//! every floating IP to be ACTIVE, the flow counts show the floating IPs' own flows (cookie kind
//! `0x07`), and two more phases run before the restarts: a floating IP associated until the
//! external host's ping gets through, and new connections per second through distributed SNAT
//! against plain routing (see [`floating`]).
//!
//! "Converged" means, for every agent: `in_sync`, installed == desired, its northbound revision
//! at least the server's revision at which the last port (and floating IP) became ACTIVE, and
//! all its VIFs seen;
//! the bench follows the server's state through the same sync API the agents use. Figures come
//! from the agents' metrics, `/proc` and the switches themselves (OpenFlow flow stats filtered by
//! the port's cookie, and `ovs-ofctl dump-flows`). Everything the lab made is removed again when
//! the run ends, also on errors, panics, SIGINT and SIGTERM (the lab's `Drop`).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chassis::{VifEvent, VifWatcher};
use lab::{Lab, LabOptions, Topology};
use nb_keys::Kind;
use openflow::conn::{Connection, Events, Options};
use openflow::message::FlowStatsRequest;
use ovsdb::{Client, ClientOptions, Endpoint};
use pipeline::cookie::Owner;
use serde_json::{Value, json};

use crate::{percentile, post, put};

pub(crate) mod connections;
mod floating;
mod groups;
mod interface;
mod probe;

pub use connections::Options as ConnectionOptions;
pub use floating::Params as FloatingIps;

/// The integration bridge the agents program.
pub(crate) const BR_INT: &str = "br-int";
/// How often the agents' metrics are polled while waiting for convergence (each poll is one HTTP
/// request per agent, so polling much faster would load the agents being measured).
const METRICS_POLL: Duration = Duration::from_millis(5);
/// How often the switches are asked for a new port's flow.
const FLOW_POLL: Duration = Duration::from_millis(1);
/// Longest wait for the bulk phase to converge.
const BULK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for one port or one agent restart.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long OVS takes at most to fold coverage counters into their totals.
const COVERAGE_FOLD: Duration = Duration::from_millis(1200);
/// How often the bulk phase's timeline is sampled.
const TIMELINE_STEP: Duration = Duration::from_millis(250);
/// Quiet time between single-port samples.
const SAMPLE_GAP: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone)]
pub struct Params {
    /// The `wyvern` binary (server and agent).
    pub wyvern: PathBuf,
    pub chassis: usize,
    pub networks: usize,
    pub ports: usize,
    /// Single ports added on the loaded system.
    pub samples: usize,
    /// Port creations (and plugs) in flight at once during the bulk phase.
    pub concurrency: usize,
    /// Agent restarts (round-robin over the chassis).
    pub restarts: usize,
    /// The routed variant: one router with an interface on every network.
    pub router: bool,
    /// Router interfaces added (and removed again) on the loaded system (routed variant only).
    pub interface_samples: usize,
    /// etcd members of the lab's store; 0: the embedded store.
    pub etcd_members: usize,
    /// API servers (more than one only on etcd).
    pub servers: usize,
    /// Server kills, with several servers.
    pub failovers: usize,
    /// Issue 11's workload B: every port in one security group with 20 ingress rules (see
    /// [`groups`]).
    pub security_groups: bool,
    /// Issue 12's workload: the router's gateway on an external network, a floating IP per port
    /// and the phases of [`floating`] (needs `router`).
    pub floating_ips: Option<FloatingIps>,
}

impl Params {
    /// The store as the report names it.
    fn store(&self) -> String {
        match self.etcd_members {
            0 => "embedded".into(),
            m => format!("etcd, {m} members, {} servers", self.servers),
        }
    }
}

/// Runs the benchmark; SIGINT and SIGTERM end it early (and tear the lab down).
pub async fn run(p: Params) -> anyhow::Result<Value> {
    if p.chassis == 0 || p.networks == 0 || p.ports == 0 || p.servers == 0 {
        bail!("--chassis, --networks, --ports and --servers must be at least 1");
    }
    if p.floating_ips.is_some() && (!p.router || p.networks < 2) {
        bail!("floating IPs need the router and two networks behind it");
    }
    crate::until_signal(bench(p)).await
}

/// A progress line on stderr, with the Unix time (to line it up with logs and captures).
fn progress(what: &str) {
    crate::progress("slice", what);
}

/// Seconds with millisecond precision.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1000.0
}

/// The server's state as the bench follows it through the sync API.
#[derive(Default)]
struct View {
    revision: u64,
    /// Port id → ACTIVE.
    ports: HashMap<String, bool>,
    /// When each port was first seen ACTIVE.
    active_at: HashMap<String, Instant>,
    /// Floating IP id → ACTIVE (associated with an ACTIVE port).
    floating_ips: HashMap<String, bool>,
    chassis_up: BTreeSet<String>,
}

impl View {
    fn apply(&mut self, update: nb_sync::Update) {
        let now = Instant::now();
        for change in update.changes {
            match change {
                nb_sync::Change::Put(key, value) => match nb_keys::parse(&key) {
                    Some((Kind::Port, id)) => {
                        let active = value.get("status").and_then(Value::as_str) == Some("ACTIVE");
                        if active {
                            self.active_at.entry(id.to_owned()).or_insert(now);
                        }
                        self.ports.insert(id.to_owned(), active);
                    }
                    Some((Kind::FloatingIp, id)) => {
                        let active = value.get("status").and_then(Value::as_str) == Some("ACTIVE");
                        self.floating_ips.insert(id.to_owned(), active);
                    }
                    Some((Kind::ChassisUp, id)) => {
                        self.chassis_up.insert(id.to_owned());
                    }
                    _ => {}
                },
                nb_sync::Change::Delete(key) => match nb_keys::parse(&key) {
                    Some((Kind::Port, id)) => {
                        self.ports.remove(id);
                    }
                    Some((Kind::FloatingIp, id)) => {
                        self.floating_ips.remove(id);
                    }
                    Some((Kind::ChassisUp, id)) => {
                        self.chassis_up.remove(id);
                    }
                    _ => {}
                },
            }
        }
        self.revision = update.revision;
    }

    fn active(&self) -> usize {
        self.ports.values().filter(|a| **a).count()
    }

    /// Whether every floating IP in `ids` is ACTIVE.
    fn floating_ips_active(&self, ids: &[String]) -> bool {
        ids.iter()
            .all(|id| self.floating_ips.get(id) == Some(&true))
    }
}

/// An agent's metrics.
#[derive(Debug, Default, Clone, Copy)]
struct AgentStats {
    desired: u64,
    installed: u64,
    flow_mods: u64,
    revision: u64,
    in_sync: bool,
    vifs: u64,
    snapshots: u64,
    resumes: u64,
    failovers: u64,
}

impl AgentStats {
    fn parse(text: &str) -> AgentStats {
        let mut s = AgentStats::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = name.split('{').next().unwrap_or_default();
            let Ok(v) = value.trim().parse::<u64>() else {
                continue;
            };
            match name {
                "wyvern_agent_flows_desired" => s.desired = v,
                "wyvern_agent_flows_installed" => s.installed = v,
                "wyvern_agent_flow_mods_sent_total" => s.flow_mods = v,
                "wyvern_agent_nb_revision" => s.revision = v,
                "wyvern_agent_in_sync" => s.in_sync = v == 1,
                "wyvern_agent_local_vifs" => s.vifs = v,
                "wyvern_agent_sync_snapshots_total" => s.snapshots = v,
                "wyvern_agent_sync_resumes_total" => s.resumes = v,
                "wyvern_agent_server_failovers_total" => s.failovers = v,
                _ => {}
            }
        }
        s
    }

    /// In sync with the switch, at `revision` or later, with `vifs` local VIFs.
    fn converged(&self, revision: u64, vifs: u64) -> bool {
        self.in_sync
            && self.installed == self.desired
            && self.revision >= revision
            && self.vifs == vifs
    }

    fn json(&self) -> Value {
        json!({
            "flows_desired": self.desired, "flows_installed": self.installed,
            "flow_mods_sent": self.flow_mods, "nb_revision": self.revision,
            "in_sync": self.in_sync, "local_vifs": self.vifs, "sync_snapshots": self.snapshots,
            "sync_resumes": self.resumes, "server_failovers": self.failovers,
        })
    }
}

/// One chassis as the bench sees it.
struct Node {
    name: String,
    metrics: String,
    db: Client,
    of: Connection,
    /// Kept so the connection's event queue stays open.
    _events: Events,
    /// VIFs plugged here so far.
    vifs: u64,
}

/// A port the bench made.
#[derive(Clone)]
struct MadePort {
    id: String,
    mac: String,
    node: usize,
}

/// Resident set size (KiB) and CPU seconds (user + system) of a process, from `/proc`.
pub(crate) fn proc_usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    Some((rss, ticks as f64 / hz as f64))
}

fn usage_json(pid: Option<u32>) -> Value {
    match pid.and_then(|p| proc_usage(p).map(|u| (p, u))) {
        Some((pid, (rss, cpu))) => json!({
            "pid": pid, "rss_mib": (rss as f64 / 1024.0 * 10.0).round() / 10.0,
            "cpu_seconds": (cpu * 100.0).round() / 100.0,
        }),
        None => Value::Null,
    }
}

/// Background tasks that end with the measurement.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// OpenFlow messages a chassis' switch has received so far (`ofproto_recv_openflow` coverage
/// counter), per node. Coverage totals are folded in about once a second, so this waits that
/// long first.
fn of_messages(lab: &Lab, nodes: &[Node]) -> Vec<Option<u64>> {
    std::thread::sleep(COVERAGE_FOLD);
    nodes
        .iter()
        .map(|n| {
            let text = lab.chassis(&n.name)?.ovs_appctl(&["coverage/show"]).ok()?;
            // A counter that never counted is not listed.
            let Some(line) = text
                .lines()
                .find(|l| l.starts_with("ofproto_recv_openflow "))
            else {
                return Some(0);
            };
            line.rsplit_once("total:")?.1.trim().parse().ok()
        })
        .collect()
}

/// Everything a measurement needs.
struct Ctx {
    /// Every server's base URL (`server-1` first).
    apis: Vec<String>,
    /// The servers the sync follower uses (the one in use, its failovers).
    servers: nb_sync::Servers,
    http: reqwest::Client,
    view: Arc<Mutex<View>>,
    nodes: Vec<Node>,
    networks: Vec<String>,
    /// The subnet of each network (same order).
    subnets: Vec<String>,
    /// The router (routed variant).
    router: Option<String>,
    /// The security group every port is created in (`--security-groups`).
    group: Option<String>,
    /// The external network the router's gateway and the floating IPs are on (`--floating-ips`).
    external: Option<String>,
    ports: Vec<MadePort>,
    /// The floating IPs of the bulk's ports.
    floating_ips: Vec<String>,
    /// What the phases added to the lab's topology (see [`Ctx::grow_lab`]).
    lab_extra: String,
    /// The bench's networks (by index) declared in `lab_extra`.
    lab_networks: BTreeSet<usize>,
    /// When each VIF (by iface-id) first had an OpenFlow port in its chassis' OVSDB.
    vif_seen: Arc<Mutex<HashMap<String, Instant>>>,
    /// The sync follower feeding `view`, and its handle (dropping the handle would make the
    /// follower re-snapshot in a loop, so both live exactly as long as the measurement).
    follower: (Tasks, nb_sync::Handle),
}

impl Ctx {
    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn vif_seen(&self, port: &str) -> Option<Instant> {
        self.vif_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(port)
            .copied()
    }

    /// One row of the bulk phase's timeline: the server's side and every agent's metrics.
    async fn sample(&self, t0: Instant) -> Value {
        let (revision, active) = {
            let v = self.view();
            (v.revision, v.active())
        };
        let vifs = self
            .vif_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let agents: Vec<Value> = self
            .all_stats()
            .await
            .into_iter()
            .map(|s| match s {
                Ok(s) => json!([s.revision, s.vifs, s.desired, s.installed, s.flow_mods]),
                Err(_) => Value::Null,
            })
            .collect();
        json!({"t": secs(t0.elapsed()), "revision": revision, "active": active,
               "vifs_with_ofport": vifs, "agents": agents})
    }

    async fn agent_stats(&self, node: usize) -> anyhow::Result<AgentStats> {
        let text = self
            .http
            .get(&self.nodes[node].metrics)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(AgentStats::parse(&text))
    }

    async fn all_stats(&self) -> Vec<anyhow::Result<AgentStats>> {
        let mut out = Vec::with_capacity(self.nodes.len());
        for i in 0..self.nodes.len() {
            out.push(self.agent_stats(i).await);
        }
        out
    }

    /// Waits until every port the bench made (and every floating IP of the bulk) is ACTIVE and
    /// every agent has converged on the revision that made the last one so; returns when, and
    /// the agents' metrics then.
    async fn converge(&self, timeout: Duration) -> anyhow::Result<(Instant, Vec<AgentStats>)> {
        let start = Instant::now();
        let mut last = String::from("no agent answered yet");
        loop {
            let (active, fips_active, revision) = {
                let v = self.view();
                (
                    v.active(),
                    v.floating_ips_active(&self.floating_ips),
                    v.revision,
                )
            };
            if active >= self.ports.len() && fips_active {
                let stats = self.all_stats().await;
                let at = Instant::now();
                let ok = stats
                    .iter()
                    .zip(&self.nodes)
                    .all(|(s, n)| s.as_ref().is_ok_and(|s| s.converged(revision, n.vifs)));
                if ok {
                    return Ok((at, stats.into_iter().flatten().collect()));
                }
                last = format!("revision {revision}; agents: {stats:?}");
            } else {
                // The agents' state as last seen, once (not the previous message again).
                let agents = last.rsplit("; ").next().unwrap_or_default().to_owned();
                last = format!(
                    "{active} of {} ports ACTIVE (and {} floating IPs); {agents}",
                    self.ports.len(),
                    self.floating_ips.len()
                );
            }
            if start.elapsed() > timeout {
                bail!("no convergence within {timeout:?}: {last}");
            }
            tokio::time::sleep(METRICS_POLL).await;
        }
    }

    /// Creates a port on network `net` bound to node `node` (as Nova does before plugging).
    async fn create_port(&self, net: usize, node: usize, name: &str) -> anyhow::Result<MadePort> {
        let mut body = json!({"port": {
            "network_id": self.networks[net],
            "name": name,
            "binding:host_id": self.nodes[node].name,
            "device_owner": "compute:nova",
            "device_id": format!("vm-{name}"),
        }});
        if let Some(group) = &self.group {
            body["port"]["security_groups"] = json!([group]);
        }
        let api = &self.apis[node % self.apis.len()];
        let v = post(&self.http, &format!("{api}/v2.0/ports"), body).await?;
        let text = |k: &str| v["port"][k].as_str().map(str::to_owned);
        Ok(MadePort {
            id: text("id").ok_or_else(|| anyhow!("port without id: {v}"))?,
            mac: text("mac_address").ok_or_else(|| anyhow!("port without MAC: {v}"))?,
            node,
        })
    }

    /// Grows the lab by the topology sections `more` (networks, groups, VMs on the bench's
    /// networks), with the bench's networks `networks` (by index) declared to it first, and
    /// counts the VMs it wires among their chassis' VIFs. What earlier phases added stays in the
    /// file: the lab removes what its file no longer has.
    fn grow_lab(
        &mut self,
        p: &Params,
        lab: &mut Lab,
        networks: &[usize],
        more: &str,
    ) -> anyhow::Result<()> {
        for &i in networks {
            if self.lab_networks.insert(i) {
                self.lab_extra.push_str(&format!(
                    "[[network]]\nname = \"{}\"\n[[network.subnet]]\ncidr = \"{}\"\n",
                    network_name(i),
                    subnet_cidr(i)
                ));
            }
        }
        self.lab_extra.push_str(more);
        let grown = topology(lab.name(), p, &self.lab_extra)?;
        let before: BTreeSet<String> = lab.state().vms.keys().cloned().collect();
        tokio::task::block_in_place(|| lab.converge(&grown))?;
        for vm in lab
            .state()
            .vms
            .iter()
            .filter(|(name, _)| !before.contains(*name))
            .map(|(_, vm)| vm)
        {
            let node = self
                .nodes
                .iter_mut()
                .find(|n| n.name == vm.chassis)
                .ok_or_else(|| {
                    anyhow!(
                        "the lab wired a VM on {}, not a chassis of the bench",
                        vm.chassis
                    )
                })?;
            node.vifs += 1;
        }
        Ok(())
    }

    /// Creates a floating IP on the external network, associated with `port` if given; returns
    /// its id and address.
    async fn create_floating_ip(&self, port: Option<&str>) -> anyhow::Result<(String, String)> {
        let external = self
            .external
            .as_ref()
            .ok_or_else(|| anyhow!("no external network"))?;
        let mut body = json!({"floatingip": {"floating_network_id": external}});
        if let Some(port) = port {
            body["floatingip"]["port_id"] = port.into();
        }
        let v = post(
            &self.http,
            &format!("{}/v2.0/floatingips", self.apis[0]),
            body,
        )
        .await?;
        let text = |k: &str| v["floatingip"][k].as_str().map(str::to_owned);
        text("id")
            .zip(text("floating_ip_address"))
            .ok_or_else(|| anyhow!("floating IP without id or address: {v}"))
    }

    /// Adds an interface of `router` on `subnet` (at the subnet's gateway address); returns the
    /// interface's port id.
    async fn add_interface(&self, router: &str, subnet: &str) -> anyhow::Result<String> {
        let url = format!(
            "{}/v2.0/routers/{router}/add_router_interface",
            self.apis[0]
        );
        let v = put(&self.http, &url, json!({"subnet_id": subnet})).await?;
        v["port_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("router interface without port_id: {v}"))
    }

    /// Removes `router`'s interface on `subnet`.
    async fn remove_interface(&self, router: &str, subnet: &str) -> anyhow::Result<()> {
        let url = format!(
            "{}/v2.0/routers/{router}/remove_router_interface",
            self.apis[0]
        );
        put(&self.http, &url, json!({"subnet_id": subnet})).await?;
        Ok(())
    }
}

/// When the switch behind `of` first holds a flow of `owner` in `table` (a port's L2 flow, a
/// router interface's L3 entry), polling every [`FLOW_POLL`].
async fn first_seen(
    of: Connection,
    table: u8,
    owner: Owner,
    t0: Instant,
) -> anyhow::Result<Instant> {
    let req = FlowStatsRequest {
        table,
        cookie: owner.cookie(),
        cookie_mask: u64::MAX,
        ..FlowStatsRequest::default()
    };
    loop {
        if !of.dump_flows(req.clone()).await?.is_empty() {
            return Ok(Instant::now());
        }
        if t0.elapsed() > STEP_TIMEOUT {
            bail!(
                "{} {}: no flow in table {table} on a switch after {STEP_TIMEOUT:?}",
                owner.kind_name(),
                owner.id()
            );
        }
        tokio::time::sleep(FLOW_POLL).await;
    }
}

/// Plugs `port`'s VIF into `br-int` as an OVS internal port, as Nova's os-vif does for a VM's
/// tap: `iface-id`, `attached-mac`, `iface-status=active`.
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
        bail!("plugging {ifname}: no bridge {BR_INT}");
    }
    Ok(())
}

/// The lab: `p.chassis` chassis `c1`, `c2`, ..., the store and servers `p` asks for, the outside
/// with `--floating-ips`, and whatever `extra` adds (networks, VMs).
fn topology(name: &str, p: &Params, extra: &str) -> anyhow::Result<Topology> {
    let mut text = format!("name = \"{name}\"\n[underlay]\nencap = \"geneve\"\n");
    if p.etcd_members > 0 {
        text.push_str(&format!(
            "[server]\nstore = \"etcd\"\netcd_members = {}\nservers = {}\n",
            p.etcd_members, p.servers
        ));
    }
    let chassis = p.chassis;
    for i in 1..=chassis {
        text.push_str(&format!("[[chassis]]\nname = \"c{i}\"\n"));
    }
    if p.floating_ips.is_some() {
        text.push_str(&floating::outside());
    }
    text.push_str(extra);
    Ok(Topology::parse(&text, "slice-bench.toml".as_ref())?)
}

/// The name of the bench's network `i`.
fn network_name(i: usize) -> String {
    format!("slice-{i}")
}

/// The CIDR of network `i`'s subnet.
fn subnet_cidr(i: usize) -> String {
    format!("10.{}.{}.0/22", 100 + i / 64, (i % 64) * 4)
}

async fn bench(p: Params) -> anyhow::Result<Value> {
    let wyvern = std::fs::canonicalize(&p.wyvern)
        .with_context(|| format!("the wyvern binary {}", p.wyvern.display()))?;
    let prefix = match (p.security_groups, p.floating_ips.is_some(), p.router) {
        (true, _, _) => "sg",
        (false, true, _) => "sf",
        (false, false, true) => "sr",
        (false, false, false) => "sl",
    };
    let name = format!("{prefix}-{}", std::process::id());
    let topo = topology(&name, &p, "")?;
    let opts = LabOptions {
        wyvern: wyvern.clone(),
        progress: false,
    };
    progress(&format!("lab {name}: {} chassis", p.chassis));
    let t = Instant::now();
    let mut lab = tokio::task::block_in_place(|| Lab::up(&topo, &opts))?;
    let lab_up = t.elapsed();
    // `lab` outlives everything below that talks to its daemons (declared first, dropped last).
    let report = measure(&p, &mut lab, &topo, lab_up).await;
    progress("tearing the lab down");
    tokio::task::block_in_place(|| lab.down())?;
    let mut report = report?;
    report["setup"]["wyvern"] = wyvern.display().to_string().into();
    if p.security_groups {
        // Open vSwitch's floor in the same run, on a bridge holding this chassis' share.
        progress("Open vSwitch's floor (ovs-port-add)");
        let floor = crate::port_add::run(crate::port_add::Params {
            existing: p.ports / p.chassis,
            samples: p.samples,
        })
        .await?;
        report["targets"] = groups::targets(
            &report["bulk"],
            &report["flows"],
            &report["one_port"],
            report["agents_after_bulk"]
                .as_array()
                .map_or(&[], Vec::as_slice),
            &floor,
        );
        report["ovs_port_add_floor"] = floor;
    }
    Ok(report)
}

async fn connect_nodes(lab: &Lab, topo: &Topology) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for spec in &topo.chassis {
        let ch = lab
            .chassis(&spec.name)
            .ok_or_else(|| anyhow!("chassis {} is not running", spec.name))?;
        let db = Client::connect(&Endpoint::Unix(ch.db_socket()), ClientOptions::default())
            .await
            .with_context(|| format!("OVSDB of {}", spec.name))?;
        let mgmt = format!("unix:{}", ch.mgmt_socket(BR_INT).display());
        // A quiet service connection: no asynchronous messages, only our flow-stats requests.
        let of_opts = Options {
            on_connect: vec![],
            ..Options::default()
        };
        let (of, mut events) = Connection::start_with(&mgmt, of_opts)?;
        tokio::time::timeout(STEP_TIMEOUT, async {
            while let Some(e) = events.recv().await {
                if matches!(e, openflow::conn::Event::Connected(_)) {
                    return Ok(());
                }
            }
            Err(anyhow!("OpenFlow connection to {} ended", spec.name))
        })
        .await
        .map_err(|_| anyhow!("no OpenFlow connection to {} ({mgmt})", spec.name))??;
        let metrics = lab
            .agent_metrics_url(&spec.name)
            .ok_or_else(|| anyhow!("no agent metrics on {}", spec.name))?;
        nodes.push(Node {
            name: spec.name.clone(),
            metrics,
            db,
            of,
            _events: events,
            vifs: 0,
        });
    }
    Ok(nodes)
}

async fn measure(
    p: &Params,
    lab: &mut Lab,
    topo: &Topology,
    lab_up: Duration,
) -> anyhow::Result<Value> {
    let apis = lab.server_urls();
    let api = apis.join(",");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(p.concurrency.max(4))
        .timeout(Duration::from_secs(30))
        .build()?;
    let view = Arc::new(Mutex::new(View::default()));
    // Follow everything the server has, as an agent with every network would (and knowing
    // every server, as an agent does).
    let servers = nb_sync::Servers::parse(&api);
    let (replica, sync_handle) =
        nb_sync::Replica::with_servers(servers.clone(), nb_sync::Topics::everything());
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let mut tasks = Tasks(vec![tokio::spawn(replica.run(tx))]);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    {
        let view = view.clone();
        tasks.0.push(tokio::spawn(async move {
            let mut first = Some(first_tx);
            while let Some(u) = rx.recv().await {
                view.lock().unwrap_or_else(|p| p.into_inner()).apply(u);
                if let Some(f) = first.take() {
                    let _ = f.send(());
                }
            }
        }));
    }
    tokio::time::timeout(STEP_TIMEOUT, first_rx)
        .await
        .map_err(|_| anyhow!("no sync snapshot from the server at {api}"))??;
    // When each VIF gets its OpenFlow port, as the agents' own OVSDB monitor would see it.
    let vif_seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    for spec in &topo.chassis {
        let ch = lab
            .chassis(&spec.name)
            .ok_or_else(|| anyhow!("chassis {} is not running", spec.name))?;
        let mut watcher = VifWatcher::spawn(Endpoint::Unix(ch.db_socket()), Default::default());
        let seen = vif_seen.clone();
        tasks.0.push(tokio::spawn(async move {
            while let Some(e) = watcher.next().await {
                if let VifEvent::Added(v) = e {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    seen.entry(v.iface_id).or_insert_with(Instant::now);
                }
            }
        }));
    }
    let mut ctx = Ctx {
        apis,
        servers,
        http,
        view,
        nodes: connect_nodes(lab, topo).await?,
        networks: Vec::new(),
        subnets: Vec::new(),
        router: None,
        group: None,
        external: match p.floating_ips {
            Some(_) => Some(floating::external_network(lab)?),
            None => None,
        },
        ports: Vec::new(),
        floating_ips: Vec::new(),
        lab_extra: String::new(),
        lab_networks: BTreeSet::new(),
        vif_seen,
        follower: (tasks, sync_handle),
    };

    // Every agent up, registered and in sync with an empty topology.
    progress("waiting for the agents");
    let start = Instant::now();
    loop {
        let registered = ctx.view().chassis_up.len() >= ctx.nodes.len();
        let stats = ctx.all_stats().await;
        if registered && stats.iter().all(|s| s.as_ref().is_ok_and(|s| s.in_sync)) {
            break;
        }
        if start.elapsed() > STEP_TIMEOUT {
            bail!(
                "the agents did not come up: {stats:?} (see {}/agent-*.log)",
                lab.dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu_before: Vec<Option<(u64, f64)>> = topo
        .chassis
        .iter()
        .map(|c| lab.agent_pid(&c.name).and_then(proc_usage))
        .collect();

    let of_before = tokio::task::block_in_place(|| of_messages(lab, &ctx.nodes));
    let mut bulk = bulk(p, &mut ctx).await?;
    let of_after = tokio::task::block_in_place(|| of_messages(lab, &ctx.nodes));
    // Each agent delta is one bundle: open, the flow-mods, commit, barrier.
    for (i, a) in bulk["agents"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let (Some(Some(b)), Some(Some(e))) = (of_before.get(i), of_after.get(i)) {
            let msgs = e.saturating_sub(*b);
            let mods = a["metrics"]["flow_mods_sent"].as_u64().unwrap_or(0);
            a["openflow_messages_received_by_switch"] = msgs.into();
            a["bundles_estimated"] = (msgs.saturating_sub(mods) / 3).into();
        }
    }
    let flows = flows(&ctx, lab).await?;
    let agents: Vec<Value> = ctx
        .nodes
        .iter()
        .zip(&cpu_before)
        .map(|(n, before)| {
            let pid = lab.agent_pid(&n.name);
            let mut u = usage_json(pid);
            if let (Some((_, b)), Some((_, now))) = (before, pid.and_then(proc_usage)) {
                u["cpu_seconds_bulk_phase"] = (((now - b) * 100.0).round() / 100.0).into();
            }
            json!({"chassis": n.name, "usage": u})
        })
        .collect();
    let server_pid = std::fs::read_to_string(lab.dir().join("server-1.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let vswitchd: Vec<Value> = ctx
        .nodes
        .iter()
        .map(|n| {
            json!({"chassis": n.name,
                   "usage": usage_json(lab.chassis(&n.name).and_then(|c| c.vswitchd_pid()))})
        })
        .collect();
    let server_usage = usage_json(server_pid);

    let one_port = one_port(p, &mut ctx).await?;
    let interface_added = if p.router {
        interface::run(p, &mut ctx, lab).await?
    } else {
        Value::Null
    };
    let outside = match &p.floating_ips {
        Some(fp) => floating::run(p, fp, &mut ctx, lab).await?,
        None => Value::Null,
    };
    let failovers = if p.servers > 1 {
        server_failovers(p, &ctx, lab).await?
    } else {
        Value::Null
    };
    let restarts = restarts(p, &mut ctx, lab).await?;
    let agents_end: Vec<Value> = ctx
        .nodes
        .iter()
        .map(|n| json!({"chassis": n.name, "usage": usage_json(lab.agent_pid(&n.name))}))
        .collect();

    let per_port = flows["port_flows_per_port_per_chassis"]
        .as_f64()
        .unwrap_or(f64::MAX);
    // A routed network adds a next-hop flow per address on every chassis. OVN's figures are
    // those of its workload A (no router) on this machine; its routed workload has ACLs too,
    // see docs/benchmarks.md.
    let per_port_target = if p.router { 4.0 } else { 3.0 };
    let ovn = |v: Value| if p.router { Value::Null } else { v };
    let mut targets = json!({
        "bulk_converged_after_last_write_s": {
            "target": 0.5, "measured": bulk["converged_after_last_write_s"], "ovn": ovn(json!(1.75)),
            "met": bulk["converged_after_last_write_s"].as_f64().is_some_and(|s| s <= 0.5),
        },
        "one_port_local_p50_ms": {
            "target": 10.0, "measured": one_port["local_flows_ms"]["p50"], "ovn": ovn(json!(87.0)),
            "met": one_port["local_flows_ms"]["p50"].as_f64().is_some_and(|v| v <= 10.0),
        },
        "port_flows_per_port_per_chassis": {
            "target": per_port_target, "measured": per_port,
            "constant_per_chassis": flows["constant_flows_per_chassis"],
            "ovn_flows_per_chassis": ovn(json!(5843)), "met": per_port <= per_port_target,
        },
        "agent_rss_mib": {"ovn": ovn(json!(30.0)), "measured": agents.iter().map(|a| a["usage"]["rss_mib"].clone()).collect::<Vec<_>>()},
    });
    if p.router {
        targets["interface_added_to_routed_ping_p50_ms"] =
            json!({"measured": interface_added["ping_ms"]["p50"]});
    }
    if p.floating_ips.is_some() {
        // Issue 12 sets no figures for these.
        targets["floating_ip_associated_to_first_reply_ms"] = json!({
            "measured_p50": outside["associate_to_first_packet"]["first_reply_ms"]["p50"],
            "measured_p99": outside["associate_to_first_packet"]["first_reply_ms"]["p99"],
        });
        targets["new_connections_snat_over_routed"] =
            json!({"measured": outside["new_connections"]["snat_over_routed"]});
    }
    Ok(json!({
        "benchmark": format!(
            "slice{}{}{}",
            if p.router && p.floating_ips.is_none() { " --router" } else { "" },
            if p.floating_ips.is_some() { " --floating-ips" } else { "" },
            if p.security_groups { " --security-groups" } else { "" },
        ),
        "setup": {
            "chassis": p.chassis, "networks": p.networks, "ports": p.ports,
            "routers": usize::from(p.router), "router_interfaces": if p.router { p.networks } else { 0 },
            "port_concurrency": p.concurrency, "encap": "geneve", "store": p.store(),
            "vif": "ovs internal port per port (iface-id, attached-mac), one OVSDB transaction each",
            "lab_up_s": secs(lab_up), "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "security_groups": p.security_groups.then(groups::setup),
            "outside": p.floating_ips.as_ref().map(|_| floating::setup(p.ports)),
        },
        "bulk": bulk,
        "flows": flows,
        "agents_after_bulk": agents,
        "server_after_bulk": server_usage,
        "vswitchd_after_bulk": vswitchd,
        "one_port": one_port,
        "router_interface_added": interface_added,
        "floating_ips": outside,
        "server_failover": failovers,
        "agent_restart": restarts,
        "agents_at_end": agents_end,
        "targets": targets,
    }))
}

/// What the bulk phase's workers record.
struct BulkLog {
    api: Vec<Duration>,
    plug: Vec<Duration>,
    /// Floating IP creates (with `--floating-ips`).
    fip: Vec<Duration>,
    last_api: Instant,
    last_plug: Instant,
    last_fip: Instant,
    made: Vec<MadePort>,
    made_fips: Vec<String>,
    /// Port id → (created, plugged).
    times: HashMap<String, (Instant, Instant)>,
}

impl BulkLog {
    fn new(t0: Instant, ports: usize) -> Self {
        BulkLog {
            api: Vec::with_capacity(ports),
            plug: Vec::with_capacity(ports),
            fip: Vec::new(),
            last_api: t0,
            last_plug: t0,
            last_fip: t0,
            made: Vec::with_capacity(ports),
            made_fips: Vec::new(),
            times: HashMap::with_capacity(ports),
        }
    }
}

/// (a) Networks, subnets and ports over the API, VIFs plugged as each port is made, until every
/// agent holds every flow.
async fn bulk(p: &Params, ctx: &mut Ctx) -> anyhow::Result<Value> {
    progress(&format!(
        "bulk: {} networks, {} ports over {} chassis",
        p.networks,
        p.ports,
        ctx.nodes.len()
    ));
    let t0 = Instant::now();
    for i in 0..p.networks {
        let net = post(
            &ctx.http,
            &format!("{}/v2.0/networks", ctx.apis[0]),
            json!({"network": {"name": network_name(i)}}),
        )
        .await
        .context("creating a network")?;
        let id = net["network"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("network without id: {net}"))?
            .to_owned();
        let subnet = post(
            &ctx.http,
            &format!("{}/v2.0/subnets", ctx.apis[0]),
            json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": subnet_cidr(i)}}),
        )
        .await
        .context("creating a subnet")?;
        let subnet = subnet["subnet"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("subnet without id: {subnet}"))?
            .to_owned();
        ctx.networks.push(id);
        ctx.subnets.push(subnet);
    }
    let networks_done = t0.elapsed();
    if p.router {
        let mut router = json!({"name": "slice-r"});
        if let Some(external) = &ctx.external {
            router["external_gateway_info"] = json!({"network_id": external});
        }
        let router = post(
            &ctx.http,
            &format!("{}/v2.0/routers", ctx.apis[0]),
            json!({ "router": router }),
        )
        .await
        .context("creating the router")?;
        let router = router["router"]["id"]
            .as_str()
            .ok_or_else(|| anyhow!("router without id: {router}"))?
            .to_owned();
        for subnet in &ctx.subnets {
            ctx.add_interface(&router, subnet)
                .await
                .context("adding a router interface")?;
        }
        ctx.router = Some(router);
    }
    let router_done = t0.elapsed();
    let mut group_made = None;
    if p.security_groups {
        let (group, made_in) = groups::create(ctx).await?;
        ctx.group = Some(group);
        group_made = Some(made_in);
    }

    // Workers: create port k (network k mod N, chassis k mod C), then plug its VIF.
    let shared = Mutex::new(BulkLog::new(t0, p.ports));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let ctx_ref: &Ctx = ctx;
    let (shared_ref, next_ref) = (&shared, &next);
    let worker = move || async move {
        loop {
            let k = next_ref.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if k >= p.ports {
                return anyhow::Ok(());
            }
            let node = k % ctx_ref.nodes.len();
            let t = Instant::now();
            let port = ctx_ref
                .create_port(k % ctx_ref.networks.len(), node, &format!("p{k}"))
                .await
                .with_context(|| format!("creating port {k}"))?;
            let created = Instant::now();
            plug(&ctx_ref.nodes[node].db, &port).await?;
            let plugged = Instant::now();
            let fip = match &ctx_ref.external {
                Some(_) => Some(
                    ctx_ref
                        .create_floating_ip(Some(&port.id))
                        .await
                        .with_context(|| format!("the floating IP of port {k}"))?
                        .0,
                ),
                None => None,
            };
            let fip_made = Instant::now();
            let mut log = shared_ref.lock().unwrap_or_else(|e| e.into_inner());
            log.api.push(created - t);
            log.plug.push(plugged - created);
            log.last_api = log.last_api.max(created);
            log.last_plug = log.last_plug.max(plugged);
            if let Some(fip) = fip {
                log.fip.push(fip_made - plugged);
                log.last_fip = log.last_fip.max(fip_made);
                log.made_fips.push(fip);
            }
            log.times.insert(port.id.clone(), (created, plugged));
            log.made.push(port);
        }
    };
    let mut timeline = Vec::new();
    {
        let workers: Vec<_> = (0..p.concurrency.max(1)).map(|_| worker()).collect();
        let mut workers = std::pin::pin!(futures::future::try_join_all(workers));
        loop {
            tokio::select! {
                r = &mut workers => {
                    r?;
                    break;
                }
                () = tokio::time::sleep(TIMELINE_STEP) => timeline.push(ctx_ref.sample(t0).await),
            }
        }
    }
    let ports_done = t0.elapsed();
    let BulkLog {
        mut api,
        plug: mut plugs,
        fip: mut fips,
        last_api,
        last_plug,
        last_fip,
        made,
        made_fips,
        times,
    } = shared.into_inner().unwrap_or_else(|e| e.into_inner());
    for port in &made {
        ctx.nodes[port.node].vifs += 1;
    }
    ctx.ports = made;
    ctx.floating_ips = made_fips;

    progress("bulk: waiting for convergence");
    let (done, stats) = {
        let mut converge = std::pin::pin!(ctx.converge(BULK_TIMEOUT));
        loop {
            tokio::select! {
                r = &mut converge => break r?,
                () = tokio::time::sleep(TIMELINE_STEP) => timeline.push(ctx.sample(t0).await),
            }
        }
    };
    timeline.push(ctx.sample(t0).await);
    // Per port: plug acknowledged → OpenFlow port seen in OVSDB → ACTIVE seen through sync.
    let (mut to_vif, mut to_active, mut create_to_active) = (Vec::new(), Vec::new(), Vec::new());
    let mut last_vif = t0;
    {
        let view = ctx.view();
        for (id, (created, plugged)) in &times {
            let seen = ctx.vif_seen(id);
            if let Some(seen) = seen {
                to_vif.push(seen.saturating_duration_since(*plugged));
                last_vif = last_vif.max(seen);
            }
            if let Some(active) = view.active_at.get(id) {
                create_to_active.push(active.saturating_duration_since(*created));
                if let Some(seen) = seen {
                    to_active.push(active.saturating_duration_since(seen));
                }
            }
        }
    }
    let last_write = last_api.max(last_plug).max(last_fip);
    let all_active = ctx.view().active_at.values().max().copied().unwrap_or(done);
    api.sort();
    plugs.sort();
    fips.sort();
    Ok(json!({
        "networks_and_subnets_s": secs(networks_done),
        "router_and_interfaces_s": p.router.then(|| secs(router_done - networks_done)),
        "security_group_and_rules_s": group_made.map(secs),
        "ports_created_and_plugged_s": secs(ports_done),
        "ports_per_s": (p.ports as f64 / ports_done.as_secs_f64()).round(),
        "port_create_ms": {"p50": pct(&api, 0.5), "p99": pct(&api, 0.99)},
        "vif_plug_ms": {"p50": pct(&plugs, 0.5), "p99": pct(&plugs, 0.99)},
        "floating_ip_create_ms": (!fips.is_empty()).then(|| json!({"p50": pct(&fips, 0.5), "p99": pct(&fips, 0.99)})),
        "last_api_write_s": secs(last_api - t0),
        "last_vif_plug_s": secs(last_plug - t0),
        "last_floating_ip_s": (!fips.is_empty()).then(|| secs(last_fip - t0)),
        "all_ports_active_s": secs(all_active.saturating_duration_since(t0)),
        "converged_s": secs(done - t0),
        "converged_after_last_write_s": secs(done.saturating_duration_since(last_write)),
        "converged_after_last_active_s": secs(done.saturating_duration_since(all_active)),
        "last_ofport_seen_s": secs(last_vif - t0),
        "per_port_ms": {
            "plug_acked_to_ofport_seen": stats_json(to_vif),
            "ofport_seen_to_active_seen": stats_json(to_active),
            "create_to_active_seen": stats_json(create_to_active),
        },
        "timeline_columns": {"agents": ["nb_revision", "local_vifs", "flows_desired", "flows_installed", "flow_mods_sent"]},
        "timeline": timeline,
        "agents": ctx.nodes.iter().zip(&stats).map(|(n, s)| json!({"chassis": n.name, "metrics": s.json()})).collect::<Vec<_>>(),
    }))
}

/// (b) Flows per chassis, by owner, from the switch (OpenFlow) and from `ovs-ofctl`. Ports the
/// bench did not make (router interfaces, the lab's VMs, the chassis' SNAT addresses) count as
/// `other_port`; what is not a port of the bench's is the constant part (fixed, per network, per
/// router and interface), except floating IPs (cookie kind 0x07, on the chassis of their port)
/// and the neighbours the switch learned (0x0f), which are counted apart.
async fn flows(ctx: &Ctx, lab: &Lab) -> anyhow::Result<Value> {
    let node_of: HashMap<u64, usize> = ctx
        .ports
        .iter()
        .map(|p| (Owner::Port(p.id.as_str().into()).cookie(), p.node))
        .collect();
    let mut per_chassis = Vec::new();
    let (mut port_flow_total, mut floating_ip_total, mut constant_total) = (0usize, 0usize, 0usize);
    for (i, n) in ctx.nodes.iter().enumerate() {
        let held = n.of.dump_flows(FlowStatsRequest::default()).await?;
        let (mut fixed, mut network, mut local, mut remote) = (0, 0, 0, 0);
        let (mut other_port, mut router, mut interface, mut foreign) = (0, 0, 0, 0);
        let (mut floating_ip, mut learned) = (0, 0);
        let mut by_table: std::collections::BTreeMap<u8, usize> = Default::default();
        for s in &held {
            *by_table.entry(s.flow.table).or_default() += 1;
            match s.flow.cookie >> 56 {
                0x01 => fixed += 1,
                0x02 => network += 1,
                0x03 => match node_of.get(&s.flow.cookie) {
                    Some(&owner) if owner == i => local += 1,
                    Some(_) => remote += 1,
                    None => other_port += 1,
                },
                0x04 => router += 1,
                0x05 => interface += 1,
                0x07 => floating_ip += 1,
                _ if pipeline::cookie::is_learned(s.flow.cookie) => learned += 1,
                _ => foreign += 1,
            }
        }
        port_flow_total += local + remote;
        floating_ip_total += floating_ip;
        constant_total += held.len() - local - remote - floating_ip - learned;
        let ch = lab
            .chassis(&n.name)
            .ok_or_else(|| anyhow!("chassis {} is gone", n.name))?;
        let text = tokio::task::block_in_place(|| ch.ovs_ofctl(&["dump-flows", BR_INT]))?;
        let ofctl = text.lines().filter(|l| l.contains("cookie=")).count();
        let local_ports = ctx.ports.iter().filter(|p| p.node == i).count();
        let remote_ports = ctx.ports.len() - local_ports;
        per_chassis.push(json!({
            "chassis": n.name,
            "ovs_ofctl_dump_flows": ofctl,
            "openflow_flow_stats": held.len(),
            "fixed": fixed, "network": network, "local_port": local, "remote_port": remote,
            "other_port": other_port, "router": router, "router_interface": interface,
            "floating_ip": floating_ip, "learned": learned, "other": foreign,
            "by_table": by_table.iter().map(|(t, c)| (t.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
            "per_local_port": ratio(local, local_ports),
            "floating_ip_per_local_port": ratio(floating_ip, local_ports),
            "per_remote_port": ratio(remote, remote_ports),
            "per_network": ratio(network, ctx.networks.len()),
            "per_router_interface_with_its_port": ratio(interface + other_port, if ctx.router.is_some() { ctx.subnets.len() } else { 0 }),
        }));
    }
    let chassis = ctx.nodes.len().max(1);
    let per_port = port_flow_total as f64 / chassis as f64 / ctx.ports.len().max(1) as f64;
    Ok(json!({
        "per_chassis": per_chassis,
        "port_flows_per_port_per_chassis": (per_port * 100.0).round() / 100.0,
        "floating_ip_flows": floating_ip_total,
        "floating_ip_flows_per_floating_ip": ratio(floating_ip_total, ctx.floating_ips.len()),
        "constant_flows_per_chassis": (constant_total as f64 / chassis as f64 * 10.0).round() / 10.0,
    }))
}

/// `a / b` to two decimals (0 when `b` is 0).
fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        (a as f64 / b as f64 * 100.0).round() / 100.0
    }
}

/// A percentile in milliseconds, rounded to microseconds.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    (percentile(sorted, p) * 1000.0).round() / 1000.0
}

pub(crate) fn stats_json(mut v: Vec<Duration>) -> Value {
    v.sort();
    json!({
        "p50": pct(&v, 0.5), "p99": pct(&v, 0.99),
        "min": v.first().map(|d| ms(*d)), "max": v.last().map(|d| ms(*d)),
    })
}

/// (d) Single ports on the loaded system: create + plug until the port's L2 flow is on its own
/// chassis and on every other one.
async fn one_port(p: &Params, ctx: &mut Ctx) -> anyhow::Result<Value> {
    progress(&format!("one port at a time, {} samples", p.samples));
    let (mut api, mut plugged, mut local, mut active, mut remote) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut local_after_plug, mut vif_seen) = (Vec::new(), Vec::new());
    for s in 0..p.samples {
        tokio::time::sleep(SAMPLE_GAP).await;
        let node = s % ctx.nodes.len();
        let t0 = Instant::now();
        let port = ctx
            .create_port(s % ctx.networks.len(), node, &format!("one-{s}"))
            .await?;
        let t_api = Instant::now();
        plug(&ctx.nodes[node].db, &port).await?;
        let t_plug = Instant::now();
        // One poller per switch, so that a switch busy adding the port delays only its own
        // observation.
        let mut pollers = tokio::task::JoinSet::new();
        for (i, n) in ctx.nodes.iter().enumerate() {
            let (of, owner) = (n.of.clone(), Owner::Port(port.id.as_str().into()));
            pollers
                .spawn(async move { (i, first_seen(of, pipeline::tables::L2, owner, t0).await) });
        }
        let mut seen = vec![t0; ctx.nodes.len()];
        while let Some(r) = pollers.join_next().await {
            let (i, at) = r?;
            seen[i] = at?;
        }
        let local_at = seen[node];
        let remote_at = seen
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != node)
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(local_at);
        api.push(t_api - t0);
        plugged.push(t_plug - t0);
        local.push(local_at - t0);
        remote.push(remote_at - t0);
        local_after_plug.push(local_at.saturating_duration_since(t_plug));
        // OVSDB learns the port's OpenFlow number only after vswitchd's re-configuration (the
        // agent learns it from the switch before that): wait for it.
        while ctx.vif_seen(&port.id).is_none() && t0.elapsed() < STEP_TIMEOUT {
            tokio::time::sleep(FLOW_POLL).await;
        }
        if let Some(seen) = ctx.vif_seen(&port.id) {
            vif_seen.push(seen.saturating_duration_since(t0));
        }
        if let Some(a) = ctx.view().active_at.get(&port.id) {
            active.push(a.saturating_duration_since(t0));
        }
        ctx.nodes[node].vifs += 1;
        ctx.ports.push(port);
    }
    Ok(json!({
        "samples": p.samples,
        "note": "*_ms from the start of the port create request; *_after_* from the event named",
        "api_create_ms": stats_json(api),
        "vif_plugged_ms": stats_json(plugged),
        "local_flows_ms": stats_json(local),
        "remote_flows_all_chassis_ms": stats_json(remote),
        "active_seen_by_sync_ms": stats_json(active),
        "ofport_in_ovsdb_seen_ms": stats_json(vif_seen),
        "local_flows_after_plug_acked_ms": stats_json(local_after_plug),
    }))
}

/// (f) Server failover, with several servers: `kill -9` the server the bench's own sync follower
/// uses and time until the follower watches again through another one (it is an
/// `nb_sync::Replica` knowing every server, the code the agents fail over with; its `resumes`
/// counter is read every millisecond), then start the killed server again. The next kill is of
/// the server the follower moved to, so the servers alternate. The agents that used the killed
/// server (their `server_failovers` goes up) are timed from their metrics too, until their
/// `sync_resumes` goes up; agents publish metrics at their event loop's pace (at the latest once
/// a second when nothing happens), so those figures are upper bounds.
async fn server_failovers(p: &Params, ctx: &Ctx, lab: &mut Lab) -> anyhow::Result<Value> {
    /// How long after a kill agents that have not moved count as not using the killed server.
    const SETTLE: Duration = Duration::from_secs(2);
    let all_ok = |stats: Vec<anyhow::Result<AgentStats>>| -> anyhow::Result<Vec<AgentStats>> {
        stats.into_iter().collect()
    };
    let stats = |ctx: &Ctx| ctx.follower.1.stats();
    let start = all_ok(ctx.all_stats().await)?;
    let follower_snapshots = stats(ctx).snapshots;
    let (mut follower, mut agents, mut kills) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..p.failovers {
        let url = ctx.servers.current();
        let i = ctx
            .apis
            .iter()
            .position(|a| *a == url)
            .ok_or_else(|| anyhow!("the follower uses {url}, not a server of the lab"))?;
        let name = format!("server-{}", i + 1);
        progress(&format!("server failover {}: killing {name}", k + 1));
        let resumes = stats(ctx).resumes;
        let before = all_ok(ctx.all_stats().await)?;
        let t0 = Instant::now();
        tokio::task::block_in_place(|| lab.stop(&name))?;
        let killed = t0.elapsed();
        while stats(ctx).resumes <= resumes {
            if t0.elapsed() > STEP_TIMEOUT {
                bail!("the sync follower is not watching again after {name} was killed");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let watching = t0.elapsed();
        follower.push(watching);
        let mut moved: Vec<Option<Duration>> = vec![None; before.len()];
        loop {
            let now = ctx.all_stats().await;
            let at = t0.elapsed();
            let mut waiting = false;
            for (j, s) in now.iter().enumerate() {
                let Ok(s) = s else {
                    waiting = true;
                    continue;
                };
                if s.failovers > before[j].failovers && moved[j].is_none() {
                    if s.resumes > before[j].resumes {
                        moved[j] = Some(at);
                    } else {
                        waiting = true;
                    }
                }
            }
            if !waiting && at > SETTLE {
                break;
            }
            if at > STEP_TIMEOUT {
                bail!("agents did not watch again after {name} was killed: {now:?}");
            }
            tokio::time::sleep(METRICS_POLL).await;
        }
        agents.extend(moved.iter().flatten().copied());
        let moved: Vec<Value> = moved
            .iter()
            .zip(&ctx.nodes)
            .filter_map(|(m, n)| m.map(|m| json!({"chassis": n.name, "watching_seen_ms": ms(m)})))
            .collect();
        kills.push(json!({
            "server": name, "kill_ms": ms(killed), "follower_watching_ms": ms(watching),
            "agents_moved": moved,
        }));
        tokio::task::block_in_place(|| lab.start(&name))?;
    }
    let end = all_ok(ctx.all_stats().await)?;
    let sum = |v: &[AgentStats], f: fn(&AgentStats) -> u64| v.iter().map(f).sum::<u64>();
    Ok(json!({
        "kills": p.failovers,
        "note": "from the kill -9 (its reaping included) until the sync follower's watch request is answered again by another server; agents: until their metrics show the resumed watch (published at least once a second: upper bounds)",
        "follower_kill_to_watching_ms": stats_json(follower),
        "agents_kill_to_watching_seen_ms": stats_json(agents.clone()),
        "agent_moves": agents.len(),
        "agent_failovers_counted": sum(&end, |s| s.failovers) - sum(&start, |s| s.failovers),
        "snapshots_taken": {
            "follower": stats(ctx).snapshots - follower_snapshots,
            "agents": sum(&end, |s| s.snapshots) - sum(&start, |s| s.snapshots),
        },
        "per_kill": kills,
    }))
}

/// (e) `kill -9` an agent and start it again, until it is in sync again; how many flow-mods the
/// new agent sent and whether any flow on its switch was re-added.
async fn restarts(p: &Params, ctx: &mut Ctx, lab: &mut Lab) -> anyhow::Result<Value> {
    let mut out = Vec::new();
    for r in 0..p.restarts {
        let i = r % ctx.nodes.len();
        let name = ctx.nodes[i].name.clone();
        progress(&format!("restarting the agent of {name}"));
        let (_, before) = ctx.converge(STEP_TIMEOUT).await?;
        let revision = ctx.view().revision;
        let others_before: Vec<u64> = before.iter().map(|s| s.flow_mods).collect();
        let t0 = Instant::now();
        tokio::task::block_in_place(|| lab.kill_agent(&name))?;
        let killed = t0.elapsed();
        let pid = tokio::task::block_in_place(|| lab.restart_agent(&name))?;
        let spawned = Instant::now();
        // The agent serves metrics once it knows its VIFs and has the topology, before it talks
        // to the switch.
        let mut metrics_up = None;
        let stats = loop {
            if let Ok(s) = ctx.agent_stats(i).await {
                metrics_up.get_or_insert_with(Instant::now);
                if s.converged(revision, ctx.nodes[i].vifs) {
                    break s;
                }
            }
            if spawned.elapsed() > STEP_TIMEOUT {
                bail!("the restarted agent of {name} did not converge");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let converged = Instant::now();
        let since_kill = t0.elapsed();
        let held = ctx.nodes[i]
            .of
            .dump_flows(FlowStatsRequest::default())
            .await?;
        let readded = held
            .iter()
            .filter(|s| Duration::new(u64::from(s.duration_sec), s.duration_nsec) < since_kill)
            .count();
        let after = ctx.all_stats().await;
        let others: Vec<Value> = after
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, s)| {
                json!({"chassis": ctx.nodes[j].name,
                       "flow_mods_during_restart": s.as_ref().ok().map(|s| s.flow_mods.saturating_sub(others_before[j]))})
            })
            .collect();
        out.push(json!({
            "chassis": name,
            "kill_ms": ms(killed),
            "start_to_converged_ms": ms(converged - spawned),
            "start_to_metrics_served_ms": metrics_up.map(|t| ms(t - spawned)),
            "kill_to_converged_ms": ms(converged - t0),
            "flow_mods_sent": stats.flow_mods,
            "sync_snapshots": stats.snapshots,
            "flows_installed": stats.installed,
            "flows_on_switch": held.len(),
            "flows_readded_on_switch": readded,
            "other_agents": others,
            "usage_after": usage_json(Some(pid)),
        }));
    }
    Ok(Value::Array(out))
}
