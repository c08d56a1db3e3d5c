//! `wyvern trace` in computed mode over topologies built in-process (no server, no OVS), from store
//! items as the server keeps them:
//! - [`l2`]: two projects' networks on the same CIDR over three chassis: local and remote
//!   delivery, isolation, spoofing drops, the ARP responder, flooding, and bad input;
//! - [`packets`]: every kind of packet the command line builds (ARP probes, replies, gratuitous
//!   ARP, DHCP, from the tunnel, VLAN tags, any MAC, multicast) and the explanations of
//!   gateways, neighbour discovery and short ids;
//! - [`routed`]: networks joined by routers: routed packets, extra routes, the router's answers,
//!   TTL expiry, missing routes, isolation of another project's router, and a network type the
//!   pipeline does not serve.

mod l2;
mod packets;
mod routed;

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
               "fixed_ips": fixed, "admin_state_up": true,
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

/// The inventory of `items` at revision 42, with the ports in `vms` (id, name) as lab VMs.
fn inventory(items: Vec<Item>, vms: &[(&str, &str)]) -> Inventory {
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
