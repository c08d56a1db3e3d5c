//! What the chassis should look like.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::{Error, Result};

/// Longest interface name Linux accepts.
const IFNAME_MAX: usize = 15;

/// A tunnel encapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encap {
    /// Geneve (UDP 6081).
    Geneve,
    /// VXLAN (UDP 4789).
    Vxlan,
}

impl Encap {
    /// OVS interface type.
    pub fn ovs_type(self) -> &'static str {
        match self {
            Encap::Geneve => "geneve",
            Encap::Vxlan => "vxlan",
        }
    }

    /// Name of this encapsulation's tunnel port on the integration bridge.
    pub fn port_name(self) -> &'static str {
        match self {
            Encap::Geneve => "tun-geneve",
            Encap::Vxlan => "tun-vxlan",
        }
    }
}

impl FromStr for Encap {
    type Err = Error;

    fn from_str(s: &str) -> Result<Encap> {
        match s {
            "geneve" => Ok(Encap::Geneve),
            "vxlan" => Ok(Encap::Vxlan),
            other => Err(Error::Config(format!("unknown encapsulation {other:?}"))),
        }
    }
}

impl fmt::Display for Encap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.ovs_type())
    }
}

/// `physnet:bridge`: provider network `physnet` is reached through OVS bridge `bridge`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct BridgeMapping {
    /// Provider network name.
    pub physnet: String,
    /// Provider bridge.
    pub bridge: String,
}

impl BridgeMapping {
    /// Parses a comma-separated list, e.g. `physnet1:br-ex,physnet2:br-vlan`.
    pub fn parse_list(s: &str) -> Result<Vec<BridgeMapping>> {
        let v: Vec<BridgeMapping> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::parse)
            .collect::<Result<_>>()?;
        for (i, m) in v.iter().enumerate() {
            if v[..i]
                .iter()
                .any(|o| o.physnet == m.physnet || o.bridge == m.bridge)
            {
                return Err(Error::Config(format!(
                    "physnet or bridge mapped twice: {}:{}",
                    m.physnet, m.bridge
                )));
            }
        }
        Ok(v)
    }

    /// Patch port on the integration bridge (`int-<bridge>`).
    pub fn int_patch(&self) -> String {
        format!("int-{}", self.bridge)
    }

    /// Patch port on the provider bridge (`phy-<bridge>`).
    pub fn phy_patch(&self) -> String {
        format!("phy-{}", self.bridge)
    }
}

impl FromStr for BridgeMapping {
    type Err = Error;

    fn from_str(s: &str) -> Result<BridgeMapping> {
        let (p, b) = s
            .split_once(':')
            .ok_or_else(|| Error::Config(format!("bridge mapping {s:?} is not physnet:bridge")))?;
        let (p, b) = (p.trim(), b.trim());
        if p.is_empty() || b.is_empty() || b.contains(':') {
            return Err(Error::Config(format!(
                "bridge mapping {s:?} is not physnet:bridge"
            )));
        }
        check_ifname(b)?;
        let m = BridgeMapping {
            physnet: p.to_owned(),
            bridge: b.to_owned(),
        };
        check_ifname(&m.int_patch())?;
        Ok(m)
    }
}

pub(crate) fn check_ifname(n: &str) -> Result<()> {
    if n.is_empty()
        || n.len() > IFNAME_MAX
        || !n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(Error::Config(format!(
            "{n:?} is not usable as an interface name (1-{IFNAME_MAX} of [A-Za-z0-9._-])"
        )));
    }
    Ok(())
}

/// The desired state of the chassis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChassisConfig {
    /// Integration bridge name.
    pub integration_bridge: String,
    /// `datapath_type` of every bridge the agent creates (`netdev` or `system`).
    pub datapath_type: String,
    /// OpenFlow versions allowed on the bridges, e.g. `OpenFlow13`.
    pub protocols: Vec<String>,
    /// Enabled tunnel encapsulations (one port each).
    pub encaps: Vec<Encap>,
    /// Source address of tunnels (`options:local_ip`); `None` lets OVS choose by route.
    pub local_ip: Option<IpAddr>,
    /// Provider bridges.
    pub bridge_mappings: Vec<BridgeMapping>,
}

impl Default for ChassisConfig {
    fn default() -> Self {
        ChassisConfig {
            integration_bridge: "br-int".into(),
            datapath_type: "netdev".into(),
            protocols: vec!["OpenFlow13".into(), "OpenFlow15".into()],
            encaps: vec![Encap::Geneve],
            local_ip: None,
            bridge_mappings: Vec::new(),
        }
    }
}

impl ChassisConfig {
    /// Checks names and values before anything is written.
    pub fn validate(&self) -> Result<()> {
        check_ifname(&self.integration_bridge)?;
        if self.protocols.is_empty() {
            return Err(Error::Config("no OpenFlow version enabled".into()));
        }
        for m in &self.bridge_mappings {
            if m.bridge == self.integration_bridge {
                return Err(Error::Config(format!(
                    "provider bridge {} is the integration bridge",
                    m.bridge
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mappings() {
        let m = BridgeMapping::parse_list("physnet1:br-ex, physnet2:br-vlan").unwrap();
        assert_eq!(m[1].physnet, "physnet2");
        assert_eq!(m[0].int_patch(), "int-br-ex");
        assert_eq!(m[0].phy_patch(), "phy-br-ex");
        assert!(BridgeMapping::parse_list("").unwrap().is_empty());
        for bad in [
            "physnet1",
            ":br-ex",
            "p:",
            "p:a:b",
            "p:br ex",
            "p:a-very-long-bridge",
            "p:br-ex,q:br-ex",
            "p:br-ex,p:br-y",
        ] {
            assert!(BridgeMapping::parse_list(bad).is_err(), "{bad}");
        }
        assert_eq!("vxlan".parse::<Encap>().unwrap(), Encap::Vxlan);
        assert!("gre".parse::<Encap>().is_err());
    }
}
