//! The outside world (tables [`EXTERNAL_IN`], [`DNAT`], [`SNAT`], [`EXTERNAL_OUT`],
//! [`NEIGHBOURS_LEARNED`], [`RESOLVE`]): floating IPs, distributed, on the chassis of the port
//! they forward to, and neighbours on external networks.
//!
//! - A floating IP is answered for (ARP) on its physical network only by the chassis whose VIF
//!   holds its port, with the MAC of the floating IP's own port. Its traffic goes through
//!   conntrack in the port's NAT zone ([`nat_zone`]): packets to it enter the router
//!   (`metadata` = router) and new connections are translated to the fixed IP, then routed as
//!   any other packet ([`ROUTE`]); packets from the fixed IP that the router sends to an external
//!   network leave with the floating IP as their source (replies of translated connections too)
//!   and its MAC.
//! - Ports without a floating IP reach the outside through distributed SNAT (Dragonflow's
//!   design): each chassis has its own address on each external network (a port the server
//!   allocates, `network:floatingip_agent_gateway` bound to the chassis) and translates its local
//!   ports' connections to it, in two conntrack passes so that projects with the same addresses
//!   never share a connection entry: first, in the port's NAT zone, the source becomes one of the
//!   port's inner addresses ([`inner_range`], unique on the chassis), then, in the network's
//!   zone, the chassis' address (a stage of its own: a packet whose first translation failed is
//!   dropped there, never sent round again). Replies are translated back the same two steps;
//!   only the chassis answers ARP for its address.
//! - A router in `centralized` SNAT mode translates on the chassis that hosts its gateway
//!   ([`Ctx::gateway_host`]), to its gateway address, in the router's zone ([`router_zone`]):
//!   the other chassis send it packets for the outside (without a floating IP) through the tunnel
//!   with the router's transit id ([`transit_vni`]), and it routes them again. That chassis also
//!   answers for the gateway's addresses (for distributed routers too: from one place only):
//!   ARP, neighbour solicitations (through the agent), pings.
//! - IPv6 is routed to and from the outside without NAT, through the chassis that hosts the
//!   router's gateway, as Neutron's DVR and OVN's distributed gateway ports do: the gateway's
//!   MAC shows on the physical network from that chassis only, and nothing else keeps state.
//!   Packets from the outside to the gateway's MAC enter the router there; the other chassis
//!   send the router's IPv6 packets for the outside there with its transit id. The TTL of a
//!   packet for the outside is decremented where it leaves, so the transit costs no hop.
//! - On an external network, the next hop's MAC (`reg2` holds its IPv4 address, `reg8`..`reg11`
//!   its IPv6 one) comes from neighbours the switch learns itself from the ARP replies and
//!   neighbour advertisements it sees there (`learn` into [`NEIGHBOURS_LEARNED`], cookie
//!   [`LEARNED`], idle for five minutes at most): no agent round trip, and they survive an
//!   agent restart. A next hop not learned yet goes to the agent, which asks for it (ARP, or a
//!   neighbour solicitation from the gateway's link-local address) and keeps the packet until
//!   the answer comes, for three seconds at most.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use openflow::action::{Ct, CtZone, Learn, LearnSpec, LearnSrc, Nat as NatAction, NatAddr};
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use super::load_balancing;
use super::{
    App, EST, ETH_ARP, ETH_IPV4, ETH_IPV6, INV, IPPROTO_ICMPV6, NEW, OwnerKind, Punt, REL, Spec,
    TRK, VLAN_PRESENT, ct_state, echo_reply, enter, flow, goto, ip_match, match_next_hop6,
    move_field, nd_punt, output, punt, set_mac, to_tunnel, translated_back,
};
use crate::cookie::{LEARNED, Owner};
use crate::deps::{Ctx, Wire};
use crate::model::{FloatingIp, Kind, LOAD_BALANCER_VIP, Mac, link_local};
use crate::tables::{
    DNAT, EXTERNAL_IN, EXTERNAL_OUT, L2, LB_VIP, NEIGHBOURS_LEARNED, REG_FROM_TUNNEL, REG_NEXT_HOP,
    RESOLVE, ROUTE, ROUTER_IN, Register, SNAT, SNAT_CHASSIS, nat_zone, router_metadata,
    router_zone, transit_vni,
};

pub struct Nat;

static SPEC: Spec = Spec {
    name: "nat",
    tables: &[
        EXTERNAL_IN,
        DNAT,
        SNAT,
        SNAT_CHASSIS,
        EXTERNAL_OUT,
        NEIGHBOURS_LEARNED,
        RESOLVE,
    ],
    reads: &[Register::Metadata, Register::NextHop, Register::NextHop6],
    writes: &[Register::Metadata, Register::FromTunnel],
    owners: &[
        OwnerKind::FloatingIp,
        OwnerKind::Network,
        OwnerKind::Port,
        OwnerKind::Router,
    ],
    inputs: &[
        Kind::FloatingIp,
        Kind::Port,
        Kind::Router,
        Kind::Network,
        Kind::Chassis,
        Kind::ChassisUp,
    ],
};

/// How long a learned neighbour lives without traffic through it (seconds).
const NEIGHBOUR_IDLE: u16 = 300;

impl App for Nat {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// Connections the NAT zone knows (replies, further packets) continue to routing.
    fn fixed(&self) -> Vec<Flow> {
        [
            ct_state(TRK | EST, TRK | EST | INV),
            ct_state(TRK | REL, TRK | REL | INV),
        ]
        .into_iter()
        .map(|m| {
            flow(
                &Owner::Static,
                DNAT,
                50,
                m.with(Field::EthType, ETH_IPV4),
                goto(ROUTE),
            )
        })
        .collect()
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::FloatingIp(id) => floating_ip_flows(ctx, owner, id, out),
            Owner::Network(id) => external_network_flows(ctx, owner, id, out),
            Owner::Port(id) => port_flows(ctx, owner, id, out),
            Owner::Router(id) => router_flows(ctx, owner, id, out),
            _ => {}
        }
    }
}

/// An external network this chassis reaches: its `metadata` and VLAN id.
fn external(ctx: &mut Ctx<'_>, network: &str) -> Option<(u64, Option<u16>)> {
    ctx.network(network).filter(|n| n.external)?;
    let meta = ctx.carried(network)?;
    match ctx.wire(network)? {
        Wire::Physical { vlan, .. } => Some((meta, vlan)),
        Wire::Tunnel(_) => None,
    }
}

/// The action that teaches the switch the sender of an ARP packet on the network in `metadata`:
/// a flow in [`NEIGHBOURS_LEARNED`] that sets its MAC as the destination of IPv4 packets whose
/// next hop (`reg2`) is its address.
fn learn_sender() -> Action {
    let next_hop = LearnSpec::Match {
        src: LearnSrc::Field(Subfield::whole(Field::ArpSpa)),
        dst: Subfield::whole(Field::Reg(REG_NEXT_HOP)),
    };
    learn_neighbour(ETH_IPV4, vec![next_hop], Field::ArpSha)
}

/// The action that teaches the switch the target of a neighbour advertisement on the network in
/// `metadata`: a flow in [`NEIGHBOURS_LEARNED`] that sets its link-layer address as the
/// destination of IPv6 packets whose next hop (`reg8`..`reg11`) is that address.
fn learn_advertiser() -> Action {
    learn_neighbour(ETH_IPV6, match_next_hop6(Field::NdTarget), Field::NdTll)
}

/// A `learn` of a neighbour: packets of `eth_type` in this network whose next hop matches
/// `next_hop` get the MAC in `mac` as their destination.
fn learn_neighbour(eth_type: u128, next_hop: Vec<LearnSpec>, mac: Field) -> Action {
    let mut specs = vec![
        LearnSpec::Match {
            src: LearnSrc::Field(Subfield::whole(Field::Metadata)),
            dst: Subfield::whole(Field::Metadata),
        },
        LearnSpec::Match {
            src: LearnSrc::Imm(eth_type),
            dst: Subfield::whole(Field::EthType),
        },
    ];
    specs.extend(next_hop);
    specs.push(LearnSpec::Load {
        src: LearnSrc::Field(Subfield::whole(mac)),
        dst: Subfield::whole(Field::EthDst),
    });
    Action::Learn(Box::new(Learn {
        table: NEIGHBOURS_LEARNED,
        idle_timeout: NEIGHBOUR_IDLE,
        priority: 100,
        cookie: LEARNED,
        specs,
        ..Learn::default()
    }))
}

/// Neighbour advertisements on the network in `metadata`.
fn advertisements(meta: u64) -> Match {
    Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_IPV6)
        .with(Field::IpProto, IPPROTO_ICMPV6)
        .with(Field::Icmpv6Type, 136)
}

/// Flows of an external network on a physical network: neighbours learned from the ARP replies
/// and neighbour advertisements seen there, the next hop's MAC looked up before L2, and unknown next hops to the agent.
fn external_network_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some((meta, _)) = external(ctx, id) else {
        return;
    };
    let here = || Match::new().with(Field::Metadata, meta.into());
    // Answers to this chassis' own requests (and to anyone's: a switch floods what it has not
    // learned); gratuitous ARPs teach nothing, so a chassis does not learn every address the
    // others announce.
    let mut learn = goto(L2);
    learn.apply = vec![learn_sender()];
    out.push(flow(
        owner,
        EXTERNAL_IN,
        90,
        here().with(Field::EthType, ETH_ARP).with(Field::ArpOp, 2),
        learn,
    ));
    // Neighbour advertisements likewise (those without the target's link-layer address teach
    // nothing).
    let mut learn = goto(L2);
    learn.apply = vec![learn_advertiser()];
    out.push(flow(owner, EXTERNAL_IN, 90, advertisements(meta), learn));
    out.push(flow(
        owner,
        EXTERNAL_IN,
        95,
        advertisements(meta).with(Field::NdTll, 0),
        goto(L2),
    ));
    let mut lookup = goto(RESOLVE);
    lookup.apply = vec![
        set_mac(Field::EthDst, 0),
        Action::Resubmit {
            port: openflow::field::port::IN_PORT,
            table: Some(NEIGHBOURS_LEARNED),
            ct: false,
        },
    ];
    out.push(flow(owner, EXTERNAL_OUT, 100, here(), lookup));
    out.push(flow(
        owner,
        RESOLVE,
        100,
        here().with(Field::EthDst, 0),
        punt(Punt::ResolveNeighbour),
    ));
}

/// What a floating IP needs on this chassis: it forwards to a port whose VIF is here, through
/// a router whose gateway is on the floating IP's network, which this chassis reaches.
struct Local<'t> {
    fip: &'t FloatingIp,
    fixed: Ipv4Addr,
    mac: Mac,
    ofport: u32,
    zone: u16,
    router: u64,
    network: u64,
    vlan: Option<u16>,
}

fn local<'t>(ctx: &mut Ctx<'t>, id: &str) -> Option<Local<'t>> {
    let fip = ctx.floating_ip(id)?;
    let target = fip.target.as_ref()?;
    ctx.port(&target.port_id).filter(|p| p.admin_up)?;
    let ofport = ctx.ofport(&target.port_id)?;
    let router = ctx.router(&target.router_id).filter(|r| r.admin_up)?;
    router
        .gateway
        .as_ref()
        .filter(|g| g.network_id == fip.network_id)?;
    let (network, vlan) = external(ctx, &fip.network_id)?;
    let mac = ctx.port(fip.own_port.as_deref()?)?.mac;
    Some(Local {
        fip,
        fixed: target.fixed_ip,
        mac,
        ofport,
        zone: nat_zone(ofport)?,
        router: router_metadata(&target.router_id),
        network,
        vlan,
    })
}

fn floating_ip_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(l) = local(ctx, id) else {
        return vip_floating_ip_flows(ctx, owner, id, out);
    };
    let address = u128::from(u32::from(l.fip.address));
    let fixed = u128::from(u32::from(l.fixed));
    let in_router = || Match::new().with(Field::Metadata, l.router.into());
    let zone = CtZone::Imm(l.zone);

    arp_answer_outside(owner, l.network, l.vlan, l.fip.address, l.mac, out);

    // In: into the router, through the NAT zone.
    out.push(flow(
        owner,
        EXTERNAL_IN,
        100,
        to_address(l.network, l.fip.address),
        Instructions::apply(vec![
            set_field(Field::Metadata, l.router.into(), u128::from(u64::MAX)),
            translated_back(zone, DNAT),
        ]),
    ));
    let new = ct_state(TRK | NEW, TRK | NEW | INV)
        .with(Field::Metadata, l.router.into())
        .with(Field::EthType, ETH_IPV4)
        .with(Field::Ipv4Dst, address);
    out.push(flow(
        owner,
        DNAT,
        100,
        new,
        Instructions::apply(vec![Action::Ct(Box::new(Ct {
            commit: true,
            zone,
            table: Some(ROUTE),
            nat: Some(NatAction {
                src: Some(false),
                addr: Some(NatAddr::V4(l.fixed, None)),
                ..NatAction::default()
            }),
            ..Ct::default()
        }))]),
    ));

    // Out: from the fixed IP of the port on this chassis, with the floating IP and its MAC.
    let from_fixed = in_router()
        .with(Field::InPort, l.ofport.into())
        .with(Field::EthType, ETH_IPV4)
        .with(Field::Ipv4Src, fixed);
    out.push(flow(
        owner,
        SNAT,
        100,
        from_fixed,
        leave_as(l.mac, l.network, zone, l.fip.address),
    ));
}

/// A floating IP of a load balancer's VIP (a port without a VIF anywhere), served on the chassis
/// hosting the gateway of its router ([`load_balancing::outside`]), in the router's zone:
/// packets to it are translated to the VIP and go to the load balancer's listeners in the
/// router ([`LB_VIP`]); the answers, which the load balancer routes out from the VIP, leave with
/// the floating IP.
fn vip_floating_ip_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(fip) = ctx.floating_ip(id) else {
        return;
    };
    let Some(target) = fip.target.as_ref() else {
        return;
    };
    if ctx
        .port(&target.port_id)
        .is_none_or(|p| p.device_owner != LOAD_BALANCER_VIP)
    {
        return;
    }
    let Some(o) =
        load_balancing::outside(ctx, &target.port_id).filter(|o| o.here && o.fip.id == fip.id)
    else {
        return;
    };
    let (Some((network, vlan)), Some(mac)) = (
        external(ctx, &fip.network_id),
        fip.own_port
            .as_deref()
            .and_then(|p| ctx.port(p))
            .map(|p| p.mac),
    ) else {
        return;
    };
    let zone = CtZone::Imm(router_zone(o.number));
    let in_router = || {
        Match::new()
            .with(Field::Metadata, o.router.into())
            .with(Field::EthType, ETH_IPV4)
    };
    let vip = u128::from(u32::from(target.fixed_ip));
    arp_answer_outside(owner, network, vlan, fip.address, mac, out);
    // One conntrack pass for new and known connections alike (a commit with a translation on a
    // known connection translates as it was): the way in goes through five more (the load
    // balancer's three, its translation from the VIP, the member's security groups), and Open
    // vSwitch's userspace datapath drops a packet after six recirculations.
    out.push(flow(
        owner,
        EXTERNAL_IN,
        100,
        to_address(network, fip.address),
        Instructions::apply(vec![
            set_field(Field::Metadata, o.router.into(), u128::from(u64::MAX)),
            Action::Ct(Box::new(Ct {
                commit: true,
                zone,
                table: Some(LB_VIP),
                nat: Some(NatAction {
                    src: Some(false),
                    addr: Some(NatAddr::V4(target.fixed_ip, None)),
                    ..NatAction::default()
                }),
                ..Ct::default()
            })),
        ]),
    ));
    out.push(flow(
        owner,
        SNAT,
        100,
        in_router().with(Field::Ipv4Src, vip),
        leave_as(mac, network, zone, fip.address),
    ));
}

/// IPv4 packets to `address` on the network (or in the router) `meta`.
fn to_address(meta: u64, address: Ipv4Addr) -> Match {
    Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_IPV4)
        .with(Field::Ipv4Dst, u128::from(u32::from(address)))
}

/// Leaving a router for an external network (`network`'s `metadata`): TTL decremented, `mac`
/// as the source and the source address translated to `address` in conntrack `zone` (replies of translated
/// connections get their translation back instead), on to the next-hop lookup.
fn leave_as(mac: Mac, network: u64, zone: CtZone, address: Ipv4Addr) -> Instructions {
    Instructions::apply(vec![
        Action::DecTtl,
        set_mac(Field::EthSrc, mac),
        set_field(Field::Metadata, network.into(), u128::from(u64::MAX)),
        Action::Ct(Box::new(Ct {
            commit: true,
            zone,
            table: Some(EXTERNAL_OUT),
            nat: Some(NatAction {
                src: Some(true),
                addr: Some(NatAddr::V4(address, None)),
                ..NatAction::default()
            }),
            ..Ct::default()
        })),
    ])
}

/// The flows that answer ARP requests from a physical network for `ip` with `mac`, back out of
/// the patch port (tagged again with the network's VLAN id), and learn the requester; and that
/// never answer an ARP packet whose sender is `ip` itself: that is the gratuitous ARP of the
/// chassis the address just moved to, which the chassis it left (still holding these flows
/// for a moment) must not answer, or the physical switches would learn the old place again.
fn arp_answer_outside(
    owner: &Owner,
    meta: u64,
    vlan: Option<u16>,
    ip: Ipv4Addr,
    mac: Mac,
    out: &mut Vec<Flow>,
) {
    let address = u128::from(u32::from(ip));
    let from_itself = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpSpa, address);
    out.push(flow(owner, EXTERNAL_IN, 120, from_itself, goto(L2)));
    // Answers to this chassis' requests: learned, and the packets waiting in the agent go on.
    let answer_to_it = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpOp, 2)
        .with(Field::ArpTpa, address);
    out.push(flow(
        owner,
        EXTERNAL_IN,
        115,
        answer_to_it,
        Instructions::apply(vec![learn_sender(), Punt::NeighbourLearned.action()]),
    ));
    let arp = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpOp, 1)
        .with(Field::ArpTpa, address);
    let mut answer = vec![
        learn_sender(),
        move_field(Field::EthSrc, Field::EthDst),
        set_mac(Field::EthSrc, mac),
        set_field(Field::ArpOp, 2, 0xffff),
        move_field(Field::ArpSha, Field::ArpTha),
        set_mac(Field::ArpSha, mac),
        move_field(Field::ArpSpa, Field::ArpTpa),
        set_field(Field::ArpSpa, address, 0xffff_ffff),
    ];
    if let Some(vid) = vlan {
        answer.push(Action::PushVlan(0x8100));
        answer.push(set_field(
            Field::VlanVid,
            u128::from(VLAN_PRESENT | vid),
            0x1fff,
        ));
    }
    answer.push(output(openflow::field::port::IN_PORT));
    out.push(flow(
        owner,
        EXTERNAL_IN,
        110,
        arp,
        Instructions::apply(answer),
    ));
}

/// Distributed SNAT's first-stage addresses: 100.64.0.0/10, 256 for each local port (after its
/// OpenFlow number, below [`crate::tables::MAX_OFPORT`]), so that many short connections to one
/// destination never run out of tuples. They live only in conntrack entries, never on a wire.
const INNER_BASE: u32 = 0x6440_0000;
const INNER_MASK: u32 = 0xffc0_0000;

/// The inner addresses of the local port with OpenFlow number `ofport`: the first, the last, and
/// the prefix holding them.
pub fn inner_range(ofport: u32) -> (Ipv4Addr, Ipv4Addr, ipnet::Ipv4Net) {
    let first = INNER_BASE | ((ofport << 8) & !INNER_MASK);
    let net = ipnet::Ipv4Net::new(Ipv4Addr::from(first), 24).expect("a /24");
    (Ipv4Addr::from(first), Ipv4Addr::from(first | 0xff), net)
}

/// This chassis' way out of a router through its SNAT address on the router's external network.
struct Exit {
    router: u64,
    network: u64,
    address: Ipv4Addr,
    mac: Mac,
    /// The network's SNAT zone on this chassis (after its patch port's number).
    zone: u16,
}

fn snat_exit(ctx: &mut Ctx<'_>, router_id: &str) -> Option<Exit> {
    let router = ctx
        .router(router_id)
        .filter(|r| r.admin_up && !r.centralized)?;
    let gw = router.gateway.as_ref().filter(|g| g.snat)?;
    address_on(ctx, &gw.network_id).map(|(network, _, address, mac, zone)| Exit {
        router: router_metadata(router_id),
        network,
        address,
        mac,
        zone,
    })
}

/// This chassis' SNAT address on an external network it reaches: the network's `metadata`, VLAN
/// id, the address, its MAC and the network's SNAT zone.
fn address_on(ctx: &mut Ctx<'_>, network: &str) -> Option<(u64, Option<u16>, Ipv4Addr, Mac, u16)> {
    let (meta, vlan) = external(ctx, network)?;
    let Wire::Physical { patch, .. } = ctx.wire(network)? else {
        return None;
    };
    let port = ctx.snat_port(network).filter(|p| p.admin_up)?;
    let address = port.ips.iter().find_map(|ip| match ip {
        std::net::IpAddr::V4(v4) => Some(*v4),
        std::net::IpAddr::V6(_) => None,
    })?;
    Some((meta, vlan, address, port.mac, nat_zone(patch)?))
}

/// A port's distributed SNAT: for this chassis' own SNAT address, its ARP answer and the way in
/// of replies; for a local VIF, the first stage of SNAT through the first router (in id order)
/// on its network with a gateway where this chassis has an address, and the reply's way back.
fn port_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
        return;
    };
    if port.snat_chassis() == Some(ctx.chassis_id()) {
        if let Some((meta, vlan, address, mac, zone)) = address_on(ctx, &port.network_id)
            && ctx.snat_port(&port.network_id).map(|p| p.id.as_str()) == Some(id)
        {
            arp_answer_outside(owner, meta, vlan, address, mac, out);
            out.push(flow(
                owner,
                EXTERNAL_IN,
                100,
                to_address(meta, address),
                Instructions::apply(vec![translated_back(CtZone::Imm(zone), DNAT)]),
            ));
        }
        return;
    }
    let Some(ofport) = ctx.ofport(id) else {
        return;
    };
    let Some(zone) = nat_zone(ofport) else {
        return;
    };
    let mut routers: Vec<&str> = ctx
        .interfaces_on(&port.network_id)
        .filter_map(|p| p.router())
        .collect();
    routers.sort_unstable();
    routers.dedup();
    let Some(exit) = routers.into_iter().find_map(|r| snat_exit(ctx, r)) else {
        return;
    };
    let (first, last, inner) = inner_range(ofport);
    let from_port = Match::new()
        .with(Field::Metadata, exit.router.into())
        .with(Field::InPort, ofport.into())
        .with(Field::EthType, ETH_IPV4);
    out.push(flow(
        owner,
        SNAT,
        90,
        from_port,
        Instructions::apply(vec![Action::Ct(Box::new(Ct {
            commit: true,
            zone: CtZone::Imm(zone),
            table: Some(SNAT_CHASSIS),
            nat: Some(NatAction {
                src: Some(true),
                addr: Some(NatAddr::V4(first, Some(last))),
                ..NatAction::default()
            }),
            ..Ct::default()
        }))]),
    ));
    let reply = ct_state(TRK, TRK | NEW | INV)
        .with(Field::Metadata, exit.network.into())
        .with(Field::EthType, ETH_IPV4)
        .with_masked(
            Field::Ipv4Dst,
            u128::from(u32::from(inner.network())),
            u128::from(u32::from(inner.netmask())),
        );
    out.push(flow(
        owner,
        DNAT,
        100,
        reply,
        Instructions::apply(vec![
            set_field(Field::Metadata, exit.router.into(), u128::from(u64::MAX)),
            translated_back(CtZone::Imm(zone), DNAT),
        ]),
    ));
}

/// A router's gateway on the chassis that hosts it ([`Ctx::gateway_host`]).
struct Hosted {
    /// The external network's `metadata` and VLAN id.
    meta: u64,
    vlan: Option<u16>,
    ips: Vec<IpAddr>,
    mac: Mac,
}

impl Hosted {
    fn ipv4(&self) -> Option<Ipv4Addr> {
        self.ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }
}

fn hosted_gateway(ctx: &mut Ctx<'_>, id: &str) -> Option<Hosted> {
    let router = ctx.router(id).filter(|r| r.admin_up)?;
    let gw = router.gateway.as_ref()?;
    let host = ctx.gateway_host(id)?;
    if host.id != ctx.chassis_id() {
        return None;
    }
    let (meta, vlan) = external(ctx, &gw.network_id)?;
    let mac = ctx.gateway_port(id)?.mac;
    Some(Hosted {
        meta,
        vlan,
        ips: gw.ips.clone(),
        mac,
    })
}

/// A router's flows: the answers for its gateway addresses on the chassis that hosts the
/// gateway; IPv6 to and from the outside through that chassis; centralized SNAT there (to the
/// gateway address, in the router's zone), and the way to it through the tunnel from the other
/// chassis; or, distributed, the second stage of SNAT on this chassis, from the ports' inner
/// addresses to the chassis' address on the router's external network, with its MAC.
fn router_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let hosted = hosted_gateway(ctx, id);
    if let Some(h) = &hosted {
        gateway_answers(owner, h, out);
    }
    let Some(router) = ctx.router(id).filter(|r| r.admin_up) else {
        return;
    };
    ipv6_outside(ctx, owner, id, hosted.as_ref(), out);
    if router.centralized {
        centralized_snat(ctx, owner, id, hosted.as_ref(), out);
        return;
    }
    let Some(exit) = snat_exit(ctx, id) else {
        return;
    };
    let from_inner = Match::new()
        .with(Field::Metadata, exit.router.into())
        .with(Field::EthType, ETH_IPV4)
        .with_masked(
            Field::Ipv4Src,
            u128::from(INNER_BASE),
            u128::from(INNER_MASK),
        );
    out.push(flow(
        owner,
        SNAT_CHASSIS,
        100,
        from_inner,
        leave_as(exit.mac, exit.network, CtZone::Imm(exit.zone), exit.address),
    ));
}

/// What the chassis hosting a router's gateway answers on the physical network: ARP for its
/// IPv4 addresses, neighbour solicitations for its IPv6 ones and its link-local address (to the
/// agent, with the cookie naming the router), and ICMP echo requests to any of them. Answers
/// to its own solicitations teach the switch their sender and release the packets waiting
/// for it.
fn gateway_answers(owner: &Owner, h: &Hosted, out: &mut Vec<Flow>) {
    let here = || Match::new().with(Field::Metadata, h.meta.into());
    let mut v6: Vec<std::net::Ipv6Addr> = Vec::new();
    for ip in &h.ips {
        match ip {
            IpAddr::V4(v4) => arp_answer_outside(owner, h.meta, h.vlan, *v4, h.mac, out),
            IpAddr::V6(v6addr) => v6.push(*v6addr),
        }
        let to_it = ip_match(here(), &IpNet::from(*ip), false);
        out.push(echo_reply(owner, EXTERNAL_IN, 105, to_it, *ip, h.vlan));
    }
    if v6.is_empty() {
        return;
    }
    v6.push(link_local(h.mac));
    for target in v6 {
        let mut ns = nd_punt(owner, EXTERNAL_IN, h.meta, target);
        ns.priority = 110;
        out.push(ns);
        let answer_to_it = advertisements(h.meta).with(Field::Ipv6Dst, u128::from(target));
        out.push(flow(
            owner,
            EXTERNAL_IN,
            115,
            answer_to_it,
            Instructions::apply(vec![learn_advertiser(), Punt::NeighbourLearned.action()]),
        ));
    }
}

/// IPv6 between a router with an IPv6 gateway address and the outside, routed without NAT on
/// the chassis that hosts its gateway: packets to the gateway's MAC from the physical network
/// enter the router there (and are routed on, through the tunnel to their port's chassis), and
/// packets the router sends outside leave there with the gateway's MAC; the other chassis send
/// theirs there through the tunnel with the router's transit id.
fn ipv6_outside(
    ctx: &mut Ctx<'_>,
    owner: &Owner,
    id: &str,
    hosted: Option<&Hosted>,
    out: &mut Vec<Flow>,
) {
    if ctx.router(id).is_none_or(|r| !r.transits()) {
        return;
    }
    let meta = router_metadata(id);
    let from_router = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_IPV6);
    let Some(h) = hosted else {
        out.extend(via_gateway_host(ctx, owner, id, from_router));
        return;
    };
    if !h.ips.iter().any(IpAddr::is_ipv6) {
        return;
    }
    let mut leave = enter(h.meta, EXTERNAL_OUT);
    leave.apply = vec![Action::DecTtl, set_mac(Field::EthSrc, h.mac)];
    out.push(flow(owner, SNAT, 80, from_router, leave));
    let to_gateway = Match::new()
        .with(Field::Metadata, h.meta.into())
        .with(Field::EthType, ETH_IPV6)
        .with(Field::EthDst, h.mac.into());
    let mut enter_router = enter(meta, ROUTER_IN);
    // Routed on from here: it may go through the tunnel to its port.
    enter_router.apply = vec![set_field(Field::Reg(REG_FROM_TUNNEL), 0, 0xffff_ffff)];
    out.push(flow(
        owner,
        EXTERNAL_IN,
        100,
        to_gateway.clone(),
        enter_router,
    ));
    // Link-local destinations are not routed.
    let link_local_dst = ip_match(to_gateway, &"fe80::/10".parse().expect("a prefix"), false);
    out.push(flow(
        owner,
        EXTERNAL_IN,
        101,
        link_local_dst,
        Instructions::default(),
    ));
}

/// The flow that sends a router's packets `m` matches (at [`SNAT`]) to the chassis hosting its
/// gateway, through the tunnel with the router's transit id; `None` without a number, host or
/// tunnel.
fn via_gateway_host(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, m: Match) -> Option<Flow> {
    let number = ctx.router(id)?.number?;
    let host = ctx.gateway_host(id)?;
    let tunnel = ctx.tunnel()?;
    let mut actions = Vec::new();
    to_tunnel(tunnel, transit_vni(number), host.tunnel_ip, &mut actions);
    Some(flow(owner, SNAT, 80, m, Instructions::apply(actions)))
}

/// Centralized SNAT of a router with a number and a gateway with SNAT: on the chassis hosting
/// its gateway, to the gateway address in the router's zone (and replies back into the router,
/// free to go through the tunnel to the port's chassis); on the others, packets for the outside
/// without a floating IP go to that chassis through the tunnel with the router's transit id,
/// and are routed again there.
fn centralized_snat(
    ctx: &mut Ctx<'_>,
    owner: &Owner,
    id: &str,
    hosted: Option<&Hosted>,
    out: &mut Vec<Flow>,
) {
    let Some(router) = ctx.router(id) else {
        return;
    };
    let (Some(number), true) = (
        router.number,
        router.gateway.as_ref().is_some_and(|g| g.snat),
    ) else {
        return;
    };
    let meta = router_metadata(id);
    let from_router = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthType, ETH_IPV4);
    match hosted {
        Some(h) => {
            let Some(address) = h.ipv4() else {
                return;
            };
            let zone = CtZone::Imm(router_zone(number));
            out.push(flow(
                owner,
                SNAT,
                80,
                from_router,
                leave_as(h.mac, h.meta, zone, address),
            ));
            out.push(flow(
                owner,
                EXTERNAL_IN,
                100,
                to_address(h.meta, address),
                Instructions::apply(vec![
                    set_field(Field::Metadata, meta.into(), u128::from(u64::MAX)),
                    // Routed on from here: a reply may go through the tunnel to its port.
                    set_field(Field::Reg(REG_FROM_TUNNEL), 0, 0xffff_ffff),
                    translated_back(zone, DNAT),
                ]),
            ));
        }
        None => out.extend(via_gateway_host(ctx, owner, id, from_router)),
    }
}
