//! IPv6 neighbour discovery (RFC 4861) for an SDN agent that answers in software (pure, no I/O).
//!
//! The switch hands the agent whole Ethernet frames (packet-in) and sends back whole frames
//! (packet-out), so everything here works on frames: Ethernet II with at most one 802.1Q tag,
//! IPv6 (no extension headers), ICMPv6.
//!
//! * Neighbour solicitations: [`parse_neighbor_solicitation`] and
//!   [`neighbor_advertisement`] (the answer on behalf of a known address, with the Router flag
//!   when that address is a router's); asking for a neighbour ([`neighbor_solicitation`]) and
//!   reading the answer ([`parse_neighbor_advertisement`]).
//! * Router solicitations and advertisements: [`parse_router_solicitation`] and
//!   [`RouterAdvertisement::frame`]; [`neutron`] holds what Neutron's radvd configuration
//!   advertises per subnet `ipv6_ra_mode`, and its timers.
//! * Addresses derived from MACs ([`link_local`], [`eui64`], [`solicited_node`],
//!   [`multicast_mac`]), the one Internet checksum helper of the IPv6 code ([`checksum`]) and
//!   IPv6 framing ([`parse_ipv6`], [`build_ipv6`]), which the DHCPv6 crate uses too.
//!
//! Received messages are validated as RFC 4861 sections 6.1.1 and 7.1.1 require: hop limit
//! 255 (never forwarded), code 0, a correct ICMPv6 checksum, the minimum length, options of
//! nonzero length that stay inside the message.

mod addr;
pub mod checksum;
mod frame;
mod neighbor;
pub mod neutron;
mod options;
mod router;

use std::net::Ipv6Addr;

pub use addr::{
    ALL_NODES, ALL_ROUTERS, eui64, interface_id, link_local, multicast_mac, solicited_node,
};
pub use frame::{
    ETHERTYPE_IPV6, FrameError, Ipv6Framing, Ipv6Packet, NEXT_HEADER_ICMPV6, NEXT_HEADER_UDP,
    build_icmpv6, build_ipv6, parse_ipv6,
};
pub use ipnet::Ipv6Net;
pub use neighbor::{
    NEIGHBOR_ADVERTISEMENT, NEIGHBOR_SOLICITATION, NeighborAdvertisement, NeighborSolicitation,
    neighbor_advertisement, neighbor_solicitation, parse_neighbor_advertisement,
    parse_neighbor_solicitation, unsolicited_advertisement,
};
pub use router::{
    PrefixInformation, ROUTER_ADVERTISEMENT, ROUTER_SOLICITATION, RecursiveDnsServers,
    RouterAdvertisement, RouterSolicitation, parse_router_solicitation,
};

/// The hop limit of every neighbour discovery message; a received one with another value was
/// forwarded by a router and is invalid.
pub const ND_HOP_LIMIT: u8 = 255;

/// Why a frame is not a valid neighbour discovery message of the expected type.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NdpError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("not ICMPv6 (next header {0}; extension headers are not followed)")]
    NotIcmpv6(u8),
    #[error("ICMPv6 type {got}, expected {expected}")]
    WrongType { expected: u8, got: u8 },
    #[error("hop limit {0}, not 255 (the message was forwarded)")]
    HopLimit(u8),
    #[error("ICMPv6 code {0}, expected 0")]
    BadCode(u8),
    #[error("{0} too short")]
    TooShort(&'static str),
    #[error("ICMPv6 checksum does not verify")]
    BadChecksum,
    #[error("option of type {0} has length 0")]
    ZeroLengthOption(u8),
    #[error("option of type {0} runs past the end of the message")]
    TruncatedOption(u8),
    #[error("link-layer address option of {0} bytes, not 8 (Ethernet)")]
    BadLinkLayerOption(usize),
    #[error("target {0} is a multicast address")]
    MulticastTarget(Ipv6Addr),
    #[error("source link-layer address option in a message from the unspecified address")]
    LinkLayerFromUnspecified,
    #[error("message from the unspecified address not sent to a solicited-node group ({0})")]
    UnspecifiedNotToSolicitedNode(Ipv6Addr),
}

/// The IPv6 packet of `frame` if it holds an ICMPv6 message of type `kind`, at least `min_len`
/// bytes long, that passes the checks common to all neighbour discovery messages.
fn parse_nd<'a>(
    frame: &'a [u8],
    kind: u8,
    min_len: usize,
    what: &'static str,
) -> Result<Ipv6Packet<'a>, NdpError> {
    let packet = parse_ipv6(frame)?;
    if packet.next_header != NEXT_HEADER_ICMPV6 {
        return Err(NdpError::NotIcmpv6(packet.next_header));
    }
    let message = packet.payload;
    match message.first() {
        None => return Err(NdpError::TooShort(what)),
        Some(&got) if got != kind => {
            return Err(NdpError::WrongType {
                expected: kind,
                got,
            });
        }
        Some(_) => {}
    }
    if packet.hop_limit != ND_HOP_LIMIT {
        return Err(NdpError::HopLimit(packet.hop_limit));
    }
    if message.len() < min_len {
        return Err(NdpError::TooShort(what));
    }
    if message[1] != 0 {
        return Err(NdpError::BadCode(message[1]));
    }
    if checksum::upper_layer_checksum(&packet.src, &packet.dst, NEXT_HEADER_ICMPV6, message) != 0 {
        return Err(NdpError::BadChecksum);
    }
    Ok(packet)
}
