//! The packet's way through routers in API terms: which router it enters through which interface,
//! which route (a connected subnet, or an extra route and its next hop) takes it onto which
//! network, and which port is the next hop. Read from the flows the trace hit — their stage
//! ([`pipeline::tables`]) and owner (the cookie) — and the server's topology.

use flowsim::{Step, Trace};
use openflow::Field;
use openflow::Flow;
use pipeline::cookie::Owner;
use pipeline::model::Port;
use pipeline::tables::{INGRESS, L3_ENTRY, LB_FORWARD, LB_SELECT, LB_VIP, NEIGHBOUR, ROUTE, SFC};

use crate::inventory::{Inventory, Route, dst_prefix};

/// The steps through load balancers and routers, one sentence each (empty for a packet neither
/// handled).
pub fn path(inv: &Inventory, trace: &Trace) -> Vec<String> {
    let mut lines: Vec<String> = chained(inv, trace);
    lines.extend(balanced(inv, trace));
    for step in trace.steps() {
        if let Some(rif) = entry(inv, step) {
            let router = rif.router().unwrap_or_default();
            lines.push(format!(
                "enters {} through its interface on {}",
                inv.router_label(router),
                inv.network_label(&rif.network_id)
            ));
            continue;
        }
        let Some(flow) = &step.flow else { continue };
        let line = match (step.table, inv.owner_of(flow.cookie)) {
            (INGRESS, Some(Owner::Trunk(id))) => trunked(inv, &id, trace, flow),
            (ROUTE, Some(Owner::Router(id))) if !flow.instructions.is_drop() => {
                Some(routed(inv, &id, flow))
            }
            (NEIGHBOUR, Some(Owner::Port(id))) => next_hop(inv, &id, flow),
            _ => None,
        };
        lines.extend(line);
    }
    lines
}

/// The router interface through which `step` takes the packet into a router, if it does.
fn entry<'i>(inv: &'i Inventory, step: &Step) -> Option<&'i Port> {
    let flow = step.flow.as_ref()?;
    if step.table != L3_ENTRY || flow.instructions.write_metadata().is_none() {
        return None;
    }
    match inv.owner_of(flow.cookie)? {
        Owner::RouterInterface(id) => inv.topology.ports.get(&*id),
        _ => None,
    }
}

/// What a trunk's flow did with the packet: a frame from the parent's VIF tagged with a
/// subport's VLAN id is that subport's (untagged, it comes back in at the subport's own port),
/// one with a VLAN id no subport has is dropped, and a subport's frame leaves through the
/// parent's VIF tagged.
fn trunked(inv: &Inventory, id: &str, trace: &Trace, flow: &Flow) -> Option<String> {
    let trunk = inv.topology.trunks.get(id)?;
    let label = inv.describe_owner(&Owner::Trunk(id.into()));
    let subport = |vlan: u16| {
        trunk
            .subport_on(vlan)
            .map(|s| inv.port_id_label(&s.port_id))
            .unwrap_or_else(|| "no subport".into())
    };
    let vlan_of = |v: u128| (v & 0xfff) as u16;
    if flow.instructions.is_drop() {
        // Only a frame from the parent's VIF meets this flow: the one traced in.
        let tag = trace
            .packet
            .vlans()
            .first()
            .map_or_else(|| "a VLAN".into(), |t| format!("VLAN {}", t.vid));
        return Some(format!(
            "tagged with {tag} on {label}, which none of its subports has: dropped"
        ));
    }
    match flow.match_.get(Field::VlanVid) {
        Some((v, _)) => Some(format!(
            "VLAN {} on {label}: {}, untagged, in again at its own port",
            vlan_of(v),
            subport(vlan_of(v))
        )),
        None => {
            let v = flow.instructions.apply.iter().find_map(|a| match a {
                openflow::Action::SetField {
                    field: Field::VlanVid,
                    value,
                    ..
                } => Some(vlan_of(*value)),
                _ => None,
            })?;
            Some(format!(
                "from {} of {label}: out through the parent's port tagged with VLAN {v}",
                subport(v)
            ))
        }
    }
}

/// The interface through which the packet last entered a router.
pub fn entered<'i>(inv: &'i Inventory, trace: &Trace) -> Option<&'i Port> {
    trace.steps().into_iter().rev().find_map(|s| entry(inv, s))
}

/// What a routing flow of `router` did: which of its routes, through which interface.
fn routed(inv: &Inventory, router: &str, flow: &Flow) -> String {
    let name = inv.router_name(router);
    let Some(prefix) = dst_prefix(&flow.match_) else {
        return format!("routed by router {name}");
    };
    let route = inv
        .topology
        .routers
        .get(router)
        .and_then(|r| inv.route(r, prefix));
    let via_interface = |rif: &Port| {
        format!(
            "routed by router {name} via its interface on {}",
            inv.network_label(&rif.network_id)
        )
    };
    match route {
        Some(Route::Connected { interface }) => {
            format!("{}: {prefix} (connected)", via_interface(interface))
        }
        Some(Route::Extra {
            via,
            interface,
            hop,
        }) => {
            let routed =
                interface.map_or_else(|| format!("routed by router {name}"), via_interface);
            let hop = hop
                .map(|p| format!(", which is {}", inv.port_label(p)))
                .unwrap_or_default();
            format!("{routed}: extra route {prefix} via {via}{hop}")
        }
        None => format!(
            "routed by router {name} to {prefix}, a route the server's topology does not give it \
             (a stale flow)"
        ),
    }
}

/// The next hop a next-hop flow of port `id` resolved.
fn next_hop(inv: &Inventory, id: &str, flow: &Flow) -> Option<String> {
    let ip = dst_prefix(&flow.match_)?.addr();
    let port = inv.topology.ports.get(id)?;
    Some(format!("next hop {ip} is {}", inv.port_label(port)))
}

/// What a load balancer did with the packet: the listener it reached and the member conntrack
/// sent it to, chosen by the listener's group (a new connection) or kept (a known one).
fn balanced(inv: &Inventory, trace: &Trace) -> Option<String> {
    let listener = trace.steps().into_iter().find_map(|s| {
        let flow = s.flow.as_ref().filter(|_| s.table == LB_VIP)?;
        match inv.owner_of(flow.cookie)? {
            Owner::Listener(id) => inv.topology.listeners.get(&*id),
            _ => None,
        }
    })?;
    let (pass, new) = trace.passes.iter().find_map(|p| {
        let translated = p.packet.get(Field::CtState).unwrap_or(0)
            & u128::from(flowsim::conntrack::ct_state::DNAT)
            != 0;
        match p.root.table {
            LB_FORWARD => Some((p, true)),
            LB_SELECT if translated => Some((p, false)),
            _ => None,
        }
    })?;
    let (address, port) = destination(&pass.packet)?;
    let member = listener
        .default_pool_id
        .as_deref()
        .into_iter()
        .flat_map(|pool| inv.topology.members_of(pool))
        .find(|m| m.address == address && m.port == port);
    let to = match member {
        Some(m) => inv.describe_owner(&Owner::Member(m.id.as_str().into())),
        None => format!("{address}:{port} (no member of its pool now)"),
    };
    let how = if new {
        "a new connection: the listener's group chose"
    } else {
        "a connection conntrack knows: it stays on"
    };
    Some(format!(
        "reaches {}; {how} {to}, and conntrack translates its destination to it",
        inv.describe_owner(&Owner::Listener(listener.id.as_str().into()))
    ))
}

/// A packet's destination address and transport port.
fn destination(p: &flowsim::Packet) -> Option<(std::net::IpAddr, u16)> {
    let address = match p.get(Field::Ipv4Dst) {
        Some(v) => std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::try_from(v).ok()?)),
        None => std::net::IpAddr::V6(std::net::Ipv6Addr::from(p.get(Field::Ipv6Dst)?)),
    };
    let port = p
        .get(Field::TcpDst)
        .or_else(|| p.get(Field::UdpDst))
        .and_then(|v| u16::try_from(v).ok())?;
    Some((address, port))
}

/// The hops of service function chains the packet took here: the chain, the hop's port pair
/// group and the pair its group chose (with the port the packet goes in at), or its way on after
/// the last hop.
fn chained(inv: &Inventory, trace: &Trace) -> Vec<String> {
    let mut lines = Vec::new();
    for step in trace.steps() {
        let Some(flow) = step.flow.as_ref().filter(|_| step.table == SFC) else {
            continue;
        };
        let Some(Owner::PortChain(id)) = inv.owner_of(flow.cookie) else {
            continue;
        };
        let Some(chain) = inv.topology.port_chains.get(&*id) else {
            continue;
        };
        let label = inv.describe_owner(&Owner::PortChain(id.clone()));
        let group = flow.instructions.apply.iter().find_map(|a| match a {
            openflow::Action::Group(g) => Some(*g),
            _ => None,
        });
        let Some(g) = group else {
            lines.push(format!(
                "back from the last function of {label}: on its way"
            ));
            continue;
        };
        // The group id's low bits: the direction and the hop (see the chaining app).
        let hop = (g & 0xf) as usize;
        let reverse = g & 0x10 != 0;
        let index = if reverse {
            chain.groups.len().checked_sub(hop)
        } else {
            hop.checked_sub(1)
        };
        let Some(ppg) = index
            .and_then(|i| chain.groups.get(i))
            .and_then(|g| inv.topology.port_pair_groups.get(g))
        else {
            continue;
        };
        let chosen = step.ops.iter().find_map(|op| match op {
            flowsim::Op::Group { buckets, .. } => buckets.first().map(|(i, _)| *i),
            _ => None,
        });
        let pair = chosen
            .and_then(|i| ppg.port_pairs.get(i))
            .and_then(|p| inv.topology.port_pairs.get(p));
        let to = match pair {
            Some(p) => {
                let port = if reverse { &p.egress } else { &p.ingress };
                let name = inv
                    .topology
                    .ports
                    .get(port)
                    .map(|q| inv.port_label(q))
                    .unwrap_or_else(|| port.clone());
                format!("its pair {} ({}), in at {name}", short_id(&p.id), p.name)
            }
            None => "one of its pairs".into(),
        };
        let way = if reverse { ", the reverse way" } else { "" };
        lines.push(format!(
            "{label}: hop {hop}{way}, port pair group {} ({}): {to}",
            short_id(&ppg.id),
            ppg.name
        ));
    }
    lines
}

fn short_id(id: &str) -> String {
    id.chars().take(8).collect::<String>() + "…"
}
