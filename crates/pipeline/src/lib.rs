//! The pipeline: a pure function from the local view of the topology to the flows `br-int` should
//! hold, computed incrementally.
//!
//! The flows come from [`apps`], one per datapath feature, each computing the flows of one owner
//! (an API object: port, network, router, router interface) at a time. While it computes, every
//! read of the topology is recorded ([`deps`]); a change to an input recomputes exactly the
//! (app, owner) pairs that read something it touched, and returns the [`Delta`] — flows to remove
//! and flows to add. [`Pipeline::full`] recomputes everything from scratch; a property test holds
//! the incremental result equal to it for random sequences of changes. The stages and registers
//! are in [`tables`]. No I/O happens here.

pub mod apps;
pub mod balancers;
pub mod chains;
pub mod cookie;
pub mod deps;
mod few;
pub mod model;
mod reads;
pub mod tables;
pub mod trunks;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

use openflow::flow::FlowKey;
use openflow::message::Group;
use openflow::{Action, Flow, Instructions, Match};
use serde_json::Value;

use apps::{APPS, Collected, OwnerKind};
use cookie::Owner;
use deps::{Ctx, Dep};
use model::{Object, Port, Remote, Topology};
use tables::{Miss, STAGES};

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
    /// The patch port to the bridge of a physical network has this OpenFlow port (`None`: the
    /// chassis does not reach that physical network).
    Patch(String, Option<u32>),
    /// The inner end of the patch pair of the subport with this id has this OpenFlow port
    /// (`None`: gone).
    Inner(String, Option<u32>),
    /// The data plane of the remote chassis with this id, as BFD on this chassis' monitor port
    /// towards it sees it: `Some(true)` up, `Some(false)` down after having been up, `None` not
    /// known (no monitor port, or its session never came up). See [`model::Topology::reachable`].
    PeerDataPlane(String, Option<bool>),
}

/// What changed in the desired flows. Extending a delta with a later one costs the size of the
/// later one: flows both added and removed along the way cancel out, so the result takes the
/// switch straight from before the first to after the last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    /// +1: to add, -1: to remove (never anything else, nor 0).
    balance: FastMap<Flow, i8>,
    /// Groups whose desired state changed: what they are to be (`None`: gone). A group is
    /// installed (or modified) before the flows of its delta and deleted after them.
    groups: BTreeMap<u32, Option<Group>>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.balance.is_empty() && self.groups.is_empty()
    }

    pub fn len(&self) -> usize {
        self.balance.len() + self.groups.len()
    }

    /// Groups to install or modify (`Some`) and to delete (`None`), by id.
    pub fn groups(&self) -> impl Iterator<Item = (u32, Option<&Group>)> {
        self.groups.iter().map(|(id, g)| (*id, g.as_ref()))
    }

    /// Flows to add.
    pub fn added(&self) -> impl Iterator<Item = &Flow> {
        self.balance.iter().filter(|(_, n)| **n > 0).map(|(f, _)| f)
    }

    /// Flows to remove.
    pub fn removed(&self) -> impl Iterator<Item = &Flow> {
        self.balance.iter().filter(|(_, n)| **n < 0).map(|(f, _)| f)
    }

    /// Splits into (removed, added).
    pub fn into_parts(self) -> (Vec<Flow>, Vec<Flow>) {
        let (added, removed): (Vec<_>, Vec<_>) =
            self.balance.into_iter().partition(|(_, n)| *n > 0);
        (
            removed.into_iter().map(|(f, _)| f).collect(),
            added.into_iter().map(|(f, _)| f).collect(),
        )
    }

    fn change(&mut self, flow: Flow, by: i8) {
        use std::collections::hash_map::Entry;
        match self.balance.entry(flow) {
            Entry::Vacant(e) => {
                e.insert(by);
            }
            Entry::Occupied(e) => {
                // A flow is only ever removed while installed and added while not, so the two
                // directions alternate and meet only to cancel.
                e.remove();
            }
        }
    }

    /// Appends a later delta.
    pub fn extend(&mut self, other: Delta) {
        for (f, n) in other.balance {
            self.change(f, n);
        }
        self.groups.extend(other.groups);
    }
}

/// One app's flows for one owner.
type Slot = (usize, Owner);

/// Flows by their identity ([`Flow::key`]), each held once (a map from keys to flows would hold
/// every match twice).
#[derive(Debug, Clone, Default)]
struct ByKey(hashbrown::HashTable<Flow>);

impl ByKey {
    fn hash(table: u8, priority: u16, m: &Match) -> u64 {
        fx_hash(&(table, priority, m))
    }

    fn hash_flow(f: &Flow) -> u64 {
        Self::hash(f.table, f.priority, &f.match_)
    }

    /// Holds `flow`, returning the flow it replaces (the one with its identity).
    fn insert(&mut self, flow: Flow) -> Option<Flow> {
        use hashbrown::hash_table::Entry;
        let same = |f: &Flow| {
            f.table == flow.table && f.priority == flow.priority && f.match_ == flow.match_
        };
        match self.0.entry(Self::hash_flow(&flow), same, Self::hash_flow) {
            Entry::Occupied(mut e) => Some(std::mem::replace(e.get_mut(), flow)),
            Entry::Vacant(e) => {
                e.insert(flow);
                None
            }
        }
    }

    fn remove(&mut self, (table, priority, m): &FlowKey) -> Option<Flow> {
        let same = |f: &Flow| f.table == *table && f.priority == *priority && f.match_ == *m;
        let found = self.0.find_entry(Self::hash(*table, *priority, m), same);
        found.ok().map(|e| e.remove().0)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = &Flow> {
        self.0.iter()
    }
}

/// The slots contributing to one merged flow, by number (nearly always one): the contributions
/// themselves are among the slots' own flows ([`Pipeline::contributions`]), not copied here.
type Parts = Vec<u32>;

/// The pipeline's own maps, and the agent's of flows: their keys (flows, store ids) come from
/// their own server and switch, so a fast hash without flooding protection does ([`Fx`]).
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;
pub type FastSet<K> = HashSet<K, BuildHasherDefault<Fx>>;

/// `value`'s [`Fx`] hash.
fn fx_hash<T: Hash>(value: &T) -> u64 {
    BuildHasherDefault::<Fx>::default().hash_one(value)
}

/// The Fx hash (Firefox's, rustc's): a rotate, a xor and a multiply per word.
#[derive(Default, Clone, Copy)]
pub struct Fx(u64);

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The incremental pipeline of one chassis.
#[derive(Debug, Clone)]
pub struct Pipeline {
    topo: Topology,
    static_flows: Vec<Flow>,
    /// Each slot's flows, by the slot's number in [`Self::reads`] (a map keyed by the slots
    /// themselves held a second copy of every slot, its owner's id included).
    owned: FastMap<u32, Vec<Flow>>,
    /// Flows several owners may compute with one identity, by that identity: conjunctive
    /// contributions (flows whose actions are only `conjunction`s) become one flow with all
    /// their actions, as OVN's ofctrl does, and flows of the shared stages
    /// ([`tables::SHARED`]) one flow with the first owner's ([`merge`]).
    conj: FastMap<FlowKey, Parts>,
    /// Flood flows, from their network's and ports' contributions ([`Collected`]), merged as
    /// they come and go: a port costs its own part, whatever the network's size.
    collected: FastMap<FlowKey, Collected>,
    merged: ByKey,
    /// What each slot's flows were computed from, and the slots that read each dependency.
    reads: reads::ReadIndex<Slot, Dep>,
    /// Owners with flows, by cookie, with the number of apps that gave them flows.
    cookies: FastMap<u64, (Owner, usize)>,
    /// Store keys whose values could not be decoded since the last [`Pipeline::take_malformed`].
    malformed: Vec<String>,
    /// Counts the inputs that may have changed what this chassis follows ([`Pipeline::needs_epoch`]).
    needs_epoch: u64,
    /// How many owned flows are not conjunctive contributions (kept as slots change, so that
    /// counting the flows costs nothing).
    plain: usize,
    /// Each slot's groups, and the desired groups by id.
    owned_groups: BTreeMap<Slot, Vec<Group>>,
    groups: BTreeMap<u32, Group>,
    /// Whether changes go without deltas ([`Pipeline::set_quiet`]).
    quiet: bool,
}

/// The fixed part: each stage's miss behaviour, and the apps' flows that depend on no input.
fn static_flows() -> Vec<Flow> {
    let misses = STAGES.iter().map(|s| {
        let ins = match s.miss {
            Miss::Drop => Instructions::default(),
            Miss::Continue(t) => apps::goto(t),
        };
        apps::flow(&Owner::Static, s.table, 0, Match::new(), ins)
    });
    misses.chain(APPS.iter().flat_map(|a| a.fixed())).collect()
}

/// The dependencies an object touches, and the owners it is.
fn touched(obj: &Object, deps: &mut Vec<Dep>, owners: &mut Vec<Owner>) {
    match obj {
        Object::Network(n) => {
            deps.push(Dep::Network(n.id.clone()));
            deps.extend(Topology::segment_claim(n).map(Dep::Claim));
            owners.push(Owner::Network(n.id.as_str().into()));
        }
        Object::Subnet(s) => {
            deps.push(Dep::SubnetsOn(s.network_id.clone()));
            deps.push(Dep::Subnet(s.id.clone()));
        }
        Object::Port(p) => {
            deps.push(Dep::Port(p.id.clone()));
            deps.push(Dep::PortsOn(p.network_id.clone()));
            deps.extend(Topology::claim_keys(p).into_iter().map(Dep::Claim));
            owners.push(Owner::Port(p.id.as_str().into()));
            if let Some(r) = p.router() {
                deps.push(Dep::InterfacesOf(r.to_string()));
                deps.push(Dep::InterfacesOn(p.network_id.clone()));
                owners.push(Owner::RouterInterface(p.id.as_str().into()));
            }
            if p.snat_chassis().is_some() {
                deps.push(Dep::SnatAddress(p.network_id.clone()));
            }
            if let Some(r) = p.gateway_of() {
                deps.push(Dep::GatewayOf(r.to_string()));
            }
        }
        Object::Router(r) => {
            deps.push(Dep::Router(r.id.clone()));
            owners.push(Owner::Router(r.id.as_str().into()));
        }
        Object::SecurityGroup(g) => deps.push(Dep::SecurityGroup(g.id.clone())),
        Object::SgRule(r) => {
            deps.push(Dep::SgRule(r.id.clone()));
            deps.push(Dep::RulesOf(r.group.clone()));
            if let Remote::Group(g) = &r.remote {
                deps.push(Dep::RulesNaming(g.clone()));
            }
            owners.push(Owner::SgRule(r.id.as_str().into()));
        }
        Object::AddressGroup(a) => deps.push(Dep::AddressGroup(a.id.clone())),
        Object::FloatingIp(f) => {
            deps.push(Dep::FloatingIp(f.id.clone()));
            if let Some(t) = &f.target {
                deps.push(Dep::FloatingIpsOf(t.port_id.clone()));
            }
            owners.push(Owner::FloatingIp(f.id.as_str().into()));
        }
        Object::LoadBalancer(o) => {
            deps.push(Dep::LoadBalancer(o.id.clone()));
            owners.push(Owner::LoadBalancer(o.id.as_str().into()));
        }
        Object::Listener(o) => {
            deps.push(Dep::Listener(o.id.clone()));
            owners.push(Owner::Listener(o.id.as_str().into()));
        }
        Object::Pool(o) => deps.push(Dep::Pool(o.id.clone())),
        Object::Member(o) => {
            deps.push(Dep::Member(o.id.clone()));
            deps.push(Dep::MembersOf(o.pool_id.clone()));
            owners.push(Owner::Member(o.id.as_str().into()));
        }
        Object::HealthMonitor(o) => deps.push(Dep::HealthMonitor(o.id.clone())),
        Object::PortPair(o) => deps.push(Dep::PortPair(o.id.clone())),
        Object::PortPairGroup(o) => deps.push(Dep::PortPairGroup(o.id.clone())),
        Object::FlowClassifier(o) => deps.push(Dep::FlowClassifier(o.id.clone())),
        Object::PortChain(o) => {
            deps.push(Dep::PortChain(o.id.clone()));
            owners.push(Owner::PortChain(o.id.as_str().into()));
        }
        Object::Trunk(o) => {
            deps.push(Dep::Trunk(o.id.clone()));
            deps.extend(o.ports().map(|p| Dep::TrunksNaming(p.to_string())));
            owners.push(Owner::Trunk(o.id.as_str().into()));
        }
        Object::Chassis(c) => {
            deps.push(Dep::Chassis(c.id.clone()));
            deps.push(Dep::AllChassis);
        }
        Object::ChassisUp(id) => {
            deps.push(Dep::Chassis(id.clone()));
            deps.push(Dep::AllChassis);
        }
        // What reaches a chassis may change with what its watchers report (never the chassis
        // set itself).
        Object::ChassisPeers(r) => deps.extend(r.verdicts.keys().cloned().map(Dep::Chassis)),
    }
}

impl Pipeline {
    /// An empty pipeline for `chassis` (only the static flows).
    pub fn new(chassis: &str) -> Self {
        let mut topo = Topology::default();
        topo.local.chassis = chassis.to_string();
        Self {
            topo,
            static_flows: static_flows(),
            owned: FastMap::default(),
            conj: FastMap::default(),
            collected: FastMap::default(),
            merged: ByKey::default(),
            reads: reads::ReadIndex::default(),
            cookies: FastMap::default(),
            malformed: Vec::new(),
            needs_epoch: 0,
            plain: 0,
            owned_groups: BTreeMap::new(),
            groups: BTreeMap::new(),
            quiet: false,
        }
    }

    /// Every desired group.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// How many flows are desired.
    pub fn flow_count(&self) -> usize {
        self.static_flows.len() + self.plain + self.merged.len()
    }

    /// Every desired flow.
    pub fn flows(&self) -> impl Iterator<Item = &Flow> {
        let plain = self.owned.values().flatten().filter(|f| !is_merged(f));
        self.static_flows
            .iter()
            .chain(plain)
            .chain(self.merged.iter())
    }

    /// The flows each app computed, by app name (for tests and `trace`), in the order of the
    /// apps and owners.
    pub fn flows_by_app(&self) -> impl Iterator<Item = (&'static str, &Owner, &Flow)> {
        let mut slots: Vec<(&Slot, &Vec<Flow>)> = self
            .owned
            .iter()
            .filter_map(|(id, flows)| Some((self.reads.slot(*id)?, flows)))
            .collect();
        slots.sort_unstable_by(|a, b| a.0.cmp(b.0));
        slots.into_iter().flat_map(|((app, owner), flows)| {
            flows
                .iter()
                .map(move |f| (APPS[*app].spec().name, owner, f))
        })
    }

    /// What each (app, owner) pair's flows were computed from (for tests: an app reads only the
    /// inputs it declares).
    pub fn dependencies(&self) -> impl Iterator<Item = (&'static str, &Owner, Vec<&Dep>)> {
        self.reads
            .iter()
            .map(|((app, owner), deps)| (APPS[*app].spec().name, owner, deps))
    }

    /// Store keys whose values were malformed (ignored, the object kept as it was) since the
    /// last call.
    pub fn take_malformed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.malformed)
    }

    /// A number that changes whenever an input may have changed what this chassis follows
    /// ([`Topology::needs`] with the local VIFs): any object but a subnet or a port that is
    /// neither bound here, nor a local VIF's, nor a router's; a VIF. While it stays (and the
    /// caller's own VIF list too), `needs` would answer the same: a port created on another
    /// chassis costs no recomputation of it.
    pub fn needs_epoch(&self) -> u64 {
        self.needs_epoch
    }

    /// Whether `obj` may be read by [`Topology::needs`] for this chassis.
    fn followed(&self, obj: &Object) -> bool {
        match obj {
            Object::Port(p) => {
                p.host.as_deref() == Some(self.topo.local.chassis.as_str())
                    || self.topo.local.has_vif(&p.id)
                    || p.router().is_some()
                    || p.gateway_of().is_some()
            }
            Object::Subnet(_) => false,
            // Reports elect gateways, which only a gateway chassis' needs read.
            Object::ChassisPeers(_) => self.is_gateway(),
            _ => true,
        }
    }

    /// Whether this chassis is registered as a gateway chassis.
    fn is_gateway(&self) -> bool {
        self.topo
            .chassis
            .get(&self.topo.local.chassis)
            .is_some_and(|c| c.gateway)
    }

    /// The owner a cookie names, if it has flows here.
    pub fn owner_of_cookie(&self, cookie: u64) -> Option<&Owner> {
        if Owner::Static.owns(cookie) {
            return Some(&Owner::Static);
        }
        self.cookies.get(&cookie).map(|(o, _)| o)
    }

    /// The owner a cookie names, described for operators (`port 3f2a… (vm1)`).
    pub fn describe_cookie(&self, cookie: u64) -> Option<String> {
        let owner = self.owner_of_cookie(cookie)?;
        let topo = &self.topo;
        let named = |name: &str| {
            if name.is_empty() {
                String::new()
            } else {
                format!(" ({name})")
            }
        };
        Some(match owner {
            Owner::Static => "pipeline (fixed flows)".into(),
            Owner::Port(id) => {
                let p = topo.ports.get(&**id)?;
                format!("port {id}{} on network {}", named(&p.name), p.network_id)
            }
            Owner::Network(id) => format!("network {id}"),
            Owner::Router(id) => {
                let name = topo
                    .routers
                    .get(&**id)
                    .map(|r| r.name.as_str())
                    .unwrap_or("");
                format!("router {id}{}", named(name))
            }
            Owner::RouterInterface(id) => {
                let p = topo.ports.get(&**id)?;
                format!(
                    "router interface {id} of router {} on network {}",
                    p.device_id, p.network_id
                )
            }
            Owner::SgRule(id) => {
                let r = topo.rules.get(&**id)?;
                let name = topo
                    .security_groups
                    .get(&r.group)
                    .map(|g| g.name.as_str())
                    .unwrap_or("");
                let direction = if r.ingress { "ingress" } else { "egress" };
                format!(
                    "security group rule {id} ({direction}) of group {}{}",
                    r.group,
                    named(name)
                )
            }
            Owner::LoadBalancer(id) => {
                let lb = topo.load_balancers.get(&**id)?;
                format!("load balancer {id}{} (VIP {})", named(&lb.name), lb.vip)
            }
            Owner::Listener(id) => {
                let l = topo.listeners.get(&**id)?;
                let proto = if l.protocol == 17 { "UDP" } else { "TCP" };
                let vip = topo
                    .load_balancers
                    .get(&l.loadbalancer_id)
                    .map(|lb| format!(" of load balancer {} (VIP {})", lb.id, lb.vip))
                    .unwrap_or_default();
                format!("listener {id}{} ({proto} {}){vip}", named(&l.name), l.port)
            }
            Owner::Member(id) => {
                let m = topo.members.get(&**id)?;
                format!(
                    "member {id}{} ({}:{}) of pool {}",
                    named(&m.name),
                    m.address,
                    m.port,
                    m.pool_id
                )
            }
            Owner::PortChain(id) => {
                let c = topo.port_chains.get(&**id)?;
                format!("port chain {id}{} (chain id {})", named(&c.name), c.number)
            }
            Owner::Trunk(id) => {
                let t = topo.trunks.get(&**id)?;
                format!("trunk {id}{} of parent port {}", named(&t.name), t.parent)
            }
            Owner::FloatingIp(id) => {
                let f = topo.floating_ips.get(&**id)?;
                match &f.target {
                    Some(t) => format!(
                        "floating IP {id} ({}) of port {} ({})",
                        f.address, t.port_id, t.fixed_ip
                    ),
                    None => format!("floating IP {id} ({})", f.address),
                }
            }
        })
    }

    /// Whether `owner` has flows now.
    pub fn has_flows(&self, owner: &Owner) -> bool {
        self.cookies
            .get(&owner.cookie())
            .is_some_and(|(o, _)| o == owner)
    }

    /// The port that owns a flow cookie, if a port or router interface does.
    pub fn port_of_cookie(&self, cookie: u64) -> Option<&Port> {
        match self.owner_of_cookie(cookie)? {
            Owner::Port(id) | Owner::RouterInterface(id) => self.topo.ports.get(&**id),
            _ => None,
        }
    }

    /// Every owner the topology has, with the apps that compute flows for its kind.
    fn all_slots(&self) -> Vec<Slot> {
        self.topo.owners().flat_map(slots_of).collect()
    }

    /// Recomputes everything from scratch (what the incremental result must always equal):
    /// the flows and the groups.
    pub fn full(&self) -> (HashSet<Flow>, BTreeMap<u32, Group>) {
        let mut out: HashSet<Flow> = self.static_flows.iter().cloned().collect();
        let mut groups = BTreeMap::new();
        let mut conj: HashMap<FlowKey, few::Few<Slot, Instructions>> = HashMap::new();
        let mut collected: HashMap<FlowKey, Collected> = HashMap::new();
        for slot in self.all_slots() {
            let mut flows = Vec::new();
            let mut ctx = Ctx::new(&self.topo);
            APPS[slot.0].flows(&mut ctx, &slot.1, &mut flows);
            groups.extend(ctx.finish().1.into_iter().map(|g| (g.group_id, g)));
            for f in flows {
                if f.table == tables::FLOOD {
                    collected
                        .entry(f.key())
                        .or_default()
                        .add(&slot.1, &f.instructions.apply);
                } else if is_merged(&f) {
                    conj.entry(f.key())
                        .or_default()
                        .insert(slot.clone(), f.instructions);
                } else {
                    out.insert(f);
                }
            }
        }
        out.extend(conj.iter().filter_map(|(k, parts)| {
            let parts: Vec<_> = parts.iter().map(|((_, owner), ins)| (owner, ins)).collect();
            merge(k, &parts)
        }));
        out.extend(
            collected
                .into_iter()
                .filter_map(|((table, priority, m), c)| c.flow(table, priority, m)),
        );
        (out, groups)
    }

    /// While quiet, changes give empty deltas: for a caller that compares the switch with
    /// [`Pipeline::flows`] before it sends anything (an agent before its first comparison).
    /// At 10 000 ports a restarted agent's snapshot made a delta of 60 000 flows, each cloned
    /// and hashed, only to be dropped.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.quiet = quiet;
    }

    /// Applies one input change and returns what changed in the desired flows.
    pub fn apply(&mut self, input: Input) -> Delta {
        self.apply_all([input])
    }

    /// Applies input changes in order and returns what changed in the desired flows over all of
    /// them. Each (app, owner) pair they affect is recomputed once, from the final state, and
    /// each flood flow merged once: a snapshot of thousands of objects costs one computation of
    /// each flow, not one per object that touches it.
    pub fn apply_all(&mut self, inputs: impl IntoIterator<Item = Input>) -> Delta {
        let mut dirty: BTreeSet<Slot> = BTreeSet::new();
        for input in inputs {
            self.note(input, &mut dirty);
        }
        let mut delta = Delta::default();
        let mut floods: FastSet<FlowKey> = FastSet::default();
        let slots: Vec<Slot> = dirty.into_iter().collect();
        // In chunks: what a chunk computed (its flows, and what each slot read, ids and all) is
        // taken in and dropped before the next is computed, so a snapshot's computation never
        // holds all of it at once.
        for chunk in slots.chunks(COMPUTE_CHUNK) {
            let computed = compute_all(&self.topo, chunk);
            for (slot, computed) in chunk.iter().zip(computed) {
                self.recompute(slot.clone(), computed, &mut delta, &mut floods);
            }
        }
        for key in floods {
            let after = self.collected.get(&key).and_then(|c| {
                let (table, priority, m) = key.clone();
                c.flow(table, priority, m)
            });
            if self.collected.get(&key).is_some_and(Collected::is_empty) {
                self.collected.remove(&key);
            }
            self.remerge(key, after, &mut delta);
        }
        delta
    }

    /// Applies one input change to the topology and adds the slots it affects to `dirty`.
    fn note(&mut self, input: Input, dirty: &mut BTreeSet<Slot>) {
        let mut changed: Vec<Dep> = Vec::new();
        let mut owners: Vec<Owner> = Vec::new();
        match input {
            Input::Object(key, value) => {
                let Some((kind, id)) =
                    nb_keys::parse(&key).filter(|(_, id)| !id.is_empty() && !id.contains('/'))
                else {
                    return;
                };
                let old = match value {
                    None => self.topo.remove(kind, id),
                    Some(v) => match Object::decode(kind, id, &v) {
                        // Nothing the pipeline reads changed (a port's status, its VIF type): no
                        // recomputation.
                        Some(obj) if self.topo.holds(&obj) => return,
                        Some(obj) => {
                            touched(&obj, &mut changed, &mut owners);
                            if self.followed(&obj) {
                                self.needs_epoch += 1;
                            }
                            self.topo.put(obj)
                        }
                        None => {
                            self.malformed.push(key);
                            return;
                        }
                    },
                };
                if let Some(old) = &old {
                    touched(old, &mut changed, &mut owners);
                    if self.followed(old) {
                        self.needs_epoch += 1;
                    }
                }
            }
            Input::Vif(iface, ofport) => {
                let old = self.topo.local.set_vif(&iface, ofport);
                if old != ofport {
                    self.needs_epoch += 1;
                    changed.push(Dep::Vif(iface));
                    self.claims_moved(old, ofport, &mut changed);
                }
            }
            Input::Inner(subport, ofport) => {
                let old = self.topo.local.set_inner(&subport, ofport);
                if old != ofport {
                    changed.push(Dep::Inner(subport));
                    self.claims_moved(old, ofport, &mut changed);
                }
            }
            Input::Tunnel(ofport) => {
                if self.topo.local.tunnel != ofport {
                    self.topo.local.tunnel = ofport;
                    changed.push(Dep::Tunnel);
                }
            }
            Input::PeerDataPlane(chassis, state) => {
                let was_isolated = self.topo.isolated();
                let old = match state {
                    Some(up) => self.topo.local.data_plane.insert(chassis.clone(), up),
                    None => self.topo.local.data_plane.remove(&chassis),
                };
                if old != state {
                    changed.push(Dep::Chassis(chassis));
                    if self.topo.isolated() != was_isolated {
                        changed.push(Dep::Isolated);
                    }
                    // A gateway chassis follows the networks of the routers it hosts, which
                    // data planes elect.
                    if self.is_gateway() {
                        self.needs_epoch += 1;
                    }
                }
            }
            Input::Patch(physnet, ofport) => {
                let old = match ofport {
                    Some(o) => self.topo.local.patches.insert(physnet.clone(), o),
                    None => self.topo.local.patches.remove(&physnet),
                };
                if old != ofport {
                    changed.push(Dep::Patch(physnet));
                }
            }
        }
        dirty.extend(owners.into_iter().flat_map(slots_of));
        for dep in &changed {
            dirty.extend(self.reads.readers(dep).cloned());
        }
    }

    /// The VIFs and inner ends sharing a number a claim moved from or to gain or lose theirs.
    fn claims_moved(&self, old: Option<u32>, new: Option<u32>, changed: &mut Vec<Dep>) {
        let local = &self.topo.local;
        for o in [old, new].into_iter().flatten() {
            changed.extend(local.claimants(o).cloned().map(Dep::Vif));
            changed.extend(local.inner_claimants(o).cloned().map(Dep::Inner));
        }
    }

    /// Replaces a slot's groups, noting in `delta` the groups whose desired state changed. (Two
    /// owners never emit one group id: ids are derived from the owner's id, as cookies are.)
    fn regroup(&mut self, slot: &Slot, new: Vec<Group>, delta: &mut Delta) {
        let old = if new.is_empty() {
            self.owned_groups.remove(slot).unwrap_or_default()
        } else {
            self.owned_groups
                .insert(slot.clone(), new.clone())
                .unwrap_or_default()
        };
        for g in &old {
            if !new.iter().any(|n| n.group_id == g.group_id) {
                self.groups.remove(&g.group_id);
                if !self.quiet {
                    delta.groups.insert(g.group_id, None);
                }
            }
        }
        for g in new {
            if self.groups.get(&g.group_id) != Some(&g) {
                self.groups.insert(g.group_id, g.clone());
                if !self.quiet {
                    delta.groups.insert(g.group_id, Some(g));
                }
            }
        }
    }

    fn owner_exists(&self, owner: &Owner) -> bool {
        let topo = &self.topo;
        match owner {
            Owner::Static => true,
            Owner::Network(id) => topo.networks.contains_key(&**id),
            Owner::Port(id) => topo.ports.contains_key(&**id),
            Owner::Router(id) => topo.routers.contains_key(&**id),
            Owner::RouterInterface(id) => {
                topo.ports.get(&**id).is_some_and(|p| p.router().is_some())
            }
            Owner::SgRule(id) => topo.rules.contains_key(&**id),
            Owner::FloatingIp(id) => topo.floating_ips.contains_key(&**id),
            Owner::LoadBalancer(id) => topo.load_balancers.contains_key(&**id),
            Owner::Listener(id) => topo.listeners.contains_key(&**id),
            Owner::Member(id) => topo.members.contains_key(&**id),
            Owner::PortChain(id) => topo.port_chains.contains_key(&**id),
            Owner::Trunk(id) => topo.trunks.contains_key(&**id),
        }
    }

    /// Takes in one slot's newly computed flows, noting in `delta` what changed, except flood
    /// flows: their keys go to `floods`, to be merged once all slots are recomputed.
    fn recompute(
        &mut self,
        slot: Slot,
        computed: Computed,
        delta: &mut Delta,
        floods: &mut FastSet<FlowKey>,
    ) {
        let (_, owner) = &slot;
        let Computed {
            flows: new,
            reads,
            groups: new_groups,
        } = computed;
        self.regroup(&slot, new_groups, delta);
        let exists = self.owner_exists(owner);
        // Most recomputations read what they read before: the index stays as it is. A slot keeps
        // its number, under which its flows are held, while its owner exists.
        let id = if !exists {
            self.reads.remove(&slot)
        } else {
            match self.reads.slot_id(&slot) {
                Some(id) if self.reads.reads_exactly(id, &reads) => Some(id),
                _ => Some(self.reads.set(&slot, &reads)),
            }
        };
        // The flows of an owner that is gone are gone.
        let new = if exists { new } else { Vec::new() };
        let cookie = owner.cookie();
        let old = match id {
            Some(id) if new.is_empty() => self.owned.remove(&id).unwrap_or_default(),
            Some(id) => {
                if !self.owned.contains_key(&id) {
                    self.cookies
                        .entry(cookie)
                        .or_insert_with(|| (owner.clone(), 0))
                        .1 += 1;
                }
                self.owned.insert(id, new.clone()).unwrap_or_default()
            }
            None => Vec::new(),
        };
        if new.is_empty()
            && !old.is_empty()
            && let Some(entry) = self.cookies.get_mut(&cookie)
        {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.cookies.remove(&cookie);
            }
        }
        self.plain -= old.iter().filter(|f| !is_merged(f)).count();
        self.plain += new.iter().filter(|f| !is_merged(f)).count();
        // Sets only to compare two lists (a first computation, as at start, has nothing to
        // compare with).
        let compare = !old.is_empty() && !new.is_empty();
        let (old_set, new_set): (FastSet<&Flow>, FastSet<&Flow>) = if compare {
            (old.iter().collect(), new.iter().collect())
        } else {
            Default::default()
        };
        let mut conj_keys: Vec<FlowKey> = Vec::new();
        for f in old.iter().filter(|f| !new_set.contains(f)) {
            if f.table == tables::FLOOD {
                let key = f.key();
                let c = self.collected.entry(key.clone()).or_default();
                if c.remove(owner, &f.instructions.apply) {
                    floods.insert(key);
                }
            } else if is_merged(f) {
                if let (Some(parts), Some(id)) = (self.conj.get_mut(&f.key()), id) {
                    parts.retain(|p| *p != id);
                }
                conj_keys.push(f.key());
            } else if !self.quiet {
                delta.change(f.clone(), -1);
            }
        }
        for f in new.iter().filter(|f| !old_set.contains(f)) {
            if f.table == tables::FLOOD {
                let key = f.key();
                let c = self.collected.entry(key.clone()).or_default();
                if c.add(owner, &f.instructions.apply) {
                    floods.insert(key);
                }
            } else if is_merged(f) {
                // New flows have a slot number: their owner exists.
                if let Some(id) = id {
                    let parts = self.conj.entry(f.key()).or_default();
                    if !parts.contains(&id) {
                        parts.push(id);
                    }
                    conj_keys.push(f.key());
                }
            } else if !self.quiet {
                delta.change(f.clone(), 1);
            }
        }
        for key in conj_keys {
            let after = self
                .conj
                .get(&key)
                .and_then(|parts| merge(&key, &self.contributions(&key, parts)));
            if self.conj.get(&key).is_some_and(Parts::is_empty) {
                self.conj.remove(&key);
            }
            self.remerge(key, after, delta);
        }
    }

    /// The owners and instructions of the contributions to the merged flow `key`, for a shared
    /// stage in the order of their slots (its merged flow is its first slot's): each is its
    /// slot's last flow with that identity, as [`Pipeline::full`] takes them.
    fn contributions<'a>(
        &'a self,
        (table, priority, m): &FlowKey,
        parts: &Parts,
    ) -> Vec<(&'a Owner, &'a Instructions)> {
        let mut by_slot: Vec<(&Slot, &Instructions)> = parts
            .iter()
            .filter_map(|id| {
                let contribution =
                    self.owned.get(id)?.iter().rfind(|f| {
                        f.table == *table && f.priority == *priority && f.match_ == *m
                    })?;
                Some((self.reads.slot(*id)?, &contribution.instructions))
            })
            .collect();
        // Only a shared stage's flow depends on the order (conjunctive actions are sorted when
        // merged): a flow with many contributions is not sorted on every change.
        if tables::SHARED.contains(table) {
            by_slot.sort_unstable_by(|a, b| a.0.cmp(b.0));
        }
        by_slot
            .into_iter()
            .map(|((_, owner), ins)| (owner, ins))
            .collect()
    }

    /// Replaces the merged flow of `key` with `after`, noting the change in `delta`.
    fn remerge(&mut self, key: FlowKey, after: Option<Flow>, delta: &mut Delta) {
        let before = match &after {
            Some(f) => self.merged.insert(f.clone()),
            None => self.merged.remove(&key),
        };
        if before != after && !self.quiet {
            if let Some(b) = before {
                delta.change(b, -1);
            }
            if let Some(a) = after {
                delta.change(a, 1);
            }
        }
    }
}

/// What an app computed for one owner: its flows, what it read, its groups.
struct Computed {
    flows: Vec<Flow>,
    reads: Vec<Dep>,
    groups: Vec<Group>,
}

/// Computes one slot from the topology.
fn compute(topo: &Topology, (app, owner): &Slot) -> Computed {
    let mut flows = Vec::new();
    let mut ctx = Ctx::new(topo);
    APPS[*app].flows(&mut ctx, owner, &mut flows);
    let (reads, groups) = ctx.finish();
    Computed {
        flows,
        reads,
        groups,
    }
}

/// Slots from which on their computation is shared out over the machine's cores (a snapshot at
/// start, a network joining): below, a thread costs more than it saves.
const PARALLEL_FROM: usize = 4096;

/// Slots computed at a time by [`Pipeline::apply_all`] (a few chunks of [`PARALLEL_FROM`]).
const COMPUTE_CHUNK: usize = 4 * PARALLEL_FROM;

/// Computes `slots` from the topology, in their order; many at once on several threads (the
/// computation only reads the topology, and taking the results in stays on the caller's).
fn compute_all(topo: &Topology, slots: &[Slot]) -> Vec<Computed> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if slots.len() < PARALLEL_FROM || threads < 2 {
        return slots.iter().map(|s| compute(topo, s)).collect();
    }
    let chunk = slots.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let mut chunks = slots.chunks(chunk);
        let first = chunks.next().unwrap_or_default();
        let others: Vec<_> = chunks
            .map(|c| scope.spawn(move || c.iter().map(|s| compute(topo, s)).collect::<Vec<_>>()))
            .collect();
        let mut all: Vec<Computed> = first.iter().map(|s| compute(topo, s)).collect();
        for handle in others {
            match handle.join() {
                Ok(part) => all.extend(part),
                // A panic in an app is the pipeline's bug: it ends the caller as it would have
                // on one thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    })
}

/// Whether a flow is merged with others of its identity: a conjunctive contribution, a flow of
/// a shared stage, or a contribution to a flood flow.
fn is_merged(f: &Flow) -> bool {
    f.table == tables::FLOOD || is_conjunctive(f) || tables::SHARED.contains(&f.table)
}

/// Whether a flow is a conjunctive contribution: its only actions are `conjunction`s.
fn is_conjunctive(f: &Flow) -> bool {
    let ins = &f.instructions;
    !ins.apply.is_empty()
        && ins
            .apply
            .iter()
            .all(|a| matches!(a, Action::Conjunction { .. }))
        && ins.goto_table.is_none()
        && ins.write_metadata().is_none()
}

/// The one flow the contributions to `key` make (`None` when there are none): a shared stage's
/// flow as its first owner computed it (all compute the same), or the conjunctive
/// contributions' actions together.
fn merge(key: &FlowKey, parts: &[(&Owner, &Instructions)]) -> Option<Flow> {
    let (table, priority, m) = key.clone();
    if tables::SHARED.contains(&table) {
        let (owner, ins) = parts.first()?;
        return Some(apps::flow(owner, table, priority, m, (*ins).clone()));
    }
    let mut actions: Vec<Action> = parts.iter().flat_map(|(_, i)| i.apply.clone()).collect();
    if actions.is_empty() {
        return None;
    }
    actions.sort_by_key(|a| match a {
        Action::Conjunction { id, clause, .. } => (*id, *clause),
        _ => (0, 0),
    });
    actions.dedup();
    // One owner's contributions keep its cookie; several owners' share the fixed one.
    let mut owners = parts.iter().map(|(owner, _)| *owner);
    let first = owners.next()?;
    let owner = if owners.all(|o| o == first) {
        first
    } else {
        &Owner::Static
    };
    Some(apps::flow(
        owner,
        table,
        priority,
        m,
        Instructions::apply(actions),
    ))
}

/// The (app, owner) slots of an owner: one per app that computes flows for its kind.
fn slots_of(owner: Owner) -> impl Iterator<Item = Slot> {
    let kind = OwnerKind::of(&owner);
    APPS.iter()
        .enumerate()
        .filter(move |(_, app)| kind.is_some_and(|k| app.spec().owners.contains(&k)))
        .map(move |(i, _)| (i, owner.clone()))
}
