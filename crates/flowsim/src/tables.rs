//! [`FlowTables`]: the flows and groups being simulated, checked once when built, and the
//! OpenFlow table lookup including Open vSwitch's conjunctive matches.
//!
//! Lookup: the highest-priority flow whose every match field agrees with the packet under its
//! mask (a field the packet lacks never agrees). Flows whose actions are `conjunction(id,k/n)`
//! are evaluated as OVS does: only those of higher priority than the best ordinary match
//! count; at the highest priority where some conjunction `id` has all `n` clauses matched, the
//! table is searched again with `conj_id=id` (conjunctive flows ignored), and that result wins
//! if there is one. Among flows of equal priority that both match (which OVS leaves
//! undefined) the one given first wins.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use openflow::message::{Group, GroupType};
use openflow::{Action, Field, Flow};

use crate::Error;
use crate::packet::Packet;

/// The flows and groups of one switch plus the few port facts the simulator needs.
#[derive(Clone, Debug, Default)]
pub struct FlowTables {
    tables: BTreeMap<u8, Vec<Flow>>,
    groups: HashMap<u32, Group>,
    /// Tunnel ports, with their `options:local_ip` if they have one.
    tunnel_ports: BTreeMap<u32, Option<Ipv4Addr>>,
    down_ports: BTreeSet<u32>,
    /// Patch ports on this bridge, each with its peer (both ends are here).
    patches: BTreeMap<u32, u32>,
}

/// The clauses of one conjunction matched at one priority: its `n` and the clause numbers.
type Clauses = (u8, BTreeSet<u8>);

/// A lookup's result.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hit<'a> {
    pub flow: &'a Flow,
    /// The conjunction id that led to `flow`, if any.
    pub conjunction: Option<u32>,
}

/// Whether `a` may appear in `write_actions` (OpenFlow's action set, as OVS extends it).
fn allowed_in_action_set(a: &Action) -> bool {
    matches!(
        a,
        Action::Output { .. }
            | Action::OutputReg { .. }
            | Action::Group(_)
            | Action::SetQueue(_)
            | Action::PushVlan(_)
            | Action::PopVlan
            | Action::PushMpls(_)
            | Action::PopMpls(_)
            | Action::SetMplsTtl(_)
            | Action::DecMplsTtl
            | Action::DecTtl
            | Action::SetField { .. }
            | Action::RegLoad { .. }
            | Action::Move { .. }
    )
}

/// Whether the flow is a conjunctive clause (its actions are `conjunction` actions).
pub(crate) fn is_conjunctive(flow: &Flow) -> bool {
    flow.instructions
        .apply
        .iter()
        .any(|a| matches!(a, Action::Conjunction { .. }))
}

/// Whether every match field of `flow` agrees with `packet`.
pub(crate) fn matches(flow: &Flow, packet: &Packet) -> bool {
    flow.match_
        .fields()
        .all(|m| packet.get(m.field).is_some_and(|v| v & m.mask == m.value))
}

fn group_refs(actions: &[Action]) -> impl Iterator<Item = u32> + '_ {
    actions.iter().filter_map(|a| match a {
        Action::Group(g) => Some(*g),
        _ => None,
    })
}

impl FlowTables {
    /// Checks and indexes `flows` and `groups`. Rejected, as Open vSwitch would reject them:
    /// a `goto_table` that does not go forward, two flows with the same table, priority and
    /// match, a conjunctive flow with other actions or instructions or a bad clause number,
    /// an action not allowed in the action set inside `write_actions`, a duplicate group id,
    /// a group with no bucket where one is needed, and references to missing groups.
    pub fn new(
        flows: impl IntoIterator<Item = Flow>,
        groups: impl IntoIterator<Item = Group>,
    ) -> Result<FlowTables, Error> {
        let mut t = FlowTables::default();
        for g in groups {
            if matches!(g.group_type, GroupType::Indirect) && g.buckets.len() != 1 {
                return Err(Error::BadGroup {
                    group: g.group_id,
                    why: "an indirect group needs exactly one bucket",
                });
            }
            if t.groups.insert(g.group_id, g.clone()).is_some() {
                return Err(Error::DuplicateGroup(g.group_id));
            }
        }
        let mut keys = BTreeSet::new();
        for f in flows {
            t.check_flow(&f)?;
            if !keys.insert(f.key()) {
                return Err(Error::DuplicateFlow(f.to_string().trim().to_string()));
            }
            t.tables.entry(f.table).or_default().push(f);
        }
        for g in t.groups.values() {
            for b in &g.buckets {
                if let Some(missing) = group_refs(&b.actions).find(|r| !t.groups.contains_key(r)) {
                    return Err(Error::MissingGroup {
                        group: missing,
                        user: format!("group {}", g.group_id),
                    });
                }
            }
        }
        for flows in t.tables.values_mut() {
            // Stable: among equal priorities the flow given first stays first.
            flows.sort_by_key(|f| std::cmp::Reverse(f.priority));
        }
        Ok(t)
    }

    fn check_flow(&self, f: &Flow) -> Result<(), Error> {
        let text = || f.to_string().trim().to_string();
        let ins = &f.instructions;
        if let Some(next) = ins.goto_table
            && next <= f.table
        {
            return Err(Error::BadFlow {
                flow: text(),
                why: "goto_table must go to a later table",
            });
        }
        if !ct_tuple_prerequisite(&f.match_) {
            return Err(Error::BadFlow {
                flow: text(),
                why: "a match on the connection's original tuple (ct_nw_*, ct_ipv6_*, ct_tp_*) \
                      needs ct_state to say the connection is tracked and valid (+trk with \
                      -inv, +new, +est, +rel, +rpl, +snat or +dnat)",
            });
        }
        if is_conjunctive(f) {
            let only_conj = ins
                .apply
                .iter()
                .all(|a| matches!(a, Action::Conjunction { .. } | Action::Note(_)));
            if !only_conj || ins.clear() || ins.write().is_some() || ins.goto_table.is_some() {
                return Err(Error::BadFlow {
                    flow: text(),
                    why: "a conjunctive flow may have only conjunction actions",
                });
            }
            for a in &ins.apply {
                if let Action::Conjunction {
                    clause, n_clauses, ..
                } = a
                    && (*n_clauses < 1 || *clause < 1 || clause > n_clauses)
                {
                    return Err(Error::BadFlow {
                        flow: text(),
                        why: "conjunction clause must be within 1..=n",
                    });
                }
            }
        }
        if let Some(w) = ins.write()
            && !w.iter().all(allowed_in_action_set)
        {
            return Err(Error::BadFlow {
                flow: text(),
                why: "write_actions holds an action not allowed in the action set",
            });
        }
        let write = ins.write().unwrap_or(&[]);
        if let Some(g) = group_refs(&ins.apply)
            .chain(group_refs(write))
            .find(|g| !self.groups.contains_key(g))
        {
            return Err(Error::MissingGroup {
                group: g,
                user: text(),
            });
        }
        Ok(())
    }

    /// Adds `flow` as OVS' `learn` does, a strict modify-or-add: it replaces the flow with the
    /// same table, priority and match, or goes after the flows of its priority.
    pub(crate) fn learn(&mut self, flow: Flow) {
        let flows = self.tables.entry(flow.table).or_default();
        match flows
            .iter_mut()
            .find(|f| f.priority == flow.priority && f.match_ == flow.match_)
        {
            Some(f) => *f = flow,
            None => {
                let at = flows.partition_point(|f| f.priority >= flow.priority);
                flows.insert(at, flow);
            }
        }
    }

    /// Builder: `port` is a tunnel port (outputs to it carry the packet's tunnel fields).
    pub fn with_tunnel_port(mut self, port: u32) -> FlowTables {
        self.tunnel_ports.insert(port, None);
        self
    }

    /// Builder: `port` is a tunnel port with `options:local_ip=local_ip`: outputs to it carry
    /// the packet's tunnel fields with `local_ip` as `tun_src`, whatever the flows set (OVS'
    /// `tnl_port_send` takes the source from the port unless it is `local_ip=flow`).
    pub fn with_tunnel_local_ip(mut self, port: u32, local_ip: Ipv4Addr) -> FlowTables {
        self.tunnel_ports.insert(port, Some(local_ip));
        self
    }

    /// Builder: `a` and `b` are a patch-port pair with both ends on this bridge: a packet output
    /// to one comes back in at the other (see [`crate::sim`]).
    pub fn with_patch_pair(mut self, a: u32, b: u32) -> FlowTables {
        self.patches.insert(a, b);
        self.patches.insert(b, a);
        self
    }

    /// The peer of `port`, if it is one end of a patch-port pair on this bridge.
    pub fn patch_peer(&self, port: u32) -> Option<u32> {
        self.patches.get(&port).copied()
    }

    /// Builder: `port` is down (fast-failover and select groups skip buckets watching it).
    pub fn with_port_down(mut self, port: u32) -> FlowTables {
        self.down_ports.insert(port);
        self
    }

    /// The tunnel context an output of `pkt` to `port` carries, if `port` is a tunnel port.
    pub fn tunnel_out(&self, port: u32, pkt: &Packet) -> Option<crate::Tunnel> {
        let local_ip = self.tunnel_ports.get(&port)?;
        let mut tunnel = pkt.tunnel();
        if let Some(ip) = local_ip {
            tunnel.src = *ip;
        }
        Some(tunnel)
    }

    /// Whether `port` is up (every port is, unless marked down).
    pub fn is_port_up(&self, port: u32) -> bool {
        !self.down_ports.contains(&port)
    }

    /// The flows of `table`, highest priority first.
    pub fn flows(&self, table: u8) -> &[Flow] {
        self.tables.get(&table).map_or(&[], Vec::as_slice)
    }

    /// Every flow, by table then priority.
    pub fn all_flows(&self) -> impl Iterator<Item = &Flow> {
        self.tables.values().flatten()
    }

    /// Group `id`.
    pub fn group(&self, id: u32) -> Option<&Group> {
        self.groups.get(&id)
    }

    /// The flow `packet` hits in `table`, if any (see the module docs).
    pub fn lookup(&self, table: u8, packet: &Packet) -> Option<&Flow> {
        self.find(table, packet).map(|h| h.flow)
    }

    pub(crate) fn find(&self, table: u8, packet: &Packet) -> Option<Hit<'_>> {
        let flows = self.flows(table);
        let hard = flows
            .iter()
            .find(|f| !is_conjunctive(f) && matches(f, packet));
        let floor = hard.map(|f| i32::from(f.priority)).unwrap_or(-1);
        // Clauses matched, by priority (highest first), then conjunction id.
        let mut soft: BTreeMap<std::cmp::Reverse<u16>, BTreeMap<u32, Clauses>> = BTreeMap::new();
        for f in flows
            .iter()
            .take_while(|f| i32::from(f.priority) > floor)
            .filter(|f| is_conjunctive(f) && matches(f, packet))
        {
            let level = soft.entry(std::cmp::Reverse(f.priority)).or_default();
            for a in &f.instructions.apply {
                if let Action::Conjunction {
                    id,
                    clause,
                    n_clauses,
                } = a
                {
                    let e = level.entry(*id).or_insert((*n_clauses, BTreeSet::new()));
                    if e.0 == *n_clauses {
                        e.1.insert(*clause);
                    }
                }
            }
        }
        for level in soft.values() {
            for (id, (n, clauses)) in level {
                if clauses.len() != usize::from(*n) {
                    continue;
                }
                let probe = packet.clone().with(Field::ConjId, u128::from(*id));
                if let Some(flow) = flows
                    .iter()
                    .find(|f| !is_conjunctive(f) && matches(f, &probe))
                {
                    return Some(Hit {
                        flow,
                        conjunction: flow.match_.get(Field::ConjId).map(|_| *id),
                    });
                }
            }
        }
        hard.map(|flow| Hit {
            flow,
            conjunction: None,
        })
    }
}

/// Whether a match on the original tuple of the packet's connection has what Open vSwitch 3.1
/// requires with it (found by trying: `ct_state=+trk` alone is refused with `OFPBMC_BAD_PREREQ`,
/// `+trk-inv`, `+trk+new` or `+trk+dnat` are accepted): `ct_state` must say the packet is tracked
/// and its connection valid.
fn ct_tuple_prerequisite(m: &openflow::Match) -> bool {
    use crate::conntrack::ct_state::{DNAT, EST, INV, NEW, REL, RPL, SNAT, TRK};
    use openflow::Field;
    let (trk, inv) = (u128::from(TRK), u128::from(INV));
    // Each of these says the connection is valid.
    let valid = u128::from(NEW | EST | REL | RPL | SNAT | DNAT);
    let tuple = [
        Field::CtNwSrc,
        Field::CtNwDst,
        Field::CtIpv6Src,
        Field::CtIpv6Dst,
        Field::CtNwProto,
        Field::CtTpSrc,
        Field::CtTpDst,
    ];
    if !tuple.iter().any(|f| m.get(*f).is_some()) {
        return true;
    }
    let Some((value, mask)) = m.get(Field::CtState) else {
        return false;
    };
    let tracked = mask & value & trk != 0;
    let valid = (mask & inv != 0 && value & inv == 0) || mask & value & valid != 0;
    tracked && valid
}
