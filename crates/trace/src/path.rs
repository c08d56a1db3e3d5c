//! The packet's way through routers in API terms: which router it enters through which interface,
//! which route (a connected subnet, or an extra route and its next hop) takes it onto which
//! network, and which port is the next hop. Read from the flows the trace hit — their stage
//! ([`pipeline::tables`]) and owner (the cookie) — and the server's topology.

use flowsim::{Step, Trace};
use openflow::Flow;
use pipeline::cookie::Owner;
use pipeline::model::Port;
use pipeline::tables::{L3_ENTRY, NEIGHBOUR, ROUTE};

use crate::inventory::{Inventory, Route, dst_prefix};

/// The steps through routers, one sentence each (empty for a packet no router handled).
pub fn path(inv: &Inventory, trace: &Trace) -> Vec<String> {
    let mut lines = Vec::new();
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
    if step.table != L3_ENTRY || flow.instructions.write_metadata.is_none() {
        return None;
    }
    match inv.owner_of(flow.cookie)? {
        Owner::RouterInterface(id) => inv.topology.ports.get(&id),
        _ => None,
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
