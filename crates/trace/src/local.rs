//! The chassis a trace runs on: its VIFs' and tunnel's OpenFlow ports, and the flows the pure
//! pipeline computes for it (the agent's view: the networks of its VIFs and bound ports, the
//! routers on them and the networks those join, and the chassis list).

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;

use openflow::Flow;
use pipeline::{Input, Pipeline};

use crate::inventory::Inventory;

/// One chassis' Open vSwitch as the trace sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Local {
    /// The chassis' id.
    pub chassis: String,
    /// OpenFlow port of each local VIF, by port id (`iface-id`).
    pub vifs: BTreeMap<String, u32>,
    /// OpenFlow port of the tunnel port.
    pub tunnel: Option<u32>,
    /// The tunnel port's source address (`options:local_ip`: the chassis' tunnel address).
    pub tunnel_ip: Option<Ipv4Addr>,
    /// OpenFlow port of the patch to each physical network's bridge, by physical network.
    pub patches: BTreeMap<String, u32>,
    /// OpenFlow port of the inner end of each local subport's patch pair, by subport id (the
    /// outer end is the subport's VIF).
    pub inner: BTreeMap<String, u32>,
    /// Where the port numbers come from (for the report).
    pub origin: String,
}

impl Local {
    /// A chassis whose OVS cannot be asked: its VIFs are the ports bound to it, numbered from 2
    /// in port id order after the tunnel port (1), as a freshly made `br-int` would number them;
    /// the tunnel's source is the chassis' registered tunnel address, as the agent sets it.
    pub fn from_bindings(inv: &Inventory, chassis: &str) -> Local {
        let vifs = inv
            .topology
            .ports
            .values()
            .filter(|p| p.host.as_deref() == Some(chassis))
            .map(|p| p.id.clone())
            .zip(2..)
            .collect();
        let mut local = Local {
            chassis: chassis.to_string(),
            vifs,
            tunnel: Some(1),
            tunnel_ip: inv.topology.chassis.get(chassis).map(|c| c.tunnel_ip),
            patches: BTreeMap::new(),
            inner: BTreeMap::new(),
            origin: "assumed from the port bindings (no OVSDB: OpenFlow port numbers made up)"
                .into(),
        };
        local.assume_subports(inv);
        local
    }

    /// Gives every subport of a trunk whose parent is a local VIF the patch pair its agent
    /// makes (the subport's VIF and the inner end), with the next free numbers, where it has
    /// none yet.
    pub fn assume_subports(&mut self, inv: &Inventory) {
        for trunk in inv.topology.trunks.values() {
            if !self.vifs.contains_key(&trunk.parent) {
                continue;
            }
            for sub in trunk.distinct_subports() {
                self.assume_vif(&sub.port_id);
                if !self.inner.contains_key(&sub.port_id) {
                    let next = self.next_free();
                    self.inner.insert(sub.port_id.clone(), next);
                }
            }
        }
    }

    /// The number after the highest one used.
    fn next_free(&self) -> u32 {
        let used = self.vifs.values().chain(self.inner.values());
        used.chain(self.tunnel.iter()).max().map_or(1, |m| m + 1)
    }

    /// The patch pairs on `br-int`: each local subport's VIF (the outer end) and inner end.
    pub fn patch_pairs(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.inner
            .iter()
            .filter_map(|(sub, inner)| Some((*self.vifs.get(sub)?, *inner)))
    }

    /// Adds `port_id` as a VIF (with the next free number) if it is not one yet; whether it
    /// was added.
    pub fn assume_vif(&mut self, port_id: &str) -> bool {
        if self.vifs.contains_key(port_id) {
            return false;
        }
        let next = self.next_free();
        self.vifs.insert(port_id.to_string(), next);
        true
    }

    /// The port id of the VIF on OpenFlow port `ofport`.
    pub fn vif_at(&self, ofport: u32) -> Option<&str> {
        self.vifs
            .iter()
            .find(|(_, o)| **o == ofport)
            .map(|(id, _)| id.as_str())
    }
}

/// The flows the agent of `local.chassis` would install: the pipeline fed with what that agent
/// follows (the same rule, [`pipeline::model::Topology::needs`], and the same topics).
pub fn compute_flows(inv: &Inventory, local: &Local) -> Vec<Flow> {
    let topo = &inv.topology;
    let vif_networks = local
        .vifs
        .keys()
        .filter_map(|id| topo.ports.get(id))
        .map(|p| p.network_id.as_str());
    let needs = topo.needs(
        &local.chassis,
        local.vifs.keys().map(String::as_str),
        vif_networks,
    );
    let topics = nb_keys::Topics {
        networks: needs.networks,
        routers: needs.routers,
        security_groups: needs.security_groups,
        address_groups: needs.address_groups,
        physnets: needs.physnets,
        chassis: Some(local.chassis.clone()),
        ..nb_keys::Topics::default()
    };
    let mut p = Pipeline::new(&local.chassis);
    for (key, value) in inv.items.iter().filter(|(k, v)| topics.wants(k, Some(v))) {
        p.apply(Input::Object(key.clone(), Some(value.clone())));
    }
    p.apply(Input::Tunnel(local.tunnel));
    for (physnet, ofport) in &local.patches {
        p.apply(Input::Patch(physnet.clone(), Some(*ofport)));
    }
    for (id, ofport) in &local.vifs {
        p.apply(Input::Vif(id.clone(), Some(*ofport)));
    }
    for (id, ofport) in &local.inner {
        p.apply(Input::Inner(id.clone(), Some(*ofport)));
    }
    p.flows().cloned().collect()
}

/// How the flows a switch holds differ from the computed ones, in one sentence.
pub fn drift(held: &[Flow], desired: &[Flow]) -> String {
    let held_set: HashSet<&Flow> = held.iter().collect();
    let desired_set: HashSet<&Flow> = desired.iter().collect();
    let missing = desired.iter().filter(|f| !held_set.contains(f)).count();
    let extra = held.iter().filter(|f| !desired_set.contains(f)).count();
    if missing == 0 && extra == 0 {
        return format!(
            "they are exactly the {} flows the pipeline computes from the server's topology",
            desired.len()
        );
    }
    format!(
        "they differ from what the pipeline computes from the server's topology: {missing} \
         computed flows are missing or different, {extra} held flows are not computed (the agent \
         may be catching up; compare with --computed)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_counts_both_ways() {
        let f = |s: &str| s.parse::<Flow>().unwrap();
        let a = f("table=0, priority=1 actions=drop");
        let b = f("table=0, priority=2,in_port=1 actions=output:2");
        let c = f("table=0, priority=2,in_port=1 actions=output:3");
        assert!(
            drift(&[a.clone(), b.clone()], &[b.clone(), a.clone()])
                .starts_with("they are exactly the 2 flows")
        );
        assert!(
            drift(&[a.clone(), b], &[a, c])
                .contains(": 1 computed flows are missing or different, 1 held flows")
        );
    }

    #[test]
    fn bindings_and_assumed_vifs() {
        let inv = Inventory::from_items(vec![
            (
                "/r/ports/p2".into(),
                serde_json::json!({"id": "p2", "mac_address": "fa:16:3e:00:00:02", "binding:host_id": "c1"}),
            ),
            (
                "/r/ports/p1".into(),
                serde_json::json!({"id": "p1", "mac_address": "fa:16:3e:00:00:01", "binding:host_id": "c1"}),
            ),
            (
                "/r/ports/p3".into(),
                serde_json::json!({"id": "p3", "mac_address": "fa:16:3e:00:00:03", "binding:host_id": "c2"}),
            ),
        ]);
        let mut l = Local::from_bindings(&inv, "c1");
        assert_eq!(l.tunnel, Some(1));
        assert_eq!(l.tunnel_ip, None, "c1 is not registered");
        assert_eq!(
            l.vifs,
            [("p1".to_string(), 2), ("p2".to_string(), 3)].into()
        );
        assert!(l.assume_vif("p3"));
        assert!(!l.assume_vif("p3"));
        assert_eq!(l.vifs["p3"], 4);
        assert_eq!(l.vif_at(3), Some("p2"));
    }
}
