//! The packet model: header and metadata fields keyed by [`openflow::Field`], with the VLAN
//! and MPLS stacks kept apart, and constructors for the packets pipeline tests need.
//!
//! A field a packet does not carry is absent and a match on it fails. Presence follows the
//! Open vSwitch prerequisites: `nw_src` exists only with `eth_type=0x0800`, `tcp_dst` only
//! with an IP `nw_proto=6`, `nd_target` only in neighbour solicitations/advertisements, and
//! so on. Pipeline metadata (`in_port`, `metadata`, registers, `pkt_mark`, tunnel id and
//! addresses, `ct_state`/`ct_zone`/`ct_mark`/`ct_label`) is always present and starts at 0,
//! as in OVS. `tun_metadataN` and the conntrack tuple fields (`ct_nw_src`, …) are present only
//! once set (by a tunnel receive context and by `ct` respectively). Because presence is derived
//! from `eth_type`, pushing MPLS hides the IP fields and popping it back to IPv4 shows them
//! again.
//!
//! ICMP and ICMPv6 echo requests and replies also carry their identifier ([`Packet::icmp_id`]),
//! which OpenFlow can neither match nor write but conntrack uses as a port (and NAT may change).
//!
//! A packet also remembers what the datapath did to it that the flows of the current pass do not
//! see. Open vSwitch translates a pass against the headers the pass started with, so the
//! addresses and ports a `ct` action translates (NAT) change the packet that leaves (outputs,
//! the controller, recirculations) but not what later lookups and actions of the same pass
//! see; a flow that writes such a field afterwards wins, as OVS then sets it in the datapath.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use openflow::Field;
use openflow::field::{CT_STATE_FLAGS, TCP_FLAGS};
use openflow::matching::{VLAN_PRESENT, eth_type};

use crate::Error;

/// IP protocol numbers used by the constructors and the simulator.
pub mod ip_proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// TCP flag bits as in the `tcp_flags` field.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u16 = 0x001;
    /// SYN.
    pub const SYN: u16 = 0x002;
    /// RST.
    pub const RST: u16 = 0x004;
    /// PSH.
    pub const PSH: u16 = 0x008;
    /// ACK.
    pub const ACK: u16 = 0x010;
}

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// The all-zero address.
    pub const ZERO: Mac = Mac([0; 6]);

    /// The address as a field value.
    pub fn value(self) -> u128 {
        self.0.iter().fold(0, |acc, b| (acc << 8) | u128::from(*b))
    }

    /// The address in a field value's low 48 bits.
    pub fn from_value(v: u128) -> Mac {
        let b = v.to_be_bytes();
        Mac([b[10], b[11], b[12], b[13], b[14], b[15]])
    }
}

impl FromStr for Mac {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mac, Error> {
        let bad = || Error::BadMac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            *b = u8::from_str_radix(parts.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// One 802.1Q tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// TPID (0x8100, 0x88a8).
    pub tpid: u16,
    /// VLAN id (12 bits).
    pub vid: u16,
    /// Priority code point (3 bits).
    pub pcp: u8,
}

/// One MPLS label stack entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lse {
    /// Label (20 bits).
    pub label: u32,
    /// Traffic class (3 bits).
    pub tc: u8,
    /// Bottom of stack.
    pub bos: bool,
    /// TTL.
    pub ttl: u8,
}

/// The tunnel context of a packet: what a tunnel port received it with, or what an output to a
/// tunnel port sends it with.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// `tun_id` (VNI / key).
    pub id: u64,
    /// `tun_src`.
    pub src: Ipv4Addr,
    /// `tun_dst`.
    pub dst: Ipv4Addr,
    /// `tun_metadataN` values present (Geneve options), by index.
    pub metadata: BTreeMap<u8, u32>,
}

impl Tunnel {
    /// A tunnel context with no Geneve options.
    pub fn new(id: u64, src: Ipv4Addr, dst: Ipv4Addr) -> Tunnel {
        Tunnel {
            id,
            src,
            dst,
            metadata: BTreeMap::new(),
        }
    }

    /// Builder: a `tun_metadataN` option.
    pub fn with_metadata(mut self, n: u8, value: u32) -> Tunnel {
        self.metadata.insert(n, value);
        self
    }
}

impl fmt::Display for Tunnel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tun_id={:#x},tun_src={},tun_dst={}",
            self.id, self.src, self.dst
        )?;
        for (n, v) in &self.metadata {
            write!(f, ",tun_metadata{n}={v:#x}")?;
        }
        Ok(())
    }
}

/// A packet as the simulator sees it (see the module docs for field presence).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Packet {
    fields: BTreeMap<Field, u128>,
    vlans: Vec<VlanTag>,
    mpls: Vec<Lse>,
    /// The ICMP/ICMPv6 echo identifier (meaningful only in an echo request or reply).
    icmp_id: u16,
    datapath: Datapath,
}

/// What the datapath did to a packet that the flows of the current pass do not see (see the
/// module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Datapath {
    /// NAT rewrites: `(field, value the flows see, value in the datapath)`.
    rewrites: Vec<(Field, u128, u128)>,
    /// The NAT bits (`+snat`/`+dnat`) of the datapath's `ct_state` after the last `ct`, with
    /// its zone, while the flows see conntrack fields cleared.
    ct_nat: Option<(u32, u16)>,
}

/// The address fields NAT rewrites (it rewrites the [`PORT_FIELDS`] too).
const ADDRESS_FIELDS: [Field; 4] = [
    Field::Ipv4Src,
    Field::Ipv4Dst,
    Field::Ipv6Src,
    Field::Ipv6Dst,
];

/// The L4 port fields, (source, destination) per protocol.
const PORT_FIELDS: [(Field, Field); 3] = [
    (Field::TcpSrc, Field::TcpDst),
    (Field::UdpSrc, Field::UdpDst),
    (Field::SctpSrc, Field::SctpDst),
];

/// Fields that always exist (pipeline metadata), defaulting to zero.
fn is_metadata(f: Field) -> bool {
    matches!(
        f,
        Field::InPort
            | Field::Metadata
            | Field::Reg(_)
            | Field::PktMark
            | Field::TunId
            | Field::TunSrc
            | Field::TunDst
            | Field::CtState
            | Field::CtZone
            | Field::CtMark
            | Field::CtLabel
            | Field::ConjId
    )
}

/// Fields present only once something set them.
fn is_set_only(f: Field) -> bool {
    matches!(
        f,
        Field::TunMetadata(_)
            | Field::CtNwSrc
            | Field::CtNwDst
            | Field::CtIpv6Src
            | Field::CtIpv6Dst
            | Field::CtNwProto
            | Field::CtTpSrc
            | Field::CtTpDst
    )
}

const ND_NS: u128 = 135;
const ND_NA: u128 = 136;

impl Packet {
    /// An Ethernet frame with nothing above the Ethernet header.
    pub fn ethernet(src: Mac, dst: Mac, ethertype: u16) -> Packet {
        Packet {
            fields: BTreeMap::from([
                (Field::EthSrc, src.value()),
                (Field::EthDst, dst.value()),
                (Field::EthType, u128::from(ethertype)),
            ]),
            vlans: Vec::new(),
            mpls: Vec::new(),
            icmp_id: 0,
            datapath: Datapath::default(),
        }
    }

    /// A broadcast ARP request from `sha`/`spa` for `tpa`.
    pub fn arp_request(sha: Mac, spa: Ipv4Addr, tpa: Ipv4Addr) -> Packet {
        Packet::ethernet(sha, Mac::BROADCAST, eth_type::ARP)
            .with(Field::ArpOp, 1)
            .with(Field::ArpSha, sha.value())
            .with(Field::ArpSpa, u32::from(spa).into())
            .with(Field::ArpTha, 0)
            .with(Field::ArpTpa, u32::from(tpa).into())
    }

    /// A unicast ARP reply: `sha` has `spa`, sent to `tha`/`tpa`.
    pub fn arp_reply(sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Packet {
        Packet::ethernet(sha, tha, eth_type::ARP)
            .with(Field::ArpOp, 2)
            .with(Field::ArpSha, sha.value())
            .with(Field::ArpSpa, u32::from(spa).into())
            .with(Field::ArpTha, tha.value())
            .with(Field::ArpTpa, u32::from(tpa).into())
    }

    /// An IPv4 packet (TTL 64) carrying `proto` with no L4 fields set.
    pub fn ipv4(src_mac: Mac, dst_mac: Mac, src: Ipv4Addr, dst: Ipv4Addr, proto: u8) -> Packet {
        Packet::ethernet(src_mac, dst_mac, eth_type::IPV4)
            .with(Field::Ipv4Src, u32::from(src).into())
            .with(Field::Ipv4Dst, u32::from(dst).into())
            .with(Field::IpProto, proto.into())
            .with(Field::IpTtl, 64)
    }

    /// An IPv6 packet (hop limit 64) carrying `next_header` with no L4 fields set.
    pub fn ipv6(src_mac: Mac, dst_mac: Mac, src: Ipv6Addr, dst: Ipv6Addr, next: u8) -> Packet {
        Packet::ethernet(src_mac, dst_mac, eth_type::IPV6)
            .with(Field::Ipv6Src, u128::from(src))
            .with(Field::Ipv6Dst, u128::from(dst))
            .with(Field::IpProto, next.into())
            .with(Field::IpTtl, 64)
    }

    /// An IPv4 or IPv6 packet, by the addresses' family (mixed families give IPv6 with the
    /// IPv4 address mapped).
    pub fn ip(src_mac: Mac, dst_mac: Mac, src: IpAddr, dst: IpAddr, proto: u8) -> Packet {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Packet::ipv4(src_mac, dst_mac, s, d, proto),
            _ => Packet::ipv6(src_mac, dst_mac, v6(src), v6(dst), proto),
        }
    }

    /// An ICMP (v4) or ICMPv6 echo request (identifier 0, see [`Packet::with_icmp_id`]).
    pub fn echo_request(src_mac: Mac, dst_mac: Mac, src: IpAddr, dst: IpAddr) -> Packet {
        Packet::icmp_any(src_mac, dst_mac, src, dst, true)
    }

    /// An ICMP (v4) or ICMPv6 echo reply (identifier 0, see [`Packet::with_icmp_id`]).
    pub fn echo_reply(src_mac: Mac, dst_mac: Mac, src: IpAddr, dst: IpAddr) -> Packet {
        Packet::icmp_any(src_mac, dst_mac, src, dst, false)
    }

    fn icmp_any(src_mac: Mac, dst_mac: Mac, src: IpAddr, dst: IpAddr, request: bool) -> Packet {
        let p = Packet::ip(src_mac, dst_mac, src, dst, 0);
        if p.eth_type() == eth_type::IPV4 {
            p.with(Field::IpProto, ip_proto::ICMP.into())
                .with(Field::IcmpType, if request { 8 } else { 0 })
                .with(Field::IcmpCode, 0)
        } else {
            p.with(Field::IpProto, ip_proto::ICMPV6.into())
                .with(Field::Icmpv6Type, if request { 128 } else { 129 })
                .with(Field::Icmpv6Code, 0)
        }
    }

    /// An ICMPv6 neighbour solicitation from `src_mac`/`src` for `target`, sent to the
    /// target's solicited-node multicast group, with the source link-layer address option.
    /// Use `Ipv6Addr::UNSPECIFIED` as `src` for duplicate address detection (no `nd_sll`).
    pub fn neighbor_solicitation(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Packet {
        let t = target.octets();
        let group = Ipv6Addr::new(
            0xff02,
            0,
            0,
            0,
            0,
            1,
            0xff00 | u16::from(t[13]),
            u16::from_be_bytes([t[14], t[15]]),
        );
        let dst_mac = Mac([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
        let sll = if src.is_unspecified() {
            0
        } else {
            src_mac.value()
        };
        Packet::ipv6(src_mac, dst_mac, src, group, ip_proto::ICMPV6)
            .with(Field::IpTtl, 255)
            .with(Field::Icmpv6Type, ND_NS)
            .with(Field::Icmpv6Code, 0)
            .with(Field::NdTarget, u128::from(target))
            .with(Field::NdSll, sll)
    }

    /// An ICMPv6 neighbour advertisement: `target` is at `tll`, sent from `src_mac`/`src` to
    /// `dst_mac`/`dst`.
    pub fn neighbor_advertisement(
        src_mac: Mac,
        dst_mac: Mac,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        target: Ipv6Addr,
        tll: Mac,
    ) -> Packet {
        Packet::ipv6(src_mac, dst_mac, src, dst, ip_proto::ICMPV6)
            .with(Field::IpTtl, 255)
            .with(Field::Icmpv6Type, ND_NA)
            .with(Field::Icmpv6Code, 0)
            .with(Field::NdTarget, u128::from(target))
            .with(Field::NdTll, tll.value())
    }

    /// A TCP segment with `flags` ([`tcp_flags`]).
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        src_mac: Mac,
        dst_mac: Mac,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        flags: u16,
    ) -> Packet {
        Packet::ip(src_mac, dst_mac, src, dst, ip_proto::TCP)
            .with(Field::TcpSrc, sport.into())
            .with(Field::TcpDst, dport.into())
            .with(Field::TcpFlags, flags.into())
    }

    /// A UDP datagram.
    pub fn udp(
        src_mac: Mac,
        dst_mac: Mac,
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
    ) -> Packet {
        Packet::ip(src_mac, dst_mac, src, dst, ip_proto::UDP)
            .with(Field::UdpSrc, sport.into())
            .with(Field::UdpDst, dport.into())
    }

    /// Builder: push an 802.1Q tag (TPID 0x8100) outside any existing one.
    pub fn with_vlan(mut self, vid: u16, pcp: u8) -> Packet {
        self.vlans.insert(
            0,
            VlanTag {
                tpid: eth_type::VLAN,
                vid: vid & 0xfff,
                pcp: pcp & 7,
            },
        );
        self
    }

    /// Builder: push an MPLS label (unicast ethertype) outside any existing one; the first
    /// label pushed is the bottom of the stack.
    pub fn with_mpls(mut self, label: u32, tc: u8, ttl: u8) -> Packet {
        let bos = self.mpls.is_empty();
        self.mpls.insert(
            0,
            Lse {
                label: label & 0xf_ffff,
                tc: tc & 7,
                bos,
                ttl,
            },
        );
        self.fields
            .insert(Field::EthType, u128::from(eth_type::MPLS));
        self
    }

    /// Builder: the packet was received from a tunnel with this context.
    pub fn with_tunnel(mut self, tun: &Tunnel) -> Packet {
        self.fields.insert(Field::TunId, u128::from(tun.id));
        self.fields
            .insert(Field::TunSrc, u128::from(u32::from(tun.src)));
        self.fields
            .insert(Field::TunDst, u128::from(u32::from(tun.dst)));
        for (n, v) in &tun.metadata {
            self.fields.insert(Field::TunMetadata(*n), u128::from(*v));
        }
        self
    }

    /// Builder: the ICMP/ICMPv6 echo identifier.
    pub fn with_icmp_id(mut self, id: u16) -> Packet {
        self.icmp_id = id;
        self
    }

    /// Builder: set a field (masked to its width) regardless of prerequisites.
    pub fn with(mut self, field: Field, value: u128) -> Packet {
        self.store(field, value & field.full_mask());
        self
    }

    /// The `eth_type` (the payload type: VLAN tags are not part of it, MPLS is).
    pub fn eth_type(&self) -> u16 {
        self.raw(Field::EthType) as u16
    }

    /// The current `in_port`.
    pub fn in_port(&self) -> u32 {
        self.raw(Field::InPort) as u32
    }

    /// The echo identifier of an ICMP or ICMPv6 echo request or reply, `None` for any other
    /// packet.
    pub fn icmp_id(&self) -> Option<u16> {
        let echo = self.get(Field::IcmpType).is_some_and(|t| t == 0 || t == 8)
            || self
                .get(Field::Icmpv6Type)
                .is_some_and(|t| t == 128 || t == 129);
        echo.then_some(self.icmp_id)
    }

    /// The VLAN tags, outermost first.
    pub fn vlans(&self) -> &[VlanTag] {
        &self.vlans
    }

    /// The MPLS label stack, outermost first.
    pub fn mpls(&self) -> &[Lse] {
        &self.mpls
    }

    /// The tunnel context carried in the tunnel fields.
    pub fn tunnel(&self) -> Tunnel {
        Tunnel {
            id: self.raw(Field::TunId) as u64,
            src: Ipv4Addr::from(self.raw(Field::TunSrc) as u32),
            dst: Ipv4Addr::from(self.raw(Field::TunDst) as u32),
            metadata: self
                .fields
                .iter()
                .filter_map(|(f, v)| match f {
                    Field::TunMetadata(n) => Some((*n, *v as u32)),
                    _ => None,
                })
                .collect(),
        }
    }

    fn raw(&self, f: Field) -> u128 {
        self.fields.get(&f).copied().unwrap_or(0)
    }

    fn is_ip(&self) -> bool {
        matches!(self.eth_type(), eth_type::IPV4 | eth_type::IPV6)
    }

    fn l4(&self, proto: u8) -> bool {
        self.is_ip() && self.raw(Field::IpProto) == u128::from(proto)
    }

    fn icmpv6(&self, types: &[u128]) -> bool {
        self.eth_type() == eth_type::IPV6
            && self.l4(ip_proto::ICMPV6)
            && types.contains(&self.raw(Field::Icmpv6Type))
            && self.raw(Field::Icmpv6Code) == 0
    }

    /// Whether the packet carries `field` (its prerequisites hold), see the module docs.
    pub fn has(&self, field: Field) -> bool {
        let et = self.eth_type();
        match field {
            f if is_metadata(f) => true,
            f if is_set_only(f) => self.fields.contains_key(&f),
            Field::EthSrc | Field::EthDst | Field::EthType | Field::VlanVid => true,
            Field::VlanPcp => !self.vlans.is_empty(),
            Field::MplsLabel | Field::MplsTc | Field::MplsBos => {
                matches!(et, eth_type::MPLS | eth_type::MPLS_MCAST) && !self.mpls.is_empty()
            }
            Field::IpDscp | Field::IpEcn | Field::IpProto | Field::IpTtl => self.is_ip(),
            Field::Ipv4Src | Field::Ipv4Dst => et == eth_type::IPV4,
            Field::Ipv6Src | Field::Ipv6Dst | Field::Ipv6Label => et == eth_type::IPV6,
            Field::TcpSrc | Field::TcpDst | Field::TcpFlags => self.l4(ip_proto::TCP),
            Field::UdpSrc | Field::UdpDst => self.l4(ip_proto::UDP),
            Field::SctpSrc | Field::SctpDst => self.l4(ip_proto::SCTP),
            Field::IcmpType | Field::IcmpCode => et == eth_type::IPV4 && self.l4(ip_proto::ICMP),
            Field::Icmpv6Type | Field::Icmpv6Code => {
                et == eth_type::IPV6 && self.l4(ip_proto::ICMPV6)
            }
            Field::ArpOp | Field::ArpSpa | Field::ArpTpa | Field::ArpSha | Field::ArpTha => {
                matches!(et, eth_type::ARP | eth_type::RARP)
            }
            Field::NdTarget => self.icmpv6(&[ND_NS, ND_NA]),
            Field::NdSll => self.icmpv6(&[ND_NS]),
            Field::NdTll => self.icmpv6(&[ND_NA]),
            _ => false,
        }
    }

    /// The value of `field`, or `None` when the packet does not carry it.
    pub fn get(&self, field: Field) -> Option<u128> {
        if !self.has(field) {
            return None;
        }
        Some(match field {
            Field::VlanVid => self
                .vlans
                .first()
                .map_or(0, |t| u128::from(VLAN_PRESENT | t.vid)),
            Field::VlanPcp => self.vlans.first().map_or(0, |t| t.pcp.into()),
            Field::MplsLabel => self.mpls.first().map_or(0, |l| l.label.into()),
            Field::MplsTc => self.mpls.first().map_or(0, |l| l.tc.into()),
            Field::MplsBos => self.mpls.first().map_or(0, |l| u128::from(l.bos)),
            f => self.raw(f),
        })
    }

    /// Writes `field` (masked to its width). Returns false, changing nothing, when the packet
    /// does not carry the field. Writing `vlan_vid` with the 0x1000 bit adds a tag to an
    /// untagged packet; without it, removes the outer tag (as OVS does).
    pub fn set(&mut self, field: Field, value: u128) -> bool {
        if !self.has(field) && !is_set_only(field) {
            return false;
        }
        self.store(field, value & field.full_mask());
        true
    }

    fn store(&mut self, field: Field, value: u128) {
        match field {
            Field::VlanVid if value & u128::from(VLAN_PRESENT) == 0 => {
                if !self.vlans.is_empty() {
                    self.vlans.remove(0);
                }
            }
            Field::VlanVid => {
                let vid = (value & 0xfff) as u16;
                match self.vlans.first_mut() {
                    Some(t) => t.vid = vid,
                    None => self.vlans.push(VlanTag {
                        tpid: eth_type::VLAN,
                        vid,
                        pcp: 0,
                    }),
                }
            }
            Field::VlanPcp => {
                if let Some(t) = self.vlans.first_mut() {
                    t.pcp = value as u8;
                }
            }
            Field::MplsLabel | Field::MplsTc | Field::MplsBos => {
                if let Some(l) = self.mpls.first_mut() {
                    match field {
                        Field::MplsLabel => l.label = value as u32,
                        Field::MplsTc => l.tc = value as u8,
                        _ => l.bos = value != 0,
                    }
                }
            }
            f => {
                self.fields.insert(f, value);
            }
        }
    }

    /// The value a masked write starts from: the field's value, or 0 for a set-only field
    /// not yet present; `None` when the packet cannot carry the field.
    pub(crate) fn write_base(&self, field: Field) -> Option<u128> {
        self.get(field).or_else(|| is_set_only(field).then_some(0))
    }

    /// Removes a set-only field (conntrack tuple, tunnel option) or zeroes a metadata field.
    pub(crate) fn clear(&mut self, field: Field) {
        self.fields.remove(&field);
    }

    /// The packet as the datapath has it: the NAT rewrites the flows do not see applied (unless
    /// a flow wrote the field since), nothing hidden left.
    pub(crate) fn wire(&self) -> Packet {
        let mut p = self.clone();
        for (field, seen, wire) in std::mem::take(&mut p.datapath.rewrites) {
            if p.get(field) == Some(seen) {
                p.store(field, wire);
            }
        }
        p.datapath.ct_nat = None;
        p
    }

    /// Records `wire` (this packet as translated by the datapath) as rewrites the flows of this
    /// pass do not see.
    pub(crate) fn set_wire(&mut self, wire: &Packet) {
        let ports = PORT_FIELDS.iter().flat_map(|(s, d)| [*s, *d]);
        self.datapath.rewrites = ADDRESS_FIELDS
            .into_iter()
            .chain(ports)
            .filter_map(|f| match (self.get(f), wire.get(f)) {
                (Some(seen), Some(w)) if seen != w => Some((f, seen, w)),
                _ => None,
            })
            .collect();
        self.icmp_id = wire.icmp_id;
    }

    /// The datapath's NAT `ct_state` bits and zone: what the last `ct` left (the flows see them
    /// after a recirculation, not in the pass of the `ct`); `None` when the packet is not
    /// translated.
    pub(crate) fn datapath_nat(&self) -> Option<(u32, u16)> {
        use crate::conntrack::ct_state::{DNAT, SNAT};
        self.datapath.ct_nat.or_else(|| {
            let bits = self.raw(Field::CtState) as u32 & (SNAT | DNAT);
            (bits != 0).then_some((bits, self.raw(Field::CtZone) as u16))
        })
    }

    /// Sets what [`Packet::datapath_nat`] returns while the flows see no conntrack state.
    pub(crate) fn set_datapath_nat(&mut self, nat: Option<(u32, u16)>) {
        self.datapath.ct_nat = nat;
    }

    /// Writes the source (`source`) or destination address, of the packet's own family.
    pub(crate) fn set_address(&mut self, source: bool, addr: IpAddr) {
        let field = match (addr, source) {
            (IpAddr::V4(_), true) => Field::Ipv4Src,
            (IpAddr::V4(_), false) => Field::Ipv4Dst,
            (IpAddr::V6(_), true) => Field::Ipv6Src,
            (IpAddr::V6(_), false) => Field::Ipv6Dst,
        };
        let value = match addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        self.set(field, value);
    }

    /// Writes the L4 ports (TCP, UDP, SCTP) or, in an echo request or reply, the identifier
    /// (`sport`).
    pub(crate) fn set_ports(&mut self, sport: u16, dport: u16) {
        for (s, d) in PORT_FIELDS {
            if self.has(s) {
                self.set(s, sport.into());
                self.set(d, dport.into());
            }
        }
        if self.icmp_id().is_some() {
            self.icmp_id = sport;
        }
    }

    /// `push_vlan`: a new outer tag copying the previous outer tag's VID and PCP (OpenFlow
    /// 1.3), or VID 0 / PCP 0 on an untagged packet.
    pub(crate) fn push_vlan(&mut self, tpid: u16) {
        let (vid, pcp) = self.vlans.first().map_or((0, 0), |t| (t.vid, t.pcp));
        self.vlans.insert(0, VlanTag { tpid, vid, pcp });
    }

    /// `pop_vlan`: removes the outer tag (nothing on an untagged packet).
    pub(crate) fn pop_vlan(&mut self) {
        if !self.vlans.is_empty() {
            self.vlans.remove(0);
        }
    }

    /// `push_mpls`: a new outer label stack entry, copying the previous outer entry or, on
    /// the first label, label 0 / TC 0 / bottom of stack with the IP TTL (64 for non-IP).
    pub(crate) fn push_mpls(&mut self, ethertype: u16) {
        let lse = match self.mpls.first() {
            Some(l) => Lse { bos: false, ..*l },
            None => Lse {
                label: 0,
                tc: 0,
                bos: true,
                ttl: self.get(Field::IpTtl).map_or(64, |t| t as u8),
            },
        };
        self.mpls.insert(0, lse);
        self.fields.insert(Field::EthType, u128::from(ethertype));
    }

    /// `pop_mpls`: removes the outer label and sets `eth_type`; false if not MPLS.
    pub(crate) fn pop_mpls(&mut self, ethertype: u16) -> bool {
        if !self.has(Field::MplsLabel) {
            return false;
        }
        self.mpls.remove(0);
        self.fields.insert(Field::EthType, u128::from(ethertype));
        true
    }

    /// The outer label entry, mutable (for TTL actions).
    pub(crate) fn outer_lse(&mut self) -> Option<&mut Lse> {
        if self.has(Field::MplsLabel) {
            self.mpls.first_mut()
        } else {
            None
        }
    }
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// The set bits of a flags field as `+name+name` (bits without a name in hexadecimal).
pub(crate) fn flag_text(names: &[&str], value: u128) -> String {
    let mut s: String = names
        .iter()
        .enumerate()
        .filter(|(bit, _)| value & (1 << bit) != 0)
        .map(|(_, n)| format!("+{n}"))
        .collect();
    let unnamed = value >> names.len() << names.len();
    if unnamed != 0 {
        s.push_str(&format!("+{unnamed:#x}"));
    }
    s
}

/// `field=value` for every field the packet carries, metadata only when non-zero, in field
/// order; VLAN tags and MPLS labels as `vlan(vid=…,pcp=…)` and `mpls(label=…,tc=…,ttl=…)`.
impl fmt::Display for Packet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        for field in Field::all() {
            if matches!(
                field,
                Field::VlanVid | Field::VlanPcp | Field::MplsLabel | Field::MplsTc | Field::MplsBos
            ) {
                continue;
            }
            let Some(v) = self.get(field) else { continue };
            let quiet = matches!(
                field,
                Field::TcpFlags | Field::IpDscp | Field::IpEcn | Field::Ipv6Label
            );
            if (is_metadata(field) || quiet) && v == 0 {
                continue;
            }
            let text = match field {
                Field::CtState => flag_text(&CT_STATE_FLAGS, v),
                Field::TcpFlags => flag_text(&TCP_FLAGS, v),
                _ => field.format_value(v, field.full_mask()),
            };
            parts.push(format!("{}={text}", field.name()));
            if let (Field::IcmpCode | Field::Icmpv6Code, Some(id)) = (field, self.icmp_id())
                && id != 0
            {
                parts.push(format!("icmp_id={id}"));
            }
            if field == Field::EthType {
                for t in &self.vlans {
                    parts.push(format!("vlan(vid={},pcp={})", t.vid, t.pcp));
                }
                for l in &self.mpls {
                    parts.push(format!(
                        "mpls(label={},tc={},ttl={}{})",
                        l.label,
                        l.tc,
                        l.ttl,
                        if l.bos { ",bos" } else { "" }
                    ));
                }
            }
        }
        f.write_str(&parts.join(","))
    }
}
