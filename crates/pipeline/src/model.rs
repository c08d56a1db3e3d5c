//! The agent's local view of the topology: typed objects read from the northbound store's JSON, and
//! the state of the local Open vSwitch (which VIF has which OpenFlow port).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde_json::Value;

/// A MAC address as a number (the low 48 bits).
pub type Mac = u64;

/// The six octets of a MAC address, as on the wire.
pub fn mac_octets(mac: Mac) -> [u8; 6] {
    let b = mac.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
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
    /// Tunnel id (VNI) of overlay networks; `None` for types the pipeline does not carry yet.
    pub vni: Option<u32>,
    pub admin_up: bool,
    /// MTU offered to the network's VMs.
    pub mtu: Option<u16>,
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
}

/// A chassis other agents tunnel to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chassis {
    pub id: String,
    pub tunnel_ip: Ipv4Addr,
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

impl Network {
    pub fn from_json(v: &Value) -> Option<Self> {
        let kind = str_of(v, "provider:network_type");
        let vni = match kind {
            "vxlan" | "geneve" => v
                .get("provider:segmentation_id")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            vni,
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
            host_routes: v
                .get("host_routes")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(|r| {
                            let dst = r.get("destination")?.as_str()?.parse().ok()?;
                            Some((dst, ip(r.get("nexthop")?)?))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

impl Port {
    pub fn from_json(v: &Value) -> Option<Self> {
        let mac = parse_mac(str_of(v, "mac_address"))?;
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
                        let pmac = p
                            .get("mac_address")
                            .and_then(Value::as_str)
                            .and_then(parse_mac)
                            .unwrap_or(mac);
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
        })
    }
}

impl Chassis {
    pub fn from_json(v: &Value) -> Option<Self> {
        Some(Self {
            id: v.get("id")?.as_str()?.to_string(),
            tunnel_ip: str_of(v, "tunnel_ip").parse().ok()?,
        })
    }
}

/// Everything the pipeline is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub networks: BTreeMap<String, Network>,
    pub subnets: BTreeMap<String, Subnet>,
    pub ports: BTreeMap<String, Port>,
    /// Registered chassis.
    pub chassis: BTreeMap<String, Chassis>,
    /// Chassis whose liveness lease is current.
    pub chassis_up: std::collections::BTreeSet<String>,
    /// This chassis.
    pub local: Local,
}

/// The local Open vSwitch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// This chassis' id.
    pub chassis: String,
    /// OpenFlow port of each local VIF, by `iface-id` (= port id).
    vifs: BTreeMap<String, u32>,
    /// How many VIFs claim each OpenFlow port.
    claims: BTreeMap<u32, usize>,
    /// OpenFlow port of the tunnel port used for overlay traffic.
    pub tunnel: Option<u32>,
}

impl Local {
    /// Sets (`None`: removes) the OpenFlow port of `port_id`'s VIF; returns the previous one.
    pub fn set_vif(&mut self, port_id: &str, ofport: Option<u32>) -> Option<u32> {
        let old = match ofport {
            Some(o) => self.vifs.insert(port_id.to_owned(), o),
            None => self.vifs.remove(port_id),
        };
        if let Some(o) = old
            && let Some(n) = self.claims.get_mut(&o)
        {
            *n -= 1;
            if *n == 0 {
                self.claims.remove(&o);
            }
        }
        if let Some(o) = ofport {
            *self.claims.entry(o).or_default() += 1;
        }
        old
    }

    /// The OpenFlow port of `port_id`'s local VIF, if it has one that no other VIF (nor the
    /// tunnel) claims too. Two claims on one number are a passing state of the local view (a
    /// port renumbered before another's removal is seen); while it lasts neither VIF gets flows,
    /// so no packet is ever taken for the wrong port's.
    pub fn ofport(&self, port_id: &str) -> Option<u32> {
        let ofport = *self.vifs.get(port_id)?;
        (self.claims.get(&ofport) == Some(&1) && self.tunnel != Some(ofport)).then_some(ofport)
    }

    /// The local VIF (by `iface-id`) that alone claims `ofport`.
    pub fn vif_at(&self, ofport: u32) -> Option<&String> {
        let mut claimants = self.claimants(ofport);
        let first = claimants.next()?;
        claimants.next().is_none().then_some(first)
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
    /// The IPv4 subnet with DHCP enabled that holds `ip` on `network`, if any.
    pub fn dhcp_subnet(&self, network: &str, ip: IpAddr) -> Option<&Subnet> {
        self.subnets.values().find(|s| {
            s.network_id == network && s.enable_dhcp && ip.is_ipv4() && s.cidr.contains(&ip)
        })
    }

    /// Whether `network` has an IPv4 subnet with DHCP enabled.
    pub fn serves_dhcp(&self, network: &str) -> bool {
        self.subnets
            .values()
            .any(|s| s.network_id == network && s.enable_dhcp && s.cidr.addr().is_ipv4())
    }

    /// The remote chassis a port is reachable through, if it is bound to another chassis that
    /// is up. Binding, not the port's status, decides: a port bound to a chassis is reachable
    /// there as soon as its VIF is plugged, without waiting for that chassis' report to go
    /// round through the server (until then packets for it are dropped there, as they would be
    /// anywhere).
    pub fn remote_chassis(&self, port: &Port) -> Option<&Chassis> {
        let host = port.host.as_ref()?;
        if *host == self.local.chassis || !self.chassis_up.contains(host) {
            return None;
        }
        self.chassis.get(host)
    }
}
