//! Packets the pipeline sends to the agent, dispatched through one table of handlers by the reason
//! the flow's `controller` action carries as userdata ([`pipeline::apps::Punt`]). Each handler
//! builds its answer in software from the local topology and returns the frame to send back out of
//! the port the packet came in on; answers are rate-limited per port. Nothing here waits on the
//! network.

use std::net::IpAddr;

use openflow::message::PacketIn2;
use pipeline::Pipeline;
use pipeline::apps::Punt;
use pipeline::cookie::Owner;
use pipeline::model::{Port, link_local, mac_octets};

use crate::limit::RateLimit;
use crate::{dhcp_server, dhcpv6_server, icmp, nd, ra};

/// Answers each port may get per second, by kind.
const ND_ANSWERS_PER_SECOND: u32 = 50;
const DHCP_ANSWERS_PER_SECOND: u32 = 20;
const ICMP_ERRORS_PER_SECOND: u32 = 100;

/// One packet sent to the agent.
pub struct Punted<'a> {
    pub reason: Punt,
    /// The cookie of the flow that sent it (names the port, router or network it is for).
    pub cookie: u64,
    pub in_port: u32,
    pub frame: &'a [u8],
}

impl<'a> Punted<'a> {
    /// Reads a packet-in2; `None` if it carries no reason of ours or no in_port.
    pub fn from_packet_in(pi: &'a PacketIn2) -> Option<Self> {
        Some(Self {
            reason: Punt::from_userdata(pi.userdata.as_deref()?)?,
            cookie: pi.cookie,
            in_port: pi
                .metadata
                .exact(openflow::Field::InPort)
                .and_then(|p| u32::try_from(p).ok())?,
            frame: &pi.packet,
        })
    }
}

type Handler = fn(&mut Handlers, &Pipeline, &Punted<'_>) -> Option<Vec<u8>>;

/// The handler of each reason.
const HANDLERS: [(Punt, Handler); 5] = [
    (Punt::NeighbourSolicitation, Handlers::solicitation),
    (Punt::Dhcp, Handlers::dhcp),
    (Punt::RouterSolicitation, Handlers::router_solicitation),
    (Punt::Dhcpv6, Handlers::dhcpv6),
    (Punt::TtlExceeded, Handlers::ttl_exceeded),
];

/// The MAC of the router interface that advertises on `port`'s network: the first (in id order)
/// that is up and has an IPv6 address.
pub fn advertising_router(pipeline: &Pipeline, port: &Port) -> Option<[u8; 6]> {
    pipeline
        .topology()
        .interfaces_on(&port.network_id)
        .find(|p| p.admin_up && p.ips.iter().any(IpAddr::is_ipv6))
        .map(|p| mac_octets(p.mac))
}

/// The handlers' state: per-port rate limits.
pub struct Handlers {
    nd: RateLimit,
    dhcp: RateLimit,
    icmp: RateLimit,
}

impl Default for Handlers {
    fn default() -> Self {
        Self {
            nd: RateLimit::new(ND_ANSWERS_PER_SECOND),
            dhcp: RateLimit::new(DHCP_ANSWERS_PER_SECOND),
            icmp: RateLimit::new(ICMP_ERRORS_PER_SECOND),
        }
    }
}

impl Handlers {
    /// The answer to a punted packet, to send out of its in_port, if it gets one.
    pub fn answer(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let (_, handler) = HANDLERS.iter().find(|(r, _)| *r == punted.reason)?;
        handler(self, pipeline, punted)
    }

    /// The local port a packet came in on.
    fn sender<'p>(pipeline: &'p Pipeline, punted: &Punted<'_>) -> Option<&'p Port> {
        let topo = pipeline.topology();
        topo.local
            .vif_at(punted.in_port)
            .and_then(|id| topo.ports.get(id))
    }

    /// A neighbour solicitation for an address of the port (or router interface) the cookie
    /// names; a router interface also answers for its link-local address.
    fn solicitation(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let port = pipeline.port_of_cookie(punted.cookie)?;
        let (target, _, _) = nd::solicitation(punted.frame)?;
        let router = port.router().is_some();
        let ours =
            port.ips.contains(&IpAddr::V6(target)) || (router && target == link_local(port.mac));
        if !ours || !self.nd.allow(&port.id) {
            return None;
        }
        nd::advertisement(punted.frame, mac_octets(port.mac), router)
    }

    /// A DHCP request from the port it came in on (port security has checked its MAC).
    fn dhcp(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let port = Self::sender(pipeline, punted)?;
        if !self.dhcp.allow(&port.id) {
            return None;
        }
        dhcp_server::reply(pipeline.topology(), port, punted.frame)
    }

    /// A router solicitation from the port it came in on, answered for its network's router.
    fn router_solicitation(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let port = Self::sender(pipeline, punted)?;
        let router = advertising_router(pipeline, port)?;
        if !self.nd.allow(&port.id) {
            return None;
        }
        ra::answer(pipeline.topology(), port, router, punted.frame)
    }

    /// A DHCPv6 request from the port it came in on.
    fn dhcpv6(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let port = Self::sender(pipeline, punted)?;
        if !self.dhcp.allow(&port.id) {
            return None;
        }
        dhcpv6_server::reply(pipeline.topology(), port, punted.frame)
    }

    /// A routed packet whose TTL ran out: "time exceeded" from the interface the sender used
    /// (the frame's destination MAC), from its address in the sender's subnet if it has one.
    fn ttl_exceeded(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Vec<u8>> {
        let Owner::Router(router) = pipeline.owner_of_cookie(punted.cookie)? else {
            return None;
        };
        let sender = Self::sender(pipeline, punted)?;
        let (_, sender_ip) = icmp::sender(punted.frame)?;
        let gateway_mac = icmp::destination_mac(punted.frame)?;
        let topo = pipeline.topology();
        let rif = topo
            .interfaces_on(&sender.network_id)
            .find(|p| p.router() == Some(router) && mac_octets(p.mac) == gateway_mac)?;
        let same_family = |ip: &&IpAddr| ip.is_ipv4() == sender_ip.is_ipv4();
        let on_link = rif.ips.iter().filter(same_family).find(|ip| {
            topo.subnets_on(&rif.network_id)
                .any(|s| s.cidr.contains(*ip) && s.cidr.contains(&sender_ip))
        });
        let from = on_link.or_else(|| rif.ips.iter().find(same_family))?;
        if !self.icmp.allow(&sender.id) {
            return None;
        }
        icmp::time_exceeded(punted.frame, gateway_mac, *from)
    }
}
