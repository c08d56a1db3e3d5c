//! The topology file's trunk ports (Neutron's trunk extension, VLAN-aware VMs): a VM's
//! `subports = [{ network = "net2", vlan = 101 }]` makes its port the parent of a trunk whose
//! subports are ports on those networks, carried on the VM's interface tagged with their VLAN
//! ids.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::Deserialize;

use super::{Ipv6Config, Topology, VmSpec, yes};
use crate::{Error, Result};

/// One subport of a VM's trunk (`subports = [{ network = "net2", vlan = 101, ip = "10.2.0.5" }]`):
/// a port of its own on `network` (named [`subport_port_name`]), in the VM tagged with `vlan`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubportSpec {
    /// The network of its port.
    pub network: String,
    /// The VLAN id that carries it on the VM's interface (1-4094).
    pub vlan: u16,
    /// Fixed IP address; default: allocated by the server.
    pub ip: Option<IpAddr>,
    /// Its port's security groups by name; absent: the project's `default` group.
    pub security_groups: Option<Vec<String>>,
    /// Whether its port has port security.
    #[serde(default = "yes")]
    pub port_security: bool,
}

/// The API name of a VM's subport port on `vlan`: `<vm>.<vlan>`, as the guest's VLAN
/// interface would be called.
pub fn subport_port_name(vm: &str, vlan: u16) -> String {
    format!("{vm}.{vlan}")
}

impl VmSpec {
    /// The subport's port as a VM of its own would have it (on the VM's chassis, in its
    /// project): what the lab makes it from and checks it by.
    pub fn subport_vm(&self, s: &SubportSpec) -> VmSpec {
        VmSpec {
            name: subport_port_name(&self.name, s.vlan),
            network: s.network.clone(),
            ip: s.ip,
            ipv6: Ipv6Config::Static,
            forwarding: false,
            extra_addresses: Vec::new(),
            security_groups: s.security_groups.clone(),
            port_security: s.port_security,
            serve: Vec::new(),
            sf: None,
            subports: Vec::new(),
            ..self.clone()
        }
    }
}

impl Topology {
    /// Whether VM `vm`'s port is a trunk's parent: it has `subports`, or it is a Kubernetes
    /// node in nested mode (`[kubernetes] vm_nodes`; the controller adds its pods' subports).
    pub fn is_trunk_parent(&self, vm: &VmSpec) -> bool {
        !vm.subports.is_empty()
            || self
                .kubernetes
                .as_ref()
                .is_some_and(|k| k.is_vm_node(&vm.name))
    }
}

/// Checks a VM's subports: VLAN ids from 1 to 4094, each once; each port as a VM's port is
/// checked; none on a service function (its ports are a bump in the wire). A Kubernetes VM
/// node is checked as a trunk's parent too.
pub(super) fn validate_subports(t: &Topology, v: &VmSpec) -> Result<()> {
    if !t.is_trunk_parent(v) {
        return Ok(());
    }
    let bad = |why: String| Err(Error::Topology(format!("vm {}: subports: {why}", v.name)));
    if v.sf.is_some() {
        return bad("a service function has no trunk".into());
    }
    if v.ipv6 == Ipv6Config::Slaac || !v.extra_addresses.is_empty() {
        return bad(
            "not with ipv6 = \"slaac\" or extra_addresses (the VM's addresses are on its \
             bridge's internal port)"
                .into(),
        );
    }
    let mut vlans = BTreeSet::new();
    for s in &v.subports {
        if !(1..=4094).contains(&s.vlan) {
            return bad(format!("VLAN {} is not from 1 to 4094", s.vlan));
        }
        if !vlans.insert(s.vlan) {
            return bad(format!("VLAN {} is given twice", s.vlan));
        }
        t.validate_vm(&v.subport_vm(s))
            .map_err(|e| Error::Topology(format!("vm {}: subports: {e}", v.name)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(subports: &str) -> Result<Topology> {
        let text = format!(
            r#"
name = "t"
[[chassis]]
name = "c1"
[[network]]
name = "net1"
[[network.subnet]]
cidr = "10.1.0.0/24"
[[network]]
name = "net2"
[[network.subnet]]
cidr = "10.2.0.0/24"
[[vm]]
name = "vm1"
network = "net1"
chassis = "c1"
ip = "10.1.0.5"
subports = {subports}
"#
        );
        let t: Topology = toml::from_str(&text).map_err(|e| Error::Topology(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    #[test]
    fn subports_are_checked_like_vm_ports() {
        let t = topo(r#"[{ network = "net2", vlan = 101, ip = "10.2.0.5" }]"#).unwrap();
        let sub = t.vms[0].subport_vm(&t.vms[0].subports[0]);
        assert_eq!((sub.name.as_str(), sub.chassis.as_str()), ("vm1.101", "c1"));
        for (subports, why) in [
            (r#"[{ network = "net9", vlan = 101 }]"#, "no network net9"),
            (
                r#"[{ network = "net2", vlan = 0 }]"#,
                "VLAN 0 is not from 1",
            ),
            (
                r#"[{ network = "net2", vlan = 5 }, { network = "net2", vlan = 5 }]"#,
                "VLAN 5 is given twice",
            ),
            (
                r#"[{ network = "net2", vlan = 5, ip = "10.9.0.5" }]"#,
                "10.9.0.5 is in no subnet of net2",
            ),
            (
                r#"[{ network = "net1", vlan = 5, ip = "10.1.0.5" }]"#,
                "10.1.0.5 is taken",
            ),
        ] {
            let e = topo(subports).unwrap_err().to_string();
            assert!(e.contains(why), "{subports}: {e}");
        }
    }
}
