//! The OpenFlow pipeline of `br-int`: which flows each object contributes.
//!
//! Tables:
//! - [`T_INGRESS`] (0): packets from local VIFs pass port security here (source MAC and IP must be the
//!   port's fixed IPs or allowed address pairs; ARP sender fields too) and get the network's VNI in
//!   `metadata`; packets from the tunnel port get the VNI from `tun_id` and `reg5=1` ("came from a
//!   tunnel") and skip to L2. Everything else is dropped.
//! - [`T_SERVICES`] (20): the ARP responder answers requests for known port addresses in place;
//!   neighbour solicitations for known IPv6 addresses and DHCP requests (on networks with an IPv4
//!   subnet that has DHCP enabled) go to the agent, which answers them.
//! - [`T_L2`] (30): destination MAC lookup: output to a local VIF, or set `tun_dst`/`tun_id` and output
//!   to the tunnel port for a port bound on another chassis that is up (only for packets that did not
//!   come from a tunnel); anything else goes to flooding.
//! - [`T_FLOOD`] (31): broadcast, multicast and unknown unicast go to every local VIF of the network
//!   and, for locally originated packets, to every other chassis (that is up) with ports bound on the
//!   network.
//!
//! A local port with port security and one IPv4 address costs five flows on its own chassis (three
//! in ingress, ARP responder, L2) and two on every other chassis (ARP responder, L2); a network costs
//! six (tunnel receive, L2 miss, flood, local-only flood, ARP and ND probes), seven when it serves
//! DHCP (eight when no port holds the DHCP server's address, which then answers ARP); each IPv6
//! address adds an ND responder flow.

use std::net::IpAddr;

use ipnet::IpNet;
use openflow::field::port;
use openflow::text::set_field;
use openflow::{Action, Field, Flow, Instructions, Match, Subfield};

use crate::cookie::Owner;
use crate::model::{DHCP_SERVER_MAC, Mac, Network, Port, Topology};

pub const T_INGRESS: u8 = 0;
pub const T_SERVICES: u8 = 20;
pub const T_L2: u8 = 30;
pub const T_FLOOD: u8 = 31;

/// Register marking packets that arrived through a tunnel.
pub const REG_FROM_TUNNEL: u8 = 5;

const ETH_IPV4: u128 = 0x0800;
const ETH_ARP: u128 = 0x0806;
const ETH_IPV6: u128 = 0x86dd;

fn flow(owner: &Owner, table: u8, priority: u16, m: Match, ins: Instructions) -> Flow {
    Flow::new(table, priority, m, vec![])
        .cookie(owner.cookie())
        .instructions(ins)
}

fn goto(table: u8) -> Instructions {
    Instructions::default().goto(table)
}

/// Enter the network: VNI into metadata, then continue at `table`.
fn enter(vni: u32, table: u8) -> Instructions {
    let mut ins = goto(table);
    ins.write_metadata = Some((u64::from(vni), u64::MAX));
    ins
}

fn prefix_match(m: Match, net: &IpNet) -> Match {
    let (field, addr, mask) = match net {
        IpNet::V4(n) => (
            Field::Ipv4Src,
            u128::from(u32::from(n.addr())),
            u128::from(u32::from(n.netmask())),
        ),
        IpNet::V6(n) => (
            Field::Ipv6Src,
            u128::from(n.addr()),
            u128::from(n.netmask()),
        ),
    };
    m.with_masked(field, addr, mask)
}

fn ip_to_net(ip: &IpAddr) -> IpNet {
    IpNet::from(*ip)
}

/// Ingress flows of a local VIF.
fn ingress(owner: &Owner, port: &Port, vni: u32, ofport: u32, out: &mut Vec<Flow>) {
    let from_vif = Match::new().with(Field::InPort, ofport.into());
    if !port.port_security {
        out.push(flow(
            owner,
            T_INGRESS,
            100,
            from_vif,
            enter(vni, T_SERVICES),
        ));
        return;
    }
    // Address sets: the port's own addresses with its MAC, and the allowed pairs.
    let mut allowed: Vec<(IpNet, Mac)> = port
        .ips
        .iter()
        .map(|ip| (ip_to_net(ip), port.mac))
        .collect();
    allowed.extend(port.pairs.iter().cloned());
    allowed.sort();
    allowed.dedup();
    for (net, mac) in &allowed {
        let base = from_vif.clone().with(Field::EthSrc, u128::from(*mac));
        match net {
            IpNet::V4(v4) => {
                let ip = prefix_match(base.clone().with(Field::EthType, ETH_IPV4), net);
                out.push(flow(owner, T_INGRESS, 100, ip, enter(vni, T_SERVICES)));
                let arp = base
                    .with(Field::EthType, ETH_ARP)
                    .with(Field::ArpSha, u128::from(*mac));
                let (addr, mask) = (u32::from(v4.addr()), u32::from(v4.netmask()));
                let arp = arp.with_masked(Field::ArpSpa, addr.into(), mask.into());
                out.push(flow(owner, T_INGRESS, 100, arp, enter(vni, T_SERVICES)));
            }
            IpNet::V6(_) => {
                let ip = prefix_match(base.with(Field::EthType, ETH_IPV6), net);
                out.push(flow(owner, T_INGRESS, 100, ip, enter(vni, T_SERVICES)));
            }
        }
    }
    let mac = u128::from(port.mac);
    if port.ips.iter().any(IpAddr::is_ipv4) {
        // DHCP discovery comes from 0.0.0.0.
        let dhcp = from_vif
            .clone()
            .with(Field::EthSrc, mac)
            .with(Field::EthType, ETH_IPV4)
            .with(Field::IpProto, 17)
            .with(Field::Ipv4Src, 0)
            .with(Field::UdpSrc, 68)
            .with(Field::UdpDst, 67);
        out.push(flow(owner, T_INGRESS, 100, dhcp, enter(vni, T_SERVICES)));
    }
    if port.ips.iter().any(IpAddr::is_ipv6) {
        // Link-local traffic (neighbour discovery, router solicitation) and DAD from ::.
        let link_local: IpNet = "fe80::/10".parse().expect("constant prefix");
        let base = from_vif
            .with(Field::EthSrc, mac)
            .with(Field::EthType, ETH_IPV6);
        out.push(flow(
            owner,
            T_INGRESS,
            100,
            prefix_match(base.clone(), &link_local),
            enter(vni, T_SERVICES),
        ));
        let dad = base.with(Field::Ipv6Src, 0).with(Field::IpProto, 58);
        out.push(flow(owner, T_INGRESS, 100, dad, enter(vni, T_SERVICES)));
    }
}

/// Sends neighbour solicitations for the port's IPv6 addresses to the agent, which answers them with
/// a neighbour advertisement (the flow's cookie names the port).
fn nd_responder(owner: &Owner, port: &Port, vni: u32, out: &mut Vec<Flow>) {
    for ip in &port.ips {
        let IpAddr::V6(v6) = ip else { continue };
        let m = Match::new()
            .with(Field::Metadata, vni.into())
            .with(Field::EthType, ETH_IPV6)
            .with(Field::IpProto, 58)
            .with(Field::Icmpv6Type, 135)
            .with(Field::NdTarget, u128::from(*v6));
        let to_agent = Action::Output {
            port: port::CONTROLLER,
            max_len: u16::MAX,
        };
        out.push(flow(
            owner,
            T_SERVICES,
            100,
            m,
            Instructions::apply(vec![to_agent]),
        ));
    }
}

/// The flow that answers ARP requests for `ip` on network `vni` with `mac`.
fn arp_answer(owner: &Owner, vni: u32, ip: std::net::Ipv4Addr, mac: Mac) -> Flow {
    let m = Match::new()
        .with(Field::Metadata, vni.into())
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpOp, 1)
        .with(Field::ArpTpa, u32::from(ip).into());
    let actions = vec![
        Action::Move {
            src: Subfield::whole(Field::EthSrc),
            dst: Subfield::whole(Field::EthDst),
        },
        set_field(Field::EthSrc, mac.into(), u128::from(u64::MAX >> 16)),
        set_field(Field::ArpOp, 2, 0xffff),
        Action::Move {
            src: Subfield::whole(Field::ArpSha),
            dst: Subfield::whole(Field::ArpTha),
        },
        set_field(Field::ArpSha, mac.into(), u128::from(u64::MAX >> 16)),
        Action::Move {
            src: Subfield::whole(Field::ArpSpa),
            dst: Subfield::whole(Field::ArpTpa),
        },
        set_field(Field::ArpSpa, u32::from(ip).into(), 0xffff_ffff),
        Action::Output {
            port: port::IN_PORT,
            max_len: 0,
        },
    ];
    flow(owner, T_SERVICES, 100, m, Instructions::apply(actions))
}

/// Answers ARP requests for the port's IPv4 addresses.
fn arp_responder(owner: &Owner, port: &Port, vni: u32, out: &mut Vec<Flow>) {
    for ip in &port.ips {
        if let IpAddr::V4(v4) = ip {
            out.push(arp_answer(owner, vni, *v4, port.mac));
        }
    }
}

fn to_tunnel(tunnel: u32, vni: u32, dst: std::net::Ipv4Addr, actions: &mut Vec<Action>) {
    actions.push(set_field(Field::TunDst, u32::from(dst).into(), 0xffff_ffff));
    actions.push(set_field(Field::TunId, vni.into(), u128::from(u64::MAX)));
    actions.push(Action::Output {
        port: tunnel,
        max_len: 0,
    });
}

/// The flows a port contributes on this chassis.
pub fn port_flows(topo: &Topology, port: &Port) -> Vec<Flow> {
    let mut out = Vec::new();
    let Some(net) = topo.networks.get(&port.network_id) else {
        return out;
    };
    let (Some(vni), true) = (net.vni, net.admin_up) else {
        return out;
    };
    let owner = Owner::Port(port.id.clone());
    if !port.admin_up {
        return out;
    }
    arp_responder(&owner, port, vni, &mut out);
    nd_responder(&owner, port, vni, &mut out);
    let dst = Match::new()
        .with(Field::Metadata, vni.into())
        .with(Field::EthDst, port.mac.into());
    if let Some(ofport) = topo.local.ofport(&port.id) {
        ingress(&owner, port, vni, ofport, &mut out);
        let deliver = Instructions::apply(vec![Action::Output {
            port: ofport,
            max_len: 0,
        }]);
        out.push(flow(&owner, T_L2, 100, dst, deliver));
    } else if let (Some(chassis), Some(tunnel)) = (topo.remote_chassis(port), topo.local.tunnel) {
        let mut actions = Vec::new();
        to_tunnel(tunnel, vni, chassis.tunnel_ip, &mut actions);
        let m = dst.with(Field::Reg(REG_FROM_TUNNEL), 0);
        out.push(flow(&owner, T_L2, 100, m, Instructions::apply(actions)));
    }
    out
}

/// The flows a network contributes on this chassis.
pub fn network_flows(topo: &Topology, net: &Network) -> Vec<Flow> {
    let mut out = Vec::new();
    let (Some(vni), true) = (net.vni, net.admin_up) else {
        return out;
    };
    let owner = Owner::Network(net.id.clone());
    let on_net = || {
        topo.ports
            .values()
            .filter(|p| p.network_id == net.id && p.admin_up)
    };
    let mut local: Vec<Action> = on_net()
        .filter_map(|p| topo.local.ofport(&p.id))
        .map(|ofport| Action::Output {
            port: ofport,
            max_len: 0,
        })
        .collect();
    local.sort_by_key(|a| match a {
        Action::Output { port, .. } => *port,
        _ => 0,
    });
    let mut remotes: Vec<std::net::Ipv4Addr> = on_net()
        .filter_map(|p| topo.remote_chassis(p))
        .map(|c| c.tunnel_ip)
        .collect();
    remotes.sort();
    remotes.dedup();
    let this_net = Match::new().with(Field::Metadata, vni.into());
    if let Some(tunnel) = topo.local.tunnel {
        let m = Match::new()
            .with(Field::InPort, tunnel.into())
            .with(Field::TunId, vni.into());
        let mut ins = enter(vni, T_L2);
        ins.apply = vec![set_field(Field::Reg(REG_FROM_TUNNEL), 1, 0xffff_ffff)];
        out.push(flow(&owner, T_INGRESS, 100, m, ins));
    }
    out.push(flow(&owner, T_L2, 10, this_net.clone(), goto(T_FLOOD)));
    // ARP probes (sender 0.0.0.0) are flooded, never answered by the responder: the owner of the
    // address must not see a conflict during duplicate address detection.
    let probe = this_net
        .clone()
        .with(Field::EthType, ETH_ARP)
        .with(Field::ArpOp, 1)
        .with(Field::ArpSpa, 0);
    out.push(flow(&owner, T_SERVICES, 110, probe, goto(T_L2)));
    // Duplicate address detection (solicitations from ::) is flooded, never answered.
    let dad = this_net
        .clone()
        .with(Field::EthType, ETH_IPV6)
        .with(Field::IpProto, 58)
        .with(Field::Ipv6Src, 0)
        .with(Field::Icmpv6Type, 135);
    out.push(flow(&owner, T_SERVICES, 110, dad, goto(T_L2)));
    if topo.serves_dhcp(&net.id) {
        // DHCP requests go to the agent, which answers for the port they came from (the
        // packet-in says the in_port); the port's ingress flows have checked its MAC already.
        let dhcp = this_net
            .clone()
            .with(Field::EthType, ETH_IPV4)
            .with(Field::IpProto, 17)
            .with(Field::UdpSrc, 68)
            .with(Field::UdpDst, 67);
        let to_agent = Action::Output {
            port: port::CONTROLLER,
            max_len: u16::MAX,
        };
        out.push(flow(
            &owner,
            T_SERVICES,
            100,
            dhcp,
            Instructions::apply(vec![to_agent]),
        ));
        // The server's address answers ARP (clients renew by unicast to it) unless a port on the
        // network has it (a router interface on the gateway, usually).
        let mut server_ips: Vec<std::net::Ipv4Addr> = topo
            .subnets
            .values()
            .filter(|s| s.network_id == net.id && s.enable_dhcp)
            .filter_map(|s| s.dhcp_server_ip())
            .filter(|ip| !on_net().any(|p| p.ips.contains(&IpAddr::V4(*ip))))
            .collect();
        server_ips.sort();
        server_ips.dedup();
        for ip in server_ips {
            out.push(arp_answer(&owner, vni, ip, DHCP_SERVER_MAC));
        }
    }
    let from_tunnel = this_net.clone().with(Field::Reg(REG_FROM_TUNNEL), 1);
    out.push(flow(
        &owner,
        T_FLOOD,
        110,
        from_tunnel,
        Instructions::apply(local.clone()),
    ));
    let mut all = local;
    if let Some(tunnel) = topo.local.tunnel {
        for ip in remotes {
            to_tunnel(tunnel, vni, ip, &mut all);
        }
    }
    out.push(flow(
        &owner,
        T_FLOOD,
        100,
        this_net,
        Instructions::apply(all),
    ));
    out
}

/// The fixed part: explicit table-miss behaviour.
pub fn static_flows() -> Vec<Flow> {
    let owner = Owner::Static;
    vec![
        flow(&owner, T_INGRESS, 0, Match::new(), Instructions::default()),
        flow(&owner, T_SERVICES, 0, Match::new(), goto(T_L2)),
        flow(&owner, T_FLOOD, 0, Match::new(), Instructions::default()),
    ]
}
