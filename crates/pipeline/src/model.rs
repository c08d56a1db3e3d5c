//! The agent's local view of the topology: typed objects read from the northbound store's JSON, and
//! the state of the local Open vSwitch (which VIF has which OpenFlow port).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;

use crate::cookie::Owner;

pub use crate::balancers::{
    Health, HealthMonitor, Listener, LoadBalancer, Member, MonitorKind, Pool,
};
pub use crate::chains::{FlowClassifier, PortChain, PortPair, PortPairGroup};
pub use crate::trunks::{Subport, Trunk};

/// A MAC address as a number (the low 48 bits).
pub type Mac = u64;

/// The six octets of a MAC address, as on the wire.
pub fn mac_octets(mac: Mac) -> [u8; 6] {
    let b = mac.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The IPv6 link-local address (`fe80::/64` plus the modified EUI-64) of an interface with `mac`.
pub fn link_local(mac: Mac) -> Ipv6Addr {
    ndp::link_local(mac_octets(mac))
}

/// Whether a MAC is an individual (unicast) address, not a group one, and not all zeroes.
pub fn is_unicast(mac: Mac) -> bool {
    mac != 0 && mac_octets(mac)[0] & 0x01 == 0
}

pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = 0u64;
    let mut n = 0;
    for part in s.split(':') {
        if part.len() != 2 {
            return None;
        }
        out = (out << 8) | u64::from(u8::from_str_radix(part, 16).ok()?);
        n += 1;
    }
    (n == 6).then_some(out)
}

/// A network, as far as the datapath cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub id: String,
    /// `provider:network_type`.
    pub kind: String,
    /// Tunnel id (VNI) of overlay networks (`vxlan`, `geneve`).
    pub vni: Option<u32>,
    /// The physical network of a `flat` or `vlan` network, with the VLAN id of a `vlan` one.
    pub physical: Option<Physical>,
    /// `router:external`: routers have their gateways here, floating IPs come from here.
    pub external: bool,
    pub admin_up: bool,
    /// MTU offered to the network's VMs.
    pub mtu: Option<u16>,
}

/// Where a provider network's frames travel: a physical network, tagged or not.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Physical {
    /// `provider:physical_network`, as the agents' bridge mappings name it.
    pub physnet: String,
    /// The VLAN id of a `vlan` network (`None`: untagged, a `flat` network).
    pub vlan: Option<u16>,
}

impl Network {
    /// The network's value in `metadata` while a packet is on it: the VNI of an overlay network,
    /// bit 62 plus a 62-bit hash of the id for a provider network (no number to allocate; a
    /// router's context uses bit 63, so neither meets a VNI or the other).
    pub fn metadata(&self) -> Option<u64> {
        if let Some(vni) = self.vni {
            return Some(u64::from(vni));
        }
        self.physical.as_ref()?;
        Some(crate::tables::provider_metadata(&self.id))
    }
}

/// A subnet, as far as the datapath and the agent's DHCP server care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub network_id: String,
    pub cidr: IpNet,
    pub enable_dhcp: bool,
    pub gateway: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    /// Host routes: destination and next hop.
    pub host_routes: Vec<(IpNet, IpAddr)>,
    /// `ipv6_ra_mode` (`slaac`, `dhcpv6-stateful`, `dhcpv6-stateless`): what router
    /// advertisements tell hosts; `None` when nothing is advertised (and for IPv4 subnets).
    pub ipv6_ra_mode: Option<String>,
    /// `ipv6_address_mode` (same values): how hosts get their addresses; `None` when unset.
    pub ipv6_address_mode: Option<String>,
}

/// A port, as far as the datapath cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub mac: Mac,
    pub ips: Vec<IpAddr>,
    /// Allowed address pairs: a prefix and the MAC it may be used with.
    pub pairs: Vec<(IpNet, Mac)>,
    pub port_security: bool,
    pub admin_up: bool,
    /// The chassis its VIF is on or will be plugged on (`binding:host_id`), if any.
    pub host: Option<String>,
    /// `device_owner` (`network:router_interface` for a router's interface, ...).
    pub device_owner: String,
    /// `device_id`: the router of a router interface.
    pub device_id: String,
    /// `extra_dhcp_opts`: DHCP options set on the port.
    pub extra_dhcp_opts: Vec<ExtraDhcpOpt>,
    /// The security groups whose rules filter the port (with port security on).
    pub security_groups: Vec<String>,
}

/// `device_owner` of a router's interface ports.
pub const ROUTER_INTERFACE: &str = "network:router_interface";
/// `device_owner` of a load balancer's VIP port, as Octavia sets it.
pub const LOAD_BALANCER_VIP: &str = "Octavia";
/// `device_owner` of a chassis' own address on an external network (its distributed SNAT
/// address), as Neutron's DVR names the per-host port of that network.
pub const SNAT_ADDRESS: &str = "network:floatingip_agent_gateway";

impl Port {
    /// The chassis whose SNAT address on its network this port is, if it is one.
    pub fn snat_chassis(&self) -> Option<&str> {
        (self.device_owner == SNAT_ADDRESS)
            .then_some(self.host.as_deref())
            .flatten()
    }

    /// The router this port is the gateway port of, if it is one.
    pub fn gateway_of(&self) -> Option<&str> {
        (self.device_owner == ROUTER_GATEWAY && !self.device_id.is_empty())
            .then_some(self.device_id.as_str())
    }

    /// The router this port is an interface of, if it is one.
    pub fn router(&self) -> Option<&str> {
        (self.device_owner == ROUTER_INTERFACE && !self.device_id.is_empty())
            .then_some(self.device_id.as_str())
    }
}

/// A router, as far as the datapath cares (its interfaces are ports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Router {
    pub id: String,
    pub name: String,
    pub admin_up: bool,
    /// Extra routes: destination and next hop.
    pub routes: Vec<(IpNet, IpAddr)>,
    /// The external network of its gateway (`external_gateway_info`), if it has one.
    pub gateway: Option<Gateway>,
    /// `snat_mode` `centralized`: ports without a floating IP reach the outside through the
    /// router's gateway address on one gateway chassis (default: distributed SNAT).
    pub centralized: bool,
    /// The router's number (`_nat_id`, 1 to [`MAX_ROUTER_NUMBER`]), allocated by the server: its
    /// transit tunnel id and its SNAT conntrack zone on a gateway chassis.
    pub number: Option<u16>,
}

impl Router {
    /// Whether the other chassis send some of its packets to the chassis that hosts its gateway
    /// (through the tunnel with its transit id): those for the outside without a floating IP
    /// when its SNAT is centralized, and IPv6 to and from the outside, which is routed there
    /// (one place answers for the gateway's addresses, and no NAT keeps state elsewhere).
    pub fn transits(&self) -> bool {
        self.centralized
            || self
                .gateway
                .as_ref()
                .is_some_and(|g| g.ips.iter().any(IpAddr::is_ipv6))
    }
}

/// The highest router number the server allocates.
pub const MAX_ROUTER_NUMBER: u16 = 0x3fff;

/// `device_owner` of a router's gateway port.
pub const ROUTER_GATEWAY: &str = "network:router_gateway";

/// A router's external gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gateway {
    pub network_id: String,
    /// Its addresses on the external network.
    pub ips: Vec<IpAddr>,
    /// `enable_snat`: ports without a floating IP reach the outside through source NAT.
    pub snat: bool,
}

/// A floating IP: an address on an external network, forwarded to a port's fixed IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIp {
    pub id: String,
    pub address: Ipv4Addr,
    pub network_id: String,
    /// The port on the external network that holds the address (and its MAC).
    pub own_port: Option<String>,
    /// The association: port, its fixed IP and the router between them.
    pub target: Option<FipTarget>,
}

/// Where a floating IP forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipTarget {
    pub port_id: String,
    pub fixed_ip: Ipv4Addr,
    pub router_id: String,
}

/// One of a port's `extra_dhcp_opts` as the user wrote it: a dnsmasq option name or number
/// (possibly behind `tag:...,`) and its value, for DHCPv4 (`ip_version` 4) or DHCPv6 (6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraDhcpOpt {
    pub name: String,
    /// Empty: send no such option (dnsmasq's meaning).
    pub value: String,
    pub ip_version: u8,
}

impl ExtraDhcpOpt {
    /// The `extra_dhcp_opts` of a port's JSON. Entries without a name, with a null value
    /// (Neutron's way of removing one) or with an IP version other than 4 and 6 are left out.
    fn list(v: &Value) -> Vec<Self> {
        let one = |o: &Value| {
            let name = o.get("opt_name")?.as_str()?.to_string();
            let value = match o.get("opt_value")? {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return None,
            };
            let ip_version = match o.get("ip_version") {
                None | Some(Value::Null) => 4,
                Some(Value::String(s)) => s.parse().ok()?,
                Some(n) => u8::try_from(n.as_u64()?).ok()?,
            };
            matches!(ip_version, 4 | 6).then_some(Self {
                name,
                value,
                ip_version,
            })
        };
        v.get("extra_dhcp_opts")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(one).collect())
            .unwrap_or_default()
    }
}

/// A security group: its rules are [`SgRule`]s, its members the ports that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    /// Connections are tracked (replies pass); `false`: every packet is filtered on its own.
    pub stateful: bool,
}

/// One rule of a security group: what it admits, ingress (to its ports) or egress (from them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgRule {
    pub id: String,
    pub group: String,
    pub ingress: bool,
    pub ipv6: bool,
    /// IP protocol number; `None`: any.
    pub protocol: Option<u8>,
    /// Destination port range (TCP, UDP, SCTP), or ICMP type (`port_min`) and code (`port_max`).
    pub port_min: Option<u16>,
    pub port_max: Option<u16>,
    /// The other end: a prefix, the members of a group, or an address group (at most one).
    pub remote: Remote,
}

/// The other end of a rule's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Any,
    Prefix(IpNet),
    Group(String),
    AddressGroup(String),
}

/// An address group: prefixes that rules can name as their other end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressGroup {
    pub id: String,
    pub addresses: Vec<IpNet>,
}

/// A chassis other agents tunnel to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chassis {
    pub id: String,
    pub tunnel_ip: Ipv4Addr,
    /// It may host centralized router gateways (the agent's `--gateway`).
    pub gateway: bool,
    /// The physical networks it reaches (its bridge mappings).
    pub physnets: Vec<String>,
}

/// What a chassis reports of the data plane of the chassis it watches over BFD: `true` up,
/// `false` down after having been up (chassis its sessions know nothing of are not in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerReport {
    /// The reporting chassis.
    pub reporter: String,
    pub verdicts: BTreeMap<String, bool>,
}

impl PeerReport {
    /// From `{"<chassis>": "up" | "down", ...}` stored for `reporter`; a report about the
    /// reporter itself is left out.
    pub fn from_json(reporter: &str, v: &Value) -> Option<Self> {
        let verdicts = v
            .as_object()?
            .iter()
            .filter(|(c, _)| c.as_str() != reporter)
            .map(|(c, s)| match s.as_str()? {
                "up" => Some((c.clone(), true)),
                "down" => Some((c.clone(), false)),
                _ => None,
            })
            .collect::<Option<_>>()?;
        Some(Self {
            reporter: reporter.to_owned(),
            verdicts,
        })
    }
}

/// How many reports of *down* make a chassis' data plane down for chassis that do not watch
/// it themselves (a majority of its watchers, see the agent's `peers` module), provided they
/// outnumber the reports of *up*: one watcher whose own underlay is cut, seeing every session
/// fail, withdraws nobody.
pub const DOWN_QUORUM: u32 = 2;

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl Network {
    pub fn from_json(v: &Value) -> Option<Self> {
        let kind = str_of(v, "provider:network_type");
        let segment = v.get("provider:segmentation_id").and_then(Value::as_u64);
        let physnet = str_of(v, "provider:physical_network");
        let (vni, physical) = match kind {
            "vxlan" | "geneve" => (segment.and_then(|n| u32::try_from(n).ok()), None),
            "flat" if !physnet.is_empty() => (
                None,
                Some(Physical {
                    physnet: physnet.to_string(),
                    vlan: None,
                }),
            ),
            "vlan" if !physnet.is_empty() => {
                let vlan = segment
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| (1..4095).contains(n))?;
                (
                    None,
                    Some(Physical {
                        physnet: physnet.to_string(),
                        vlan: Some(vlan),
                    }),
                )
            }
            _ => (None, None),
        };
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            kind: kind.to_string(),
            vni,
            physical,
            external: v.get("router:external") == Some(&Value::Bool(true)),
            admin_up: v.get("admin_state_up") != Some(&Value::Bool(false)),
            mtu: v
                .get("mtu")
                .and_then(Value::as_u64)
                .and_then(|m| u16::try_from(m).ok()),
        })
    }
}

/// Source MAC of the distributed DHCP server's replies and ARP answers (locally administered).
pub const DHCP_SERVER_MAC: Mac = 0x0277_7976_0001;

impl Subnet {
    /// The distributed DHCP server's address on this IPv4 subnet (its server identifier): the
    /// gateway, or the subnet's last host address when it has none.
    pub fn dhcp_server_ip(&self) -> Option<Ipv4Addr> {
        let IpNet::V4(cidr) = self.cidr else {
            return None;
        };
        match self.gateway {
            Some(IpAddr::V4(gw)) => Some(gw),
            _ if cidr.prefix_len() >= 31 => Some(cidr.network()),
            _ => Some(Ipv4Addr::from(u32::from(cidr.broadcast()) - 1)),
        }
    }

    pub fn from_json(v: &Value) -> Option<Self> {
        let ip = |v: &Value| v.as_str()?.parse::<IpAddr>().ok();
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            network_id: str_of(v, "network_id").to_string(),
            cidr: str_of(v, "cidr").parse().ok()?,
            enable_dhcp: v.get("enable_dhcp") != Some(&Value::Bool(false)),
            gateway: v.get("gateway_ip").and_then(ip),
            dns: v
                .get("dns_nameservers")
                .and_then(Value::as_array)
                .map(|l| l.iter().filter_map(ip).collect())
                .unwrap_or_default(),
            host_routes: routes(v, "host_routes"),
            ipv6_ra_mode: v
                .get("ipv6_ra_mode")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ipv6_address_mode: v
                .get("ipv6_address_mode")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

impl Port {
    pub fn from_json(v: &Value) -> Option<Self> {
        // A group (multicast or broadcast) MAC would capture the network's broadcasts in L2: such
        // a port is malformed, whatever the store holds.
        let mac = parse_mac(str_of(v, "mac_address")).filter(|m| is_unicast(*m))?;
        let ips = v
            .get("fixed_ips")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|i| i.get("ip_address")?.as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pairs = v
            .get("allowed_address_pairs")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(|p| {
                        let ip = p.get("ip_address")?.as_str()?;
                        let net: IpNet = ip
                            .parse()
                            .ok()
                            .or_else(|| ip.parse::<IpAddr>().ok().map(IpNet::from))?;
                        let pmac = match p.get("mac_address").and_then(Value::as_str) {
                            Some(m) => parse_mac(m).filter(|m| is_unicast(*m))?,
                            None => mac,
                        };
                        Some((net, pmac))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let host = Some(str_of(v, "binding:host_id").to_string()).filter(|h| !h.is_empty());
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            name: str_of(v, "name").to_string(),
            network_id: str_of(v, "network_id").to_string(),
            mac,
            ips,
            pairs,
            port_security: v.get("port_security_enabled") != Some(&Value::Bool(false)),
            admin_up: v.get("admin_state_up") != Some(&Value::Bool(false)),
            host,
            device_owner: str_of(v, "device_owner").to_string(),
            device_id: str_of(v, "device_id").to_string(),
            security_groups: strings(v, "security_groups"),
            extra_dhcp_opts: ExtraDhcpOpt::list(v),
        })
    }
}

/// A list of `{"destination", "nexthop"}` routes (host routes, extra routes); malformed entries
/// are skipped.
fn routes(v: &Value, key: &str) -> Vec<(IpNet, IpAddr)> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|r| {
                    let dst = r.get("destination")?.as_str()?.parse().ok()?;
                    let via = r.get("nexthop")?.as_str()?.parse().ok()?;
                    Some((dst, via))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The strings of a list attribute (missing or malformed entries skipped).
fn strings(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|s| Some(s.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

impl SecurityGroup {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            name: str_of(v, "name").to_string(),
            stateful: v.get("stateful") != Some(&Value::Bool(false)),
        })
    }
}

/// A rule's protocol as a number: names as Neutron accepts them, numbers as strings or
/// integers; `None`: any protocol; malformed: `Err`.
fn protocol(v: Option<&Value>, ipv6: bool) -> Result<Option<u8>, ()> {
    let named = |s: &str| -> Result<Option<u8>, ()> {
        Ok(Some(match s {
            "" | "any" => return Ok(None),
            "tcp" => 6,
            "udp" => 17,
            "sctp" => 132,
            "icmp" if ipv6 => 58,
            "icmp" => 1,
            "icmpv6" | "ipv6-icmp" => 58,
            n => n.parse().map_err(|_| ())?,
        }))
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => named(&s.to_ascii_lowercase()),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

impl SgRule {
    pub fn from_json(v: &Value) -> Option<Self> {
        let ipv6 = str_of(v, "ethertype") == "IPv6";
        let port = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
        };
        let id_of = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let remote = if let Some(g) = id_of("remote_group_id") {
            Remote::Group(g)
        } else if let Some(a) = id_of("remote_address_group_id") {
            Remote::AddressGroup(a)
        } else if let Some(p) = id_of("remote_ip_prefix") {
            let net: IpNet = p
                .parse()
                .ok()
                .or_else(|| p.parse::<IpAddr>().ok().map(IpNet::from))?;
            Remote::Prefix(net.trunc())
        } else {
            Remote::Any
        };
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            group: v.get("security_group_id")?.as_str()?.to_string(),
            ingress: match str_of(v, "direction") {
                "ingress" => true,
                "egress" => false,
                _ => return None,
            },
            ipv6,
            protocol: protocol(v.get("protocol"), ipv6).ok()?,
            port_min: port("port_range_min"),
            port_max: port("port_range_max"),
            remote,
        })
    }
}

impl AddressGroup {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            addresses: strings(v, "addresses")
                .iter()
                .filter_map(|a| a.parse::<IpNet>().ok().map(|n| n.trunc()))
                .collect(),
        })
    }
}

impl Router {
    pub fn from_json(v: &Value) -> Option<Self> {
        let gateway = match v.get("external_gateway_info") {
            Some(g @ Value::Object(_)) => Some(Gateway {
                network_id: g.get("network_id")?.as_str()?.to_string(),
                ips: g
                    .get("external_fixed_ips")
                    .and_then(Value::as_array)
                    .map(|l| {
                        l.iter()
                            .filter_map(|i| i.get("ip_address")?.as_str()?.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default(),
                snat: g.get("enable_snat") != Some(&Value::Bool(false)),
            }),
            _ => None,
        };
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            name: str_of(v, "name").to_string(),
            admin_up: v.get("admin_state_up") != Some(&Value::Bool(false)),
            routes: routes(v, "routes"),
            gateway,
            centralized: str_of(v, "snat_mode") == "centralized",
            number: v
                .get("_nat_id")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (1..=MAX_ROUTER_NUMBER).contains(n)),
        })
    }
}

impl FloatingIp {
    pub fn from_json(v: &Value) -> Option<Self> {
        let id_of = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        let target = match (id_of("port_id"), id_of("router_id")) {
            (Some(port_id), Some(router_id)) => Some(FipTarget {
                port_id,
                fixed_ip: str_of(v, "fixed_ip_address").parse().ok()?,
                router_id,
            }),
            _ => None,
        };
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            address: str_of(v, "floating_ip_address").parse().ok()?,
            network_id: str_of(v, "floating_network_id").to_string(),
            own_port: id_of("_port"),
            target,
        })
    }
}

impl Chassis {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            tunnel_ip: str_of(v, "tunnel_ip").parse().ok()?,
            gateway: v.get("gateway") == Some(&Value::Bool(true)),
            physnets: strings(v, "physnets"),
        })
    }
}

/// Everything the pipeline is computed from. The maps are read freely; changes go through
/// [`Topology::put`] and [`Topology::remove`], which keep the indexes (ports and subnets by
/// network, interfaces by router) true.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub networks: BTreeMap<String, Network>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    pub routers: BTreeMap<String, Router>,
    pub security_groups: BTreeMap<String, SecurityGroup>,
    pub rules: BTreeMap<String, SgRule>,
    pub address_groups: BTreeMap<String, AddressGroup>,
    pub floating_ips: BTreeMap<String, FloatingIp>,
    pub load_balancers: BTreeMap<String, LoadBalancer>,
    pub listeners: BTreeMap<String, Listener>,
    pub pools: BTreeMap<String, Pool>,
    pub members: BTreeMap<String, Member>,
    pub health_monitors: BTreeMap<String, HealthMonitor>,
    pub port_pairs: BTreeMap<String, PortPair>,
    pub port_pair_groups: BTreeMap<String, PortPairGroup>,
    pub flow_classifiers: BTreeMap<String, FlowClassifier>,
    pub port_chains: BTreeMap<String, PortChain>,
    pub trunks: BTreeMap<String, Trunk>,
    /// Registered chassis.
    pub chassis: BTreeMap<String, Chassis>,
    /// Chassis whose liveness lease is current (their agent is alive). Flows towards a chassis,
    /// and the election of gateway chassis, follow its data plane instead when BFD knows it
    /// ([`Topology::reachable`], [`Topology::gateway_host`]).
    pub chassis_up: BTreeSet<String>,
    /// What each chassis reports of the data plane of the chassis it watches, by reporter.
    pub peer_reports: BTreeMap<String, PeerReport>,
    /// The reports' (up, down) counts by watched chassis.
    reported: BTreeMap<String, (u32, u32)>,
    /// This chassis.
    pub local: Local,
    ports_on: BTreeMap<String, BTreeSet<String>>,
    subnets_on: BTreeMap<String, BTreeSet<String>>,
    interfaces: BTreeMap<String, BTreeSet<String>>,
    interfaces_on: BTreeMap<String, BTreeSet<String>>,
    /// The ports holding each MAC and each IP on a network ([`Topology::claim_keys`]).
    claims: BTreeMap<String, Claimants>,
    /// Rules by group, and rules by the group they name as remote.
    rules_of: BTreeMap<String, BTreeSet<String>>,
    remote_rules: BTreeMap<String, BTreeSet<String>>,
    /// SNAT address ports by `network chassis` ([`Topology::snat_key`]).
    snat_ports: BTreeMap<String, BTreeSet<String>>,
    /// Gateway ports by router.
    gateway_ports: BTreeMap<String, BTreeSet<String>>,
    /// Ports by the chassis they are bound to (`binding:host_id`).
    bound: BTreeMap<String, BTreeSet<String>>,
    /// Members by pool.
    members_of: BTreeMap<String, BTreeSet<String>>,
    /// Floating IPs by the port they forward to.
    fips_of: BTreeMap<String, BTreeSet<String>>,
    /// Trunks by the ports they name (parent and subports).
    trunks_naming: BTreeMap<String, BTreeSet<String>>,
}

/// What a chassis follows of the northbound topology ([`Topology::needs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    pub networks: BTreeSet<String>,
    pub routers: BTreeSet<String>,
    pub security_groups: BTreeSet<String>,
    pub address_groups: BTreeSet<String>,
    /// The physical networks whose external networks a gateway chassis follows.
    pub physnets: BTreeSet<String>,
}

/// A northbound object, decoded once at the edge.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Network(Network),
    Subnet(Subnet),
    Port(Port),
    Router(Router),
    SecurityGroup(SecurityGroup),
    SgRule(SgRule),
    AddressGroup(AddressGroup),
    FloatingIp(FloatingIp),
    LoadBalancer(LoadBalancer),
    Listener(Listener),
    Pool(Pool),
    Member(Member),
    HealthMonitor(HealthMonitor),
    PortPair(PortPair),
    PortPairGroup(PortPairGroup),
    FlowClassifier(FlowClassifier),
    PortChain(PortChain),
    Trunk(Trunk),
    Chassis(Chassis),
    /// A chassis whose liveness lease is current.
    ChassisUp(String),
    ChassisPeers(PeerReport),
}

pub use nb_keys::Kind;

impl Object {
    /// Decodes a stored value of `kind`; `None` if it is malformed (missing id, bad MAC, ...).
    pub fn decode(kind: Kind, id: &str, v: &Value) -> Option<Object> {
        let obj = match kind {
            Kind::Network => Object::Network(Network::from_json(v)?),
            Kind::Subnet => Object::Subnet(Subnet::from_json(v)?),
            Kind::Port => Object::Port(Port::from_json(v)?),
            Kind::Router => Object::Router(Router::from_json(v)?),
            Kind::Chassis => Object::Chassis(Chassis::from_json(v)?),
            Kind::ChassisUp => return Some(Object::ChassisUp(id.to_string())),
            Kind::ChassisPeers => Object::ChassisPeers(PeerReport::from_json(id, v)?),
            Kind::SecurityGroup => Object::SecurityGroup(SecurityGroup::from_json(v)?),
            Kind::SecurityGroupRule => Object::SgRule(SgRule::from_json(v)?),
            Kind::AddressGroup => Object::AddressGroup(AddressGroup::from_json(v)?),
            Kind::FloatingIp => Object::FloatingIp(FloatingIp::from_json(v)?),
            Kind::LoadBalancer => Object::LoadBalancer(LoadBalancer::from_json(v)?),
            Kind::Listener => Object::Listener(Listener::from_json(v)?),
            Kind::Pool => Object::Pool(Pool::from_json(v)?),
            Kind::Member => Object::Member(Member::from_json(v)?),
            Kind::HealthMonitor => Object::HealthMonitor(HealthMonitor::from_json(v)?),
            Kind::PortPair => Object::PortPair(PortPair::from_json(v)?),
            Kind::PortPairGroup => Object::PortPairGroup(PortPairGroup::from_json(v)?),
            Kind::FlowClassifier => Object::FlowClassifier(FlowClassifier::from_json(v)?),
            Kind::PortChain => Object::PortChain(PortChain::from_json(v)?),
            Kind::Trunk => Object::Trunk(Trunk::from_json(v)?),
        };
        (obj.id() == id).then_some(obj)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Network(_) => Kind::Network,
            Object::Subnet(_) => Kind::Subnet,
            Object::Port(_) => Kind::Port,
            Object::Router(_) => Kind::Router,
            Object::SecurityGroup(_) => Kind::SecurityGroup,
            Object::SgRule(_) => Kind::SecurityGroupRule,
            Object::AddressGroup(_) => Kind::AddressGroup,
            Object::FloatingIp(_) => Kind::FloatingIp,
            Object::LoadBalancer(_) => Kind::LoadBalancer,
            Object::Listener(_) => Kind::Listener,
            Object::Pool(_) => Kind::Pool,
            Object::Member(_) => Kind::Member,
            Object::HealthMonitor(_) => Kind::HealthMonitor,
            Object::PortPair(_) => Kind::PortPair,
            Object::PortPairGroup(_) => Kind::PortPairGroup,
            Object::FlowClassifier(_) => Kind::FlowClassifier,
            Object::PortChain(_) => Kind::PortChain,
            Object::Trunk(_) => Kind::Trunk,
            Object::Chassis(_) => Kind::Chassis,
            Object::ChassisUp(_) => Kind::ChassisUp,
            Object::ChassisPeers(_) => Kind::ChassisPeers,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Object::Network(o) => &o.id,
            Object::Subnet(o) => &o.id,
            Object::Port(o) => &o.id,
            Object::Router(o) => &o.id,
            Object::SecurityGroup(o) => &o.id,
            Object::SgRule(o) => &o.id,
            Object::AddressGroup(o) => &o.id,
            Object::FloatingIp(o) => &o.id,
            Object::LoadBalancer(o) => &o.id,
            Object::Listener(o) => &o.id,
            Object::Pool(o) => &o.id,
            Object::Member(o) => &o.id,
            Object::HealthMonitor(o) => &o.id,
            Object::PortPair(o) => &o.id,
            Object::PortPairGroup(o) => &o.id,
            Object::FlowClassifier(o) => &o.id,
            Object::PortChain(o) => &o.id,
            Object::Trunk(o) => &o.id,
            Object::Chassis(o) => &o.id,
            Object::ChassisUp(id) => id,
            Object::ChassisPeers(o) => &o.reporter,
        }
    }
}

fn unindex(index: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    if let Some(set) = index.get_mut(key) {
        set.remove(id);
        if set.is_empty() {
            index.remove(key);
        }
    }
}

/// The ids holding one claim, in order (nearly always one).
type Claimants = crate::few::Few<String, ()>;

fn claim(claims: &mut BTreeMap<String, Claimants>, key: &str, id: &str) {
    claims
        .entry(key.to_string())
        .or_default()
        .insert(id.to_string(), ());
}

fn unclaim(claims: &mut BTreeMap<String, Claimants>, key: &str, id: &str) {
    if let Some(holders) = claims.get_mut(key) {
        holders.remove(id);
        if holders.is_empty() {
            claims.remove(key);
        }
    }
}

fn index(index: &mut BTreeMap<String, BTreeSet<String>>, key: &str, id: &str) {
    index
        .entry(key.to_string())
        .or_default()
        .insert(id.to_string());
}

impl Topology {
    /// Whether the topology holds `obj` exactly as it is (putting it again would change
    /// nothing).
    pub fn holds(&self, obj: &Object) -> bool {
        fn same<T: PartialEq>(map: &BTreeMap<String, T>, id: &str, v: &T) -> bool {
            map.get(id) == Some(v)
        }
        match obj {
            Object::Network(o) => same(&self.networks, &o.id, o),
            Object::Subnet(o) => same(&self.subnets, &o.id, o),
            Object::Port(o) => same(&self.ports, &o.id, o),
            Object::Router(o) => same(&self.routers, &o.id, o),
            Object::SecurityGroup(o) => same(&self.security_groups, &o.id, o),
            Object::SgRule(o) => same(&self.rules, &o.id, o),
            Object::AddressGroup(o) => same(&self.address_groups, &o.id, o),
            Object::FloatingIp(o) => same(&self.floating_ips, &o.id, o),
            Object::LoadBalancer(o) => same(&self.load_balancers, &o.id, o),
            Object::Listener(o) => same(&self.listeners, &o.id, o),
            Object::Pool(o) => same(&self.pools, &o.id, o),
            Object::Member(o) => same(&self.members, &o.id, o),
            Object::HealthMonitor(o) => same(&self.health_monitors, &o.id, o),
            Object::PortPair(o) => same(&self.port_pairs, &o.id, o),
            Object::PortPairGroup(o) => same(&self.port_pair_groups, &o.id, o),
            Object::FlowClassifier(o) => same(&self.flow_classifiers, &o.id, o),
            Object::PortChain(o) => same(&self.port_chains, &o.id, o),
            Object::Trunk(o) => same(&self.trunks, &o.id, o),
            Object::Chassis(o) => same(&self.chassis, &o.id, o),
            Object::ChassisUp(id) => self.chassis_up.contains(id),
            Object::ChassisPeers(o) => same(&self.peer_reports, &o.reporter, o),
        }
    }

    /// Stores an object (replacing the one with its id); returns the object it replaced.
    pub fn put(&mut self, obj: Object) -> Option<Object> {
        let old = self.remove(obj.kind(), obj.id());
        match obj {
            Object::Network(n) => {
                if let Some(key) = Topology::segment_claim(&n) {
                    claim(&mut self.claims, &key, &n.id);
                }
                self.networks.insert(n.id.clone(), n);
            }
            Object::Subnet(s) => {
                index(&mut self.subnets_on, &s.network_id, &s.id);
                self.subnets.insert(s.id.clone(), s);
            }
            Object::Port(p) => {
                index(&mut self.ports_on, &p.network_id, &p.id);
                for key in Topology::claim_keys(&p) {
                    claim(&mut self.claims, &key, &p.id);
                }
                if let Some(r) = p.router() {
                    index(&mut self.interfaces, r, &p.id);
                    index(&mut self.interfaces_on, &p.network_id, &p.id);
                }
                if let Some(c) = p.snat_chassis() {
                    index(
                        &mut self.snat_ports,
                        &Topology::snat_key(&p.network_id, c),
                        &p.id,
                    );
                }
                if let Some(r) = p.gateway_of() {
                    index(&mut self.gateway_ports, r, &p.id);
                }
                if let Some(host) = &p.host {
                    index(&mut self.bound, host, &p.id);
                }
                self.ports.insert(p.id.clone(), p);
            }
            Object::Router(r) => {
                self.routers.insert(r.id.clone(), r);
            }
            Object::SecurityGroup(g) => {
                self.security_groups.insert(g.id.clone(), g);
            }
            Object::SgRule(r) => {
                index(&mut self.rules_of, &r.group, &r.id);
                if let Remote::Group(g) = &r.remote {
                    index(&mut self.remote_rules, g, &r.id);
                }
                self.rules.insert(r.id.clone(), r);
            }
            Object::AddressGroup(a) => {
                self.address_groups.insert(a.id.clone(), a);
            }
            Object::FloatingIp(f) => {
                if let Some(t) = &f.target {
                    index(&mut self.fips_of, &t.port_id, &f.id);
                }
                self.floating_ips.insert(f.id.clone(), f);
            }
            Object::LoadBalancer(o) => {
                self.load_balancers.insert(o.id.clone(), o);
            }
            Object::Listener(o) => {
                self.listeners.insert(o.id.clone(), o);
            }
            Object::Pool(o) => {
                self.pools.insert(o.id.clone(), o);
            }
            Object::Member(o) => {
                index(&mut self.members_of, &o.pool_id, &o.id);
                self.members.insert(o.id.clone(), o);
            }
            Object::HealthMonitor(o) => {
                self.health_monitors.insert(o.id.clone(), o);
            }
            Object::PortPair(o) => {
                self.port_pairs.insert(o.id.clone(), o);
            }
            Object::PortPairGroup(o) => {
                self.port_pair_groups.insert(o.id.clone(), o);
            }
            Object::FlowClassifier(o) => {
                self.flow_classifiers.insert(o.id.clone(), o);
            }
            Object::PortChain(o) => {
                self.port_chains.insert(o.id.clone(), o);
            }
            Object::Trunk(o) => {
                for port in o.ports() {
                    index(&mut self.trunks_naming, port, &o.id);
                }
                self.trunks.insert(o.id.clone(), o);
            }
            Object::Chassis(c) => {
                self.chassis.insert(c.id.clone(), c);
            }
            Object::ChassisUp(id) => {
                self.chassis_up.insert(id);
            }
            Object::ChassisPeers(o) => {
                self.count_report(&o, true);
                self.peer_reports.insert(o.reporter.clone(), o);
            }
        }
        old
    }

    /// Removes an object; returns it.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Object> {
        match kind {
            Kind::Network => {
                let n = self.networks.remove(id)?;
                if let Some(key) = Topology::segment_claim(&n) {
                    unclaim(&mut self.claims, &key, id);
                }
                Some(Object::Network(n))
            }
            Kind::Subnet => {
                let s = self.subnets.remove(id)?;
                unindex(&mut self.subnets_on, &s.network_id, id);
                Some(Object::Subnet(s))
            }
            Kind::Port => {
                let p = self.ports.remove(id)?;
                unindex(&mut self.ports_on, &p.network_id, id);
                for key in Topology::claim_keys(&p) {
                    unclaim(&mut self.claims, &key, id);
                }
                if let Some(r) = p.router() {
                    unindex(&mut self.interfaces, r, id);
                    unindex(&mut self.interfaces_on, &p.network_id, id);
                }
                if let Some(c) = p.snat_chassis() {
                    unindex(
                        &mut self.snat_ports,
                        &Topology::snat_key(&p.network_id, c),
                        id,
                    );
                }
                if let Some(r) = p.gateway_of() {
                    unindex(&mut self.gateway_ports, r, id);
                }
                if let Some(host) = &p.host {
                    unindex(&mut self.bound, host, id);
                }
                Some(Object::Port(p))
            }
            Kind::Router => self.routers.remove(id).map(Object::Router),
            Kind::Chassis => self.chassis.remove(id).map(Object::Chassis),
            Kind::ChassisUp => self
                .chassis_up
                .remove(id)
                .then(|| Object::ChassisUp(id.to_string())),
            Kind::ChassisPeers => {
                let o = self.peer_reports.remove(id)?;
                self.count_report(&o, false);
                Some(Object::ChassisPeers(o))
            }
            Kind::SecurityGroup => self.security_groups.remove(id).map(Object::SecurityGroup),
            Kind::SecurityGroupRule => {
                let r = self.rules.remove(id)?;
                unindex(&mut self.rules_of, &r.group, id);
                if let Remote::Group(g) = &r.remote {
                    unindex(&mut self.remote_rules, g, id);
                }
                Some(Object::SgRule(r))
            }
            Kind::AddressGroup => self.address_groups.remove(id).map(Object::AddressGroup),
            Kind::FloatingIp => {
                let f = self.floating_ips.remove(id)?;
                if let Some(t) = &f.target {
                    unindex(&mut self.fips_of, &t.port_id, id);
                }
                Some(Object::FloatingIp(f))
            }
            Kind::LoadBalancer => self.load_balancers.remove(id).map(Object::LoadBalancer),
            Kind::Listener => self.listeners.remove(id).map(Object::Listener),
            Kind::Pool => self.pools.remove(id).map(Object::Pool),
            Kind::Member => {
                let m = self.members.remove(id)?;
                unindex(&mut self.members_of, &m.pool_id, id);
                Some(Object::Member(m))
            }
            Kind::HealthMonitor => self.health_monitors.remove(id).map(Object::HealthMonitor),
            Kind::PortPair => self.port_pairs.remove(id).map(Object::PortPair),
            Kind::PortPairGroup => self.port_pair_groups.remove(id).map(Object::PortPairGroup),
            Kind::FlowClassifier => self.flow_classifiers.remove(id).map(Object::FlowClassifier),
            Kind::PortChain => self.port_chains.remove(id).map(Object::PortChain),
            Kind::Trunk => {
                let t = self.trunks.remove(id)?;
                for port in t.ports() {
                    unindex(&mut self.trunks_naming, port, id);
                }
                Some(Object::Trunk(t))
            }
        }
    }

    /// The key of a provider network's segment (physical network and VLAN id): two networks on
    /// one segment (a passing state of the replica; the API refuses it) get no flows from the
    /// physical network until one lets go, as two ports claiming one MAC.
    pub fn segment_claim(network: &Network) -> Option<String> {
        let p = network.physical.as_ref()?;
        Some(format!("segment {} {:?}", p.physnet, p.vlan))
    }

    /// The key of a MAC on a network, as [`Topology::claim_keys`] gives it.
    pub fn mac_claim(network: &str, mac: Mac) -> String {
        format!("{network} mac {mac:012x}")
    }

    /// The key of an IP address on a network, as [`Topology::claim_keys`] gives it.
    pub fn ip_claim(network: &str, ip: IpAddr) -> String {
        format!("{network} ip {ip}")
    }

    /// What a port claims on its network: its MAC and its fixed IPs.
    pub fn claim_keys(port: &Port) -> Vec<String> {
        std::iter::once(Topology::mac_claim(&port.network_id, port.mac))
            .chain(
                port.ips
                    .iter()
                    .map(|ip| Topology::ip_claim(&port.network_id, *ip)),
            )
            .collect()
    }

    /// Whether exactly one port claims `key` (a MAC or IP on a network). Two claims are a
    /// passing state of the local view (the API refuses them; a replica may hold a deleted port
    /// and its successor for a moment): while it lasts, neither port gets the flows that would
    /// clash, so no packet is taken for the wrong port's.
    pub fn sole_claim(&self, key: &str) -> bool {
        self.claims.get(key).is_some_and(|s| s.len() == 1)
    }

    /// The ports claiming `key` ([`Topology::claim_keys`]), in id order.
    pub fn claimants<'a>(&'a self, key: &str) -> impl Iterator<Item = &'a Port> + 'a {
        self.claims
            .get(key)
            .into_iter()
            .flat_map(Claimants::keys)
            .filter_map(|id| self.ports.get(id))
    }

    /// The port that alone holds `ip` on `network`, if one does.
    pub fn port_with_ip(&self, network: &str, ip: IpAddr) -> Option<&Port> {
        let holders = self.claims.get(&Topology::ip_claim(network, ip))?;
        let mut it = holders.keys();
        match (it.next(), it.next()) {
            (Some(id), None) => self.ports.get(id),
            _ => None,
        }
    }

    /// The floating IPs forwarding to `port`, in id order.
    pub fn floating_ips_of<'a>(&'a self, port: &str) -> impl Iterator<Item = &'a FloatingIp> + 'a {
        self.fips_of
            .get(port)
            .into_iter()
            .flatten()
            .filter_map(|id| self.floating_ips.get(id))
    }

    /// The members of `pool`, in id order.
    pub fn members_of<'a>(&'a self, pool: &str) -> impl Iterator<Item = &'a Member> + 'a {
        self.members_of
            .get(pool)
            .into_iter()
            .flatten()
            .filter_map(|id| self.members.get(id))
    }

    /// The ports on `network`, in id order.
    pub fn ports_on<'a>(&'a self, network: &str) -> impl Iterator<Item = &'a Port> + 'a {
        self.ports_on
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id))
    }

    /// The subnets of `network`, in id order.
    pub fn subnets_on<'a>(&'a self, network: &str) -> impl Iterator<Item = &'a Subnet> + 'a {
        self.subnets_on
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|id| self.subnets.get(id))
    }

    /// The router interface ports on `network`, in id order.
    pub fn interfaces_on<'a>(&'a self, network: &str) -> impl Iterator<Item = &'a Port> + 'a {
        self.interfaces_on
            .get(network)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id))
    }

    /// What a chassis needs to follow: the networks of its local VIFs (`vif_networks`) and of the
    /// ports bound to it, then, transitively, every router with an interface on a needed network
    /// and every network with an interface or the gateway of a needed router; the security groups
    /// of its ports (bound ones and `local_ports`), and the remote groups and address groups their
    /// rules name. A gateway chassis (as its registration says) also follows the external
    /// networks on the physical networks it reaches and every router with its gateway there (it
    /// may be elected to host it: [`Topology::gateway_host`]), and, for the routers whose
    /// gateway it hosts and that other chassis send packets to ([`Router::transits`]), their
    /// networks.
    ///
    /// The cost is one look-up per port of the chassis and no allocation per port: the agent
    /// asks after every batch of changes.
    pub fn needs<'a>(
        &'a self,
        chassis: &str,
        local_ports: impl IntoIterator<Item = &'a str>,
        vif_networks: impl IntoIterator<Item = &'a str>,
    ) -> Needs {
        // The ports bound here, then the local ones bound elsewhere (or nowhere): a port met
        // twice only inserts into the sets again.
        let bound = self
            .bound
            .get(chassis)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id));
        let elsewhere = local_ports
            .into_iter()
            .filter_map(|id| self.ports.get(id))
            .filter(|p| p.host.as_deref() != Some(chassis));
        let mut port_networks: BTreeSet<&str> = vif_networks.into_iter().collect();
        let mut port_groups: BTreeSet<&str> = BTreeSet::new();
        for port in bound.chain(elsewhere) {
            port_networks.insert(&port.network_id);
            if port.port_security {
                port_groups.extend(port.security_groups.iter().map(String::as_str));
            }
        }
        let mut networks: BTreeSet<String> = port_networks.into_iter().map(str::to_owned).collect();
        let mut routers: BTreeSet<String> = BTreeSet::new();
        let mut todo: Vec<String> = networks.iter().cloned().collect();
        let physnets: BTreeSet<String> = self
            .chassis
            .get(chassis)
            .filter(|c| c.gateway)
            .map(|c| c.physnets.iter().cloned().collect())
            .unwrap_or_default();
        for net in self.networks.values().filter(|n| {
            n.external
                && n.physical
                    .as_ref()
                    .is_some_and(|p| physnets.contains(&p.physnet))
        }) {
            networks.insert(net.id.clone());
            for router in self.ports_on(&net.id).filter_map(Port::gateway_of) {
                routers.insert(router.to_string());
                let hosted_here = self.routers.get(router).is_some_and(Router::transits)
                    && self.gateway_host(router).is_some_and(|c| c.id == chassis);
                if hosted_here {
                    for other in self.interfaces_of(router) {
                        if networks.insert(other.network_id.clone()) {
                            todo.push(other.network_id.clone());
                        }
                    }
                }
            }
        }
        // Routers whose networks were followed (a router followed for its gateway alone is not).
        let mut expanded: BTreeSet<&str> = BTreeSet::new();
        while let Some(net) = todo.pop() {
            for rif in self.interfaces_on(&net) {
                let Some(router) = rif.router() else { continue };
                routers.insert(router.to_string());
                if !expanded.insert(router) {
                    continue;
                }
                let gateway = self
                    .routers
                    .get(router)
                    .and_then(|r| r.gateway.as_ref())
                    .map(|g| g.network_id.clone());
                let others = self.interfaces_of(router).map(|p| p.network_id.clone());
                for other in others.chain(gateway) {
                    if networks.insert(other.clone()) {
                        todo.push(other);
                    }
                }
            }
        }
        let groups: BTreeSet<String> = port_groups.into_iter().map(str::to_owned).collect();
        let mut security_groups = groups.clone();
        let mut address_groups = BTreeSet::new();
        for rule in groups.iter().flat_map(|g| self.rules_of(g)) {
            match &rule.remote {
                Remote::Group(g) => {
                    security_groups.insert(g.clone());
                }
                Remote::AddressGroup(a) => {
                    address_groups.insert(a.clone());
                }
                Remote::Any | Remote::Prefix(_) => {}
            }
        }
        Needs {
            networks,
            routers,
            security_groups,
            address_groups,
            physnets,
        }
    }

    /// The rules of a security group, in id order.
    pub fn rules_of<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a SgRule> + 'a {
        self.rules_of
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|id| self.rules.get(id))
    }

    /// The rules that name `group` as their remote, in id order.
    pub fn rules_naming<'a>(&'a self, group: &str) -> impl Iterator<Item = &'a SgRule> + 'a {
        self.remote_rules
            .get(group)
            .into_iter()
            .flatten()
            .filter_map(|id| self.rules.get(id))
    }

    /// The key of a chassis' SNAT address on a network.
    pub fn snat_key(network: &str, chassis: &str) -> String {
        format!("{network} {chassis}")
    }

    /// The SNAT address port of `chassis` on `network`: the first in id order (the server
    /// allocates one).
    pub fn snat_port(&self, network: &str, chassis: &str) -> Option<&Port> {
        self.snat_ports
            .get(&Topology::snat_key(network, chassis))?
            .iter()
            .find_map(|id| self.ports.get(id))
    }

    /// The gateway port of `router` (the first in id order).
    pub fn gateway_port(&self, router: &str) -> Option<&Port> {
        self.gateway_ports
            .get(router)?
            .iter()
            .find_map(|id| self.ports.get(id))
    }

    /// The chassis that hosts `router`'s gateway (its centralized SNAT, and the answers for its
    /// gateway addresses on the physical network): the first of the router's gateway candidates
    /// ([`Topology::gateway_candidates`]) that is alive as this chassis sees it
    /// ([`Topology::gateway_alive`]). Every agent ranks the candidates alike; when the chosen one's
    /// data plane dies, the next takes over, and only its routers move. An agent that dies while
    /// its switch forwards moves nothing: its chassis keeps translating with its connections'
    /// state.
    pub fn gateway_host(&self, router: &str) -> Option<&Chassis> {
        self.elect(self.gateway_candidates(router))
    }

    /// The first of `candidates` (a router's, [`Topology::gateway_candidates`]) alive as this
    /// chassis sees it; the only candidate, when it is this chassis, whatever its sessions say.
    pub fn elect<'a>(&'a self, candidates: Vec<&'a Chassis>) -> Option<&'a Chassis> {
        let only = candidates.len() == 1;
        candidates
            .into_iter()
            .find(|c| (only && c.id == self.local.chassis) || self.gateway_alive(&c.id))
    }

    /// The chassis that may host `router`'s gateway, best first: the gateway chassis that reach
    /// its gateway's physical network (the only ones that follow every router there, see
    /// [`Topology::needs`]), ranked by a rendezvous hash of router and chassis ids.
    pub fn gateway_candidates(&self, router: &str) -> Vec<&Chassis> {
        let Some(physnet) = self
            .routers
            .get(router)
            .and_then(|r| r.gateway.as_ref())
            .and_then(|g| self.networks.get(&g.network_id))
            .and_then(|n| n.physical.as_ref())
            .map(|p| &p.physnet)
        else {
            return Vec::new();
        };
        let mut ranked: Vec<(u64, &Chassis)> = self
            .chassis
            .values()
            .filter(|c| c.gateway && c.physnets.contains(physnet))
            .map(|c| (crate::cookie::fnv1a(&format!("{router} {}", c.id)), c))
            .collect();
        ranked.sort_by(|(h, c), (g, d)| (g, &d.id).cmp(&(h, &c.id)));
        ranked.into_iter().map(|(_, c)| c).collect()
    }

    /// Whether gateway chassis `id` may host router gateways, as this chassis sees it. Another
    /// chassis: while it is [`Topology::reachable`] (its data plane as BFD knows it, else its
    /// lease). This chassis: unless it is [`Topology::isolated`], as OVN's gateways judge
    /// themselves: a gateway cut off from the others must not keep answering for addresses that
    /// another gateway now serves.
    pub fn gateway_alive(&self, id: &str) -> bool {
        if id == self.local.chassis {
            !self.isolated()
        } else {
            self.reachable(id)
        }
    }

    /// Whether this chassis has lost every BFD session it had: it has sessions that came up, and
    /// all of them are down now (its underlay is cut). A chassis whose sessions never came up is
    /// not isolated: it may run without BFD (no IPv4 underlay) or have just started.
    pub fn isolated(&self) -> bool {
        let mut sessions = self
            .local
            .data_plane
            .iter()
            .filter(|(id, _)| **id != self.local.chassis)
            .peekable();
        sessions.peek().is_some() && sessions.all(|(_, up)| !up)
    }

    /// The trunks that name `port` (as their parent or a subport), in id order. One is the
    /// API's rule; two are a passing state of the replica, while which neither gets flows.
    pub fn trunks_naming<'a>(&'a self, port: &str) -> impl Iterator<Item = &'a Trunk> + 'a {
        self.trunks_naming
            .get(port)
            .into_iter()
            .flatten()
            .filter_map(|id| self.trunks.get(id))
    }

    /// The interface ports of `router`, in id order.
    pub fn interfaces_of<'a>(&'a self, router: &str) -> impl Iterator<Item = &'a Port> + 'a {
        self.interfaces
            .get(router)
            .into_iter()
            .flatten()
            .filter_map(|id| self.ports.get(id))
    }
}

/// The local Open vSwitch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// This chassis' id.
    pub chassis: String,
    /// OpenFlow port of each local VIF, by `iface-id` (= port id).
    vifs: BTreeMap<String, u32>,
    /// OpenFlow port of the inner end of each local subport's patch pair, by subport id.
    inner: BTreeMap<String, u32>,
    /// How many VIFs and inner ends claim each OpenFlow port.
    claims: BTreeMap<u32, usize>,
    /// OpenFlow port of the tunnel port used for overlay traffic.
    pub tunnel: Option<u32>,
    /// OpenFlow port of the patch to each physical network's bridge, by physical network.
    pub patches: BTreeMap<String, u32>,
    /// The data plane of remote chassis as this chassis' BFD monitor ports see it, by chassis
    /// id: `true` up, `false` down after having been up. A chassis without an entry is not known
    /// either way (no monitor port yet, or its session never came up since the port was made).
    pub data_plane: BTreeMap<String, bool>,
}

impl Local {
    /// Sets (`None`: removes) the OpenFlow port of `port_id`'s VIF; returns the previous one.
    pub fn set_vif(&mut self, port_id: &str, ofport: Option<u32>) -> Option<u32> {
        let old = match ofport {
            Some(o) => self.vifs.insert(port_id.to_owned(), o),
            None => self.vifs.remove(port_id),
        };
        self.reclaim(old, ofport);
        old
    }

    /// Sets (`None`: removes) the OpenFlow port of the inner end of `subport`'s patch pair;
    /// returns the previous one. Inner ends and VIFs share one space of claims: a number two of
    /// them claim belongs to neither.
    pub fn set_inner(&mut self, subport: &str, ofport: Option<u32>) -> Option<u32> {
        let old = match ofport {
            Some(o) => self.inner.insert(subport.to_owned(), o),
            None => self.inner.remove(subport),
        };
        self.reclaim(old, ofport);
        old
    }

    /// Moves a claim from `old` to `new`.
    fn reclaim(&mut self, old: Option<u32>, new: Option<u32>) {
        if let Some(o) = old
            && let Some(n) = self.claims.get_mut(&o)
        {
            *n -= 1;
            if *n == 0 {
                self.claims.remove(&o);
            }
        }
        if let Some(o) = new {
            *self.claims.entry(o).or_default() += 1;
        }
    }

    /// Whether `ofport` is one the pipeline may serve for a VIF or an inner end: claimed once,
    /// not the tunnel's, below [`crate::tables::MAX_OFPORT`].
    fn sole(&self, ofport: u32) -> bool {
        self.claims.get(&ofport) == Some(&1)
            && self.tunnel != Some(ofport)
            && ofport < crate::tables::MAX_OFPORT
    }

    /// The OpenFlow port of the inner end of `subport`'s patch pair, if it alone claims it
    /// (as [`Local::ofport`]).
    pub fn inner_port(&self, subport: &str) -> Option<u32> {
        let ofport = *self.inner.get(subport)?;
        self.sole(ofport).then_some(ofport)
    }

    /// The subports whose inner ends claim `ofport`.
    pub fn inner_claimants(&self, ofport: u32) -> impl Iterator<Item = &String> {
        self.inner
            .iter()
            .filter(move |(_, o)| **o == ofport)
            .map(|(id, _)| id)
    }

    /// Whether a local VIF names `port_id` (whatever OpenFlow port it has).
    pub fn has_vif(&self, port_id: &str) -> bool {
        self.vifs.contains_key(port_id)
    }

    /// The OpenFlow port of `port_id`'s local VIF, if it has one that no other VIF (nor the
    /// tunnel) claims too, below [`crate::tables::MAX_OFPORT`]. Two claims on one number are a passing state of the local view (a
    /// port renumbered before another's removal is seen); while it lasts neither VIF gets flows,
    /// so no packet is ever taken for the wrong port's.
    pub fn ofport(&self, port_id: &str) -> Option<u32> {
        let ofport = *self.vifs.get(port_id)?;
        self.sole(ofport).then_some(ofport)
    }

    /// The local VIF (by `iface-id`) that alone claims `ofport`.
    pub fn vif_at(&self, ofport: u32) -> Option<&String> {
        // One claim in all: no other VIF, nor a subport's inner end, has the number.
        self.claimants(ofport)
            .next()
            .filter(|_| self.claims.get(&ofport) == Some(&1))
    }

    /// The local VIFs (by `iface-id`) that claim `ofport`.
    pub fn claimants(&self, ofport: u32) -> impl Iterator<Item = &String> {
        self.vifs
            .iter()
            .filter(move |(_, o)| **o == ofport)
            .map(|(id, _)| id)
    }
}

impl Topology {
    /// Every owner of flows the topology has (all but [`Owner::Static`]): each API object whose
    /// kind some app computes flows for, and each router interface.
    pub fn owners(&self) -> impl Iterator<Item = Owner> + '_ {
        fn each<'a, V>(
            objects: &'a BTreeMap<String, V>,
            kind: fn(Arc<str>) -> Owner,
        ) -> impl Iterator<Item = Owner> + 'a {
            objects.keys().map(move |id| kind(id.as_str().into()))
        }
        let interfaces = self
            .ports
            .values()
            .filter(|p| p.router().is_some())
            .map(|p| Owner::RouterInterface(p.id.as_str().into()));
        each(&self.networks, Owner::Network)
            .chain(each(&self.ports, Owner::Port))
            .chain(interfaces)
            .chain(each(&self.routers, Owner::Router))
            .chain(each(&self.rules, Owner::SgRule))
            .chain(each(&self.floating_ips, Owner::FloatingIp))
            .chain(each(&self.load_balancers, Owner::LoadBalancer))
            .chain(each(&self.listeners, Owner::Listener))
            .chain(each(&self.members, Owner::Member))
            .chain(each(&self.port_chains, Owner::PortChain))
            .chain(each(&self.trunks, Owner::Trunk))
    }

    /// The IPv4 subnet with DHCP enabled that holds `ip` on `network`, if any.
    pub fn dhcp_subnet(&self, network: &str, ip: IpAddr) -> Option<&Subnet> {
        self.subnets_on(network)
            .find(|s| s.enable_dhcp && ip.is_ipv4() && s.cidr.contains(&ip))
    }

    /// The network whose `metadata` is `metadata`.
    pub fn network_with_metadata(&self, metadata: u64) -> Option<&Network> {
        self.networks
            .values()
            .find(|n| n.metadata() == Some(metadata))
    }

    /// The local patch port and VLAN id of a provider network this chassis reaches.
    pub fn physical_port(&self, network: &str) -> Option<(u32, Option<u16>)> {
        let p = self.networks.get(network)?.physical.as_ref()?;
        Some((*self.local.patches.get(&p.physnet)?, p.vlan))
    }

    /// Whether `network` has an IPv4 subnet with DHCP enabled.
    pub fn serves_dhcp(&self, network: &str) -> bool {
        self.subnets_on(network)
            .any(|s| s.enable_dhcp && s.cidr.addr().is_ipv4())
    }

    /// The remote chassis a port is reachable through, if it is bound to another chassis that
    /// is [reachable](Topology::reachable). Binding, not the port's status, decides: a port bound to a chassis is reachable
    /// there as soon as its VIF is plugged, without waiting for that chassis' report to go
    /// round through the server (until then packets for it are dropped there, as they would be
    /// anywhere).
    pub fn remote_chassis(&self, port: &Port) -> Option<&Chassis> {
        let host = port.host.as_ref()?;
        if *host == self.local.chassis || !self.reachable(host) {
            return None;
        }
        self.chassis.get(host)
    }

    /// Whether flows may go towards remote chassis `id` (it must be registered too): its data
    /// plane is not known to be dead. BFD decides when it knows (up, or down after having been
    /// up): this chassis' own session towards it if it has one, else what the chassis that
    /// watch it report ([`Topology::reported_data_plane`]); otherwise the liveness lease does,
    /// which covers a chassis whose data plane never came up (dead from the start). So an agent
    /// that stops while its switch forwards keeps its chassis reachable, and a chassis whose
    /// underlay is cut stops being a destination as soon as BFD says so, lease or not.
    pub fn reachable(&self, id: &str) -> bool {
        match self.local.data_plane.get(id) {
            Some(up) => *up,
            None => self
                .reported_data_plane(id)
                .unwrap_or_else(|| self.chassis_up.contains(id)),
        }
    }

    /// Chassis `id`'s data plane as the chassis watching it report it: down when at least
    /// [`DOWN_QUORUM`] reports say so and they outnumber those saying up, up when any says up
    /// otherwise, not known when none says up and too few say down.
    pub fn reported_data_plane(&self, id: &str) -> Option<bool> {
        let (up, down) = self.reported.get(id).copied()?;
        if down >= DOWN_QUORUM && down > up {
            Some(false)
        } else {
            (up > 0).then_some(true)
        }
    }

    /// Adds (`add`) or takes away the verdicts of `report` from the counts.
    fn count_report(&mut self, report: &PeerReport, add: bool) {
        for (chassis, up) in &report.verdicts {
            let n = self.reported.entry(chassis.clone()).or_default();
            let count = if *up { &mut n.0 } else { &mut n.1 };
            *count = if add {
                *count + 1
            } else {
                count.saturating_sub(1)
            };
            if *n == (0, 0) {
                self.reported.remove(chassis);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topo_with_ch2(lease: bool, data_plane: Option<bool>) -> Topology {
        let mut t = Topology::default();
        t.local.chassis = "ch1".into();
        t.put(Object::Chassis(Chassis {
            id: "ch2".into(),
            tunnel_ip: "192.168.50.2".parse().unwrap(),
            gateway: false,
            physnets: Vec::new(),
        }));
        if lease {
            t.put(Object::ChassisUp("ch2".into()));
        }
        if let Some(up) = data_plane {
            t.local.data_plane.insert("ch2".into(), up);
        }
        t
    }

    #[test]
    fn data_plane_liveness_rule() {
        // BFD up keeps a chassis whose lease is gone (agent down, switch forwarding).
        assert!(topo_with_ch2(false, Some(true)).reachable("ch2"));
        assert!(topo_with_ch2(true, Some(true)).reachable("ch2"));
        // BFD down after having been up withdraws, lease or not.
        assert!(!topo_with_ch2(true, Some(false)).reachable("ch2"));
        assert!(!topo_with_ch2(false, Some(false)).reachable("ch2"));
        // Never seen up: the lease decides (dead from the start when it is gone).
        assert!(topo_with_ch2(true, None).reachable("ch2"));
        assert!(!topo_with_ch2(false, None).reachable("ch2"));
    }

    fn report(t: &mut Topology, reporter: &str, verdicts: &[(&str, &str)]) {
        let v: serde_json::Map<String, Value> = verdicts
            .iter()
            .map(|(c, s)| (c.to_string(), json!(s)))
            .collect();
        let o = Object::decode(Kind::ChassisPeers, reporter, &Value::Object(v)).unwrap();
        t.put(o);
    }

    #[test]
    fn watchers_reports_decide_where_this_chassis_has_no_session() {
        // No session here towards ch2, lease current.
        let mut t = topo_with_ch2(true, None);
        report(&mut t, "w1", &[("ch2", "down"), ("ch9", "up")]);
        // One watcher saying down is not enough (its own underlay may be the one cut).
        assert_eq!(t.reported_data_plane("ch2"), None);
        assert!(t.reachable("ch2"));
        report(&mut t, "w2", &[("ch2", "down")]);
        assert_eq!(t.reported_data_plane("ch2"), Some(false));
        assert!(!t.reachable("ch2"));
        // Outnumbered by ups: up.
        report(&mut t, "w3", &[("ch2", "up")]);
        report(&mut t, "w4", &[("ch2", "up")]);
        assert_eq!(t.reported_data_plane("ch2"), Some(true));
        // A watcher changing its mind replaces its report; a report whose lease ended goes.
        report(&mut t, "w3", &[("ch2", "down")]);
        assert_eq!(t.reported_data_plane("ch2"), Some(false));
        t.remove(Kind::ChassisPeers, "w3");
        t.remove(Kind::ChassisPeers, "w4");
        assert_eq!(t.reported_data_plane("ch2"), Some(false));
        t.remove(Kind::ChassisPeers, "w2");
        assert_eq!(t.reported_data_plane("ch2"), None);
        assert_eq!(t.reported_data_plane("ch9"), Some(true));
        t.remove(Kind::ChassisPeers, "w1");
        assert!(t.reported.is_empty(), "{:?}", t.reported);
        // Reports of up keep a chassis whose lease is gone reachable; this chassis' own session
        // wins over reports.
        let mut t = topo_with_ch2(false, None);
        report(&mut t, "w1", &[("ch2", "up")]);
        assert!(t.reachable("ch2"));
        report(&mut t, "w2", &[("ch2", "down")]);
        report(&mut t, "w3", &[("ch2", "down")]);
        assert!(!t.reachable("ch2"));
        t.local.data_plane.insert("ch2".into(), true);
        assert!(t.reachable("ch2"));
        // A chassis' report on itself is left out; a malformed report is no report.
        report(&mut t, "ch2", &[("ch2", "up")]);
        assert_eq!(t.peer_reports["ch2"].verdicts.len(), 0);
        assert!(Object::decode(Kind::ChassisPeers, "w5", &json!({"ch2": "maybe"})).is_none());
        assert!(Object::decode(Kind::ChassisPeers, "w5", &json!(["ch2"])).is_none());
    }
}
