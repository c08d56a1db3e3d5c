//! Classification and port security (table [`INGRESS`]): a packet from a local VIF passes only
//! with the port's MAC and one of its fixed IPs or allowed address pairs (ARP sender fields too;
//! DHCP discovery from 0.0.0.0, IPv6 link-local and duplicate address detection from `::`), and
//! enters its network (the VNI in `metadata`); a port without port security admits everything.
//! A packet from the tunnel port enters the network its `tun_id` names, marked as tunnelled, and
//! goes straight to L2 (it was handled on the chassis it came from). Everything else is dropped,
//! ARP probes (sender 0.0.0.0) from ports with port security included: the API never gives two
//! ports one address, so a probe can only find a conflict the topology does not have, and a
//! guest's duplicate address detection that hears no answer goes ahead, as it does on a network
//! without port security, where the responder never answers probes. That costs no flow per port.

use std::net::IpAddr;

use ipnet::IpNet;
use openflow::text::set_field;
use openflow::{Field, Flow, Match};

use super::{
    App, ETH_ARP, ETH_IPV4, ETH_IPV6, IPPROTO_ICMPV6, IPPROTO_UDP, OwnerKind, Spec, enter, flow,
    ip_match,
};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::{Kind, Mac, Port};
use crate::tables::{INGRESS, L2, REG_FROM_TUNNEL, Register, next};

pub struct Classifier;

static SPEC: Spec = Spec {
    name: "classifier",
    tables: &[INGRESS],
    reads: &[],
    writes: &[Register::Metadata, Register::FromTunnel],
    owners: &[OwnerKind::Port, OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Port],
};

impl App for Classifier {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let (Some(vni), Some(ofport)) = (ctx.carried(&port.network_id), ctx.ofport(id))
                else {
                    return;
                };
                vif_ingress(owner, port, vni, ofport, out);
            }
            Owner::Network(id) => {
                let (Some(vni), Some(tunnel)) = (ctx.carried(id), ctx.tunnel()) else {
                    return;
                };
                let m = Match::new()
                    .with(Field::InPort, tunnel.into())
                    .with(Field::TunId, vni.into());
                let mut ins = enter(u64::from(vni), L2);
                ins.apply = vec![set_field(Field::Reg(REG_FROM_TUNNEL), 1, 0xffff_ffff)];
                out.push(flow(owner, INGRESS, 100, m, ins));
            }
            _ => {}
        }
    }
}

/// Ingress flows of a local VIF.
fn vif_ingress(owner: &Owner, port: &Port, vni: u32, ofport: u32, out: &mut Vec<Flow>) {
    let admit = || enter(u64::from(vni), next(INGRESS));
    let from_vif = Match::new().with(Field::InPort, ofport.into());
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
