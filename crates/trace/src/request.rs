//! From an operator's description of a packet ("from web1 to 10.0.0.12, TCP 80") to the packet a
//! VM would send: source MAC and IP from the port, destination MAC from whoever owns the
//! destination address on the port's network (or its gateway, or broadcast — and which one is
//! said in a note), TTL 64 unless asked otherwise. The port meant to get it is looked for on the
//! port's network, then on the networks its routers join it to.

use std::fmt;
use std::net::IpAddr;

use flowsim::{Mac, Packet};
use openflow::Field;
use pipeline::model::Port;

use crate::Error;
use crate::inventory::{Inventory, ip_list, short};

/// Source port of TCP and UDP probes (an ephemeral port, as a client would use).
pub const SOURCE_PORT: u16 = 33000;

/// What kind of packet to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe {
    /// An ICMP (or ICMPv6) echo request.
    #[default]
    Echo,
    /// A TCP SYN to this port.
    Tcp(u16),
    /// A UDP datagram to this port.
    Udp(u16),
    /// An ARP request (IPv6: a neighbour solicitation) for the destination address.
    Arp,
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Echo => f.write_str("ICMP echo request"),
            Probe::Tcp(p) => write!(f, "TCP SYN to port {p}"),
            Probe::Udp(p) => write!(f, "UDP datagram to port {p}"),
            Probe::Arp => f.write_str("ARP request"),
        }
    }
}

/// A packet described in operator terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Source port: name, id, or lab VM name.
    pub from: String,
    /// Destination: an IP address, or a port (name, id, VM name) whose address to use.
    pub to: String,
    /// What to send.
    pub probe: Probe,
    /// Source IP instead of the port's (to show spoofing drops).
    pub src_ip: Option<IpAddr>,
    /// Source MAC instead of the port's.
    pub src_mac: Option<Mac>,
    /// TTL (IPv6: hop limit) instead of a VM's usual 64.
    pub ttl: Option<u8>,
}

/// The packet built for a [`Request`], with how its addresses were chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The port it comes from.
    pub source: Port,
    /// The port it is meant for, when the destination belongs to a port.
    pub target: Option<Port>,
    /// Destination IP.
    pub dst_ip: IpAddr,
    /// The packet as it enters `br-int`.
    pub packet: Packet,
    /// How the addresses were chosen, one sentence each.
    pub notes: Vec<String>,
}

/// A MAC of the pipeline's model as the simulator's.
pub fn mac_of(v: u64) -> Mac {
    Mac::from_value(u128::from(v))
}

fn looks_like_ip(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || c == '.' || c == ':')
        && s.chars().any(|c| c == '.' || c == ':')
}

/// The port's first address of the same family as `like` (IPv4 first when `like` is `None`).
fn address_of(port: &Port, like: Option<IpAddr>) -> Option<IpAddr> {
    let same = |ip: &&IpAddr| match like {
        Some(l) => ip.is_ipv4() == l.is_ipv4(),
        None => ip.is_ipv4(),
    };
    port.ips
        .iter()
        .find(same)
        .or(if like.is_none() {
            port.ips.first()
        } else {
            None
        })
        .copied()
}

/// Builds the packet for `req`.
pub fn build(inv: &Inventory, req: &Request) -> Result<Built, Error> {
    let source = inv.find_port(&req.from)?.clone();
    let net = source.network_id.clone();
    let mut notes = Vec::new();
    let (dst_ip, target) = match req.to.parse::<IpAddr>() {
        Ok(ip) => {
            let on_link = inv.port_with_ip(&net, ip);
            (ip, on_link.or_else(|| inv.routed_port(&net, ip)).cloned())
        }
        Err(_) if looks_like_ip(&req.to) => {
            return Err(Error::Input(format!(
                "{:?} is not a valid IP address",
                req.to
            )));
        }
        Err(_) => {
            let p = inv.find_port(&req.to)?;
            let ip = address_of(p, None).ok_or_else(|| {
                Error::Input(format!(
                    "{} has no IP address to send to",
                    inv.port_label(p)
                ))
            })?;
            (ip, Some(p.clone()))
        }
    };
    let src_ip = match req.src_ip {
        Some(ip) if ip.is_ipv4() != dst_ip.is_ipv4() => return Err(families(ip, dst_ip)),
        Some(ip) => ip,
        None => address_of(&source, Some(dst_ip)).ok_or_else(|| {
            Error::Input(format!(
                "{} has no {} address; give --src-ip",
                inv.port_label(&source),
                if dst_ip.is_ipv4() { "IPv4" } else { "IPv6" }
            ))
        })?,
    };
    let src_mac = req.src_mac.unwrap_or_else(|| mac_of(source.mac));
    if req.src_ip.is_some() || req.src_mac.is_some() {
        notes.push(format!(
            "source overridden: {src_ip} / {src_mac} (the port has {} / {})",
            ip_list(&source.ips),
            mac_of(source.mac)
        ));
    }
    let mut packet = match req.probe {
        Probe::Arp => {
            if let Some(t) = &target {
                notes.push(format!(
                    "{dst_ip} is an address of {} on {}",
                    inv.port_label(t),
                    inv.network_label(&t.network_id)
                ));
            }
            match (src_ip, dst_ip) {
                (IpAddr::V4(s), IpAddr::V4(d)) => Packet::arp_request(src_mac, s, d),
                (IpAddr::V6(s), IpAddr::V6(d)) => Packet::neighbor_solicitation(src_mac, s, d),
                _ => return Err(families(src_ip, dst_ip)),
            }
        }
        ip_probe => {
            let routed_by = target
                .as_ref()
                .filter(|t| t.network_id != net)
                .and_then(|t| inv.router_between(&net, &t.network_id));
            let dst_mac = match (&target, routed_by) {
                (Some(t), None) => {
                    let whose = if t.network_id == net {
                        format!("which has {dst_ip} on {}", inv.network_label(&net))
                    } else {
                        format!(
                            "but that port is on {}, not on the source's {}, and no router \
                             joins them",
                            inv.network_label(&t.network_id),
                            inv.network_label(&net)
                        )
                    };
                    notes.push(format!(
                        "destination MAC {}: {}'s, {whose}",
                        mac_of(t.mac),
                        inv.port_label(t)
                    ));
                    mac_of(t.mac)
                }
                (Some(t), Some(router)) => {
                    let (mac, why) = next_hop(inv, &source, src_ip, dst_ip);
                    notes.push(why);
                    let whose = if t.router().is_some() {
                        format!("an address of {}", inv.port_label(t))
                    } else {
                        format!(
                            "an address of {} on {}, which {} joins to {}",
                            inv.port_label(t),
                            inv.network_label(&t.network_id),
                            inv.router_label(router),
                            inv.network_name(&net)
                        )
                    };
                    notes.push(format!("{dst_ip} is {whose}"));
                    mac
                }
                (None, _) => {
                    let (mac, why) = next_hop(inv, &source, src_ip, dst_ip);
                    notes.push(why);
                    if let Some(other) = inv
                        .topology
                        .ports
                        .values()
                        .find(|p| p.network_id != net && p.ips.contains(&dst_ip))
                    {
                        notes.push(format!(
                            "{dst_ip} is also an address of {} on {}, another network, which no \
                             router joins to {}",
                            inv.port_label(other),
                            inv.network_label(&other.network_id),
                            inv.network_name(&net)
                        ));
                    }
                    mac
                }
            };
            match ip_probe {
                Probe::Tcp(p) => Packet::tcp(
                    src_mac,
                    dst_mac,
                    src_ip,
                    dst_ip,
                    SOURCE_PORT,
                    p,
                    flowsim::packet::tcp_flags::SYN,
                ),
                Probe::Udp(p) => Packet::udp(src_mac, dst_mac, src_ip, dst_ip, SOURCE_PORT, p),
                _ => Packet::echo_request(src_mac, dst_mac, src_ip, dst_ip),
            }
        }
    };
    if let Some(ttl) = req.ttl {
        if !packet.set(Field::IpTtl, ttl.into()) {
            return Err(Error::Input(format!(
                "--ttl is for IP packets: an {} has none",
                req.probe
            )));
        }
        notes.push(format!("sent with TTL {ttl}"));
    }
    Ok(Built {
        source,
        target,
        dst_ip,
        packet,
        notes,
    })
}

/// The destination MAC for an address no port on the source's network has: the gateway's for
/// an off-subnet address, else broadcast; with the reason.
fn next_hop(inv: &Inventory, source: &Port, src_ip: IpAddr, dst_ip: IpAddr) -> (Mac, String) {
    let net = &source.network_id;
    let on_net = inv.network_label(net);
    if inv.subnet_of(net, dst_ip).is_some() {
        return (
            Mac::BROADCAST,
            format!(
                "no port on {on_net} has {dst_ip}: a VM's ARP for it would go unanswered; \
                 traced with the broadcast destination MAC"
            ),
        );
    }
    let gateway = inv.subnet_of(net, src_ip).and_then(|s| s.gateway);
    match gateway {
        Some(gw) => match inv.port_with_ip(net, gw) {
            Some(g) => (
                mac_of(g.mac),
                format!(
                    "{dst_ip} is not on {on_net}: sent to the gateway {gw}, MAC {} ({})",
                    mac_of(g.mac),
                    inv.port_label(g)
                ),
            ),
            None => (
                Mac::BROADCAST,
                format!(
                    "{dst_ip} is not on {on_net} and its gateway {gw} has no port (no router \
                     attached): traced with the broadcast destination MAC"
                ),
            ),
        },
        None => (
            Mac::BROADCAST,
            format!(
                "{dst_ip} is not on {on_net}, whose subnet has no gateway: traced with the \
                 broadcast destination MAC"
            ),
        ),
    }
}

fn families(src: IpAddr, dst: IpAddr) -> Error {
    Error::Input(format!(
        "source {src} and destination {dst} are of different address families"
    ))
}

/// One line naming the packet for the report's header.
pub fn describe(inv: &Inventory, built: &Built, probe: Probe) -> String {
    let what = match (probe, built.dst_ip) {
        (Probe::Arp, IpAddr::V6(_)) => "IPv6 neighbour solicitation".to_string(),
        (Probe::Echo, IpAddr::V6(_)) => "ICMPv6 echo request".to_string(),
        (p, _) => p.to_string(),
    };
    let to = match &built.target {
        Some(t) => format!("{} ({})", built.dst_ip, inv.port_label(t)),
        None => built.dst_ip.to_string(),
    };
    format!(
        "{what} from {} [{}, {}] to {to}",
        inv.port_label(&built.source),
        short(&built.source.id),
        ip_list(&built.source.ips)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inventory() -> Inventory {
        let items = vec![
            (
                "/r/networks/n1".to_string(),
                json!({"id": "n1", "name": "web", "provider:network_type": "vxlan",
                       "provider:segmentation_id": 1}),
            ),
            (
                "/r/subnets/s1".to_string(),
                json!({"id": "s1", "network_id": "n1", "cidr": "10.0.0.0/24",
                       "gateway_ip": "10.0.0.1"}),
            ),
            (
                "/r/ports/p1".to_string(),
                json!({"id": "p1", "name": "web1", "network_id": "n1",
                       "mac_address": "fa:16:3e:00:00:01",
                       "fixed_ips": [{"ip_address": "10.0.0.11"}]}),
            ),
            (
                "/r/ports/p2".to_string(),
                json!({"id": "p2", "name": "web2", "network_id": "n1",
                       "mac_address": "fa:16:3e:00:00:02",
                       "fixed_ips": [{"ip_address": "10.0.0.12"}]}),
            ),
            (
                "/r/ports/gw".to_string(),
                json!({"id": "gw", "name": "", "network_id": "n1",
                       "mac_address": "fa:16:3e:00:00:fe",
                       "fixed_ips": [{"ip_address": "10.0.0.1"}]}),
            ),
        ];
        Inventory::from_items(items)
    }

    fn req(to: &str, probe: Probe) -> Request {
        Request {
            from: "web1".into(),
            to: to.into(),
            probe,
            src_ip: None,
            src_mac: None,
            ttl: None,
        }
    }

    #[test]
    fn echo_to_a_port_address_uses_its_mac() {
        let inv = inventory();
        let b = build(&inv, &req("10.0.0.12", Probe::Echo)).unwrap();
        assert_eq!(b.target.as_ref().unwrap().id, "p2");
        let p = &b.packet;
        assert_eq!(p.get(Field::EthSrc), Some(0xfa163e000001));
        assert_eq!(p.get(Field::EthDst), Some(0xfa163e000002));
        assert_eq!(p.get(Field::Ipv4Src), Some(0x0a00000b));
        assert_eq!(p.get(Field::Ipv4Dst), Some(0x0a00000c));
        assert_eq!(p.get(Field::IcmpType), Some(8));
        assert!(b.notes[0].contains("port web2's"), "{:?}", b.notes);
        assert_eq!(
            describe(&inv, &b, Probe::Echo),
            "ICMP echo request from port web1 [p1, 10.0.0.11] to 10.0.0.12 (port web2)"
        );
    }

    #[test]
    fn tcp_udp_and_arp_probes() {
        let inv = inventory();
        let tcp = build(&inv, &req("web2", Probe::Tcp(80))).unwrap().packet;
        assert_eq!(tcp.get(Field::TcpDst), Some(80));
        assert_eq!(tcp.get(Field::TcpSrc), Some(u128::from(SOURCE_PORT)));
        assert_eq!(tcp.get(Field::TcpFlags), Some(2));
        let udp = build(&inv, &req("10.0.0.12", Probe::Udp(53)))
            .unwrap()
            .packet;
        assert_eq!(udp.get(Field::UdpDst), Some(53));
        let arp = build(&inv, &req("10.0.0.12", Probe::Arp)).unwrap().packet;
        assert_eq!(arp.get(Field::EthDst), Some(Mac::BROADCAST.value()));
        assert_eq!(arp.get(Field::ArpOp), Some(1));
        assert_eq!(arp.get(Field::ArpTpa), Some(0x0a00000c));
        assert_eq!(arp.get(Field::ArpSha), Some(0xfa163e000001));
    }

    #[test]
    fn unknown_and_offlink_destinations() {
        let inv = inventory();
        let b = build(&inv, &req("10.0.0.99", Probe::Echo)).unwrap();
        assert_eq!(b.packet.get(Field::EthDst), Some(Mac::BROADCAST.value()));
        assert!(b.notes[0].contains("broadcast"), "{:?}", b.notes);
        let b = build(&inv, &req("8.8.8.8", Probe::Echo)).unwrap();
        assert_eq!(b.packet.get(Field::EthDst), Some(0xfa163e0000fe));
        assert!(b.notes[0].contains("gateway 10.0.0.1"), "{:?}", b.notes);
    }

    #[test]
    fn overrides_and_bad_input() {
        let inv = inventory();
        let mut r = req("10.0.0.12", Probe::Echo);
        r.src_ip = Some("10.0.0.99".parse().unwrap());
        r.src_mac = Some("02:00:00:00:00:99".parse().unwrap());
        let b = build(&inv, &r).unwrap();
        assert_eq!(b.packet.get(Field::Ipv4Src), Some(0x0a000063));
        assert_eq!(b.packet.get(Field::EthSrc), Some(0x020000000099));
        assert!(b.notes[0].starts_with("source overridden"));
        let e = build(&inv, &req("10.0.0.", Probe::Echo)).unwrap_err();
        assert_eq!(e.to_string(), "\"10.0.0.\" is not a valid IP address");
        let mut r = req("10.0.0.12", Probe::Arp);
        r.ttl = Some(1);
        let e = build(&inv, &r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--ttl is for IP packets: an ARP request has none"
        );
        let e = build(&inv, &req("nosuchvm", Probe::Echo)).unwrap_err();
        assert!(
            e.to_string()
                .contains("no port or VM is called \"nosuchvm\"")
        );
        let mut r = req("10.0.0.12", Probe::Echo);
        r.from = "ghost".into();
        assert!(build(&inv, &r).is_err());
        r.from = "web1".into();
        r.src_ip = Some("fe80::1".parse().unwrap());
        assert!(
            build(&inv, &r)
                .unwrap_err()
                .to_string()
                .contains("families")
        );
    }
}
