//! The match/set-field fields: their wire headers (OXM and NXM), widths, names and value syntax.
//!
//! A [`Field`] is independent of the header used on the wire: decoding accepts the OXM and the
//! NXM header of a field (and the ONF experimenter header of `tcp_flags`), encoding uses one
//! fixed header per field (OXM where OpenFlow 1.3 has one, NXM otherwise), so a flow read back
//! from Open vSwitch compares equal to the one sent. Values are unsigned integers (`u128`) of
//! the field's width.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::ParseError;

/// OXM class of the basic OpenFlow fields.
pub const OXM_CLASS_BASIC: u16 = 0x8000;
/// OXM class of the 64-bit packet registers (`xreg0`..`xreg7`).
pub const OXM_CLASS_PACKET_REGS: u16 = 0x8001;
/// NXM class 0 (`NXM_OF_*`).
pub const NXM_CLASS_0: u16 = 0x0000;
/// NXM class 1 (`NXM_NX_*`).
pub const NXM_CLASS_1: u16 = 0x0001;
/// OXM experimenter class.
pub const OXM_CLASS_EXPERIMENTER: u16 = 0xffff;
/// ONF experimenter id (also used for OpenFlow 1.3 bundles).
pub const ONF_EXPERIMENTER: u32 = 0x4f4e_4600;

/// Width in bytes of the `tun_metadataN` fields in this model (map Geneve options with `len=4`).
pub const TUN_METADATA_BYTES: usize = 4;

/// A match or set-field field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    /// `in_port` (32-bit OpenFlow 1.3 port number).
    InPort,
    /// `metadata`.
    Metadata,
    /// `eth_dst` / `dl_dst`.
    EthDst,
    /// `eth_src` / `dl_src`.
    EthSrc,
    /// `eth_type` / `dl_type`.
    EthType,
    /// OXM `vlan_vid`: 12-bit VID plus the 0x1000 "present" bit.
    VlanVid,
    /// `vlan_pcp`.
    VlanPcp,
    /// `ip_dscp` (6 bits, unshifted).
    IpDscp,
    /// `nw_ecn`.
    IpEcn,
    /// `nw_proto`.
    IpProto,
    /// `nw_ttl`.
    IpTtl,
    /// `nw_src` / `ip_src`.
    Ipv4Src,
    /// `nw_dst` / `ip_dst`.
    Ipv4Dst,
    /// `ipv6_src`.
    Ipv6Src,
    /// `ipv6_dst`.
    Ipv6Dst,
    /// `ipv6_label`.
    Ipv6Label,
    /// `tcp_src`.
    TcpSrc,
    /// `tcp_dst`.
    TcpDst,
    /// `udp_src`.
    UdpSrc,
    /// `udp_dst`.
    UdpDst,
    /// `sctp_src`.
    SctpSrc,
    /// `sctp_dst`.
    SctpDst,
    /// `icmp_type`.
    IcmpType,
    /// `icmp_code`.
    IcmpCode,
    /// `icmpv6_type`.
    Icmpv6Type,
    /// `icmpv6_code`.
    Icmpv6Code,
    /// `arp_op`.
    ArpOp,
    /// `arp_spa`.
    ArpSpa,
    /// `arp_tpa`.
    ArpTpa,
    /// `arp_sha`.
    ArpSha,
    /// `arp_tha`.
    ArpTha,
    /// `nd_target`.
    NdTarget,
    /// `nd_sll`.
    NdSll,
    /// `nd_tll`.
    NdTll,
    /// `mpls_label`.
    MplsLabel,
    /// `mpls_tc`.
    MplsTc,
    /// `mpls_bos`.
    MplsBos,
    /// `tun_id`.
    TunId,
    /// `tun_src`.
    TunSrc,
    /// `tun_dst`.
    TunDst,
    /// `tun_metadata0`..`tun_metadata7` (see [`TUN_METADATA_BYTES`]).
    TunMetadata(u8),
    /// `reg0`..`reg15` (the 64-bit `xregN` are the pair `reg2N`:`reg2N+1`).
    Reg(u8),
    /// `ct_state`.
    CtState,
    /// `ct_zone`.
    CtZone,
    /// `ct_mark`.
    CtMark,
    /// `ct_label`.
    CtLabel,
    /// `ct_nw_src`.
    CtNwSrc,
    /// `ct_nw_dst`.
    CtNwDst,
    /// `ct_ipv6_src`.
    CtIpv6Src,
    /// `ct_ipv6_dst`.
    CtIpv6Dst,
    /// `ct_nw_proto`.
    CtNwProto,
    /// `ct_tp_src`.
    CtTpSrc,
    /// `ct_tp_dst`.
    CtTpDst,
    /// `pkt_mark`.
    PktMark,
    /// `conj_id`.
    ConjId,
    /// `tcp_flags`.
    TcpFlags,
}

/// How a field's value is written in text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syntax {
    /// Decimal (`80`).
    Dec,
    /// Hexadecimal with `0x` (`0x5`).
    Hex,
    /// Dotted quad.
    Ipv4,
    /// IPv6 address.
    Ipv6,
    /// Ethernet address.
    Mac,
    /// OpenFlow port number or name.
    Port,
    /// `ct_state` flags (`+trk+est`).
    CtState,
    /// TCP flags (`+syn-ack`).
    TcpFlags,
}

/// Static facts about one field.
#[derive(Clone, Copy, Debug)]
struct Info {
    class: u16,
    code: u8,
    bytes: u8,
    bits: u8,
    maskable: bool,
    syntax: Syntax,
    name: &'static str,
    nxm: &'static str,
}

/// One row of the field table.
#[allow(clippy::too_many_arguments)]
const fn i(
    class: u16,
    code: u8,
    bytes: u8,
    bits: u8,
    maskable: bool,
    syntax: Syntax,
    name: &'static str,
    nxm: &'static str,
) -> Info {
    Info {
        class,
        code,
        bytes,
        bits,
        maskable,
        syntax,
        name,
        nxm,
    }
}

use Syntax as S;
const B: u16 = OXM_CLASS_BASIC;
const N1: u16 = NXM_CLASS_1;

/// Every fixed field (registers and tunnel metadata are added by [`Field::all`]).
const FIXED: &[Field] = &[
    Field::InPort,
    Field::Metadata,
    Field::EthDst,
    Field::EthSrc,
    Field::EthType,
    Field::VlanVid,
    Field::VlanPcp,
    Field::IpDscp,
    Field::IpEcn,
    Field::IpProto,
    Field::IpTtl,
    Field::Ipv4Src,
    Field::Ipv4Dst,
    Field::Ipv6Src,
    Field::Ipv6Dst,
    Field::Ipv6Label,
    Field::TcpSrc,
    Field::TcpDst,
    Field::UdpSrc,
    Field::UdpDst,
    Field::SctpSrc,
    Field::SctpDst,
    Field::IcmpType,
    Field::IcmpCode,
    Field::Icmpv6Type,
    Field::Icmpv6Code,
    Field::ArpOp,
    Field::ArpSpa,
    Field::ArpTpa,
    Field::ArpSha,
    Field::ArpTha,
    Field::NdTarget,
    Field::NdSll,
    Field::NdTll,
    Field::MplsLabel,
    Field::MplsTc,
    Field::MplsBos,
    Field::TunId,
    Field::TunSrc,
    Field::TunDst,
    Field::CtState,
    Field::CtZone,
    Field::CtMark,
    Field::CtLabel,
    Field::CtNwSrc,
    Field::CtNwDst,
    Field::CtIpv6Src,
    Field::CtIpv6Dst,
    Field::CtNwProto,
    Field::CtTpSrc,
    Field::CtTpDst,
    Field::PktMark,
    Field::ConjId,
    Field::TcpFlags,
];

/// Number of `reg` fields.
pub const N_REGS: u8 = 16;
/// Number of `tun_metadata` fields supported.
pub const N_TUN_METADATA: u8 = 8;

const REG_NXM: [&str; 16] = [
    "NXM_NX_REG0",
    "NXM_NX_REG1",
    "NXM_NX_REG2",
    "NXM_NX_REG3",
    "NXM_NX_REG4",
    "NXM_NX_REG5",
    "NXM_NX_REG6",
    "NXM_NX_REG7",
    "NXM_NX_REG8",
    "NXM_NX_REG9",
    "NXM_NX_REG10",
    "NXM_NX_REG11",
    "NXM_NX_REG12",
    "NXM_NX_REG13",
    "NXM_NX_REG14",
    "NXM_NX_REG15",
];
const REG_NAME: [&str; 16] = [
    "reg0", "reg1", "reg2", "reg3", "reg4", "reg5", "reg6", "reg7", "reg8", "reg9", "reg10",
    "reg11", "reg12", "reg13", "reg14", "reg15",
];
const TUNMD_NXM: [&str; 8] = [
    "NXM_NX_TUN_METADATA0",
    "NXM_NX_TUN_METADATA1",
    "NXM_NX_TUN_METADATA2",
    "NXM_NX_TUN_METADATA3",
    "NXM_NX_TUN_METADATA4",
    "NXM_NX_TUN_METADATA5",
    "NXM_NX_TUN_METADATA6",
    "NXM_NX_TUN_METADATA7",
];
const TUNMD_NAME: [&str; 8] = [
    "tun_metadata0",
    "tun_metadata1",
    "tun_metadata2",
    "tun_metadata3",
    "tun_metadata4",
    "tun_metadata5",
    "tun_metadata6",
    "tun_metadata7",
];

impl Field {
    fn info(self) -> Info {
        match self {
            Field::InPort => i(B, 0, 4, 32, false, S::Port, "in_port", "OXM_OF_IN_PORT"),
            Field::Metadata => i(B, 2, 8, 64, true, S::Hex, "metadata", "OXM_OF_METADATA"),
            Field::EthDst => i(B, 3, 6, 48, true, S::Mac, "eth_dst", "NXM_OF_ETH_DST"),
            Field::EthSrc => i(B, 4, 6, 48, true, S::Mac, "eth_src", "NXM_OF_ETH_SRC"),
            Field::EthType => i(B, 5, 2, 16, false, S::Hex, "eth_type", "NXM_OF_ETH_TYPE"),
            Field::VlanVid => i(B, 6, 2, 13, true, S::Dec, "vlan_vid", "OXM_OF_VLAN_VID"),
            Field::VlanPcp => i(B, 7, 1, 3, false, S::Dec, "vlan_pcp", "OXM_OF_VLAN_PCP"),
            Field::IpDscp => i(B, 8, 1, 6, false, S::Dec, "ip_dscp", "OXM_OF_IP_DSCP"),
            Field::IpEcn => i(B, 9, 1, 2, false, S::Dec, "nw_ecn", "NXM_NX_IP_ECN"),
            Field::IpProto => i(B, 10, 1, 8, false, S::Dec, "nw_proto", "NXM_OF_IP_PROTO"),
            Field::IpTtl => i(N1, 29, 1, 8, false, S::Dec, "nw_ttl", "NXM_NX_IP_TTL"),
            Field::Ipv4Src => i(B, 11, 4, 32, true, S::Ipv4, "ip_src", "NXM_OF_IP_SRC"),
            Field::Ipv4Dst => i(B, 12, 4, 32, true, S::Ipv4, "ip_dst", "NXM_OF_IP_DST"),
            Field::Ipv6Src => i(B, 26, 16, 128, true, S::Ipv6, "ipv6_src", "NXM_NX_IPV6_SRC"),
            Field::Ipv6Dst => i(B, 27, 16, 128, true, S::Ipv6, "ipv6_dst", "NXM_NX_IPV6_DST"),
            Field::Ipv6Label => i(
                B,
                28,
                4,
                20,
                true,
                S::Hex,
                "ipv6_label",
                "NXM_NX_IPV6_LABEL",
            ),
            Field::TcpSrc => i(B, 13, 2, 16, true, S::Dec, "tcp_src", "NXM_OF_TCP_SRC"),
            Field::TcpDst => i(B, 14, 2, 16, true, S::Dec, "tcp_dst", "NXM_OF_TCP_DST"),
            Field::UdpSrc => i(B, 15, 2, 16, true, S::Dec, "udp_src", "NXM_OF_UDP_SRC"),
            Field::UdpDst => i(B, 16, 2, 16, true, S::Dec, "udp_dst", "NXM_OF_UDP_DST"),
            Field::SctpSrc => i(B, 17, 2, 16, true, S::Dec, "sctp_src", "OXM_OF_SCTP_SRC"),
            Field::SctpDst => i(B, 18, 2, 16, true, S::Dec, "sctp_dst", "OXM_OF_SCTP_DST"),
            Field::IcmpType => i(B, 19, 1, 8, false, S::Dec, "icmp_type", "NXM_OF_ICMP_TYPE"),
            Field::IcmpCode => i(B, 20, 1, 8, false, S::Dec, "icmp_code", "NXM_OF_ICMP_CODE"),
            Field::Icmpv6Type => i(
                B,
                29,
                1,
                8,
                false,
                S::Dec,
                "icmpv6_type",
                "NXM_NX_ICMPV6_TYPE",
            ),
            Field::Icmpv6Code => i(
                B,
                30,
                1,
                8,
                false,
                S::Dec,
                "icmpv6_code",
                "NXM_NX_ICMPV6_CODE",
            ),
            Field::ArpOp => i(B, 21, 2, 16, false, S::Dec, "arp_op", "NXM_OF_ARP_OP"),
            Field::ArpSpa => i(B, 22, 4, 32, true, S::Ipv4, "arp_spa", "NXM_OF_ARP_SPA"),
            Field::ArpTpa => i(B, 23, 4, 32, true, S::Ipv4, "arp_tpa", "NXM_OF_ARP_TPA"),
            Field::ArpSha => i(B, 24, 6, 48, true, S::Mac, "arp_sha", "NXM_NX_ARP_SHA"),
            Field::ArpTha => i(B, 25, 6, 48, true, S::Mac, "arp_tha", "NXM_NX_ARP_THA"),
            Field::NdTarget => i(
                B,
                31,
                16,
                128,
                true,
                S::Ipv6,
                "nd_target",
                "NXM_NX_ND_TARGET",
            ),
            Field::NdSll => i(B, 32, 6, 48, true, S::Mac, "nd_sll", "NXM_NX_ND_SLL"),
            Field::NdTll => i(B, 33, 6, 48, true, S::Mac, "nd_tll", "NXM_NX_ND_TLL"),
            Field::MplsLabel => i(
                B,
                34,
                4,
                20,
                false,
                S::Dec,
                "mpls_label",
                "OXM_OF_MPLS_LABEL",
            ),
            Field::MplsTc => i(B, 35, 1, 3, false, S::Dec, "mpls_tc", "OXM_OF_MPLS_TC"),
            Field::MplsBos => i(B, 36, 1, 1, false, S::Dec, "mpls_bos", "OXM_OF_MPLS_BOS"),
            Field::TunId => i(B, 38, 8, 64, true, S::Hex, "tun_id", "NXM_NX_TUN_ID"),
            Field::TunSrc => i(
                N1,
                31,
                4,
                32,
                true,
                S::Ipv4,
                "tun_src",
                "NXM_NX_TUN_IPV4_SRC",
            ),
            Field::TunDst => i(
                N1,
                32,
                4,
                32,
                true,
                S::Ipv4,
                "tun_dst",
                "NXM_NX_TUN_IPV4_DST",
            ),
            Field::TunMetadata(n) => {
                let k = usize::from(n % N_TUN_METADATA);
                i(N1, 40 + n, 4, 32, true, S::Hex, TUNMD_NAME[k], TUNMD_NXM[k])
            }
            Field::Reg(n) => {
                let k = usize::from(n % N_REGS);
                i(N1, n, 4, 32, true, S::Hex, REG_NAME[k], REG_NXM[k])
            }
            Field::CtState => i(
                N1,
                105,
                4,
                8,
                true,
                S::CtState,
                "ct_state",
                "NXM_NX_CT_STATE",
            ),
            Field::CtZone => i(N1, 106, 2, 16, false, S::Dec, "ct_zone", "NXM_NX_CT_ZONE"),
            Field::CtMark => i(N1, 107, 4, 32, true, S::Hex, "ct_mark", "NXM_NX_CT_MARK"),
            Field::CtLabel => i(
                N1,
                108,
                16,
                128,
                true,
                S::Hex,
                "ct_label",
                "NXM_NX_CT_LABEL",
            ),
            Field::CtNwSrc => i(
                N1,
                120,
                4,
                32,
                true,
                S::Ipv4,
                "ct_nw_src",
                "NXM_NX_CT_NW_SRC",
            ),
            Field::CtNwDst => i(
                N1,
                121,
                4,
                32,
                true,
                S::Ipv4,
                "ct_nw_dst",
                "NXM_NX_CT_NW_DST",
            ),
            Field::CtIpv6Src => i(
                N1,
                122,
                16,
                128,
                true,
                S::Ipv6,
                "ct_ipv6_src",
                "NXM_NX_CT_IPV6_SRC",
            ),
            Field::CtIpv6Dst => i(
                N1,
                123,
                16,
                128,
                true,
                S::Ipv6,
                "ct_ipv6_dst",
                "NXM_NX_CT_IPV6_DST",
            ),
            Field::CtNwProto => i(
                N1,
                119,
                1,
                8,
                false,
                S::Dec,
                "ct_nw_proto",
                "NXM_NX_CT_NW_PROTO",
            ),
            Field::CtTpSrc => i(
                N1,
                124,
                2,
                16,
                true,
                S::Dec,
                "ct_tp_src",
                "NXM_NX_CT_TP_SRC",
            ),
            Field::CtTpDst => i(
                N1,
                125,
                2,
                16,
                true,
                S::Dec,
                "ct_tp_dst",
                "NXM_NX_CT_TP_DST",
            ),
            Field::PktMark => i(N1, 33, 4, 32, true, S::Hex, "pkt_mark", "NXM_NX_PKT_MARK"),
            Field::ConjId => i(N1, 37, 4, 32, false, S::Dec, "conj_id", "NXM_NX_CONJ_ID"),
            Field::TcpFlags => i(
                N1,
                34,
                2,
                12,
                true,
                S::TcpFlags,
                "tcp_flags",
                "NXM_NX_TCP_FLAGS",
            ),
        }
    }

    /// Every field of the model (fixed fields, `reg0..15`, `tun_metadata0..7`).
    pub fn all() -> impl Iterator<Item = Field> {
        FIXED
            .iter()
            .copied()
            .chain((0..N_REGS).map(Field::Reg))
            .chain((0..N_TUN_METADATA).map(Field::TunMetadata))
    }

    /// Whether the field is a valid member of the model (register/metadata index in range).
    pub fn is_valid(self) -> bool {
        match self {
            Field::Reg(n) => n < N_REGS,
            Field::TunMetadata(n) => n < N_TUN_METADATA,
            _ => true,
        }
    }

    /// Width on the wire, in bytes.
    pub fn bytes(self) -> usize {
        usize::from(self.info().bytes)
    }
    /// Width of the meaningful value, in bits.
    pub fn bits(self) -> u32 {
        u32::from(self.info().bits)
    }
    /// All-ones mask of the field's width.
    pub fn full_mask(self) -> u128 {
        ones(self.bits())
    }
    /// Whether OVS accepts a mask on this field.
    pub fn maskable(self) -> bool {
        self.info().maskable
    }
    /// How values are written in text.
    pub fn syntax(self) -> Syntax {
        self.info().syntax
    }
    /// The OVS field name (as in `set_field:V->NAME`).
    pub fn name(self) -> &'static str {
        self.info().name
    }
    /// The NXM/OXM name used in subfield syntax (`NXM_NX_REG0[0..3]`).
    pub fn nxm_name(self) -> &'static str {
        self.info().nxm
    }
    /// Whether a `set_field`/`load` may write the field.
    pub fn writable(self) -> bool {
        !matches!(
            self,
            Field::CtState
                | Field::CtZone
                | Field::CtNwSrc
                | Field::CtNwDst
                | Field::CtIpv6Src
                | Field::CtIpv6Dst
                | Field::CtNwProto
                | Field::CtTpSrc
                | Field::CtTpDst
                | Field::ConjId
                | Field::TcpFlags
        )
    }

    /// The 32-bit header used when encoding (without mask bit; length = value bytes).
    pub fn header(self) -> u32 {
        let i = self.info();
        (u32::from(i.class) << 16) | (u32::from(i.code) << 9) | u32::from(i.bytes)
    }

    /// Field for a decoded `(class, field code)`; experimenter fields are handled by the caller.
    pub fn from_class_code(class: u16, code: u8) -> Option<Field> {
        Some(match (class, code) {
            (OXM_CLASS_BASIC, c) => match c {
                0 => Field::InPort,
                2 => Field::Metadata,
                3 => Field::EthDst,
                4 => Field::EthSrc,
                5 => Field::EthType,
                6 => Field::VlanVid,
                7 => Field::VlanPcp,
                8 => Field::IpDscp,
                9 => Field::IpEcn,
                10 => Field::IpProto,
                11 => Field::Ipv4Src,
                12 => Field::Ipv4Dst,
                13 => Field::TcpSrc,
                14 => Field::TcpDst,
                15 => Field::UdpSrc,
                16 => Field::UdpDst,
                17 => Field::SctpSrc,
                18 => Field::SctpDst,
                19 => Field::IcmpType,
                20 => Field::IcmpCode,
                21 => Field::ArpOp,
                22 => Field::ArpSpa,
                23 => Field::ArpTpa,
                24 => Field::ArpSha,
                25 => Field::ArpTha,
                26 => Field::Ipv6Src,
                27 => Field::Ipv6Dst,
                28 => Field::Ipv6Label,
                29 => Field::Icmpv6Type,
                30 => Field::Icmpv6Code,
                31 => Field::NdTarget,
                32 => Field::NdSll,
                33 => Field::NdTll,
                34 => Field::MplsLabel,
                35 => Field::MplsTc,
                36 => Field::MplsBos,
                38 => Field::TunId,
                _ => return None,
            },
            (NXM_CLASS_1, c) => match c {
                0..=15 => Field::Reg(c),
                16 => Field::TunId,
                17 => Field::ArpSha,
                18 => Field::ArpTha,
                19 => Field::Ipv6Src,
                20 => Field::Ipv6Dst,
                21 => Field::Icmpv6Type,
                22 => Field::Icmpv6Code,
                23 => Field::NdTarget,
                24 => Field::NdSll,
                25 => Field::NdTll,
                27 => Field::Ipv6Label,
                28 => Field::IpEcn,
                29 => Field::IpTtl,
                31 => Field::TunSrc,
                32 => Field::TunDst,
                33 => Field::PktMark,
                34 => Field::TcpFlags,
                37 => Field::ConjId,
                40..=47 => Field::TunMetadata(c - 40),
                105 => Field::CtState,
                106 => Field::CtZone,
                107 => Field::CtMark,
                108 => Field::CtLabel,
                119 => Field::CtNwProto,
                120 => Field::CtNwSrc,
                121 => Field::CtNwDst,
                122 => Field::CtIpv6Src,
                123 => Field::CtIpv6Dst,
                124 => Field::CtTpSrc,
                125 => Field::CtTpDst,
                _ => return None,
            },
            (NXM_CLASS_0, c) => match c {
                1 => Field::EthDst,
                2 => Field::EthSrc,
                3 => Field::EthType,
                6 => Field::IpProto,
                7 => Field::Ipv4Src,
                8 => Field::Ipv4Dst,
                9 => Field::TcpSrc,
                10 => Field::TcpDst,
                11 => Field::UdpSrc,
                12 => Field::UdpDst,
                13 => Field::IcmpType,
                14 => Field::IcmpCode,
                15 => Field::ArpOp,
                16 => Field::ArpSpa,
                17 => Field::ArpTpa,
                _ => return None,
            },
            _ => return None,
        })
    }

    /// Looks a field up by any of its text names (`nw_src`, `ip_src`, `reg3`, `dl_type`, …).
    pub fn from_name(name: &str) -> Option<Field> {
        let alias = match name {
            "dl_dst" => Some(Field::EthDst),
            "dl_src" => Some(Field::EthSrc),
            "dl_type" => Some(Field::EthType),
            "dl_vlan_pcp" => Some(Field::VlanPcp),
            "nw_src" => Some(Field::Ipv4Src),
            "nw_dst" => Some(Field::Ipv4Dst),
            "ip_proto" => Some(Field::IpProto),
            "ip_ecn" => Some(Field::IpEcn),
            "ip_ttl" => Some(Field::IpTtl),
            "in_port_oxm" => Some(Field::InPort),
            "tun_ipv4_src" => Some(Field::TunSrc),
            "tun_ipv4_dst" => Some(Field::TunDst),
            "icmpv4_type" => Some(Field::IcmpType),
            "icmpv4_code" => Some(Field::IcmpCode),
            _ => None,
        };
        alias.or_else(|| Field::all().find(|f| f.name() == name))
    }

    /// Looks a field up by its NXM/OXM name (`NXM_NX_REG0`, `OXM_OF_METADATA`, …).
    pub fn from_nxm_name(name: &str) -> Option<Field> {
        let alias = match name {
            "OXM_OF_ETH_DST" => Some(Field::EthDst),
            "OXM_OF_ETH_SRC" => Some(Field::EthSrc),
            "OXM_OF_ETH_TYPE" => Some(Field::EthType),
            "OXM_OF_IPV4_SRC" => Some(Field::Ipv4Src),
            "OXM_OF_IPV4_DST" => Some(Field::Ipv4Dst),
            "OXM_OF_TUNNEL_ID" => Some(Field::TunId),
            "OXM_OF_IP_PROTO" => Some(Field::IpProto),
            "OXM_OF_ARP_SPA" => Some(Field::ArpSpa),
            "OXM_OF_ARP_TPA" => Some(Field::ArpTpa),
            "OXM_OF_ARP_SHA" => Some(Field::ArpSha),
            "OXM_OF_ARP_THA" => Some(Field::ArpTha),
            "OXM_OF_ARP_OP" => Some(Field::ArpOp),
            "OXM_OF_TCP_SRC" => Some(Field::TcpSrc),
            "OXM_OF_TCP_DST" => Some(Field::TcpDst),
            "OXM_OF_UDP_SRC" => Some(Field::UdpSrc),
            "OXM_OF_UDP_DST" => Some(Field::UdpDst),
            "OXM_OF_IPV6_SRC" => Some(Field::Ipv6Src),
            "OXM_OF_IPV6_DST" => Some(Field::Ipv6Dst),
            _ => None,
        };
        alias.or_else(|| Field::all().find(|f| f.nxm_name() == name))
    }

    /// Formats a value (and a mask if it is not all-ones) the way `ovs-ofctl` writes this field.
    pub fn format_value(self, value: u128, mask: u128) -> String {
        format_value(self.syntax(), self.bits(), value, mask)
    }

    /// Parses a value with optional `/mask` in this field's syntax; returns `(value, mask)`.
    pub fn parse_value(self, text: &str) -> Result<(u128, u128), ParseError> {
        parse_value(self.syntax(), self.bits(), text)
    }
}

/// `n` low bits set.
pub fn ones(n: u32) -> u128 {
    if n >= 128 {
        u128::MAX
    } else {
        (1u128 << n) - 1
    }
}

/// Prefix length of a CIDR-style mask of `bits` width, if it is one.
fn cidr_len(mask: u128, bits: u32) -> Option<u32> {
    let inv = !mask & ones(bits);
    if inv & inv.wrapping_add(1) == 0 {
        Some(bits - (128 - inv.leading_zeros()).min(bits))
    } else {
        None
    }
}

fn fmt_mac(v: u128) -> String {
    let b = v.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// Names of the `ct_state` bits, lowest first.
pub const CT_STATE_FLAGS: [&str; 8] = ["new", "est", "rel", "rpl", "inv", "trk", "snat", "dnat"];
/// Names of the TCP flag bits, lowest first.
pub const TCP_FLAGS: [&str; 9] = ["fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr", "ns"];

/// `+a-b` style flags, lowest bit first (as OVS prints `ct_state` and `tcp_flags`); masks
/// with unnamed bits are written in hexadecimal.
fn fmt_flags(names: &[&str], value: u128, mask: u128) -> String {
    if mask >> names.len() != 0 {
        return format!("{}/{}", hex(value), hex(mask));
    }
    let mut s = String::new();
    for (bit, name) in names.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            s.push(if value & (1 << bit) != 0 { '+' } else { '-' });
            s.push_str(name);
        }
    }
    s
}

/// `0x`-prefixed hexadecimal, except that zero is `0` (as OVS prints it).
fn hex(v: u128) -> String {
    if v == 0 {
        "0".to_string()
    } else {
        format!("{v:#x}")
    }
}

/// Formats a value in a syntax; masks that are all-ones over `bits` are omitted.
pub fn format_value(syntax: Syntax, bits: u32, value: u128, mask: u128) -> String {
    let full = ones(bits);
    let masked = mask & full != full;
    match syntax {
        Syntax::Dec if !masked => format!("{value}"),
        Syntax::Dec => format!("{value:#x}/{mask:#x}"),
        Syntax::Hex | Syntax::Port if masked => format!("{}/{}", hex(value), hex(mask)),
        Syntax::Hex => hex(value),
        Syntax::Port => port_name(u32::try_from(value).unwrap_or(u32::MAX)),
        Syntax::Ipv4 => {
            let a = Ipv4Addr::from(u32::try_from(value & full).unwrap_or(0));
            match (masked, cidr_len(mask, 32)) {
                (false, _) => a.to_string(),
                (true, Some(l)) => format!("{a}/{l}"),
                (true, None) => {
                    format!(
                        "{a}/{}",
                        Ipv4Addr::from(u32::try_from(mask & full).unwrap_or(0))
                    )
                }
            }
        }
        Syntax::Ipv6 => {
            let a = Ipv6Addr::from(value);
            match (masked, cidr_len(mask, 128)) {
                (false, _) => a.to_string(),
                (true, Some(l)) => format!("{a}/{l}"),
                (true, None) => format!("{a}/{}", Ipv6Addr::from(mask)),
            }
        }
        Syntax::Mac if masked => format!("{}/{}", fmt_mac(value), fmt_mac(mask)),
        Syntax::Mac => fmt_mac(value),
        Syntax::CtState => fmt_flags(&CT_STATE_FLAGS, value, mask),
        Syntax::TcpFlags => fmt_flags(&TCP_FLAGS, value, mask),
    }
}

/// Parses an unsigned integer in decimal or `0x` hexadecimal.
pub fn parse_int(s: &str) -> Result<u128, ParseError> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u128::from_str_radix(h, 16)
    } else {
        s.parse::<u128>()
    };
    r.map_err(|_| ParseError::new("bad integer", s))
}

fn parse_mac(s: &str) -> Result<u128, ParseError> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(ParseError::new("bad Ethernet address", s));
    }
    parts.iter().try_fold(0u128, |acc, p| {
        u8::from_str_radix(p, 16)
            .map(|b| (acc << 8) | u128::from(b))
            .map_err(|_| ParseError::new("bad Ethernet address", s))
    })
}

fn parse_flags(names: &[&str], s: &str) -> Result<(u128, u128), ParseError> {
    let (mut v, mut m) = (0u128, 0u128);
    let mut rest = s;
    while !rest.is_empty() {
        let set = match rest.as_bytes()[0] {
            b'+' => true,
            b'-' => false,
            _ => return Err(ParseError::new("flags must start with + or -", s)),
        };
        rest = &rest[1..];
        let end = rest.find(['+', '-']).unwrap_or(rest.len());
        let name = &rest[..end];
        let bit = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ParseError::new("unknown flag", name))?;
        m |= 1 << bit;
        if set {
            v |= 1 << bit;
        }
        rest = &rest[end..];
    }
    Ok((v, m))
}

/// Parses `value[/mask]` in a syntax; returns `(value, mask)` with the mask all-ones if absent.
pub fn parse_value(syntax: Syntax, bits: u32, text: &str) -> Result<(u128, u128), ParseError> {
    let full = ones(bits);
    let (vs, ms) = match text.split_once('/') {
        Some((v, m)) => (v, Some(m)),
        None => (text, None),
    };
    let check = |v: u128| {
        if v & !full != 0 {
            Err(ParseError::new("value too wide for field", text))
        } else {
            Ok(v)
        }
    };
    match syntax {
        Syntax::Dec | Syntax::Hex | Syntax::Port => {
            let v = if syntax == Syntax::Port {
                parse_port(vs)?.into()
            } else {
                parse_int(vs)?
            };
            let m = ms.map(parse_int).transpose()?.unwrap_or(full);
            Ok((check(v)?, check(m)?))
        }
        Syntax::Ipv4 => {
            let a: Ipv4Addr = vs
                .parse()
                .map_err(|_| ParseError::new("bad IPv4 address", text))?;
            let m = match ms {
                None => full,
                Some(m) if m.contains('.') => u128::from(u32::from(
                    m.parse::<Ipv4Addr>()
                        .map_err(|_| ParseError::new("bad IPv4 mask", text))?,
                )),
                Some(m) => prefix_mask(m, 32, text)?,
            };
            Ok((u128::from(u32::from(a)), m))
        }
        Syntax::Ipv6 => {
            let a: Ipv6Addr = vs
                .parse()
                .map_err(|_| ParseError::new("bad IPv6 address", text))?;
            let m = match ms {
                None => full,
                Some(m) if m.contains(':') => u128::from(
                    m.parse::<Ipv6Addr>()
                        .map_err(|_| ParseError::new("bad IPv6 mask", text))?,
                ),
                Some(m) => prefix_mask(m, 128, text)?,
            };
            Ok((u128::from(a), m))
        }
        Syntax::Mac => Ok((
            parse_mac(vs)?,
            ms.map(parse_mac).transpose()?.unwrap_or(full),
        )),
        Syntax::CtState | Syntax::TcpFlags if vs.starts_with(['+', '-']) => {
            let names: &[&str] = if syntax == Syntax::CtState {
                &CT_STATE_FLAGS
            } else {
                &TCP_FLAGS
            };
            parse_flags(names, text)
        }
        Syntax::CtState | Syntax::TcpFlags => {
            let v = parse_int(vs)?;
            let m = ms.map(parse_int).transpose()?.unwrap_or(full);
            Ok((check(v)?, check(m)?))
        }
    }
}

fn prefix_mask(m: &str, bits: u32, text: &str) -> Result<u128, ParseError> {
    let l: u32 = m
        .parse()
        .map_err(|_| ParseError::new("bad prefix length", text))?;
    if l > bits {
        return Err(ParseError::new("prefix too long", text));
    }
    Ok(ones(bits) & !ones(bits - l))
}

/// Well-known OpenFlow 1.3 port numbers.
/// The connection-tracking fields (what `ct_clear` resets).
pub const CONNTRACK: [Field; 11] = [
    Field::CtState,
    Field::CtZone,
    Field::CtMark,
    Field::CtLabel,
    Field::CtNwSrc,
    Field::CtNwDst,
    Field::CtIpv6Src,
    Field::CtIpv6Dst,
    Field::CtNwProto,
    Field::CtTpSrc,
    Field::CtTpDst,
];

pub mod port {
    /// Maximum physical port number.
    pub const MAX: u32 = 0xffff_ff00;
    /// Send back out of the input port.
    pub const IN_PORT: u32 = 0xffff_fff8;
    /// Submit to the flow table (packet-out only).
    pub const TABLE: u32 = 0xffff_fff9;
    /// Normal L2/L3 processing.
    pub const NORMAL: u32 = 0xffff_fffa;
    /// Flood.
    pub const FLOOD: u32 = 0xffff_fffb;
    /// All ports but the input port.
    pub const ALL: u32 = 0xffff_fffc;
    /// To the controller.
    pub const CONTROLLER: u32 = 0xffff_fffd;
    /// The local (bridge) port.
    pub const LOCAL: u32 = 0xffff_fffe;
    /// No port / any port.
    pub const ANY: u32 = 0xffff_ffff;
}

const PORT_NAMES: [(u32, &str); 8] = [
    (port::IN_PORT, "IN_PORT"),
    (port::TABLE, "TABLE"),
    (port::NORMAL, "NORMAL"),
    (port::FLOOD, "FLOOD"),
    (port::ALL, "ALL"),
    (port::CONTROLLER, "CONTROLLER"),
    (port::LOCAL, "LOCAL"),
    (port::ANY, "ANY"),
];

/// A port number as OVS prints it (`5`, `LOCAL`, `IN_PORT`, …).
pub fn port_name(p: u32) -> String {
    PORT_NAMES
        .iter()
        .find(|(n, _)| *n == p)
        .map_or_else(|| p.to_string(), |(_, s)| (*s).to_string())
}

/// Parses a port number or name (case-insensitive names, `NONE` = `ANY`).
pub fn parse_port(s: &str) -> Result<u32, ParseError> {
    let up = s.to_ascii_uppercase();
    if up == "NONE" {
        return Ok(port::ANY);
    }
    if let Some((n, _)) = PORT_NAMES.iter().find(|(_, name)| *name == up) {
        return Ok(*n);
    }
    u32::try_from(parse_int(s)?).map_err(|_| ParseError::new("port number too large", s))
}

/// A name for logs: the field's OVS name.
impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_like_ovs_and_parse_back() {
        let cases: [(Field, &str); 10] = [
            (Field::Ipv4Src, "10.0.0.0/8"),
            (Field::Ipv4Dst, "1.0.3.0/255.0.255.0"),
            (Field::Ipv6Src, "2001:db8::/64"),
            (Field::EthDst, "01:00:00:00:00:00/01:00:00:00:00:00"),
            (Field::Reg(3), "0x10/0xf0"),
            (Field::Reg(3), "0"),
            (Field::TcpDst, "0x10/0xfff0"),
            (Field::CtState, "-new+est+trk"),
            (Field::TcpFlags, "+syn-ack"),
            (Field::InPort, "LOCAL"),
        ];
        for (f, text) in cases {
            let (v, m) = f.parse_value(text).unwrap();
            assert_eq!(f.format_value(v, m), text, "{f}");
        }
    }

    #[test]
    fn every_field_has_a_unique_header_and_names() {
        let all: Vec<Field> = Field::all().collect();
        for f in &all {
            let h = f.header();
            let class = (h >> 16) as u16;
            let code = ((h >> 9) & 0x7f) as u8;
            assert_eq!(Field::from_class_code(class, code), Some(*f), "{f}");
            assert_eq!(Field::from_name(f.name()), Some(*f));
            assert_eq!(Field::from_nxm_name(f.nxm_name()), Some(*f));
            assert!(f.bits() as usize <= 8 * f.bytes());
        }
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(Field::Ipv4Src.parse_value("10.0.0.300").is_err());
        assert!(Field::Reg(0).parse_value("0x1ffffffff").is_err());
        assert!(Field::CtState.parse_value("+bogus").is_err());
        assert!(Field::Ipv6Src.parse_value("::1/129").is_err());
    }
}
