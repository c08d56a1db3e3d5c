//! The pipeline: a pure function from the local view of the topology to the flows `br-int` should
//! hold, computed incrementally per object.
//!
//! Each object (port, network) owns the flows it contributes ([`flows`]); a change to an input
//! recomputes only the owners that depend on it and returns the [`Delta`] — flows to remove and flows
//! to add. [`Pipeline::full`] recomputes everything from scratch; a property test holds the incremental
//! result equal to it for random sequences of changes. No I/O happens here.

pub mod cookie;
pub mod flows;
pub mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use openflow::Flow;
use serde_json::Value;

use cookie::Owner;
use model::{Chassis, Network, Port, Subnet, Topology};

/// A change to one input of the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A northbound object under its store key (`/r/ports/<id>`, `/chassis/<id>`, ...) changed;
    /// `None`: deleted.
    Object(String, Option<Value>),
    /// A local VIF with this `iface-id` has this OpenFlow port (`None`: gone).
    Vif(String, Option<u32>),
    /// The tunnel port's OpenFlow port (`None`: gone).
    Tunnel(Option<u32>),
}

/// What changed in the desired flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub removed: Vec<Flow>,
    pub added: Vec<Flow>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.added.is_empty()
    }
    /// Appends a later delta; flows both added and removed along the way cancel out, so that the
    /// result takes the switch straight from before the first to after the last.
    pub fn extend(&mut self, other: Delta) {
        self.removed.extend(other.removed);
        self.added.extend(other.added);
        if self.removed.is_empty() || self.added.is_empty() {
            return;
        }
        let mut balance: HashMap<Flow, i64> = HashMap::new();
        for f in self.added.drain(..) {
            *balance.entry(f).or_default() += 1;
        }
        for f in self.removed.drain(..) {
            *balance.entry(f).or_default() -= 1;
        }
        for (f, n) in balance {
            match n.cmp(&0) {
                std::cmp::Ordering::Greater => self.added.push(f),
                std::cmp::Ordering::Less => self.removed.push(f),
                std::cmp::Ordering::Equal => {}
            }
        }
    }
}

/// The incremental pipeline of one chassis.
#[derive(Debug, Clone)]
pub struct Pipeline {
    topo: Topology,
    owned: BTreeMap<Owner, Vec<Flow>>,
}

impl Pipeline {
    /// An empty pipeline for `chassis` (only the static flows).
    pub fn new(chassis: &str) -> Self {
        let mut topo = Topology::default();
        topo.local.chassis = chassis.to_string();
        let mut owned = BTreeMap::new();
        owned.insert(Owner::Static, flows::static_flows());
        Self { topo, owned }
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// How many flows are desired.
    pub fn flow_count(&self) -> usize {
        self.owned.values().map(Vec::len).sum()
    }

    /// Every desired flow.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        self.owned.values().flatten()
    }

    /// The owner a cookie names, described for operators (`port 3f2a… (vm1)`).
    pub fn describe_cookie(&self, cookie: u64) -> Option<String> {
        if Owner::Static.owns(cookie) {
            return Some("pipeline (fixed flows)".into());
        }
        if let Some(p) = self
            .topo
            .ports
            .values()
            .find(|p| Owner::Port(p.id.clone()).owns(cookie))
        {
            let name = if p.name.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.name)
            };
            return Some(format!("port {}{name} on network {}", p.id, p.network_id));
        }
        self.topo
            .networks
            .values()
            .find(|n| Owner::Network(n.id.clone()).owns(cookie))
            .map(|n| format!("network {}", n.id))
    }

    /// The port that owns a flow cookie, if a port does.
    pub fn port_of_cookie(&self, cookie: u64) -> Option<&model::Port> {
        self.topo
            .ports
            .values()
            .find(|p| Owner::Port(p.id.clone()).owns(cookie))
    }

    /// Recomputes everything from scratch (what the incremental result must always equal).
    pub fn full(&self) -> HashSet<Flow> {
        let mut out: HashSet<Flow> = flows::static_flows().into_iter().collect();
        for p in self.topo.ports.values() {
            out.extend(flows::port_flows(&self.topo, p));
        }
        for n in self.topo.networks.values() {
            out.extend(flows::network_flows(&self.topo, n));
        }
        out
    }

    /// Applies one input change and returns what changed in the desired flows.
    pub fn apply(&mut self, input: Input) -> Delta {
        let mut dirty: BTreeSet<Owner> = BTreeSet::new();
        match input {
            Input::Object(key, value) => self.apply_object(&key, value.as_ref(), &mut dirty),
            Input::Vif(iface, ofport) => {
                let old = self.topo.local.set_vif(&iface, ofport);
                if old != ofport {
                    self.port_and_network(&iface, &mut dirty);
                    // Other VIFs sharing the old or the new number gain or lose their claim.
                    let sharing: Vec<String> = [old, ofport]
                        .into_iter()
                        .flatten()
                        .flat_map(|o| self.topo.local.claimants(o).cloned().collect::<Vec<_>>())
                        .collect();
                    for id in sharing {
                        self.port_and_network(&id, &mut dirty);
                    }
                }
            }
            Input::Tunnel(ofport) => {
                if self.topo.local.tunnel != ofport {
                    self.topo.local.tunnel = ofport;
                    dirty.extend(self.all_owners());
                }
            }
        }
        let mut delta = Delta::default();
        for owner in dirty {
            delta.extend(self.recompute(owner));
        }
        delta
    }

    fn all_owners(&self) -> Vec<Owner> {
        let ports = self.topo.ports.keys().map(|id| Owner::Port(id.clone()));
        let nets = self
            .topo
            .networks
            .keys()
            .map(|id| Owner::Network(id.clone()));
        ports.chain(nets).collect()
    }

    fn port_and_network(&self, port_id: &str, dirty: &mut BTreeSet<Owner>) {
        dirty.insert(Owner::Port(port_id.to_string()));
        if let Some(p) = self.topo.ports.get(port_id) {
            dirty.insert(Owner::Network(p.network_id.clone()));
        }
    }

    fn apply_object(&mut self, key: &str, value: Option<&Value>, dirty: &mut BTreeSet<Owner>) {
        if let Some(id) = key.strip_prefix("/r/ports/") {
            self.port_and_network(id, dirty);
            match value.and_then(Port::from_json) {
                Some(p) => self.topo.ports.insert(id.to_string(), p),
                None => self.topo.ports.remove(id),
            };
            self.port_and_network(id, dirty);
        } else if let Some(id) = key.strip_prefix("/r/subnets/") {
            // The network's DHCP flow depends on its subnets (old and new network).
            if let Some(old) = self.topo.subnets.get(id) {
                dirty.insert(Owner::Network(old.network_id.clone()));
            }
            match value.and_then(Subnet::from_json) {
                Some(s) => {
                    dirty.insert(Owner::Network(s.network_id.clone()));
                    self.topo.subnets.insert(id.to_string(), s)
                }
                None => self.topo.subnets.remove(id),
            };
        } else if let Some(id) = key.strip_prefix("/r/networks/") {
            match value.and_then(Network::from_json) {
                Some(n) => self.topo.networks.insert(id.to_string(), n),
                None => self.topo.networks.remove(id),
            };
            dirty.insert(Owner::Network(id.to_string()));
            for p in self.topo.ports.values().filter(|p| p.network_id == id) {
                dirty.insert(Owner::Port(p.id.clone()));
            }
        } else if let Some(id) = key.strip_prefix("/chassis-up/") {
            if value.is_some() {
                self.topo.chassis_up.insert(id.to_string());
            } else {
                self.topo.chassis_up.remove(id);
            }
            self.chassis_changed(id, dirty);
        } else if let Some(id) = key.strip_prefix("/chassis/") {
            match value.and_then(Chassis::from_json) {
                Some(c) => self.topo.chassis.insert(id.to_string(), c),
                None => self.topo.chassis.remove(id),
            };
            self.chassis_changed(id, dirty);
        }
    }

    fn chassis_changed(&self, id: &str, dirty: &mut BTreeSet<Owner>) {
        for p in self
            .topo
            .ports
            .values()
            .filter(|p| p.host.as_deref() == Some(id))
        {
            dirty.insert(Owner::Port(p.id.clone()));
            dirty.insert(Owner::Network(p.network_id.clone()));
        }
    }

    fn recompute(&mut self, owner: Owner) -> Delta {
        let new = match &owner {
            Owner::Static => flows::static_flows(),
            Owner::Port(id) => self
                .topo
                .ports
                .get(id)
                .map(|p| flows::port_flows(&self.topo, p))
                .unwrap_or_default(),
            Owner::Network(id) => self
                .topo
                .networks
                .get(id)
                .map(|n| flows::network_flows(&self.topo, n))
                .unwrap_or_default(),
        };
        let old = if new.is_empty() {
            self.owned.remove(&owner).unwrap_or_default()
        } else {
            self.owned.insert(owner, new.clone()).unwrap_or_default()
        };
        let old_set: HashSet<&Flow> = old.iter().collect();
        let new_set: HashSet<&Flow> = new.iter().collect();
        Delta {
            removed: old
                .iter()
                .filter(|f| !new_set.contains(f))
                .cloned()
                .collect(),
            added: new
                .iter()
                .filter(|f| !old_set.contains(f))
                .cloned()
                .collect(),
        }
    }
}
