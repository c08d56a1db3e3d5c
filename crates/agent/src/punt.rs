//! Packets the pipeline sends to the agent, dispatched through one table of handlers by the reason
//! the flow's `controller` action carries as userdata ([`pipeline::apps::Punt`]). Each handler
//! builds its answer in software from the local topology and returns the frame to send and the
//! port to send it from (the port the packet came in on, or, for a neighbour to resolve on an
//! external network, that network's patch port); answers are rate-limited. Nothing here waits on
//! the network.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use openflow::text::set_field;
use openflow::{Action, Field};

use openflow::message::PacketIn2;
use pipeline::Pipeline;
use pipeline::apps::Punt;
use pipeline::cookie::Owner;
use pipeline::model::{Port, link_local, mac_octets};

use crate::limit::RateLimit;
use crate::{dhcp_server, dhcpv6_server, icmp, nd, ra, reject};

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
    /// `metadata` when it was sent (the network or router it was in).
    pub metadata: Option<u64>,
    /// The next hop of a packet routed to an external network (`reg2` for IPv4, `reg8`..`reg11`
    /// for IPv6).
    pub next_hop: Option<IpAddr>,
    pub frame: &'a [u8],
}

/// What the agent sends in answer: frames, each with the OpenFlow actions that send it (out of a
/// port, or back into the pipeline).
pub struct Reply(pub Vec<(Vec<Action>, Vec<u8>)>);

impl Reply {
    /// One frame out of `port`.
    fn out(port: u32, frame: Vec<u8>) -> Reply {
        Reply(vec![(vec![Action::Output { port, max_len: 0 }], frame)])
    }
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
            metadata: pi
                .metadata
                .exact(openflow::Field::Metadata)
                .and_then(|m| u64::try_from(m).ok()),
            next_hop: next_hop(pi),
            frame: &pi.packet,
        })
    }
}

/// The next hop a packet-in carries: in the IPv6 next-hop registers for an IPv6 frame (a
/// register that is zero is left out of the packet-in), in `reg2` for others.
fn next_hop(pi: &PacketIn2) -> Option<IpAddr> {
    let reg = |n: u8| {
        pi.metadata
            .exact(openflow::Field::Reg(n))
            .and_then(|r| u32::try_from(r).ok())
    };
    if pi.packet.get(12..14) == Some(&[0x86, 0xdd][..]) {
        let words = pipeline::tables::REG_NEXT_HOP6.map(|n| reg(n).unwrap_or(0));
        let ip = pipeline::tables::next_hop6_from_words(words);
        return (!ip.is_unspecified()).then_some(IpAddr::V6(ip));
    }
    reg(pipeline::tables::REG_NEXT_HOP).map(|r| IpAddr::V4(Ipv4Addr::from(r)))
}

type Handler = fn(&mut Handlers, &Pipeline, &Punted<'_>) -> Option<Reply>;

/// The handler of each reason.
const HANDLERS: &[(Punt, Handler)] = &[
    (Punt::NeighbourSolicitation, Handlers::solicitation),
    (Punt::Dhcp, Handlers::dhcp),
    (Punt::RouterSolicitation, Handlers::router_solicitation),
    (Punt::Dhcpv6, Handlers::dhcpv6),
    (Punt::TtlExceeded, Handlers::ttl_exceeded),
    (Punt::ResolveNeighbour, Handlers::resolve),
    (Punt::NeighbourLearned, Handlers::learned),
    (Punt::Reject, Handlers::reject),
    (Punt::HealthReply, Handlers::health_reply),
];

/// Packets kept while their next hop is being resolved: per next hop, in all, and how long.
const WAITING_PER_HOP: usize = 8;
const WAITING: usize = 256;
const WAIT_AT_MOST: std::time::Duration = std::time::Duration::from_secs(3);

/// ARP requests for next hops on external networks, per next hop and second.
const RESOLUTIONS_PER_SECOND: u32 = 5;

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
    resolve: RateLimit,
    /// Packets waiting for their next hop's MAC, by (network `metadata`, next hop), as Linux
    /// queues packets on an incomplete neighbour entry: sent on when the answer arrives.
    waiting: BTreeMap<(u64, IpAddr), Vec<Waiting>>,
    /// Where members' answers to health probes go (the health checker's inbox).
    pub health: Option<crate::health::Inbox>,
}

/// A packet waiting for its next hop, and since when.
type Waiting = (Instant, Vec<u8>);

impl Default for Handlers {
    fn default() -> Self {
        Self {
            nd: RateLimit::new(ND_ANSWERS_PER_SECOND),
            dhcp: RateLimit::new(DHCP_ANSWERS_PER_SECOND),
            icmp: RateLimit::new(ICMP_ERRORS_PER_SECOND),
            resolve: RateLimit::new(RESOLUTIONS_PER_SECOND),
            waiting: BTreeMap::new(),
            health: None,
        }
    }
}

impl Handlers {
    /// The answer to a punted packet, if it gets one.
    pub fn answer(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
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
    /// names, or of the gateway of the router it names (from the physical network, on the
    /// chassis hosting the gateway); routers also answer for their link-local address. An
    /// answer out of a physical network's patch port is tagged with the network's VLAN id.
    fn solicitation(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let topo = pipeline.topology();
        let port = match pipeline.owner_of_cookie(punted.cookie)? {
            Owner::Router(id) => topo.gateway_port(id)?,
            _ => pipeline.port_of_cookie(punted.cookie)?,
        };
        let (target, _, _) = nd::solicitation(punted.frame)?;
        let router = port.router().is_some() || port.gateway_of().is_some();
        let ours =
            port.ips.contains(&IpAddr::V6(target)) || (router && target == link_local(port.mac));
        if !ours || !self.nd.allow(&port.id) {
            return None;
        }
        let answer = nd::advertisement(punted.frame, mac_octets(port.mac), router)?;
        let vlan = topo
            .physical_port(&port.network_id)
            .filter(|(patch, _)| *patch == punted.in_port)
            .and_then(|(_, vlan)| vlan);
        Some(Reply::out(
            punted.in_port,
            crate::announce::tagged(answer, vlan),
        ))
    }

    /// A DHCP request from the port it came in on (port security has checked its MAC).
    fn dhcp(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let port = Self::sender(pipeline, punted)?;
        if !self.dhcp.allow(&port.id) {
            return None;
        }
        back(
            punted,
            dhcp_server::reply(pipeline.topology(), port, punted.frame),
        )
    }

    /// A router solicitation from the port it came in on, answered for its network's router.
    fn router_solicitation(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let port = Self::sender(pipeline, punted)?;
        let router = advertising_router(pipeline, port)?;
        if !self.nd.allow(&port.id) {
            return None;
        }
        back(
            punted,
            ra::answer(pipeline.topology(), port, router, punted.frame),
        )
    }

    /// A DHCPv6 request from the port it came in on.
    fn dhcpv6(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let port = Self::sender(pipeline, punted)?;
        if !self.dhcp.allow(&port.id) {
            return None;
        }
        back(
            punted,
            dhcpv6_server::reply(pipeline.topology(), port, punted.frame),
        )
    }

    /// A routed packet whose TTL ran out: "time exceeded" from the interface the sender used
    /// (the frame's destination MAC), from its address in the sender's subnet if it has one.
    fn ttl_exceeded(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
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
        back(
            punted,
            icmp::time_exceeded(punted.frame, gateway_mac, *from),
        )
    }

    /// A packet routed to an external network whose next hop has no learned MAC: an ARP request
    /// for it, from the packet's (translated) source, or, for IPv6, a neighbour solicitation
    /// from the link-local address of the packet's source MAC (the router gateway's), out of
    /// the network's patch port; the packet waits for the answer (which the switch learns by
    /// itself, see [`Handlers::learned`]).
    fn resolve(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let next_hop = punted.next_hop?;
        let metadata = punted.metadata?;
        let topo = pipeline.topology();
        let network = topo.network_with_metadata(metadata)?;
        let (patch, vlan) = topo.physical_port(&network.id)?;
        let request = match next_hop {
            IpAddr::V4(hop) => {
                let (mac, ip) = crate::announce::ipv4_source(punted.frame)?;
                crate::announce::arp_request(mac, ip, hop)
            }
            IpAddr::V6(hop) => {
                let mac: [u8; 6] = punted.frame.get(6..12)?.try_into().ok()?;
                ndp::neighbor_solicitation(mac, ndp::link_local(mac), hop)
            }
        };
        self.wait(metadata, next_hop, punted.frame);
        if !self.resolve.allow(&next_hop.to_string()) {
            return None;
        }
        Some(Reply::out(patch, crate::announce::tagged(request, vlan)))
    }

    /// Keeps a packet until its next hop answers (bounded, and never for long).
    fn wait(&mut self, metadata: u64, next_hop: IpAddr, frame: &[u8]) {
        let now = Instant::now();
        self.waiting.retain(|_, q| {
            q.retain(|(at, _)| now.duration_since(*at) < WAIT_AT_MOST);
            !q.is_empty()
        });
        let total: usize = self.waiting.values().map(Vec::len).sum();
        let queue = self.waiting.entry((metadata, next_hop)).or_default();
        if total < WAITING && queue.len() < WAITING_PER_HOP {
            queue.push((now, frame.to_vec()));
        }
    }

    /// An answer (ARP, or neighbour advertisement) to one of this chassis' addresses on an
    /// external network, which the switch just learned: the packets waiting for that neighbour
    /// go back into the pipeline at the next-hop lookup, with their network and next hop.
    fn learned(&mut self, _: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let metadata = punted.metadata?;
        let sender = match crate::announce::arp_sender(punted.frame) {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(ndp::parse_neighbor_advertisement(punted.frame).ok()?.target),
        };
        let waiting = self.waiting.remove(&(metadata, sender))?;
        let again = |frame: Vec<u8>| {
            let mut actions = vec![set_field(
                Field::Metadata,
                metadata.into(),
                u128::from(u64::MAX),
            )];
            match sender {
                IpAddr::V4(v4) => actions.push(set_field(
                    Field::Reg(pipeline::tables::REG_NEXT_HOP),
                    u32::from(v4).into(),
                    0xffff_ffff,
                )),
                IpAddr::V6(v6) => {
                    let words = pipeline::tables::next_hop6_words(v6);
                    for (reg, word) in pipeline::tables::REG_NEXT_HOP6.into_iter().zip(words) {
                        actions.push(set_field(Field::Reg(reg), word.into(), 0xffff_ffff));
                    }
                }
            }
            actions.push(Action::Resubmit {
                port: openflow::field::port::IN_PORT,
                table: Some(pipeline::tables::EXTERNAL_OUT),
                ct: false,
            });
            (actions, frame)
        };
        Some(Reply(waiting.into_iter().map(|(_, f)| again(f)).collect()))
    }
}

impl Handlers {
    /// A member's answer to a health probe: handed to the health checker; never answered.
    fn health_reply(&mut self, _: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        if let Some(inbox) = &self.health {
            inbox.deliver(punted.in_port, punted.frame);
        }
        None
    }
}

impl Handlers {
    /// A new connection to a load-balancer listener with no member available (the cookie names
    /// the listener): refused from the VIP as a host without a listening socket would, with a
    /// TCP reset or, for UDP, an ICMP port unreachable ([`reject`]), back out of the port it came
    /// in on, within the sender's budget for ICMP errors. IPv4 only.
    fn reject(&mut self, pipeline: &Pipeline, punted: &Punted<'_>) -> Option<Reply> {
        let Owner::Listener(id) = pipeline.owner_of_cookie(punted.cookie)? else {
            return None;
        };
        let topo = pipeline.topology();
        let listener = topo.listeners.get(&**id)?;
        let vip = topo.load_balancers.get(&listener.loadbalancer_id)?.vip;
        if reject::destination(punted.frame)? != (vip, listener.protocol, listener.port) {
            return None;
        }
        let answer = reject::answer(punted.frame)?;
        let budget = Self::sender(pipeline, punted)
            .map_or_else(|| format!("ofport {}", punted.in_port), |p| p.id.clone());
        if !self.icmp.allow(&budget) {
            return None;
        }
        back(punted, Some(answer))
    }
}

/// An answer sent back out of the port the packet came in on.
fn back(punted: &Punted<'_>, frame: Option<Vec<u8>>) -> Option<Reply> {
    Some(Reply::out(punted.in_port, frame?))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use pipeline::Input;
    use serde_json::json;

    use super::*;

    const EXT: &str = "eeeeeeee-0000-4000-8000-0000000000e1";
    const PATCH: u32 = 30;

    /// A chassis reaching the flat external network EXT through patch port 30.
    fn pipeline() -> Pipeline {
        let mut p = Pipeline::new("ch1");
        p.apply(Input::Object(
            format!("/r/networks/{EXT}"),
            Some(json!({"id": EXT, "provider:network_type": "flat",
                "provider:physical_network": "physnet1", "router:external": true})),
        ));
        p.apply(Input::Patch("physnet1".into(), Some(PATCH)));
        p
    }

    fn metadata(p: &Pipeline) -> u64 {
        p.topology().networks[EXT]
            .metadata()
            .expect("a provider network")
    }

    /// An IPv4 frame from the floating IP 172.24.4.10 (as NAT left it) to 198.51.100.7.
    fn routed_frame() -> Vec<u8> {
        let mut f = vec![0u8; 34];
        f[6..12].copy_from_slice(&[0xfa, 0x16, 0x3e, 0, 0, 0x10]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[26..30].copy_from_slice(&[172, 24, 4, 10]);
        f[30..34].copy_from_slice(&[198, 51, 100, 7]);
        f
    }

    fn punted<'a>(reason: Punt, meta: u64, frame: &'a [u8]) -> Punted<'a> {
        Punted {
            reason,
            cookie: 0,
            in_port: 11,
            metadata: Some(meta),
            next_hop: Some(IpAddr::V4(Ipv4Addr::new(172, 24, 4, 1))),
            frame,
        }
    }

    #[test]
    fn a_packet_for_an_unknown_next_hop_asks_by_arp_and_goes_on_when_it_answers() {
        let p = pipeline();
        let meta = metadata(&p);
        let mut h = Handlers::default();
        let frame = routed_frame();
        let Reply(asked) = h
            .answer(&p, &punted(Punt::ResolveNeighbour, meta, &frame))
            .expect("an ARP request");
        assert_eq!(asked.len(), 1);
        let (actions, request) = &asked[0];
        assert_eq!(
            actions,
            &vec![Action::Output {
                port: PATCH,
                max_len: 0
            }]
        );
        assert_eq!(&request[12..14], &[0x08, 0x06], "ARP");
        assert_eq!(
            &request[28..32],
            &[172, 24, 4, 10],
            "from the translated source"
        );
        assert_eq!(&request[38..42], &[172, 24, 4, 1], "for the next hop");
        // The answer of another neighbour sends nothing on.
        let mut other = request.clone();
        other[28..32].copy_from_slice(&[172, 24, 4, 99]);
        assert!(
            h.answer(&p, &punted(Punt::NeighbourLearned, meta, &other))
                .is_none()
        );
        // The next hop's answer (its sender address at the same place) sends the packet on,
        // back into the pipeline at the next-hop lookup.
        let mut answer = request.clone();
        answer[28..32].copy_from_slice(&[172, 24, 4, 1]);
        let Reply(again) = h
            .answer(&p, &punted(Punt::NeighbourLearned, meta, &answer))
            .expect("the waiting packet");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1, frame);
        assert!(again[0].0.iter().any(|a| matches!(
            a,
            Action::Resubmit {
                table: Some(pipeline::tables::EXTERNAL_OUT),
                ..
            }
        )));
        // Sent once.
        assert!(
            h.answer(&p, &punted(Punt::NeighbourLearned, meta, &answer))
                .is_none()
        );
    }

    #[test]
    fn an_ipv6_next_hop_is_solicited_and_its_advertisement_sends_the_packet_on() {
        let p = pipeline();
        let meta = metadata(&p);
        let mut h = Handlers::default();
        let gw_mac = [0xfa, 0x16, 0x3e, 0, 0, 0x20];
        let hop: Ipv6Addr = "2001:db8:ee::1".parse().unwrap();
        let framing = ndp::Ipv6Framing {
            eth_dst: [0; 6],
            eth_src: gw_mac,
            vlan_tci: None,
            src: "2001:db8:10::11".parse().unwrap(),
            dst: "2001:db8:ff::7".parse().unwrap(),
            hop_limit: 63,
        };
        let frame = ndp::build_ipv6(&framing, 59, &[]);
        let mut asking = punted(Punt::ResolveNeighbour, meta, &frame);
        asking.next_hop = Some(IpAddr::V6(hop));
        let Reply(asked) = h.answer(&p, &asking).expect("a solicitation");
        let (actions, request) = &asked[0];
        assert_eq!(
            actions,
            &vec![Action::Output {
                port: PATCH,
                max_len: 0
            }]
        );
        let ns = ndp::parse_neighbor_solicitation(request).expect("a valid solicitation");
        assert_eq!(ns.target, hop);
        assert_eq!(
            ns.src,
            ndp::link_local(gw_mac),
            "from the gateway's link-local"
        );
        assert_eq!(ns.source_mac, Some(gw_mac));
        // The next hop's answer releases the packet, with the next hop in reg8..reg11.
        let answer = ndp::neighbor_advertisement(&ns, [2, 0, 0, 0, 0, 1], true).unwrap();
        let Reply(again) = h
            .answer(&p, &punted(Punt::NeighbourLearned, meta, &answer))
            .expect("the waiting packet");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].1, frame);
        let loads: Vec<_> = pipeline::tables::REG_NEXT_HOP6
            .iter()
            .map(|r| {
                again[0].0.iter().find_map(|a| match a {
                    Action::SetField { field, value, .. } if *field == Field::Reg(*r) => {
                        Some(*value)
                    }
                    _ => None,
                })
            })
            .collect();
        assert_eq!(
            loads,
            vec![Some(0x2001_0db8), Some(0x00ee_0000), Some(0), Some(1)],
            "2001:db8:ee::1, most significant word first"
        );
    }

    #[test]
    fn waiting_packets_are_bounded() {
        let p = pipeline();
        let meta = metadata(&p);
        let mut h = Handlers::default();
        let frame = routed_frame();
        for _ in 0..3 * WAITING_PER_HOP {
            h.answer(&p, &punted(Punt::ResolveNeighbour, meta, &frame));
        }
        let waiting: usize = h.waiting.values().map(Vec::len).sum();
        assert_eq!(waiting, WAITING_PER_HOP);
    }
}
