//! A network's subnets: made as the file says, updated where the API lets them change (gateway,
//! DNS servers) and replaced where it does not (another CIDR, other IPv6 modes). A subnet of the
//! network that the file does not have (any more, or not with that CIDR and those modes) goes
//! first, as the server refuses overlapping subnets on a network, and with it what the lab put
//! on it: its VMs' ports (the VMs get new ports and are
//! wired again later in the same `up`, their floating IPs associated again) and routers'
//! interfaces with the extra routes through them (added again by the routers' step). Addresses
//! that others hold on it (a router's gateway, a floating IP, a chassis' SNAT address, a port
//! the lab did not make) stop the replacement before anything is removed.

use ipnet::IpNet;
use serde_json::Value;

use super::attrs::{same_subnet, subnet_attrs, subnet_update};
use super::routers::{INTERFACE_OWNER, detach};
use super::{Lab, VM_OWNER};
use crate::neutron::{Neutron, text};
use crate::state::SubnetState;
use crate::topology::{NetworkSpec, Topology};
use crate::{Error, Result};

/// Whether `port` has an address on subnet `id`.
fn on_subnet(port: &Value, id: &str) -> bool {
    port.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|f| text(f, "subnet_id") == id)
}

impl Lab {
    /// Brings the subnets of network `net` (API id `net_id`, owned by `project`) in line with
    /// the file; returns them in the file's order.
    pub(super) async fn ensure_subnets(
        &mut self,
        api: &Neutron,
        topo: &Topology,
        net: &NetworkSpec,
        net_id: &str,
        project: Option<&str>,
        changes: &mut Vec<String>,
    ) -> Result<Vec<SubnetState>> {
        let existing = api.list("subnets", &format!("network_id={net_id}")).await?;
        let (kept, stale): (Vec<Value>, Vec<Value>) = existing
            .into_iter()
            .partition(|x| net.subnets.iter().any(|s| same_subnet(x, s)));
        if !stale.is_empty() {
            self.remove_subnets(api, net, net_id, &stale, changes)
                .await?;
        }
        let mut subnets = Vec::new();
        for (i, s) in net.subnets.iter().enumerate() {
            let name = topo.subnet_name(net, i);
            let what = format!("subnet {name}");
            let made = match kept.iter().find(|x| same_subnet(x, s)) {
                Some(x) => {
                    let update = subnet_update(x, s)?;
                    if update.is_empty() {
                        x.clone()
                    } else {
                        let keys: Vec<String> = update.keys().cloned().collect();
                        let u = api
                            .update("subnets", "subnet", text(x, "id"), Value::Object(update))
                            .await?;
                        self.changed(changes, &what, &format!("updated ({})", keys.join(", ")));
                        u
                    }
                }
                None => {
                    let attrs = subnet_attrs(s, &name, net_id)?;
                    let v = api.create("subnets", "subnet", project, attrs).await?;
                    let status = format!("created ({} in {})", s.cidr, net.name);
                    self.changed(changes, &what, &status);
                    v
                }
            };
            subnets.push(SubnetState {
                id: text(&made, "id").to_owned(),
                name,
                cidr: s.cidr.to_string(),
                gateway: made
                    .get("gateway_ip")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        Ok(subnets)
    }

    /// Deletes the `stale` subnets (as the API shows them) of network `net` (API id `net_id`),
    /// which the file does not have, after the lab's VM ports and router interfaces on them;
    /// nothing if something else has addresses on them.
    async fn remove_subnets(
        &mut self,
        api: &Neutron,
        net: &NetworkSpec,
        net_id: &str,
        stale: &[Value],
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let on_stale = |p: &Value| stale.iter().any(|x| on_subnet(p, text(x, "id")));
        let ports: Vec<Value> = api
            .list("ports", &format!("network_id={net_id}"))
            .await?
            .into_iter()
            .filter(on_stale)
            .collect();
        let owned_by = |p: &Value, owner: &str| text(p, "device_owner") == owner;
        let held: Vec<String> = ports
            .iter()
            .filter(|p| !owned_by(p, VM_OWNER) && !owned_by(p, INTERFACE_OWNER))
            .map(|p| format!("port {} ({})", text(p, "id"), text(p, "device_owner")))
            .collect();
        let described: Vec<String> = stale
            .iter()
            .map(|x| format!("{} ({})", text(x, "name"), text(x, "cidr")))
            .collect();
        let goes = match described.len() {
            1 => format!("subnet {} goes", described[0]),
            _ => format!("subnets {} go", described.join(", ")),
        };
        if !held.is_empty() {
            return Err(Error::Topology(format!(
                "network {}: {goes} (the file has another CIDR or other IPv6 modes, or none), \
                 but addresses on it are held by what the lab does not remove: {}; `wyvern lab \
                 up --replace FILE` brings the lab up afresh",
                net.name,
                held.join(", ")
            )));
        }
        // The VMs' ports first: that lets go of their floating IPs, which keep router
        // interfaces.
        for p in ports.iter().filter(|p| owned_by(p, VM_OWNER)) {
            api.delete("ports", text(p, "id")).await?;
            let status = format!("deleted ({goes})");
            self.changed(changes, &format!("port {}", text(p, "name")), &status);
        }
        for p in ports.iter().filter(|p| owned_by(p, INTERFACE_OWNER)) {
            let router = text(p, "device_id");
            let on: Vec<&Value> = stale
                .iter()
                .filter(|x| on_subnet(p, text(x, "id")))
                .collect();
            let cidrs: Vec<IpNet> = on
                .iter()
                .filter_map(|x| text(x, "cidr").parse().ok())
                .collect();
            detach(api, router, text(p, "id"), &cidrs).await?;
            let label = self
                .state
                .routers
                .iter()
                .find(|(_, r)| r.id == router)
                .map_or(router, |(n, _)| n.as_str());
            let subnets: Vec<String> = on
                .iter()
                .map(|x| format!("{} ({})", text(x, "name"), text(x, "cidr")))
                .collect();
            let status = format!("interface on {} removed", subnets.join(", "));
            self.changed(changes, &format!("router {label}"), &status);
        }
        for x in stale {
            api.delete("subnets", text(x, "id")).await?;
            let what = format!("subnet {}", text(x, "name"));
            let status = format!("deleted ({}: not in the file any more)", text(x, "cidr"));
            self.changed(changes, &what, &status);
        }
        Ok(())
    }
}
