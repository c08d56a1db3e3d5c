//! The simulator: OpenFlow 1.3 pipeline semantics as Open vSwitch implements them.
//!
//! * A pass starts in table 0 (a recirculation in its `ct` table). A flow's instructions run
//!   in order: apply-actions, clear-actions, write-actions, write-metadata, goto-table. As in
//!   OVS, `goto_table` and `resubmit` are nested lookups: when they return, the caller's
//!   remaining actions run. A table miss does nothing (OpenFlow 1.3 default: drop).
//! * The action set is executed once the pass is over, in OpenFlow order (pop, push MPLS,
//!   push VLAN, dec_ttl, set-field/load/move, set_queue, group, output; output is ignored
//!   when there is a group). One action per kind, one write per destination field.
//! * `output:P` is skipped when P is the packet's current `in_port` (use `IN_PORT`).
//!   `CONTROLLER` and `controller(...)` give controller packets; `NORMAL`, `FLOOD` and `ALL`
//!   are recorded as outputs to that pseudo-port (not expanded). An output to a port declared
//!   with [`FlowTables::with_tunnel_port`] records the tunnel fields (`tun_src` is the port's
//!   `local_ip` when declared with [`FlowTables::with_tunnel_local_ip`]).
//! * An output to a patch port whose peer is on the same bridge
//!   ([`FlowTables::with_patch_pair`]) is not an output: the packet comes back in at the peer,
//!   at table 0, with what OVS' `patch_port_output` resets reset (`in_port` the peer;
//!   `metadata`, registers and tunnel fields zero; conntrack fields cleared; an action set of
//!   its own), one level deeper; then the caller's actions go on with their own packet. A
//!   translation error in the peer's part (too deep, too many resubmits) ends that part only:
//!   as OVS', its error does not reach the caller, whose outputs stand.
//! * `resubmit` (to any table, earlier ones included): `in_port` is replaced for the nested
//!   lookup only. Limits, per pass (OVS translates each recirculation on its own): a
//!   resubmit to the same or an earlier table, and a group bucket, nest one level deeper
//!   (OVS 2.6 and later: a resubmit to a later table, like `goto_table`, does not); a nested
//!   lookup or group at [`MAX_DEPTH`] levels, or after [`MAX_RESUBMITS`] nested lookups that
//!   hit a flow, is a translation error: OVS then drops the whole packet, so does the verdict.
//!   `resubmit(…,ct)` looks up with the packet's own tuple (the original-direction tuple is
//!   not swapped in).
//! * `dec_ttl` / `dec_mpls_ttl` on a TTL ≤ 1 send the packet, unchanged, to controller 0 with
//!   reason `invalid_ttl` and stop the current action list (the caller of a resubmit
//!   continues), as OVS' `compose_dec_ttl` and `compose_dec_mpls_ttl_action` do (checked with
//!   `ofproto/trace`); on a packet without IP / MPLS they do nothing.
//! * Groups: every bucket runs on its own copy of the packet. `all`: every bucket; `indirect`:
//!   its bucket; `ff`: the first live bucket; `select`: one live bucket, chosen by a method
//!   of our own that is *not* OVS' — so a trace through a select group shows one bucket OVS
//!   may pick, not the one it will. Ours: each live bucket scores
//!   `(hash(packet, bucket index) & 0xffff) * weight` and the highest score wins, ties going to
//!   the later bucket, where the hash is FNV-1a over the fields of OVS' datapath hash (IP
//!   addresses and protocol, TCP and SCTP ports — not UDP's; Ethernet addresses for non-IP):
//!   deterministic per connection, spread by weight, always the
//!   last live bucket when every weight is 0. That is the shape of OVS' fallback method
//!   (`group_best_live_bucket`, which scores with `hash_int(bucket_id,
//!   flow_hash_symmetric_l4(flow))`), but OVS 2.10 and later use that only when a group without
//!   `selection_method` cannot get a `dp_hash` table; by default the datapath hashes the packet
//!   (symmetric L4 hash), recirculates, and one of 64 hash values, shared among the buckets by
//!   weight, picks the bucket — `ofproto/trace` then shows `hash(sym_l4(0)),recirc(…)` and
//!   no bucket. That recirculation counts against [`MAX_RECIRCULATIONS`] here too. A bucket is
//!   live when it watches nothing, or its watch port is up, or its watch group has a live
//!   bucket (OVS' rule).
//! * `ct`: see [`crate::conntrack`] for the connection tracker and its NAT. With `table=N` the
//!   packet forks (OVS semantics): a copy with the conntrack fields set is recirculated to
//!   table N after the current pass (at most [`MAX_RECIRCULATIONS`] deep); without, `ct` only
//!   commits (and translates). Either way the packet going on after `ct` has its conntrack
//!   fields cleared, as OVS' translation clears them; what `nat` translated is in the datapath
//!   only: outputs, the controller and recirculations get the translated packet, but the
//!   rest of the pass matches the headers it started with (see [`crate::packet`]).
//!   `ct_clear` clears the conntrack fields, in the flows' view and in the datapath's.
//! * `learn` adds its flow to the simulator's tables from the next pass on (`src/learn.rs`
//!   details how the flow is built; the trace shows it): a [`Simulator`] keeps learned flows,
//!   like connections, for the packets traced after.
//! * `sample`, `set_queue` and `note` have no effect (reported); `multipath` writes a link
//!   chosen by the same hash as `select` (not OVS' exact algorithms).

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use openflow::action::{Controller, reason};
use openflow::field::{CT_STATE_FLAGS, ones, port};
use openflow::flow::ANY_GROUP;
use openflow::message::{Bucket, GroupType};
use openflow::{Action, Ct, CtZone, Field, Flow, Subfield};

use crate::conntrack::{Conntrack, ct_state, orig_tp};
use crate::learn::learned_flow;
use crate::packet::{Packet, flag_text};
use crate::tables::FlowTables;
use crate::trace::{ControllerPacket, DropReason, Op, Output, Pass, Step, Trace, Verdict};

/// Maximum nesting of resubmit/group (OVS' `MAX_DEPTH`).
pub const MAX_DEPTH: usize = 64;
/// Maximum nested lookups hitting a flow in one pass (OVS' `MAX_RESUBMITS`).
pub const MAX_RESUBMITS: usize = MAX_DEPTH * MAX_DEPTH;
/// Maximum recirculations of one packet (the datapath's limit).
pub const MAX_RECIRCULATIONS: usize = 6;

/// Maximum chain of watch groups followed for liveness (OVS' `MAX_LIVENESS_RECURSION`).
const MAX_LIVENESS_DEPTH: usize = 32;

/// A simulator over one set of tables, keeping conntrack state and learned flows across
/// traces: trace several packets with one simulator for each to see what the ones before it
/// left behind.
#[derive(Clone, Debug)]
pub struct Simulator<'t> {
    /// The tables given, copied once a `learn` action adds a flow.
    tables: Cow<'t, FlowTables>,
    conntrack: Conntrack,
}

/// Traces one packet through `tables` with an empty conntrack table.
pub fn trace(tables: &FlowTables, in_port: u32, packet: Packet) -> Trace {
    Simulator::new(tables).trace(in_port, packet)
}

impl<'t> Simulator<'t> {
    /// A simulator with an empty conntrack table.
    pub fn new(tables: &'t FlowTables) -> Self {
        Simulator {
            tables: Cow::Borrowed(tables),
            conntrack: Conntrack::new(),
        }
    }

    /// The tables, with the flows `learn` actions added.
    pub fn tables(&self) -> &FlowTables {
        &self.tables
    }

    /// The conntrack table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.conntrack
    }

    /// The conntrack table, mutable (to clear or inspect it).
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.conntrack
    }

    /// Sends `packet` in on `in_port` and records everything that happens.
    pub fn trace(&mut self, in_port: u32, packet: Packet) -> Trace {
        let packet = packet.with(Field::InPort, u128::from(in_port));
        let mut run = Run::default();
        let mut passes = Vec::new();
        let mut next = Some(Recirc {
            cause: None,
            table: 0,
            packet: packet.clone(),
            action_set: ActionSet::default(),
            depth: 0,
        });
        while let Some(r) = next {
            let mut x = Xlate {
                tables: &self.tables,
                ct: &mut self.conntrack,
                run: &mut run,
                action_set: r.action_set,
                halted: false,
                table: r.table,
                cookie: 0,
                resubmits: 0,
                recirc_depth: r.depth,
            };
            passes.push(x.pass(r.cause, r.packet));
            // Learned even when the pass failed later: OVS adds the flow as `learn` runs.
            for flow in run.learned.drain(..) {
                self.tables.to_mut().learn(flow);
            }
            next = match run.error {
                None => run.pending.pop_front(),
                Some(_) => None,
            };
        }
        let verdict = match run.error {
            Some(e) => Verdict {
                outputs: Vec::new(),
                controller: Vec::new(),
                drop: Some(e),
            },
            None => {
                let nothing = run.outputs.is_empty() && run.controller.is_empty();
                Verdict {
                    outputs: run.outputs,
                    controller: run.controller,
                    drop: nothing.then(|| run.last_drop.unwrap_or(DropReason::NoOutput)),
                }
            }
        };
        Trace {
            in_port,
            packet,
            passes,
            verdict,
        }
    }
}

/// A pass to run: the ingress pass, or a pending recirculation.
struct Recirc {
    /// `None` for the ingress pass, the `ct` action otherwise.
    cause: Option<String>,
    table: u8,
    packet: Packet,
    action_set: ActionSet,
    depth: usize,
}

/// The OpenFlow action set: one action per kind (one per destination field for writes),
/// executed in OpenFlow's order.
#[derive(Clone, Debug, Default)]
struct ActionSet {
    slots: BTreeMap<(u8, &'static str), Action>,
}

impl ActionSet {
    fn slot(a: &Action) -> (u8, &'static str) {
        match a {
            Action::PopVlan => (0, "pop_vlan"),
            Action::PopMpls(_) => (1, "pop_mpls"),
            Action::PushMpls(_) => (2, "push_mpls"),
            Action::PushVlan(_) => (3, "push_vlan"),
            Action::DecTtl => (4, "dec_ttl"),
            Action::DecMplsTtl => (5, "dec_mpls_ttl"),
            Action::SetMplsTtl(_) => (6, "set_mpls_ttl"),
            Action::SetField { field, .. } => (7, field.name()),
            Action::RegLoad { dst, .. } | Action::Move { dst, .. } => (7, dst.field.name()),
            Action::SetQueue(_) => (8, "set_queue"),
            Action::Group(_) => (9, "group"),
            Action::Output { .. } | Action::OutputReg { .. } => (10, "output"),
            _ => (11, "other"),
        }
    }

    fn write(&mut self, a: &Action) {
        self.slots.insert(ActionSet::slot(a), a.clone());
    }

    /// The actions to execute, in order (output dropped when a group is present).
    fn actions(&self) -> Vec<Action> {
        let has_group = self.slots.keys().any(|k| k.1 == "group");
        self.slots
            .iter()
            .filter(|(k, _)| !(has_group && k.1 == "output"))
            .map(|(_, a)| a.clone())
            .collect()
    }

    fn describe(&self) -> String {
        let v: Vec<String> = self.slots.values().map(ToString::to_string).collect();
        if v.is_empty() {
            "empty".into()
        } else {
            v.join(",")
        }
    }
}

/// Whether the rest of the current action list runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Control {
    Continue,
    Stop,
}

/// What one packet's passes share.
#[derive(Default)]
struct Run {
    outputs: Vec<Output>,
    controller: Vec<ControllerPacket>,
    pending: VecDeque<Recirc>,
    /// A translation error: the whole packet is dropped.
    error: Option<DropReason>,
    /// The latest reason the packet went nowhere.
    last_drop: Option<DropReason>,
    /// Flows learned in the current pass, added to the tables once it is over.
    learned: Vec<Flow>,
}

/// The translation of one pass.
struct Xlate<'t, 'r> {
    tables: &'t FlowTables,
    ct: &'r mut Conntrack,
    run: &'r mut Run,
    action_set: ActionSet,
    /// Nothing more runs in this pass (error or paused controller action).
    halted: bool,
    /// Table and cookie of the flow executing.
    table: u8,
    cookie: u64,
    /// Lookups that hit a flow in this pass (the first one included).
    resubmits: usize,
    recirc_depth: usize,
}

/// FNV-1a over `values` (each as 16 big-endian bytes), mixed with `basis`: the simulator's
/// deterministic stand-in for OVS' hashes.
pub(crate) fn fnv1a(basis: u64, values: impl IntoIterator<Item = u128>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ basis;
    for v in values {
        for b in v.to_be_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// `v` moved to the subfield's offset (0 if the offset is out of range).
pub(crate) fn shift_in(v: u128, sf: &Subfield) -> u128 {
    v.checked_shl(u32::from(sf.ofs)).unwrap_or(0)
}

/// The subfield's bits as a mask of the whole field.
pub(crate) fn bits_mask(sf: &Subfield) -> u128 {
    shift_in(ones(u32::from(sf.n_bits)), sf)
}

/// The subfield's bits, if the packet carries the field.
pub(crate) fn read_subfield(p: &Packet, sf: &Subfield) -> Option<u128> {
    p.get(sf.field)
        .map(|v| v.checked_shr(u32::from(sf.ofs)).unwrap_or(0) & ones(u32::from(sf.n_bits)))
}

/// Masked write; returns the effect in words.
fn write_field(p: &mut Packet, field: Field, value: u128, mask: u128) -> String {
    let Some(old) = p.write_base(field) else {
        return format!("{} is absent from the packet: write ignored", field.name());
    };
    let new = (old & !mask) | (value & mask);
    if !p.set(field, new) {
        return format!("{} cannot be written here: ignored", field.name());
    }
    let shown = p.get(field).unwrap_or(new);
    format!(
        "{}={}",
        field.name(),
        field.format_value(shown, field.full_mask())
    )
}

/// Clears the conntrack fields the flows see (`ct_clear`, and `ct` for the packet going on).
fn clear_conntrack(pkt: &mut Packet) {
    for f in openflow::field::CONNTRACK {
        pkt.clear(f);
    }
}

/// The fields (and echo identifier) `after` changed from `before`, as `field=old->new`.
fn changes(before: &Packet, after: &Packet) -> String {
    let mut out: Vec<String> = Field::all()
        .filter_map(|f| match (before.get(f), after.get(f)) {
            (Some(b), Some(a)) if a != b => {
                let m = f.full_mask();
                let (b, a) = (f.format_value(b, m), f.format_value(a, m));
                Some(format!("{}={b}->{a}", f.name()))
            }
            _ => None,
        })
        .collect();
    if let (Some(b), Some(a)) = (before.icmp_id(), after.icmp_id())
        && a != b
    {
        out.push(format!("icmp_id={b}->{a}"));
    }
    if out.is_empty() {
        "nothing changed".into()
    } else {
        out.join(",")
    }
}

/// FNV-1a over the fields of the hash Open vSwitch's datapath computes for a select group
/// (`hash(sym_l4(0))`: `flow_hash_symmetric_l3l4` without UDP), mixed with `basis`: for IP, the
/// addresses, the protocol and the ports of TCP and SCTP only — UDP ports are not part of it, so
/// all datagrams between two hosts hash alike, as in OVS; for other packets the Ethernet
/// addresses and type.
fn flow_hash(p: &Packet, basis: u64) -> u64 {
    const IP: [Field; 9] = [
        Field::Ipv4Src,
        Field::Ipv4Dst,
        Field::Ipv6Src,
        Field::Ipv6Dst,
        Field::IpProto,
        Field::TcpSrc,
        Field::TcpDst,
        Field::SctpSrc,
        Field::SctpDst,
    ];
    let mut fields: Vec<u128> = IP.iter().filter_map(|f| p.get(*f)).collect();
    if fields.is_empty() {
        fields = [Field::EthSrc, Field::EthDst, Field::EthType]
            .iter()
            .filter_map(|f| p.get(*f))
            .collect();
    }
    fnv1a(basis, fields)
}

impl Xlate<'_, '_> {
    /// Runs the pass from `self.table`.
    fn pass(&mut self, cause: Option<String>, mut pkt: Packet) -> Pass {
        let start = pkt.clone();
        let root = self.lookup(&mut pkt, self.table, 0);
        let mut action_set = Vec::new();
        if !self.halted && !self.action_set.slots.is_empty() {
            let acts = self.action_set.actions();
            self.action_set = ActionSet::default();
            action_set.push(Op::Instruction(format!(
                "executing the action set: {}",
                acts.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )));
            self.actions(&mut pkt, &acts, 0, &mut action_set);
        }
        Pass {
            cause,
            packet: start,
            root,
            action_set,
        }
    }

    /// OVS' resource check before a nested lookup or a group at `depth`: refused, failing the
    /// translation, at `MAX_DEPTH` levels or after `MAX_RESUBMITS` nested lookups that hit a
    /// flow.
    fn resources(&mut self, depth: usize) -> bool {
        let e = if depth >= MAX_DEPTH {
            DropReason::ResubmitDepth
        } else if self.resubmits > MAX_RESUBMITS {
            // `resubmits` counts the pass' first lookup too.
            DropReason::TooManyResubmits
        } else {
            return true;
        };
        self.fail(e);
        false
    }

    /// Why a nested lookup or group did not run.
    fn refusal(&self) -> String {
        let why = self.run.error.as_ref().map(ToString::to_string);
        format!(
            "refused: {}",
            why.as_deref().unwrap_or("the pass is halted")
        )
    }

    fn fail(&mut self, e: DropReason) {
        self.run.error.get_or_insert(e);
        self.halted = true;
    }

    fn lookup(&mut self, pkt: &mut Packet, table: u8, depth: usize) -> Step {
        let Some(hit) = self.tables.find(table, pkt) else {
            self.run.last_drop = Some(DropReason::TableMiss { table });
            return Step {
                table,
                flow: None,
                conjunction: None,
                ops: Vec::new(),
            };
        };
        let flow = hit.flow;
        self.resubmits += 1;
        if flow.instructions.is_drop() {
            self.run.last_drop = Some(DropReason::DropFlow {
                table,
                cookie: flow.cookie,
            });
        }
        let saved = (self.table, self.cookie);
        (self.table, self.cookie) = (table, flow.cookie);
        let mut ops = Vec::new();
        self.instructions(pkt, flow, depth, &mut ops);
        (self.table, self.cookie) = saved;
        Step {
            table,
            flow: Some(flow.clone()),
            conjunction: hit.conjunction,
            ops,
        }
    }

    fn instructions(&mut self, pkt: &mut Packet, flow: &Flow, depth: usize, ops: &mut Vec<Op>) {
        let ins = &flow.instructions;
        if self.actions(pkt, &ins.apply, depth, ops) == Control::Stop {
            return;
        }
        if ins.clear() {
            self.action_set = ActionSet::default();
            ops.push(Op::Instruction("clear_actions: action set emptied".into()));
        }
        if let Some(w) = ins.write() {
            for a in w {
                self.action_set.write(a);
            }
            ops.push(Op::Instruction(format!(
                "write_actions: action set is now {}",
                self.action_set.describe()
            )));
        }
        if let Some((v, m)) = ins.write_metadata() {
            let effect = write_field(pkt, Field::Metadata, v.into(), m.into());
            ops.push(Op::Instruction(format!("write_metadata -> {effect}")));
        }
        if let Some(t) = ins.goto_table {
            if !self.resources(depth) {
                ops.push(Op::Instruction(format!(
                    "goto_table:{t} {}",
                    self.refusal()
                )));
                return;
            }
            // Always to a later table: no deeper (as a resubmit to a later table).
            let step = self.lookup(pkt, t, depth);
            ops.push(Op::Goto(Box::new(step)));
        }
    }

    fn actions(
        &mut self,
        pkt: &mut Packet,
        actions: &[Action],
        depth: usize,
        ops: &mut Vec<Op>,
    ) -> Control {
        for a in actions {
            if self.halted || self.action(pkt, a, depth, ops) == Control::Stop {
                return Control::Stop;
            }
        }
        if self.halted {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn action(&mut self, pkt: &mut Packet, a: &Action, depth: usize, ops: &mut Vec<Op>) -> Control {
        let mut control = Control::Continue;
        let to = match a {
            Action::Output { port: p, .. } => Some(*p),
            Action::OutputReg { src, .. } => read_subfield(pkt, src).map(|p| p as u32),
            _ => None,
        };
        let in_port = pkt.in_port();
        let target = to.map(|p| if p == port::IN_PORT { in_port } else { p });
        if let Some(peer) = target
            .filter(|p| *p != in_port || to == Some(port::IN_PORT))
            .and_then(|p| Some((p, self.tables.patch_peer(p)?)))
        {
            return self.patch(pkt, a, peer, depth, ops);
        }
        let effect = match a {
            Action::Output { port: p, .. } => self.output(pkt, *p),
            Action::OutputReg { src, .. } => match read_subfield(pkt, src) {
                Some(p) => self.output(pkt, p as u32),
                None => format!("{} is absent: no output", src.field.name()),
            },
            Action::Group(g) => return self.group(pkt, *g, depth, ops),
            Action::Resubmit { port: p, table, ct } => {
                return self.resubmit(pkt, a, *p, *table, *ct, depth, ops);
            }
            Action::Ct(ct) => self.ct(pkt, ct, a),
            Action::CtClear => {
                clear_conntrack(pkt);
                pkt.set_datapath_nat(None);
                "conntrack fields cleared".into()
            }
            Action::SetField { field, value, mask } => write_field(pkt, *field, *value, *mask),
            Action::RegLoad { dst, value } => {
                let m = bits_mask(dst);
                write_field(pkt, dst.field, shift_in(u128::from(*value), dst), m)
            }
            Action::Move { src, dst } => match read_subfield(pkt, src) {
                Some(v) => write_field(pkt, dst.field, shift_in(v, dst), bits_mask(dst)),
                None => format!(
                    "{} is absent from the packet: move ignored",
                    src.field.name()
                ),
            },
            Action::PushVlan(tpid) => {
                pkt.push_vlan(*tpid);
                "VLAN tag pushed".into()
            }
            Action::PopVlan => {
                if pkt.vlans().is_empty() {
                    "no VLAN tag: nothing popped".into()
                } else {
                    pkt.pop_vlan();
                    "outer VLAN tag popped".into()
                }
            }
            Action::PushMpls(e) => {
                pkt.push_mpls(*e);
                format!("MPLS label pushed, eth_type={e:#06x}")
            }
            Action::PopMpls(e) => {
                if pkt.pop_mpls(*e) {
                    format!("MPLS label popped, eth_type={e:#06x}")
                } else {
                    "not MPLS: nothing popped".into()
                }
            }
            Action::SetMplsTtl(t) => match pkt.outer_lse() {
                Some(l) => {
                    l.ttl = *t;
                    format!("mpls_ttl={t}")
                }
                None => "not MPLS: ignored".into(),
            },
            Action::DecMplsTtl => match pkt.outer_lse() {
                Some(l) if l.ttl > 1 => {
                    l.ttl -= 1;
                    format!("mpls_ttl={}", l.ttl)
                }
                Some(_) => {
                    control = self.ttl_expired(pkt);
                    "MPLS TTL expired: sent to the controller (invalid_ttl), the rest of this \
                     action list is skipped"
                        .into()
                }
                None => "not MPLS: ignored".into(),
            },
            Action::DecTtl => match pkt.get(Field::IpTtl) {
                Some(t) if t > 1 => write_field(pkt, Field::IpTtl, t - 1, 0xff),
                Some(_) => {
                    control = self.ttl_expired(pkt);
                    "TTL expired: sent to the controller (invalid_ttl), the rest of this action \
                     list is skipped"
                        .into()
                }
                None => "not IP: ignored".into(),
            },
            Action::Controller(c) => {
                self.send_to_controller(pkt, c);
                if c.pause {
                    self.halted = true;
                    "sent to the controller, pipeline paused (continuation not simulated)".into()
                } else {
                    "sent to the controller".into()
                }
            }
            Action::Multipath {
                basis,
                max_link,
                dst,
                ..
            } => {
                let link = flow_hash(pkt, u64::from(*basis)) % (u64::from(*max_link) + 1);
                write_field(
                    pkt,
                    dst.field,
                    shift_in(u128::from(link), dst),
                    bits_mask(dst),
                )
            }
            Action::Conjunction { .. } => "only meaningful in a lookup".into(),
            Action::Learn(l) => {
                let flow = learned_flow(l, pkt);
                let text = format!(
                    "learned, in the tables from the next pass on: {}",
                    flow.to_string().trim()
                );
                self.run.learned.push(flow);
                text
            }
            Action::Sample { .. } => "sampling is not simulated".into(),
            Action::SetQueue(q) => format!("queue {q} (not simulated)"),
            Action::Note(_) => String::new(),
        };
        ops.push(Op::Action {
            action: a.clone(),
            effect,
        });
        control
    }

    /// A TTL decrement found nothing to decrement: OVS sends the packet to controller 0 with
    /// reason `invalid_ttl` and stops the action list.
    fn ttl_expired(&mut self, pkt: &Packet) -> Control {
        let invalid_ttl = Controller {
            reason: reason::INVALID_TTL,
            ..Controller::default()
        };
        self.send_to_controller(pkt, &invalid_ttl);
        Control::Stop
    }

    fn send_to_controller(&mut self, pkt: &Packet, c: &Controller) {
        self.run.controller.push(ControllerPacket {
            reason: c.reason,
            controller_id: c.id,
            userdata: c.userdata.clone(),
            pause: c.pause,
            table: self.table,
            cookie: self.cookie,
            packet: pkt.wire(),
        });
    }

    fn output(&mut self, pkt: &Packet, p: u32) -> String {
        let in_port = pkt.in_port();
        match p {
            port::CONTROLLER => {
                self.send_to_controller(pkt, &Controller::default());
                "sent to the controller".into()
            }
            port::IN_PORT => self.emit(pkt, in_port),
            port::NORMAL | port::FLOOD | port::ALL => {
                self.run.outputs.push(Output {
                    port: p,
                    packet: pkt.wire(),
                    tunnel: None,
                });
                "recorded as an output to this pseudo-port (not expanded)".into()
            }
            port::TABLE | port::ANY => "not a valid output here: ignored".into(),
            p if p == in_port => {
                self.run.last_drop = Some(DropReason::OutputToInPort { port: p });
                "skipped: it is the input port (OVS needs IN_PORT for that)".into()
            }
            p => self.emit(pkt, p),
        }
    }

    fn emit(&mut self, pkt: &Packet, p: u32) -> String {
        let tunnel = self.tables.tunnel_out(p, pkt);
        let effect = match &tunnel {
            Some(t) => format!("sent over the tunnel with {t}"),
            None => "sent".into(),
        };
        self.run.outputs.push(Output {
            port: p,
            packet: pkt.wire(),
            tunnel,
        });
        effect
    }

    /// An output to patch port `port`, whose peer `peer` is on this bridge: the packet comes
    /// back in at the peer and goes through the tables from 0, with what Open vSwitch's
    /// `patch_port_output` (ofproto-dpif-xlate.c) resets: `in_port` is the peer, `metadata`,
    /// the registers and the tunnel fields are zero, the conntrack fields are cleared, and the
    /// peer's pipeline has an action set of its own, executed at its end. The lookup from table
    /// 0 nests one level deeper, as OVS' does. Afterwards the caller's actions go on with the
    /// packet and action set as they were (OVS translates the peer's part as a clone), whatever
    /// became of the peer's part: as in OVS, neither its translation error (the depth or
    /// resubmit limit, checked as it starts or within it; the packet's drop reason if nothing
    /// is output) nor a paused controller action in it reaches the caller. Limit: the
    /// datapath's NAT state is carried over as it is.
    fn patch(
        &mut self,
        pkt: &Packet,
        a: &Action,
        (port, peer): (u32, u32),
        depth: usize,
        ops: &mut Vec<Op>,
    ) -> Control {
        let op = |step, action_set, effect| Op::Patch {
            action: a.clone(),
            port,
            peer,
            step,
            action_set,
            effect,
        };
        if self.halted {
            ops.push(op(None, Vec::new(), self.refusal()));
            return Control::Stop;
        }
        if !self.resources(depth) {
            let refused = self.refusal();
            self.forgive_peer_error();
            ops.push(op(
                None,
                Vec::new(),
                format!("{refused} (the caller goes on)"),
            ));
            return Control::Continue;
        }
        let mut crossed = pkt.clone();
        crossed.set(Field::InPort, u128::from(peer));
        let reset = [Field::Metadata, Field::TunId, Field::TunSrc, Field::TunDst]
            .into_iter()
            .chain((0..openflow::field::N_REGS).map(Field::Reg))
            .chain((0..openflow::field::N_TUN_METADATA).map(Field::TunMetadata));
        for f in reset {
            crossed.clear(f);
        }
        clear_conntrack(&mut crossed);
        let saved = (
            std::mem::take(&mut self.action_set),
            self.table,
            self.cookie,
        );
        let step = self.lookup(&mut crossed, 0, depth + 1);
        let mut action_set = Vec::new();
        if !self.halted && !self.action_set.slots.is_empty() {
            let acts = self.action_set.actions();
            action_set.push(Op::Instruction(format!(
                "executing the peer's action set: {}",
                acts.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )));
            self.actions(&mut crossed, &acts, depth + 1, &mut action_set);
        }
        (self.action_set, self.table, self.cookie) = saved;
        let mut effect = format!(
            "patch port {} to its peer {}: in again there at table 0, metadata, registers, \
             tunnel and conntrack fields cleared",
            openflow::field::port_name(port),
            openflow::field::port_name(peer)
        );
        if let Some(e) = self.forgive_peer_error() {
            effect.push_str(&format!(
                "; the peer's part failed ({e}), the caller goes on"
            ));
        }
        ops.push(op(Some(Box::new(step)), action_set, effect));
        Control::Continue
    }

    /// Ends what the peer's part of a patch-port crossing halted, as OVS' `patch_port_output`
    /// does ("out bridge errors do not propagate back"): the pass goes on, and a translation
    /// error becomes the reason the packet went nowhere (if it does). Returns that error.
    fn forgive_peer_error(&mut self) -> Option<DropReason> {
        self.halted = false;
        let e = self.run.error.take()?;
        self.run.last_drop = Some(e.clone());
        Some(e)
    }

    #[allow(clippy::too_many_arguments)]
    fn resubmit(
        &mut self,
        pkt: &mut Packet,
        a: &Action,
        p: u32,
        table: Option<u8>,
        ct: bool,
        depth: usize,
        ops: &mut Vec<Op>,
    ) -> Control {
        let t = table.unwrap_or(self.table);
        if self.halted || !self.resources(depth) {
            ops.push(Op::Resubmit {
                action: a.clone(),
                step: None,
                effect: self.refusal(),
            });
            return Control::Stop;
        }
        let old = pkt.in_port();
        let mut effect = format!("lookup in table {t}");
        if p != port::IN_PORT {
            pkt.set(Field::InPort, u128::from(p));
            effect.push_str(&format!(" with in_port={}", openflow::field::port_name(p)));
        }
        if ct {
            effect.push_str(" (ct original tuple not simulated)");
        }
        // OVS 2.6 and later: only a resubmit to the same or an earlier table nests deeper.
        let step = self.lookup(pkt, t, depth + usize::from(t <= self.table));
        pkt.set(Field::InPort, u128::from(old));
        ops.push(Op::Resubmit {
            action: a.clone(),
            step: Some(Box::new(step)),
            effect,
        });
        if self.halted {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    fn group(&mut self, pkt: &Packet, id: u32, depth: usize, ops: &mut Vec<Op>) -> Control {
        let tables = self.tables;
        let Some(g) = tables.group(id) else {
            ops.push(Op::Group {
                group: id,
                group_type: None,
                buckets: Vec::new(),
                effect: "no such group: nothing done".into(),
            });
            return Control::Continue;
        };
        if !self.resources(depth) {
            ops.push(Op::Group {
                group: id,
                group_type: Some(g.group_type),
                buckets: Vec::new(),
                effect: self.refusal(),
            });
            return Control::Stop;
        }
        let live: Vec<usize> = (0..g.buckets.len())
            .filter(|i| self.bucket_live(&g.buckets[*i], 0))
            .collect();
        let (chosen, effect): (Vec<usize>, String) = match g.group_type {
            GroupType::All => ((0..g.buckets.len()).collect(), "every bucket".into()),
            GroupType::Indirect => (vec![0], "its bucket".into()),
            GroupType::FastFailover => (
                live.first().copied().into_iter().collect(),
                "first live bucket".into(),
            ),
            GroupType::Select => {
                // Our own selection (see the module docs for OVS'): each live bucket scores
                // (hash & 0xffff) * weight, the highest score wins, ties go to the later bucket.
                let basis = flow_hash(pkt, 0);
                let mut best: Option<(u64, usize)> = None;
                for &i in &live {
                    let score = (flow_hash(pkt, basis ^ i as u64) & 0xffff)
                        * u64::from(g.buckets[i].weight);
                    if best.is_none_or(|(b, _)| score >= b) {
                        best = Some((score, i));
                    }
                }
                (
                    best.map(|(_, i)| i).into_iter().collect(),
                    format!("bucket chosen by the packet hash {basis:#018x} and the weights"),
                )
            }
        };
        if chosen.is_empty() {
            self.run.last_drop = Some(DropReason::NoLiveBucket { group: id });
        }
        // OVS hashes the packet for a select group in the datapath and recirculates: one
        // recirculation more for whatever the bucket does.
        let hashed = g.group_type == GroupType::Select;
        if hashed && self.recirc_depth >= MAX_RECIRCULATIONS {
            self.run.last_drop = Some(DropReason::RecirculationDepth);
            ops.push(Op::Group {
                group: id,
                group_type: Some(g.group_type),
                buckets: Vec::new(),
                effect: "recirculation for the datapath's hash refused: too deep".into(),
            });
            return Control::Stop;
        }
        if hashed {
            self.recirc_depth += 1;
        }
        let mut buckets = Vec::new();
        for i in chosen {
            let mut copy = pkt.clone();
            let mut bops = Vec::new();
            self.actions(&mut copy, &g.buckets[i].actions, depth + 1, &mut bops);
            buckets.push((i, bops));
            if self.halted {
                break;
            }
        }
        if hashed {
            self.recirc_depth -= 1;
        }
        ops.push(Op::Group {
            group: id,
            group_type: Some(g.group_type),
            buckets,
            effect: if self.halted {
                format!("{effect} (halted)")
            } else {
                effect
            },
        });
        if self.halted {
            Control::Stop
        } else {
            Control::Continue
        }
    }

    /// OVS' liveness: a bucket watching nothing is live, otherwise it is live when its watch
    /// port is up or its watch group has a live bucket.
    fn bucket_live(&self, b: &Bucket, depth: usize) -> bool {
        let (no_port, no_group) = (b.watch_port == port::ANY, b.watch_group == ANY_GROUP);
        (no_port && no_group)
            || (!no_port && self.tables.is_port_up(b.watch_port))
            || (!no_group
                && depth < MAX_LIVENESS_DEPTH
                && self
                    .tables
                    .group(b.watch_group)
                    .is_some_and(|g| g.buckets.iter().any(|b| self.bucket_live(b, depth + 1))))
    }

    fn ct(&mut self, pkt: &mut Packet, ct: &Ct, a: &Action) -> String {
        let zone = match ct.zone {
            CtZone::Imm(z) => z,
            CtZone::Field(sf) => read_subfield(pkt, &sf).unwrap_or(0) as u16,
        };
        // Conntrack gets the datapath's packet: maybe translated by an earlier `ct` of this
        // pass, whose NAT state counts in the same zone.
        let mut wire = pkt.wire();
        let natted = pkt
            .datapath_nat()
            .and_then(|(bits, z)| (z == zone).then_some(bits));
        let mut v = self.ct.classify(&wire, zone, natted.is_some());
        let mut notes = Vec::new();
        if ct.force
            && ct.commit
            && v.state & ct_state::RPL != 0
            && let Some(i) = v.conn
        {
            self.ct.remove(i);
            v = self.ct.classify(&wire, zone, natted.is_some());
            notes.push("reply-direction connection removed (force)".to_string());
        }
        if ct.commit && v.state & ct_state::INV == 0 {
            if let Some(key) = v.key {
                let committed = match v.conn {
                    Some(i) => Ok((i, false)),
                    None => self
                        .ct
                        .commit(key, ct.nat.as_ref(), &wire)
                        .map(|i| (i, true)),
                };
                match committed {
                    Ok((i, new)) => {
                        if let Some(c) = self.ct.get(i).filter(|c| new && c.nat.is_some()) {
                            notes.push(format!("NAT binding: replies are {}", c.reply));
                        }
                        v.conn = Some(i);
                        self.ct_exec(i, &ct.exec);
                        notes.push("committed".into());
                    }
                    Err(e) => notes.push(format!("{e}: not committed")),
                }
            }
        } else if ct.commit {
            notes.push("invalid packet: not committed".into());
        } else if !ct.exec.is_empty() {
            notes.push("exec ignored without commit".into());
        }
        let mut state = v.state | natted.unwrap_or(0);
        match (ct.nat, natted, v.conn) {
            (Some(_), Some(_), _) => notes.push("already translated in this zone".into()),
            (Some(_), None, Some(i)) => {
                let before = wire.clone();
                if let Some(kind) = self.ct.translate(i, v.reply, &mut wire) {
                    state |= kind.state();
                    notes.push(format!(
                        "translated in the datapath: {}; the rest of this pass matches the \
                         original headers",
                        changes(&before, &wire)
                    ));
                }
            }
            _ => {}
        }
        // The packet going on: translated in the datapath only, its conntrack fields cleared
        // for the flows (not for the datapath, which a later `ct` in the zone sees).
        pkt.set_wire(&wire);
        let nat_bits = state & (ct_state::SNAT | ct_state::DNAT);
        pkt.set_datapath_nat((nat_bits != 0).then_some((nat_bits, zone)));
        clear_conntrack(pkt);
        let state_text = flag_text(&CT_STATE_FLAGS, u128::from(state));
        let Some(table) = ct.table else {
            notes.push(format!(
                "{state_text} (not visible: no table= to recirculate to)"
            ));
            return notes.join("; ");
        };
        if self.recirc_depth >= MAX_RECIRCULATIONS {
            self.run.last_drop = Some(DropReason::RecirculationDepth);
            notes.push("recirculation refused: too deep".into());
            return notes.join("; ");
        }
        let mut r = wire;
        clear_conntrack(&mut r);
        let conn = v.conn.and_then(|i| self.ct.get(i));
        r.set(Field::CtState, u128::from(state));
        r.set(Field::CtZone, u128::from(zone));
        r.set(Field::CtMark, conn.map_or(0, |c| u128::from(c.mark)));
        r.set(Field::CtLabel, conn.map_or(0, |c| c.label));
        let orig = match (conn, v.key) {
            (Some(c), _) => Some((c.key, c.tp)),
            (None, Some(k)) => Some((k, orig_tp(&r, &k))),
            (None, None) => None,
        };
        if let Some((k, (tp_src, tp_dst))) = orig.filter(|_| state & ct_state::INV == 0) {
            match (k.src, k.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    r.set(Field::CtNwSrc, u128::from(u32::from(s)));
                    r.set(Field::CtNwDst, u128::from(u32::from(d)));
                }
                (s, d) => {
                    let v6 = |a: IpAddr| match a {
                        IpAddr::V4(a) => a.to_ipv6_mapped(),
                        IpAddr::V6(a) => a,
                    };
                    r.set(Field::CtIpv6Src, u128::from(v6(s)));
                    r.set(Field::CtIpv6Dst, u128::from(v6(d)));
                }
            }
            r.set(Field::CtNwProto, u128::from(k.proto));
            r.set(Field::CtTpSrc, u128::from(tp_src));
            r.set(Field::CtTpDst, u128::from(tp_dst));
        }
        self.run.pending.push_back(Recirc {
            cause: Some(a.to_string()),
            table,
            packet: r,
            action_set: self.action_set.clone(),
            depth: self.recirc_depth + 1,
        });
        notes.push(format!(
            "{state_text}: recirculates to table {table}; this copy continues untracked"
        ));
        notes.join("; ")
    }

    /// `exec(...)` of a committing `ct`: writes to `ct_mark`/`ct_label` of connection `i`.
    fn ct_exec(&mut self, i: usize, exec: &[Action]) {
        let Some(c) = self.ct.get_mut(i) else { return };
        for a in exec {
            let (field, value, mask) = match a {
                Action::SetField { field, value, mask } => (*field, *value, *mask),
                Action::RegLoad { dst, value } => {
                    (dst.field, shift_in(u128::from(*value), dst), bits_mask(dst))
                }
                _ => continue,
            };
            match field {
                Field::CtMark => {
                    c.mark = ((u128::from(c.mark) & !mask) | (value & mask)) as u32;
                }
                Field::CtLabel => c.label = (c.label & !mask) | (value & mask),
                _ => {}
            }
        }
    }
}
