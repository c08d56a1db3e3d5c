//! Keeps `br-int`'s flows equal to the desired ones, sending only differences.
//!
//! After every (re)connection the reconciler reads the flows the switch holds and sends the
//! difference from the desired set; it never clears the table, so traffic keeps flowing while the agent
//! restarts or reconnects. Between resyncs, each pipeline delta goes out as one bundle (atomic at
//! commit: the switch never holds half a change; Open vSwitch does refuse a message that is invalid
//! on its own as it is added, and then commits the rest). Bundles are pipelined: the next one goes out without waiting
//! for the switch to confirm the previous (the switch applies them in order), because a switch busy
//! reconfiguring after a port add answers only tens of milliseconds later, and the flows for that
//! very port should not queue behind the confirmation. A refused bundle makes the agent resync.

use std::collections::HashMap;

use futures::future::BoxFuture;
use openflow::conn::{ConnError, Connection};
use openflow::flow::FlowKey;
use openflow::message::FlowStatsRequest;
use openflow::{Flow, FlowMod, Message};
use pipeline::Delta;

use crate::AgentError;

/// The switch's answer to one bundle, to be awaited (in order) while later ones go out.
pub type Confirmation = BoxFuture<'static, Result<(), ConnError>>;

/// What the switch holds, as far as we know.
pub struct Reconciler {
    conn: Connection,
    installed: HashMap<FlowKey, Flow>,
    /// Statistics: flow-mods sent since start.
    pub sent: u64,
}

impl Reconciler {
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            installed: HashMap::new(),
            sent: 0,
        }
    }

    pub fn installed(&self) -> usize {
        self.installed.len()
    }

    /// Puts one bundle on the wire and counts its flows as installed; the returned confirmation
    /// says whether the switch applied it.
    async fn send(
        &mut self,
        removes: Vec<Flow>,
        adds: Vec<Flow>,
    ) -> Result<Confirmation, AgentError> {
        if removes.is_empty() && adds.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let mut msgs = Vec::with_capacity(removes.len() + adds.len());
        for f in &removes {
            msgs.push(Message::FlowMod(FlowMod::delete_strict(f)));
        }
        for f in &adds {
            msgs.push(Message::FlowMod(FlowMod::add(f.clone())));
        }
        let sent = self
            .conn
            .bundle_send(&msgs)
            .await
            .map_err(|e| AgentError::Switch(e.to_string()))?;
        self.sent += msgs.len() as u64;
        for f in removes {
            self.installed.remove(&f.key());
        }
        for f in adds {
            self.installed.insert(f.key(), f);
        }
        Ok(Box::pin(sent.confirmed()))
    }

    /// Reads the switch's flows and sends the difference from `desired`.
    pub async fn resync<'a>(
        &mut self,
        desired: impl Iterator<Item = &'a Flow>,
    ) -> Result<(), AgentError> {
        let held = self
            .conn
            .dump_flows(FlowStatsRequest::default())
            .await
            .map_err(|e| AgentError::Switch(e.to_string()))?;
        // Flows the switch learned itself (neighbours) are its state, not ours.
        self.installed = held
            .into_iter()
            .filter(|s| !pipeline::cookie::is_learned(s.flow.cookie))
            .map(|s| (s.flow.key(), s.flow))
            .collect();
        let desired: HashMap<FlowKey, &Flow> = desired.map(|f| (f.key(), f)).collect();
        // Flows whose identity is not desired go; desired flows not held exactly are added (an add
        // replaces a held flow with the same identity in place).
        let removes: Vec<Flow> = self
            .installed
            .iter()
            .filter(|(k, _)| !desired.contains_key(*k))
            .map(|(_, f)| f.clone())
            .collect();
        let adds: Vec<Flow> = desired
            .values()
            .filter(|f| self.installed.get(&f.key()) != Some(**f))
            .map(|f| (*f).clone())
            .collect();
        tracing::info!(
            held = self.installed.len(),
            removes = removes.len(),
            adds = adds.len(),
            "resync with br-int"
        );
        match self.send(removes, adds).await?.await {
            Ok(()) => Ok(()),
            // Open vSwitch refused some messages on their own as they were added, and committed
            // the rest: the refused ones are not what the switch holds. Resending them would
            // fail again, so the agent carries on without them (and says so loudly).
            Err(ConnError::Rejected(errors))
                if !errors
                    .iter()
                    .any(|e| matches!(e.request, Some(Message::BundleCtrl(_)))) =>
            {
                for e in &errors {
                    tracing::error!("the switch refuses a flow: {e}");
                    if let Some(Message::FlowMod(fm)) = &e.request {
                        self.installed.remove(&fm.flow.key());
                    }
                }
                Ok(())
            }
            Err(e) => Err(AgentError::Switch(e.to_string())),
        }
    }

    /// The switch's ports: name and OpenFlow number.
    pub async fn ports(&self) -> Result<Vec<(String, u32)>, AgentError> {
        match self
            .conn
            .multipart(openflow::message::MultipartRequest::PortDesc)
            .await
            .map_err(|e| AgentError::Switch(e.to_string()))?
        {
            openflow::message::MultipartReply::PortDesc(ports) => {
                Ok(ports.into_iter().map(|p| (p.name, p.port_no)).collect())
            }
            other => Err(AgentError::Switch(format!(
                "port description request answered with {other:?}"
            ))),
        }
    }

    /// Sends a frame out of `port` (answers built by the agent); failures are only logged.
    pub async fn packet_out(&self, port: u32, frame: Vec<u8>) {
        let out = vec![openflow::Action::Output { port, max_len: 0 }];
        self.packet_out_with(out, frame).await;
    }

    /// Sends a frame with `actions` (out of a port, or back into the pipeline); failures are
    /// only logged.
    pub async fn packet_out_with(&self, actions: Vec<openflow::Action>, frame: Vec<u8>) {
        let msg = Message::PacketOut(openflow::message::PacketOut {
            buffer_id: openflow::flow::NO_BUFFER,
            in_port: openflow::field::port::CONTROLLER,
            actions,
            data: frame,
        });
        if let Err(e) = self.conn.send(&msg).await {
            tracing::debug!("packet-out failed: {e}");
        }
    }

    /// Sends one pipeline delta as a bundle; the confirmation resolves once the switch applied it.
    pub async fn apply(&mut self, delta: Delta) -> Result<Confirmation, AgentError> {
        // A flow whose identity stays but whose actions change is re-added (an add replaces it);
        // deleting it first would open a gap.
        let (removed, added) = delta.into_parts();
        let keys: std::collections::HashSet<FlowKey> = added.iter().map(Flow::key).collect();
        let removes = removed
            .into_iter()
            .filter(|f| !keys.contains(&f.key()))
            .collect();
        self.send(removes, added).await
    }
}
