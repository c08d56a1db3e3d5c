//! ARP and neighbour-discovery answers (table [`RESPOND`]): ARP requests for a port's IPv4
//! addresses are answered in place with its MAC, on every chassis; neighbour solicitations for its
//! IPv6 addresses go to the agent, which answers (OpenFlow cannot turn a solicitation's option into
//! an advertisement's). An address or MAC two ports claim on one network is answered by neither
//! until only one claims it. ARP probes and duplicate address detection are never answered (by any
//! later stage either): they go straight to L2 to be flooded, so the owner of an address never
//! sees a conflict. On a physical network, the addresses that one chassis answers for there
//! (floating IPs, SNAT addresses, router gateways: see the `nat` app) are not answered locally:
//! the question goes out and that chassis answers, the same for everyone.

use std::net::IpAddr;

use openflow::{Field, Flow, Match};

use super::{
    App, ETH_ARP, ETH_IPV6, IPPROTO_ICMPV6, OwnerKind, Spec, arp_answer, flow, goto, nd_punt,
};
use crate::cookie::Owner;
use crate::deps::{Ctx, Wire};
use crate::model::{Kind, ROUTER_GATEWAY, SNAT_ADDRESS};

/// Device owners of the ports whose addresses one chassis answers for on a physical network.
const ANSWERED_OUTSIDE: [&str; 3] = ["network:floatingip", ROUTER_GATEWAY, SNAT_ADDRESS];
use crate::tables::{L2, RESPOND, Register};

pub struct Responder;

static SPEC: Spec = Spec {
    name: "responder",
    tables: &[RESPOND],
    reads: &[Register::Metadata],
    writes: &[],
    owners: &[OwnerKind::Port, OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Port],
};

impl App for Responder {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        match owner {
            Owner::Port(id) => {
                let Some(port) = ctx.port(id).filter(|p| p.admin_up) else {
                    return;
                };
                let Some(meta) = ctx.carried(&port.network_id) else {
                    return;
                };
                let physical = matches!(ctx.wire(&port.network_id), Some(Wire::Physical { .. }));
                if physical && ANSWERED_OUTSIDE.contains(&port.device_owner.as_str()) {
                    return;
                }
                let sole_mac = ctx.sole_mac(port);
                for ip in &port.ips {
                    if !sole_mac || !ctx.sole_ip(port, *ip) {
                        continue;
                    }
                    match ip {
                        IpAddr::V4(v4) => out.push(arp_answer(owner, RESPOND, meta, *v4, port.mac)),
                        IpAddr::V6(v6) => out.push(nd_punt(owner, RESPOND, meta, *v6)),
                    }
                }
            }
            Owner::Network(id) => {
                let Some(meta) = ctx.carried(id) else {
                    return;
                };
                let this_net = Match::new().with(Field::Metadata, meta.into());
                let probe = this_net
                    .clone()
                    .with(Field::EthType, ETH_ARP)
                    .with(Field::ArpOp, 1)
                    .with(Field::ArpSpa, 0);
                out.push(flow(owner, RESPOND, 110, probe, goto(L2)));
                let dad = this_net
                    .with(Field::EthType, ETH_IPV6)
                    .with(Field::IpProto, IPPROTO_ICMPV6)
                    .with(Field::Ipv6Src, 0)
                    .with(Field::Icmpv6Type, 135);
                out.push(flow(owner, RESPOND, 110, dad, goto(L2)));
            }
            _ => {}
        }
    }
}
