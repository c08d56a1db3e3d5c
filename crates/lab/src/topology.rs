//! The topology file: what a lab consists of (see the crate documentation for the schema).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::names::{self, CHASSIS_MAX, VM_MAX};
use crate::{Error, Result};

/// A lab: server, chassis, networks and VMs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The lab's name; it is part of every name the lab makes.
    pub name: String,
    /// The API server.
    #[serde(default)]
    pub server: ServerSpec,
    /// The network between the chassis.
    #[serde(default)]
    pub underlay: UnderlaySpec,
    /// The chassis (at least one).
    #[serde(default)]
    pub chassis: Vec<ChassisSpec>,
    /// Networks with their subnets.
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkSpec>,
    /// VMs, each with one port.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmSpec>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// `ADDR` or `ADDR:PORT` to listen on; default `127.0.0.1` with a free port (port 0
    /// also means a free one).
    pub listen: Option<String>,
}

/// `[underlay]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnderlaySpec {
    /// Subnet of the chassis' tunnel addresses (only inside the lab's namespaces).
    pub cidr: Ipv4Net,
    /// MTU of the underlay links, so full-size overlay frames fit into tunnels.
    pub mtu: u32,
    /// Encapsulation the agents use (`geneve` or `vxlan`); both tunnel ports exist.
    pub encap: String,
}

impl Default for UnderlaySpec {
    fn default() -> Self {
        UnderlaySpec {
            cidr: Ipv4Net::new(Ipv4Addr::new(172, 31, 0, 0), 24).expect("prefix length 24"),
            mtu: 9000,
            encap: "geneve".into(),
        }
    }
}

/// `[[chassis]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChassisSpec {
    /// Name (OVS `system-id`, the agent's `--chassis`, ports' `binding:host_id`).
    pub name: String,
    /// Tunnel address; default: the n-th host address of the underlay subnet.
    pub ip: Option<Ipv4Addr>,
}

/// `[[network]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Name (unique in the file).
    pub name: String,
    /// Project that owns it; default: the admin project.
    pub project: Option<String>,
    /// MTU; default: what the server chooses.
    pub mtu: Option<u32>,
    /// Its subnets.
    #[serde(default, rename = "subnet")]
    pub subnets: Vec<SubnetSpec>,
}

/// `[[network.subnet]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetSpec {
    /// Name; default `<network>-<n>` (n from 1).
    pub name: Option<String>,
    /// Address range.
    pub cidr: IpNet,
    /// Gateway address, or `"none"`; default: the server's choice (the first address).
    pub gateway: Option<String>,
}

/// The gateway a subnet asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gateway {
    /// The server's default.
    Default,
    /// No gateway.
    None,
    /// This address.
    Ip(IpAddr),
}

impl SubnetSpec {
    /// The parsed `gateway` (checked by [`Topology::validate`]).
    pub fn gateway(&self) -> Result<Gateway> {
        match self.gateway.as_deref() {
            None => Ok(Gateway::Default),
            Some("none") => Ok(Gateway::None),
            Some(s) => {
                let ip: IpAddr = s.parse().map_err(|_| {
                    Error::Topology(format!("gateway {s:?} is neither an address nor \"none\""))
                })?;
                if !self.cidr.contains(&ip) {
                    return Err(Error::Topology(format!(
                        "gateway {ip} is outside {}",
                        self.cidr
                    )));
                }
                Ok(Gateway::Ip(ip))
            }
        }
    }
}

/// `[[vm]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// Name (unique among chassis and VMs); also the port's name.
    pub name: String,
    /// The network of its port.
    pub network: String,
    /// The chassis it runs on.
    pub chassis: String,
    /// Fixed IP address; default: allocated by the server.
    pub ip: Option<IpAddr>,
    /// Project that owns the port; default: the network's.
    pub project: Option<String>,
}

fn check_api_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::Topology(format!(
            "{what} name {name:?}: 1 to 64 of [A-Za-z0-9._-], starting with a letter or digit"
        )))
    }
}

impl Topology {
    /// Parses and validates a topology.
    pub fn parse(text: &str, origin: &Path) -> Result<Topology> {
        let t: Topology = toml::from_str(text).map_err(|e| Error::Parse {
            path: origin.to_owned(),
            source: Box::new(e),
        })?;
        t.validate()?;
        Ok(t)
    }

    /// Reads, parses and validates a topology file.
    pub fn from_file(path: &Path) -> Result<Topology> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("read {}", path.display()),
            source,
        })?;
        Topology::parse(&text, path)
    }

    /// Checks names, references and addresses.
    pub fn validate(&self) -> Result<()> {
        names::check_lab_name(&self.name)?;
        if self.chassis.is_empty() {
            return Err(Error::Topology("at least one [[chassis]] is needed".into()));
        }
        if !["geneve", "vxlan"].contains(&self.underlay.encap.as_str()) {
            return Err(Error::Topology(format!(
                "underlay encap {:?}: geneve or vxlan",
                self.underlay.encap
            )));
        }
        if !(1280..=9000).contains(&self.underlay.mtu) {
            return Err(Error::Topology(format!(
                "underlay mtu {} outside 1280..=9000",
                self.underlay.mtu
            )));
        }
        let mut hosts = BTreeSet::new();
        for c in &self.chassis {
            names::check_host_name("chassis", &c.name, CHASSIS_MAX)?;
            if !hosts.insert(c.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", c.name)));
            }
        }
        let ips = self.tunnel_ips()?;
        if ips.iter().collect::<BTreeSet<_>>().len() != ips.len() {
            return Err(Error::Topology("two chassis share a tunnel address".into()));
        }
        let mut nets = BTreeSet::new();
        for n in &self.networks {
            check_api_name("network", &n.name)?;
            if let Some(p) = &n.project {
                check_api_name("project", p)?;
            }
            if !nets.insert(n.name.as_str()) {
                return Err(Error::Topology(format!("network {} defined twice", n.name)));
            }
            for (i, s) in n.subnets.iter().enumerate() {
                check_api_name("subnet", &self.subnet_name(n, i))?;
                s.gateway()?;
            }
        }
        for v in &self.vms {
            names::check_host_name("vm", &v.name, VM_MAX)?;
            if !hosts.insert(v.name.as_str()) {
                return Err(Error::Topology(format!("name {} used twice", v.name)));
            }
            let net = self.network(&v.network).ok_or_else(|| {
                Error::Topology(format!("vm {}: no network {}", v.name, v.network))
            })?;
            if net.subnets.is_empty() {
                return Err(Error::Topology(format!(
                    "vm {}: network {} has no subnet",
                    v.name, v.network
                )));
            }
            if !self.chassis.iter().any(|c| c.name == v.chassis) {
                return Err(Error::Topology(format!(
                    "vm {}: no chassis {}",
                    v.name, v.chassis
                )));
            }
            if let Some(p) = &v.project {
                check_api_name("project", p)?;
            }
            if let Some(ip) = v.ip
                && !net.subnets.iter().any(|s| s.cidr.contains(&ip))
            {
                return Err(Error::Topology(format!(
                    "vm {}: {ip} is in no subnet of {}",
                    v.name, v.network
                )));
            }
        }
        Ok(())
    }

    /// The network called `name`.
    pub fn network(&self, name: &str) -> Option<&NetworkSpec> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The name of the `i`-th subnet of `net`.
    pub fn subnet_name(&self, net: &NetworkSpec, i: usize) -> String {
        net.subnets[i]
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", net.name, i + 1))
    }

    /// Tunnel address of every chassis, in file order: its `ip`, or the n-th host address of
    /// the underlay subnet.
    pub fn tunnel_ips(&self) -> Result<Vec<Ipv4Addr>> {
        let cidr = self.underlay.cidr;
        self.chassis
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ip = match c.ip {
                    Some(ip) => ip,
                    None => cidr
                        .hosts()
                        .nth(i)
                        .ok_or_else(|| Error::Topology(format!("underlay {cidr} is too small")))?,
                };
                if cidr.contains(&ip) && ip != cidr.network() && ip != cidr.broadcast() {
                    Ok(ip)
                } else {
                    Err(Error::Topology(format!(
                        "chassis {}: {ip} is no host address of {cidr}",
                        c.name
                    )))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Topology> {
        Topology::parse(s, Path::new("t.toml"))
    }

    const GOOD: &str = r#"
name = "t1"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
ip = "172.31.0.20"
[[network]]
name = "blue"
project = "alpha"
[[network.subnet]]
cidr = "10.0.0.0/24"
gateway = "10.0.0.254"
[[vm]]
name = "vm1"
network = "blue"
chassis = "c2"
ip = "10.0.0.5"
"#;

    #[test]
    fn parses_the_example_and_defaults() {
        let t = parse(GOOD).unwrap();
        assert_eq!(t.underlay.encap, "geneve");
        assert_eq!(
            t.tunnel_ips().unwrap(),
            [
                "172.31.0.1".parse::<Ipv4Addr>().unwrap(),
                "172.31.0.20".parse().unwrap()
            ]
        );
        assert_eq!(t.subnet_name(&t.networks[0], 0), "blue-1");
        assert_eq!(
            t.networks[0].subnets[0].gateway().unwrap(),
            Gateway::Ip("10.0.0.254".parse().unwrap())
        );
        let demo = include_str!("../../../examples/demo.toml");
        parse(demo).unwrap();
    }

    #[test]
    fn rejects_bad_topologies() {
        for (from, to) in [
            ("name = \"t1\"", "name = \"T 1\""),
            ("network = \"blue\"", "network = \"red\""),
            ("chassis = \"c2\"", "chassis = \"c9\""),
            ("ip = \"10.0.0.5\"", "ip = \"10.9.0.5\""),
            ("gateway = \"10.0.0.254\"", "gateway = \"10.1.0.1\""),
            ("ip = \"172.31.0.20\"", "ip = \"172.31.0.1\""),
            ("name = \"vm1\"", "name = \"c1\""),
            ("name = \"vm1\"", "name = \"vm1\"\ncolor = \"red\""),
        ] {
            let bad = GOOD.replacen(from, to, 1);
            assert!(parse(&bad).is_err(), "accepted {to}");
        }
    }
}
