//! Neighbour solicitations and advertisements (RFC 4861 sections 4.3, 4.4, 7): the agent
//! answers solicitations for the addresses it knows (ports' fixed IPs, router interfaces) with
//! an advertisement carrying the owner's MAC, since OpenFlow actions cannot turn a
//! solicitation's option into an advertisement's.

use std::net::Ipv6Addr;

use crate::frame::{Ipv6Framing, build_icmpv6};
use crate::options::{self, SOURCE_LINK_LAYER, TARGET_LINK_LAYER};
use crate::{ALL_NODES, ND_HOP_LIMIT, NdpError, multicast_mac, parse_nd, solicited_node};

pub const NEIGHBOR_SOLICITATION: u8 = 135;
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Type, code, checksum, reserved, target.
const MIN_LEN: usize = 24;
const FLAG_ROUTER: u32 = 0x8000_0000;
const FLAG_SOLICITED: u32 = 0x4000_0000;
const FLAG_OVERRIDE: u32 = 0x2000_0000;

/// A valid neighbour solicitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborSolicitation {
    /// Ethernet source of the frame (the solicitor's MAC).
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    /// The solicitor's address; unspecified for duplicate address detection.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address whose MAC is asked for.
    pub target: Ipv6Addr,
    /// The source link-layer address option.
    pub source_mac: Option<[u8; 6]>,
}

/// A neighbour solicitation or advertisement: the packet, its target and its options.
type Neighbor<'a> = (crate::Ipv6Packet<'a>, Ipv6Addr, Vec<(u8, &'a [u8])>);

/// A validated neighbour solicitation or advertisement (`kind`, named `what` in errors), its
/// target never multicast.
fn parse_neighbor<'a>(
    frame: &'a [u8],
    kind: u8,
    what: &'static str,
) -> Result<Neighbor<'a>, NdpError> {
    let packet = parse_nd(frame, kind, MIN_LEN, what)?;
    let message = packet.payload;
    let mut target = [0; 16];
    target.copy_from_slice(&message[8..24]);
    let target = Ipv6Addr::from(target);
    if target.is_multicast() {
        return Err(NdpError::MulticastTarget(target));
    }
    let opts = options::parse(&message[MIN_LEN..])?;
    Ok((packet, target, opts))
}

/// Parses and validates (RFC 4861 section 7.1.1) a neighbour solicitation frame. Never panics.
pub fn parse_neighbor_solicitation(frame: &[u8]) -> Result<NeighborSolicitation, NdpError> {
    let (packet, target, opts) =
        parse_neighbor(frame, NEIGHBOR_SOLICITATION, "neighbour solicitation")?;
    let source_mac = options::link_layer(&opts, SOURCE_LINK_LAYER)?;
    if packet.src.is_unspecified() {
        if packet.dst != solicited_node(target) {
            return Err(NdpError::UnspecifiedNotToSolicitedNode(packet.dst));
        }
        if source_mac.is_some() {
            return Err(NdpError::LinkLayerFromUnspecified);
        }
    }
    Ok(NeighborSolicitation {
        eth_src: packet.eth_src,
        vlan_tci: packet.vlan_tci,
        src: packet.src,
        dst: packet.dst,
        target,
        source_mac,
    })
}

/// A valid neighbour advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighborAdvertisement {
    /// The address advertised.
    pub target: Ipv6Addr,
    /// The target link-layer address option.
    pub target_mac: Option<[u8; 6]>,
    /// Its destination (the solicitor's address, or all nodes).
    pub dst: Ipv6Addr,
}

/// Parses and validates (RFC 4861 section 7.1.2) a neighbour advertisement frame. Never panics.
pub fn parse_neighbor_advertisement(frame: &[u8]) -> Result<NeighborAdvertisement, NdpError> {
    let (packet, target, opts) =
        parse_neighbor(frame, NEIGHBOR_ADVERTISEMENT, "neighbour advertisement")?;
    Ok(NeighborAdvertisement {
        target,
        target_mac: options::link_layer(&opts, TARGET_LINK_LAYER)?,
        dst: packet.dst,
    })
}

/// A neighbour solicitation from `src` (at `mac`) for `target`, to the target's solicited-node
/// group, with the source link-layer address option (RFC 4861 section 7.2.2).
pub fn neighbor_solicitation(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut message = Vec::with_capacity(MIN_LEN + 8);
    message.extend_from_slice(&[NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]);
    message.extend_from_slice(&target.octets());
    options::put_link_layer(&mut message, SOURCE_LINK_LAYER, mac);
    let group = solicited_node(target);
    let framing = Ipv6Framing {
        eth_dst: multicast_mac(group),
        eth_src: mac,
        vlan_tci: None,
        src,
        dst: group,
        hop_limit: ND_HOP_LIMIT,
    };
    build_icmpv6(&framing, message)
}

/// The advertisement answering `ns` on behalf of the owner of its target, whose MAC is
/// `target_mac`: from the target address and `target_mac`, unicast to the solicitor (its
/// Ethernet source and address), tagged like the solicitation, with the Solicited and Override
/// flags, the Router flag when `router`, and the target link-layer address option.
///
/// `None` for duplicate address detection (a solicitation from the unspecified address): the
/// owner is probing its own address, and an answer would make it give the address up.
pub fn neighbor_advertisement(
    ns: &NeighborSolicitation,
    target_mac: [u8; 6],
    router: bool,
) -> Option<Vec<u8>> {
    if ns.src.is_unspecified() {
        return None;
    }
    let flags = FLAG_SOLICITED | FLAG_OVERRIDE | if router { FLAG_ROUTER } else { 0 };
    let mut message = Vec::with_capacity(MIN_LEN + 8);
    message.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    message.extend_from_slice(&flags.to_be_bytes());
    message.extend_from_slice(&ns.target.octets());
    options::put_link_layer(&mut message, TARGET_LINK_LAYER, target_mac);
    let framing = Ipv6Framing {
        eth_dst: ns.eth_src,
        eth_src: target_mac,
        vlan_tci: ns.vlan_tci,
        src: ns.target,
        dst: ns.src,
        hop_limit: ND_HOP_LIMIT,
    };
    Some(build_icmpv6(&framing, message))
}

/// An unsolicited neighbour advertisement of `target` at `mac` to all nodes (RFC 4861 section
/// 7.2.6), with the override flag so that neighbours replace the link-layer address they cached
/// (and the router flag for a router's address).
pub fn unsolicited_advertisement(target: Ipv6Addr, mac: [u8; 6], router: bool) -> Vec<u8> {
    let flags = FLAG_OVERRIDE | if router { FLAG_ROUTER } else { 0 };
    let mut message = Vec::with_capacity(MIN_LEN + 8);
    message.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]);
    message.extend_from_slice(&flags.to_be_bytes());
    message.extend_from_slice(&target.octets());
    options::put_link_layer(&mut message, TARGET_LINK_LAYER, mac);
    let framing = Ipv6Framing {
        eth_dst: multicast_mac(ALL_NODES),
        eth_src: mac,
        vlan_tci: None,
        src: target,
        dst: ALL_NODES,
        hop_limit: ND_HOP_LIMIT,
    };
    build_icmpv6(&framing, message)
}
