//! DHCPv6 (RFC 8415) for a distributed server running inside an SDN agent (pure, no I/O).
//!
//! The switch hands the agent a client's whole Ethernet frame; [`parse_request`] turns it into
//! a [`Request`], [`answer`] decides what a [`Server`] owning at most one binding (a port's fixed
//! address on a DHCPv6-stateful subnet; none on a DHCPv6-stateless one) replies, and
//! [`build_reply`] produces the whole reply frame (Ethernet II, IPv6 from the server's
//! link-local address to the client's, UDP 547 -> 546) for the packet-out.
//!
//! The server identifies itself with a DUID-LL of its MAC and gives the recursive DNS servers
//! (option 23) and the domain search list (option 24, RFC 3646) with every configuration;
//! a port's `extra_dhcp_opts` for IPv6 ([`ExtraOption`]) add to or override them. Relayed
//! messages, reconfiguration, authentication, temporary addresses and prefix delegation are not
//! served (IA_TA and IA_PD are answered with NoAddrsAvail, NoPrefixAvail or NoBinding).

mod extra;
mod options;
mod reply;
mod request;

use std::net::Ipv6Addr;

pub use extra::{ExtraOption, ExtraOptionError};
pub use ipnet::Ipv6Net;
pub use ndp::FrameError;
pub use reply::{answer, build_reply};
pub use request::parse_request;

/// The UDP port clients listen on.
pub const CLIENT_PORT: u16 = 546;
/// The UDP port servers listen on.
pub const SERVER_PORT: u16 = 547;

/// DHCPv6 message types (RFC 8415 section 7.3), relay messages left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Solicit,
    Advertise,
    Request,
    Confirm,
    Renew,
    Rebind,
    Reply,
    Release,
    Decline,
    Reconfigure,
    InformationRequest,
}

impl MessageType {
    /// The value of the msg-type field.
    pub fn code(self) -> u8 {
        match self {
            Self::Solicit => 1,
            Self::Advertise => 2,
            Self::Request => 3,
            Self::Confirm => 4,
            Self::Renew => 5,
            Self::Rebind => 6,
            Self::Reply => 7,
            Self::Release => 8,
            Self::Decline => 9,
            Self::Reconfigure => 10,
            Self::InformationRequest => 11,
        }
    }

    /// The message type of a msg-type value, if it is one of the eleven non-relay types.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::Solicit,
            2 => Self::Advertise,
            3 => Self::Request,
            4 => Self::Confirm,
            5 => Self::Renew,
            6 => Self::Rebind,
            7 => Self::Reply,
            8 => Self::Release,
            9 => Self::Decline,
            10 => Self::Reconfigure,
            11 => Self::InformationRequest,
            _ => return None,
        })
    }
}

/// Status codes (RFC 8415 section 21.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Success,
    UnspecFail,
    NoAddrsAvail,
    NoBinding,
    NotOnLink,
    UseMulticast,
    NoPrefixAvail,
}

impl StatusCode {
    pub fn code(self) -> u16 {
        match self {
            Self::Success => 0,
            Self::UnspecFail => 1,
            Self::NoAddrsAvail => 2,
            Self::NoBinding => 3,
            Self::NotOnLink => 4,
            Self::UseMulticast => 5,
            Self::NoPrefixAvail => 6,
        }
    }

    /// The status message sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::UnspecFail => "failure",
            Self::NoAddrsAvail => "no addresses available",
            Self::NoBinding => "no binding",
            Self::NotOnLink => "not on link",
            Self::UseMulticast => "use multicast",
            Self::NoPrefixAvail => "no prefixes available",
        }
    }
}

/// The kind of an identity association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IaKind {
    /// Non-temporary addresses (option 3).
    Na,
    /// Temporary addresses (option 4).
    Ta,
    /// Delegated prefixes (option 25).
    Pd,
}

/// An identity association in a client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ia {
    pub kind: IaKind,
    pub iaid: u32,
    /// The addresses (IAADDR options) it holds; always empty for IA_PD.
    pub addresses: Vec<Ipv6Addr>,
}

/// A client's message, from an Ethernet frame (IPv6, UDP 546 -> 547).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: MessageType,
    /// The 24-bit transaction id.
    pub transaction_id: u32,
    /// Ethernet source of the frame.
    pub eth_src: [u8; 6],
    /// The 802.1Q tag control information if the frame carried one tag; the reply is tagged
    /// the same way.
    pub vlan_tci: Option<u16>,
    /// The client's (link-local) address, where the reply goes.
    pub src: Ipv6Addr,
    /// Option 1, echoed back unmodified.
    pub client_id: Option<Vec<u8>>,
    /// Option 2.
    pub server_id: Option<Vec<u8>>,
    /// IA_NA, IA_TA and IA_PD options, in order.
    pub ias: Vec<Ia>,
    /// Option 14.
    pub rapid_commit: bool,
    /// Option 6.
    pub requested_options: Vec<u16>,
}

/// The address a server owns for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub address: Ipv6Addr,
    /// The subnet: addresses in it are on-link (Confirm).
    pub prefix: Ipv6Net,
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
}

/// What the server knows about the client's port and network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The reply's Ethernet source; also the DUID-LL and the link-local source address.
    pub mac: [u8; 6],
    /// The client's address on a stateful subnet; `None` when only configuration is served.
    pub binding: Option<Binding>,
    /// Option 23 (omitted when empty).
    pub dns: Vec<Ipv6Addr>,
    /// Option 24 (omitted when empty or when a name cannot be encoded).
    pub domain_search: Vec<String>,
    /// The port's extra options, applied in order to the configuration options: each replaces
    /// the option of its code, removes it, or adds it at the end.
    pub extra: Vec<ExtraOption>,
}

impl Server {
    /// The server's DUID: type 3 (DUID-LL), hardware type 1 (Ethernet), the MAC.
    pub fn duid(&self) -> Vec<u8> {
        let mut duid = vec![0, 3, 0, 1];
        duid.extend_from_slice(&self.mac);
        duid
    }
}

/// An address given to the client, with its lifetimes (0: stop using it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressLease {
    pub address: Ipv6Addr,
    pub preferred_lifetime: u32,
    pub valid_lifetime: u32,
}

/// An identity association in the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IaAnswer {
    pub kind: IaKind,
    pub iaid: u32,
    /// Renewal time (not sent for IA_TA).
    pub t1: u32,
    /// Rebinding time (not sent for IA_TA).
    pub t2: u32,
    pub addresses: Vec<AddressLease>,
    /// A status code inside the IA.
    pub status: Option<StatusCode>,
}

/// What the server replies, decided by [`answer`] and encoded by [`build_reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Advertise or Reply.
    pub kind: MessageType,
    /// Option 14: the Reply commits the addresses of a Solicit.
    pub rapid_commit: bool,
    /// A status code for the whole message.
    pub status: Option<StatusCode>,
    pub ias: Vec<IaAnswer>,
    /// Whether the configuration options (DNS servers, domain search list, extra options) go
    /// in.
    pub configuration: bool,
}

/// Why a frame is not a well-formed DHCPv6 client message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum Dhcpv6Error {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("not UDP (next header {0}; extension headers are not followed)")]
    NotUdp(u8),
    #[error("frame too short for the {0}")]
    TooShort(&'static str),
    #[error("not UDP 546 -> 547 (ports {src} -> {dst})")]
    WrongPorts { src: u16, dst: u16 },
    #[error("UDP length {0} does not fit the IPv6 payload")]
    BadUdpLength(usize),
    #[error("source address {0} is not a unicast address")]
    BadSource(Ipv6Addr),
    #[error("relayed message (type {0}); relays are not served")]
    Relayed(u8),
    #[error("unknown DHCPv6 message type {0}")]
    UnknownMessageType(u8),
    #[error("option {0:?} runs past the end of its message")]
    TruncatedOption(Option<u16>),
    #[error("option {code} has invalid length {len}")]
    BadOptionLength { code: u16, len: usize },
}
