//! [`Match`]: a canonical set of field matches, its OXM codec and its `ovs-ofctl` text form.
//!
//! Canonical form: at most one entry per [`Field`], kept sorted; the value is stored already
//! masked; an all-ones mask means an exact match and a zero mask removes the entry; the 64-bit
//! `xregN` are stored as the register pair `reg2N` (high half) / `reg2N+1` (low half), which is
//! how Open vSwitch reports them back. Two matches that mean the same thing to OVS compare equal.

use std::fmt;

use crate::error::{DecodeError, ParseError, invalid};
use crate::field::{
    Field, NXM_CLASS_0, ONF_EXPERIMENTER, OXM_CLASS_EXPERIMENTER, OXM_CLASS_PACKET_REGS, Syntax,
    ones, parse_port, parse_value,
};
use crate::wire::{Reader, Writer, round8};

/// One field match: `value/mask`; the mask is all-ones for an exact match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MatchField {
    /// The field.
    pub field: Field,
    /// The value, already masked.
    pub value: u128,
    /// The mask (never zero).
    pub mask: u128,
}

/// A flow match in canonical form (see the module docs).
///
/// Held packed, as the entries' bytes: a field's number (its place among the fields in their
/// order), whether it is masked, its value in its wire width and, if masked, its mask. An agent holds a match for each of tens of
/// thousands of flows, several times over (the desired flows, merged flows' identities, deltas):
/// at 48 bytes per entry as [`MatchField`]s they were a large share of its memory (issue 17);
/// packed, most entries take 6 to 10 bytes (a port, a register, an address), none more than 34.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Match {
    packed: Box<[u8]>,
}

/// Ordered as the sequences of their entries (by field, then value and mask).
impl Ord for Match {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.fields().cmp(other.fields())
    }
}

impl PartialOrd for Match {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The fields in their order, numbered: the numbers are the packed form's, and they sort as
/// the fields do.
fn numbering() -> &'static [Field] {
    static ALL: std::sync::OnceLock<Vec<Field>> = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        let mut all: Vec<Field> = Field::all().collect();
        all.sort();
        assert!(all.len() <= 256, "a field number fits a byte");
        all
    })
}

/// The number of `field` in the packed form.
fn code(field: Field) -> u8 {
    let n = numbering().binary_search(&field).unwrap_or_default();
    u8::try_from(n).unwrap_or_default()
}

const MASKED: u8 = 1;

/// Appends one packed entry.
fn pack(out: &mut Vec<u8>, e: &MatchField) {
    let n = e.field.bytes();
    let masked = e.mask != e.field.full_mask();
    out.push(code(e.field));
    out.push(if masked { MASKED } else { 0 });
    out.extend_from_slice(&e.value.to_be_bytes()[16 - n..]);
    if masked {
        out.extend_from_slice(&e.mask.to_be_bytes()[16 - n..]);
    }
}

fn uint(bytes: &[u8]) -> u128 {
    bytes.iter().fold(0, |v, b| v << 8 | u128::from(*b))
}

/// The entries of a packed match, in order.
#[derive(Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl Iterator for Fields<'_> {
    type Item = MatchField;

    fn next(&mut self) -> Option<MatchField> {
        let (&number, rest) = self.rest.split_first()?;
        let (&flags, rest) = rest.split_first()?;
        let field = *numbering().get(usize::from(number))?;
        let n = field.bytes();
        let (value, rest) = rest.split_at_checked(n)?;
        let value = uint(value);
        let (mask, rest) = if flags & MASKED != 0 {
            let (mask, rest) = rest.split_at_checked(n)?;
            (uint(mask), rest)
        } else {
            (field.full_mask(), rest)
        };
        self.rest = rest;
        Some(MatchField { field, value, mask })
    }
}

/// Ethernet types with an `ovs-ofctl` shorthand.
pub mod eth_type {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// RARP.
    pub const RARP: u16 = 0x8035;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// MPLS unicast.
    pub const MPLS: u16 = 0x8847;
    /// MPLS multicast.
    pub const MPLS_MCAST: u16 = 0x8848;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
}

/// The VLAN "present" bit of the OXM `vlan_vid` field.
pub const VLAN_PRESENT: u16 = 0x1000;

impl Match {
    /// The empty (match-everything) match.
    pub fn new() -> Self {
        Match::default()
    }

    /// Builder: exact match on `field`.
    pub fn with(mut self, field: Field, value: u128) -> Self {
        self.set(field, value, u128::MAX);
        self
    }

    /// Builder: masked match on `field`.
    pub fn with_masked(mut self, field: Field, value: u128, mask: u128) -> Self {
        self.set(field, value, mask);
        self
    }

    /// Builder: match on the 64-bit `xreg{n}` (stored as `reg{2n}`/`reg{2n+1}`).
    pub fn with_xreg(mut self, n: u8, value: u64, mask: u64) -> Self {
        self.set_xreg(n, value, mask);
        self
    }

    /// Sets (or replaces) the match on `field`; a zero mask removes it.
    pub fn set(&mut self, field: Field, value: u128, mask: u128) {
        let mask = mask & field.full_mask();
        if mask == 0 && self.get(field).is_none() {
            return;
        }
        let mut out = Vec::with_capacity(self.packed.len() + 2 + 2 * field.bytes());
        let mut placed = false;
        let place = |out: &mut Vec<u8>| {
            if mask != 0 {
                let value = value & mask;
                pack(out, &MatchField { field, value, mask });
            }
        };
        for e in self.fields() {
            if !placed && e.field >= field {
                place(&mut out);
                placed = true;
            }
            if e.field != field {
                pack(&mut out, &e);
            }
        }
        if !placed {
            place(&mut out);
        }
        self.packed = out.into_boxed_slice();
    }

    /// Sets the 64-bit `xreg{n}` as its two 32-bit halves.
    pub fn set_xreg(&mut self, n: u8, value: u64, mask: u64) {
        let (hi, lo) = (n.wrapping_mul(2), n.wrapping_mul(2).wrapping_add(1));
        self.set(
            Field::Reg(hi),
            u128::from(value >> 32),
            u128::from(mask >> 32),
        );
        self.set(
            Field::Reg(lo),
            u128::from(value as u32),
            u128::from(mask as u32),
        );
    }

    /// Removes the match on `field`.
    pub fn remove(&mut self, field: Field) {
        self.set(field, 0, 0);
    }

    /// The `(value, mask)` matched on `field`, if any.
    pub fn get(&self, field: Field) -> Option<(u128, u128)> {
        self.fields()
            .take_while(|e| e.field <= field)
            .find(|e| e.field == field)
            .map(|e| (e.value, e.mask))
    }

    /// The exact value matched on `field`, if it is matched exactly.
    pub fn exact(&self, field: Field) -> Option<u128> {
        self.get(field)
            .filter(|(_, m)| *m == field.full_mask())
            .map(|(v, _)| v)
    }

    /// The entries, sorted by field.
    pub fn fields(&self) -> Fields<'_> {
        Fields { rest: &self.packed }
    }

    /// Whether nothing is matched.
    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    /// Appends the OXM TLVs of the match.
    pub fn encode_oxms(&self, out: &mut Vec<u8>) {
        for m in self.fields() {
            encode_oxm(out, m.field, m.value, m.mask);
        }
    }

    /// Appends an `ofp_match` (type OXM, padded to 8 bytes).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.u16(1);
        out.u16(0);
        self.encode_oxms(out);
        out.patch_u16(start + 2, out.len() - start);
        out.pad8_from(start);
    }

    /// Decodes an `ofp_match` (type OXM) including its padding.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Match, DecodeError> {
        let ty = r.u16()?;
        let len = usize::from(r.u16()?);
        if ty != 1 {
            return Err(DecodeError::Unknown {
                what: "match type",
                value: ty.into(),
            });
        }
        if len < 4 {
            return Err(DecodeError::BadLength {
                what: "ofp_match",
                len,
            });
        }
        let body = r.bytes(len - 4)?;
        r.skip(round8(len) - len)?;
        Match::decode_oxms(body)
    }

    /// Decodes a sequence of OXM/NXM TLVs.
    pub fn decode_oxms(buf: &[u8]) -> Result<Match, DecodeError> {
        let mut r = Reader::new(buf, "oxm");
        let mut m = Match::new();
        while !r.is_empty() {
            let (field, value, mask) = decode_oxm(&mut r)?;
            match field {
                OxmField::Field(f) => m.set(f, value, mask),
                OxmField::Xreg(n) => m.set_xreg(n, value as u64, mask as u64),
            }
        }
        Ok(m)
    }

    /// The exact `eth_type`, if any.
    pub fn eth_type(&self) -> Option<u16> {
        self.exact(Field::EthType).map(|v| v as u16)
    }

    /// The exact `nw_proto`, if any.
    pub fn ip_proto(&self) -> Option<u8> {
        self.exact(Field::IpProto).map(|v| v as u8)
    }
}

/// A decoded OXM header's target.
#[derive(Clone, Copy)]
pub(crate) enum OxmField {
    Field(Field),
    Xreg(u8),
}

/// Writes one OXM TLV (masked form only when the mask is not all-ones and the field allows it).
pub(crate) fn encode_oxm(out: &mut Vec<u8>, field: Field, value: u128, mask: u128) {
    let n = field.bytes();
    let masked = mask != field.full_mask() && field.maskable();
    let h = field.header();
    if masked {
        out.u32((h & !0xff) | 0x100 | (2 * n as u32));
        out.uint(value, n);
        out.uint(mask, n);
    } else {
        out.u32(h);
        out.uint(value, n);
    }
}

/// Decoded OXM header: target, masked flag and the payload width of one value.
pub(crate) fn decode_oxm_header(
    r: &mut Reader<'_>,
) -> Result<(OxmField, bool, usize), DecodeError> {
    let h = r.u32()?;
    let class = (h >> 16) as u16;
    let code = ((h >> 9) & 0x7f) as u8;
    let hasmask = h & 0x100 != 0;
    let mut len = (h & 0xff) as usize;
    let field = if class == OXM_CLASS_EXPERIMENTER {
        let exp = r.u32()?;
        len = len.checked_sub(4).ok_or(DecodeError::BadLength {
            what: "oxm experimenter",
            len,
        })?;
        if exp == ONF_EXPERIMENTER && code == 42 {
            OxmField::Field(Field::TcpFlags)
        } else {
            return Err(DecodeError::Unknown {
                what: "oxm experimenter",
                value: exp.into(),
            });
        }
    } else if class == OXM_CLASS_PACKET_REGS && code < 8 {
        OxmField::Xreg(code)
    } else if class == NXM_CLASS_0 && code == 0 {
        OxmField::Field(Field::InPort)
    } else {
        OxmField::Field(
            Field::from_class_code(class, code).ok_or(DecodeError::Unknown {
                what: "oxm field",
                value: u64::from(h >> 9),
            })?,
        )
    };
    if hasmask && !len.is_multiple_of(2) {
        return Err(DecodeError::BadLength {
            what: "masked oxm",
            len,
        });
    }
    Ok((field, hasmask, if hasmask { len / 2 } else { len }))
}

/// Decodes one OXM TLV into `(field, value, mask)`.
pub(crate) fn decode_oxm(r: &mut Reader<'_>) -> Result<(OxmField, u128, u128), DecodeError> {
    let (field, hasmask, n) = decode_oxm_header(r)?;
    let (want, bits) = match &field {
        OxmField::Field(Field::InPort) if n == 2 => (2, 16),
        // OVS trims variable-length fields to the bytes the value needs (e.g. in set_field).
        OxmField::Field(f @ Field::TunMetadata(_)) if (1..=f.bytes()).contains(&n) => (n, f.bits()),
        OxmField::Field(f) => (f.bytes(), f.bits()),
        OxmField::Xreg(_) => (8, 64),
    };
    if n != want {
        return Err(DecodeError::BadLength {
            what: "oxm value",
            len: n,
        });
    }
    let value = r.uint(n)?;
    let mask = if hasmask { r.uint(n)? } else { ones(bits) };
    if value & !ones(bits) != 0 || mask & !ones(bits) != 0 {
        return Err(invalid(
            "oxm value",
            format!("{value:#x}/{mask:#x} wider than {bits} bits"),
        ));
    }
    if bits == 16 && matches!(field, OxmField::Field(Field::InPort)) {
        // NXM_OF_IN_PORT is a 16-bit OpenFlow 1.0 port number.
        return Ok((
            field,
            u128::from(port_from_16(value as u16)),
            u128::from(u32::MAX),
        ));
    }
    Ok((field, value, mask))
}

/// Converts an OpenFlow 1.0 16-bit port number to the 32-bit form.
pub fn port_from_16(p: u16) -> u32 {
    if p >= 0xff00 {
        u32::from(p) | 0xffff_0000
    } else {
        u32::from(p)
    }
}

/// Converts a 32-bit port number to the 16-bit form used by Nicira actions.
pub fn port_to_16(p: u32) -> u16 {
    if p >= 0xffff_ff00 {
        (p & 0xffff) as u16
    } else {
        p.min(0xffff) as u16
    }
}

// ---------------------------------------------------------------- text

/// `ovs-ofctl` shorthand for an (eth_type, ip_proto) pair.
fn shorthand(et: u16, proto: Option<u8>) -> Option<(&'static str, bool)> {
    let p = |v4: &'static str, v6: &'static str| if et == eth_type::IPV4 { v4 } else { v6 };
    Some(match (et, proto) {
        (eth_type::IPV4 | eth_type::IPV6, Some(1)) if et == eth_type::IPV4 => ("icmp", true),
        (eth_type::IPV6, Some(58)) => ("icmp6", true),
        (eth_type::IPV4 | eth_type::IPV6, Some(6)) => (p("tcp", "tcp6"), true),
        (eth_type::IPV4 | eth_type::IPV6, Some(17)) => (p("udp", "udp6"), true),
        (eth_type::IPV4 | eth_type::IPV6, Some(132)) => (p("sctp", "sctp6"), true),
        (eth_type::IPV4, _) => ("ip", false),
        (eth_type::IPV6, _) => ("ipv6", false),
        (eth_type::ARP, _) => ("arp", false),
        (eth_type::RARP, _) => ("rarp", false),
        (eth_type::MPLS, _) => ("mpls", false),
        (eth_type::MPLS_MCAST, _) => ("mplsm", false),
        _ => return None,
    })
}

/// Parses a shorthand into `(eth_type, ip_proto)`.
fn parse_shorthand(s: &str) -> Option<(u16, Option<u8>)> {
    Some(match s {
        "ip" => (eth_type::IPV4, None),
        "ipv6" => (eth_type::IPV6, None),
        "icmp" => (eth_type::IPV4, Some(1)),
        "icmp6" => (eth_type::IPV6, Some(58)),
        "tcp" => (eth_type::IPV4, Some(6)),
        "tcp6" => (eth_type::IPV6, Some(6)),
        "udp" => (eth_type::IPV4, Some(17)),
        "udp6" => (eth_type::IPV6, Some(17)),
        "sctp" => (eth_type::IPV4, Some(132)),
        "sctp6" => (eth_type::IPV6, Some(132)),
        "arp" => (eth_type::ARP, None),
        "rarp" => (eth_type::RARP, None),
        "mpls" => (eth_type::MPLS, None),
        "mplsm" => (eth_type::MPLS_MCAST, None),
        _ => return None,
    })
}

impl Match {
    fn put(&self, out: &mut Vec<String>, name: &str, field: Field) {
        if let Some((v, m)) = self.get(field) {
            out.push(format!("{name}={}", field.format_value(v, m)));
        }
    }

    /// Appends the `key=value` tokens in the order `ovs-ofctl` prints them.
    pub fn format_tokens(&self, out: &mut Vec<String>) {
        self.put(out, "pkt_mark", Field::PktMark);
        self.put(out, "conj_id", Field::ConjId);
        for f in crate::field::CONNTRACK {
            self.put(out, f.name(), f);
        }
        let et = self.eth_type();
        let proto = self.ip_proto();
        let mut proto_done = false;
        if let Some((s, p)) = et.and_then(|e| shorthand(e, proto)) {
            out.push(s.to_string());
            proto_done = p;
        }
        for n in 0..crate::field::N_REGS {
            let f = Field::Reg(n);
            self.put(out, f.name(), f);
        }
        self.put(out, "tun_id", Field::TunId);
        self.put(out, "tun_src", Field::TunSrc);
        self.put(out, "tun_dst", Field::TunDst);
        for n in 0..crate::field::N_TUN_METADATA {
            let f = Field::TunMetadata(n);
            self.put(out, f.name(), f);
        }
        self.put(out, "metadata", Field::Metadata);
        self.put(out, "in_port", Field::InPort);
        self.format_vlan(out);
        self.put(out, "dl_src", Field::EthSrc);
        self.put(out, "dl_dst", Field::EthDst);
        if let (Some(e), None) = (et, et.and_then(|e| shorthand(e, proto))) {
            out.push(format!("dl_type={e:#06x}"));
        }
        self.put(out, "mpls_label", Field::MplsLabel);
        self.put(out, "mpls_tc", Field::MplsTc);
        self.put(out, "mpls_bos", Field::MplsBos);
        self.put(out, "ipv6_src", Field::Ipv6Src);
        self.put(out, "ipv6_dst", Field::Ipv6Dst);
        if let Some((v, m)) = self.get(Field::Ipv6Label) {
            if m == Field::Ipv6Label.full_mask() {
                out.push(format!("ipv6_label={v:#07x}"));
            } else {
                out.push(format!("ipv6_label={v:#07x}/{m:#07x}"));
            }
        }
        self.put(out, "nw_src", Field::Ipv4Src);
        self.put(out, "nw_dst", Field::Ipv4Dst);
        self.put(out, "arp_spa", Field::ArpSpa);
        self.put(out, "arp_tpa", Field::ArpTpa);
        if !proto_done {
            self.put(out, "nw_proto", Field::IpProto);
        }
        self.put(out, "arp_op", Field::ArpOp);
        if let Some((v, _)) = self.get(Field::IpDscp) {
            out.push(format!("nw_tos={}", v << 2));
        }
        self.put(out, "nw_ecn", Field::IpEcn);
        self.put(out, "nw_ttl", Field::IpTtl);
        self.put(out, "arp_sha", Field::ArpSha);
        self.put(out, "arp_tha", Field::ArpTha);
        self.put(out, "icmp_type", Field::IcmpType);
        self.put(out, "icmp_code", Field::IcmpCode);
        self.put(out, "icmp_type", Field::Icmpv6Type);
        self.put(out, "icmp_code", Field::Icmpv6Code);
        self.put(out, "nd_target", Field::NdTarget);
        self.put(out, "nd_sll", Field::NdSll);
        self.put(out, "nd_tll", Field::NdTll);
        for (f, name) in [
            (Field::TcpSrc, "tp_src"),
            (Field::UdpSrc, "tp_src"),
            (Field::SctpSrc, "tp_src"),
            (Field::TcpDst, "tp_dst"),
            (Field::UdpDst, "tp_dst"),
            (Field::SctpDst, "tp_dst"),
        ] {
            self.put(out, name, f);
        }
        self.put(out, "tcp_flags", Field::TcpFlags);
    }

    fn format_vlan(&self, out: &mut Vec<String>) {
        let vid = self.get(Field::VlanVid);
        let pcp = self.exact(Field::VlanPcp);
        if vid.is_none() && pcp.is_none() {
            return;
        }
        let (vv, vm) = vid.map_or((0, 0), |(v, m)| (v as u16, m as u16));
        let pcp_bits = pcp.map_or(0, |p| (p as u16) << 13);
        let tci = vv | pcp_bits;
        let mask = vm | if pcp.is_some() { 0xe000 } else { 0 };
        let cfi = mask & VLAN_PRESENT != 0 && tci & VLAN_PRESENT != 0;
        let vid_mask = mask & 0x0fff;
        let pcp_mask = mask & 0xe000;
        if cfi
            && (vid_mask == 0 || vid_mask == 0x0fff)
            && (pcp_mask == 0 || pcp_mask == 0xe000)
            && (vid_mask != 0 || pcp_mask != 0)
        {
            if vid_mask != 0 {
                out.push(format!("dl_vlan={}", tci & 0x0fff));
            }
            if pcp_mask != 0 {
                out.push(format!("dl_vlan_pcp={}", tci >> 13));
            }
        } else if mask == 0xffff {
            out.push(format!("vlan_tci={tci:#06x}"));
        } else {
            out.push(format!("vlan_tci={tci:#06x}/{mask:#06x}"));
        }
    }

    /// Parses one match token (`key=value` or a shorthand such as `tcp`). `tp_src`/`tp_dst` and
    /// `icmp_*` are resolved against the protocol, so protocol tokens should come first
    /// ([`Match::parse_tokens`] takes care of that).
    fn parse_token(&mut self, key: &str, value: Option<&str>) -> Result<(), ParseError> {
        let tok = || format!("{key}={}", value.unwrap_or(""));
        if let Some((et, proto)) = parse_shorthand(key) {
            if value.is_some() {
                return Err(ParseError::new("shorthand takes no value", &tok()));
            }
            self.set(Field::EthType, et.into(), u128::MAX);
            if let Some(p) = proto {
                self.set(Field::IpProto, p.into(), u128::MAX);
            }
            return Ok(());
        }
        let v = value.ok_or_else(|| ParseError::new("match field needs a value", key))?;
        let et = self.eth_type();
        let proto = self.ip_proto();
        let field = match key {
            "dl_vlan" => {
                let (vid, _) = parse_value(Syntax::Dec, 12, v)?;
                self.set(Field::VlanVid, vid | u128::from(VLAN_PRESENT), u128::MAX);
                return Ok(());
            }
            "dl_vlan_pcp" | "vlan_pcp" => {
                let (p, _) = parse_value(Syntax::Dec, 3, v)?;
                self.set(Field::VlanPcp, p, u128::MAX);
                if self.get(Field::VlanVid).is_none() {
                    let present = u128::from(VLAN_PRESENT);
                    self.set(Field::VlanVid, present, present);
                }
                return Ok(());
            }
            "vlan_tci" => {
                let (t, m) = parse_value(Syntax::Hex, 16, v)?;
                self.set(Field::VlanVid, t & 0x1fff, m & 0x1fff);
                if m & 0xe000 == 0xe000 {
                    self.set(Field::VlanPcp, t >> 13, u128::MAX);
                }
                return Ok(());
            }
            "nw_tos" => {
                let (t, _) = parse_value(Syntax::Dec, 8, v)?;
                self.set(Field::IpDscp, t >> 2, u128::MAX);
                return Ok(());
            }
            "xreg0" | "xreg1" | "xreg2" | "xreg3" | "xreg4" | "xreg5" | "xreg6" | "xreg7" => {
                let n = key.as_bytes()[4] - b'0';
                let (x, m) = parse_value(Syntax::Hex, 64, v)?;
                self.set_xreg(n, x as u64, m as u64);
                return Ok(());
            }
            "in_port" => {
                self.set(Field::InPort, parse_port(v)?.into(), u128::MAX);
                return Ok(());
            }
            "tp_src" | "tp_dst" => {
                let src = key == "tp_src";
                match proto {
                    Some(6) => {
                        if src {
                            Field::TcpSrc
                        } else {
                            Field::TcpDst
                        }
                    }
                    Some(17) => {
                        if src {
                            Field::UdpSrc
                        } else {
                            Field::UdpDst
                        }
                    }
                    Some(132) => {
                        if src {
                            Field::SctpSrc
                        } else {
                            Field::SctpDst
                        }
                    }
                    _ => {
                        return Err(ParseError::new(
                            "tp_src/tp_dst need tcp, udp or sctp",
                            &tok(),
                        ));
                    }
                }
            }
            "icmp_type" | "icmp_code" if et == Some(eth_type::IPV6) => {
                if key == "icmp_type" {
                    Field::Icmpv6Type
                } else {
                    Field::Icmpv6Code
                }
            }
            "nw_src" | "nw_dst" | "nw_proto" if et == Some(eth_type::ARP) => match key {
                "nw_src" => Field::ArpSpa,
                "nw_dst" => Field::ArpTpa,
                _ => Field::ArpOp,
            },
            _ => {
                Field::from_name(key).ok_or_else(|| ParseError::new("unknown match field", key))?
            }
        };
        let (val, mask) = field.parse_value(v)?;
        if mask != field.full_mask() && !field.maskable() {
            return Err(ParseError::new("field cannot be masked", &tok()));
        }
        self.set(field, val, mask);
        Ok(())
    }

    /// Parses match tokens (`("tcp", None)`, `("nw_src", Some("10.0.0.0/8"))`, …).
    pub fn parse_tokens<'a>(
        tokens: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Match, ParseError> {
        let tokens: Vec<_> = tokens.into_iter().collect();
        let mut m = Match::new();
        let first = |k: &str| {
            parse_shorthand(k).is_some()
                || matches!(k, "dl_type" | "eth_type" | "nw_proto" | "ip_proto")
        };
        for (k, v) in tokens.iter().filter(|(k, _)| first(k)) {
            m.parse_token(k, *v)?;
        }
        for (k, v) in tokens.iter().filter(|(k, _)| !first(k)) {
            m.parse_token(k, *v)?;
        }
        Ok(m)
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = Vec::new();
        self.format_tokens(&mut t);
        f.write_str(&t.join(","))
    }
}

impl std::str::FromStr for Match {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Match, ParseError> {
        Match::parse_tokens(
            crate::lexer::split_top(s)
                .into_iter()
                .map(crate::lexer::key_value),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Sets of random fields (any width, masked or not, removals by a zero mask).
    fn sets() -> impl Strategy<Value = Vec<(usize, u128, u128)>> {
        let n = Field::all().count();
        prop::collection::vec(
            (
                0..n,
                any::<u128>(),
                prop_oneof![Just(u128::MAX), Just(0), any::<u128>()],
            ),
            0..24,
        )
    }

    proptest! {
        /// The packed match holds what a sorted map of fields would: same entries in order, same
        /// answers, same equality and order whichever order the fields were set in.
        #[test]
        fn the_packed_match_is_a_sorted_map_of_fields(ops in sets()) {
            let all: Vec<Field> = Field::all().collect();
            let mut m = Match::new();
            let mut model: BTreeMap<Field, (u128, u128)> = BTreeMap::new();
            for (i, value, mask) in &ops {
                let f = all[*i];
                m.set(f, *value, *mask);
                let mask = mask & f.full_mask();
                if mask == 0 {
                    model.remove(&f);
                } else {
                    model.insert(f, (value & mask, mask));
                }
            }
            let entries: Vec<MatchField> = model
                .iter()
                .map(|(f, (value, mask))| MatchField { field: *f, value: *value, mask: *mask })
                .collect();
            prop_assert_eq!(m.fields().collect::<Vec<_>>(), entries.clone());
            for f in &all {
                prop_assert_eq!(m.get(*f), model.get(f).copied());
            }
            let mut reversed = Match::new();
            for e in entries.iter().rev() {
                reversed.set(e.field, e.value, e.mask);
            }
            prop_assert_eq!(&reversed, &m);
            prop_assert_eq!(m.is_empty(), model.is_empty());
            let mut other = Match::new();
            if let Some((i, value, mask)) = ops.first() {
                other.set(all[*i], *value, *mask);
            }
            let others: Vec<MatchField> = other.fields().collect();
            prop_assert_eq!(m.cmp(&other), entries.cmp(&others));
        }
    }
}
