//! From an operator's description of a packet ("from web1 to 10.0.0.12, TCP 80") to the packet a
//! VM would send: source MAC and IP from the port; destination MAC from whoever answers a VM's ARP
//! (IPv6: neighbour solicitation) for the destination on the port's network — the port holding
//! the address, or for an off-subnet address the gateway, as the ARP responder answers for it (a
//! router interface, or the network's DHCP server when no port holds the gateway) — the group MAC
//! of a multicast address, broadcast for a broadcast address or one nothing answers for (a note
//! says which); TTL 64 unless asked otherwise. ARP requests, replies, probes and gratuitous ARP
//! (their neighbour discovery counterparts for IPv6), and DHCP discover, request and renewal are
//! built as a client sends them; a frame may carry a VLAN tag and any destination MAC, and may
//! arrive over the tunnel from another chassis with a network's VNI. The port meant to get it is
//! looked for on the port's network, then on the networks its routers join it to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowsim::conntrack::ct_state;
use flowsim::{Mac, Packet, Tunnel};
use ipnet::IpNet;
use openflow::Field;
use pipeline::model::{Chassis, DHCP_SERVER_MAC, Port};

use crate::Error;
use crate::inventory::{Inventory, ip_list, short};
use crate::local::Local;

/// Source port of TCP and UDP probes (an ephemeral port, as a client would use).
pub const SOURCE_PORT: u16 = 33000;

/// Which ARP packet (IPv6: which neighbour discovery packet) to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ArpKind {
    /// "Who has TO?" (IPv6: a neighbour solicitation to its solicited-node group).
    #[default]
    Request,
    /// "I have my address", to TO (IPv6: a solicited neighbour advertisement).
    Reply,
    /// A probe for TO (default: the port's address) from 0.0.0.0, as duplicate address
    /// detection sends it (IPv6: a neighbour solicitation from ::).
    Probe,
    /// An announcement of the port's address to everyone: a broadcast request for it (IPv6:
    /// an unsolicited neighbour advertisement to ff02::1).
    Gratuitous,
}

/// Which DHCP message to send, as a client sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DhcpKind {
    /// Broadcast from 0.0.0.0, before the client has an address.
    Discover,
    /// Broadcast from 0.0.0.0, asking for the offered address (the flows see no message type:
    /// it looks like a discover).
    Request,
    /// Unicast from the client's address to the DHCP server's.
    Renew,
}

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
    /// An ARP packet (IPv6: its neighbour discovery counterpart).
    Arp(ArpKind),
    /// A DHCP message.
    Dhcp(DhcpKind),
}

impl Probe {
    /// The packet's name, for IPv6 when `v6`.
    fn name(self, v6: bool) -> String {
        match (self, v6) {
            (Probe::Echo, true) => "ICMPv6 echo request".into(),
            (Probe::Arp(ArpKind::Request), true) => "IPv6 neighbour solicitation".into(),
            (Probe::Arp(ArpKind::Reply), true) => "IPv6 neighbour advertisement".into(),
            (Probe::Arp(ArpKind::Probe), true) => {
                "IPv6 duplicate address detection (a neighbour solicitation from ::)".into()
            }
            (Probe::Arp(ArpKind::Gratuitous), true) => {
                "unsolicited IPv6 neighbour advertisement".into()
            }
            (p, _) => p.to_string(),
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Echo => f.write_str("ICMP echo request"),
            Probe::Tcp(p) => write!(f, "TCP SYN to port {p}"),
            Probe::Udp(p) => write!(f, "UDP datagram to port {p}"),
            Probe::Arp(ArpKind::Request) => f.write_str("ARP request"),
            Probe::Arp(ArpKind::Reply) => f.write_str("ARP reply"),
            Probe::Arp(ArpKind::Probe) => f.write_str("ARP probe"),
            Probe::Arp(ArpKind::Gratuitous) => f.write_str("gratuitous ARP"),
            Probe::Dhcp(DhcpKind::Discover) => f.write_str("DHCP discover"),
            Probe::Dhcp(DhcpKind::Request) => f.write_str("DHCP request"),
            Probe::Dhcp(DhcpKind::Renew) => f.write_str("DHCP renewal"),
        }
    }
}

/// Where a packet arriving over the tunnel comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromTunnel {
    /// The chassis that sends it (name or id; default: the source port's).
    pub chassis: Option<String>,
    /// Its VNI: a number, or a network (name or id) whose VNI to use (default: the source
    /// port's network's).
    pub vni: Option<String>,
}

/// A packet described in operator terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Source port: name, id, short id, or lab VM name.
    pub from: String,
    /// Destination: an IP address, or a port (name, id, short id, VM name) whose address to use;
    /// none for DHCP and gratuitous ARP, and for an ARP probe of the port's own address.
    pub to: Option<String>,
    /// What to send.
    pub probe: Probe,
    /// Source IP instead of the port's (to show spoofing drops).
    pub src_ip: Option<IpAddr>,
    /// Source MAC instead of the port's.
    pub src_mac: Option<Mac>,
    /// Destination MAC instead of the one a VM would use.
    pub dst_mac: Option<Mac>,
    /// An 802.1Q tag with this VLAN id.
    pub vlan: Option<u16>,
    /// TTL (IPv6: hop limit) instead of a VM's usual 64.
    pub ttl: Option<u8>,
    /// Arriving over the tunnel instead of from the source port's VIF.
    pub tunnel: Option<FromTunnel>,
    /// The `ct_state` bits conntrack gives the packet instead of its own
    /// ([`flowsim::conntrack::ct_state`], parsed by [`parse_ct_state`]).
    pub ct_state: Option<u32>,
}

impl Request {
    /// A `probe` from `from` to `to`, as the port sends it.
    pub fn new(from: &str, to: Option<&str>, probe: Probe) -> Request {
        Request {
            from: from.into(),
            to: to.map(str::to_owned),
            probe,
            ..Request::default()
        }
    }
}

/// How a packet arrives over the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The chassis that sent it.
    pub chassis: Chassis,
    /// Its VNI.
    pub vni: u32,
    /// The network with that VNI, if one has it.
    pub network: Option<String>,
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
    /// What it is.
    pub probe: Probe,
    /// The packet as the port sends it.
    pub packet: Packet,
    /// Set when it arrives over the tunnel rather than from the port's VIF.
    pub arrival: Option<Arrival>,
    /// How the addresses were chosen, one sentence each.
    pub notes: Vec<String>,
    /// The `ct_state` bits conntrack gives it instead of its own ([`Request::ct_state`]).
    pub ct_state: Option<u32>,
}

impl Built {
    /// The network the packet is on: the one its VNI names when it arrives over the tunnel,
    /// else its source port's.
    pub fn network(&self) -> &str {
        self.arrival
            .as_ref()
            .and_then(|a| a.network.as_deref())
            .unwrap_or(&self.source.network_id)
    }

    /// The OpenFlow port through which the packet enters `br-int` on `local`, and the packet
    /// as it enters: from the source port's VIF, or from the tunnel port with the tunnel fields
    /// (sent to this chassis' tunnel address).
    pub fn enter(&self, inv: &Inventory, local: &Local) -> Result<(u32, Packet), Error> {
        let Some(a) = &self.arrival else {
            let vif = local.vifs.get(&self.source.id).ok_or_else(|| {
                let bound = match self.source.host.as_deref() {
                    Some(h) => format!("it is bound to chassis {h}"),
                    None => "it is bound to no chassis".into(),
                };
                Error::Input(format!(
                    "{} has no VIF on chassis {} ({bound}); trace on its chassis, or use --computed",
                    inv.port_label(&self.source),
                    local.chassis
                ))
            })?;
            // A subport's frames come from the VM through its trunk's parent, tagged.
            let trunked = inv.topology.trunks_naming(&self.source.id).find_map(|t| {
                let sub = t
                    .distinct_subports()
                    .find(|s| s.port_id == self.source.id)?;
                Some((*local.vifs.get(&t.parent)?, sub.vlan))
            });
            return Ok(match trunked {
                Some((parent, vlan)) => (parent, self.packet.clone().with_vlan(vlan, 0)),
                None => (*vif, self.packet.clone()),
            });
        };
        let port = local
            .tunnel
            .ok_or_else(|| Error::Input(format!("chassis {} has no tunnel port", local.chassis)))?;
        let here = local
            .tunnel_ip
            .or_else(|| {
                inv.topology
                    .chassis
                    .get(&local.chassis)
                    .map(|c| c.tunnel_ip)
            })
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        let tunnel = Tunnel::new(a.vni.into(), a.chassis.tunnel_ip, here);
        Ok((port, self.packet.clone().with_tunnel(&tunnel)))
    }
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

/// The unspecified address of `like`'s family.
fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// "ARP", or "neighbour solicitation" for IPv6: how a VM asks for `ip`'s MAC.
fn asking(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "ARP"
    } else {
        "neighbour solicitation"
    }
}

/// The port's own address for a packet that needs no destination (of `src_ip`'s family if
/// given, IPv4 first).
fn own_address(inv: &Inventory, source: &Port, req: &Request) -> Result<IpAddr, Error> {
    req.src_ip
        .or_else(|| address_of(source, None))
        .ok_or_else(|| {
            Error::Input(format!(
                "{} has no IP address; give --src-ip",
                inv.port_label(source)
            ))
        })
}

/// The destination address and the port it belongs to, if one does.
fn destination(
    inv: &Inventory,
    source: &Port,
    req: &Request,
) -> Result<(IpAddr, Option<Port>), Error> {
    let net = &source.network_id;
    let no_destination =
        |what: &str| Error::Input(format!("a {} goes {what}: give no destination", req.probe));
    let Some(to) = &req.to else {
        return match req.probe {
            Probe::Dhcp(DhcpKind::Renew) => {
                let (server, _) = dhcp_server(inv, source)?;
                Ok((server.into(), None))
            }
            Probe::Dhcp(_) => Ok((Ipv4Addr::BROADCAST.into(), None)),
            Probe::Arp(ArpKind::Probe | ArpKind::Gratuitous) => {
                Ok((own_address(inv, source, req)?, None))
            }
            _ => Err(Error::Input(
                "where does the packet go? wyvern trace [--lab LAB] FROM TO".into(),
            )),
        };
    };
    match req.probe {
        Probe::Dhcp(_) => return Err(no_destination("to the DHCP server")),
        Probe::Arp(ArpKind::Gratuitous) => {
            return Err(no_destination("to everyone, for the port's own address"));
        }
        _ => {}
    }
    match to.parse::<IpAddr>() {
        Ok(ip) => {
            let on_link = inv.port_with_ip(net, ip);
            Ok((ip, on_link.or_else(|| inv.routed_port(net, ip)).cloned()))
        }
        Err(_) if looks_like_ip(to) => {
            Err(Error::Input(format!("{to:?} is not a valid IP address")))
        }
        Err(_) => {
            let p = inv.find_port(to)?;
            let ip = address_of(p, None).ok_or_else(|| {
                Error::Input(format!(
                    "{} has no IP address to send to",
                    inv.port_label(p)
                ))
            })?;
            Ok((ip, Some(p.clone())))
        }
    }
}

/// Builds the packet for `req`.
pub fn build(inv: &Inventory, req: &Request) -> Result<Built, Error> {
    let source = inv.find_port(&req.from)?.clone();
    let mut notes = Vec::new();
    let (dst_ip, target) = destination(inv, &source, req)?;
    let before_any_address = matches!(
        req.probe,
        Probe::Arp(ArpKind::Probe) | Probe::Dhcp(DhcpKind::Discover | DhcpKind::Request)
    );
    let src_ip = match req.src_ip {
        Some(ip) if ip.is_ipv4() != dst_ip.is_ipv4() => return Err(families(ip, dst_ip)),
        Some(ip) => ip,
        None if before_any_address => unspecified(dst_ip),
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
    let dst_mac = |notes: &mut Vec<String>| {
        let (mac, why) = destination_mac(inv, &source, src_ip, dst_ip, target.as_ref());
        notes.extend(why);
        mac
    };
    let mut packet = match req.probe {
        Probe::Arp(kind) => {
            if let Some(t) = &target {
                notes.push(format!(
                    "{dst_ip} is an address of {} on {}",
                    inv.port_label(t),
                    inv.network_label(&t.network_id)
                ));
            }
            let to_mac = match kind {
                ArpKind::Reply => dst_mac(&mut notes),
                _ => Mac::BROADCAST,
            };
            arp(kind, src_mac, src_ip, dst_ip, to_mac)?
        }
        Probe::Dhcp(kind) => {
            let to_mac = match kind {
                DhcpKind::Renew => {
                    let (server, (mac, who)) = dhcp_server(inv, &source)?;
                    notes.push(format!(
                        "a renewal is unicast to the DHCP server {server} at {mac}, as {who}"
                    ));
                    mac
                }
                _ => {
                    notes.push(
                        "as a client sends it before it has an address: from 0.0.0.0 port 68 to \
                         255.255.255.255 port 67, broadcast (the flows see no DHCP message type)"
                            .into(),
                    );
                    Mac::BROADCAST
                }
            };
            Packet::udp(src_mac, to_mac, src_ip, dst_ip, 68, 67)
        }
        Probe::Tcp(p) => Packet::tcp(
            src_mac,
            dst_mac(&mut notes),
            src_ip,
            dst_ip,
            SOURCE_PORT,
            p,
            flowsim::packet::tcp_flags::SYN,
        ),
        Probe::Udp(p) => Packet::udp(src_mac, dst_mac(&mut notes), src_ip, dst_ip, SOURCE_PORT, p),
        Probe::Echo => Packet::echo_request(src_mac, dst_mac(&mut notes), src_ip, dst_ip),
    };
    if let Some(mac) = req.dst_mac {
        packet.set(Field::EthDst, mac.value());
        notes.push(format!("destination MAC {mac}, as given"));
    }
    if let Some(vid) = req.vlan {
        if vid >= 0xfff {
            return Err(Error::Input(format!(
                "VLAN id {vid} is out of range (0 to 4094)"
            )));
        }
        packet = packet.with_vlan(vid, 0);
        notes.push(format!("tagged with VLAN {vid} (802.1Q)"));
    }
    if let Some(ttl) = req.ttl {
        if !packet.set(Field::IpTtl, ttl.into()) {
            return Err(Error::Input(format!(
                "--ttl is for IP packets: an {} has none",
                req.probe
            )));
        }
        notes.push(format!("sent with TTL {ttl}"));
    }
    let arrival = match &req.tunnel {
        Some(t) => {
            let a = arrival(inv, &source, t)?;
            let network = match &a.network {
                Some(n) => format!("{}'s", inv.network_label(n)),
                None => "which no network has".into(),
            };
            notes.push(format!(
                "arriving over the tunnel from chassis {} ({}) with VNI {}, {network}",
                a.chassis.id, a.chassis.tunnel_ip, a.vni
            ));
            Some(a)
        }
        None => None,
    };
    Ok(Built {
        source,
        target,
        dst_ip,
        probe: req.probe,
        packet,
        arrival,
        notes,
        ct_state: req.ct_state,
    })
}

/// The `ct_state` flags conntrack can give a packet, by name (`trk` is implied).
const CT_FLAGS: [(&str, u32); 5] = [
    ("new", ct_state::NEW),
    ("est", ct_state::EST),
    ("rel", ct_state::REL),
    ("rpl", ct_state::RPL),
    ("inv", ct_state::INV),
];

/// `--ct-state`: flag names separated by `,` or `+` (`new`, `est`, `est,rpl` for a reply,
/// `rel`, `inv`; `trk` may be given, it is implied).
pub fn parse_ct_state(s: &str) -> Result<u32, String> {
    let mut state = 0;
    for name in s.split([',', '+']).map(str::trim).filter(|n| !n.is_empty()) {
        if name == "trk" {
            continue;
        }
        let (_, bit) = CT_FLAGS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            format!("unknown conntrack state {name:?} (one of new, est, rel, rpl, inv, trk)")
        })?;
        state |= bit;
    }
    if state == 0 {
        return Err("no conntrack state given (new, est, est,rpl, rel or inv)".into());
    }
    Ok(state)
}

/// `trk,est,rpl`: the flags of `state`, as `ofproto/trace` writes them.
pub fn ct_state_text(state: u32) -> String {
    std::iter::once("trk")
        .chain(
            CT_FLAGS
                .iter()
                .filter(|(_, b)| state & b != 0)
                .map(|(n, _)| *n),
        )
        .collect::<Vec<_>>()
        .join(",")
}

/// An ARP packet of `kind` (its neighbour discovery counterpart for IPv6) from `src_mac`/`src`
/// about `dst`, a reply sent to `to_mac`.
fn arp(
    kind: ArpKind,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    to_mac: Mac,
) -> Result<Packet, Error> {
    let all_nodes: Ipv6Addr = "ff02::1".parse().expect("constant address");
    Ok(match (kind, src, dst) {
        (ArpKind::Request | ArpKind::Probe, IpAddr::V4(s), IpAddr::V4(d)) => {
            Packet::arp_request(src_mac, s, d)
        }
        (ArpKind::Request | ArpKind::Probe, IpAddr::V6(s), IpAddr::V6(d)) => {
            Packet::neighbor_solicitation(src_mac, s, d)
        }
        (ArpKind::Reply, IpAddr::V4(s), IpAddr::V4(d)) => Packet::arp_reply(src_mac, s, to_mac, d),
        (ArpKind::Reply, IpAddr::V6(s), IpAddr::V6(d)) => {
            Packet::neighbor_advertisement(src_mac, to_mac, s, d, s, src_mac)
        }
        (ArpKind::Gratuitous, IpAddr::V4(s), _) => Packet::arp_request(src_mac, s, s),
        (ArpKind::Gratuitous, IpAddr::V6(s), _) => Packet::neighbor_advertisement(
            src_mac,
            group_mac(all_nodes.into()).expect("a multicast address"),
            s,
            all_nodes,
            s,
            src_mac,
        ),
        _ => return Err(families(src, dst)),
    })
}

/// The Ethernet group address of a multicast or broadcast IP address: 01:00:5e and the low 23
/// bits of an IPv4 group, 33:33 and the low 32 bits of an IPv6 one, ff:ff:ff:ff:ff:ff for
/// 255.255.255.255.
pub fn group_mac(ip: IpAddr) -> Option<Mac> {
    match ip {
        IpAddr::V4(a) if a.is_broadcast() => Some(Mac::BROADCAST),
        IpAddr::V4(a) if a.is_multicast() => Some(Mac::from_value(
            0x0100_5e00_0000 | u128::from(u32::from(a) & 0x7f_ffff),
        )),
        IpAddr::V6(a) if a.is_multicast() => Some(Mac::from_value(
            0x3333_0000_0000 | (u128::from(a) & 0xffff_ffff),
        )),
        _ => None,
    }
}

/// Who answers a VM's ARP (IPv6: neighbour solicitation) for `ip` on `network`, and with which
/// MAC: the ARP (ND) responder for the port holding it, else, for a DHCP server's address, for
/// the distributed DHCP server.
fn answerer(inv: &Inventory, network: &str, ip: IpAddr) -> Option<(Mac, String)> {
    let responder = if ip.is_ipv4() { "ARP" } else { "ND" };
    if let Some(p) = inv.port_with_ip(network, ip).filter(|p| p.admin_up) {
        return Some((
            mac_of(p.mac),
            format!(
                "the {responder} responder answers for {}",
                inv.port_label(p)
            ),
        ));
    }
    let IpAddr::V4(v4) = ip else { return None };
    inv.topology
        .subnets_on(network)
        .any(|s| s.enable_dhcp && s.dhcp_server_ip() == Some(v4))
        .then(|| {
            (
                mac_of(DHCP_SERVER_MAC),
                format!("the ARP responder answers for the DHCP server of the network (no port has {ip})"),
            )
        })
}

/// The DHCP server a renewal from `source` goes to: the server identifier of its IPv4 subnet,
/// and the MAC a VM learns for it with who answers.
fn dhcp_server(inv: &Inventory, source: &Port) -> Result<(Ipv4Addr, (Mac, String)), Error> {
    let label = inv.port_label(source);
    let subnet = source
        .ips
        .iter()
        .find_map(|ip| {
            inv.subnet_of(&source.network_id, *ip)
                .filter(|s| matches!(s.cidr, IpNet::V4(_)))
        })
        .ok_or_else(|| {
            Error::Input(format!(
                "{label} has no IPv4 address on a subnet of its network: it has no lease to renew"
            ))
        })?;
    let server = subnet
        .dhcp_server_ip()
        .filter(|_| subnet.enable_dhcp)
        .ok_or_else(|| {
            Error::Input(format!(
                "subnet {} of {label} has DHCP disabled: there is no lease to renew",
                subnet.cidr
            ))
        })?;
    let answer = answerer(inv, &source.network_id, server.into())
        .ok_or_else(|| Error::Input(format!("nothing answers ARP for the DHCP server {server}")))?;
    Ok((server, answer))
}

/// The destination MAC of an IP packet from `source` to `dst_ip` (meant for `target`), with
/// the notes that say why.
fn destination_mac(
    inv: &Inventory,
    source: &Port,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    target: Option<&Port>,
) -> (Mac, Vec<String>) {
    let net = &source.network_id;
    if let Some(mac) = group_mac(dst_ip) {
        let what = if mac == Mac::BROADCAST {
            "the broadcast address".to_string()
        } else if solicited_node(dst_ip) {
            format!("a solicited-node multicast group, whose group MAC is {mac}")
        } else {
            format!("a multicast group, whose group MAC is {mac}")
        };
        return (mac, vec![format!("{dst_ip} is {what}")]);
    }
    let routed_by = target
        .filter(|t| t.network_id != *net)
        .and_then(|t| inv.router_between(net, &t.network_id));
    match (target, routed_by) {
        (Some(t), None) => {
            let whose = if t.network_id == *net {
                format!("which has {dst_ip} on {}", inv.network_label(net))
            } else {
                format!(
                    "but that port is on {}, not on the source's {}, and no router joins them",
                    inv.network_label(&t.network_id),
                    inv.network_label(net)
                )
            };
            let note = format!(
                "destination MAC {}: {}'s, {whose}",
                mac_of(t.mac),
                inv.port_label(t)
            );
            (mac_of(t.mac), vec![note])
        }
        (Some(t), Some(router)) => {
            let (mac, why) = next_hop(inv, source, src_ip, dst_ip);
            let whose = if t.router().is_some() {
                format!("an address of {}", inv.port_label(t))
            } else {
                format!(
                    "an address of {} on {}, which {} joins to {}",
                    inv.port_label(t),
                    inv.network_label(&t.network_id),
                    inv.router_label(router),
                    inv.network_name(net)
                )
            };
            (mac, vec![why, format!("{dst_ip} is {whose}")])
        }
        (None, _) => {
            let (mac, why) = next_hop(inv, source, src_ip, dst_ip);
            let mut notes = vec![why];
            if let Some(other) = inv
                .topology
                .ports
                .values()
                .find(|p| p.network_id != *net && p.ips.contains(&dst_ip))
            {
                notes.push(format!(
                    "{dst_ip} is also an address of {} on {}, another network, which no \
                     router joins to {}",
                    inv.port_label(other),
                    inv.network_label(&other.network_id),
                    inv.network_name(net)
                ));
            }
            (mac, notes)
        }
    }
}

/// Whether `ip` is an IPv6 solicited-node multicast address (ff02::1:ff00:0/104).
fn solicited_node(ip: IpAddr) -> bool {
    let prefix: Ipv6Addr = "ff02::1:ff00:0".parse().expect("constant address");
    matches!(ip, IpAddr::V6(a) if u128::from(a) >> 24 == u128::from(prefix) >> 24)
}

/// The destination MAC for an address no port on the source's network has, with the reason: the
/// MAC whoever answers a VM's ARP for it (an on-link address) or for its gateway (an off-subnet
/// one) answers with, else broadcast.
fn next_hop(inv: &Inventory, source: &Port, src_ip: IpAddr, dst_ip: IpAddr) -> (Mac, String) {
    let net = &source.network_id;
    let on_net = inv.network_label(net);
    let ask = asking(dst_ip);
    let unanswered = "traced with the broadcast destination MAC";
    if inv.subnet_of(net, dst_ip).is_some() {
        return match answerer(inv, net, dst_ip) {
            Some((mac, who)) => (mac, format!("{dst_ip} is on {on_net}, at {mac}: {who}")),
            None => (
                Mac::BROADCAST,
                format!(
                    "no port on {on_net} has {dst_ip}: a VM's {ask} for it would go unanswered; \
                     {unanswered}"
                ),
            ),
        };
    }
    let Some(subnet) = inv.subnet_of(net, src_ip) else {
        return (
            Mac::BROADCAST,
            format!(
                "{dst_ip} is not on {on_net}, and neither is the source {src_ip}: a VM with \
                 that address has no gateway; {unanswered}"
            ),
        );
    };
    let Some(gw) = subnet.gateway else {
        return (
            Mac::BROADCAST,
            format!(
                "{dst_ip} is not on {on_net}, and the source's subnet {} has no gateway; \
                 {unanswered}",
                subnet.cidr
            ),
        );
    };
    match answerer(inv, net, gw) {
        Some((mac, who)) => (
            mac,
            format!("{dst_ip} is not on {on_net}: sent to the gateway {gw} at {mac}, as {who}"),
        ),
        None => (
            Mac::BROADCAST,
            format!(
                "{dst_ip} is not on {on_net}, and a VM's {ask} for its gateway {gw} would go \
                 unanswered (no port has it{}); {unanswered}",
                if gw.is_ipv4() {
                    ", and the subnet has no DHCP server"
                } else {
                    ""
                }
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
pub fn describe(inv: &Inventory, built: &Built) -> String {
    let what = built.probe.name(built.dst_ip.is_ipv6());
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

/// Where a packet from `source` arriving over the tunnel comes from, as `t` says.
fn arrival(inv: &Inventory, source: &Port, t: &FromTunnel) -> Result<Arrival, Error> {
    let label = inv.port_label(source);
    let chassis = match (&t.chassis, &source.host) {
        (Some(c), _) | (None, Some(c)) => inv.find_chassis(c)?.clone(),
        (None, None) => {
            return Err(Error::Input(format!(
                "{label} is bound to no chassis: name the chassis the packet comes from"
            )));
        }
    };
    let (vni, network) = match &t.vni {
        Some(v) => match v.parse::<u32>() {
            Ok(n) => (n, inv.network_with_vni(n.into()).map(|n| n.id.clone())),
            Err(_) => {
                let n = inv.find_network(v)?;
                (vni_of(inv, &n.id)?, Some(n.id.clone()))
            }
        },
        None => (
            vni_of(inv, &source.network_id)?,
            Some(source.network_id.clone()),
        ),
    };
    Ok(Arrival {
        chassis,
        vni,
        network,
    })
}

/// The VNI of `network`, which a packet over the tunnel carries.
fn vni_of(inv: &Inventory, network: &str) -> Result<u32, Error> {
    inv.topology
        .networks
        .get(network)
        .and_then(|n| n.vni)
        .ok_or_else(|| {
            Error::Input(format!(
                "{} has no VNI: none of its packets comes over the tunnel",
                inv.network_label(network)
            ))
        })
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
        Request::new("web1", Some(to), probe)
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
            describe(&inv, &b),
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
        let arp = build(&inv, &req("10.0.0.12", Probe::Arp(ArpKind::Request)))
            .unwrap()
            .packet;
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
    fn group_macs_of_multicast_and_broadcast_addresses() {
        let g = |ip: &str| group_mac(ip.parse().unwrap()).map(|m| m.to_string());
        assert_eq!(g("224.0.0.251").as_deref(), Some("01:00:5e:00:00:fb"));
        // Only the low 23 bits of the group.
        assert_eq!(g("239.129.2.3").as_deref(), Some("01:00:5e:01:02:03"));
        assert_eq!(g("ff02::1:ff00:12").as_deref(), Some("33:33:ff:00:00:12"));
        assert_eq!(g("ff05::1:3").as_deref(), Some("33:33:00:01:00:03"));
        assert_eq!(g("255.255.255.255").as_deref(), Some("ff:ff:ff:ff:ff:ff"));
        assert_eq!(g("10.0.0.1"), None);
        assert!(solicited_node("ff02::1:ff00:12".parse().unwrap()));
        assert!(!solicited_node("ff02::1".parse().unwrap()));
    }

    #[test]
    fn the_gateway_is_whoever_answers_arp_for_it() {
        // A router interface holds it: its MAC (the default inventory's port "gw").
        let b = build(&inventory(), &req("8.8.8.8", Probe::Echo)).unwrap();
        assert_eq!(
            b.notes[0],
            "8.8.8.8 is not on network web (n1): sent to the gateway 10.0.0.1 at \
             fa:16:3e:00:00:fe, as the ARP responder answers for port gw"
        );
        // No port: the DHCP server answers for it; without DHCP, nothing does.
        let without_gw = |dhcp: bool| {
            let mut items: Vec<_> = inventory()
                .items
                .into_iter()
                .filter(|(k, _)| k != "/r/ports/gw")
                .collect();
            items[1].1["enable_dhcp"] = json!(dhcp);
            Inventory::from_items(items)
        };
        let b = build(&without_gw(true), &req("8.8.8.8", Probe::Echo)).unwrap();
        assert_eq!(b.packet.get(Field::EthDst), Some(0x0277_7976_0001));
        let b = build(&without_gw(false), &req("8.8.8.8", Probe::Echo)).unwrap();
        assert_eq!(b.packet.get(Field::EthDst), Some(Mac::BROADCAST.value()));
        assert_eq!(
            b.notes[0],
            "8.8.8.8 is not on network web (n1), and a VM's ARP for its gateway 10.0.0.1 would \
             go unanswered (no port has it, and the subnet has no DHCP server); traced with the \
             broadcast destination MAC"
        );
        // An on-link address the DHCP server has is answered too.
        let b = build(&without_gw(true), &req("10.0.0.1", Probe::Udp(53))).unwrap();
        assert_eq!(b.packet.get(Field::EthDst), Some(0x0277_7976_0001));
        let e = build(
            &without_gw(false),
            &Request::new("web1", None, Probe::Dhcp(DhcpKind::Renew)),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.0.0.0/24 of port web1 has DHCP disabled: there is no lease to renew"
        );
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
        let mut r = req("10.0.0.12", Probe::Arp(ArpKind::Request));
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
