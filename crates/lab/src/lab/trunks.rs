//! A lab's trunk ports (VLAN-aware VMs). A VM with `subports` gets, through the API, a port per
//! subport (`<vm>.<vlan>`, not bound: the server binds subports where their parent is) and a
//! trunk on its own port with them; the VM's port is bound only once the trunk exists (Neutron
//! refuses a trunk on a bound port; a port bound before its VM became a trunk's parent is
//! unbound for that). `up` again adds and removes subports to match the file,
//! leaving the Kubernetes controller's alone. A Kubernetes node VM (`[kubernetes] vm_nodes`)
//! is a trunk's parent even without subports of the file: the controller adds its pods'.
//!
//! Inside the VM the tagging is done by an Open vSwitch of its own (the kernels here have no
//! 802.1Q support at all: no VLAN devices, no VLAN filtering on bridges, no `tc` VLAN action):
//! `ovsdb-server` and `ovs-vswitchd` in the VM's namespace with a run directory of their own
//! (started as a chassis' are, [`Chassis::start_in`]), a userspace bridge [`BRIDGE`] whose
//! ports are `eth0` (the trunk: every VLAN, and untagged frames) and internal ports: [`PARENT_IF`]
//! untagged, with the VM's own MAC and addresses and its default routes, and one `vlan<id>` per
//! subport (`tag=<id>`, the subport's MAC and addresses), each with TX checksum offload off, the
//! bridge switching normally (`priority=0,actions=NORMAL`). The daemons live as long as the
//! VM's namespace (deleting it kills every process in it).

use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, HOST_IF, Host, Netns};

use super::{Lab, guest};
use crate::neutron::{Neutron, text};
use crate::state::{SubportState, TrunkState, VmState};
use crate::topology::{Topology, VmSpec};
use crate::{Error, Result};

/// The bridge inside a trunk VM.
pub const BRIDGE: &str = "br-trunk";
/// The VM's own (untagged) interface on [`BRIDGE`].
pub const PARENT_IF: &str = "vm0";

/// The interface of the subport on `vlan` inside the VM.
pub fn subport_if(vlan: u16) -> String {
    format!("vlan{vlan}")
}

/// `ovs-vsctl add-port` of internal port `dev` on [`BRIDGE`] (with `tag`, if any), its MAC and
/// MTU, up, TX checksum offload off, with `addresses`.
fn internal_port(
    ovs: &Chassis,
    dev: &str,
    tag: Option<u16>,
    mac: &str,
    mtu: u32,
    addresses: &[String],
) -> Result<()> {
    let mut args = vec!["add-port".to_owned(), BRIDGE.to_owned(), dev.to_owned()];
    if let Some(t) = tag {
        args.push(format!("tag={t}"));
    }
    args.extend([
        "--".to_owned(),
        "set".to_owned(),
        "Interface".to_owned(),
        dev.to_owned(),
        "type=internal".to_owned(),
        format!("mac=\"{mac}\""),
        format!("mtu_request={mtu}"),
    ]);
    ovs.ovs_vsctl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
    let ns = ovs.netns();
    ns.ip(&["link", "set", dev, "address", mac])?;
    ns.ip(&["link", "set", dev, "mtu", &mtu.to_string(), "up"])?;
    ns.exec(&["ethtool", "-K", dev, "tx", "off"])?;
    for a in addresses {
        guest::add_address(ns, dev, a)?;
    }
    Ok(())
}

/// Makes a trunk VM in `ns` on `ch`: `eth0` (the port's MAC, no address) on the VM's own
/// Open vSwitch, the VM's addresses on [`PARENT_IF`], its subports on their VLAN interfaces.
pub(super) fn wire(ch: &Chassis, ns: Netns, vm: &VmState, trunk: &TrunkState) -> Result<Host> {
    guest::prepare(&ns, vm)?;
    let host = Host::create_in(ch, ns, &vm.tap, &guest::bare_opts(vm))?;
    if trunk.rundir.exists() {
        std::fs::remove_dir_all(&trunk.rundir)
            .map_err(|e| Error::Start(format!("rm {}: {e}", trunk.rundir.display())))?;
    }
    let ovs = Chassis::start_in(
        &format!("{}-trunk", vm.port_id),
        Netns::adopt(host.netns().name())?,
        trunk.rundir.clone(),
        &ChassisOpts::default(),
    )?;
    // Detached: its daemons end with the VM's namespace, its handle must not delete that.
    let wired = (|| {
        ovs.add_bridge(BRIDGE)?;
        ovs.ovs_vsctl(&["add-port", BRIDGE, HOST_IF])?;
        ovs.ovs_ofctl(&["add-flow", BRIDGE, "priority=0,actions=NORMAL"])?;
        internal_port(&ovs, PARENT_IF, None, &vm.mac, vm.mtu, &vm.addresses)?;
        let ns = ovs.netns();
        if let Some(gw) = &vm.gateway {
            ns.ip(&["route", "add", "default", "via", gw, "dev", PARENT_IF])?;
        }
        if let Some(gw) = &vm.gateway6 {
            ns.ip(&["-6", "route", "add", "default", "via", gw, "dev", PARENT_IF])?;
        }
        for s in &trunk.subports {
            internal_port(
                &ovs,
                &subport_if(s.vlan),
                Some(s.vlan),
                &s.mac,
                s.mtu,
                &s.addresses,
            )?;
        }
        Ok::<(), Error>(())
    })();
    ovs.detach();
    wired?;
    Ok(host)
}

/// Whether the Open vSwitch of the trunk VM in namespace `netns` runs from `rundir`.
fn vswitch_running(netns: &str, trunk: &TrunkState) -> bool {
    let Ok(ns) = Netns::adopt(netns) else {
        return false;
    };
    let ovs = Chassis::adopt("trunk", ns, trunk.rundir.clone());
    let running = ovs.vswitchd_pid().is_some() && ovs.ovsdb_pid().is_some();
    ovs.detach();
    running
}

impl Lab {
    /// Makes VM `vm`'s trunk what the file says (its port `parent` is the trunk's parent): its
    /// subports' ports, the trunk with them, then the parent's binding; or, without subports,
    /// no trunk. Returns what the VM then carries (`None`: no trunk).
    pub(super) async fn ensure_trunk(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        vm: &VmSpec,
        parent: &Value,
        project: Option<&str>,
        changes: &mut Vec<String>,
    ) -> Result<Option<TrunkState>> {
        let parent_id = text(parent, "id").to_owned();
        let old = self.state.trunks.get(&vm.name).cloned();
        if !topo.is_trunk_parent(vm) {
            if let Some(old) = old {
                self.remove_trunk(api, &parent_id, &old, true).await?;
                self.changed(changes, &format!("trunk {}", vm.name), "deleted");
            }
            return Ok(None);
        }
        let mut subports = Vec::new();
        for s in &vm.subports {
            let sub = vm.subport_vm(s);
            let net = self
                .state
                .networks
                .get(&s.network)
                .cloned()
                .ok_or_else(|| Error::NotFound(format!("network {} was not made", s.network)))?;
            let spec = topo.network(&s.network).ok_or_else(|| {
                Error::NotFound(format!("network {} is not in the file", s.network))
            })?;
            let port = self
                .ensure_port(api, &sub, spec, &net, project, "", false, changes)
                .await?;
            let shown = self.vm_state(&sub, &net, &port, None);
            subports.push(SubportState {
                port_id: shown.port_id,
                network: s.network.clone(),
                vlan: s.vlan,
                mac: shown.mac,
                addresses: shown.addresses,
                mtu: net.mtu,
            });
        }
        let wanted: Vec<(String, u16)> = subports
            .iter()
            .map(|s| (s.port_id.clone(), s.vlan))
            .collect();
        let sub_ports = |of: &[(String, u16)]| -> Value {
            of.iter()
                .map(|(p, v)| json!({"port_id": p, "segmentation_type": "vlan", "segmentation_id": v}))
                .collect()
        };
        let what = format!("trunk {}", vm.name);
        let found = api
            .list("trunks", &format!("port_id={parent_id}"))
            .await?
            .into_iter()
            .next();
        // Where the parent is bound; bound last (below), once the trunk is what the file says.
        let mut parent_host = text(parent, "binding:host_id").to_owned();
        let trunk_id = match found {
            None => {
                // Neutron refuses a trunk on a bound port: a VM whose port was bound before it
                // became a trunk's parent is unbound first.
                if !parent_host.is_empty() {
                    api.update("ports", "port", &parent_id, json!({"binding:host_id": ""}))
                        .await?;
                    parent_host.clear();
                }
                let attrs =
                    json!({"name": vm.name, "port_id": parent_id, "sub_ports": sub_ports(&wanted)});
                let t = api.create("trunks", "trunk", project, attrs).await?;
                let id = text(&t, "id").to_owned();
                self.changed(changes, &what, &format!("created ({id})"));
                id
            }
            Some(t) => {
                let id = text(&t, "id").to_owned();
                let have: Vec<(String, u16)> = t
                    .get("sub_ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        let vlan = s.get("segmentation_id").and_then(Value::as_u64);
                        let vlan = vlan.and_then(|v| u16::try_from(v).ok()).unwrap_or(0);
                        (text(s, "port_id").to_owned(), vlan)
                    })
                    .collect();
                let mut gone: Vec<(String, u16)> = Vec::new();
                for h in have.iter().filter(|h| !wanted.contains(h)) {
                    // The Kubernetes controller's subports (a nested node's pods) share the
                    // trunk: not the file's to remove.
                    if !self.foreign_subport(api, &h.0).await? {
                        gone.push(h.clone());
                    }
                }
                let new: Vec<(String, u16)> = wanted
                    .iter()
                    .filter(|w| !have.contains(w))
                    .cloned()
                    .collect();
                if !gone.is_empty() {
                    let ports: Vec<Value> =
                        gone.iter().map(|(p, _)| json!({"port_id": p})).collect();
                    api.act(
                        "trunks",
                        &id,
                        "remove_subports",
                        json!({"sub_ports": ports}),
                    )
                    .await?;
                }
                if !new.is_empty() {
                    let body = json!({"sub_ports": sub_ports(&new)});
                    api.act("trunks", &id, "add_subports", body).await?;
                }
                if !gone.is_empty() || !new.is_empty() {
                    let status = format!("{} subports added, {} removed", new.len(), gone.len());
                    self.changed(changes, &what, &status);
                }
                id
            }
        };
        // Subports the file dropped: their ports go too.
        for s in old.iter().flat_map(|o| &o.subports) {
            if !subports.iter().any(|n| n.port_id == s.port_id) {
                api.delete("ports", &s.port_id).await?;
                let port = crate::topology::subport_port_name(&vm.name, s.vlan);
                self.changed(changes, &format!("port {port}"), "deleted");
            }
        }
        if parent_host != vm.chassis {
            let binding = json!({ "binding:host_id": vm.chassis });
            api.update("ports", "port", &parent_id, binding).await?;
        }
        Ok(Some(TrunkState {
            trunk_id,
            subports,
            rundir: self.dir.join(format!("{}.ovs", vm.name)),
        }))
    }

    /// Whether subport `port` is another's than the lab's: the Kubernetes controller's (tag
    /// `k8s-cluster:<name>`, or its description `wyvern-k8s:<name>` before the tags come).
    async fn foreign_subport(&self, api: &Neutron, port: &str) -> Result<bool> {
        let Some(p) = api.show("ports", "port", port).await? else {
            return Ok(false);
        };
        let tagged = p
            .get("tags")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .any(|t| t.starts_with("k8s-cluster:"));
        Ok(tagged || text(&p, "description").starts_with("wyvern-k8s:"))
    }

    /// Deletes the trunk `old` of the VM whose port is `parent`, and its subports' ports (the
    /// parent is unbound for that: Neutron keeps the trunk of a bound port); with `rebind`, the
    /// parent is bound again where it was.
    pub(super) async fn remove_trunk(
        &mut self,
        api: &Neutron,
        parent: &str,
        old: &TrunkState,
        rebind: bool,
    ) -> Result<()> {
        let host = match api.show("ports", "port", parent).await? {
            Some(p) => text(&p, "binding:host_id").to_owned(),
            None => String::new(),
        };
        if !host.is_empty() {
            api.update("ports", "port", parent, json!({"binding:host_id": ""}))
                .await?;
        }
        api.delete("trunks", &old.trunk_id).await?;
        for s in &old.subports {
            api.delete("ports", &s.port_id).await?;
        }
        if rebind && !host.is_empty() {
            api.update("ports", "port", parent, json!({"binding:host_id": host}))
                .await?;
        }
        Ok(())
    }

    /// Whether VM `name` carries the trunk `want` says (or, `None`, none): as recorded, and its
    /// Open vSwitch running.
    pub(super) fn trunk_healthy(&self, name: &str, want: Option<&TrunkState>) -> bool {
        let have = self.state.trunks.get(name);
        let Some(want) = want else {
            return have.is_none();
        };
        let Some(vm) = self.state.vms.get(name) else {
            return false;
        };
        have == Some(want) && vswitch_running(&vm.netns, want)
    }
}
