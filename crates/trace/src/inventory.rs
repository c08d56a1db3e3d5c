//! The server's topology as the trace needs it: the objects of a sync snapshot decoded as the
//! agent decodes them ([`pipeline::model::Object::decode`] into a [`Topology`]), looked up by id,
//! name, address, MAC, VNI, tunnel IP or router context; the API object a flow cookie names; how
//! a router reaches a prefix; and the operator's names for all of them (VM names from a lab).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use pipeline::cookie::Owner;
use pipeline::model::{Chassis, Network, Object, Port, Router, Subnet, Topology};
use pipeline::tables::router_metadata;
use serde_json::Value;

use crate::Error;

/// Everything the server told us, at one revision.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Store revision of the snapshot.
    pub revision: u64,
    /// The snapshot's items (store key, JSON value), as the pipeline consumes them.
    pub items: Vec<(String, Value)>,
    /// The decoded objects: networks, subnets, ports, routers, chassis.
    pub topology: Topology,
    /// Network names by id (the pipeline's model has no names for networks).
    pub network_names: BTreeMap<String, String>,
    /// Keys whose values could not be decoded: left out, as the agent leaves them out.
    pub malformed: Vec<String>,
    /// VM names by port id (from a lab).
    pub vms: BTreeMap<String, String>,
}

/// How a router reaches a prefix it has a route to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'i> {
    /// A subnet of one of its interfaces.
    Connected {
        /// The interface on that subnet.
        interface: &'i Port,
    },
    /// One of its extra routes (`routes`).
    Extra {
        /// The next hop.
        via: IpAddr,
        /// The interface whose subnet holds the next hop, if one does.
        interface: Option<&'i Port>,
        /// The port that has the next hop's address, if one has.
        hop: Option<&'i Port>,
    },
}

/// The first eight characters of an id and an ellipsis (ids are long; the name follows).
pub fn short(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((i, _)) => format!("{}…", &id[..i]),
        None => id.to_string(),
    }
}

/// The one object whose id starts with `what` as [`short`] prints it (with or without the
/// ellipsis); an error if several do.
fn by_short_id<'m, T>(
    objects: &'m BTreeMap<String, T>,
    what: &str,
    kind: &str,
) -> Result<Option<&'m T>, Error> {
    let prefix = what.trim_end_matches(['…', '.']);
    if prefix.is_empty() {
        return Ok(None);
    }
    let matching: Vec<(&String, &T)> = objects
        .range(prefix.to_string()..)
        .take_while(|(id, _)| id.starts_with(prefix))
        .collect();
    match matching.as_slice() {
        [] => Ok(None),
        [(_, one)] => Ok(Some(one)),
        many => Err(Error::Input(format!(
            "{} {kind} have ids starting with {prefix:?} ({}); give more of the id",
            many.len(),
            many.iter()
                .map(|(id, _)| id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Addresses as a comma-separated list (`no address` for none).
pub fn ip_list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "no address".into();
    }
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `network web (3f2a51c0…)`, or `network 3f2a51c0…` without a name.
fn labelled(kind: &str, name: Option<&str>, id: &str) -> String {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => format!("{kind} {name} ({})", short(id)),
        None => format!("{kind} {}", short(id)),
    }
}

/// A prefix from a destination-address match (value and mask).
fn prefix_of(value: u128, mask: u128, v4: bool) -> Option<IpNet> {
    if v4 {
        let len = u8::try_from((mask as u32).leading_ones()).ok()?;
        IpNet::new(IpAddr::V4(Ipv4Addr::from(value as u32)), len).ok()
    } else {
        let len = u8::try_from(mask.leading_ones()).ok()?;
        IpNet::new(IpAddr::V6(value.into()), len).ok()
    }
}

/// The destination prefix a flow matches on (`nw_dst`/`ipv6_dst`), if it does.
pub fn dst_prefix(m: &openflow::Match) -> Option<IpNet> {
    use openflow::Field;
    match (m.get(Field::Ipv4Dst), m.get(Field::Ipv6Dst)) {
        (Some((v, mask)), _) => prefix_of(v, mask, true),
        (_, Some((v, mask))) => prefix_of(v, mask, false),
        _ => None,
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

    /// Builds the inventory from store items: the keys the sync API serves ([`nb_keys::parse`]),
    /// decoded by the pipeline's model; other keys are ignored, malformed values listed.
    pub fn from_items(items: Vec<(String, Value)>) -> Inventory {
        let mut inv = Inventory::default();
        for (key, v) in &items {
            let Some((kind, id)) = nb_keys::parse(key) else {
                continue;
            };
            match Object::decode(kind, id, v) {
                Some(obj) => {
                    if let Object::Network(n) = &obj {
                        let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                        inv.network_names.insert(n.id.clone(), name.to_string());
                    }
                    inv.topology.put(obj);
                }
                None => inv.malformed.push(key.clone()),
            }
        }
        inv.items = items;
        inv
    }

    /// A port by id, by the name of its lab VM, by name (which must be unique), or by short id.
    pub fn find_port(&self, what: &str) -> Result<&Port, Error> {
        let ports = &self.topology.ports;
        if let Some(p) = ports.get(what) {
            return Ok(p);
        }
        let by_vm = self
            .vms
            .iter()
            .find(|(_, vm)| *vm == what)
            .and_then(|(id, _)| ports.get(id));
        if let Some(p) = by_vm {
            return Ok(p);
        }
        let named: Vec<&Port> = ports.values().filter(|p| p.name == what).collect();
        match named.as_slice() {
            [one] => Ok(one),
            [] => by_short_id(ports, what, "ports")?.ok_or_else(|| {
                Error::Input(format!(
                    "no port or VM is called {what:?} (give a port name or id{})",
                    if self.vms.is_empty() {
                        String::new()
                    } else {
                        let mut vms: Vec<&str> = self.vms.values().map(String::as_str).collect();
                        vms.sort_unstable();
                        format!("; VMs: {}", vms.join(", "))
                    }
                ))
            }),
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

    /// A network by id, by name (which must be unique), or by short id.
    pub fn find_network(&self, what: &str) -> Result<&Network, Error> {
        let networks = &self.topology.networks;
        if let Some(n) = networks.get(what) {
            return Ok(n);
        }
        let named: Vec<&Network> = networks
            .values()
            .filter(|n| self.network_names.get(&n.id).map(String::as_str) == Some(what))
            .collect();
        match named.as_slice() {
            [one] => Ok(one),
            [] => by_short_id(networks, what, "networks")?.ok_or_else(|| {
                Error::Input(format!(
                    "no network is called {what:?} (networks: {})",
                    networks
                        .keys()
                        .map(|id| self.network_name(id))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }),
            many => Err(Error::Input(format!(
                "{} networks are called {what:?}; give the network id ({})",
                many.len(),
                many.iter()
                    .map(|n| n.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// A registered chassis by id or short id.
    pub fn find_chassis(&self, what: &str) -> Result<&Chassis, Error> {
        let chassis = &self.topology.chassis;
        if let Some(c) = chassis.get(what) {
            return Ok(c);
        }
        by_short_id(chassis, what, "chassis")?.ok_or_else(|| {
            Error::Input(format!(
                "no chassis is called {what:?} (registered: {})",
                chassis.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// The port on `network` that has `ip` as a fixed IP.
    pub fn port_with_ip(&self, network: &str, ip: IpAddr) -> Option<&Port> {
        self.topology
            .ports_on(network)
            .find(|p| p.ips.contains(&ip))
    }

    /// The port on `network` with this MAC.
    pub fn port_with_mac(&self, network: &str, mac: u64) -> Option<&Port> {
        self.topology.ports_on(network).find(|p| p.mac == mac)
    }

    /// The network with this VNI.
    pub fn network_with_vni(&self, vni: u64) -> Option<&Network> {
        self.topology
            .networks
            .values()
            .find(|n| n.vni.map(u64::from) == Some(vni))
    }

    /// The chassis with this tunnel address.
    pub fn chassis_with_ip(&self, ip: Ipv4Addr) -> Option<&Chassis> {
        self.topology.chassis.values().find(|c| c.tunnel_ip == ip)
    }

    /// The subnet of `network` that contains `ip`.
    pub fn subnet_of(&self, network: &str, ip: IpAddr) -> Option<&Subnet> {
        self.topology
            .subnets_on(network)
            .find(|s| s.cidr.contains(&ip))
    }

    /// The router whose context `metadata` is (inside a router, `metadata` names it).
    pub fn router_with_metadata(&self, metadata: u64) -> Option<&Router> {
        self.topology
            .routers
            .values()
            .find(|r| router_metadata(&r.id) == metadata)
    }

    /// The ids of the routers with an interface on `network`.
    pub fn routers_on(&self, network: &str) -> BTreeSet<&str> {
        self.topology
            .interfaces_on(network)
            .filter_map(Port::router)
            .collect()
    }

    /// The port with `ip` on another network that a router of `network` joins to it.
    pub fn routed_port(&self, network: &str, ip: IpAddr) -> Option<&Port> {
        self.routers_on(network).into_iter().find_map(|r| {
            self.topology
                .interfaces_of(r)
                .filter(|i| i.network_id != network)
                .find_map(|i| self.port_with_ip(&i.network_id, ip))
        })
    }

    /// A router with interfaces on both networks, by id.
    pub fn router_between(&self, a: &str, b: &str) -> Option<&str> {
        let on_b = self.routers_on(b);
        self.routers_on(a).into_iter().find(|r| on_b.contains(r))
    }

    /// The router's interfaces, each with every subnet it has an address in.
    fn attachments<'a>(&'a self, router: &'a str) -> impl Iterator<Item = (&'a Port, &'a Subnet)> {
        let topo = &self.topology;
        topo.interfaces_of(router).flat_map(move |i| {
            topo.subnets_on(&i.network_id)
                .filter(move |s| i.ips.iter().any(|ip| s.cidr.contains(ip)))
                .map(move |s| (i, s))
        })
    }

    /// How `router` reaches `prefix`: a subnet one of its interfaces has an address in, else one
    /// of its extra routes (a connected subnet comes first, as in the pipeline).
    pub fn route<'i>(&'i self, router: &'i Router, prefix: IpNet) -> Option<Route<'i>> {
        let connected = self
            .attachments(&router.id)
            .find(|(_, s)| s.cidr.trunc() == prefix);
        if let Some((interface, _)) = connected {
            return Some(Route::Connected { interface });
        }
        let (_, via) = router
            .routes
            .iter()
            .find(|(dst, _)| dst.trunc() == prefix)?;
        let interface = self
            .attachments(&router.id)
            .find(|(_, s)| s.cidr.contains(via))
            .map(|(i, _)| i);
        let hop = interface.and_then(|i| self.port_with_ip(&i.network_id, *via));
        Some(Route::Extra {
            via: *via,
            interface,
            hop,
        })
    }

    /// The API object a flow cookie names, if the server has it.
    pub fn owner_of(&self, cookie: u64) -> Option<Owner> {
        std::iter::once(Owner::Static)
            .chain(self.topology.owners())
            .find(|o| o.owns(cookie))
    }

    /// [`Inventory::port_label`] of the port with this id, or `port <short id>` when the server
    /// does not have it.
    pub fn port_id_label(&self, id: &str) -> String {
        match self.topology.ports.get(id) {
            Some(p) => self.port_label(p),
            None => format!("port {}", short(id)),
        }
    }

    /// `port web2 (VM web2)`, `port web2`, `port 3f2a51c0…` for an unnamed port, or
    /// `router r1's interface on network web` for a router interface.
    pub fn port_label(&self, port: &Port) -> String {
        if let Some(r) = port.router() {
            return format!(
                "router {}'s interface on network {}",
                self.router_name(r),
                self.network_name(&port.network_id)
            );
        }
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

    /// The network's name, or its short id without one.
    pub fn network_name(&self, id: &str) -> String {
        match self.network_names.get(id).filter(|n| !n.is_empty()) {
            Some(name) => name.clone(),
            None => short(id),
        }
    }

    /// `network web (3f2a51c0…)`, or `network 3f2a51c0…` for an unnamed one.
    pub fn network_label(&self, id: &str) -> String {
        labelled(
            "network",
            self.network_names.get(id).map(String::as_str),
            id,
        )
    }

    /// The router's name, or its short id without one (or when the server does not have it).
    pub fn router_name(&self, id: &str) -> String {
        match self.topology.routers.get(id).filter(|r| !r.name.is_empty()) {
            Some(r) => r.name.clone(),
            None => short(id),
        }
    }

    /// `router r1 (3f2a51c0…)`, or `router 3f2a51c0…` for an unnamed one.
    pub fn router_label(&self, id: &str) -> String {
        let name = self.topology.routers.get(id).map(|r| r.name.as_str());
        labelled("router", name, id)
    }

    /// An owner in words: `port 3f2a51c0… (web1) on network web (…)`, `router r1 (…)`,
    /// `router interface of router r1 (…) on network app (…), address 10.2.0.1`, ...
    pub fn describe_owner(&self, owner: &Owner) -> String {
        let topo = &self.topology;
        let gone = || {
            format!(
                "{} {} (which the server no longer has): a stale flow",
                owner.kind_name(),
                short(owner.id())
            )
        };
        match owner {
            Owner::Static => "pipeline (fixed flows)".into(),
            Owner::Network(id) => self.network_label(id),
            Owner::Router(id) => self.router_label(id),
            Owner::Port(id) => match topo.ports.get(&**id) {
                None => gone(),
                Some(p) => {
                    let name = if p.name.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", p.name)
                    };
                    let interface = p
                        .router()
                        .map(|r| format!(", an interface of {}", self.router_label(r)))
                        .unwrap_or_default();
                    format!(
                        "port {}{name} on {}{interface}",
                        short(&p.id),
                        self.network_label(&p.network_id)
                    )
                }
            },
            Owner::RouterInterface(id) => {
                match topo.ports.get(&**id).and_then(|p| Some((p.router()?, p))) {
                    None => gone(),
                    Some((r, p)) => format!(
                        "router interface of {} on {}, {} {}",
                        self.router_label(r),
                        self.network_label(&p.network_id),
                        if p.ips.len() == 1 {
                            "address"
                        } else {
                            "addresses"
                        },
                        ip_list(&p.ips)
                    ),
                }
            }
            Owner::SgRule(id) => match topo.rules.get(&**id) {
                None => gone(),
                Some(r) => {
                    let group = topo
                        .security_groups
                        .get(&r.group)
                        .map(|g| format!("security group {} ({})", g.name, short(&g.id)))
                        .unwrap_or_else(|| format!("security group {}", short(&r.group)));
                    let direction = if r.ingress { "ingress" } else { "egress" };
                    format!("rule {} ({direction}) of {group}", short(id))
                }
            },
            Owner::FloatingIp(id) => match topo.floating_ips.get(&**id) {
                None => gone(),
                Some(f) => match f.target.as_ref() {
                    Some(t) => format!(
                        "floating IP {} ({}) of port {} ({})",
                        f.address,
                        short(id),
                        short(&t.port_id),
                        t.fixed_ip
                    ),
                    None => format!("floating IP {} ({}), not associated", f.address, short(id)),
                },
            },
            Owner::LoadBalancer(id) => match topo.load_balancers.get(&**id) {
                None => gone(),
                Some(lb) => self.load_balancer_label(lb),
            },
            Owner::Listener(id) => match topo.listeners.get(&**id) {
                None => gone(),
                Some(l) => {
                    let proto = if l.protocol == 17 { "UDP" } else { "TCP" };
                    let of = topo
                        .load_balancers
                        .get(&l.loadbalancer_id)
                        .map(|lb| format!(" of {}", self.load_balancer_label(lb)))
                        .unwrap_or_default();
                    format!(
                        "listener {}{} ({proto} port {}){of}",
                        short(id),
                        named(&l.name),
                        l.port
                    )
                }
            },
            Owner::Trunk(id) => match topo.trunks.get(&**id) {
                None => gone(),
                Some(t) => format!(
                    "trunk {}{} of parent {}",
                    short(id),
                    named(&t.name),
                    self.port_id_label(&t.parent)
                ),
            },
            Owner::PortChain(id) => match topo.port_chains.get(&**id) {
                None => gone(),
                Some(c) => format!(
                    "port chain {}{} (chain id {})",
                    short(id),
                    named(&c.name),
                    c.number
                ),
            },
            Owner::Member(id) => match topo.members.get(&**id) {
                None => gone(),
                Some(m) => format!(
                    "member {}{} ({}:{}) of pool {}",
                    short(id),
                    named(&m.name),
                    m.address,
                    m.port,
                    short(&m.pool_id)
                ),
            },
        }
    }

    /// A load balancer in words: `load balancer 3f2a51c0… (web), VIP 10.0.0.100`.
    pub fn load_balancer_label(&self, lb: &pipeline::model::LoadBalancer) -> String {
        format!(
            "load balancer {}{}, VIP {}",
            short(&lb.id),
            named(&lb.name),
            lb.vip
        )
    }

    /// The API object a flow cookie names, for operators.
    pub fn describe_cookie(&self, cookie: u64) -> String {
        match self.owner_of(cookie) {
            Some(owner) => self.describe_owner(&owner),
            None if Owner::is_ours(cookie) => format!(
                "a Wyvern object the server no longer has (cookie {cookie:#x}): a stale flow"
            ),
            None => format!("not a Wyvern flow (cookie {cookie:#x})"),
        }
    }
}

/// ` (name)`, or nothing for an empty name.
fn named(name: &str) -> String {
    if name.is_empty() {
        String::new()
    } else {
        format!(" ({name})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_what_the_agent_decodes_and_lists_the_rest() {
        let inv = Inventory::from_items(vec![
            (
                "/r/networks/n1".into(),
                json!({"id": "n1", "name": "web", "provider:network_type": "vxlan",
                       "provider:segmentation_id": 1}),
            ),
            (
                "/r/routers/r1".into(),
                json!({"id": "r1", "name": "edge",
                       "routes": [{"destination": "192.168.0.0/16", "nexthop": "10.0.0.9"}]}),
            ),
            (
                "/r/ports/bad".into(),
                json!({"id": "bad", "mac_address": "nope"}),
            ),
            ("/r/security-groups/s1".into(), json!({"id": "s1"})),
        ]);
        assert_eq!(inv.network_label("n1"), "network web (n1)");
        assert_eq!(inv.router_label("r1"), "router edge (r1)");
        assert_eq!(inv.topology.routers["r1"].routes.len(), 1);
        assert_eq!(inv.malformed, ["/r/ports/bad"]);
        assert_eq!(
            inv.describe_cookie(Owner::Router("r1".into()).cookie()),
            "router edge (r1)"
        );
        assert_eq!(
            inv.describe_cookie(Owner::Router("r9".into()).cookie()),
            format!(
                "a Wyvern object the server no longer has (cookie {:#x}): a stale flow",
                Owner::Router("r9".into()).cookie()
            )
        );
    }

    #[test]
    fn objects_by_short_id() {
        let port = |id: &str| {
            (
                format!("/r/ports/{id}"),
                json!({"id": id, "name": "p", "mac_address": "fa:16:3e:00:00:01"}),
            )
        };
        let inv = Inventory::from_items(vec![
            port("3f2a51c0-1111"),
            port("3f2a51c0-2222"),
            port("77aa0000-3333"),
            (
                "/r/networks/9b0e1d2c-4444".into(),
                json!({"id": "9b0e1d2c-4444", "name": "web", "provider:network_type": "vxlan",
                       "provider:segmentation_id": 5}),
            ),
            (
                "/chassis/c1".into(),
                json!({"id": "c1", "tunnel_ip": "172.31.0.1"}),
            ),
        ]);
        // As the tool prints them: eight characters and an ellipsis.
        assert_eq!(inv.find_port("77aa0000…").unwrap().id, "77aa0000-3333");
        assert_eq!(inv.find_port("77aa").unwrap().id, "77aa0000-3333");
        assert_eq!(
            inv.find_port("3f2a51c0…").unwrap_err().to_string(),
            "2 ports have ids starting with \"3f2a51c0\" (3f2a51c0-1111, 3f2a51c0-2222); give \
             more of the id"
        );
        assert_eq!(inv.find_network("9b0e1d2c…").unwrap().vni, Some(5));
        assert_eq!(inv.find_network("web").unwrap().id, "9b0e1d2c-4444");
        assert!(
            inv.find_network("db")
                .unwrap_err()
                .to_string()
                .starts_with("no network is called \"db\" (networks: web)")
        );
        assert_eq!(
            inv.find_chassis("c1").unwrap().tunnel_ip.to_string(),
            "172.31.0.1"
        );
        assert_eq!(
            inv.find_chassis("c9").unwrap_err().to_string(),
            "no chassis is called \"c9\" (registered: c1)"
        );
    }

    #[test]
    fn prefixes_from_matches() {
        let m: openflow::Flow = "table=22, priority=1048,ip,nw_dst=192.168.50.0/24 actions=drop"
            .parse()
            .unwrap();
        assert_eq!(
            dst_prefix(&m.match_),
            Some("192.168.50.0/24".parse().unwrap())
        );
        let m: openflow::Flow = "table=23, priority=100,ipv6,ipv6_dst=fd00::1 actions=drop"
            .parse()
            .unwrap();
        assert_eq!(dst_prefix(&m.match_), Some("fd00::1/128".parse().unwrap()));
    }
}
