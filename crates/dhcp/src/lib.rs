//! DHCPv4 for a distributed DHCP server running inside an SDN agent (pure, no I/O).
//!
//! The switch hands the agent a client's whole Ethernet frame (packet-in); [`parse_request`] turns
//! it into a [`Request`], [`answer`] decides what a server owning exactly one binding (the
//! [`Lease`] of the client's port) replies (RFC 2131 section 4.3), and [`build_reply`] produces the
//! whole reply frame (Ethernet II, IPv4, UDP 67 -> 68, BOOTREPLY) for the packet-out.
//!
//! Options follow RFC 2132, classless static routes RFC 3442, client-identifier echo RFC 6842.
//! A lease may carry a port's `extra_dhcp_opts` ([`ExtraOption`], dnsmasq names and values as
//! Neutron passes them), which add to or override what is sent.
//! Option overload (option 52) is honoured on input: options in `file` and then `sname` are read.
//! Repeated options are concatenated on input and values longer than 255 bytes are split on output
//! (RFC 3396).

mod bootp;
mod dns;
pub mod dnsmasq;
mod extra;
mod options;
mod reply;
mod request;
mod wire;

pub use dns::encode_domain_names;
pub use extra::{ExtraAction, ExtraOption, ExtraOptionError};
pub use ipnet::Ipv4Net;
pub use reply::{answer, build_reply};
pub use request::parse_request;
pub use std::net::Ipv4Addr;

/// The broadcast bit of the BOOTP `flags` field.
pub const BROADCAST_FLAG: u16 = 0x8000;

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Discover,
    Offer,
    Request,
    Decline,
    Ack,
    Nak,
    Release,
    Inform,
}

impl MessageType {
    /// The value carried in option 53 (RFC 2132 section 9.6).
    pub fn code(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }

    /// The message type for an option 53 value, if it is one of the eight RFC 2132 types.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// A client's message, from an Ethernet frame (IPv4, UDP 68 -> 67, BOOTREQUEST with the magic cookie).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    pub xid: u32,
    /// Bit 0x8000 ([`BROADCAST_FLAG`]) = broadcast.
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// Client hardware address (htype 1, hlen 6 only).
    pub chaddr: [u8; 6],
    /// Ethernet source of the frame.
    pub eth_src: [u8; 6],
    /// The 802.1Q tag control information (PCP, DEI, VLAN id) if the frame carried one tag; the
    /// reply is tagged the same way.
    pub vlan_tci: Option<u16>,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 61, echoed back unmodified (RFC 6842).
    pub client_id: Option<Vec<u8>>,
    /// The request carries option 175 (iPXE's encapsulated options): dnsmasq's `ipxe` tag,
    /// which extra options can be conditional on.
    pub ipxe: bool,
}

/// What the server knows about the client's port and subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: Ipv4Addr,
    /// The subnet (mask option 1, broadcast option 28).
    pub subnet: Ipv4Net,
    /// Option 3, and the 0.0.0.0/0 route inside option 121 when routes are sent (RFC 3442 makes
    /// clients ignore option 3 when option 121 is present).
    pub router: Option<Ipv4Addr>,
    /// Option 6 (omitted when empty).
    pub dns: Vec<Ipv4Addr>,
    /// Option 121 classless static routes (RFC 3442), omitted when empty.
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 51; also T1 (option 58) = 50 % and T2 (option 59) = 87.5 % of it.
    pub lease_secs: u32,
    /// Option 12 (truncated to 255 bytes; omitted when empty).
    pub hostname: Option<String>,
    /// Option 15 (truncated to 255 bytes; omitted when empty).
    pub domain: Option<String>,
    /// Option 54 and the reply's IPv4 source.
    pub server_ip: Ipv4Addr,
    /// The reply's Ethernet source.
    pub server_mac: [u8; 6],
    /// The port's extra options, applied in order after the ones above are computed (those
    /// conditional on the `ipxe` tag after the unconditional ones): each replaces the option
    /// of its code, removes it, or adds it at the end. Not applied to a NAK; options 51, 58
    /// and 59 are left out of an INFORM's ACK whatever they say.
    pub extra: Vec<ExtraOption>,
}

/// Why a frame is not a well-formed DHCP client message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DhcpError {
    #[error("frame too short for the {0}")]
    TooShort(&'static str),
    #[error("not IPv4 (ethertype {0:#06x})")]
    NotIpv4(u16),
    #[error("malformed IPv4 header: {0}")]
    BadIpHeader(&'static str),
    #[error("IPv4 header checksum does not verify")]
    BadIpChecksum,
    #[error("IPv4 fragment (fragmented DHCP messages are not reassembled)")]
    Fragmented,
    #[error("not UDP (IP protocol {0})")]
    NotUdp(u8),
    #[error("not UDP 68 -> 67 (ports {src} -> {dst})")]
    WrongPorts { src: u16, dst: u16 },
    #[error("UDP length {0} does not fit the IPv4 payload")]
    BadUdpLength(usize),
    #[error("not a BOOTREQUEST (op {0})")]
    NotBootRequest(u8),
    #[error("unsupported hardware address (htype {htype}, hlen {hlen}; only Ethernet 1/6)")]
    UnsupportedHardware { htype: u8, hlen: u8 },
    #[error("bad magic cookie {0:02x?}")]
    BadMagicCookie([u8; 4]),
    #[error("option {0} runs past the end of its field")]
    TruncatedOption(u8),
    #[error("option {code} has invalid length {len}")]
    BadOptionLength { code: u8, len: usize },
    #[error("option overload (52) has invalid value {0}")]
    BadOverload(u8),
    #[error("no DHCP message type (option 53)")]
    NoMessageType,
    #[error("unknown DHCP message type {0}")]
    UnknownMessageType(u8),
}
