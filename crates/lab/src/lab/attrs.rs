//! What the lab asks the API for: a network's, a subnet's and a port's attributes from the
//! file, and what to change on existing ones so that they are what the file says.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::neutron::text;
use crate::state::{NetworkState, SegmentState};
use crate::topology::{Gateway, Ipv6Mode, NetworkSpec, SubnetSpec, VmSpec};
use crate::{Error, Result};

/// The attributes of a new network, and whether only an admin may make it (provider settings,
/// `router:external`; it is made for its project then).
pub fn network_attrs(net: &NetworkSpec) -> (Value, bool) {
    let mut attrs = json!({ "name": net.name });
    if let Some(m) = net.mtu {
        attrs["mtu"] = m.into();
    }
    if let Some(t) = net.network_type {
        attrs["provider:network_type"] = t.as_str().into();
    }
    if let Some(p) = &net.physical_network {
        attrs["provider:physical_network"] = p.as_str().into();
    }
    if let Some(id) = net.segmentation_id {
        attrs["provider:segmentation_id"] = id.into();
    }
    if net.external {
        attrs["router:external"] = true.into();
    }
    let admin = net.network_type.is_some() || net.external;
    if admin && let Some(p) = &net.project {
        attrs["project_id"] = p.as_str().into();
    }
    (attrs, admin)
}

/// A network's provider attributes as the API shows them (to an admin).
pub fn segment_of(net: &Value) -> SegmentState {
    let attr = |k: &str| net.get(k).and_then(Value::as_str).map(str::to_owned);
    SegmentState {
        network_type: attr("provider:network_type"),
        physical_network: attr("provider:physical_network"),
        segmentation_id: net
            .get("provider:segmentation_id")
            .and_then(Value::as_u64)
            .and_then(|id| u32::try_from(id).ok()),
    }
}

/// What to change on the existing network `have` (besides its MTU) so that it is what `net`
/// asks for; an error if only a new network could be (its segment is fixed when it is made).
pub fn network_update(have: &Value, net: &NetworkSpec) -> Result<Map<String, Value>> {
    let seg = segment_of(have);
    let fixed = net
        .network_type
        .is_some_and(|t| seg.network_type.as_deref() != Some(t.as_str()))
        || net
            .physical_network
            .as_ref()
            .is_some_and(|p| seg.physical_network.as_ref() != Some(p))
        || net
            .segmentation_id
            .is_some_and(|id| seg.segmentation_id != Some(id));
    if fixed {
        return Err(Error::Topology(format!(
            "network {}: its segment is {seg} and cannot change to what the file says (it is \
             fixed when the network is made; `wyvern lab up --replace FILE` brings the lab up \
             afresh)",
            net.name
        )));
    }
    let mut update = Map::new();
    if have.get("router:external").and_then(Value::as_bool) != Some(net.external) {
        update.insert("router:external".into(), net.external.into());
    }
    Ok(update)
}

/// The API's `gateway_ip` for `gw`; `None` for the server's default (nothing to send).
fn gateway_value(gw: Gateway) -> Option<Value> {
    match gw {
        Gateway::Default => None,
        Gateway::None => Some(Value::Null),
        Gateway::Ip(ip) => Some(ip.to_string().into()),
    }
}

/// `dns_nameservers` as the API has them.
fn dns_value(servers: &[IpAddr]) -> Value {
    servers.iter().map(|s| s.to_string()).collect()
}

/// The attributes of a new subnet `name` of network `net_id`.
pub fn subnet_attrs(s: &SubnetSpec, name: &str, net_id: &str) -> Result<Value> {
    let mut attrs = json!({
        "name": name,
        "network_id": net_id,
        "ip_version": if s.cidr.addr().is_ipv4() { 4 } else { 6 },
        "cidr": s.cidr.to_string(),
    });
    if let Some(gw) = gateway_value(s.gateway()?) {
        attrs["gateway_ip"] = gw;
    }
    for (key, mode) in [
        ("ipv6_ra_mode", s.ipv6_ra_mode),
        ("ipv6_address_mode", s.ipv6_address_mode),
    ] {
        if let Some(m) = mode {
            attrs[key] = m.as_str().into();
        }
    }
    if let Some(dns) = &s.dns_nameservers {
        attrs["dns_nameservers"] = dns_value(dns);
    }
    Ok(attrs)
}

/// Whether the existing subnet `have` is the file's `s` as far as a subnet cannot change once
/// made: its CIDR and IPv6 modes. If not, it is replaced.
pub fn same_subnet(have: &Value, s: &SubnetSpec) -> bool {
    let modes = [
        ("ipv6_ra_mode", s.ipv6_ra_mode),
        ("ipv6_address_mode", s.ipv6_address_mode),
    ];
    text(have, "cidr").parse::<IpNet>().ok() == Some(s.cidr)
        && modes
            .iter()
            .all(|(key, mode)| have.get(*key).and_then(Value::as_str) == mode.map(Ipv6Mode::as_str))
}

/// What to change on the existing subnet `have` (the same, see [`same_subnet`]) so that it is
/// what `s` asks for.
pub fn subnet_update(have: &Value, s: &SubnetSpec) -> Result<Map<String, Value>> {
    let mut update = Map::new();
    if let Some(w) = gateway_value(s.gateway()?)
        && w.as_str() != have.get("gateway_ip").and_then(Value::as_str)
    {
        update.insert("gateway_ip".into(), w);
    }
    if let Some(dns) = &s.dns_nameservers {
        let current: Vec<IpAddr> = have
            .get("dns_nameservers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str()?.parse().ok())
            .collect();
        if &current != dns {
            update.insert("dns_nameservers".into(), dns_value(dns));
        }
    }
    Ok(update)
}

/// The fixed IPs to ask for on VM `vm`'s port; `None` to let the server choose (one address of
/// each IP version, and the automatic ones). With an `ip`, that address and, on a dual-stack
/// network, the first subnet of the other version whose addresses the server allocates.
pub fn wanted_fixed_ips(vm: &VmSpec, spec: &NetworkSpec, net: &NetworkState) -> Option<Vec<Value>> {
    let ip = vm.ip?;
    let mut out = vec![json!({ "ip_address": ip.to_string() })];
    let other = spec
        .subnets
        .iter()
        .zip(&net.subnets)
        .find(|(s, _)| s.cidr.addr().is_ipv4() != ip.is_ipv4() && !s.is_auto_address());
    if let Some((_, s)) = other {
        out.push(json!({ "subnet_id": s.id }));
    }
    Some(out)
}

/// Whether `port` has every fixed IP of `wanted` (an address, or one on a subnet).
pub fn has_fixed_ips(port: &Value, wanted: &[Value]) -> bool {
    let have = port
        .get("fixed_ips")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    wanted.iter().all(|w| {
        have.iter().any(|h| {
            ["ip_address", "subnet_id"]
                .iter()
                .all(|k| w.get(k).is_none_or(|v| h.get(k) == Some(v)))
        })
    })
}

/// The prefixes VM `vm` may send from besides its fixed IPs: those of its extra addresses.
pub fn wanted_pairs(vm: &VmSpec) -> BTreeSet<IpNet> {
    vm.extra_addresses.iter().map(IpNet::trunc).collect()
}

/// The prefixes of `port`'s allowed address pairs.
pub fn port_pairs(port: &Value) -> BTreeSet<IpNet> {
    port.get("allowed_address_pairs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let ip = text(p, "ip_address");
            ip.parse::<IpNet>()
                .ok()
                .or_else(|| ip.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// The ids of `port`'s security groups, sorted.
pub fn port_groups(port: &Value) -> Vec<String> {
    let mut ids: Vec<String> = port
        .get("security_groups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|g| Some(g.as_str()?.to_owned()))
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Topology;
    use crate::state::SubnetState;

    fn topology() -> Topology {
        let text = r#"
name = "t"
[[chassis]]
name = "c1"
[[network]]
name = "n"
[[network.subnet]]
cidr = "10.0.0.0/24"
[[network.subnet]]
cidr = "fd00:1::/64"
ipv6_address_mode = "slaac"
[[network.subnet]]
cidr = "fd00:2::/64"
gateway = "none"
dns_nameservers = ["fd00:2::53"]
[[vm]]
name = "v"
network = "n"
chassis = "c1"
ip = "10.0.0.5"
extra_addresses = ["192.168.50.1/24", "192.168.50.2/24", "fd50::1/64"]
"#;
        Topology::parse(text, Path::new("t.toml")).unwrap()
    }

    #[test]
    fn subnets_from_the_file() {
        let t = topology();
        let subnets = &t.networks[0].subnets;
        let a = subnet_attrs(&subnets[2], "n-3", "net").unwrap();
        assert_eq!(a["ip_version"], 6);
        assert_eq!(a["gateway_ip"], Value::Null);
        assert_eq!(a["dns_nameservers"], json!(["fd00:2::53"]));
        assert!(a.get("ipv6_ra_mode").is_none());
        let b = subnet_attrs(&subnets[1], "n-2", "net").unwrap();
        assert_eq!(b["ipv6_address_mode"], "slaac");
        assert!(b.get("gateway_ip").is_none() && b.get("dns_nameservers").is_none());

        // As made: nothing to change; other DNS servers and gateway: both updated.
        let made = json!({ "cidr": "fd00:2::/64", "gateway_ip": null,
            "dns_nameservers": ["fd00:2::53"] });
        assert!(same_subnet(&made, &subnets[2]));
        assert!(subnet_update(&made, &subnets[2]).unwrap().is_empty());
        let other = json!({ "gateway_ip": "fd00:2::1", "dns_nameservers": [] });
        let u = subnet_update(&other, &subnets[2]).unwrap();
        assert_eq!(
            Value::Object(u),
            json!({ "gateway_ip": null, "dns_nameservers": ["fd00:2::53"] })
        );
        // Another CIDR, or another IPv6 mode: not the same subnet (it is replaced).
        let moved = json!({ "cidr": "fd00:3::/64" });
        assert!(!same_subnet(&moved, &subnets[2]));
        let slaac = json!({ "cidr": "fd00:1::/64", "ipv6_address_mode": "slaac" });
        assert!(same_subnet(&slaac, &subnets[1]));
        let stateful = json!({ "cidr": "fd00:1::/64", "ipv6_address_mode": "dhcpv6-stateful" });
        assert!(!same_subnet(&stateful, &subnets[1]));
    }

    #[test]
    fn networks_from_the_file() {
        let text = r#"
name = "t"
[[physical]]
name = "physnet1"
[[chassis]]
name = "c1"
[[network]]
name = "v"
project = "alpha"
network_type = "vlan"
physical_network = "physnet1"
segmentation_id = 101
[[network]]
name = "public"
external = true
[[network]]
name = "plain"
project = "alpha"
"#;
        let t = Topology::parse(text, Path::new("t.toml")).unwrap();
        // Provider settings: made by an admin, for the project.
        let (a, admin) = network_attrs(&t.networks[0]);
        assert!(admin);
        assert_eq!(
            a,
            json!({ "name": "v", "provider:network_type": "vlan",
                "provider:physical_network": "physnet1", "provider:segmentation_id": 101,
                "project_id": "alpha" })
        );
        let (a, admin) = network_attrs(&t.networks[1]);
        assert!(admin);
        assert_eq!(a, json!({ "name": "public", "router:external": true }));
        let (a, admin) = network_attrs(&t.networks[2]);
        assert!(!admin);
        assert_eq!(a, json!({ "name": "plain" }));
        // The API's answer: its segment; `external` can change, the segment cannot.
        let have = json!({ "provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": 101, "router:external": false });
        assert_eq!(segment_of(&have).to_string(), "vlan 101 on physnet1");
        assert!(network_update(&have, &t.networks[0]).unwrap().is_empty());
        let other = json!({ "provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": 102 });
        let e = network_update(&other, &t.networks[0])
            .unwrap_err()
            .to_string();
        assert!(e.contains("segment is vlan 102 on physnet1"), "{e}");
        let tunnel = json!({ "provider:network_type": "vxlan", "provider:segmentation_id": 7,
            "router:external": false });
        assert_eq!(segment_of(&tunnel).to_string(), "vxlan 7");
        assert_eq!(
            Value::Object(network_update(&tunnel, &t.networks[1]).unwrap()),
            json!({ "router:external": true })
        );
    }

    #[test]
    fn ports_from_the_file() {
        let t = topology();
        let net = NetworkState {
            id: "net".into(),
            project: None,
            mtu: 1450,
            subnets: ["s4", "s6auto", "s6"]
                .iter()
                .map(|id| SubnetState {
                    id: (*id).into(),
                    name: String::new(),
                    cidr: String::new(),
                    gateway: None,
                })
                .collect(),
            segment: SegmentState::default(),
            external: false,
        };
        // The fixed IPv4 address, and an allocated one on the first IPv6 subnet the server
        // allocates from (the SLAAC one gives an address anyway).
        let want = wanted_fixed_ips(&t.vms[0], &t.networks[0], &net).unwrap();
        assert_eq!(
            want,
            [
                json!({ "ip_address": "10.0.0.5" }),
                json!({ "subnet_id": "s6" })
            ]
        );
        let port = json!({ "fixed_ips": [
            { "subnet_id": "s4", "ip_address": "10.0.0.5" },
            { "subnet_id": "s6auto", "ip_address": "fd00:1::1" },
            { "subnet_id": "s6", "ip_address": "fd00:2::7" },
        ]});
        assert!(has_fixed_ips(&port, &want));
        let moved = json!({ "fixed_ips": [{ "subnet_id": "s4", "ip_address": "10.0.0.6" },
                                         { "subnet_id": "s6", "ip_address": "fd00:2::7" }] });
        assert!(!has_fixed_ips(&moved, &want));

        // Extra addresses become their prefixes, once each; the API's form compares equal.
        let pairs = wanted_pairs(&t.vms[0]);
        let shown: Vec<String> = pairs.iter().map(IpNet::to_string).collect();
        assert_eq!(shown, ["192.168.50.0/24", "fd50::/64"]);
        let port = json!({ "allowed_address_pairs": [
            { "ip_address": "fd50::/64", "mac_address": "fa:16:3e:00:00:01" },
            { "ip_address": "192.168.50.0/24" },
        ]});
        assert_eq!(port_pairs(&port), pairs);
        let single = json!({ "allowed_address_pairs": [{ "ip_address": "10.9.9.9" }] });
        assert_eq!(
            port_pairs(&single).iter().next().unwrap().to_string(),
            "10.9.9.9/32"
        );
    }
}
