//! Router solicitations and advertisements (RFC 4861 sections 4.1, 4.2, 6), with the MTU,
//! prefix information and recursive DNS server (RFC 8106) options.

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

use crate::frame::{Ipv6Framing, build_icmpv6};
use crate::options::{self, MTU, PREFIX_INFORMATION, RDNSS, SOURCE_LINK_LAYER};
use crate::{ALL_NODES, ND_HOP_LIMIT, NdpError, link_local, multicast_mac, parse_nd};

pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// Type, code, checksum, reserved.
const RS_MIN_LEN: usize = 8;
const FLAG_MANAGED: u8 = 0x80;
const FLAG_OTHER: u8 = 0x40;
const PREFIX_ON_LINK: u8 = 0x80;
const PREFIX_AUTONOMOUS: u8 = 0x40;

/// A valid router solicitation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSolicitation {
    /// Ethernet source of the frame (the solicitor's MAC).
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    /// The solicitor's address; unspecified when it has none yet.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The source link-layer address option.
    pub source_mac: Option<[u8; 6]>,
}

/// Parses and validates (RFC 4861 section 6.1.1) a router solicitation frame. Never panics.
pub fn parse_router_solicitation(frame: &[u8]) -> Result<RouterSolicitation, NdpError> {
    let packet = parse_nd(
        frame,
        ROUTER_SOLICITATION,
        RS_MIN_LEN,
        "router solicitation",
    )?;
    let opts = options::parse(&packet.payload[RS_MIN_LEN..])?;
    let source_mac = options::link_layer(&opts, SOURCE_LINK_LAYER)?;
    if packet.src.is_unspecified() && source_mac.is_some() {
        return Err(NdpError::LinkLayerFromUnspecified);
    }
    Ok(RouterSolicitation {
        eth_src: packet.eth_src,
        vlan_tci: packet.vlan_tci,
        src: packet.src,
        dst: packet.dst,
        source_mac,
    })
}

/// One prefix information option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixInformation {
    /// Sent as its network address and length.
    pub prefix: Ipv6Net,
    /// L: the prefix is on-link.
    pub on_link: bool,
    /// A: hosts may form addresses in it (SLAAC).
    pub autonomous: bool,
    pub valid_lifetime: u32,
    pub preferred_lifetime: u32,
}

/// A recursive DNS server option (RFC 8106).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecursiveDnsServers {
    pub lifetime: u32,
    pub servers: Vec<Ipv6Addr>,
}

/// The contents of a router advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAdvertisement {
    /// Hop limit hosts should use; 0 = unspecified.
    pub cur_hop_limit: u8,
    /// M: addresses are available from DHCPv6.
    pub managed: bool,
    /// O: other configuration is available from DHCPv6.
    pub other_config: bool,
    /// Seconds the sender may serve as default router; 0 = not a default router.
    pub router_lifetime: u16,
    /// Milliseconds; 0 = unspecified.
    pub reachable_time: u32,
    /// Milliseconds; 0 = unspecified.
    pub retrans_timer: u32,
    /// The MTU option.
    pub mtu: Option<u32>,
    pub prefixes: Vec<PrefixInformation>,
    /// Omitted when `None` or without servers.
    pub dns: Option<RecursiveDnsServers>,
}

impl RouterAdvertisement {
    /// The ICMPv6 message (checksum left 0): header, then the options source link-layer address
    /// (`router_mac`), MTU, one prefix information option per prefix, recursive DNS servers.
    fn message(&self, router_mac: [u8; 6]) -> Vec<u8> {
        let mut m = Vec::with_capacity(16 + 8 + 8 + 32 * self.prefixes.len() + 40);
        let mut flags = 0;
        if self.managed {
            flags |= FLAG_MANAGED;
        }
        if self.other_config {
            flags |= FLAG_OTHER;
        }
        m.extend_from_slice(&[ROUTER_ADVERTISEMENT, 0, 0, 0, self.cur_hop_limit, flags]);
        m.extend_from_slice(&self.router_lifetime.to_be_bytes());
        m.extend_from_slice(&self.reachable_time.to_be_bytes());
        m.extend_from_slice(&self.retrans_timer.to_be_bytes());
        options::put_link_layer(&mut m, SOURCE_LINK_LAYER, router_mac);
        if let Some(mtu) = self.mtu {
            m.extend_from_slice(&[MTU, 1, 0, 0]);
            m.extend_from_slice(&mtu.to_be_bytes());
        }
        for p in &self.prefixes {
            let mut flags = 0;
            if p.on_link {
                flags |= PREFIX_ON_LINK;
            }
            if p.autonomous {
                flags |= PREFIX_AUTONOMOUS;
            }
            m.extend_from_slice(&[PREFIX_INFORMATION, 4, p.prefix.prefix_len(), flags]);
            m.extend_from_slice(&p.valid_lifetime.to_be_bytes());
            m.extend_from_slice(&p.preferred_lifetime.to_be_bytes());
            m.extend_from_slice(&[0; 4]);
            m.extend_from_slice(&p.prefix.network().octets());
        }
        if let Some(dns) = self.dns.as_ref().filter(|d| !d.servers.is_empty()) {
            // An option is at most 255 units of 8 bytes: 127 servers.
            let servers = &dns.servers[..dns.servers.len().min(127)];
            m.extend_from_slice(&[RDNSS, 1 + 2 * servers.len() as u8, 0, 0]);
            m.extend_from_slice(&dns.lifetime.to_be_bytes());
            for server in servers {
                m.extend_from_slice(&server.octets());
            }
        }
        m
    }

    /// The whole frame, from the router's link-local address ([`link_local`] of `router_mac`)
    /// and `router_mac`, hop limit 255.
    ///
    /// Unsolicited (`reply_to` `None`): untagged, to all-nodes (`ff02::1`, `33:33:00:00:00:01`).
    /// In answer to a solicitation: tagged like it, unicast to the solicitor (its address and
    /// Ethernet source), or to all-nodes when it came from the unspecified address (RFC 4861
    /// section 6.2.6).
    pub fn frame(&self, router_mac: [u8; 6], reply_to: Option<&RouterSolicitation>) -> Vec<u8> {
        let (eth_dst, dst) = match reply_to {
            Some(rs) if !rs.src.is_unspecified() => (rs.eth_src, rs.src),
            _ => (multicast_mac(ALL_NODES), ALL_NODES),
        };
        let framing = Ipv6Framing {
            eth_dst,
            eth_src: router_mac,
            vlan_tci: reply_to.and_then(|rs| rs.vlan_tci),
            src: link_local(router_mac),
            dst,
            hop_limit: ND_HOP_LIMIT,
        };
        build_icmpv6(&framing, self.message(router_mac))
    }
}
