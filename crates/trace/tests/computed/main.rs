//! `wyvern trace` in computed mode over topologies built in-process (no server, no OVS), from store
//! items as the server keeps them:
//! - [`l2`]: two projects' networks on the same CIDR over three chassis: local and remote
//!   delivery, isolation, spoofing drops, the ARP responder, flooding, and bad input;
//! - [`packets`]: every kind of packet the command line builds (ARP probes, replies, gratuitous
//!   ARP, DHCP, from the tunnel, VLAN tags, any MAC, multicast) and the explanations of
//!   gateways, neighbour discovery and short ids;
//! - [`routed`]: networks joined by routers: routed packets, extra routes, the router's answers,
//!   TTL expiry, missing routes, isolation of another project's router, and a network on a physical
//!   network the chassis does not reach;
//! - [`security_groups`]: the rules that admit a packet (remote group, prefix, address group),
//!   none, connection states, a stateless group, the bypasses;
//! - [`trunks`]: a trunk's subport, entering tagged at the parent's port, and back.
//!
//! Every port [`port`] makes is in a security group that admits everything ([`open_group`]).

mod l2;
mod packets;
mod routed;
mod security_groups;
mod trunks;

use serde_json::{Value, json};
use trace::{FlowSet, Inventory, Local, Probe, Request, compute_flows};

/// A store item: key and value.
type Item = (String, Value);

fn network(id: &str, name: &str, vni: u32) -> Item {
    (
        format!("/r/networks/{id}"),
        json!({"id": id, "name": name, "provider:network_type": "vxlan",
               "provider:segmentation_id": vni, "admin_state_up": true}),
    )
}

fn subnet(id: &str, net: &str, cidr: &str, gateway: &str) -> Item {
    (
        format!("/r/subnets/{id}"),
        json!({"id": id, "network_id": net, "cidr": cidr, "gateway_ip": gateway}),
    )
}

fn port(id: &str, name: &str, net: &str, mac: &str, ips: &str, host: &str) -> Item {
    let fixed: Vec<Value> = ips.split(',').map(|ip| json!({"ip_address": ip})).collect();
    (
        format!("/r/ports/{id}"),
        json!({"id": id, "name": name, "network_id": net, "mac_address": mac,
               "fixed_ips": fixed, "admin_state_up": true, "security_groups": [OPEN],
               "port_security_enabled": true, "binding:host_id": host, "status": "ACTIVE"}),
    )
}

fn chassis(name: &str, ip: &str) -> [Item; 2] {
    [
        (
            format!("/chassis/{name}"),
            json!({"id": name, "tunnel_ip": ip, "encaps": ["geneve"]}),
        ),
        (format!("/chassis-up/{name}"), json!({"lease": 1})),
    ]
}

/// The security group [`port`] puts ports in: it admits everything, both ways.
const OPEN: &str = "sg-open";

fn security_group(id: &str, name: &str, stateful: bool) -> Item {
    (
        format!("/r/security_groups/{id}"),
        json!({"id": id, "name": name, "stateful": stateful}),
    )
}

/// A rule of `group`: `direction`, `ethertype`, and more attributes in `extra`.
fn rule(id: &str, group: &str, direction: &str, ethertype: &str, extra: Value) -> Item {
    let mut v = json!({"id": id, "security_group_id": group, "direction": direction,
                       "ethertype": ethertype});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    (format!("/r/security_group_rules/{id}"), v)
}

/// [`OPEN`] and its rules.
fn open_group() -> Vec<Item> {
    let mut items = vec![security_group(OPEN, "open", true)];
    for dir in ["ingress", "egress"] {
        for eth in ["IPv4", "IPv6"] {
            items.push(rule(
                &format!("open-{dir}-{eth}"),
                OPEN,
                dir,
                eth,
                json!({}),
            ));
        }
    }
    items
}

/// The inventory of `items` and [`open_group`] at revision 42, with the ports in `vms` (id,
/// name) as lab VMs.
fn inventory(mut items: Vec<Item>, vms: &[(&str, &str)]) -> Inventory {
    items.extend(open_group());
    let mut inv = Inventory::from_items(items);
    inv.revision = 42;
    for (id, vm) in vms {
        inv.vms.insert((*id).into(), (*vm).into());
    }
    inv
}

/// The flows the pipeline computes for `local`.
fn computed(inv: &Inventory, local: &Local) -> FlowSet {
    FlowSet {
        flows: compute_flows(inv, local),
        groups: vec![],
        origin: "computed".into(),
        remarks: vec![],
    }
}

/// A `probe` from `from` to `to`, with the port's own addresses.
fn request(from: &str, to: &str, probe: Probe) -> Request {
    Request::new(from, Some(to), probe)
}
