//! Keeps `br-int`'s flows and groups equal to the desired ones, sending only differences.
//!
//! After every (re)connection the reconciler reads the flows and groups the switch holds and
//! sends the difference from the desired set; it never clears the table, so traffic keeps flowing
//! while the agent restarts or reconnects. Between resyncs, each pipeline delta goes out as one
//! bundle (atomic at commit: the switch never holds half a change; Open vSwitch does refuse a
//! message that is invalid on its own as it is added, and then commits the rest). Bundles are
//! pipelined: the next one goes out without waiting for the switch to confirm the previous (the
//! switch applies them in order), because a switch busy reconfiguring after a port add answers
//! only tens of milliseconds later, and the flows for that very port should not queue behind the
//! confirmation. A refused bundle makes the agent resync.
//!
//! **Groups** (the load balancers' select groups) travel in the same bundle as the flows: Open
//! vSwitch (3.1 measured, `crates/agent/tests/groups.rs`) accepts `GROUP_MOD` inside an
//! OpenFlow 1.3 (ONF extension) bundle, and a flow added in the bundle may name a group added
//! earlier in it. Within a bundle (ordered) the group adds and modifies come first, then the
//! flow changes, then the group deletes: Open vSwitch refuses a flow naming a group that does
//! not exist, and deleting a group deletes the flows that name it. Groups are compared
//! normalized ([`normalized`]), so that what the switch reports back for a group we sent
//! compares equal to it and a resync sends nothing for it.
//!
//! **Reading ahead.** A restarted agent reads the switch while it reads the topology
//! ([`Reconciler::read_ahead`]): the first resync uses that read if it was made in the
//! connection's current session (nothing else writes the switch's flows meanwhile; the only
//! flows that expire are the learned ones, which are the switch's own).
//!
//! **What it keeps of a flow.** A 64-bit hash of its identity (table, priority, match), to count
//! the flows the switch holds: the pipeline holds the flows, and a second copy of every flow was
//! a fifth of an agent's memory (then its identity, a tenth). Between resyncs only identities
//! matter, and a delta brings them (what to add and remove, in full); a resync compares the
//! flows it reads from the switch with the desired ones. Two identities with one hash would make
//! the count one short, nothing else.
//! The groups an installed flow sends to are kept apart (few flows do), since deleting a group
//! deletes those flows.

use std::collections::{HashMap, HashSet};

use futures::future::BoxFuture;
use openflow::conn::{ConnError, Connection};
use openflow::flow::FlowKey;
use openflow::message::{FlowStats, FlowStatsRequest, Group, GroupMod, GroupModCommand, GroupType};
use openflow::{Action, Flow, FlowMod, Message};
use pipeline::{Delta, FastMap, FastSet};

use crate::AgentError;

/// The switch's answer to one bundle, to be awaited (in order) while later ones go out.
pub type Confirmation = BoxFuture<'static, Result<(), ConnError>>;

/// What the switch holds, as far as we know.
pub struct Reconciler {
    conn: Connection,
    /// The hashes of the identities of the flows the switch holds ([`identity`]).
    installed: FastSet<u64>,
    /// The installed flows that send to groups, with those groups.
    naming_groups: FastMap<FlowKey, Vec<u32>>,
    /// The switch's groups, by id, [`normalized`].
    groups: HashMap<u32, Group>,
    /// Statistics: flow-mods and group-mods sent since start.
    pub sent: u64,
}

/// The switch's groups and flows as read in one session of the connection.
pub struct Held {
    session: u64,
    groups: Vec<Group>,
    flows: Vec<FlowStats>,
}

/// How long a read ahead keeps trying to reach the switch.
const READ_AHEAD_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads what the switch holds, in one session of `conn`.
async fn read_switch(conn: &Connection) -> Result<Held, AgentError> {
    let session = conn.session();
    let groups = conn
        .dump_groups()
        .await
        .map_err(|e| AgentError::Switch(e.to_string()))?;
    let flows = conn
        .dump_flows(FlowStatsRequest::default())
        .await
        .map_err(|e| AgentError::Switch(e.to_string()))?;
    if conn.session() != session {
        return Err(AgentError::Switch(
            "reconnected while reading the switch".into(),
        ));
    }
    Ok(Held {
        session,
        groups,
        flows,
    })
}

/// One bundle's worth of changes, in the order they go out.
#[derive(Default)]
struct Changes {
    /// Groups to add or modify (normalized), before the flows.
    group_installs: Vec<GroupMod>,
    /// Flows to delete, by identity.
    removes: Vec<FlowKey>,
    adds: Vec<Flow>,
    /// Groups to delete, after the flows.
    group_deletes: Vec<Group>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.group_installs.is_empty()
            && self.removes.is_empty()
            && self.adds.is_empty()
            && self.group_deletes.is_empty()
    }

    fn len(&self) -> usize {
        self.group_installs.len() + self.removes.len() + self.adds.len() + self.group_deletes.len()
    }
}

/// A group as Open vSwitch reports it back: fields that mean nothing for the group's type are
/// set to their defaults (weights outside select groups, watch port and group outside
/// fast-failover groups), so that a group compares equal to what the switch returns for it.
/// OpenFlow 1.3 carries no bucket ids, so they cannot differ.
fn normalized(group: &Group) -> Group {
    let mut g = group.clone();
    for b in &mut g.buckets {
        if g.group_type != GroupType::Select {
            b.weight = 0;
        }
        if g.group_type != GroupType::FastFailover {
            b.watch_port = openflow::field::port::ANY;
            b.watch_group = openflow::flow::ANY_GROUP;
        }
    }
    g
}

/// A flow's identity (table, priority, match), borrowed from it or from its key.
#[derive(PartialEq, Eq, Hash)]
struct Identity<'a>(u8, u16, &'a openflow::Match);

impl<'a> Identity<'a> {
    fn of(flow: &'a Flow) -> Self {
        Identity(flow.table, flow.priority, &flow.match_)
    }

    fn of_key((table, priority, m): &'a FlowKey) -> Self {
        Identity(*table, *priority, m)
    }

    /// Its hash, what is kept of an installed flow (SipHash with fixed keys: well spread, the
    /// same in every run).
    fn hashed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::hash::DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// The groups `flow` sends to (the switch deletes it with any of them).
fn named_groups(flow: &Flow) -> Vec<u32> {
    let i = &flow.instructions;
    i.apply
        .iter()
        .chain(i.write().into_iter().flatten())
        .filter_map(|a| match a {
            Action::Group(g) => Some(*g),
            _ => None,
        })
        .collect()
}

/// The strict delete of the flow with identity `key`.
fn delete_of((table, priority, match_): &FlowKey) -> FlowMod {
    FlowMod::delete_strict(&Flow {
        table: *table,
        priority: *priority,
        match_: match_.clone(),
        ..Flow::default()
    })
}

impl Reconciler {
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            installed: FastSet::default(),
            naming_groups: FastMap::default(),
            groups: HashMap::new(),
            sent: 0,
        }
    }

    pub fn installed(&self) -> usize {
        self.installed.len()
    }

    /// `group` as the reconciler compares it with the switch's (see [`normalized`]).
    pub fn normalized(group: &Group) -> Group {
        normalized(group)
    }

    /// Groups the switch holds, as far as we know.
    pub fn installed_groups(&self) -> usize {
        self.groups.len()
    }

    /// The group-mod that makes the switch hold `group`, or `None` if it holds it already.
    fn install(&self, group: &Group) -> Option<GroupMod> {
        let group = normalized(group);
        let command = match self.groups.get(&group.group_id) {
            Some(held) if *held == group => return None,
            Some(_) => GroupModCommand::Modify,
            None => GroupModCommand::Add,
        };
        Some(GroupMod { command, group })
    }

    /// Counts `flow` as held by the switch (replacing what had its identity).
    fn remember(&mut self, flow: &Flow) {
        let groups = named_groups(flow);
        if !groups.is_empty() {
            self.naming_groups.insert(flow.key(), groups);
        } else if !self.naming_groups.is_empty() {
            self.naming_groups.remove(&flow.key());
        }
        self.installed.insert(Identity::of(flow).hashed());
    }

    /// Counts the flow with identity `key` as gone from the switch.
    fn forget(&mut self, key: &FlowKey) {
        self.installed.remove(&Identity::of_key(key).hashed());
        self.naming_groups.remove(key);
    }

    /// Puts one bundle on the wire and counts its changes as installed; the returned
    /// confirmation says whether the switch applied it.
    async fn send(&mut self, changes: Changes) -> Result<Confirmation, AgentError> {
        if changes.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let mut msgs = Vec::with_capacity(changes.len());
        for gm in &changes.group_installs {
            msgs.push(Message::GroupMod(gm.clone()));
        }
        for key in &changes.removes {
            msgs.push(Message::FlowMod(delete_of(key)));
        }
        for f in &changes.adds {
            msgs.push(Message::FlowMod(FlowMod::add(f.clone())));
        }
        for g in &changes.group_deletes {
            msgs.push(Message::GroupMod(GroupMod {
                command: GroupModCommand::Delete,
                group: Group {
                    group_id: g.group_id,
                    group_type: g.group_type,
                    buckets: Vec::new(),
                },
            }));
        }
        let sent = self
            .conn
            .bundle_send(&msgs)
            .await
            .map_err(|e| AgentError::Switch(e.to_string()))?;
        self.sent += msgs.len() as u64;
        for gm in changes.group_installs {
            self.groups.insert(gm.group.group_id, gm.group);
        }
        for key in changes.removes {
            self.forget(&key);
        }
        for f in &changes.adds {
            self.remember(f);
        }
        if !changes.group_deletes.is_empty() {
            let gone: HashSet<u32> = changes.group_deletes.iter().map(|g| g.group_id).collect();
            for id in &gone {
                self.groups.remove(id);
            }
            // The switch deletes the flows that name a deleted group.
            let deleted: Vec<FlowKey> = self
                .naming_groups
                .iter()
                .filter(|(_, groups)| groups.iter().any(|g| gone.contains(g)))
                .map(|(key, _)| key.clone())
                .collect();
            for key in deleted {
                self.forget(&key);
            }
        }
        Ok(Box::pin(sent.confirmed()))
    }

    /// Starts reading the switch for the first resync, in the background, as soon as the
    /// connection is up (given up after [`READ_AHEAD_FOR`]).
    pub fn read_ahead(&self) -> tokio::task::JoinHandle<Option<Held>> {
        let conn = self.conn.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + READ_AHEAD_FOR;
            while tokio::time::Instant::now() < deadline {
                if conn.session() > 0
                    && let Ok(held) = read_switch(&conn).await
                {
                    tracing::info!(flows = held.flows.len(), "switch read ahead");
                    return Some(held);
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            None
        })
    }

    /// Reads the switch's flows and groups (or takes `ahead`, if read in the connection's
    /// current session) and sends the difference from `desired` and `desired_groups`.
    pub async fn resync<'a, 'g>(
        &mut self,
        desired: impl Iterator<Item = &'a Flow>,
        desired_groups: impl Iterator<Item = &'g Group>,
        ahead: Option<Held>,
    ) -> Result<(), AgentError> {
        let started = std::time::Instant::now();
        let ahead = ahead.filter(|h| h.session == self.conn.session());
        let read_ahead = ahead.is_some();
        let held = match ahead {
            Some(held) => held,
            None => read_switch(&self.conn).await?,
        };
        let Held {
            groups: held_groups,
            flows: held,
            ..
        } = held;
        self.groups = held_groups
            .iter()
            .map(|g| (g.group_id, normalized(g)))
            .collect();
        // Flows the switch learned itself (neighbours) are its state, not ours.
        let held: Vec<Flow> = held
            .into_iter()
            .filter(|s| !pipeline::cookie::is_learned(s.flow.cookie))
            .map(|s| s.flow)
            .collect();
        self.installed.clear();
        self.naming_groups.clear();
        for flow in &held {
            self.remember(flow);
        }
        // Both sides by identity, borrowed (a restart at 10 000 ports compares 60 000 flows:
        // no match is copied for it).
        let held: FastMap<Identity, &Flow> = held.iter().map(|f| (Identity::of(f), f)).collect();
        let desired: FastMap<Identity, &Flow> = desired.map(|f| (Identity::of(f), f)).collect();
        let desired_groups: HashMap<u32, &Group> =
            desired_groups.map(|g| (g.group_id, g)).collect();
        // Desired groups not held exactly are added or modified in place (never deleted and
        // added again: that would delete the flows naming them).
        let group_installs: Vec<GroupMod> = desired_groups
            .values()
            .filter_map(|g| self.install(g))
            .collect();
        // Flows whose identity is not desired go; desired flows not held exactly are added (an add
        // replaces a held flow with the same identity in place).
        let removes: Vec<FlowKey> = held
            .iter()
            .filter(|(k, _)| !desired.contains_key(*k))
            .map(|(_, f)| f.key())
            .collect();
        let adds: Vec<Flow> = desired
            .iter()
            .filter(|(k, f)| held.get(*k) != Some(*f))
            .map(|(_, f)| (*f).clone())
            .collect();
        let group_deletes: Vec<Group> = self
            .groups
            .values()
            .filter(|g| !desired_groups.contains_key(&g.group_id))
            .cloned()
            .collect();
        tracing::info!(
            held = self.installed.len(),
            held_groups = self.groups.len(),
            removes = removes.len(),
            adds = adds.len(),
            group_installs = group_installs.len(),
            group_deletes = group_deletes.len(),
            read_ahead,
            compared_after = ?started.elapsed(),
            "resync with br-int"
        );
        let changes = Changes {
            group_installs,
            removes,
            adds,
            group_deletes,
        };
        match self.send(changes).await?.await {
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
                    match &e.request {
                        Some(Message::FlowMod(fm)) => {
                            tracing::error!("the switch refuses a flow: {e}");
                            self.forget(&fm.flow.key());
                        }
                        Some(Message::GroupMod(gm)) => {
                            tracing::error!("the switch refuses a group: {e}");
                            // What it holds for that id now is not known: the next install
                            // is an add, and a refusal of that makes the agent read again.
                            self.groups.remove(&gm.group.group_id);
                        }
                        _ => tracing::error!("the switch refuses: {e}"),
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

    /// Sends one pipeline delta as a bundle (its groups to install first, then its flows, then
    /// its groups to delete); the confirmation resolves once the switch applied it.
    pub async fn apply(&mut self, delta: Delta) -> Result<Confirmation, AgentError> {
        let mut group_installs = Vec::new();
        let mut group_deletes = Vec::new();
        for (id, group) in delta.groups() {
            match group {
                Some(g) => group_installs.extend(self.install(g)),
                None => group_deletes.extend(self.groups.get(&id).cloned()),
            }
        }
        // A flow whose identity stays but whose actions change is re-added (an add replaces it);
        // deleting it first would open a gap.
        let (removed, adds) = delta.into_parts();
        let keys: FastSet<FlowKey> = adds.iter().map(Flow::key).collect();
        let removes = removed
            .into_iter()
            .map(|f| f.key())
            .filter(|k| !keys.contains(k))
            .collect();
        self.send(Changes {
            group_installs,
            removes,
            adds,
            group_deletes,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use openflow::message::Bucket;

    use super::*;

    fn group(group_type: GroupType) -> Group {
        Group {
            group_id: 7,
            group_type,
            buckets: vec![Bucket::new(vec![Action::Output {
                port: 1,
                max_len: 0,
            }])],
        }
    }

    #[test]
    fn normalized_groups_ignore_what_their_type_does_not_use() {
        let mut reported = group(GroupType::All);
        reported.buckets[0].weight = 1;
        reported.buckets[0].watch_port = 3;
        assert_eq!(normalized(&reported), normalized(&group(GroupType::All)));
        let mut weighted = group(GroupType::Select);
        weighted.buckets[0].weight = 5;
        assert_ne!(normalized(&weighted), normalized(&group(GroupType::Select)));
        let mut watching = group(GroupType::FastFailover);
        watching.buckets[0].watch_port = 3;
        assert_ne!(
            normalized(&watching),
            normalized(&group(GroupType::FastFailover))
        );
    }

    #[test]
    fn a_flows_identity_is_its_keys() {
        let m = openflow::Match::new().with(openflow::Field::InPort, 4);
        let flow = Flow::new(3, 120, m, vec![Action::Group(7)]);
        let key = flow.key();
        assert_eq!(
            Identity::of(&flow).hashed(),
            Identity::of_key(&key).hashed()
        );
        let mut other = flow.clone();
        other.priority = 121;
        assert_ne!(
            Identity::of(&other).hashed(),
            Identity::of_key(&key).hashed()
        );
    }

    #[test]
    fn the_groups_a_flow_names_are_found() {
        let mut instructions = openflow::Instructions::apply(vec![Action::Group(7)]);
        instructions.set_write(Some(vec![Action::Group(9)]));
        let flow = Flow {
            instructions,
            ..Flow::default()
        };
        assert_eq!(named_groups(&flow), [7, 9]);
        assert!(named_groups(&Flow::default()).is_empty());
    }

    #[test]
    fn a_strict_delete_carries_the_identity_only() {
        let flow = Flow {
            table: 3,
            priority: 7,
            cookie: 5,
            ..Flow::default()
        };
        assert_eq!(delete_of(&flow.key()), FlowMod::delete_strict(&flow));
    }
}
