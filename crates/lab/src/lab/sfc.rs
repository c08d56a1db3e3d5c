//! A lab's service function chaining. Service-function VMs (`sf = { ... }`): the VM's port is the
//! ingress, a second port `<vm>-egress` (same `device_id`, as networking-sfc wants a pair's ports
//! on one device) the egress, both without port security; inside the namespace `eth0` and `eth1`
//! are the ports of [`BRIDGE`], a Linux bridge without addresses that neither learns nor ages
//! (every unicast frame in one port goes out of the other unchanged, MPLS-labelled ones too;
//! broadcast and multicast are not passed on, and frames to the VM's own MACs stay in it, so
//! that two legs on one network make no loop), with IPv6 off so the VM sends nothing of its own:
//! the TX counters of `ip -s link` count the frames it passed on (eth1's those from eth0, eth0's
//! those from eth1).
//!
//! Port chains, made through networking-sfc's API (`/v2.0/sfc/...`) as admin after the VMs are
//! wired: a port pair per service function of the chain (named after its VM), a port pair group
//! per `groups` entry (`<chain>-<n>`), a flow classifier per `classifiers` entry
//! (`<chain>-fc<n>`), then the chain. `up` finds a chain by the id it recorded (or by name) and
//! keeps it if it is as the lab made it from the same file entry and ports; otherwise it and
//! everything made for it (also what an `up` that failed half way left, found by name) is
//! deleted, chain first, then groups, then pairs and classifiers, and made again. Chains the file
//! no longer has, or whose entry changed, are deleted before the VMs are brought in line (a VM
//! that stops being a service function loses its egress port).

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::{Value, json};
use testbed::{Chassis, HOST_IF, Host, Netns};

use super::{Lab, guest, iface_id};
use crate::neutron::{Neutron, text};
use crate::state::{ClassifierState, PortChainState, PortPairGroupState, SfState, VmState};
use crate::topology::{ClassifierSpec, PortChainSpec, Topology, VmSpec, egress_port_name};
use crate::{Error, Result};

const PAIRS: &str = "sfc/port_pairs";
const GROUPS: &str = "sfc/port_pair_groups";
const CLASSIFIERS: &str = "sfc/flow_classifiers";
const CHAINS: &str = "sfc/port_chains";

/// The bridge joining a service function's two interfaces.
pub const BRIDGE: &str = "br0";
/// A service function's egress interface (its ingress is [`HOST_IF`]).
pub const EGRESS_IF: &str = "eth1";

/// Makes a service-function VM in `ns` on `ch`: `eth0` (the ingress port's MAC) and `eth1` (the
/// egress port's), no addresses, both ports of [`BRIDGE`].
pub(super) fn wire(ch: &Chassis, ns: Netns, vm: &VmState, sf: &SfState) -> Result<Host> {
    super::guest::sysctl(
        &ns,
        &[
            "net.ipv6.conf.all.disable_ipv6=1".to_owned(),
            "net.ipv6.conf.default.disable_ipv6=1".to_owned(),
        ],
    )?;
    let host = Host::create_in(ch, ns, &vm.tap, &guest::bare_opts(vm))?;
    let ns = host.netns();
    // Made inside the VM, its peer moved to the chassis (the namespace guard removes both).
    ns.ip(&[
        "link",
        "add",
        EGRESS_IF,
        "type",
        "veth",
        "peer",
        "name",
        &sf.egress_tap,
        "netns",
        ch.netns().name(),
    ])?;
    let mtu = sf.egress_mtu.to_string();
    ns.ip(&["link", "set", EGRESS_IF, "address", &sf.egress_mac])?;
    ns.ip(&["link", "set", EGRESS_IF, "mtu", &mtu])?;
    ch.netns()
        .ip(&["link", "set", &sf.egress_tap, "mtu", &mtu])?;
    ns.exec(&["ethtool", "-K", EGRESS_IF, "tx", "off"])?;
    // A wire, not a switch: no learning (a destination learned on the ingress side would
    // stop frames), no ageing, no multicast snooping, no spanning tree. Unicast only: both legs
    // are often on one network, whose flooded broadcast and multicast would come back through
    // the other leg, again and again. Frames to the service function's own MACs stay in it
    // (the bridge's local addresses), so pinging its ports makes no loop either.
    ns.ip(&[
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
        "ageing_time",
        "0",
        "mcast_snooping",
        "0",
    ])?;
    for dev in [HOST_IF, EGRESS_IF] {
        ns.ip(&["link", "set", dev, "master", BRIDGE])?;
        ns.ip(&[
            "link",
            "set",
            dev,
            "type",
            "bridge_slave",
            "learning",
            "off",
            "flood",
            "on",
            "mcast_flood",
            "off",
            "bcast_flood",
            "off",
        ])?;
        ns.ip(&["link", "set", dev, "up"])?;
    }
    ns.ip(&["link", "set", BRIDGE, "up"])?;
    ch.netns().ip(&["link", "set", &sf.egress_tap, "up"])?;
    Ok(host)
}

/// Whether [`BRIDGE`] exists in namespace `netns`.
fn has_bridge(netns: &str) -> bool {
    Command::new("ip")
        .args(["-n", netns, "link", "show", BRIDGE])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The name of group `n` (from 1) of chain `chain`.
fn group_name(chain: &str, n: usize) -> String {
    format!("{chain}-{n}")
}

/// The name of classifier `n` (from 1) of chain `chain`.
fn classifier_name(chain: &str, n: usize) -> String {
    format!("{chain}-fc{n}")
}

/// Whether `name` is one the lab gives `chain`'s groups or classifiers.
fn made_for(chain: &str, name: &str) -> bool {
    name.strip_prefix(chain)
        .and_then(|rest| rest.strip_prefix('-'))
        .map(|rest| rest.strip_prefix("fc").unwrap_or(rest))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The ids in list `key` of `v`.
fn ids(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|x| Some(x.as_str()?.to_owned()))
        .collect()
}

/// What of the file chain `c` depends on: the entry, its service functions (networks,
/// awareness) and its classifiers' VMs (networks).
fn made_from(topo: &Topology, c: &PortChainSpec) -> String {
    let sfs: Vec<String> = c
        .groups
        .iter()
        .flatten()
        .filter_map(|n| topo.service_function(n))
        .map(|v| {
            format!(
                "{} {} {:?} {:?}",
                v.name,
                v.network,
                v.egress_network(),
                v.sf
            )
        })
        .collect();
    let vms: Vec<String> = c
        .classifiers
        .iter()
        .flat_map(|f| std::iter::once(&f.source_vm).chain(&f.destination_vm))
        .filter_map(|n| topo.vms.iter().find(|v| &v.name == n))
        .map(|v| format!("{} {}", v.name, v.network))
        .collect();
    format!("{c:?} {sfs:?} {vms:?}")
}

/// The body that creates a flow classifier `f` named `name` (`source`, `destination`: the
/// VMs' port ids).
fn classifier_attrs(
    f: &ClassifierSpec,
    name: &str,
    source: &str,
    destination: Option<&str>,
) -> Value {
    let mut attrs = json!({
        "name": name,
        "ethertype": format!("{:?}", f.ethertype),
        "logical_source_port": source,
    });
    if let Some(d) = destination {
        attrs["logical_destination_port"] = d.into();
    }
    if let Some(p) = &f.protocol {
        attrs["protocol"] = p.as_str().into();
    }
    if let Some((min, max)) = f.destination_ports() {
        attrs["destination_port_range_min"] = min.into();
        attrs["destination_port_range_max"] = max.into();
    }
    if let Some(p) = f.source_prefix {
        attrs["source_ip_prefix"] = p.to_string().into();
    }
    if let Some(p) = f.destination_prefix {
        attrs["destination_ip_prefix"] = p.to_string().into();
    }
    attrs
}

impl Lab {
    /// The egress port of service-function VM `vm` as the lab wants it (made or brought in
    /// line); `None` for other VMs, whose egress port from an earlier `up` is deleted.
    pub(super) async fn ensure_egress_port(
        &self,
        api: &Neutron,
        topo: &Topology,
        vm: &VmSpec,
        project: Option<&str>,
        changes: &mut Vec<String>,
    ) -> Result<Option<SfState>> {
        let (Some(sf), Some(network)) = (&vm.sf, vm.egress_network()) else {
            if let Some(old) = self.state.service_functions.get(&vm.name) {
                api.delete("ports", &old.egress_port_id).await?;
                let what = format!("port {}", egress_port_name(&vm.name));
                self.changed(changes, &what, "deleted (no longer a service function)");
            }
            return Ok(None);
        };
        let net = self
            .state
            .networks
            .get(network)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("network {network} was not made")))?;
        let spec = topo
            .network(network)
            .ok_or_else(|| Error::NotFound(format!("network {network} is not in the file")))?;
        if let Some(old) = self.state.service_functions.get(&vm.name)
            && old.egress_network != network
        {
            // The egress moves to another network: a new port there, the old one goes.
            api.delete("ports", &old.egress_port_id).await?;
            let what = format!("port {}", egress_port_name(&vm.name));
            let status = format!("deleted (the egress moves to network {network})");
            self.changed(changes, &what, &status);
        }
        let egress = VmSpec {
            name: egress_port_name(&vm.name),
            network: network.to_owned(),
            ip: None,
            port_security: false,
            security_groups: None,
            extra_addresses: Vec::new(),
            serve: Vec::new(),
            sf: None,
            subports: Vec::new(),
            ..vm.clone()
        };
        let port = self
            .ensure_port(api, &egress, spec, &net, project, &vm.name, true, changes)
            .await?;
        let shown = self.vm_state(&egress, &net, &port, None);
        Ok(Some(SfState {
            egress_port_id: shown.port_id,
            egress_network: network.to_owned(),
            egress_tap: shown.tap,
            egress_mac: shown.mac,
            egress_addresses: shown.addresses,
            egress_mtu: net.mtu,
            mpls: sf.mpls,
        }))
    }

    /// Whether VM `name` is the service function `want` says (or, `None`, none): its egress
    /// interface on `br-int` with the port's iface-id, its bridge.
    pub(super) fn sf_healthy(&self, name: &str, want: Option<&SfState>) -> bool {
        let have = self.state.service_functions.get(name);
        let Some(want) = want else {
            return have.is_none();
        };
        let Some(vm) = self.state.vms.get(name) else {
            return false;
        };
        let Some(ch) = self.chassis.get(&vm.chassis) else {
            return false;
        };
        have == Some(want)
            && ch.netns().ip(&["link", "show", &want.egress_tap]).is_ok()
            && iface_id(ch, &want.egress_tap).as_deref() == Some(want.egress_port_id.as_str())
            && has_bridge(&vm.netns)
    }

    /// Deletes the chains the lab made that `topo` no longer has or whose entry changed, with
    /// everything made for them.
    pub(super) async fn remove_port_chains(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for (name, made) in self.state.port_chains.clone() {
            let why = match topo.port_chains.iter().find(|c| c.name == name) {
                None => "not in the file",
                Some(c) if made_from(topo, c) != made.made_from => "changed in the file",
                Some(_) => continue,
            };
            self.purge_chain(api, &name, Some(&made), &[]).await?;
            self.state.port_chains.remove(&name);
            self.changed(
                changes,
                &format!("port chain {name}"),
                &format!("deleted ({why})"),
            );
        }
        Ok(())
    }

    /// Deletes chain `name` (the recorded one, `made`, and any of that name) with its groups,
    /// the pairs of `made` and of the service functions `sfs` (by name or by their ports), and
    /// its classifiers: chains first, then groups, then pairs and classifiers.
    async fn purge_chain(
        &self,
        api: &Neutron,
        name: &str,
        made: Option<&PortChainState>,
        sfs: &[(String, String, String)],
    ) -> Result<()> {
        let mut chains = Vec::new();
        if let Some(m) = made
            && let Some(c) = api.show(CHAINS, "port_chain", &m.id).await?
        {
            chains.push(c);
        }
        for c in api.list(CHAINS, &format!("name={name}")).await? {
            if !chains.iter().any(|o| text(o, "id") == text(&c, "id")) {
                chains.push(c);
            }
        }
        let mut groups: BTreeSet<String> = BTreeSet::new();
        let mut pairs: BTreeSet<String> = BTreeSet::new();
        let mut classifiers: BTreeSet<String> = BTreeSet::new();
        if let Some(m) = made {
            groups.extend(m.groups.iter().map(|g| g.id.clone()));
            pairs.extend(m.pairs.values().cloned());
            classifiers.extend(m.classifiers.iter().map(|c| c.id.clone()));
        }
        for c in &chains {
            groups.extend(ids(c, "port_pair_groups"));
            classifiers.extend(ids(c, "flow_classifiers"));
            api.delete(CHAINS, text(c, "id")).await?;
        }
        for p in api.list(PAIRS, "").await? {
            let ours = sfs.iter().any(|(vm, ingress, egress)| {
                text(&p, "name") == vm
                    || (text(&p, "ingress") == ingress && text(&p, "egress") == egress)
            });
            if ours {
                pairs.insert(text(&p, "id").to_owned());
            }
        }
        for g in api.list(GROUPS, "").await? {
            if made_for(name, text(&g, "name"))
                || ids(&g, "port_pairs").iter().any(|p| pairs.contains(p))
            {
                groups.insert(text(&g, "id").to_owned());
            }
        }
        for g in &groups {
            api.delete(GROUPS, g).await?;
        }
        for p in &pairs {
            api.delete(PAIRS, p).await?;
        }
        for c in api.list(CLASSIFIERS, "").await? {
            if made_for(name, text(&c, "name")) {
                classifiers.insert(text(&c, "id").to_owned());
            }
        }
        for c in &classifiers {
            api.delete(CLASSIFIERS, c).await?;
        }
        Ok(())
    }

    /// Makes every port chain of `topo` what the file says (after the VMs are wired).
    pub(super) async fn ensure_port_chains(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for c in &topo.port_chains {
            let made = self.ensure_port_chain(api, topo, c, changes).await?;
            self.state.port_chains.insert(c.name.clone(), made);
        }
        Ok(())
    }

    /// The ingress and egress port ids of service function `vm`.
    fn sf_ports(&self, vm: &str) -> Result<(String, String)> {
        let missing = || Error::NotFound(format!("service function {vm} was not made"));
        let v = self.state.vms.get(vm).ok_or_else(missing)?;
        let sf = self.state.service_functions.get(vm).ok_or_else(missing)?;
        Ok((v.port_id.clone(), sf.egress_port_id.clone()))
    }

    /// The port id of VM `vm`.
    fn vm_port(&self, vm: &str) -> Result<String> {
        self.state
            .vms
            .get(vm)
            .map(|v| v.port_id.clone())
            .ok_or_else(|| Error::NotFound(format!("vm {vm} was not made")))
    }

    async fn ensure_port_chain(
        &self,
        api: &Neutron,
        topo: &Topology,
        c: &PortChainSpec,
        changes: &mut Vec<String>,
    ) -> Result<PortChainState> {
        let what = format!("port chain {}", c.name);
        let from = made_from(topo, c);
        let mut sfs = Vec::new();
        let mut ports = Vec::new();
        for vm in c.groups.iter().flatten() {
            let (ingress, egress) = self.sf_ports(vm)?;
            ports.extend([ingress.clone(), egress.clone()]);
            sfs.push((vm.clone(), ingress, egress));
        }
        let mut ends = Vec::new();
        for f in &c.classifiers {
            let source = self.vm_port(&f.source_vm)?;
            let destination = match &f.destination_vm {
                Some(d) => Some(self.vm_port(d)?),
                None => None,
            };
            ports.push(source.clone());
            ports.extend(destination.clone());
            ends.push((source, destination));
        }
        let recorded = self.state.port_chains.get(&c.name);
        if let Some(m) = recorded
            && m.made_from == from
            && m.ports == ports
            && let Some(have) = api.show(CHAINS, "port_chain", &m.id).await?
        {
            let groups: Vec<String> = m.groups.iter().map(|g| g.id.clone()).collect();
            let classifiers: Vec<String> = m.classifiers.iter().map(|f| f.id.clone()).collect();
            if ids(&have, "port_pair_groups") == groups
                && ids(&have, "flow_classifiers") == classifiers
            {
                self.say(&what, &format!("ok ({})", m.id));
                return Ok(m.clone());
            }
        }
        self.purge_chain(api, &c.name, recorded, &sfs).await?;
        let mut pairs = std::collections::BTreeMap::new();
        for (vm, ingress, egress) in &sfs {
            let mpls = self.state.service_functions.get(vm).is_some_and(|s| s.mpls);
            let correlation = if mpls { json!("mpls") } else { Value::Null };
            let attrs = json!({
                "name": vm,
                "ingress": ingress,
                "egress": egress,
                "service_function_parameters": { "correlation": correlation, "weight": 1 },
            });
            let p = api.create(PAIRS, "port_pair", None, attrs).await?;
            pairs.insert(vm.clone(), text(&p, "id").to_owned());
        }
        let mut groups = Vec::new();
        for (i, g) in c.groups.iter().enumerate() {
            let name = group_name(&c.name, i + 1);
            let members: Vec<&String> = g.iter().filter_map(|vm| pairs.get(vm)).collect();
            let attrs = json!({ "name": name, "port_pairs": members });
            let v = api.create(GROUPS, "port_pair_group", None, attrs).await?;
            groups.push(PortPairGroupState {
                id: text(&v, "id").to_owned(),
                name,
                vms: g.clone(),
            });
        }
        let mut classifiers = Vec::new();
        for (i, (f, (source, destination))) in c.classifiers.iter().zip(&ends).enumerate() {
            let name = classifier_name(&c.name, i + 1);
            let attrs = classifier_attrs(f, &name, source, destination.as_deref());
            let v = api
                .create(CLASSIFIERS, "flow_classifier", None, attrs)
                .await?;
            classifiers.push(ClassifierState {
                id: text(&v, "id").to_owned(),
                name,
                label: f.label(),
            });
        }
        let attrs = json!({
            "name": c.name,
            "port_pair_groups": groups.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
            "flow_classifiers": classifiers.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(),
            "chain_parameters": {
                "correlation": c.correlation.as_str(),
                "symmetric": c.symmetric,
            },
        });
        let v = api.create(CHAINS, "port_chain", None, attrs).await?;
        let id = text(&v, "id").to_owned();
        let path: Vec<String> = c.groups.iter().map(|g| g.join("|")).collect();
        let status = format!(
            "created (through {}, {} classifiers, chain_id {}, {id})",
            path.join(" -> "),
            classifiers.len(),
            v.get("chain_id").unwrap_or(&Value::Null)
        );
        self.changed(changes, &what, &status);
        Ok(PortChainState {
            id,
            made_from: from,
            ports,
            pairs,
            groups,
            classifiers,
            correlation: c.correlation,
            symmetric: c.symmetric,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Ethertype;

    #[test]
    fn names_made_for_a_chain() {
        assert_eq!(group_name("web", 2), "web-2");
        assert_eq!(classifier_name("web", 1), "web-fc1");
        assert!(made_for("web", "web-2") && made_for("web", "web-fc10"));
        assert!(!made_for("web", "web-x") && !made_for("web", "webb-1"));
        assert!(!made_for("web", "web-") && !made_for("web", "web-fc"));
        assert!(!made_for("web", "web"));
    }

    #[test]
    fn classifier_bodies() {
        let f = ClassifierSpec {
            source_vm: "a".into(),
            destination_vm: Some("b".into()),
            ethertype: Ethertype::IPv4,
            protocol: Some("tcp".into()),
            destination_port: Some(80),
            destination_port_max: None,
            source_prefix: None,
            destination_prefix: Some("10.0.0.0/24".parse().unwrap()),
        };
        let attrs = classifier_attrs(&f, "web-fc1", "pa", Some("pb"));
        assert_eq!(
            attrs,
            json!({"name": "web-fc1", "ethertype": "IPv4", "logical_source_port": "pa",
                "logical_destination_port": "pb", "protocol": "tcp",
                "destination_port_range_min": 80, "destination_port_range_max": 80,
                "destination_ip_prefix": "10.0.0.0/24"})
        );
        let any = ClassifierSpec {
            destination_vm: None,
            protocol: None,
            destination_port: None,
            destination_prefix: None,
            ..f
        };
        assert_eq!(
            classifier_attrs(&any, "x", "pa", None),
            json!({"name": "x", "ethertype": "IPv4", "logical_source_port": "pa"})
        );
    }
}
