//! A lab's floating IPs: one per `[[floating_ip]]`, made by an admin for the VM's project (only
//! admins choose addresses) and associated with the VM's port (its first IPv4 address). `up`
//! finds each again by the id it made or by the VM's port and the network, so it is made once;
//! one whose address is not the file's is replaced, one that lost its port (the VM was made
//! afresh) is associated again. Those the file no longer has are deleted first thing: a router's
//! gateway cannot go while floating IPs use it.

use serde_json::{Value, json};

use super::Lab;
use crate::neutron::{Neutron, text};
use crate::state::FloatingIpState;
use crate::topology::{FloatingIpSpec, Topology};
use crate::{Error, Result};

const COLLECTION: &str = "floatingips";
const SINGULAR: &str = "floatingip";

/// What the lab records of floating IP `fip` (as the API shows it) of `spec`.
fn recorded(fip: &Value, spec: &FloatingIpSpec) -> FloatingIpState {
    FloatingIpState {
        id: text(fip, "id").to_owned(),
        address: text(fip, "floating_ip_address").to_owned(),
        vm: spec.vm.clone(),
        fixed_ip: text(fip, "fixed_ip_address").to_owned(),
        network: spec.network.clone(),
    }
}

impl Lab {
    /// Deletes the floating IPs the lab made that `topo` no longer has.
    pub(super) async fn remove_floating_ips(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let (keep, stale): (Vec<FloatingIpState>, Vec<FloatingIpState>) =
            std::mem::take(&mut self.state.floating_ips)
                .into_iter()
                .partition(|f| {
                    topo.floating_ips
                        .iter()
                        .any(|s| s.vm == f.vm && s.network == f.network)
                });
        self.state.floating_ips = keep;
        for f in stale {
            api.delete(COLLECTION, &f.id).await?;
            let what = format!("floating ip {}", f.address);
            self.changed(changes, &what, &format!("deleted (was vm {}'s)", f.vm));
        }
        Ok(())
    }

    /// Makes and associates every floating IP of `topo` (after the VMs' ports exist).
    pub(super) async fn ensure_floating_ips(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let mut made = Vec::new();
        for spec in &topo.floating_ips {
            made.push(self.ensure_floating_ip(api, spec, changes).await?);
        }
        self.state.floating_ips = made;
        Ok(())
    }

    async fn ensure_floating_ip(
        &self,
        api: &Neutron,
        spec: &FloatingIpSpec,
        changes: &mut Vec<String>,
    ) -> Result<FloatingIpState> {
        let missing = |what: &str| Error::NotFound(format!("{what} was not made"));
        let vm = self
            .state
            .vms
            .get(&spec.vm)
            .ok_or_else(|| missing(&format!("vm {}", spec.vm)))?;
        let net = self
            .state
            .networks
            .get(&spec.network)
            .ok_or_else(|| missing(&format!("network {}", spec.network)))?;
        let port = vm.port_id.as_str();
        let known = self
            .state
            .floating_ips
            .iter()
            .find(|f| f.vm == spec.vm && f.network == spec.network);
        let mut found = match known {
            Some(f) => api.show(COLLECTION, SINGULAR, &f.id).await?,
            None => None,
        };
        if found.is_none() {
            let query = format!("port_id={port}&floating_network_id={}", net.id);
            found = api.list(COLLECTION, &query).await?.into_iter().next();
        }
        if let Some(f) = &found
            && let Some(a) = spec.address
            && text(f, "floating_ip_address") != a.to_string()
        {
            api.delete(COLLECTION, text(f, "id")).await?;
            let what = format!("floating ip {}", text(f, "floating_ip_address"));
            self.changed(changes, &what, &format!("deleted (the file wants {a})"));
            found = None;
        }
        let fip = match found {
            Some(f) if text(&f, "port_id") == port => {
                let what = format!("floating ip {}", text(&f, "floating_ip_address"));
                self.say(&what, &format!("ok (vm {})", spec.vm));
                f
            }
            Some(f) => {
                let body = json!({ "port_id": port });
                let f = api
                    .update(COLLECTION, SINGULAR, text(&f, "id"), body)
                    .await?;
                let what = format!("floating ip {}", text(&f, "floating_ip_address"));
                self.changed(changes, &what, &format!("associated with vm {}", spec.vm));
                f
            }
            None => {
                let mut attrs = json!({ "floating_network_id": net.id, "port_id": port });
                if let Some(a) = spec.address {
                    attrs["floating_ip_address"] = a.to_string().into();
                }
                if let Some(p) = &vm.project {
                    attrs["project_id"] = p.as_str().into();
                }
                let f = api.create(COLLECTION, SINGULAR, None, attrs).await?;
                let what = format!("floating ip {}", text(&f, "floating_ip_address"));
                let status = format!("created (vm {}, {})", spec.vm, text(&f, "fixed_ip_address"));
                self.changed(changes, &what, &status);
                f
            }
        };
        Ok(recorded(&fip, spec))
    }
}
