//! The Wyvern agent: one per chassis. It learns its local VIFs from OVSDB, follows the part of the
//! northbound topology its VIFs need through the sync API, computes the pipeline as desired flows, and
//! reconciles `br-int` to them over OpenFlow.
//!
//! Start-up order matters for restarts without traffic loss: the agent first gathers the complete
//! local VIF set and the topology of their networks, and only then compares with what the switch holds
//! and sends the difference — a half-known topology would otherwise delete live flows.

mod dhcp_server;
mod limit;
mod metrics;
mod nd;
mod reconcile;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chassis::{ChassisConfig, Encap, VifEvent, VifWatcher};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use nb_sync::{Replica, Topics, Update};
use openflow::conn::{ConnError, Connection, Event};
use ovsdb::{Client, ClientOptions, Endpoint, Operation, ReplicaOptions};
use pipeline::{Input, Pipeline};
use tokio::sync::mpsc;

pub use metrics::Metrics;
pub use reconcile::Reconciler;
pub use server::Server;

/// How often the agent renews its chassis lease.
const HEARTBEAT: Duration = Duration::from_secs(3);
/// Neighbour advertisements the agent sends per port and second, at most.
const ND_ANSWERS_PER_SECOND: u32 = 50;
/// DHCP answers the agent sends per port and second, at most.
const DHCP_ANSWERS_PER_SECOND: u32 = 20;
/// Bundles sent to the switch and not yet confirmed, at most.
const MAX_BUNDLES_IN_FLIGHT: usize = 16;
/// Events gathered into one bundle, at most.
const MAX_EVENTS_PER_BUNDLE: usize = 1024;
/// How often the agent asks again about VIFs whose port did not exist yet, and retries a
/// failed resync.
const UNKNOWN_PORT_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("server: {0}")]
    Server(String),
    #[error("switch: {0}")]
    Switch(String),
    #[error("ovsdb: {0}")]
    Ovsdb(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// What an agent needs to know about its chassis.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The server's base URL.
    pub server: String,
    /// This chassis' id.
    pub chassis: String,
    /// OVSDB endpoint (`unix:PATH` or `tcp:HOST:PORT`).
    pub ovsdb: String,
    /// Open vSwitch run directory (holds `<bridge>.mgmt`).
    pub ovs_rundir: std::path::PathBuf,
    /// Underlay address of this chassis.
    pub tunnel_ip: IpAddr,
    pub encap: Encap,
    pub bridge: String,
    pub datapath_type: String,
    /// Where to serve Prometheus metrics (`None`: nowhere).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

async fn tunnel_ofport(client: &Client, name: &str) -> Result<Option<u32>, AgentError> {
    let select = Operation::Select {
        table: "Interface".into(),
        conditions: vec![ovsdb::Condition::eq("name", ovsdb::Value::atom(name))],
        columns: Some(vec!["ofport".into()]),
    };
    let res = client
        .transact("Open_vSwitch", &[select])
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    Ok(res
        .first()
        .and_then(|r| r.rows.as_ref())
        .and_then(|rows| rows.first())
        .and_then(|row| row.get("ofport"))
        .and_then(|v| v.as_atom())
        .and_then(|a| a.as_integer())
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| (1..0xff00).contains(p)))
}

/// Sets up the bridge and tunnel port; returns the tunnel's OpenFlow port.
async fn plumb(cfg: &AgentConfig) -> Result<u32, AgentError> {
    let endpoint: Endpoint = cfg
        .ovsdb
        .parse()
        .map_err(|e: ovsdb::Error| AgentError::Config(e.to_string()))?;
    let client = Client::connect(&endpoint, ClientOptions::default())
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    let chassis_cfg = ChassisConfig {
        integration_bridge: cfg.bridge.clone(),
        datapath_type: cfg.datapath_type.clone(),
        encaps: vec![cfg.encap],
        local_ip: Some(cfg.tunnel_ip),
        ..ChassisConfig::default()
    };
    let report = chassis::ensure(&client, &chassis_cfg)
        .await
        .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    if let Some(seq) = report.cfg_seq {
        chassis::wait_applied(&client, seq, Duration::from_secs(10))
            .await
            .map_err(|e| AgentError::Ovsdb(e.to_string()))?;
    }
    for _ in 0..200 {
        if let Some(p) = tunnel_ofport(&client, cfg.encap.port_name()).await? {
            return Ok(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(AgentError::Ovsdb(
        "the tunnel port got no OpenFlow port".into(),
    ))
}

/// Keeps the chassis registered and its lease alive, forever.
async fn keep_registered(server: Server, cfg: AgentConfig) {
    let encap = cfg.encap.ovs_type();
    let mut lease = None;
    loop {
        lease = match lease {
            None => match server.register(&cfg.chassis, cfg.tunnel_ip, encap).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!("registration failed: {e}");
                    None
                }
            },
            Some(l) => match server.heartbeat(&cfg.chassis, l).await {
                Ok(true) => Some(l),
                Ok(false) => None,
                Err(e) => {
                    tracing::warn!("heartbeat failed: {e}");
                    Some(l)
                }
            },
        };
        let pause = if lease.is_some() {
            HEARTBEAT
        } else {
            Duration::from_millis(500)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Reports VIF bindings to the server in the background: concurrently across ports, but for each port
/// the last state wins (a port that comes and goes quickly ends up DOWN, never ACTIVE), and each report
/// is retried until the server answers.
#[derive(Clone)]
struct Bindings {
    server: Server,
    chassis: String,
    state: Arc<std::sync::Mutex<BindingState>>,
}

#[derive(Default)]
struct BindingState {
    /// The state each port should be reported in.
    wanted: BTreeMap<String, bool>,
    /// Ports with a report in flight.
    busy: BTreeSet<String>,
}

impl Bindings {
    fn new(server: Server, chassis: String) -> Self {
        Self {
            server,
            chassis,
            state: Arc::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BindingState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, port: String, up: bool) {
        let start = {
            let mut st = self.lock();
            st.wanted.insert(port.clone(), up);
            st.busy.insert(port.clone())
        };
        if start {
            tokio::spawn(self.clone().deliver(port));
        }
    }

    /// Reports `port` until the state reported is the one wanted.
    async fn deliver(self, port: String) {
        loop {
            let Some(up) = self.lock().wanted.get(&port).copied() else {
                return;
            };
            for attempt in 0..20u32 {
                match self.server.bind(&port, &self.chassis, up).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::debug!(
                            "binding report for {port} failed ({e}), attempt {attempt}"
                        );
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
            let mut st = self.lock();
            if st.wanted.get(&port) == Some(&up) {
                st.wanted.remove(&port);
                st.busy.remove(&port);
                return;
            }
        }
    }
}

/// The agent's state while it runs.
struct Agent {
    cfg: AgentConfig,
    server: Server,
    pipeline: Pipeline,
    /// Local VIFs: iface-id → (ofport, network).
    vifs: BTreeMap<String, (u32, Option<String>)>,
    sync: nb_sync::Handle,
    /// Last northbound revision applied.
    revision: u64,
    bindings: Bindings,
}

/// Copies the agent's state into the metrics.
fn publish(metrics: &Metrics, agent: &Agent, reconciler: &Reconciler, in_sync: bool) {
    let stats = agent.sync.stats();
    Metrics::set(&metrics.flows_desired, agent.pipeline.flow_count() as u64);
    Metrics::set(&metrics.flows_installed, reconciler.installed() as u64);
    Metrics::set(&metrics.flow_mods_sent, reconciler.sent);
    Metrics::set(&metrics.nb_revision, agent.revision);
    Metrics::set(&metrics.in_sync, u64::from(in_sync));
    Metrics::set(&metrics.local_vifs, agent.vifs.len() as u64);
    Metrics::set(&metrics.sync_snapshots, stats.snapshots);
    Metrics::set(&metrics.sync_resumes, stats.resumes);
}

impl Agent {
    /// The networks this chassis needs: those of its VIFs and of the ports bound to it (bound
    /// before their VIF appears, so that their flows are ready when it does).
    fn networks(&self) -> BTreeSet<String> {
        let bound = self
            .pipeline
            .topology()
            .ports
            .values()
            .filter(|p| p.host.as_deref() == Some(self.cfg.chassis.as_str()))
            .map(|p| p.network_id.clone());
        self.vifs
            .values()
            .filter_map(|(_, n)| n.clone())
            .chain(bound)
            .collect()
    }

    /// Follows exactly the networks this chassis needs (a fresh snapshot when they change).
    fn follow_networks(&self) {
        self.sync.set_networks(self.networks());
    }

    /// The network of a local VIF's port: from the topology if the port is known already, else
    /// asked from the server (`None` while the port does not exist).
    async fn network_of(&self, iface: &str) -> Option<String> {
        if let Some((_, Some(n))) = self.vifs.get(iface) {
            return Some(n.clone());
        }
        if let Some(p) = self.pipeline.topology().ports.get(iface) {
            return Some(p.network_id.clone());
        }
        self.server.port_network(iface).await.unwrap_or(None)
    }

    /// Looks again for the networks of VIFs whose port was unknown.
    async fn retry_unknown(&mut self) {
        let unknown: Vec<String> = self
            .vifs
            .iter()
            .filter(|(_, (_, n))| n.is_none())
            .map(|(i, _)| i.clone())
            .collect();
        for iface in unknown {
            if let Some(n) = self.network_of(&iface).await {
                if let Some(entry) = self.vifs.get_mut(&iface) {
                    entry.1 = Some(n);
                }
                self.bindings.report(iface, true);
            }
        }
        self.follow_networks();
    }

    async fn vif_up(&mut self, iface: String, ofport: u32) -> pipeline::Delta {
        let network = self.network_of(&iface).await;
        self.vifs.insert(iface.clone(), (ofport, network));
        self.bindings.report(iface.clone(), true);
        self.pipeline.apply(Input::Vif(iface, Some(ofport)))
    }

    fn vif_down(&mut self, iface: String) -> pipeline::Delta {
        self.vifs.remove(&iface);
        self.bindings.report(iface.clone(), false);
        self.pipeline.apply(Input::Vif(iface, None))
    }

    /// Applies one VIF event.
    async fn vif_event(&mut self, event: Option<VifEvent>) -> Result<pipeline::Delta, AgentError> {
        Ok(match event {
            Some(VifEvent::Added(v)) => self.vif_up(v.iface_id, v.ofport).await,
            Some(VifEvent::Changed { old, new }) => {
                let mut d = pipeline::Delta::default();
                if old.iface_id != new.iface_id {
                    d = self.vif_down(old.iface_id);
                }
                d.extend(self.vif_up(new.iface_id, new.ofport).await);
                d
            }
            Some(VifEvent::Removed(v)) => self.vif_down(v.iface_id),
            Some(VifEvent::Synced) => pipeline::Delta::default(),
            None => return Err(AgentError::Ovsdb("VIF monitor stopped".into())),
        })
    }

    fn apply_update(&mut self, update: Update) -> pipeline::Delta {
        self.revision = update.revision;
        let mut delta = pipeline::Delta::default();
        for change in update.changes {
            let input = match change {
                nb_sync::Change::Put(k, v) => Input::Object(k, Some(v)),
                nb_sync::Change::Delete(k) => Input::Object(k, None),
            };
            delta.extend(self.pipeline.apply(input));
        }
        delta
    }
}

/// The OpenFlow port a packet-in came in on.
fn in_port(pi: &openflow::message::PacketIn) -> Option<u32> {
    pi.match_
        .exact(openflow::Field::InPort)
        .and_then(|p| u32::try_from(p).ok())
}

/// Answers a neighbour solicitation the pipeline sent up (its flow's cookie names the port).
async fn answer_solicitation(
    agent: &Agent,
    reconciler: &Reconciler,
    limit: &mut limit::RateLimit,
    pi: &openflow::message::PacketIn,
) {
    let Some(port) = agent.pipeline.port_of_cookie(pi.cookie) else {
        return;
    };
    let Some(in_port) = in_port(pi) else {
        return;
    };
    let Some((target, _, _)) = nd::solicitation(&pi.data) else {
        return;
    };
    if !port.ips.contains(&IpAddr::V6(target)) || !limit.allow(&port.id) {
        return;
    }
    let Some(frame) = nd::advertisement(&pi.data, pipeline::model::mac_octets(port.mac)) else {
        return;
    };
    reconciler.packet_out(in_port, frame).await;
}

/// Answers a DHCP request the pipeline sent up (its flow's cookie names the network; the port is
/// the one the request came in on).
async fn answer_dhcp(
    agent: &Agent,
    reconciler: &Reconciler,
    limit: &mut limit::RateLimit,
    pi: &openflow::message::PacketIn,
) {
    let topo = agent.pipeline.topology();
    let Some(in_port) = in_port(pi) else {
        return;
    };
    let Some(port) = topo.local.vif_at(in_port).and_then(|id| topo.ports.get(id)) else {
        return;
    };
    if !limit.allow(&port.id) {
        return;
    }
    if let Some(frame) = dhcp_server::reply(topo, port, &pi.data) {
        reconciler.packet_out(in_port, frame).await;
    }
}

/// Runs the agent until the process ends.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let tunnel = plumb(&cfg).await?;
    tracing::info!(chassis = %cfg.chassis, tunnel, "bridge ready");
    let server = Server::new(&cfg.server);
    tokio::spawn(keep_registered(server.clone(), cfg.clone()));

    // 1. The complete local VIF set, and the networks it needs.
    let endpoint: Endpoint = cfg
        .ovsdb
        .parse()
        .map_err(|e: ovsdb::Error| AgentError::Config(e.to_string()))?;
    let mut watcher = VifWatcher::spawn(endpoint, ReplicaOptions::default());
    let mut initial: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        match watcher.next().await {
            Some(VifEvent::Added(v)) => {
                initial.insert(v.iface_id, v.ofport);
            }
            Some(VifEvent::Changed { new, .. }) => {
                initial.insert(new.iface_id, new.ofport);
            }
            Some(VifEvent::Removed(v)) => {
                initial.remove(&v.iface_id);
            }
            Some(VifEvent::Synced) => break,
            None => return Err(AgentError::Ovsdb("VIF monitor stopped".into())),
        }
    }
    // 2. The ports bound to this chassis, then the topology of the networks they and the VIFs need.
    let topics = Topics {
        chassis: Some(cfg.chassis.clone()),
        ..Topics::default()
    };
    let (replica, sync) = Replica::new(&cfg.server, topics);
    let mut agent = Agent {
        cfg: cfg.clone(),
        server: server.clone(),
        pipeline: Pipeline::new(&cfg.chassis),
        vifs: BTreeMap::new(),
        sync,
        revision: 0,
        bindings: Bindings::new(server.clone(), cfg.chassis.clone()),
    };
    agent.pipeline.apply(Input::Tunnel(Some(tunnel)));
    let (updates_tx, mut updates) = mpsc::channel(64);
    tokio::spawn(replica.run(updates_tx));
    let stopped = || AgentError::Server("sync stopped".into());
    let first = updates.recv().await.ok_or_else(stopped)?;
    agent.apply_update(first);
    for (iface, ofport) in initial {
        agent.vif_up(iface, ofport).await;
    }
    if !agent.networks().is_empty() {
        agent.follow_networks();
        loop {
            let update = updates.recv().await.ok_or_else(stopped)?;
            let snapshot = update.from_snapshot;
            agent.apply_update(update);
            if snapshot {
                break;
            }
        }
    }

    // 3. Only now compare with the switch.
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = cfg.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| AgentError::Config(format!("metrics listener {addr}: {e}")))?;
        tokio::spawn(metrics::serve(
            listener,
            metrics.clone(),
            cfg.chassis.clone(),
        ));
    }
    let mgmt = format!("unix:{}/{}.mgmt", cfg.ovs_rundir.display(), cfg.bridge);
    let (conn, mut of_events) =
        Connection::start(&mgmt).map_err(|e| AgentError::Switch(e.to_string()))?;
    let mut sw = Switch {
        reconciler: Reconciler::new(conn),
        watcher,
        connected: false,
        in_sync: false,
        in_flight: FuturesOrdered::new(),
        nd_limit: limit::RateLimit::new(ND_ANSWERS_PER_SECOND),
        dhcp_limit: limit::RateLimit::new(DHCP_ANSWERS_PER_SECOND),
        metrics: metrics.clone(),
    };
    let mut retry = tokio::time::interval(UNKNOWN_PORT_RETRY);
    loop {
        publish(&metrics, &agent, &sw.reconciler, sw.in_sync);
        let mut delta = tokio::select! {
            _ = retry.tick() => {
                agent.retry_unknown().await;
                if sw.connected && !sw.in_sync {
                    // The last resync failed on a live connection: try again.
                    sw.resync(&agent).await;
                }
                pipeline::Delta::default()
            }
            Some(update) = updates.recv() => agent.apply_update(update),
            event = sw.watcher.next() => agent.vif_event(event).await?,
            event = of_events.recv() => sw.event(&mut agent, event).await?.unwrap_or_default(),
            Some(outcome) = sw.in_flight.next(), if !sw.in_flight.is_empty() => {
                sw.settle(&agent, outcome).await;
                pipeline::Delta::default()
            }
        };
        // Whatever else is already waiting goes into the same bundle (up to a bound, so that a
        // stream of events, such as packet-ins, cannot hold changes back).
        for _ in 0..MAX_EVENTS_PER_BUNDLE {
            if let Ok(update) = updates.try_recv() {
                delta.extend(agent.apply_update(update));
            } else if let Some(event) = sw.watcher.next().now_or_never() {
                delta.extend(agent.vif_event(event).await?);
            } else if let Some(event) = of_events.recv().now_or_never() {
                match sw.event(&mut agent, event).await? {
                    Some(d) => delta.extend(d),
                    // The resync sent everything so far.
                    None => delta = pipeline::Delta::default(),
                }
            } else {
                break;
            }
        }
        agent.follow_networks();
        sw.send(&agent, delta).await;
    }
}

/// Returns memory the allocator keeps free after a burst back to the system (glibc keeps it
/// otherwise: a restarted agent would hold its start-up peak for good).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own heap bookkeeping.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The agent's side of its switch: the reconciler and the VIF watcher whose port numbers the
/// switch's announcements keep current.
struct Switch {
    reconciler: Reconciler,
    watcher: VifWatcher,
    /// The OpenFlow connection is up.
    connected: bool,
    /// The reconciler holds the switch's flows (false while disconnected or after a failed
    /// resync).
    in_sync: bool,
    /// Bundles sent and not yet confirmed, oldest first.
    in_flight: FuturesOrdered<reconcile::Confirmation>,
    nd_limit: limit::RateLimit,
    dhcp_limit: limit::RateLimit,
    metrics: Arc<Metrics>,
}

impl Switch {
    /// Sends a delta as one bundle without waiting for earlier ones to be confirmed. Out of
    /// sync (switch disconnected) deltas only change the pipeline; the resync after the
    /// reconnection sends them.
    async fn send(&mut self, agent: &Agent, delta: pipeline::Delta) {
        if !self.in_sync || delta.is_empty() {
            return;
        }
        while self.in_flight.len() >= MAX_BUNDLES_IN_FLIGHT {
            if let Some(outcome) = self.in_flight.next().await
                && self.settle(agent, outcome).await
            {
                // The resync sent the whole pipeline, this delta included (or failed, and
                // the next one will).
                return;
            }
        }
        match self.reconciler.apply(delta).await {
            Ok(confirmation) => self.in_flight.push_back(confirmation),
            Err(e) => {
                tracing::warn!("{e}; resynchronising when the switch answers again");
                self.in_sync = false;
                self.in_flight.clear();
            }
        }
    }

    /// Takes the switch's answer to the oldest bundle in flight: a refusal means the switch
    /// holds something else than the reconciler thinks, so it reads the switch again (a lost
    /// connection is left to the reconnection). Returns whether it resynchronised.
    async fn settle(&mut self, agent: &Agent, outcome: Result<(), ConnError>) -> bool {
        match outcome {
            Ok(()) | Err(ConnError::Disconnected) => false,
            Err(e) => {
                tracing::warn!("the switch did not apply a bundle: {e}; resynchronising");
                self.resync(agent).await;
                true
            }
        }
    }

    /// Reads what the switch holds and sends the difference from the whole pipeline. Bundles
    /// still in flight are applied before the read, so their outcomes no longer matter.
    async fn resync(&mut self, agent: &Agent) {
        self.metrics
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.in_flight.clear();
        match self.reconciler.resync(agent.pipeline.flows()).await {
            Ok(()) => {
                self.in_sync = true;
                // The snapshot and the switch's flow dump were the big allocations; what
                // they left free goes back to the system.
                release_free_memory();
            }
            Err(e) => {
                tracing::warn!("resync failed: {e}");
                self.in_sync = false;
            }
        }
    }

    /// Reads the switch's ports, hands them to the VIF watcher and applies the VIF changes
    /// that causes.
    async fn list_ports(&mut self, agent: &mut Agent) -> Result<pipeline::Delta, AgentError> {
        match self.reconciler.ports().await {
            Ok(ports) => self.watcher.ports_listed(ports),
            Err(e) => tracing::warn!("reading the switch's ports failed: {e}"),
        }
        let mut delta = pipeline::Delta::default();
        while let Some(event) = self.watcher.next().now_or_never() {
            delta.extend(agent.vif_event(event).await?);
        }
        Ok(delta)
    }

    /// Handles one event of the OpenFlow connection; returns the pipeline changes it causes and
    /// that are still to be sent, or `None` after a resync (which sent the whole pipeline, so
    /// nothing pending needs sending any more).
    async fn event(
        &mut self,
        agent: &mut Agent,
        event: Option<Event>,
    ) -> Result<Option<pipeline::Delta>, AgentError> {
        let mut delta = pipeline::Delta::default();
        match event {
            Some(Event::Connected(_)) => {
                self.connected = true;
                // The switch's own port list numbers the VIFs from now on; the resync below
                // sends whatever that changes.
                self.list_ports(agent).await?;
                self.resync(agent).await;
                return Ok(None);
            }
            Some(Event::Lost(n)) => {
                // Port announcements may be among what was lost: read the list again.
                tracing::warn!("{n} switch events were lost; reading the switch's ports again");
                delta = self.list_ports(agent).await?;
            }
            Some(Event::Message(_, openflow::Message::PortStatus(st))) => {
                // A new port is announced here well before its `ofport` reaches OVSDB.
                let deleted = st.reason == openflow::message::port_reason::DELETE;
                self.watcher
                    .port_announced(&st.port.name, (!deleted).then_some(st.port.port_no));
                while let Some(event) = self.watcher.next().now_or_never() {
                    delta.extend(agent.vif_event(event).await?);
                }
            }
            Some(Event::Message(_, openflow::Message::PacketIn(pi))) => {
                if agent.pipeline.port_of_cookie(pi.cookie).is_some() {
                    answer_solicitation(agent, &self.reconciler, &mut self.nd_limit, &pi).await;
                } else {
                    answer_dhcp(agent, &self.reconciler, &mut self.dhcp_limit, &pi).await;
                }
            }
            Some(Event::Disconnected(why)) => {
                tracing::warn!("lost br-int: {why}");
                self.watcher.ports_unknown();
                self.connected = false;
                self.in_sync = false;
                self.in_flight.clear();
            }
            Some(_) => {}
            None => return Err(AgentError::Switch("OpenFlow connection stopped".into())),
        }
        Ok(Some(delta))
    }
}
