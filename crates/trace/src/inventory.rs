//! The server's topology as the trace needs it: networks, subnets, ports and chassis from a
//! sync snapshot, looked up by id, name, address, MAC, VNI or tunnel IP, and the operator's
//! names for them (VM names from a lab).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use pipeline::cookie::Owner;
use pipeline::model::{Chassis, Network, Port};
use serde_json::Value;

use crate::Error;

/// A subnet, as far as choosing a destination MAC cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    /// API id.
    pub id: String,
    /// Its network.
    pub network_id: String,
    /// Address range.
    pub cidr: IpNet,
    /// Gateway address, if any.
    pub gateway: Option<IpAddr>,
}

/// Everything the server told us, at one revision.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Store revision of the snapshot.
    pub revision: u64,
    /// The snapshot's items (store key, JSON value), as the pipeline consumes them.
    pub items: Vec<(String, Value)>,
    /// Networks by id.
    pub networks: BTreeMap<String, Network>,
    /// Network names by id.
    pub network_names: BTreeMap<String, String>,
    /// Subnets.
    pub subnets: Vec<Subnet>,
    /// Ports by id.
    pub ports: BTreeMap<String, Port>,
    /// Registered chassis by id.
    pub chassis: BTreeMap<String, Chassis>,
    /// Chassis whose lease is current.
    pub chassis_up: BTreeSet<String>,
    /// VM names by port id (from a lab).
    pub vms: BTreeMap<String, String>,
}

/// The first eight characters of an id and an ellipsis (ids are long; the name follows).
pub fn short(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_string(),
    }
}

impl Inventory {
    /// Reads a sync snapshot (`{"revision": R, "items": [{"key", "value"}]}`).
    pub fn from_snapshot(snapshot: &Value) -> Result<Inventory, Error> {
        let bad = |why: &str| Error::Server(format!("malformed snapshot: {why}"));
        let revision = snapshot
            .get("revision")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("no revision"))?;
        let items = snapshot
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("no items"))?
            .iter()
            .map(|i| {
                let key = i
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("item without key"))?;
                Ok((
                    key.to_string(),
                    i.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let mut inv = Inventory::from_items(items);
        inv.revision = revision;
        Ok(inv)
    }

    /// Builds the inventory from store items (`/r/networks/ID`, `/r/subnets/ID`,
    /// `/r/ports/ID`, `/chassis/NAME`, `/chassis-up/NAME`); other keys are ignored.
    pub fn from_items(items: Vec<(String, Value)>) -> Inventory {
        let mut inv = Inventory::default();
        for (key, v) in &items {
            if key.starts_with("/r/networks/") {
                if let Some(n) = Network::from_json(v) {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                    inv.network_names.insert(n.id.clone(), name.to_string());
                    inv.networks.insert(n.id.clone(), n);
                }
            } else if key.starts_with("/r/subnets/") {
                if let Some(s) = subnet_from_json(v) {
                    inv.subnets.push(s);
                }
            } else if key.starts_with("/r/ports/") {
                if let Some(p) = Port::from_json(v) {
                    inv.ports.insert(p.id.clone(), p);
                }
            } else if let Some(id) = key.strip_prefix("/chassis-up/") {
                inv.chassis_up.insert(id.to_string());
            } else if key.starts_with("/chassis/")
                && let Some(c) = Chassis::from_json(v)
            {
                inv.chassis.insert(c.id.clone(), c);
            }
        }
        inv.items = items;
        inv
    }

    /// A port by id, or by name (which must be unique), or by the name of its lab VM.
    pub fn find_port(&self, what: &str) -> Result<&Port, Error> {
        if let Some(p) = self.ports.get(what) {
            return Ok(p);
        }
        let by_vm = self
            .vms
            .iter()
            .find(|(_, vm)| *vm == what)
            .and_then(|(id, _)| self.ports.get(id));
        if let Some(p) = by_vm {
            return Ok(p);
        }
        let named: Vec<&Port> = self.ports.values().filter(|p| p.name == what).collect();
        match named.as_slice() {
            [one] => Ok(one),
            [] => Err(Error::Input(format!(
                "no port or VM is called {what:?} (give a port name or id{})",
                if self.vms.is_empty() {
                    String::new()
                } else {
                    let mut vms: Vec<&str> = self.vms.values().map(String::as_str).collect();
                    vms.sort_unstable();
                    format!("; VMs: {}", vms.join(", "))
                }
            ))),
            many => Err(Error::Input(format!(
                "{} ports are called {what:?}; give the port id ({})",
                many.len(),
                many.iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// The port on `network` that has `ip` as a fixed IP.
    pub fn port_with_ip(&self, network: &str, ip: IpAddr) -> Option<&Port> {
        self.ports
            .values()
            .find(|p| p.network_id == network && p.ips.contains(&ip))
    }

    /// The port on `network` with this MAC.
    pub fn port_with_mac(&self, network: &str, mac: u64) -> Option<&Port> {
        self.ports
            .values()
            .find(|p| p.network_id == network && p.mac == mac)
    }

    /// The network with this VNI.
    pub fn network_with_vni(&self, vni: u64) -> Option<&Network> {
        self.networks
            .values()
            .find(|n| n.vni.map(u64::from) == Some(vni))
    }

    /// The chassis with this tunnel address.
    pub fn chassis_with_ip(&self, ip: Ipv4Addr) -> Option<&Chassis> {
        self.chassis.values().find(|c| c.tunnel_ip == ip)
    }

    /// The subnets of `network` that contain `ip`.
    pub fn subnet_of(&self, network: &str, ip: IpAddr) -> Option<&Subnet> {
        self.subnets
            .iter()
            .find(|s| s.network_id == network && s.cidr.contains(&ip))
    }

    /// `port web2 (VM web2)`, `port web2`, or `port 3f2a51c0…` for an unnamed port.
    pub fn port_label(&self, port: &Port) -> String {
        let name = if port.name.is_empty() {
            format!("port {}", short(&port.id))
        } else {
            format!("port {}", port.name)
        };
        match self.vms.get(&port.id) {
            Some(vm) => format!("{name} (VM {vm})"),
            None => name,
        }
    }

    /// `network web (3f2a51c0…)`, or `network 3f2a51c0…` for an unnamed one.
    pub fn network_label(&self, id: &str) -> String {
        match self.network_names.get(id).filter(|n| !n.is_empty()) {
            Some(name) => format!("network {name} ({})", short(id)),
            None => format!("network {}", short(id)),
        }
    }

    /// The API object a flow cookie names, for operators.
    pub fn describe_cookie(&self, cookie: u64) -> String {
        if Owner::Static.owns(cookie) {
            return "pipeline (fixed flows)".into();
        }
        if let Some(p) = self
            .ports
            .values()
            .find(|p| Owner::Port(p.id.clone()).owns(cookie))
        {
            let name = if p.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.name)
            };
            return format!(
                "port {}{name} on {}",
                short(&p.id),
                self.network_label(&p.network_id)
            );
        }
        if let Some(n) = self
            .networks
            .keys()
            .find(|id| Owner::Network((*id).clone()).owns(cookie))
        {
            return self.network_label(n);
        }
        if Owner::is_ours(cookie) {
            format!("a Wyvern object the server no longer has (cookie {cookie:#x}): a stale flow")
        } else {
            format!("not a Wyvern flow (cookie {cookie:#x})")
        }
    }
}

fn subnet_from_json(v: &Value) -> Option<Subnet> {
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    Some(Subnet {
        id: s("id")?.to_string(),
        network_id: s("network_id")?.to_string(),
        cidr: s("cidr")?.parse().ok()?,
        gateway: s("gateway_ip").and_then(|g| g.parse().ok()),
    })
}
