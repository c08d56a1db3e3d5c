//! The verdict of a simulated packet in API terms: which port, chassis, router or responder got
//! it, what the agent does with what is sent to it (by the `controller` action's reason,
//! [`Punt`]), or why it was dropped (port security with the offending address, a network type
//! the pipeline does not serve, no route in a router, the security groups ([`acl`]), an empty
//! flood, a table miss in a named stage), and whether the port it was meant for got it.

use std::net::{IpAddr, Ipv4Addr};

use flowsim::{ControllerPacket, DropReason, Output, Packet, Step, Trace};
use ipnet::IpNet;
use openflow::Field;
use openflow::action::reason;
use pipeline::apps::Punt;
use pipeline::cookie::Owner;
use pipeline::model::{Port, Router};
use pipeline::tables::{
    self, ACL_EGRESS_STATE, ACL_INGRESS_STATE, FLOOD, INGRESS, NEIGHBOUR, ROUTE, ROUTER_IN,
};

use crate::acl;
use crate::inventory::{Inventory, Route, dst_prefix};
use crate::local::Local;
use crate::path::entered;
use crate::request::{Arrival, Built, mac_of};

fn is_group_mac(mac: u128) -> bool {
    // The I/G bit: the lowest bit of the first octet.
    (mac >> 40) & 1 == 1
}

/// A stage's name and app, as shown after its table number: `ip-routing, app routing`.
pub fn stage_name(table: u8) -> Option<String> {
    tables::stage(table).map(|s| format!("{}, app {}", s.name, s.app))
}

/// `table 22 (ip-routing, app routing)`, or `table 5` outside the pipeline's stages.
pub fn table_label(table: u8) -> String {
    match stage_name(table) {
        Some(name) => format!("table {table} ({name})"),
        None => format!("table {table}"),
    }
}

/// The packet's IPv4 or IPv6 source address.
fn ip_src(p: &Packet) -> Option<IpAddr> {
    p.get(Field::Ipv4Src)
        .map(|v| IpAddr::V4(Ipv4Addr::from(v as u32)))
        .or_else(|| p.get(Field::Ipv6Src).map(|v| IpAddr::V6(v.into())))
}

/// Why `network`'s ports get no flows on this chassis, if its type is one the pipeline does not
/// serve or it is on a physical network the chassis does not reach.
fn unserved(inv: &Inventory, local: &Local, network: &str) -> Option<String> {
    let n = inv.topology.networks.get(network)?;
    if n.vni.is_some() {
        return None;
    }
    if let Some(p) = &n.physical {
        if local.patches.contains_key(&p.physnet) {
            return None;
        }
        return Some(format!(
            "{} is a {} network on physical network {}, which this chassis has no bridge \
             mapping for",
            inv.network_label(network),
            n.kind,
            p.physnet
        ));
    }
    let kind = if n.kind.is_empty() {
        "a network without a type".to_string()
    } else {
        format!("a {} network", n.kind)
    };
    Some(format!(
        "{} is {kind}, which the pipeline does not serve (it carries vxlan, geneve, flat \
         and vlan networks)",
        inv.network_label(network)
    ))
}

/// The verdict, one sentence per line.
pub fn verdict(inv: &Inventory, local: &Local, built: &Built, trace: &Trace) -> Vec<String> {
    let v = &trace.verdict;
    let mut lines = Vec::new();
    let flooded = trace.path().iter().any(|(t, _)| *t == FLOOD);
    let net = built.network();
    if flooded && !v.outputs.is_empty() {
        let dst = flowsim::Mac::from_value(built.packet.get(Field::EthDst).unwrap_or_default());
        let kind = match dst {
            flowsim::Mac::BROADCAST => "broadcast".to_string(),
            flowsim::Mac([0x33, 0x33, 0xff, ..]) => format!("solicited-node multicast {dst}"),
            m if is_group_mac(m.value()) => format!("multicast {dst}"),
            _ => format!("unknown unicast: no port of the network has MAC {dst}"),
        };
        lines.push(format!("flooded on {} ({kind}):", inv.network_label(net)));
    }
    let bullet = if flooded { "  - " } else { "" };
    for o in &v.outputs {
        lines.push(format!("{bullet}{}", output(inv, local, trace, o)));
    }
    for c in &v.controller {
        lines.push(to_agent(inv, built, trace, c));
    }
    if let Some(reason) = &v.drop {
        lines.push(dropped(inv, local, built, trace, flooded, reason));
    }
    // A router's interface is no destination of its own: the router's verdict says it all; nor
    // is a load balancer's VIP port (the path says which member the packet went to).
    if let Some(t) = &built.target
        && t.router().is_none()
        && t.device_owner != pipeline::model::LOAD_BALANCER_VIP
        && !chained(inv, trace)
        && !answered(inv, trace)
        && !reached(inv, local, trace, t)
    {
        lines.push(missed(inv, local, net, t));
    }
    lines
}

/// That the port `t`, meant to get the packet from a port on `net`, did not, and what keeps
/// them apart if something does.
fn missed(inv: &Inventory, local: &Local, net: &str, t: &Port) -> String {
    let label = inv.port_label(t);
    if let Some(why) = unserved(inv, local, &t.network_id) {
        return format!("{label} did not get it: {why}");
    }
    if t.network_id == net || inv.router_between(net, &t.network_id).is_some() {
        return format!("{label} did not get it");
    }
    format!(
        "{label} did not get it: it is on {}, and different networks are isolated (no router \
         joins them)",
        inv.network_label(&t.network_id)
    )
}

/// Whether the packet was answered rather than forwarded: an ARP reply or a router's echo reply
/// on its input port, or sent to the agent for a reason the agent answers.
fn answered(inv: &Inventory, trace: &Trace) -> bool {
    let v = &trace.verdict;
    let replied = |o: &Output| {
        o.port == trace.in_port
            && (o.packet.get(Field::ArpOp) == Some(2) || router_reply(inv, &o.packet).is_some())
    };
    v.outputs.iter().any(replied)
        || v.controller
            .iter()
            .filter_map(|c| Punt::from_userdata(&c.userdata))
            .any(|p| p != Punt::TtlExceeded)
}

/// The router that answered with `p`, an echo reply still in that router's context, and the
/// address it answered from.
fn router_reply<'i>(inv: &'i Inventory, p: &Packet) -> Option<(&'i Router, IpAddr)> {
    let reply = p.get(Field::IcmpType) == Some(0) || p.get(Field::Icmpv6Type) == Some(129);
    if !reply {
        return None;
    }
    let router = inv.router_with_metadata(p.get(Field::Metadata)? as u64)?;
    Some((router, ip_src(p)?))
}

/// A packet sent to the controller: the agent of this chassis, and what it does with it by the
/// reason the flow gave.
fn to_agent(inv: &Inventory, built: &Built, trace: &Trace, c: &ControllerPacket) -> String {
    let owner = inv.owner_of(c.cookie);
    let port = match &owner {
        Some(Owner::Port(id) | Owner::RouterInterface(id)) => inv.topology.ports.get(&**id),
        _ => None,
    };
    let generic = || {
        format!(
            "sent to the agent of this chassis (controller) by a flow of {}",
            inv.describe_cookie(c.cookie)
        )
    };
    match Punt::from_userdata(&c.userdata) {
        Some(Punt::NeighbourSolicitation) => {
            let target = c.packet.get(Field::NdTarget).map(std::net::Ipv6Addr::from);
            match (port, target) {
                (Some(q), Some(ip)) => format!(
                    "answered by the ND responder for {}: the agent of this chassis replies that \
                     {ip} is at {}{}",
                    inv.port_label(q),
                    mac_of(q.mac),
                    if q.router().is_some() {
                        ", as a router"
                    } else {
                        ""
                    }
                ),
                _ => format!("neighbour solicitation: {}", generic()),
            }
        }
        Some(Punt::RouterSolicitation) => {
            let network = match &owner {
                Some(Owner::Network(id)) => &**id,
                _ => built.network(),
            };
            // The routers that advertise: those with an IPv6 interface on the network.
            let advertising: std::collections::BTreeSet<&str> = inv
                .topology
                .interfaces_on(network)
                .filter(|p| p.ips.iter().any(IpAddr::is_ipv6))
                .filter_map(Port::router)
                .collect();
            let routers: Vec<String> = advertising
                .into_iter()
                .map(|r| inv.router_label(r))
                .collect();
            let of = if routers.is_empty() {
                String::new()
            } else {
                format!(" of {}", routers.join(" and "))
            };
            format!(
                "router solicitation on {}: sent to the agent of this chassis, which answers \
                 with a router advertisement{of}",
                inv.network_label(network)
            )
        }
        Some(Punt::TtlExceeded) => {
            let router = match &owner {
                Some(Owner::Router(id)) => inv.router_label(id),
                _ => "the router".into(),
            };
            let from = entered(inv, trace)
                .map(|rif| {
                    format!(
                        " from its interface on {}",
                        inv.network_label(&rif.network_id)
                    )
                })
                .unwrap_or_default();
            format!(
                "TTL would expire in {router}: sent to the agent of this chassis, which answers \
                 with ICMP time exceeded{from}"
            )
        }
        Some(Punt::Dhcp) => format!(
            "DHCP request: sent to the agent of this chassis, which answers as the DHCP server \
             of {}",
            inv.network_label(built.network())
        ),
        Some(Punt::Dhcpv6) => format!("DHCPv6 request: {}", generic()),
        Some(Punt::ResolveNeighbour) => {
            let reg = |r: u8| {
                let value = c.packet.get(Field::Reg(r)).unwrap_or(0);
                u32::try_from(value).unwrap_or(0)
            };
            let ipv6 = c.packet.get(Field::EthType) == Some(0x86dd);
            let hop = if ipv6 {
                let words = pipeline::tables::REG_NEXT_HOP6.map(reg);
                let ip = pipeline::tables::next_hop6_from_words(words);
                (!ip.is_unspecified()).then(|| (ip.to_string(), "neighbour solicitation"))
            } else {
                Some(reg(pipeline::tables::REG_NEXT_HOP))
                    .filter(|ip| *ip != 0)
                    .map(|ip| (std::net::Ipv4Addr::from(ip).to_string(), "ARP"))
            };
            match hop {
                Some((ip, how)) => format!(
                    "the next hop {ip} has no known MAC yet: sent to the agent of this chassis, \
                     which asks for it by {how} and sends the packet on when it answers"
                ),
                None => format!("unknown next hop: {}", generic()),
            }
        }
        Some(Punt::NeighbourLearned) => format!(
            "an answer (ARP, or neighbour advertisement) to this chassis on an external \
             network: the switch learned its sender, and the agent of this chassis sends on the packets that waited for it ({})",
            generic()
        ),
        Some(Punt::Reject) => format!(
            "a new connection to {}, which has no member available: the agent of this chassis \
             answers it with a TCP reset (ICMP port unreachable for UDP)",
            inv.describe_cookie(c.cookie)
        ),
        Some(Punt::HealthReply) => format!(
            "an answer to a health check of {}: sent to the agent of this chassis, which probes \
             the member",
            inv.describe_cookie(c.cookie)
        ),
        None if c.reason == reason::INVALID_TTL => format!(
            "TTL expired at a dec_ttl: {} with reason invalid_ttl; the agent answers only the \
             reasons its flows give, so nothing answers it",
            generic()
        ),
        None => generic(),
    }
}

/// Whether `t` got the packet: delivered to its VIF here, or tunnelled to its chassis.
fn reached(inv: &Inventory, local: &Local, trace: &Trace, t: &Port) -> bool {
    let vni = inv.topology.networks.get(&t.network_id).and_then(|n| n.vni);
    trace.verdict.outputs.iter().any(|o| match &o.tunnel {
        Some(tun) => {
            Some(tun.id) == vni.map(u64::from)
                && inv.chassis_with_ip(tun.dst).map(|c| Some(&c.id)) == Some(t.host.as_ref())
        }
        None => local.vifs.get(&t.id) == Some(&o.port),
    })
}

fn output(inv: &Inventory, local: &Local, trace: &Trace, o: &Output) -> String {
    let p = &o.packet;
    if o.port == trace.in_port {
        if p.get(Field::ArpOp) == Some(2) {
            let spa = Ipv4Addr::from(p.get(Field::ArpSpa).unwrap_or_default() as u32);
            let sha = p.get(Field::ArpSha).unwrap_or_default();
            let who = inv
                .topology
                .ports
                .values()
                .find(|q| u128::from(q.mac) == sha && q.ips.contains(&IpAddr::V4(spa)))
                .map(|q| format!(" for {}", inv.port_label(q)))
                .unwrap_or_default();
            return format!(
                "answered by the ARP responder{who}: {spa} is at {}",
                flowsim::Mac::from_value(sha)
            );
        }
        if let Some((router, from)) = router_reply(inv, p) {
            let icmp = if from.is_ipv4() { "ICMP" } else { "ICMPv6" };
            return format!(
                "answered by {}: {icmp} echo reply from {from}",
                inv.router_label(&router.id)
            );
        }
        return "sent back out of the port it came in on".into();
    }
    if let Some(tun) = &o.tunnel {
        let chassis = match inv.chassis_with_ip(tun.dst) {
            Some(c) => format!("chassis {} ({})", c.id, tun.dst),
            None => format!("{} (no registered chassis)", tun.dst),
        };
        if tun.id == u64::from(pipeline::tables::SFC_VNI) {
            return format!(
                "sent over the tunnel to {chassis} with the chaining tunnel id, for a service \
                 function there (path: the chain's hop)"
            );
        }
        let dst = p.get(Field::EthDst).unwrap_or_default();
        let network = inv.network_with_vni(tun.id);
        let what = match network {
            None => format!("VNI {} belongs to no network", tun.id),
            Some(n) if is_group_mac(dst) => {
                format!("for every port of {} there", inv.network_label(&n.id))
            }
            Some(n) => match inv.port_with_mac(&n.id, dst as u64) {
                Some(q) => format!("for {}", inv.port_label(q)),
                None => format!(
                    "for MAC {}, which no port of {} has",
                    flowsim::Mac::from_value(dst),
                    inv.network_label(&n.id)
                ),
            },
        };
        return format!(
            "sent over the tunnel to {chassis} with VNI {} → {what}",
            tun.id
        );
    }
    match local
        .vif_at(o.port)
        .and_then(|id| inv.topology.ports.get(id))
    {
        Some(q) => format!("delivered to {} on this chassis", inv.port_label(q)),
        None => match local.vif_at(o.port) {
            Some(id) => format!(
                "delivered to VIF {id} on OpenFlow port {}, a port the server does not know",
                o.port
            ),
            None => format!(
                "output to OpenFlow port {}, which is neither a VIF nor the tunnel",
                o.port
            ),
        },
    }
}

fn dropped(
    inv: &Inventory,
    local: &Local,
    built: &Built,
    trace: &Trace,
    flooded: bool,
    reason: &DropReason,
) -> String {
    let steps = trace.steps();
    let Some(last) = steps.last() else {
        return format!("dropped: {reason}");
    };
    if flooded {
        let elsewhere = match built.arrival {
            Some(_) => "(flooded packets from the tunnel stay on this chassis)",
            None => "or on another chassis that is up",
        };
        return format!(
            "dropped: flooded on {}, but no other port of it is on this chassis {elsewhere}",
            inv.network_label(built.network())
        );
    }
    if last.table == INGRESS && is_miss(last) {
        return match &built.arrival {
            Some(a) => tunnel_ingress_drop(inv, local, a),
            None => ingress_drop(inv, local, &built.source, &trace.packet),
        };
    }
    if matches!(last.table, ACL_EGRESS_STATE | ACL_INGRESS_STATE)
        && let Some(why) = acl::security(inv, local, trace).pop()
    {
        return why;
    }
    if let Some(why) = router_drop(inv, built, trace, last) {
        return why;
    }
    let stage = table_label(last.table);
    match &last.flow {
        Some(f) => format!(
            "dropped in {stage}: {reason} (flow owner: {})",
            inv.describe_cookie(f.cookie)
        ),
        None => format!("dropped in {stage}: {reason}"),
    }
}

/// Whether `step` found no flow of its own: a table miss, or the stage's fixed miss flow.
fn is_miss(step: &Step) -> bool {
    step.flow
        .as_ref()
        .is_none_or(|f| Owner::Static.owns(f.cookie))
}

/// Why a router dropped the packet in its last step, if one did: no route, an extra route
/// without a next hop, an address of the router that answers only pings, an unknown next hop.
fn router_drop(inv: &Inventory, built: &Built, trace: &Trace, last: &Step) -> Option<String> {
    let dst = built.dst_ip;
    let router = || {
        entered(inv, trace)
            .and_then(Port::router)
            .map_or_else(|| "the router".to_string(), |r| inv.router_label(r))
    };
    let owned_router = || match last.flow.as_ref().and_then(|f| inv.owner_of(f.cookie)) {
        Some(Owner::Router(id)) => inv.topology.routers.get(&*id),
        _ => None,
    };
    let drops = last.flow.as_ref().is_some_and(|f| f.instructions.is_drop());
    match (last.table, is_miss(last)) {
        (ROUTE, true) => Some(format!("no route in {} to {dst}: dropped", router())),
        (ROUTE, false) if drops => {
            let r = owned_router()?;
            let prefix = dst_prefix(&last.flow.as_ref()?.match_)?;
            let Route::Extra { via, .. } = inv.route(r, prefix)? else {
                return None;
            };
            Some(format!(
                "dropped by {}: its extra route {prefix} goes via {via}, which no port on its \
                 networks has (no next hop; a shorter route is not taken)",
                inv.router_label(&r.id)
            ))
        }
        (ROUTER_IN, false) if drops => {
            let r = owned_router()?;
            Some(format!(
                "dropped by {}: {dst} is its own address, and it answers only ICMP echo \
                 requests",
                inv.router_label(&r.id)
            ))
        }
        (NEIGHBOUR, true) => {
            let onto = trace
                .steps()
                .into_iter()
                .rev()
                .filter(|s| s.table == ROUTE)
                .find_map(|s| s.flow.as_ref()?.instructions.write_metadata())
                .and_then(|(vni, _)| inv.network_with_vni(vni))
                .map(|n| format!(" onto {}", inv.network_label(&n.id)))
                .unwrap_or_default();
            Some(format!(
                "routed by {}{onto}, where no port has {dst}: dropped (no next hop)",
                router()
            ))
        }
        _ => None,
    }
}

/// Why no ingress flow admitted a packet from `port`: a network the pipeline does not serve,
/// port security with the offending address, or the port's state.
fn ingress_drop(inv: &Inventory, local: &Local, port: &Port, p: &Packet) -> String {
    if let Some(why) = unserved(inv, local, &port.network_id) {
        return format!("dropped at ingress: {why}");
    }
    let label = inv.port_label(port);
    let security = |what: String| format!("dropped: port security ({what})");
    if port.port_security {
        let mac = p.get(Field::EthSrc).unwrap_or_default();
        let macs: Vec<u128> = std::iter::once(port.mac)
            .chain(port.pairs.iter().map(|(_, m)| *m))
            .map(u128::from)
            .collect();
        if !macs.contains(&mac) {
            return security(format!(
                "source MAC {} is not the MAC of {label}, {}",
                flowsim::Mac::from_value(mac),
                mac_of(port.mac)
            ));
        }
        let ip_src = match p.get(Field::EthType) {
            Some(0x0806) => {
                let sha = p.get(Field::ArpSha).unwrap_or_default();
                if sha != mac {
                    return security(format!(
                        "ARP sender MAC {} differs from the source MAC",
                        flowsim::Mac::from_value(sha)
                    ));
                }
                if p.get(Field::ArpSpa) == Some(0) {
                    return security(
                        "an ARP probe (sender 0.0.0.0): ports with port security send none into \
                         the network; the guest's duplicate address detection hears no answer and \
                         goes ahead"
                            .into(),
                    );
                }
                p.get(Field::ArpSpa)
                    .map(|v| IpAddr::V4(Ipv4Addr::from(v as u32)))
            }
            _ => ip_src(p),
        };
        if let Some(ip) = ip_src
            && !allowed(port, ip, mac)
        {
            return security(not_allowed(port, &label, ip, mac));
        }
    }
    let network = inv.topology.networks.get(&port.network_id);
    let why = if !port.admin_up {
        format!("{label} is administratively down")
    } else if network.is_none() {
        format!("its network {} is unknown", port.network_id)
    } else if network.is_some_and(|n| !n.admin_up) {
        format!(
            "{} is administratively down",
            inv.network_label(&port.network_id)
        )
    } else {
        format!(
            "no flow of {} admits this packet from {label}",
            table_label(INGRESS)
        )
    };
    format!("dropped at ingress: {why}")
}

/// Why no ingress flow admitted a packet from the tunnel: its VNI is no network's, or that
/// network is not one this chassis carries.
fn tunnel_ingress_drop(inv: &Inventory, local: &Local, a: &Arrival) -> String {
    let why = match &a.network {
        None => format!("no network has VNI {}", a.vni),
        Some(n) => match unserved(inv, local, n) {
            Some(why) => why,
            None => format!(
                "VNI {} is {}'s, which this chassis does not carry (no port here needs it)",
                a.vni,
                inv.network_label(n)
            ),
        },
    };
    format!("dropped at ingress from the tunnel: {why}")
}

/// An allowed source address or prefix: `10.0.0.5`, or `10.0.0.0/24`.
fn net_text(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The addresses allowed from `port` with source MAC `mac`: its own with its MAC, and the
/// allowed pairs with that MAC.
fn allowed_with(port: &Port, mac: u128) -> Vec<IpNet> {
    let own = (mac == u128::from(port.mac)).then_some(&port.ips);
    own.into_iter()
        .flatten()
        .map(|ip| IpNet::from(*ip))
        .chain(
            port.pairs
                .iter()
                .filter(|(_, m)| u128::from(*m) == mac)
                .map(|(n, _)| *n),
        )
        .collect()
}

/// Why `ip` with source MAC `mac` is not admitted from `port` (labelled `label`): the address
/// is none of the port's, or it is, but only with another MAC.
fn not_allowed(port: &Port, label: &str, ip: IpAddr, mac: u128) -> String {
    let mut macs_for_ip: Vec<u64> = port
        .ips
        .contains(&ip)
        .then_some(port.mac)
        .into_iter()
        .chain(
            port.pairs
                .iter()
                .filter(|(n, _)| n.contains(&ip))
                .map(|(_, m)| *m),
        )
        .collect();
    macs_for_ip.sort_unstable();
    macs_for_ip.dedup();
    if macs_for_ip.is_empty() {
        return if port.pairs.is_empty() {
            format!("source {ip} is not an address of {label}")
        } else {
            format!("source {ip} is neither an address of {label} nor in its allowed address pairs")
        };
    }
    let with_mac: Vec<String> = allowed_with(port, mac).iter().map(net_text).collect();
    let macs: Vec<String> = macs_for_ip.iter().map(|m| mac_of(*m).to_string()).collect();
    format!(
        "{label} allows source MAC {} only with {}, and source {ip} only with MAC {}",
        flowsim::Mac::from_value(mac),
        if with_mac.is_empty() {
            "no address".to_string()
        } else {
            with_mac.join(", ")
        },
        macs.join(" or ")
    )
}

/// Whether `ip` with source MAC `mac` is one of the port's addresses or allowed pairs.
fn allowed(port: &Port, ip: IpAddr, mac: u128) -> bool {
    // Unspecified sources (DHCP discovery, duplicate address detection) have flows of their own.
    ip.is_unspecified() || allowed_with(port, mac).iter().any(|n| n.contains(&ip))
}

/// Whether a service function chain steered the packet (it goes to a function, not to its
/// destination, from here).
fn chained(inv: &Inventory, trace: &Trace) -> bool {
    trace.steps().iter().any(|s| {
        s.table == pipeline::tables::SFC
            && s.flow
                .as_ref()
                .is_some_and(|f| matches!(inv.owner_of(f.cookie), Some(Owner::PortChain(_))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{ArpKind, Probe, Request, build};
    use serde_json::json;

    /// web1 (port security, on c1) and web2 (on c2) on network web (VNI 1); chassis c2.
    fn inventory(web1: serde_json::Value) -> Inventory {
        let mut p1 = json!({"id": "p1", "name": "web1", "network_id": "n1",
            "mac_address": "fa:16:3e:00:00:01", "fixed_ips": [{"ip_address": "10.0.0.11"}],
            "binding:host_id": "c1", "status": "ACTIVE"});
        if let (Some(o), Some(extra)) = (p1.as_object_mut(), web1.as_object()) {
            o.extend(extra.clone());
        }
        Inventory::from_items(vec![
            (
                "/r/networks/n1".into(),
                json!({"id": "n1", "name": "web", "provider:network_type": "vxlan",
                       "provider:segmentation_id": 1}),
            ),
            ("/r/ports/p1".into(), p1),
            (
                "/r/ports/p2".into(),
                json!({"id": "p2", "name": "web2", "network_id": "n1",
                       "mac_address": "fa:16:3e:00:00:02",
                       "fixed_ips": [{"ip_address": "10.0.0.12"}],
                       "binding:host_id": "c2", "status": "ACTIVE"}),
            ),
            (
                "/chassis/c2".into(),
                json!({"id": "c2", "tunnel_ip": "172.31.0.2"}),
            ),
        ])
    }

    /// The verdict for web1's packet to web2 (`src_mac` spoofed if given) through `flows`
    /// (web1 on OpenFlow port 2, the tunnel on 1).
    fn verdict_of(
        inv: &Inventory,
        flows: &[&str],
        probe: Probe,
        src_mac: Option<&str>,
    ) -> Vec<String> {
        let req = Request {
            src_mac: src_mac.map(|m| m.parse().unwrap()),
            ..Request::new("web1", Some("web2"), probe)
        };
        verdict_for(inv, flows, &req)
    }

    /// The verdict for `req` (from web1) through `flows`.
    fn verdict_for(inv: &Inventory, flows: &[&str], req: &Request) -> Vec<String> {
        let local = Local {
            chassis: "c1".into(),
            vifs: [("p1".to_string(), 2)].into(),
            tunnel: Some(1),
            tunnel_ip: Some("172.31.0.1".parse().unwrap()),
            origin: String::new(),
            ..Local::default()
        };
        let built = build(inv, req).unwrap();
        let flows = crate::FlowSet {
            flows: flows.iter().map(|f| f.parse().unwrap()).collect(),
            ..crate::FlowSet::default()
        };
        let (in_port, packet) = built.enter(inv, &local).unwrap();
        let t = flowsim::trace(&crate::tables(&flows, &local).unwrap(), in_port, packet);
        verdict(inv, &local, &built, &t)
    }

    #[test]
    fn ingress_drops_say_why() {
        let inv = inventory(json!({}));
        let v = verdict_of(&inv, &[], Probe::Echo, Some("02:00:00:00:00:99"));
        assert_eq!(
            v,
            [
                "dropped: port security (source MAC 02:00:00:00:00:99 is not the MAC of port web1, fa:16:3e:00:00:01)",
                "port web2 did not get it",
            ]
        );
        let arp = Probe::Arp(ArpKind::Request);
        let v = verdict_of(&inv, &[], arp, None);
        assert_eq!(
            v[0],
            "dropped at ingress: no flow of table 0 (ingress, app classifier) admits this packet from port web1"
        );
        let down = inventory(json!({"admin_state_up": false}));
        let v = verdict_of(&down, &[], Probe::Echo, None);
        assert_eq!(
            v[0],
            "dropped at ingress: port web1 is administratively down"
        );
        // Without port security, a foreign MAC is no port security drop.
        let open = inventory(json!({"port_security_enabled": false}));
        let v = verdict_of(&open, &[], Probe::Echo, Some("02:00:00:00:00:99"));
        assert_eq!(
            v[0],
            "dropped at ingress: no flow of table 0 (ingress, app classifier) admits this packet from port web1"
        );
    }

    #[test]
    fn an_expired_dec_ttl_goes_to_the_controller_unanswered() {
        let inv = inventory(json!({}));
        let req = Request {
            ttl: Some(1),
            ..Request::new("web1", Some("web2"), Probe::Echo)
        };
        let v = verdict_for(
            &inv,
            &["cookie=0x1, priority=10 actions=dec_ttl,output:1"],
            &req,
        );
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(
            v[0].starts_with("TTL expired at a dec_ttl: sent to the agent of this chassis")
                && v[0].ends_with(
                    "with reason invalid_ttl; the agent answers only the reasons its flows \
                     give, so nothing answers it"
                ),
            "{v:?}"
        );
    }

    #[test]
    fn allowed_address_pairs_pair_a_mac_with_its_addresses() {
        let inv = inventory(json!({"allowed_address_pairs": [
            {"ip_address": "10.0.0.50", "mac_address": "fa:16:3e:00:00:50"},
            {"ip_address": "10.0.1.0/24"},
        ]}));
        let from = |src_ip: &str, src_mac: &str| Request {
            src_ip: Some(src_ip.parse().unwrap()),
            src_mac: Some(src_mac.parse().unwrap()),
            ..Request::new("web1", Some("web2"), Probe::Echo)
        };
        // The pair's MAC with the port's own address: the pairing, not the address, is wrong.
        let v = verdict_for(&inv, &[], &from("10.0.0.11", "fa:16:3e:00:00:50"));
        assert_eq!(
            v[0],
            "dropped: port security (port web1 allows source MAC fa:16:3e:00:00:50 only with \
             10.0.0.50, and source 10.0.0.11 only with MAC fa:16:3e:00:00:01)"
        );
        // The port's MAC with the pair's address.
        let v = verdict_for(&inv, &[], &from("10.0.0.50", "fa:16:3e:00:00:01"));
        assert_eq!(
            v[0],
            "dropped: port security (port web1 allows source MAC fa:16:3e:00:00:01 only with \
             10.0.0.11, 10.0.1.0/24, and source 10.0.0.50 only with MAC fa:16:3e:00:00:50)"
        );
        // An address that is nobody's.
        let v = verdict_for(&inv, &[], &from("10.0.0.99", "fa:16:3e:00:00:50"));
        assert_eq!(
            v[0],
            "dropped: port security (source 10.0.0.99 is neither an address of port web1 nor \
             in its allowed address pairs)"
        );
    }

    #[test]
    fn arp_sender_must_match_the_source_mac() {
        let inv = inventory(json!({}));
        let p = Port::from_json(&json!({"id": "x", "mac_address": "fa:16:3e:00:00:01",
            "fixed_ips": [{"ip_address": "10.0.0.11"}]}))
        .unwrap();
        let pkt = Packet::arp_request(
            "fa:16:3e:00:00:09".parse().unwrap(),
            "10.0.0.11".parse().unwrap(),
            "10.0.0.12".parse().unwrap(),
        )
        .with(Field::EthSrc, 0xfa163e000001);
        assert_eq!(
            ingress_drop(&inv, &Local::default(), &p, &pkt),
            "dropped: port security (ARP sender MAC fa:16:3e:00:00:09 differs from the source MAC)"
        );
    }

    #[test]
    fn outputs_are_named_in_api_terms() {
        let inv = inventory(json!({}));
        let v = verdict_of(
            &inv,
            &[
                "table=0, priority=10,in_port=2 actions=set_field:172.31.0.9->tun_dst,set_field:0x7->tun_id,output:1",
            ],
            Probe::Echo,
            None,
        );
        assert_eq!(
            v,
            [
                "sent over the tunnel to 172.31.0.9 (no registered chassis) with VNI 7 → VNI 7 belongs to no network",
                "port web2 did not get it",
            ]
        );
        let v = verdict_of(
            &inv,
            &[
                "table=0, priority=10,in_port=2 actions=set_field:172.31.0.2->tun_dst,set_field:0x1->tun_id,output:1",
            ],
            Probe::Echo,
            None,
        );
        assert_eq!(
            v,
            ["sent over the tunnel to chassis c2 (172.31.0.2) with VNI 1 → for port web2"]
        );
        let v = verdict_of(
            &inv,
            &["table=0, priority=10 actions=output:9"],
            Probe::Echo,
            None,
        );
        assert_eq!(
            v[0],
            "output to OpenFlow port 9, which is neither a VIF nor the tunnel"
        );
        let v = verdict_of(
            &inv,
            &[
                "table=0, cookie=0x5, priority=10 actions=goto_table:30",
                "table=30, cookie=0x5, priority=1 actions=drop",
            ],
            Probe::Echo,
            None,
        );
        assert_eq!(
            v[0],
            "dropped in table 30 (l2-lookup, app l2): flow in table 30 (cookie 0x5) drops (flow owner: not a Wyvern flow (cookie 0x5))"
        );
        let v = verdict_of(
            &inv,
            &["table=0, priority=10 actions=output:in_port"],
            Probe::Echo,
            None,
        );
        assert_eq!(v[0], "sent back out of the port it came in on");
    }

    #[test]
    fn group_macs() {
        assert!(is_group_mac(flowsim::Mac::BROADCAST.value()));
        assert!(is_group_mac(0x0100_5e00_0001));
        assert!(!is_group_mac(0xfa16_3e00_0001));
    }
}
