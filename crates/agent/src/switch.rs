//! The agent's side of its switch: the reconciler, the bundles in flight, and the VIF watcher whose
//! port numbers the switch's announcements keep current.

use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use openflow::conn::{ConnError, Event};

use crate::punt::{Handlers, Punted};
use crate::reconcile::Reconciler;
use crate::{Agent, AgentError, Metrics};
use chassis::VifWatcher;

/// Bundles sent to the switch and not yet confirmed, at most.
const MAX_BUNDLES_IN_FLIGHT: usize = 16;

/// Returns memory the allocator keeps free after a burst back to the system (glibc keeps it
/// otherwise: a restarted agent would hold its start-up peak for good).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers; it only walks glibc's own heap bookkeeping.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The packet-in format that carries the controller action's userdata (`NXPIF_NXT_PACKET_IN2`).
pub const PACKET_IN2: u32 = 2;

/// The agent's side of its switch.
pub struct Switch {
    pub reconciler: Reconciler,
    pub watcher: VifWatcher,
    /// The OpenFlow connection is up.
    pub connected: bool,
    /// The reconciler holds the switch's flows (false while disconnected or after a failed
    /// resync).
    pub in_sync: bool,
    /// Bundles sent and not yet confirmed, oldest first, with their sequence numbers.
    pub in_flight: FuturesOrdered<BoxFuture<'static, Outcome>>,
    /// Answers to packets the pipeline sends up.
    pub handlers: Handlers,
    pub metrics: Arc<Metrics>,
    /// Flows changed (or the switch was resynchronised) since the last announcements.
    pub announce_needed: bool,
    /// Bundles sent so far: the sequence number of the last one.
    pub sent_bundles: u64,
    /// Every bundle up to this one is in the switch (acknowledged, or covered by a resync).
    pub acked_bundles: u64,
    /// Successful resyncs (the first one makes the switch hold the whole pipeline).
    pub resyncs_done: u64,
    /// The switch read while the agent started ([`Reconciler::read_ahead`]), for the first
    /// resync.
    pub read_ahead: Option<tokio::task::JoinHandle<Option<crate::reconcile::Held>>>,
}

/// A bundle's sequence number and the switch's answer to it.
pub type Outcome = (u64, Result<(), ConnError>);

impl Switch {
    /// Sends a delta as one bundle without waiting for earlier ones to be confirmed. Out of
    /// sync (switch disconnected) deltas only change the pipeline; the resync after the
    /// reconnection sends them.
    pub async fn send(&mut self, agent: &Agent, delta: pipeline::Delta) {
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
            Ok(confirmation) => {
                self.sent_bundles += 1;
                let seq = self.sent_bundles;
                self.in_flight
                    .push_back(confirmation.map(move |r| (seq, r)).boxed());
            }
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
    pub async fn settle(&mut self, agent: &Agent, (seq, outcome): Outcome) -> bool {
        match outcome {
            Ok(()) => {
                self.acked_bundles = self.acked_bundles.max(seq);
                false
            }
            Err(ConnError::Disconnected) => false,
            Err(e) => {
                tracing::warn!("the switch did not apply a bundle: {e}; resynchronising");
                self.resync(agent).await;
                true
            }
        }
    }

    /// Reads what the switch holds and sends the difference from the whole pipeline. Bundles
    /// still in flight are applied before the read, so their outcomes no longer matter.
    pub async fn resync(&mut self, agent: &Agent) {
        self.metrics
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.in_flight.clear();
        // The first resync uses the read made while the agent started, if still good.
        let ahead = match self.read_ahead.take() {
            Some(reading) => reading.await.ok().flatten(),
            None => None,
        };
        match self
            .reconciler
            .resync(agent.pipeline.flows(), agent.pipeline.groups(), ahead)
            .await
        {
            Ok(()) => {
                self.in_sync = true;
                self.announce_needed = true;
                // The switch holds the whole pipeline now, whatever was in flight.
                self.acked_bundles = self.sent_bundles;
                self.resyncs_done += 1;
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

    /// Sends an unsolicited router advertisement to every local VIF on a network with a router
    /// interface that advertises.
    pub async fn advertise(&mut self, agent: &Agent) {
        let topo = agent.pipeline.topology();
        for (iface, (ofport, _)) in &agent.vifs {
            let Some(port) = topo.ports.get(iface) else {
                continue;
            };
            if topo.local.ofport(iface) != Some(*ofport) {
                continue;
            }
            if let Some(router) = crate::punt::advertising_router(&agent.pipeline, port)
                && let Some(frame) = crate::ra::unsolicited(topo, port, router)
            {
                self.reconciler.packet_out(*ofport, frame).await;
            }
        }
    }

    /// Announces router interfaces that are new to the local VIFs next to them, and addresses
    /// newly served here on physical networks (after the bundle that gives them flows, which the
    /// switch applies first). Only after flows `changed`, or when a repeat is due: looking costs
    /// a walk over the topology.
    pub async fn announce(&mut self, agent: &mut Agent, changed: bool) {
        self.announce_needed |= changed;
        let repeat_due = agent
            .announcer
            .next_due()
            .is_some_and(|t| t <= std::time::Instant::now());
        if !self.in_sync || !(self.announce_needed || repeat_due) {
            return;
        }
        self.announce_needed = false;
        let topo = agent.pipeline.topology();
        let local: Vec<(u32, &str)> = agent
            .vifs
            .iter()
            .filter(|(iface, (ofport, _))| topo.local.ofport(iface) == Some(*ofport))
            .filter_map(|(iface, (ofport, _))| {
                Some((*ofport, topo.ports.get(iface)?.network_id.as_str()))
            })
            .collect();
        let networks = local.iter().map(|(_, n)| *n).collect();
        for (network, frames) in agent.announcer.due(topo, &networks) {
            for (ofport, _) in local.iter().filter(|(_, n)| *n == network) {
                for frame in &frames {
                    self.reconciler.packet_out(*ofport, frame.clone()).await;
                }
            }
        }
        for (port, frame) in agent.announcer.due_outside(&agent.pipeline) {
            self.reconciler.packet_out(port, frame).await;
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
            delta.extend(agent.vif_event(event)?);
        }
        Ok(delta)
    }

    /// Handles one event of the OpenFlow connection; returns the pipeline changes it causes and
    /// that are still to be sent, or `None` after a resync (which sent the whole pipeline, so
    /// nothing pending needs sending any more).
    pub async fn event(
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
                    delta.extend(agent.vif_event(event)?);
                }
            }
            Some(Event::Message(_, openflow::Message::PacketIn2(pi))) => {
                if let Some(punted) = Punted::from_packet_in(&pi)
                    && let Some(reply) = self.handlers.answer(&agent.pipeline, &punted)
                {
                    for (actions, frame) in reply.0 {
                        self.reconciler.packet_out_with(actions, frame).await;
                    }
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
