//! Distributed DHCP (table [`DHCP`]): on a network with an IPv4 subnet that has DHCP enabled,
//! requests go to the agent of the chassis the VM is on, which answers for the port the request
//! came in on (the port's ingress checks have passed already). The server's address answers ARP
//! (clients renew by unicast to it) unless a port on the network holds it (usually a router
//! interface on the gateway). On a network with an IPv6 subnet whose `ipv6_address_mode` is
//! `dhcpv6-stateful` or `dhcpv6-stateless`, DHCPv6 requests (UDP 546 → 547) go to the agent too.

use std::net::{IpAddr, Ipv4Addr};

use openflow::{Field, Flow, Match};

use super::{App, ETH_IPV4, ETH_IPV6, IPPROTO_UDP, OwnerKind, Punt, Spec, arp_answer, flow, punt};
use crate::cookie::Owner;
use crate::deps::Ctx;
use crate::model::{DHCP_SERVER_MAC, Kind};
use crate::tables::{DHCP, Register};

pub struct Dhcp;

static SPEC: Spec = Spec {
    name: "dhcp",
    tables: &[DHCP],
    reads: &[Register::Metadata],
    writes: &[],
    owners: &[OwnerKind::Network],
    inputs: &[Kind::Network, Kind::Subnet, Kind::Port],
};

impl App for Dhcp {
    fn spec(&self) -> &'static Spec {
        &SPEC
    }

    fn flows(&self, ctx: &mut Ctx<'_>, owner: &Owner, out: &mut Vec<Flow>) {
        let Owner::Network(id) = owner else {
            return;
        };
        let Some(meta) = ctx.carried(id) else {
            return;
        };
        let dhcpv6 = ctx.subnets_on(id).any(|s| {
            s.enable_dhcp
                && matches!(
                    s.ipv6_address_mode.as_deref(),
                    Some("dhcpv6-stateful" | "dhcpv6-stateless")
                )
        });
        if dhcpv6 {
            let request = Match::new()
                .with(Field::Metadata, meta.into())
                .with(Field::EthType, ETH_IPV6)
                .with(Field::IpProto, IPPROTO_UDP)
                .with(Field::UdpSrc, 546)
                .with(Field::UdpDst, 547);
            out.push(flow(owner, DHCP, 100, request, punt(Punt::Dhcpv6)));
        }
        let mut server_ips: Vec<Ipv4Addr> = ctx
            .subnets_on(id)
            .filter(|s| s.enable_dhcp)
            .filter_map(|s| s.dhcp_server_ip())
            .collect();
        if server_ips.is_empty() {
            return;
        }
        let request = Match::new()
            .with(Field::Metadata, meta.into())
            .with(Field::EthType, ETH_IPV4)
            .with(Field::IpProto, IPPROTO_UDP)
            .with(Field::UdpSrc, 68)
            .with(Field::UdpDst, 67);
        out.push(flow(owner, DHCP, 100, request, punt(Punt::Dhcp)));
        server_ips.retain(|ip| !ctx.ip_held(id, IpAddr::V4(*ip)));
        server_ips.sort();
        server_ips.dedup();
        for ip in server_ips {
            out.push(arp_answer(owner, DHCP, meta, ip, DHCP_SERVER_MAC));
        }
    }
}
