//! The Wyvern agent: one per chassis. It learns its local VIFs from OVSDB, follows the part of the
//! northbound topology its VIFs need through the sync API, computes the pipeline as desired flows, and
//! reconciles `br-int` to them over OpenFlow.
//!
//! Start-up order matters for restarts without traffic loss: the agent first gathers the complete
//! local VIF set and the topology of their networks (and of the networks reachable through
//! routers), and only then compares with what the switch holds and sends the difference — a
//! half-known topology would otherwise delete live flows.
//!
//! This module holds the agent's state (local VIFs, what it follows) and its event loop; the jobs
//! around it have modules of their own: [`bridge`] (OVSDB set-up), [`registration`] (chassis lease
//! and binding reports), [`switch`] and [`reconcile`] (the switch's flows and groups), [`punt`]
//! (packets the pipeline sends up, with [`nd`], [`dhcp_server`], [`dhcpv6_server`], [`ra`],
//! [`icmp`], [`reject`]), [`announce`] (router interfaces announced to the VMs next to them),
//! [`trunks`] (trunk subports' ports on `br-int`), [`installed`] (`external_ids:wyvern-installed` on
//! the VIFs whose flows are in the switch), [`peers`] (BFD monitor ports towards the other chassis,
//! whose sessions say whether their data plane is alive), [`trim`] (freed memory returned to the
//! system after a burst of work).

mod announce;
mod bridge;
mod dhcp_server;
mod dhcpv6_server;
mod health;
mod icmp;
mod installed;
mod limit;
mod metrics;
mod nd;
mod peers;
mod punt;
mod ra;
mod reconcile;
mod registration;
mod reject;
mod server;
mod switch;
mod switch_db;
mod trim;
mod trunks;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chassis::{Encap, VifEvent, VifWatcher};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use nb_sync::{Replica, Servers, Topics, Update};
use openflow::Message;
use openflow::conn::{Connection, Options};
use ovsdb::{Endpoint, ReplicaOptions, Uuid};
use pipeline::{Input, Pipeline};
use tokio::sync::mpsc;

use registration::{Bindings, keep_registered};
use switch::Switch;
use switch_db::RowEvent;

pub use metrics::Metrics;
pub use reconcile::Reconciler;
pub use server::Server;

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
    /// The servers' base URLs, comma-separated: the agent uses one and moves to another when it
    /// fails (see [`nb_sync::Servers`]).
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
    /// Provider networks and their bridges.
    pub bridge_mappings: Vec<chassis::BridgeMapping>,
    /// Whether this chassis may host centralized router gateways.
    pub gateway: bool,
}

/// A local VIF: its OpenFlow port and its port's network, once known.
type Vifs = BTreeMap<String, (u32, Option<String>)>;

/// The agent's state while it runs.
pub(crate) struct Agent {
    cfg: AgentConfig,
    servers: Servers,
    server: Server,
    pipeline: Pipeline,
    vifs: Vifs,
    /// Each local VIF's `Interface` row.
    vif_rows: BTreeMap<String, Uuid>,
    /// Counts changes of the local VIFs (for [`installed::Installed::update`]).
    vif_changes: u64,
    /// A change of the followed topics awaits its answer from the replica.
    awaiting_topics: bool,
    sync: nb_sync::Handle,
    /// The networks and routers the replica follows.
    followed: pipeline::model::Needs,
    /// The pipeline's needs epoch and the VIF change count when `followed` was last computed.
    follow_stamp: Option<(u64, u64)>,
    /// Last northbound revision applied.
    revision: u64,
    bindings: Bindings,
    /// Answers of the server about the networks of VIFs whose ports the topology lacks; asked in
    /// the background, so the event loop never waits on the network.
    lookups: mpsc::Sender<(String, Option<String>)>,
    looking_up: BTreeSet<String>,
    announcer: announce::Announcer,
    /// SNAT addresses asked for, by external network, and when.
    snat_requests: BTreeMap<String, std::time::Instant>,
    /// The subports' patch pairs wanted on `br-int` ([`switch_db::keep_converged`] makes them
    /// so).
    pairs: tokio::sync::watch::Sender<BTreeMap<String, trunks::Pair>>,
    /// The BFD monitor ports wanted on `br-int` ([`switch_db::keep_converged`] makes them
    /// so).
    monitors: tokio::sync::watch::Sender<BTreeMap<String, peers::Monitor>>,
    /// The data plane of the other chassis as BFD sees it (known verdicts only), reported to
    /// the server with the heartbeats.
    data_plane: tokio::sync::watch::Sender<BTreeMap<String, bool>>,
    /// BFD verdicts of *down* waiting to count.
    hold_down: peers::HoldDown,
}

/// How long before an unanswered SNAT address request is repeated.
const SNAT_REQUEST_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

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
    Metrics::set(&metrics.server_failovers, agent.servers.failovers());
}

impl Agent {
    /// Follows exactly the networks and routers this chassis needs (see
    /// [`pipeline::model::Topology::needs`]); returns whether that changed anything.
    fn follow(&mut self) -> bool {
        // Nothing that decides what the chassis follows changed since the last look: the
        // pipeline's inputs (its epoch) and the VIFs with their networks.
        let stamp = (self.pipeline.needs_epoch(), self.vif_changes);
        if self.follow_stamp == Some(stamp) {
            return false;
        }
        self.follow_stamp = Some(stamp);
        let vif_networks = self.vifs.values().filter_map(|(_, n)| n.as_deref());
        let needs = self.pipeline.topology().needs(
            &self.cfg.chassis,
            self.vifs.keys().map(String::as_str),
            vif_networks,
        );
        if needs == self.followed {
            return false;
        }
        self.followed = needs.clone();
        self.awaiting_topics = true;
        self.sync.set_topics(nb_sync::Follow {
            networks: needs.networks,
            routers: needs.routers,
            security_groups: needs.security_groups,
            address_groups: needs.address_groups,
            physnets: needs.physnets,
        });
        true
    }

    /// The subports' patch pairs the topology and the local VIFs call for; returns them when
    /// they changed.
    fn want_pairs(&mut self) -> Option<BTreeMap<String, trunks::Pair>> {
        let want = trunks::desired(self.pipeline.topology(), |p| self.vifs.contains_key(p));
        let mut changed = None;
        self.pairs.send_if_modified(|held| {
            if *held == want {
                return false;
            }
            *held = want.clone();
            changed = Some(want);
            true
        });
        changed
    }

    /// Keeps the wanted BFD monitor ports at the registered chassis.
    fn want_monitors(&mut self) {
        let want = peers::desired(self.pipeline.topology(), self.cfg.tunnel_ip);
        self.monitors.send_if_modified(|held| {
            let changed = *held != want;
            if changed {
                *held = want;
            }
            changed
        });
    }

    /// Applies what BFD says about a remote chassis' data plane: at once (`hold` false: the
    /// state found at start), or, a *down* while running, once it has lasted the hold-down
    /// ([`peers::HoldDown`]).
    fn peer_event(&mut self, event: RowEvent<bool>, hold: bool) -> pipeline::Delta {
        let RowEvent::Changed(chassis, state) = event else {
            return pipeline::Delta::default();
        };
        tracing::info!(chassis, ?state, "BFD verdict on the data plane of chassis");
        if !hold {
            return self.data_plane_changed(chassis, state);
        }
        match self
            .hold_down
            .verdict(&chassis, state, std::time::Instant::now())
        {
            Some(state) => self.data_plane_changed(chassis, state),
            None => pipeline::Delta::default(),
        }
    }

    /// Applies the *down* verdicts whose hold-down is over.
    fn peers_down_due(&mut self) -> pipeline::Delta {
        let mut delta = pipeline::Delta::default();
        for chassis in self.hold_down.due(std::time::Instant::now()) {
            delta.extend(self.data_plane_changed(chassis, Some(false)));
        }
        delta
    }

    /// Takes a chassis' data plane as changed: into the heartbeats and the pipeline.
    fn data_plane_changed(&mut self, chassis: String, state: Option<bool>) -> pipeline::Delta {
        tracing::info!(chassis, ?state, "data plane of chassis changed (BFD)");
        self.data_plane.send_if_modified(|known| match state {
            Some(up) => known.insert(chassis.clone(), up) != Some(up),
            None => known.remove(&chassis).is_some(),
        });
        self.pipeline.apply(Input::PeerDataPlane(chassis, state))
    }

    /// The network of a local VIF's port, if the agent knows it already.
    fn known_network(&self, iface: &str) -> Option<String> {
        if let Some((_, Some(n))) = self.vifs.get(iface) {
            return Some(n.clone());
        }
        self.pipeline
            .topology()
            .ports
            .get(iface)
            .map(|p| p.network_id.clone())
    }

    /// Asks the server, in the background, for the network of a VIF's port.
    fn look_up(&mut self, iface: &str) {
        if !self.looking_up.insert(iface.to_string()) {
            return;
        }
        let (server, tx, iface) = (self.server.clone(), self.lookups.clone(), iface.to_string());
        tokio::spawn(async move {
            let network = server.port_network(&iface).await.unwrap_or(None);
            let _ = tx.send((iface, network)).await;
        });
    }

    /// The server's answer to a lookup.
    fn looked_up(&mut self, iface: String, network: Option<String>) {
        self.looking_up.remove(&iface);
        let Some(network) = network else { return };
        if let Some(entry) = self.vifs.get_mut(&iface)
            && entry.1.is_none()
        {
            entry.1 = Some(network);
            self.vif_changes += 1;
            self.bindings.report(iface, true);
        }
    }

    /// Looks again for the networks of VIFs whose port was unknown.
    /// Asks the server for this chassis' SNAT address on every external network that a router
    /// of a local port's network has its gateway on (with SNAT) and that this chassis reaches,
    /// where the topology does not show one yet. The answer arrives with the network's topic;
    /// until then the request is repeated every few seconds.
    fn request_snat_addresses(&mut self) {
        let topo = self.pipeline.topology();
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for iface in self.vifs.keys() {
            let Some(port) = topo.ports.get(iface) else {
                continue;
            };
            for rif in topo.interfaces_on(&port.network_id) {
                let gateway = rif
                    .router()
                    .and_then(|r| topo.routers.get(r))
                    .and_then(|r| r.gateway.as_ref())
                    .filter(|g| g.snat);
                if let Some(g) = gateway
                    && topo.physical_port(&g.network_id).is_some()
                    && topo.snat_port(&g.network_id, &self.cfg.chassis).is_none()
                {
                    wanted.insert(g.network_id.clone());
                }
            }
        }
        let now = std::time::Instant::now();
        self.snat_requests
            .retain(|n, at| wanted.contains(n) && now.duration_since(*at) < SNAT_REQUEST_RETRY);
        for network in wanted {
            if self.snat_requests.contains_key(&network) {
                continue;
            }
            self.snat_requests.insert(network.clone(), now);
            let server = self.server.clone();
            let chassis = self.cfg.chassis.clone();
            tokio::spawn(async move {
                if let Err(e) = server.snat_address(&chassis, &network).await {
                    tracing::warn!(network, "SNAT address request failed: {e}");
                }
            });
        }
    }

    fn retry_unknown(&mut self) {
        let unknown: Vec<String> = self
            .vifs
            .iter()
            .filter(|(i, (_, n))| n.is_none() && self.known_network(i).is_none())
            .map(|(i, _)| i.clone())
            .collect();
        for iface in unknown {
            self.look_up(&iface);
        }
    }

    /// Whether local VIF `iface` on `ofport` is served: its port is in the topology, bound to
    /// that OpenFlow port, on a network the topology has.
    fn served(&self, iface: &str, ofport: u32) -> bool {
        let topo = self.pipeline.topology();
        topo.ports.get(iface).is_some_and(|port| {
            topo.local.ofport(iface) == Some(ofport) && topo.networks.contains_key(&port.network_id)
        })
    }

    /// Whether the pipeline has everything it computes for served VIF `iface`: with port
    /// security its security groups, and no change of the followed topics (which brings routers
    /// and remote groups) awaits its answer.
    fn flows_complete(&self, iface: &str) -> bool {
        let topo = self.pipeline.topology();
        let Some(port) = topo.ports.get(iface) else {
            return false;
        };
        !self.awaiting_topics
            && (!port.port_security
                || port
                    .security_groups
                    .iter()
                    .all(|g| topo.security_groups.contains_key(g)))
    }

    fn vif_up(&mut self, iface: String, ofport: u32, network: Option<String>) -> pipeline::Delta {
        let network = network.or_else(|| self.known_network(&iface));
        if network.is_some() {
            self.bindings.report(iface.clone(), true);
        } else {
            self.look_up(&iface);
        }
        self.vifs.insert(iface.clone(), (ofport, network));
        self.vif_changes += 1;
        self.pipeline.apply(Input::Vif(iface, Some(ofport)))
    }

    fn vif_down(&mut self, iface: String) -> pipeline::Delta {
        self.vifs.remove(&iface);
        self.vif_rows.remove(&iface);
        self.vif_changes += 1;
        self.bindings.report(iface.clone(), false);
        self.pipeline.apply(Input::Vif(iface, None))
    }

    /// Applies one VIF event.
    fn vif_event(&mut self, event: Option<VifEvent>) -> Result<pipeline::Delta, AgentError> {
        Ok(match event {
            Some(VifEvent::Added(v)) => {
                self.vif_rows.insert(v.iface_id.clone(), v.uuid);
                self.vif_up(v.iface_id, v.ofport, None)
            }
            Some(VifEvent::Changed { old, new }) => {
                let mut d = pipeline::Delta::default();
                if old.iface_id != new.iface_id {
                    d = self.vif_down(old.iface_id);
                }
                self.vif_rows.insert(new.iface_id.clone(), new.uuid);
                d.extend(self.vif_up(new.iface_id, new.ofport, None));
                d
            }
            Some(VifEvent::Removed(v)) => self.vif_down(v.iface_id),
            Some(VifEvent::Synced) => pipeline::Delta::default(),
            None => return Err(AgentError::Ovsdb("VIF monitor stopped".into())),
        })
    }

    fn apply_update(&mut self, update: Update) -> pipeline::Delta {
        self.revision = update.revision;
        if update.from_snapshot {
            // The answer to the last change of topics (a later change, if any, sets this again
            // once the loop follows it).
            self.awaiting_topics = false;
        }
        let mut inputs = Vec::with_capacity(update.changes.len());
        for change in update.changes {
            if let nb_sync::Change::Put(key, value) = &change
                && let Some((nb_keys::Kind::Network, id)) = nb_keys::parse(key)
                && let Some(physnet) = value
                    .get("provider:physical_network")
                    .and_then(|v| v.as_str())
                && !self
                    .cfg
                    .bridge_mappings
                    .iter()
                    .any(|m| m.physnet == physnet)
            {
                tracing::warn!(
                    network = id,
                    physnet,
                    "provider network on a physical network this chassis has no bridge mapping for: not served here"
                );
            }
            inputs.push(match change {
                nb_sync::Change::Put(k, v) => Input::Object(k, Some(v)),
                nb_sync::Change::Delete(k) => Input::Object(k, None),
            });
        }
        // One application of the whole batch: each flow it affects is computed once (a
        // network's flood flow, say, not once per port of a snapshot).
        let delta = self.pipeline.apply_all(inputs);
        for key in self.pipeline.take_malformed() {
            tracing::warn!(key, "malformed northbound object ignored");
        }
        delta
    }
}

/// Waits for the replica's next snapshot update and applies it (with the updates before it).
async fn await_snapshot(
    agent: &mut Agent,
    updates: &mut mpsc::Receiver<Update>,
) -> Result<(), AgentError> {
    loop {
        let update = updates
            .recv()
            .await
            .ok_or_else(|| AgentError::Server("sync stopped".into()))?;
        let snapshot = update.from_snapshot;
        agent.apply_update(update);
        if snapshot {
            return Ok(());
        }
    }
}

/// Runs the agent until the process ends.
pub async fn run(cfg: AgentConfig) -> Result<(), AgentError> {
    let started = std::time::Instant::now();
    trim::one_arena();
    let plumbed = bridge::plumb(&cfg).await?;
    tracing::info!(chassis = %cfg.chassis, tunnel = plumbed.tunnel, patches = ?plumbed.patches, after = ?started.elapsed(), "bridge ready");
    let servers = Servers::parse(&cfg.server);
    let server = Server::new(servers.clone());
    let data_plane = tokio::sync::watch::channel(BTreeMap::new()).0;
    tokio::spawn(keep_registered(
        server.clone(),
        cfg.clone(),
        data_plane.subscribe(),
    ));

    // The switch's flows are read meanwhile, for the first comparison (nothing is sent before
    // it): at 10 000 ports, reading 60 000 flows took 0.6 s after the topology.
    let mgmt = format!("unix:{}/{}.mgmt", cfg.ovs_rundir.display(), cfg.bridge);
    let mut options = Options::default();
    // Packet-ins carry the reason the pipeline sent them for (userdata): Nicira's format.
    options
        .on_connect
        .push(Message::SetPacketInFormat(switch::PACKET_IN2));
    let (conn, mut of_events) =
        Connection::start_with(&mgmt, options).map_err(|e| AgentError::Switch(e.to_string()))?;
    let reconciler = Reconciler::new(conn);
    let read_ahead = reconciler.read_ahead();

    // The OVSDB monitors and the sync start at once.
    let endpoint: Endpoint = cfg
        .ovsdb
        .parse()
        .map_err(|e: ovsdb::Error| AgentError::Config(e.to_string()))?;
    let mut watcher = VifWatcher::spawn(endpoint.clone(), ReplicaOptions::default());
    // The subports' inner ports and the BFD sessions are read meanwhile (each its own OVSDB
    // monitor): they are needed before the first comparison with the switch, and waiting for
    // them after the topology cost a restart at 5 000 ports 0.6 s.
    let mut inner = trunks::watch_inner(endpoint.clone());
    let pairs_ahead = trunks::read_ahead(endpoint.clone(), cfg.bridge.clone());
    let mut bfd = peers::watch_bfd(endpoint.clone());
    // The ports bound here are asked for meanwhile too.
    let topics = Topics {
        chassis: Some(cfg.chassis.clone()),
        ..Topics::default()
    };
    let (replica, sync) = Replica::with_servers(servers.clone(), topics);
    let (updates_tx, mut updates) = mpsc::channel(64);
    tokio::spawn(replica.run(updates_tx));
    // 1. The ports bound to this chassis (asked for at once), and at once the topology of their
    //    networks (and, through routers, of the networks behind them): the server prepares it
    //    while the complete local VIF set is read.
    let (lookups, mut looked_up) = mpsc::channel(64);
    let mut agent = Agent {
        cfg: cfg.clone(),
        servers,
        server: server.clone(),
        pipeline: Pipeline::new(&cfg.chassis),
        vifs: BTreeMap::new(),
        vif_rows: BTreeMap::new(),
        vif_changes: 0,
        awaiting_topics: false,
        sync,
        followed: Default::default(),
        follow_stamp: None,
        revision: 0,
        bindings: Bindings::new(server.clone(), cfg.chassis.clone()),
        lookups,
        looking_up: BTreeSet::new(),
        snat_requests: BTreeMap::new(),
        announcer: announce::Announcer::default(),
        pairs: tokio::sync::watch::channel(BTreeMap::new()).0,
        monitors: tokio::sync::watch::channel(BTreeMap::new()).0,
        data_plane,
        hold_down: peers::HoldDown::default(),
    };
    // Nothing is sent before the first comparison with the switch, which reads the desired
    // flows whole: until then, no deltas.
    agent.pipeline.set_quiet(true);
    agent.pipeline.apply(Input::Tunnel(Some(plumbed.tunnel)));
    for (physnet, ofport) in plumbed.patches {
        agent.pipeline.apply(Input::Patch(physnet, Some(ofport)));
    }
    // What the BFD sessions an earlier agent left running say of the other chassis' data planes
    // goes in before the topology: taken after it, each verdict recomputed the flows of every
    // port on that chassis (5 % of a restart's CPU at 10 000 ports, in a profile).
    peers::await_synced(&mut bfd, Duration::from_secs(2), |e| {
        agent.peer_event(e, false);
    })
    .await;
    await_snapshot(&mut agent, &mut updates).await?;
    tracing::info!(after = ?started.elapsed(), "ports bound here read");
    let asked = agent.follow();
    // 2. The complete local VIF set (before the topology: a VIF known when its port's flows are
    //    first computed costs no second computation).
    let mut initial: BTreeMap<String, (u32, Uuid)> = BTreeMap::new();
    loop {
        match watcher.next().await {
            Some(VifEvent::Added(v)) => {
                initial.insert(v.iface_id, (v.ofport, v.uuid));
            }
            Some(VifEvent::Changed { old, new }) => {
                if old.iface_id != new.iface_id {
                    initial.remove(&old.iface_id);
                }
                initial.insert(new.iface_id, (new.ofport, new.uuid));
            }
            Some(VifEvent::Removed(v)) => {
                initial.remove(&v.iface_id);
            }
            Some(VifEvent::Synced) => break,
            None => return Err(AgentError::Ovsdb("VIF monitor stopped".into())),
        }
    }
    tracing::info!(vifs = initial.len(), after = ?started.elapsed(), "local VIFs read");
    for (iface, (ofport, row)) in initial {
        // Before the first comparison with the switch the topology must be complete: here the
        // agent waits for the server's answer.
        let network = match agent.known_network(&iface) {
            Some(n) => Some(n),
            None => server.port_network(&iface).await.unwrap_or(None),
        };
        agent.vif_rows.insert(iface.clone(), row);
        agent.vif_up(iface, ofport, network);
    }
    tracing::info!(after = ?started.elapsed(), "local VIFs in the pipeline");
    // 3. The topology asked for above, then whatever more the VIFs need (a VIF whose port is not
    //    bound here).
    if asked {
        await_snapshot(&mut agent, &mut updates).await?;
    }
    while agent.follow() {
        await_snapshot(&mut agent, &mut updates).await?;
    }
    tracing::info!(
        flows = agent.pipeline.flow_count(),
        after = ?started.elapsed(),
        "topology read and pipeline computed"
    );
    // The trunks' subports: their patch pairs as the complete topology wants them (adopted as
    // they are after a restart), and the inner ends' OpenFlow ports, before the comparison.
    let want = agent.want_pairs().unwrap_or_default();
    trunks::converge_ahead(pairs_ahead, &endpoint, &cfg.bridge, &want).await?;
    tracing::info!(after = ?started.elapsed(), "subports' patch pairs in place");
    trunks::await_inner(&mut inner, &want, Duration::from_secs(10), |e| {
        if let RowEvent::Changed(subport, ofport) = e {
            agent.pipeline.apply(Input::Inner(subport, ofport));
        }
    })
    .await;
    let bridge = cfg.bridge.clone();
    switch_db::keep_converged(
        endpoint.clone(),
        "subport ports",
        agent.pairs.subscribe(),
        move |client, want| {
            let bridge = bridge.clone();
            async move { trunks::converge(&client, &bridge, &want).await }
        },
    );
    // BFD monitor ports towards the registered chassis (adopted as they are after a restart;
    // what their sessions say was read before the topology): a chassis whose agent is down but
    // whose data plane is up keeps its flows across this agent's restart.
    agent.want_monitors();
    let (bridge, kind, local_ip) = (cfg.bridge.clone(), cfg.encap.ovs_type(), cfg.tunnel_ip);
    switch_db::keep_converged(
        endpoint.clone(),
        "BFD monitor ports",
        agent.monitors.subscribe(),
        move |client, want| {
            let bridge = bridge.clone();
            async move { peers::converge(&client, &bridge, kind, local_ip, &want).await }
        },
    );
    tracing::info!(after = ?started.elapsed(), "subports read; comparing with the switch");

    // 3. Only now compare with the switch.
    agent.pipeline.set_quiet(false);
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
    let mut sw = Switch {
        reconciler,
        read_ahead: Some(read_ahead),
        watcher,
        connected: false,
        in_sync: false,
        in_flight: FuturesOrdered::new(),
        handlers: punt::Handlers::default(),
        metrics: metrics.clone(),
        announce_needed: true,
        sent_bundles: 0,
        acked_bundles: 0,
        resyncs_done: 0,
    };
    let mut installed = installed::Installed::start(endpoint.clone(), sw.watcher.share_rows());
    // Health checks of local load-balancer members: their probes go out from here.
    let (probe_frames_tx, mut probe_frames) = mpsc::channel(health::FRAMES);
    let mut checker = health::Checker::start(server.clone(), probe_frames_tx);
    sw.handlers.health = Some(checker.inbox());
    let mut retry = tokio::time::interval(UNKNOWN_PORT_RETRY);
    let mut sync_stats = agent.sync.subscribe();
    // Unsolicited router advertisements, on Neutron's (radvd's) schedule.
    let mut advertised = 0u32;
    let next_advertisement = |sent| {
        tokio::time::Instant::now() + ndp::neutron::unsolicited_interval(sent, fastrand::f64())
    };
    let advertise = tokio::time::sleep_until(next_advertisement(advertised));
    tokio::pin!(advertise);
    // The start-up (snapshot, comparison) was the largest burst of all.
    let mut trimmer = trim::Trimmer::default();
    trimmer.worked(trim::WORTH_IT, std::time::Instant::now());
    loop {
        publish(&metrics, &agent, &sw.reconciler, sw.in_sync);
        let trim_at = trimmer.due();
        let next_announcement = agent.announcer.next_due();
        let announcing = next_announcement.is_some();
        let announce_at = next_announcement.unwrap_or_else(std::time::Instant::now);
        let next_hold = agent.hold_down.next_due();
        let holding = next_hold.is_some();
        let hold_at = next_hold.unwrap_or_else(std::time::Instant::now);
        let mut delta = tokio::select! {
            _ = retry.tick() => {
                agent.retry_unknown();
                agent.request_snat_addresses();
                if sw.connected && !sw.in_sync {
                    // The last resync failed on a live connection: try again.
                    sw.resync(&agent).await;
                }
                pipeline::Delta::default()
            }
            // Repeated announcements on physical networks (sent below, after the bundle).
            () = tokio::time::sleep_until(announce_at.into()), if announcing => {
                pipeline::Delta::default()
            }
            () = &mut advertise => {
                sw.advertise(&agent).await;
                advertised = advertised.saturating_add(1);
                advertise.as_mut().reset(next_advertisement(advertised));
                pipeline::Delta::default()
            }
            Some((actions, frame)) = probe_frames.recv() => {
                sw.reconciler.packet_out_with(actions, frame).await;
                pipeline::Delta::default()
            }
            Some((iface, network)) = looked_up.recv() => {
                agent.looked_up(iface, network);
                pipeline::Delta::default()
            }
            Some(update) = updates.recv() => agent.apply_update(update),
            // The sync counters changed (a resume, a failover): published at once.
            Ok(()) = sync_stats.changed() => pipeline::Delta::default(),
            event = sw.watcher.next() => agent.vif_event(event)?,
            Some(event) = bfd.next() => agent.peer_event(event, true),
            () = tokio::time::sleep_until(hold_at.into()), if holding => agent.peers_down_due(),
            () = tokio::time::sleep_until(trim_at.unwrap_or_else(std::time::Instant::now).into()),
                if trim_at.is_some() => {
                trimmer.trim_if_due(std::time::Instant::now());
                pipeline::Delta::default()
            }
            Some(event) = inner.next() => match event {
                RowEvent::Changed(subport, ofport) => {
                    agent.pipeline.apply(Input::Inner(subport, ofport))
                }
                RowEvent::Synced => pipeline::Delta::default(),
            },
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
                delta.extend(agent.vif_event(event)?);
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
        agent.follow();
        agent.want_pairs();
        agent.want_monitors();
        let changed = !delta.is_empty();
        if changed {
            agent.request_snat_addresses();
        }
        trimmer.worked(delta.len(), std::time::Instant::now());
        sw.send(&agent, delta).await;
        installed.update(&agent, &sw);
        checker.follow(&agent.pipeline, agent.revision, changed, sw.in_sync);
        sw.announce(&mut agent, changed).await;
    }
}
