//! Actions: the standard OpenFlow 1.3 ones and the Nicira extensions Open vSwitch implements,
//! with their wire codec and their `ovs-ofctl` text form.
//!
//! Canonical forms (what Open vSwitch hands back, so desired and installed flows compare equal):
//! a plain `controller` action is [`Action::Output`] to [`port::CONTROLLER`]; a masked write of a
//! field of at most 64 bits is [`Action::RegLoad`] (`load:`); an exact write is
//! [`Action::SetField`]; a note is stored without its zero padding.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{DecodeError, invalid};
use crate::field::{Field, port, port_name};
use crate::matching::{
    OxmField, decode_oxm, decode_oxm_header, encode_oxm, port_from_16, port_to_16,
};
use crate::wire::{Reader, Writer};

/// Nicira vendor id.
pub const NX_VENDOR: u32 = 0x0000_2320;

/// A bit range of a field: `NXM_NX_REG0[4..7]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subfield {
    /// The field.
    pub field: Field,
    /// Offset of the lowest bit.
    pub ofs: u16,
    /// Number of bits (≥ 1).
    pub n_bits: u16,
}

impl Subfield {
    /// The whole field.
    pub fn whole(field: Field) -> Self {
        Subfield {
            field,
            ofs: 0,
            n_bits: field.bits() as u16,
        }
    }
    /// Bits `lo..=hi` of `field`.
    pub fn range(field: Field, lo: u16, hi: u16) -> Self {
        Subfield {
            field,
            ofs: lo,
            n_bits: hi.saturating_sub(lo) + 1,
        }
    }
    /// Whether this covers the whole field.
    pub fn is_whole(&self) -> bool {
        self.ofs == 0 && u32::from(self.n_bits) == self.field.bits()
    }
    fn check(self) -> Result<Self, DecodeError> {
        if self.n_bits == 0 || u32::from(self.ofs) + u32::from(self.n_bits) > self.field.bits() {
            return Err(invalid("subfield", format!("{self} exceeds the field")));
        }
        Ok(self)
    }
    fn ofs_nbits(&self) -> u16 {
        (self.ofs << 6) | (self.n_bits.wrapping_sub(1) & 0x3f)
    }
    fn from_ofs_nbits(field: Field, v: u16) -> Result<Self, DecodeError> {
        Subfield {
            field,
            ofs: v >> 6,
            n_bits: (v & 0x3f) + 1,
        }
        .check()
    }
}

impl fmt::Display for Subfield {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.field.nxm_name();
        if self.is_whole() {
            write!(f, "{name}[]")
        } else if self.n_bits == 1 {
            write!(f, "{name}[{}]", self.ofs)
        } else {
            let hi = (u32::from(self.ofs) + u32::from(self.n_bits)).saturating_sub(1);
            write!(f, "{name}[{}..{hi}]", self.ofs)
        }
    }
}

/// The zone of a `ct` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CtZone {
    /// A constant zone (0 = default zone).
    Imm(u16),
    /// Taken from 16 bits of a field.
    Field(Subfield),
}

/// NAT address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatAddr {
    /// IPv4 `min[-max]`.
    V4(Ipv4Addr, Option<Ipv4Addr>),
    /// IPv6 `min[-max]`.
    V6(Ipv6Addr, Option<Ipv6Addr>),
}

/// `nat(...)` inside `ct`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Nat {
    /// `Some(true)` = `src`, `Some(false)` = `dst`, `None` = plain `nat` (un-NAT).
    pub src: Option<bool>,
    /// Address range.
    pub addr: Option<NatAddr>,
    /// Port range `min[-max]` (min ≠ 0).
    pub ports: Option<(u16, Option<u16>)>,
    /// `persistent`.
    pub persistent: bool,
    /// `hash`.
    pub hash: bool,
    /// `random`.
    pub random: bool,
}

/// The `ct` action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ct {
    /// `commit`.
    pub commit: bool,
    /// `force`.
    pub force: bool,
    /// Conntrack zone.
    pub zone: CtZone,
    /// `table=N`: recirculate into that table.
    pub table: Option<u8>,
    /// `nat(...)`.
    pub nat: Option<Nat>,
    /// `exec(...)`: actions run on the connection (set ct_mark/ct_label).
    pub exec: Vec<Action>,
    /// `alg=` (0 none, 21 ftp, 69 tftp).
    pub alg: u16,
}

impl Default for Ct {
    fn default() -> Self {
        Ct {
            commit: false,
            force: false,
            zone: CtZone::Imm(0),
            table: None,
            nat: None,
            exec: vec![],
            alg: 0,
        }
    }
}

/// Source of a learn spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnSrc {
    /// From a field of the packet being processed.
    Field(Subfield),
    /// An immediate value.
    Imm(u128),
}

/// One spec of a `learn` action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LearnSpec {
    /// The learned flow matches `dst` = `src`.
    Match {
        /// Value source.
        src: LearnSrc,
        /// Matched field bits (its width is the spec's width).
        dst: Subfield,
    },
    /// The learned flow loads `src` into `dst`.
    Load {
        /// Value source.
        src: LearnSrc,
        /// Loaded bits.
        dst: Subfield,
    },
    /// The learned flow outputs to the port in `src`.
    Output(Subfield),
}

/// `learn` flags.
pub mod learn_flags {
    /// `send_flow_rem`.
    pub const SEND_FLOW_REM: u16 = 1;
    /// `delete_learned`.
    pub const DELETE_LEARNED: u16 = 2;
    /// `write_result`.
    pub const WRITE_RESULT: u16 = 4;
}

/// The `learn` action: a flow-mod template.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learn {
    /// Table of the learned flow.
    pub table: u8,
    /// Idle timeout of the learned flow.
    pub idle_timeout: u16,
    /// Hard timeout of the learned flow.
    pub hard_timeout: u16,
    /// `fin_idle_timeout`.
    pub fin_idle_timeout: u16,
    /// `fin_hard_timeout`.
    pub fin_hard_timeout: u16,
    /// Priority of the learned flow.
    pub priority: u16,
    /// Cookie of the learned flow.
    pub cookie: u64,
    /// [`learn_flags`].
    pub flags: u16,
    /// Match/load/output specs.
    pub specs: Vec<LearnSpec>,
}

impl Default for Learn {
    fn default() -> Self {
        Learn {
            table: 1,
            idle_timeout: 0,
            hard_timeout: 0,
            fin_idle_timeout: 0,
            fin_hard_timeout: 0,
            priority: crate::ofp::DEFAULT_PRIORITY,
            cookie: 0,
            flags: 0,
            specs: vec![],
        }
    }
}

/// Packet-in reasons.
pub mod reason {
    /// No matching flow (table miss).
    pub const NO_MATCH: u8 = 0;
    /// Explicit `controller` action.
    pub const ACTION: u8 = 1;
    /// Invalid TTL.
    pub const INVALID_TTL: u8 = 2;
    /// Action set.
    pub const ACTION_SET: u8 = 3;
    /// Group.
    pub const GROUP: u8 = 4;
    /// Packet-out.
    pub const PACKET_OUT: u8 = 5;
    /// Names, indexed by reason.
    pub const NAMES: [&str; 6] = [
        "no_match",
        "action",
        "invalid_ttl",
        "action_set",
        "group",
        "packet_out",
    ];
}

/// The Nicira `controller(...)` action (use [`Action::Output`] to `CONTROLLER` for the plain form).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Controller {
    /// Bytes of the packet to send (`u16::MAX` = all).
    pub max_len: u16,
    /// Controller connection id.
    pub id: u16,
    /// Packet-in reason ([`reason`]).
    pub reason: u8,
    /// Opaque data returned in packet-in2.
    pub userdata: Vec<u8>,
    /// Pause the pipeline; the packet-in carries a continuation.
    pub pause: bool,
}

impl Default for Controller {
    fn default() -> Self {
        Controller {
            max_len: u16::MAX,
            id: 0,
            reason: reason::ACTION,
            userdata: vec![],
            pause: false,
        }
    }
}

/// `multipath` hash fields names, by wire value.
pub const MULTIPATH_FIELDS: [&str; 7] = [
    "eth_src",
    "symmetric_l4",
    "symmetric_l3l4",
    "symmetric_l3l4+udp",
    "nw_src",
    "nw_dst",
    "symmetric_l3",
];
/// `multipath` algorithm names, by wire value.
pub const MULTIPATH_ALGS: [&str; 4] = ["modulo_n", "hash_threshold", "hrw", "iter_hash"];

/// One action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// `output:PORT`, `IN_PORT`, `LOCAL`, `CONTROLLER:max_len`, ….
    Output {
        /// Port.
        port: u32,
        /// Bytes sent to the controller (only meaningful for `CONTROLLER`).
        max_len: u16,
    },
    /// `output:NXM_NX_REG0[]` (Nicira output_reg).
    OutputReg {
        /// Port source.
        src: Subfield,
        /// Controller max_len.
        max_len: u16,
    },
    /// `group:N`.
    Group(u32),
    /// `set_queue:N`.
    SetQueue(u32),
    /// `push_vlan:ETHERTYPE`.
    PushVlan(u16),
    /// `pop_vlan`.
    PopVlan,
    /// `push_mpls:ETHERTYPE`.
    PushMpls(u16),
    /// `pop_mpls:ETHERTYPE`.
    PopMpls(u16),
    /// `set_mpls_ttl(N)`.
    SetMplsTtl(u8),
    /// `dec_mpls_ttl`.
    DecMplsTtl,
    /// `dec_ttl`.
    DecTtl,
    /// `set_field:V->FIELD` (exact) or `set_field:V/M->FIELD` (masked, Nicira reg_load2).
    SetField {
        /// Field written.
        field: Field,
        /// Value.
        value: u128,
        /// Mask (all-ones for the plain form).
        mask: u128,
    },
    /// `load:V->DST` (Nicira reg_load, ≤ 64 bits).
    RegLoad {
        /// Destination bits.
        dst: Subfield,
        /// Value.
        value: u64,
    },
    /// `move:SRC->DST`.
    Move {
        /// Source bits.
        src: Subfield,
        /// Destination bits (same width).
        dst: Subfield,
    },
    /// `resubmit:PORT`, `resubmit(PORT,TABLE)`, `resubmit(,TABLE,ct)`.
    Resubmit {
        /// In-port to pretend (`IN_PORT` = unchanged).
        port: u32,
        /// Table (`None` = current).
        table: Option<u8>,
        /// Use the conntrack original-direction tuple.
        ct: bool,
    },
    /// `ct(...)` (boxed, as the rarest large variants are: an action is as large as its largest
    /// variant, and a pipeline holds some 200 000 of them).
    Ct(Box<Ct>),
    /// `ct_clear`.
    CtClear,
    /// `conjunction(ID,CLAUSE/N)` (`clause` is 1-based as in the text).
    Conjunction {
        /// Conjunction id.
        id: u32,
        /// Clause, 1..=n_clauses.
        clause: u8,
        /// Number of clauses.
        n_clauses: u8,
    },
    /// `learn(...)` (boxed, see [`Action::Ct`]).
    Learn(Box<Learn>),
    /// `note:XX.XX...`.
    Note(Vec<u8>),
    /// `controller(...)`.
    Controller(Controller),
    /// `multipath(FIELDS,BASIS,ALG,N_LINKS,ARG,DST)`.
    Multipath {
        /// Hash fields ([`MULTIPATH_FIELDS`]).
        fields: u16,
        /// Hash basis.
        basis: u16,
        /// Algorithm ([`MULTIPATH_ALGS`]).
        algorithm: u16,
        /// Number of links minus one.
        max_link: u16,
        /// Algorithm argument.
        arg: u32,
        /// Where the link number is stored.
        dst: Subfield,
    },
    /// `sample(...)`.
    Sample {
        /// Packets sampled per 65535.
        probability: u16,
        /// IPFIX collector set.
        collector_set_id: u32,
        /// Observation domain.
        obs_domain_id: u32,
        /// Observation point.
        obs_point_id: u32,
    },
}

// ---------------------------------------------------------------- wire constants

mod ofpat {
    pub const OUTPUT: u16 = 0;
    pub const SET_MPLS_TTL: u16 = 15;
    pub const DEC_MPLS_TTL: u16 = 16;
    pub const PUSH_VLAN: u16 = 17;
    pub const POP_VLAN: u16 = 18;
    pub const PUSH_MPLS: u16 = 19;
    pub const POP_MPLS: u16 = 20;
    pub const SET_QUEUE: u16 = 21;
    pub const GROUP: u16 = 22;
    pub const DEC_NW_TTL: u16 = 24;
    pub const SET_FIELD: u16 = 25;
    pub const EXPERIMENTER: u16 = 0xffff;
}

mod nxast {
    pub const RESUBMIT: u16 = 1;
    pub const REG_MOVE: u16 = 6;
    pub const REG_LOAD: u16 = 7;
    pub const NOTE: u16 = 8;
    pub const MULTIPATH: u16 = 10;
    pub const RESUBMIT_TABLE: u16 = 14;
    pub const OUTPUT_REG: u16 = 15;
    pub const LEARN: u16 = 16;
    pub const CONTROLLER: u16 = 20;
    pub const SAMPLE: u16 = 29;
    pub const REG_LOAD2: u16 = 33;
    pub const CONJUNCTION: u16 = 34;
    pub const CT: u16 = 35;
    pub const NAT: u16 = 36;
    pub const CONTROLLER2: u16 = 37;
    pub const CT_CLEAR: u16 = 43;
    pub const RESUBMIT_TABLE_CT: u16 = 44;
}

const NX_LEARN_SRC_IMM: u16 = 1 << 13;
const NX_LEARN_DST_LOAD: u16 = 1 << 11;
const NX_LEARN_DST_OUTPUT: u16 = 2 << 11;

const NAT_SRC: u16 = 1;
const NAT_DST: u16 = 2;
const NAT_PERSISTENT: u16 = 4;
const NAT_HASH: u16 = 8;
const NAT_RANDOM: u16 = 16;

/// Maximum nesting depth accepted when decoding (`ct(exec(...))` nests once).
const MAX_DEPTH: u8 = 2;

// ---------------------------------------------------------------- encoding

/// Starts an action with `ty`, returns the start offset (length patched by [`finish`]).
fn begin(out: &mut Vec<u8>, ty: u16) -> usize {
    let s = out.len();
    out.u16(ty);
    out.u16(0);
    s
}
fn begin_nx(out: &mut Vec<u8>, subtype: u16) -> usize {
    let s = begin(out, ofpat::EXPERIMENTER);
    out.u32(NX_VENDOR);
    out.u16(subtype);
    s
}
fn finish(out: &mut Vec<u8>, start: usize) {
    out.pad8_from(start);
    out.patch_u16(start + 2, out.len() - start);
}

fn put_header(out: &mut Vec<u8>, f: Field) {
    out.u32(f.header());
}

fn nat_encode(out: &mut Vec<u8>, nat: &Nat) {
    let s = begin_nx(out, nxast::NAT);
    out.zeros(2);
    let mut flags = 0;
    match nat.src {
        Some(true) => flags |= NAT_SRC,
        Some(false) => flags |= NAT_DST,
        None => {}
    }
    if nat.persistent {
        flags |= NAT_PERSISTENT;
    }
    if nat.hash {
        flags |= NAT_HASH;
    }
    if nat.random {
        flags |= NAT_RANDOM;
    }
    out.u16(flags);
    let mut present = 0u16;
    match nat.addr {
        Some(NatAddr::V4(_, max)) => present |= 1 | if max.is_some() { 2 } else { 0 },
        Some(NatAddr::V6(_, max)) => present |= 4 | if max.is_some() { 8 } else { 0 },
        None => {}
    }
    if let Some((_, max)) = nat.ports {
        present |= 16 | if max.is_some() { 32 } else { 0 };
    }
    out.u16(present);
    match nat.addr {
        Some(NatAddr::V4(min, max)) => {
            out.u32(min.into());
            if let Some(m) = max {
                out.u32(m.into());
            }
        }
        Some(NatAddr::V6(min, max)) => {
            out.extend_from_slice(&min.octets());
            if let Some(m) = max {
                out.extend_from_slice(&m.octets());
            }
        }
        None => {}
    }
    if let Some((min, max)) = nat.ports {
        out.u16(min);
        if let Some(m) = max {
            out.u16(m);
        }
    }
    finish(out, s);
}

fn learn_src_encode(out: &mut Vec<u8>, src: &LearnSrc, n_bits: u16) {
    match src {
        LearnSrc::Field(sf) => {
            put_header(out, sf.field);
            out.u16(sf.ofs);
        }
        LearnSrc::Imm(v) => {
            let n = usize::from(n_bits).div_ceil(16) * 2;
            if n > 16 {
                out.zeros(n - 16);
                out.uint(*v, 16);
            } else {
                out.uint(*v, n);
            }
        }
    }
}

impl Action {
    /// Appends the wire form of the action.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Action::Output { port, max_len } => {
                let s = begin(out, ofpat::OUTPUT);
                out.u32(*port);
                out.u16(*max_len);
                out.zeros(6);
                finish(out, s);
            }
            Action::OutputReg { src, max_len } => {
                let s = begin_nx(out, nxast::OUTPUT_REG);
                out.u16(src.ofs_nbits());
                put_header(out, src.field);
                out.u16(*max_len);
                out.zeros(6);
                finish(out, s);
            }
            Action::Group(g) => simple32(out, ofpat::GROUP, *g),
            Action::SetQueue(q) => simple32(out, ofpat::SET_QUEUE, *q),
            Action::PushVlan(e) => simple16(out, ofpat::PUSH_VLAN, *e),
            Action::PopVlan => simple32(out, ofpat::POP_VLAN, 0),
            Action::PushMpls(e) => simple16(out, ofpat::PUSH_MPLS, *e),
            Action::PopMpls(e) => simple16(out, ofpat::POP_MPLS, *e),
            Action::SetMplsTtl(t) => {
                let s = begin(out, ofpat::SET_MPLS_TTL);
                out.u8(*t);
                finish(out, s);
            }
            Action::DecMplsTtl => simple32(out, ofpat::DEC_MPLS_TTL, 0),
            Action::DecTtl => simple32(out, ofpat::DEC_NW_TTL, 0),
            Action::SetField { field, value, mask } => {
                let s = if *mask == field.full_mask() {
                    begin(out, ofpat::SET_FIELD)
                } else {
                    begin_nx(out, nxast::REG_LOAD2)
                };
                encode_oxm(out, *field, *value, *mask);
                finish(out, s);
            }
            Action::RegLoad { dst, value } => {
                let s = begin_nx(out, nxast::REG_LOAD);
                out.u16(dst.ofs_nbits());
                put_header(out, dst.field);
                out.u64(*value);
                finish(out, s);
            }
            Action::Move { src, dst } => {
                let s = begin_nx(out, nxast::REG_MOVE);
                out.u16(src.n_bits);
                out.u16(src.ofs);
                out.u16(dst.ofs);
                put_header(out, src.field);
                put_header(out, dst.field);
                finish(out, s);
            }
            Action::Resubmit { port, table, ct } => {
                let sub = if *ct {
                    nxast::RESUBMIT_TABLE_CT
                } else if table.is_none() && *port != port::IN_PORT {
                    nxast::RESUBMIT
                } else {
                    nxast::RESUBMIT_TABLE
                };
                let s = begin_nx(out, sub);
                out.u16(port_to_16(*port));
                out.u8(table.unwrap_or(255));
                finish(out, s);
            }
            Action::Ct(ct) => {
                let s = begin_nx(out, nxast::CT);
                out.u16(u16::from(ct.commit) | if ct.force { 2 } else { 0 });
                match ct.zone {
                    CtZone::Imm(z) => {
                        out.u32(0);
                        out.u16(z);
                    }
                    CtZone::Field(sf) => {
                        put_header(out, sf.field);
                        out.u16(sf.ofs_nbits());
                    }
                }
                out.u8(ct.table.unwrap_or(255));
                out.zeros(3);
                out.u16(ct.alg);
                if let Some(nat) = &ct.nat {
                    nat_encode(out, nat);
                }
                for a in &ct.exec {
                    a.encode(out);
                }
                out.patch_u16(s + 2, out.len() - s);
            }
            Action::CtClear => {
                let s = begin_nx(out, nxast::CT_CLEAR);
                finish(out, s);
            }
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => {
                let s = begin_nx(out, nxast::CONJUNCTION);
                out.u8(clause.wrapping_sub(1));
                out.u8(*n_clauses);
                out.u32(*id);
                finish(out, s);
            }
            Action::Learn(l) => {
                let s = begin_nx(out, nxast::LEARN);
                out.u16(l.idle_timeout);
                out.u16(l.hard_timeout);
                out.u16(l.priority);
                out.u64(l.cookie);
                out.u16(l.flags);
                out.u8(l.table);
                out.u8(0);
                out.u16(l.fin_idle_timeout);
                out.u16(l.fin_hard_timeout);
                for spec in &l.specs {
                    match spec {
                        LearnSpec::Match { src, dst } | LearnSpec::Load { src, dst } => {
                            let imm = if matches!(src, LearnSrc::Imm(_)) {
                                NX_LEARN_SRC_IMM
                            } else {
                                0
                            };
                            let d = if matches!(spec, LearnSpec::Load { .. }) {
                                NX_LEARN_DST_LOAD
                            } else {
                                0
                            };
                            out.u16(imm | d | dst.n_bits);
                            learn_src_encode(out, src, dst.n_bits);
                            put_header(out, dst.field);
                            out.u16(dst.ofs);
                        }
                        LearnSpec::Output(src) => {
                            out.u16(NX_LEARN_DST_OUTPUT | src.n_bits);
                            put_header(out, src.field);
                            out.u16(src.ofs);
                        }
                    }
                }
                finish(out, s);
            }
            Action::Note(bytes) => {
                let s = begin_nx(out, nxast::NOTE);
                out.extend_from_slice(bytes);
                if out.len() - s < 16 {
                    out.zeros(16 - (out.len() - s));
                }
                finish(out, s);
            }
            Action::Controller(c) => {
                if c.userdata.is_empty() && !c.pause {
                    let s = begin_nx(out, nxast::CONTROLLER);
                    out.u16(c.max_len);
                    out.u16(c.id);
                    out.u8(c.reason);
                    finish(out, s);
                } else {
                    let s = begin_nx(out, nxast::CONTROLLER2);
                    out.zeros(6);
                    if c.max_len != u16::MAX {
                        prop(out, 0, &c.max_len.to_be_bytes());
                    }
                    if c.id != 0 {
                        prop(out, 1, &c.id.to_be_bytes());
                    }
                    if c.reason != reason::ACTION {
                        prop(out, 2, &[c.reason]);
                    }
                    if !c.userdata.is_empty() {
                        prop(out, 3, &c.userdata);
                    }
                    if c.pause {
                        prop(out, 4, &[]);
                    }
                    finish(out, s);
                }
            }
            Action::Multipath {
                fields,
                basis,
                algorithm,
                max_link,
                arg,
                dst,
            } => {
                let s = begin_nx(out, nxast::MULTIPATH);
                out.u16(*fields);
                out.u16(*basis);
                out.u16(0);
                out.u16(*algorithm);
                out.u16(*max_link);
                out.u32(*arg);
                out.u16(0);
                out.u16(dst.ofs_nbits());
                put_header(out, dst.field);
                finish(out, s);
            }
            Action::Sample {
                probability,
                collector_set_id,
                obs_domain_id,
                obs_point_id,
            } => {
                let s = begin_nx(out, nxast::SAMPLE);
                out.u16(*probability);
                out.u32(*collector_set_id);
                out.u32(*obs_domain_id);
                out.u32(*obs_point_id);
                finish(out, s);
            }
        }
    }
}

fn simple32(out: &mut Vec<u8>, ty: u16, v: u32) {
    let s = begin(out, ty);
    out.u32(v);
    finish(out, s);
}
fn simple16(out: &mut Vec<u8>, ty: u16, v: u16) {
    let s = begin(out, ty);
    out.u16(v);
    finish(out, s);
}

/// Writes an OpenFlow property (type, length, value, padding to 8).
pub(crate) fn prop(out: &mut Vec<u8>, ty: u16, value: &[u8]) {
    let s = out.len();
    out.u16(ty);
    out.u16((4 + value.len()) as u16);
    out.extend_from_slice(value);
    out.pad8_from(s);
}

/// Encodes a list of actions.
pub fn encode_actions(actions: &[Action], out: &mut Vec<u8>) {
    for a in actions {
        a.encode(out);
    }
}

// ---------------------------------------------------------------- decoding

/// Decodes a list of actions that fills `buf` exactly.
pub fn decode_actions(buf: &[u8]) -> Result<Vec<Action>, DecodeError> {
    decode_list(buf, 0)
}

fn decode_list(buf: &[u8], depth: u8) -> Result<Vec<Action>, DecodeError> {
    let mut r = Reader::new(buf, "action");
    let mut v = Vec::new();
    while !r.is_empty() {
        v.push(decode_one(&mut r, depth)?);
    }
    Ok(v)
}

fn field_of_header(r: &mut Reader<'_>) -> Result<Field, DecodeError> {
    match decode_oxm_header(r)? {
        (OxmField::Field(f), false, _) => Ok(f),
        _ => Err(invalid(
            "field header",
            "masked or 64-bit register header in action",
        )),
    }
}

/// Reads one OpenFlow property: `(type, value)`.
pub(crate) fn read_prop<'a>(r: &mut Reader<'a>) -> Result<(u16, &'a [u8]), DecodeError> {
    let ty = r.u16()?;
    let len = usize::from(r.u16()?);
    if len < 4 {
        return Err(DecodeError::BadLength {
            what: "property",
            len,
        });
    }
    let v = r.bytes(len - 4)?;
    let pad = crate::wire::round8(len) - len;
    r.skip(pad.min(r.remaining()))?;
    Ok((ty, v))
}

fn decode_one(r: &mut Reader<'_>, depth: u8) -> Result<Action, DecodeError> {
    let ty = r.u16()?;
    let len = usize::from(r.u16()?);
    if len < 8 || !len.is_multiple_of(8) {
        return Err(DecodeError::BadLength {
            what: "action",
            len,
        });
    }
    let mut b = r.sub(len - 4, "action body")?;
    Ok(match ty {
        ofpat::OUTPUT => {
            let port = b.u32()?;
            Action::Output {
                port,
                max_len: b.u16()?,
            }
        }
        ofpat::GROUP => Action::Group(b.u32()?),
        ofpat::SET_QUEUE => Action::SetQueue(b.u32()?),
        ofpat::PUSH_VLAN => Action::PushVlan(b.u16()?),
        ofpat::POP_VLAN => Action::PopVlan,
        ofpat::PUSH_MPLS => Action::PushMpls(b.u16()?),
        ofpat::POP_MPLS => Action::PopMpls(b.u16()?),
        ofpat::SET_MPLS_TTL => Action::SetMplsTtl(b.u8()?),
        ofpat::DEC_MPLS_TTL => Action::DecMplsTtl,
        ofpat::DEC_NW_TTL => Action::DecTtl,
        ofpat::SET_FIELD => {
            let (f, value, mask) = decode_oxm(&mut b)?;
            match f {
                OxmField::Field(field) if mask == field.full_mask() => {
                    Action::SetField { field, value, mask }
                }
                _ => return Err(invalid("set_field", "masked or 64-bit register")),
            }
        }
        ofpat::EXPERIMENTER => decode_nx(&mut b, depth)?,
        _ => {
            return Err(DecodeError::Unknown {
                what: "action type",
                value: ty.into(),
            });
        }
    })
}

fn decode_nx(b: &mut Reader<'_>, depth: u8) -> Result<Action, DecodeError> {
    let vendor = b.u32()?;
    if vendor != NX_VENDOR {
        return Err(DecodeError::Unknown {
            what: "action experimenter",
            value: vendor.into(),
        });
    }
    let sub = b.u16()?;
    Ok(match sub {
        nxast::RESUBMIT | nxast::RESUBMIT_TABLE | nxast::RESUBMIT_TABLE_CT => {
            let port = port_from_16(b.u16()?);
            let t = b.u8()?;
            let table = if sub == nxast::RESUBMIT || t == 255 {
                None
            } else {
                Some(t)
            };
            Action::Resubmit {
                port,
                table,
                ct: sub == nxast::RESUBMIT_TABLE_CT,
            }
        }
        nxast::REG_MOVE => {
            let n_bits = b.u16()?;
            let src_ofs = b.u16()?;
            let dst_ofs = b.u16()?;
            let sf = field_of_header(b)?;
            let df = field_of_header(b)?;
            let src = Subfield {
                field: sf,
                ofs: src_ofs,
                n_bits,
            }
            .check()?;
            let dst = Subfield {
                field: df,
                ofs: dst_ofs,
                n_bits,
            }
            .check()?;
            Action::Move { src, dst }
        }
        nxast::REG_LOAD => {
            let on = b.u16()?;
            let f = field_of_header(b)?;
            let dst = Subfield::from_ofs_nbits(f, on)?;
            let value = b.u64()?;
            if dst.n_bits < 64 && value >> dst.n_bits != 0 {
                return Err(invalid("reg_load", "value wider than destination"));
            }
            Action::RegLoad { dst, value }
        }
        nxast::REG_LOAD2 => {
            let (f, value, mask) = decode_oxm(b)?;
            match f {
                OxmField::Field(field) => Action::SetField { field, value, mask },
                OxmField::Xreg(_) => return Err(invalid("reg_load2", "64-bit register")),
            }
        }
        nxast::NOTE => {
            let bytes = b.rest();
            let end = bytes.iter().rposition(|x| *x != 0).map_or(0, |p| p + 1);
            Action::Note(bytes[..end].to_vec())
        }
        nxast::MULTIPATH => {
            let fields = b.u16()?;
            let basis = b.u16()?;
            b.skip(2)?;
            let algorithm = b.u16()?;
            let max_link = b.u16()?;
            let arg = b.u32()?;
            b.skip(2)?;
            let on = b.u16()?;
            let f = field_of_header(b)?;
            Action::Multipath {
                fields,
                basis,
                algorithm,
                max_link,
                arg,
                dst: Subfield::from_ofs_nbits(f, on)?,
            }
        }
        nxast::OUTPUT_REG => {
            let on = b.u16()?;
            let f = field_of_header(b)?;
            Action::OutputReg {
                src: Subfield::from_ofs_nbits(f, on)?,
                max_len: b.u16()?,
            }
        }
        nxast::LEARN => decode_learn(b)?,
        nxast::CONTROLLER => {
            let max_len = b.u16()?;
            let id = b.u16()?;
            let reason = b.u8()?;
            Action::Controller(Controller {
                max_len,
                id,
                reason,
                userdata: vec![],
                pause: false,
            })
        }
        nxast::CONTROLLER2 => {
            b.skip(6)?;
            let mut c = Controller::default();
            while !b.is_empty() {
                let (ty, v) = read_prop(b)?;
                let mut pr = Reader::new(v, "controller2 property");
                match ty {
                    0 => c.max_len = pr.u16()?,
                    1 => c.id = pr.u16()?,
                    2 => c.reason = pr.u8()?,
                    3 => c.userdata = v.to_vec(),
                    4 => c.pause = true,
                    _ => {
                        return Err(DecodeError::Unknown {
                            what: "controller2 property",
                            value: ty.into(),
                        });
                    }
                }
            }
            Action::Controller(c)
        }
        nxast::SAMPLE => Action::Sample {
            probability: b.u16()?,
            collector_set_id: b.u32()?,
            obs_domain_id: b.u32()?,
            obs_point_id: b.u32()?,
        },
        nxast::CONJUNCTION => {
            let clause = b.u8()?.wrapping_add(1);
            let n_clauses = b.u8()?;
            Action::Conjunction {
                id: b.u32()?,
                clause,
                n_clauses,
            }
        }
        nxast::CT => decode_ct(b, depth)?,
        nxast::CT_CLEAR => Action::CtClear,
        _ => {
            return Err(DecodeError::Unknown {
                what: "nicira action subtype",
                value: sub.into(),
            });
        }
    })
}

fn decode_ct(b: &mut Reader<'_>, depth: u8) -> Result<Action, DecodeError> {
    if depth >= MAX_DEPTH {
        return Err(invalid("ct", "nested too deeply"));
    }
    let flags = b.u16()?;
    let zone_src = b.u32()?;
    let zv = b.u16()?;
    let zone = if zone_src == 0 {
        CtZone::Imm(zv)
    } else {
        let hb = zone_src.to_be_bytes();
        let mut hr = Reader::new(&hb, "ct zone");
        CtZone::Field(Subfield::from_ofs_nbits(field_of_header(&mut hr)?, zv)?)
    };
    let t = b.u8()?;
    b.skip(3)?;
    let alg = b.u16()?;
    let mut rest = b.rest();
    let mut nat = None;
    if is_nx_subtype(rest, nxast::NAT) {
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if len < 16 || !len.is_multiple_of(8) || len > rest.len() {
            return Err(DecodeError::BadLength { what: "nat", len });
        }
        let mut nr = Reader::new(&rest[10..len], "nat");
        nat = Some(decode_nat(&mut nr)?);
        rest = &rest[len..];
    }
    let exec = decode_list(rest, depth + 1)?;
    if exec.iter().any(|a| matches!(a, Action::Ct(_))) {
        return Err(invalid("ct", "nested ct"));
    }
    Ok(Action::Ct(Box::new(Ct {
        commit: flags & 1 != 0,
        force: flags & 2 != 0,
        zone,
        table: if t == 255 { None } else { Some(t) },
        nat,
        exec,
        alg,
    })))
}

fn is_nx_subtype(buf: &[u8], sub: u16) -> bool {
    buf.len() >= 10
        && buf[0..2] == [0xff, 0xff]
        && buf[4..8] == NX_VENDOR.to_be_bytes()
        && buf[8..10] == sub.to_be_bytes()
}

fn decode_nat(r: &mut Reader<'_>) -> Result<Nat, DecodeError> {
    r.skip(2)?;
    let flags = r.u16()?;
    let present = r.u16()?;
    let mut nat = Nat {
        src: match flags & (NAT_SRC | NAT_DST) {
            0 => None,
            NAT_SRC => Some(true),
            NAT_DST => Some(false),
            _ => return Err(invalid("nat", "both src and dst")),
        },
        persistent: flags & NAT_PERSISTENT != 0,
        hash: flags & NAT_HASH != 0,
        random: flags & NAT_RANDOM != 0,
        ..Nat::default()
    };
    if present & 1 != 0 {
        let min = Ipv4Addr::from(r.u32()?);
        let max = if present & 2 != 0 {
            Some(Ipv4Addr::from(r.u32()?))
        } else {
            None
        };
        nat.addr = Some(NatAddr::V4(min, max));
    } else if present & 4 != 0 {
        let min = Ipv6Addr::from(r.uint(16)?);
        let max = if present & 8 != 0 {
            Some(Ipv6Addr::from(r.uint(16)?))
        } else {
            None
        };
        nat.addr = Some(NatAddr::V6(min, max));
    }
    if present & 16 != 0 {
        let min = r.u16()?;
        let max = if present & 32 != 0 {
            Some(r.u16()?)
        } else {
            None
        };
        nat.ports = Some((min, max));
    }
    Ok(nat)
}

fn learn_src_decode(r: &mut Reader<'_>, imm: bool, n_bits: u16) -> Result<LearnSrc, DecodeError> {
    if imm {
        let n = usize::from(n_bits).div_ceil(16) * 2;
        let bytes = r.bytes(n)?;
        let (hi, lo) = bytes.split_at(n.saturating_sub(16));
        if hi.iter().any(|x| *x != 0) {
            return Err(invalid("learn", "immediate wider than 128 bits"));
        }
        Ok(LearnSrc::Imm(
            lo.iter().fold(0u128, |a, x| (a << 8) | u128::from(*x)),
        ))
    } else {
        let f = field_of_header(r)?;
        let ofs = r.u16()?;
        Ok(LearnSrc::Field(
            Subfield {
                field: f,
                ofs,
                n_bits,
            }
            .check()?,
        ))
    }
}

fn decode_learn(b: &mut Reader<'_>) -> Result<Action, DecodeError> {
    let mut l = Learn {
        idle_timeout: b.u16()?,
        hard_timeout: b.u16()?,
        priority: b.u16()?,
        cookie: b.u64()?,
        flags: b.u16()?,
        table: b.u8()?,
        ..Learn::default()
    };
    b.skip(1)?;
    l.fin_idle_timeout = b.u16()?;
    l.fin_hard_timeout = b.u16()?;
    while b.remaining() >= 2 {
        let h = b.u16()?;
        if h == 0 {
            break;
        }
        let n_bits = h & 0x7ff;
        let imm = h & NX_LEARN_SRC_IMM != 0;
        let spec = match h & (3 << 11) {
            0 | NX_LEARN_DST_LOAD => {
                let src = learn_src_decode(b, imm, n_bits)?;
                let f = field_of_header(b)?;
                let dst = Subfield {
                    field: f,
                    ofs: b.u16()?,
                    n_bits,
                }
                .check()?;
                if h & (3 << 11) == 0 {
                    LearnSpec::Match { src, dst }
                } else {
                    LearnSpec::Load { src, dst }
                }
            }
            NX_LEARN_DST_OUTPUT if !imm => match learn_src_decode(b, false, n_bits)? {
                LearnSrc::Field(sf) => LearnSpec::Output(sf),
                LearnSrc::Imm(_) => return Err(invalid("learn", "immediate output")),
            },
            _ => return Err(invalid("learn", format!("bad spec header {h:#x}"))),
        };
        l.specs.push(spec);
    }
    if b.rest().iter().any(|x| *x != 0) {
        return Err(invalid("learn", "garbage after specs"));
    }
    Ok(Action::Learn(Box::new(l)))
}

// ---------------------------------------------------------------- text

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(".")
}

/// Note bytes as printed: padded with zeros like on the wire.
fn padded_note(b: &[u8]) -> Vec<u8> {
    let total = crate::wire::round8((10 + b.len()).max(16));
    let mut v = b.to_vec();
    v.resize(total - 10, 0);
    v
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("nat")?;
        let Some(src) = self.src else { return Ok(()) };
        write!(f, "({}=", if src { "src" } else { "dst" })?;
        match self.addr {
            Some(NatAddr::V4(min, max)) => {
                write!(f, "{min}")?;
                if let Some(m) = max.filter(|m| *m != min) {
                    write!(f, "-{m}")?;
                }
            }
            Some(NatAddr::V6(min, max)) => {
                write!(f, "[{min}]")?;
                if let Some(m) = max.filter(|m| *m != min) {
                    write!(f, "-[{m}]")?;
                }
            }
            None => {}
        }
        if let Some((min, max)) = self.ports {
            write!(f, ":{min}")?;
            if let Some(m) = max.filter(|m| *m != min) {
                write!(f, "-{m}")?;
            }
        }
        for (on, name) in [
            (self.persistent, ",persistent"),
            (self.hash, ",hash"),
            (self.random, ",random"),
        ] {
            if on {
                f.write_str(name)?;
            }
        }
        f.write_str(")")
    }
}

/// Writes actions separated by commas.
pub fn format_actions(actions: &[Action], f: &mut impl fmt::Write) -> fmt::Result {
    for (i, a) in actions.iter().enumerate() {
        if i > 0 {
            f.write_char(',')?;
        }
        write!(f, "{a}")?;
    }
    Ok(())
}

impl fmt::Display for LearnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LearnSpec::Match {
                src: LearnSrc::Field(s),
                dst,
            } if s == dst => write!(f, "{dst}"),
            LearnSpec::Match {
                src: LearnSrc::Field(s),
                dst,
            } => write!(f, "{dst}={s}"),
            LearnSpec::Match {
                src: LearnSrc::Imm(v),
                dst,
            } if dst.is_whole() => {
                let m = dst.field.full_mask();
                write!(f, "{}={}", dst.field.name(), dst.field.format_value(*v, m))
            }
            LearnSpec::Match {
                src: LearnSrc::Imm(v),
                dst,
            } => write!(f, "{dst}={v:#x}"),
            LearnSpec::Load {
                src: LearnSrc::Field(s),
                dst,
            } => write!(f, "load:{s}->{dst}"),
            LearnSpec::Load {
                src: LearnSrc::Imm(v),
                dst,
            } => write!(f, "load:{v:#x}->{dst}"),
            LearnSpec::Output(s) => write!(f, "output:{s}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Output { port: p, max_len } => match *p {
                port::CONTROLLER => write!(f, "CONTROLLER:{max_len}"),
                p if p < port::MAX => write!(f, "output:{p}"),
                p => f.write_str(&port_name(p)),
            },
            // OVS shows no max_len here; text always means the default (u16::MAX).
            Action::OutputReg { src, .. } => write!(f, "output:{src}"),
            Action::Group(g) => write!(f, "group:{g}"),
            Action::SetQueue(q) => write!(f, "set_queue:{q}"),
            Action::PushVlan(e) => write!(f, "push_vlan:{e:#06x}"),
            Action::PopVlan => f.write_str("pop_vlan"),
            Action::PushMpls(e) => write!(f, "push_mpls:{e:#06x}"),
            Action::PopMpls(e) => write!(f, "pop_mpls:{e:#06x}"),
            Action::SetMplsTtl(t) => write!(f, "set_mpls_ttl({t})"),
            Action::DecMplsTtl => f.write_str("dec_mpls_ttl"),
            Action::DecTtl => f.write_str("dec_ttl"),
            Action::SetField { field, value, mask } => {
                write!(
                    f,
                    "set_field:{}->{}",
                    field.format_value(*value, *mask),
                    field.name()
                )
            }
            Action::RegLoad { dst, value } => write!(f, "load:{value:#x}->{dst}"),
            Action::Move { src, dst } => write!(f, "move:{src}->{dst}"),
            Action::Resubmit { port: p, table, ct } => {
                if table.is_none() && !ct && *p != port::IN_PORT {
                    return write!(f, "resubmit:{}", port_name(*p));
                }
                f.write_str("resubmit(")?;
                if *p != port::IN_PORT {
                    f.write_str(&port_name(*p))?;
                }
                f.write_str(",")?;
                if let Some(t) = table {
                    write!(f, "{t}")?;
                }
                if *ct {
                    f.write_str(",ct")?;
                }
                f.write_str(")")
            }
            Action::Ct(ct) => {
                let mut parts: Vec<String> = Vec::new();
                if ct.commit {
                    parts.push("commit".into());
                }
                if ct.force {
                    parts.push("force".into());
                }
                if let Some(t) = ct.table {
                    parts.push(format!("table={t}"));
                }
                match ct.zone {
                    CtZone::Imm(0) => {}
                    CtZone::Imm(z) => parts.push(format!("zone={z}")),
                    CtZone::Field(sf) => parts.push(format!("zone={sf}")),
                }
                if let Some(nat) = &ct.nat {
                    parts.push(nat.to_string());
                }
                if !ct.exec.is_empty() {
                    let mut s = String::from("exec(");
                    format_actions(&ct.exec, &mut s)?;
                    s.push(')');
                    parts.push(s);
                }
                match ct.alg {
                    0 => {}
                    21 => parts.push("alg=ftp".into()),
                    69 => parts.push("alg=tftp".into()),
                    a => parts.push(format!("alg={a}")),
                }
                if parts.is_empty() {
                    f.write_str("ct")
                } else {
                    write!(f, "ct({})", parts.join(","))
                }
            }
            Action::CtClear => f.write_str("ct_clear"),
            Action::Conjunction {
                id,
                clause,
                n_clauses,
            } => write!(f, "conjunction({id},{clause}/{n_clauses})"),
            Action::Learn(l) => {
                write!(f, "learn(table={}", l.table)?;
                for (v, name) in [
                    (l.idle_timeout, "idle_timeout"),
                    (l.hard_timeout, "hard_timeout"),
                    (l.fin_idle_timeout, "fin_idle_timeout"),
                    (l.fin_hard_timeout, "fin_hard_timeout"),
                ] {
                    if v != 0 {
                        write!(f, ",{name}={v}")?;
                    }
                }
                if l.priority != crate::ofp::DEFAULT_PRIORITY {
                    write!(f, ",priority={}", l.priority)?;
                }
                for (bit, name) in [
                    (learn_flags::SEND_FLOW_REM, "send_flow_rem"),
                    (learn_flags::DELETE_LEARNED, "delete_learned"),
                    (learn_flags::WRITE_RESULT, "write_result"),
                ] {
                    if l.flags & bit != 0 {
                        write!(f, ",{name}")?;
                    }
                }
                if l.cookie != 0 {
                    write!(f, ",cookie={:#x}", l.cookie)?;
                }
                for s in &l.specs {
                    write!(f, ",{s}")?;
                }
                f.write_str(")")
            }
            Action::Note(b) => write!(f, "note:{}", hex_bytes(&padded_note(b))),
            Action::Controller(c) => {
                let mut parts: Vec<String> = Vec::new();
                if c.reason != reason::ACTION {
                    let name = reason::NAMES
                        .get(usize::from(c.reason))
                        .map_or_else(|| c.reason.to_string(), |s| (*s).to_string());
                    parts.push(format!("reason={name}"));
                }
                if c.max_len != u16::MAX {
                    parts.push(format!("max_len={}", c.max_len));
                }
                if c.id != 0 {
                    parts.push(format!("id={}", c.id));
                }
                if !c.userdata.is_empty() {
                    parts.push(format!("userdata={}", hex_bytes(&c.userdata)));
                }
                if c.pause {
                    parts.push("pause".into());
                }
                write!(f, "controller({})", parts.join(","))
            }
            Action::Multipath {
                fields,
                basis,
                algorithm,
                max_link,
                arg,
                dst,
            } => {
                let fname = MULTIPATH_FIELDS
                    .get(usize::from(*fields))
                    .map_or_else(|| fields.to_string(), |s| (*s).to_string());
                let aname = MULTIPATH_ALGS
                    .get(usize::from(*algorithm))
                    .map_or_else(|| algorithm.to_string(), |s| (*s).to_string());
                write!(
                    f,
                    "multipath({fname},{basis},{aname},{},{arg},{dst})",
                    u32::from(*max_link) + 1
                )
            }
            Action::Sample {
                probability,
                collector_set_id,
                obs_domain_id,
                obs_point_id,
            } => write!(
                f,
                "sample(probability={probability},collector_set_id={collector_set_id},obs_domain_id={obs_domain_id},obs_point_id={obs_point_id})"
            ),
        }
    }
}
