//! Classification and port security (table [`INGRESS`]): a packet from a local VIF passes only
//! with the port's MAC and one of its fixed IPs or allowed address pairs (ARP sender fields too;
//! DHCP discovery from 0.0.0.0, IPv6 link-local and duplicate address detection from `::`), and
//! enters its network (the VNI in `metadata`); a port without port security admits everything.
//! Only untagged frames: a VIF is an access port, as Neutron's are (a trunk parent's tagged
//! frames are the trunks app's, for its subports).
//! A packet from the tunnel port enters the network its `tun_id` names, marked as tunnelled, and
//! goes straight to L2 (it was handled on the chassis it came from). A frame from a physical
//! network's patch port enters the provider network its VLAN tag (or its lack of one, for a flat
//! network) names, untagged and marked like a tunnelled one, and goes to the external input
//! stage (floating IPs, learned neighbours), then L2. On the chassis hosting a router's gateway,
//! packets with the router's transit id enter the router. Everything else is dropped,
//! ARP probes (sender 0.0.0.0) from ports with port security included: the API never gives two
//! ports one address, so a probe can only find a conflict the topology does not have, and a
//! guest's duplicate address detection that hears no answer goes ahead, as it does on a network
//! without port security, where the responder never answers probes. That costs no flow per port.

use std::net::IpAddr;

use ipnet::IpNet;
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Match};

use super::load_balancing;
use super::{
    App, ETH_ARP, ETH_IPV4, ETH_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, OwnerKind, Spec, VLAN_PRESENT,
    enter, flow, goto, ip_match,
};
use crate::cookie::Owner;
use crate::deps::{Ctx, Wire};
use crate::model::{Kind, LOAD_BALANCER_VIP, Mac, Port};
use crate::tables::{
    EXTERNAL_IN, INGRESS, L2, LB_VIP, REG_FROM_TUNNEL, ROUTE, Register, SFC_ARRIVAL, SFC_VNI, next,
    router_metadata, transit_vni,
};

pub struct Classifier;

static SPEC: Spec = Spec {
    name: "classifier",
    tables: &[INGRESS],
    reads: &[],
    writes: &[Register::Metadata, Register::FromTunnel],
    owners: &[
        OwnerKind::Port,
        OwnerKind::Network,
        OwnerKind::Router,
        OwnerKind::FloatingIp,
    ],
    inputs: &[
        Kind::Network,
        Kind::Port,
        Kind::Router,
        Kind::FloatingIp,
        Kind::Chassis,
        Kind::ChassisUp,
    ],
};

impl App for Classifier {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    /// Chained traffic from other chassis (the chaining tunnel id) goes to the chaining app.
    fn fixed(&self) -> Vec<Flow> {
        let m = Match::new().with(Field::TunId, SFC_VNI.into());
        vec![flow(&Owner::Static, INGRESS, 110, m, goto(SFC_ARRIVAL))]
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let (Some(meta), Some(ofport)) = (ctx.carried(&port.network_id), ctx.ofport(id))
                else {
                    return;
                };
                vif_ingress(owner, port, meta, ofport, out);
            }
            Owner::Router(id) => transit_ingress(ctx, owner, id, out),
            Owner::FloatingIp(id) => vip_arrivals(ctx, owner, id, out),
            Owner::Network(id) => {
                let (Some(meta), Some(wire)) = (ctx.carried(id), ctx.wire(id)) else {
                    return;
                };
                let from_outside = set_field(Field::Reg(REG_FROM_TUNNEL), 1, 0xffff_ffff);
                match wire {
                    Wire::Tunnel(vni) => {
                        let Some(tunnel) = ctx.tunnel() else {
                            return;
                        };
                        let m = Match::new()
                            .with(Field::InPort, tunnel.into())
                            .with(Field::TunId, vni.into());
                        let mut ins = enter(meta, L2);
                        ins.apply = vec![from_outside];
                        out.push(flow(owner, INGRESS, 100, m, ins));
                    }
                    Wire::Physical { patch, vlan } => {
                        let Some(network) = ctx.network(id) else {
                            return;
                        };
                        if !ctx.sole_segment(network) {
                            return;
                        }
                        let tag = vlan.map_or(0, |v| VLAN_PRESENT | v);
                        let m = Match::new()
                            .with(Field::InPort, patch.into())
                            .with(Field::VlanVid, tag.into());
                        let mut ins = enter(meta, EXTERNAL_IN);
                        if vlan.is_some() {
                            ins.apply.push(Action::PopVlan);
                        }
                        ins.apply.push(from_outside);
                        out.push(flow(owner, INGRESS, 100, m, ins));
                    }
                }
            }
            _ => {}
        }
    }
}

/// On the chassis hosting a load balancer VIP's floating IP ([`load_balancing::outside`]): the
/// members' answers to the VIP, which their chassis send here through the tunnel on the VIP's
/// network to the VIP port's MAC, go to the load balancer ([`LB_VIP`]) instead of L2.
fn vip_arrivals(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(target) = ctx.floating_ip(id).and_then(|f| f.target.as_ref()) else {
        return;
    };
    let Some(port) = ctx
        .port(&target.port_id)
        .filter(|p| p.device_owner == LOAD_BALANCER_VIP)
    else {
        return;
    };
    if !load_balancing::outside(ctx, &port.id).is_some_and(|o| o.here && o.fip.id == id) {
        return;
    }
    let (Some(meta), Some(Wire::Tunnel(vni)), Some(tunnel)) = (
        ctx.carried(&port.network_id),
        ctx.wire(&port.network_id),
        ctx.tunnel(),
    ) else {
        return;
    };
    let m = Match::new()
        .with(Field::InPort, tunnel.into())
        .with(Field::TunId, vni.into())
        .with(Field::EthDst, port.mac.into());
    let mut ins = enter(meta, LB_VIP);
    ins.apply = vec![set_field(Field::Reg(REG_FROM_TUNNEL), 1, 0xffff_ffff)];
    out.push(flow(owner, INGRESS, 110, m, ins));
}

/// On the chassis hosting a router's gateway, packets other chassis send it through the tunnel
/// with the router's transit id ([`crate::model::Router::transits`]) enter the router and are
/// routed again.
fn transit_ingress(ctx: &mut Ctx<'_>, owner: &Owner, id: &str, out: &mut Vec<Flow>) {
    let Some(router) = ctx.router(id).filter(|r| r.admin_up && r.transits()) else {
        return;
    };
    let Some(number) = router.number else {
        return;
    };
    let here = ctx.chassis_id();
    if ctx.gateway_host(id).is_none_or(|c| c.id != here) {
        return;
    }
    let Some(tunnel) = ctx.tunnel() else {
        return;
    };
    let m = Match::new()
        .with(Field::InPort, tunnel.into())
        .with(Field::TunId, transit_vni(number).into());
    out.push(flow(
        owner,
        INGRESS,
        100,
        m,
        enter(router_metadata(id), ROUTE),
    ));
}

/// Ingress flows of a local VIF.
fn vif_ingress(owner: &Owner, port: &Port, meta: u64, ofport: u32, out: &mut Vec<Flow>) {
    let admit = || enter(meta, next(INGRESS));
    // Untagged frames only: a VIF is an access port, as Neutron's are (a trunk's subports come in
    // through their own ports, see the trunks app).
    let from_vif = Match::new()
        .with(Field::InPort, ofport.into())
        .with(Field::VlanVid, 0);
    if !port.port_security {
        out.push(flow(owner, INGRESS, 100, from_vif, admit()));
        return;
    }
    // The port's own addresses with its MAC, and the allowed pairs.
    let mut allowed: Vec<(IpNet, Mac)> = port
        .ips
        .iter()
        .map(|ip| (IpNet::from(*ip), port.mac))
        .collect();
    allowed.extend(port.pairs.iter().cloned());
    allowed.sort();
    allowed.dedup();
    for (net, mac) in &allowed {
        let base = from_vif.clone().with(Field::EthSrc, u128::from(*mac));
        out.push(flow(
            owner,
            INGRESS,
            100,
            ip_match(base.clone(), net, true),
            admit(),
        ));
        if let IpNet::V4(v4) = net {
            let arp = base
                .with(Field::EthType, ETH_ARP)
                .with(Field::ArpSha, u128::from(*mac))
                .with_masked(
                    Field::ArpSpa,
                    u32::from(v4.addr()).into(),
                    u32::from(v4.netmask()).into(),
                );
            out.push(flow(owner, INGRESS, 100, arp, admit()));
        }
    }
    let mac = u128::from(port.mac);
    if port.ips.iter().any(IpAddr::is_ipv4) {
        // DHCP discovery comes from 0.0.0.0.
        let dhcp = from_vif
            .clone()
            .with(Field::EthSrc, mac)
            .with(Field::EthType, ETH_IPV4)
            .with(Field::IpProto, IPPROTO_UDP)
            .with(Field::Ipv4Src, 0)
            .with(Field::UdpSrc, 68)
            .with(Field::UdpDst, 67);
        out.push(flow(owner, INGRESS, 100, dhcp, admit()));
    }
    if port.ips.iter().any(IpAddr::is_ipv6) {
        // Link-local traffic (neighbour discovery, router solicitation, DHCPv6) and DAD from ::.
        let link_local: IpNet = "fe80::/10".parse().expect("constant prefix");
        let base = from_vif.with(Field::EthSrc, mac);
        out.push(flow(
            owner,
            INGRESS,
            100,
            ip_match(base.clone(), &link_local, true),
            admit(),
        ));
        let dad = base
            .with(Field::EthType, ETH_IPV6)
            .with(Field::Ipv6Src, 0)
            .with(Field::IpProto, IPPROTO_ICMPV6);
        out.push(flow(owner, INGRESS, 100, dad, admit()));
    }
}
