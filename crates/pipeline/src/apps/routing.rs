//! Distributed routing (tables [`L3_ENTRY`], [`ROUTER_IN`], [`ROUTE`], [`NEIGHBOUR`]), on the
//! chassis where a packet enters, as Neutron's DVR does:
//! - a frame sent to a router interface's MAC enters the router (`metadata` becomes the router's
//!   context); the interface's IPv6 link-local address answers neighbour solicitations, and router
//!   solicitations go to the agent, which answers with a router advertisement;
//! - inside the router, ICMP echo requests to any of its addresses are answered in place, other
//!   packets to its addresses are dropped, and a packet whose TTL or hop limit would reach zero
//!   goes to the agent, which sends the ICMP time exceeded;
//! - longest prefix match over the connected subnets and the extra routes: TTL decremented, source
//!   MAC set to the outgoing interface's, `metadata` to the outgoing network's VNI; an extra route
//!   sets the next hop's MAC itself, a connected route leaves that to the next stage;
//! - the next-hop stage knows the MAC of every address on a routed network from the topology (no
//!   ARP on the way) and hands the packet to that network's L2.

use std::net::IpAddr;

use ipnet::IpNet;
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match};

use super::{
    App, ETH_IPV4, ETH_IPV6, IPPROTO_ICMPV6, OwnerKind, Punt, Spec, copy_next_hop6, echo_reply,
    enter, flow, goto, ip_match, load_next_hop6, move_field, nd_punt, punt, set_mac,
};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::{Kind, Port, Router, link_local};
use crate::tables::{
    L3_ENTRY, NEIGHBOUR, REG_NEXT_HOP, ROUTE, ROUTER_IN, Register, SNAT, next, router_metadata,
};

pub struct Routing;

static SPEC: Spec = Spec {
    name: "routing",
    tables: &[L3_ENTRY, ROUTER_IN, ROUTE, NEIGHBOUR],
    reads: &[Register::Metadata],
    writes: &[
        Register::Metadata,
        Register::Scratch,
        Register::NextHop,
        Register::NextHop6,
    ],
    owners: &[
        OwnerKind::RouterInterface,
        OwnerKind::Router,
        OwnerKind::Port,
        OwnerKind::Network,
    ],
    inputs: &[Kind::Router, Kind::Port, Kind::Subnet, Kind::Network],
};

/// One address of a router: the interface that holds it, its network and its subnet's prefix.
struct Interface<'t> {
    port: &'t Port,
    meta: u64,
    ip: IpAddr,
    prefix: IpNet,
}

impl App for Routing {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::RouterInterface(id) => interface_flows(ctx, owner, id, out),
            Owner::Router(id) => router_flows(ctx, owner, id, out),
            Owner::Port(id) => neighbour_flows(ctx, owner, id, out),
            Owner::Network(id) => solicitation_flow(ctx, owner, id, out),
            _ => {}
        }
    }
}

/// A router interface that is up, on a carried network, of a router that is known and up.
fn live_interface<'t>(ctx: &mut Ctx<'t>, id: &str) -> Option<(&'t Port, u64, &'t str)> {
    let port = ctx.port(id).filter(|p| p.admin_up)?;
    let router = port.router()?;
    ctx.router(router).filter(|r| r.admin_up)?;
    let meta = ctx.carried(&port.network_id)?;
    Some((port, meta, router))
}

/// The interface's way into its router, and its link-local address.
fn interface_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some((port, meta, router)) = live_interface(ctx, id) else {
        return;
    };
    if !ctx.sole_mac(port) {
        return;
    }
    let m = Match::new()
        .with(Field::Metadata, meta.into())
        .with(Field::EthDst, port.mac.into());
    out.push(flow(
        owner,
        L3_ENTRY,
        100,
        m,
        enter(router_metadata(router), ROUTER_IN),
    ));
    let mut nd = nd_punt(owner, L3_ENTRY, meta, link_local(port.mac));
    nd.priority = 110;
    out.push(nd);
}

/// Router solicitations on a network with an IPv6 router interface go to the agent.
fn solicitation_flow(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(meta) = ctx.carried(id) else {
        return;
    };
    let ipv6_router = ctx
        .interfaces_on(id)
        .any(|p| p.admin_up && p.ips.iter().any(IpAddr::is_ipv6));
    if ipv6_router {
        let m = Match::new()
            .with(Field::Metadata, meta.into())
            .with(Field::EthType, ETH_IPV6)
            .with(Field::IpProto, IPPROTO_ICMPV6)
            .with(Field::Icmpv6Type, 133);
        out.push(flow(
            owner,
            L3_ENTRY,
            110,
            m,
            punt(Punt::RouterSolicitation),
        ));
    }
}

/// Every address on a routed network is a next hop whose MAC the topology knows.
fn neighbour_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
        return;
    };
    let Some(meta) = ctx.carried(&port.network_id) else {
        return;
    };
    if ctx.interfaces_on(&port.network_id).next().is_none() || !ctx.sole_mac(port) {
        return;
    }
    for ip in &port.ips {
        if !ctx.sole_ip(port, *ip) {
            continue;
        }
        let m = ip_match(
            Match::new().with(Field::Metadata, meta.into()),
            &IpNet::from(*ip),
            false,
        );
        let mut ins = goto(next(NEIGHBOUR));
        ins.apply = vec![set_mac(Field::EthDst, port.mac)];
        out.push(flow(owner, NEIGHBOUR, 100, m, ins));
    }
}

/// The router's addresses, each with its interface and connected prefix, in interface order.
fn interfaces<'t>(ctx: &mut Ctx<'t>, router: &str) -> Vec<Interface<'t>> {
    let ports: Vec<&'t Port> = ctx.interfaces_of(router).filter(|p| p.admin_up).collect();
    let mut out = Vec::new();
    for port in ports {
        let Some(meta) = ctx.carried(&port.network_id) else {
            continue;
        };
        let subnets: Vec<IpNet> = ctx.subnets_on(&port.network_id).map(|s| s.cidr).collect();
        for ip in &port.ips {
            if let Some(prefix) = subnets.iter().find(|c| c.contains(ip)) {
                out.push(Interface {
                    port,
                    meta,
                    ip: *ip,
                    prefix: prefix.trunc(),
                });
            }
        }
    }
    out
}

/// Route priorities: longer prefixes first; a connected subnet before an extra route to the same
/// prefix.
fn route_priority(prefix: &IpNet, connected: bool) -> u16 {
    1000 + 2 * u16::from(prefix.prefix_len()) + u16::from(connected)
}

fn router_flows(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(router) = ctx.router(id).filter(|r| r.admin_up) else {
        return;
    };
    let ifaces = interfaces(ctx, id);
    if ifaces.is_empty() {
        return;
    }
    let here = || Match::new().with(Field::Metadata, router_metadata(id).into());
    // Its addresses: the interfaces', and its gateway's (answered from inside; from outside, by
    // the chassis that hosts the gateway).
    let gateway_ips = router.gateway.iter().flat_map(|g| g.ips.iter().copied());
    let mut own: Vec<IpAddr> = ifaces.iter().map(|i| i.ip).chain(gateway_ips).collect();
    own.sort();
    own.dedup();
    for ip in &own {
        let to_router = ip_match(here(), &IpNet::from(*ip), false);
        out.push(flow(
            owner,
            ROUTER_IN,
            115,
            to_router.clone(),
            Instructions::default(),
        ));
        out.push(echo_reply(owner, ROUTER_IN, 120, to_router, *ip, None));
    }
    for eth in [ETH_IPV4, ETH_IPV6] {
        for ttl in [0, 1] {
            let m = here().with(Field::EthType, eth).with(Field::IpTtl, ttl);
            out.push(flow(owner, ROUTER_IN, 110, m, punt(Punt::TtlExceeded)));
        }
    }
    let mut prefixes: Vec<IpNet> = Vec::new();
    for iface in &ifaces {
        if prefixes.contains(&iface.prefix) {
            continue;
        }
        prefixes.push(iface.prefix);
        let m = ip_match(here(), &iface.prefix, false);
        let mut ins = enter(iface.meta, NEIGHBOUR);
        ins.apply = vec![Action::DecTtl, set_mac(Field::EthSrc, iface.port.mac)];
        out.push(flow(
            owner,
            ROUTE,
            route_priority(&iface.prefix, true),
            m,
            ins,
        ));
    }
    let outside = gateway_prefixes(ctx, router);
    for (prefix, gateway) in &outside {
        // An interface on the gateway's subnet too (the API refuses it) routes it inside.
        if !prefixes.contains(prefix) {
            out.push(to_outside(owner, here(), *prefix, None, true));
        }
        if let Some(gw) = gateway {
            let default = match gw {
                IpAddr::V4(_) => IpNet::V4(ipnet::Ipv4Net::default()),
                IpAddr::V6(_) => IpNet::V6(ipnet::Ipv6Net::default()),
            };
            out.push(to_outside(owner, here(), default, Some(*gw), true));
        }
    }
    let mut seen: Vec<IpNet> = Vec::new();
    for (dst, via) in &router.routes {
        let dst = dst.trunc();
        if dst.addr().is_ipv4() == via.is_ipv4() && outside.iter().any(|(p, _)| p.contains(via)) {
            if !seen.contains(&dst) {
                seen.push(dst);
                out.push(to_outside(owner, here(), dst, Some(*via), false));
            }
            continue;
        }
        let Some(iface) = ifaces
            .iter()
            .find(|i| i.prefix.contains(via) && i.ip.is_ipv4() == dst.addr().is_ipv4())
        else {
            continue;
        };
        if seen.contains(&dst) {
            continue;
        }
        seen.push(dst);
        let hop = ctx
            .ports_on(&iface.port.network_id)
            .find(|p| p.admin_up && p.ips.contains(via));
        let m = ip_match(here(), &dst, false);
        let ins = match hop {
            Some(hop) => {
                let mut ins = enter(iface.meta, next(NEIGHBOUR));
                ins.apply = vec![
                    Action::DecTtl,
                    set_mac(Field::EthSrc, iface.port.mac),
                    set_mac(Field::EthDst, hop.mac),
                ];
                ins
            }
            // No port holds the next hop: drop rather than take a shorter route.
            None => Instructions::default(),
        };
        out.push(flow(owner, ROUTE, route_priority(&dst, false), m, ins));
    }
}

/// The prefixes of the router's gateway addresses on its external network, each with its
/// subnet's gateway (the default route's next hop).
fn gateway_prefixes(ctx: &mut Ctx<'_>, router: &Router) -> Vec<(IpNet, Option<IpAddr>)> {
    let Some(gw) = &router.gateway else {
        return Vec::new();
    };
    // A chassis that does not reach the network still routes there: its packets may go through
    // the chassis that hosts the gateway (IPv6, centralized SNAT).
    if ctx
        .network(&gw.network_id)
        .is_none_or(|n| !n.external || n.physical.is_none() || !n.admin_up)
    {
        return Vec::new();
    }
    let subnets: Vec<_> = ctx.subnets_on(&gw.network_id).collect();
    let mut out: Vec<(IpNet, Option<IpAddr>)> = Vec::new();
    for ip in &gw.ips {
        for s in &subnets {
            let cidr = s.cidr.trunc();
            if cidr.contains(ip) && !out.iter().any(|(p, _)| *p == cidr) {
                let gateway = s.gateway.filter(|g| g.is_ipv4() == ip.is_ipv4());
                out.push((cidr, gateway));
            }
        }
    }
    out
}

/// A route to the outside: the next hop (`via`, or the destination itself on the external
/// subnet) into `reg2` (IPv4) or `reg8`..`reg11` (IPv6), on to source NAT, still in the
/// router's context.
fn to_outside(
    owner: &Owner,
    here: Match,
    dst: IpNet,
    via: Option<IpAddr>,
    connected: bool,
) -> Flow {
    // The TTL is decremented where the packet leaves (see the `nat` app): a packet sent to the
    // chassis hosting the gateway is routed there again, and counts one hop in all.
    let mut ins = goto(SNAT);
    match (dst, via) {
        (IpNet::V4(_), Some(IpAddr::V4(ip))) => ins.apply.push(set_field(
            Field::Reg(REG_NEXT_HOP),
            u32::from(ip).into(),
            0xffff_ffff,
        )),
        (IpNet::V4(_), _) => ins
            .apply
            .push(move_field(Field::Ipv4Dst, Field::Reg(REG_NEXT_HOP))),
        (IpNet::V6(_), Some(IpAddr::V6(ip))) => ins.apply.extend(load_next_hop6(ip)),
        (IpNet::V6(_), _) => ins.apply.extend(copy_next_hop6(Field::Ipv6Dst)),
    }
    flow(
        owner,
        ROUTE,
        route_priority(&dst, connected),
        ip_match(here, &dst, false),
        ins,
    )
}
