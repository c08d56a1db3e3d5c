//! The northbound store keys the datapath follows, and the one rule saying which of them a sync
//! topic wants.
//!
//! The API server keeps each object under `/r/<collection>/<id>` and each chassis under `/chassis/<id>`
//! (what it is) and `/chassis-up/<id>` (alive: a key on a lease). The sync API serves the kinds in
//! [`Kind`]. [`Topics::wants`] is its membership rule: the server filters snapshots and watches with
//! it, and an agent's replica evaluates it locally to know what a new topic adds to what it holds and
//! what a dropped topic takes away. [`Topic::param`] and [`Topic::from_param`] are the query
//! parameters naming one topic (`network=ID`, `router=ID`, `security_group=ID`, `address_group=ID`,
//! `chassis=ID`, `physnet=NAME`, each optionally `@REV`).

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

/// Networks: `/r/networks/<id>`.
pub const NETWORKS: &str = "/r/networks/";
/// Subnets: `/r/subnets/<id>`, each on the network named by its `network_id`.
pub const SUBNETS: &str = "/r/subnets/";
/// Ports: `/r/ports/<id>`, on the network named by `network_id`, owned by the device in `device_id`
/// (a router's interface and gateway ports name the router), bound to the chassis in
/// `binding:host_id`.
pub const PORTS: &str = "/r/ports/";
/// Routers: `/r/routers/<id>`.
pub const ROUTERS: &str = "/r/routers/";
/// Security groups: `/r/security_groups/<id>`.
pub const SECURITY_GROUPS: &str = "/r/security_groups/";
/// Security group rules: `/r/security_group_rules/<id>`, each in the group named by its
/// `security_group_id`.
pub const SECURITY_GROUP_RULES: &str = "/r/security_group_rules/";
/// Address groups: `/r/address_groups/<id>`.
pub const ADDRESS_GROUPS: &str = "/r/address_groups/";
pub const FLOATING_IPS: &str = "/r/floatingips/";
/// Load balancers (Octavia's API): `/r/loadbalancers/<id>`, on the network named by
/// `vip_network_id`. Their listeners, pools, members and health monitors follow, each carrying its
/// load balancer's VIP network in the internal field `_vip_network_id` (and the load balancer's id
/// in `_loadbalancer_id`; a member its pool's in `_pool_id`, a monitor in `_pool_id` too).
pub const LOADBALANCERS: &str = "/r/loadbalancers/";
/// Listeners: `/r/listeners/<id>`.
pub const LISTENERS: &str = "/r/listeners/";
/// Pools: `/r/pools/<id>`.
pub const POOLS: &str = "/r/pools/";
/// Pool members: `/r/members/<id>`; `_health` holds what a health check found, once agents report it.
pub const MEMBERS: &str = "/r/members/";
/// Health monitors: `/r/healthmonitors/<id>`.
pub const HEALTHMONITORS: &str = "/r/healthmonitors/";
/// Port pairs (networking-sfc's API): `/r/port_pairs/<id>`. Each service function chaining object
/// carries the networks it touches in the internal field `_network_ids` (a list): a port pair its
/// ingress and egress ports' networks, a port pair group its pairs', a flow classifier its logical
/// source and destination ports', a port chain its groups' and classifiers' together.
pub const PORT_PAIRS: &str = "/r/port_pairs/";
/// Port pair groups: `/r/port_pair_groups/<id>`.
pub const PORT_PAIR_GROUPS: &str = "/r/port_pair_groups/";
/// Flow classifiers: `/r/flow_classifiers/<id>`.
pub const FLOW_CLASSIFIERS: &str = "/r/flow_classifiers/";
/// Port chains: `/r/port_chains/<id>`.
pub const PORT_CHAINS: &str = "/r/port_chains/";
/// Trunks (VLAN-aware VMs): `/r/trunks/<id>`, the trunk as the API shows it (`port_id`: the
/// parent port, `sub_ports`: each subport's `port_id`, `segmentation_type`, `segmentation_id`),
/// plus the internal field `_network_ids`: the networks of its parent and subports.
pub const TRUNKS: &str = "/r/trunks/";
/// What a chassis is (tunnel IP, encapsulations): `/chassis/<id>`.
pub const CHASSIS: &str = "/chassis/";
/// That a chassis is alive, on a store lease: `/chassis-up/<id>`.
pub const CHASSIS_UP: &str = "/chassis-up/";
/// The data plane of the chassis a chassis watches over BFD, as it reports them, on its store
/// lease: `/chassis-peers/<reporter>` holding `{"<chassis id>": "up" | "down", ...}`.
pub const CHASSIS_PEERS: &str = "/chassis-peers/";

/// The kinds of keys the sync API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Network,
    Subnet,
    Port,
    Router,
    SecurityGroup,
    SecurityGroupRule,
    AddressGroup,
    FloatingIp,
    LoadBalancer,
    Listener,
    Pool,
    Member,
    HealthMonitor,
    PortPair,
    PortPairGroup,
    FlowClassifier,
    PortChain,
    Trunk,
    Chassis,
    ChassisUp,
    ChassisPeers,
}

impl Kind {
    pub const ALL: [Kind; 21] = [
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::Router,
        Kind::SecurityGroup,
        Kind::SecurityGroupRule,
        Kind::AddressGroup,
        Kind::FloatingIp,
        Kind::LoadBalancer,
        Kind::Listener,
        Kind::Pool,
        Kind::Member,
        Kind::HealthMonitor,
        Kind::PortPair,
        Kind::PortPairGroup,
        Kind::FlowClassifier,
        Kind::PortChain,
        Kind::Trunk,
        Kind::Chassis,
        Kind::ChassisUp,
        Kind::ChassisPeers,
    ];

    /// The prefix of this kind's keys (ends with `/`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Network => NETWORKS,
            Kind::Subnet => SUBNETS,
            Kind::Port => PORTS,
            Kind::Router => ROUTERS,
            Kind::SecurityGroup => SECURITY_GROUPS,
            Kind::SecurityGroupRule => SECURITY_GROUP_RULES,
            Kind::AddressGroup => ADDRESS_GROUPS,
            Kind::FloatingIp => FLOATING_IPS,
            Kind::LoadBalancer => LOADBALANCERS,
            Kind::Listener => LISTENERS,
            Kind::Pool => POOLS,
            Kind::Member => MEMBERS,
            Kind::HealthMonitor => HEALTHMONITORS,
            Kind::PortPair => PORT_PAIRS,
            Kind::PortPairGroup => PORT_PAIR_GROUPS,
            Kind::FlowClassifier => FLOW_CLASSIFIERS,
            Kind::PortChain => PORT_CHAINS,
            Kind::Trunk => TRUNKS,
            Kind::Chassis => CHASSIS,
            Kind::ChassisUp => CHASSIS_UP,
            Kind::ChassisPeers => CHASSIS_PEERS,
        }
    }

    /// The key of the object `id` of this kind.
    pub fn key(self, id: &str) -> String {
        format!("{}{id}", self.prefix())
    }
}

/// The kind and id of a key the sync API serves; `None` for any other key.
pub fn parse(key: &str) -> Option<(Kind, &str)> {
    Kind::ALL
        .into_iter()
        .find_map(|kind| Some((kind, key.strip_prefix(kind.prefix())?)))
}

/// One topic: a network (the network, its subnets and ports), a router (the router and every port
/// whose `device_id` is the router: its interfaces and gateway port), a security group (the group,
/// its rules and every port whose `security_groups` name it), an address group (the address group),
/// or a chassis (the ports bound to it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    Network(String),
    Router(String),
    SecurityGroup(String),
    AddressGroup(String),
    Chassis(String),
    /// The external networks on a physical network (gateway chassis follow them).
    Physnet(String),
}

/// A topic parameter whose part after `@` is not a revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTopic(pub String);

impl fmt::Display for InvalidTopic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not ID or ID@REVISION", self.0)
    }
}

impl std::error::Error for InvalidTopic {}

impl Topic {
    /// The sync API's query parameter naming this topic: `network=ID`, or with `after`,
    /// `network=ID@REV` (the topic's changes only from after revision REV).
    pub fn param(&self, after: Option<u64>) -> String {
        let (name, id) = match self {
            Topic::Network(id) => ("network", id),
            Topic::Router(id) => ("router", id),
            Topic::SecurityGroup(id) => ("security_group", id),
            Topic::AddressGroup(id) => ("address_group", id),
            Topic::Chassis(id) => ("chassis", id),
            Topic::Physnet(name) => ("physnet", name),
        };
        match after {
            Some(rev) => format!("{name}={id}@{rev}"),
            None => format!("{name}={id}"),
        }
    }

    /// The topic a query parameter names, with its start revision if it has one; `None` when `name`
    /// names no topic.
    pub fn from_param(
        name: &str,
        value: &str,
    ) -> Option<Result<(Topic, Option<u64>), InvalidTopic>> {
        let topic: fn(String) -> Topic = match name {
            "network" => Topic::Network,
            "router" => Topic::Router,
            "security_group" => Topic::SecurityGroup,
            "address_group" => Topic::AddressGroup,
            "chassis" => Topic::Chassis,
            "physnet" => Topic::Physnet,
            _ => return None,
        };
        Some(match value.split_once('@') {
            None => Ok((topic(value.to_string()), None)),
            Some((id, rev)) => rev
                .parse()
                .map(|rev| (topic(id.to_string()), Some(rev)))
                .map_err(|_| InvalidTopic(value.to_string())),
        })
    }
}

/// What a sync client follows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topics {
    /// Everything the sync API serves (the other fields then change nothing).
    pub everything: bool,
    /// [`Topic::Network`]s.
    pub networks: BTreeSet<String>,
    /// [`Topic::Router`]s.
    pub routers: BTreeSet<String>,
    /// [`Topic::SecurityGroup`]s.
    pub security_groups: BTreeSet<String>,
    /// [`Topic::AddressGroup`]s.
    pub address_groups: BTreeSet<String>,
    /// The [`Topic::Chassis`] (at most one).
    pub chassis: Option<String>,
    /// [`Topic::Physnet`]s.
    pub physnets: BTreeSet<String>,
}

impl Topics {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    pub fn networks(networks: BTreeSet<String>) -> Self {
        Self {
            networks,
            ..Self::default()
        }
    }

    /// Whether these topics want `key` with `value` (`None`: the key was deleted). Only the kinds in
    /// [`Kind`] are ever wanted; of those, the chassis keys always, and deletions always (a deleted
    /// object no longer says where it was; deleting a key one does not hold is a no-op). Any other
    /// object is wanted when a topic names it: a network, router, security group or address group
    /// by its id, a subnet by its `network_id`, a security group rule by its `security_group_id`, a
    /// port by its `network_id`, its `device_id` (a router), any of its `security_groups` or its
    /// `binding:host_id` (the chassis); a load balancer by its `vip_network_id`, its listeners,
    /// pools, members and monitors by their load balancer's (`_vip_network_id`); a port pair, port
    /// pair group, flow classifier, port chain or trunk by any of the networks it touches
    /// (`_network_ids`).
    pub fn wants(&self, key: &str, value: Option<&Value>) -> bool {
        let Some((kind, id)) = parse(key) else {
            return false;
        };
        let Some(value) = value else {
            return true;
        };
        if self.everything {
            return true;
        }
        let field = |name: &str| value.get(name).and_then(Value::as_str);
        let on_network = || field("network_id").is_some_and(|n| self.networks.contains(n));
        match kind {
            Kind::Chassis | Kind::ChassisUp | Kind::ChassisPeers => true,
            Kind::Network => {
                self.networks.contains(id)
                    || (value.get("router:external") == Some(&Value::Bool(true))
                        && field("provider:physical_network")
                            .is_some_and(|p| self.physnets.contains(p)))
            }
            Kind::Router => self.routers.contains(id),
            Kind::SecurityGroup => self.security_groups.contains(id),
            Kind::AddressGroup => self.address_groups.contains(id),
            Kind::Subnet => on_network(),
            // A floating IP belongs to its external network's topic: followed by every chassis
            // with a router gateway there, it never leaves the topic by being re-associated.
            Kind::FloatingIp => {
                field("floating_network_id").is_some_and(|n| self.networks.contains(n))
            }
            Kind::LoadBalancer => {
                field("vip_network_id").is_some_and(|n| self.networks.contains(n))
            }
            Kind::Listener | Kind::Pool | Kind::Member | Kind::HealthMonitor => {
                field("_vip_network_id").is_some_and(|n| self.networks.contains(n))
            }
            Kind::PortPair
            | Kind::PortPairGroup
            | Kind::FlowClassifier
            | Kind::PortChain
            | Kind::Trunk => value
                .get("_network_ids")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .any(|n| self.networks.contains(n)),
            Kind::SecurityGroupRule => {
                field("security_group_id").is_some_and(|g| self.security_groups.contains(g))
            }
            Kind::Port => {
                on_network()
                    || field("device_id").is_some_and(|d| self.routers.contains(d))
                    || (!self.security_groups.is_empty()
                        && value
                            .get("security_groups")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .any(|g| self.security_groups.contains(g)))
                    || (self.chassis.is_some()
                        && field("binding:host_id") == self.chassis.as_deref())
            }
        }
    }

    /// The fields of an object that [`Topics::wants`] reads.
    pub const MEMBERSHIP_FIELDS: &'static [&'static str] = &[
        "network_id",
        "router:external",
        "provider:physical_network",
        "floating_network_id",
        "vip_network_id",
        "_vip_network_id",
        "_network_ids",
        "security_group_id",
        "device_id",
        "security_groups",
        "binding:host_id",
    ];

    /// `value` cut down to what decides which topics want it ([`Topics::MEMBERSHIP_FIELDS`]):
    /// `wants` answers the same on it, for any topics, and a replica that keeps it instead of
    /// the whole object holds a small part of its size.
    pub fn membership(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(
                Self::MEMBERSHIP_FIELDS
                    .iter()
                    .filter_map(|f| Some(((*f).to_owned(), fields.get(*f)?.clone())))
                    .collect(),
            ),
            // Not an object: nothing to cut.
            other => other.clone(),
        }
    }

    /// [`Topics::membership`] of an object given encoded (JSON), read without decoding its
    /// other fields (they are skipped, not built): a server answering a snapshot decides on
    /// every object of its store. `None` when `encoded` is not one JSON object.
    pub fn membership_of_encoded(encoded: &[u8]) -> Option<Value> {
        // Valid UTF-8 throughout, skipped strings included: the encoding is passed on as it is.
        let text = std::str::from_utf8(encoded).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let fields = serde::Deserializer::deserialize_map(&mut de, membership::Cut).ok()?;
        de.end().ok()?;
        Some(Value::Object(fields))
    }

    /// The named topics (not [`Topics::everything`]).
    pub fn iter(&self) -> impl Iterator<Item = Topic> + '_ {
        let networks = self.networks.iter().cloned().map(Topic::Network);
        let routers = self.routers.iter().cloned().map(Topic::Router);
        let groups = self.security_groups.iter().cloned();
        let address_groups = self.address_groups.iter().cloned();
        let chassis = self.chassis.iter().cloned().map(Topic::Chassis);
        let physnets = self.physnets.iter().cloned().map(Topic::Physnet);
        networks
            .chain(routers)
            .chain(groups.map(Topic::SecurityGroup))
            .chain(address_groups.map(Topic::AddressGroup))
            .chain(chassis)
            .chain(physnets)
    }

    /// Adds `topic` (a chassis replaces the chassis).
    pub fn insert(&mut self, topic: Topic) {
        match topic {
            Topic::Network(id) => {
                self.networks.insert(id);
            }
            Topic::Router(id) => {
                self.routers.insert(id);
            }
            Topic::SecurityGroup(id) => {
                self.security_groups.insert(id);
            }
            Topic::AddressGroup(id) => {
                self.address_groups.insert(id);
            }
            Topic::Chassis(id) => self.chassis = Some(id),
            Topic::Physnet(name) => {
                self.physnets.insert(name);
            }
        }
    }

    pub fn contains(&self, topic: &Topic) -> bool {
        match topic {
            Topic::Network(id) => self.networks.contains(id),
            Topic::Router(id) => self.routers.contains(id),
            Topic::SecurityGroup(id) => self.security_groups.contains(id),
            Topic::AddressGroup(id) => self.address_groups.contains(id),
            Topic::Chassis(id) => self.chassis.as_ref() == Some(id),
            Topic::Physnet(name) => self.physnets.contains(name),
        }
    }

    /// The topics of `self` that `other` does not have.
    pub fn minus(&self, other: &Topics) -> Topics {
        let mut rest = Topics {
            everything: self.everything && !other.everything,
            ..Topics::default()
        };
        for topic in self.iter().filter(|t| !other.contains(t)) {
            rest.insert(topic);
        }
        rest
    }

    /// No topic at all: only the chassis keys (and deletions) are wanted.
    pub fn is_empty(&self) -> bool {
        !self.everything && self.iter().next().is_none()
    }
}

/// Reading [`Topics::MEMBERSHIP_FIELDS`] out of an encoded object.
mod membership {
    use std::fmt;

    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use serde_json::{Map, Value};

    use super::Topics;

    /// Keeps the membership fields of a map and skips the rest.
    pub(super) struct Cut;

    impl<'de> Visitor<'de> for Cut {
        type Value = Map<String, Value>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Map::new();
            while let Some(field) = map.next_key_seed(Field)? {
                match field {
                    Some(name) => {
                        out.insert(name.to_owned(), map.next_value()?);
                    }
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(out)
        }
    }

    /// A key: the membership field it names, if any (no allocation either way).
    struct Field;

    impl<'de> DeserializeSeed<'de> for Field {
        type Value = Option<&'static str>;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl Visitor<'_> for Field {
        type Value = Option<&'static str>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a field name")
        }

        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Topics::MEMBERSHIP_FIELDS.iter().copied().find(|f| *f == v))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    fn topics(networks: &[&str], routers: &[&str], chassis: Option<&str>) -> Topics {
        Topics {
            networks: set(networks),
            routers: set(routers),
            chassis: chassis.map(str::to_string),
            ..Topics::default()
        }
    }

    fn groups(security_groups: &[&str], address_groups: &[&str]) -> Topics {
        Topics {
            security_groups: set(security_groups),
            address_groups: set(address_groups),
            ..Topics::default()
        }
    }

    #[test]
    fn sfc_objects_follow_the_networks_they_touch() {
        let t = topics(&["n1"], &[], None);
        let chain = json!({"id": "c", "_network_ids": ["n0", "n1"]});
        for prefix in [
            PORT_PAIRS,
            PORT_PAIR_GROUPS,
            FLOW_CLASSIFIERS,
            PORT_CHAINS,
            TRUNKS,
        ] {
            let key = format!("{prefix}c");
            assert!(t.wants(&key, Some(&chain)), "{key}");
            assert!(!t.wants(&key, Some(&json!({"_network_ids": ["n2"]}))));
            assert!(!t.wants(&key, Some(&json!({"_network_ids": []}))));
            assert!(t.wants(&key, None), "deletions always");
        }
    }

    #[test]
    fn parses_every_kind_and_nothing_else() {
        for kind in Kind::ALL {
            assert_eq!(parse(&kind.key("x1")), Some((kind, "x1")));
        }
        assert_eq!(parse("/chassis-up/c1"), Some((Kind::ChassisUp, "c1")));
        assert_eq!(parse("/chassis-peers/c1"), Some((Kind::ChassisPeers, "c1")));
        assert_eq!(parse("/chassis/c1"), Some((Kind::Chassis, "c1")));
        assert_eq!(
            parse("/r/security_groups/s1"),
            Some((Kind::SecurityGroup, "s1"))
        );
        assert_eq!(parse("/r/security-groups/s1"), None);
        assert_eq!(parse("/r/floatingips/f1"), Some((Kind::FloatingIp, "f1")));
        assert_eq!(parse("/r/floating_ips/f1"), None);
        assert_eq!(parse("/ipam/10.0.0.1"), None);
    }

    #[test]
    fn network_topic_wants_the_network_its_subnets_and_ports() {
        let t = topics(&["n1"], &[], None);
        let on = |n: &str| json!({"network_id": n});
        assert!(t.wants("/r/networks/n1", Some(&json!({}))));
        assert!(!t.wants("/r/networks/n2", Some(&json!({}))));
        assert!(t.wants("/r/subnets/s1", Some(&on("n1"))));
        assert!(!t.wants("/r/subnets/s2", Some(&on("n2"))));
        assert!(t.wants("/r/ports/p1", Some(&on("n1"))));
        assert!(!t.wants("/r/ports/p2", Some(&on("n2"))));
        assert!(!t.wants("/r/routers/r1", Some(&json!({}))));
        let fip = |n: &str| json!({"floating_network_id": n, "router_id": "r1"});
        assert!(t.wants("/r/floatingips/f1", Some(&fip("n1"))));
        assert!(!t.wants("/r/floatingips/f2", Some(&fip("n2"))));
        let lb = |n: &str| json!({"vip_network_id": n});
        assert!(t.wants("/r/loadbalancers/l1", Some(&lb("n1"))));
        assert!(!t.wants("/r/loadbalancers/l2", Some(&lb("n2"))));
        let child = |n: &str| json!({"_vip_network_id": n, "_loadbalancer_id": "l1"});
        for prefix in [LISTENERS, POOLS, MEMBERS, HEALTHMONITORS] {
            assert!(t.wants(&format!("{prefix}c1"), Some(&child("n1"))));
            assert!(!t.wants(&format!("{prefix}c2"), Some(&child("n2"))));
        }
    }

    #[test]
    fn router_topic_wants_the_router_and_its_ports() {
        let t = topics(&[], &["r1"], None);
        let interface = json!({"network_id": "n9", "device_id": "r1",
            "device_owner": "network:router_interface"});
        let gateway = json!({"network_id": "ext", "device_id": "r1",
            "device_owner": "network:router_gateway"});
        let other = json!({"network_id": "n9", "device_id": "r2"});
        assert!(t.wants("/r/routers/r1", Some(&json!({"name": "x"}))));
        assert!(!t.wants("/r/routers/r2", Some(&json!({"name": "x"}))));
        assert!(t.wants("/r/ports/p1", Some(&interface)));
        assert!(t.wants("/r/ports/p2", Some(&gateway)));
        assert!(!t.wants("/r/ports/p3", Some(&other)));
        // The router's networks are topics of their own.
        assert!(!t.wants("/r/networks/n9", Some(&json!({}))));
        assert!(!t.wants("/r/subnets/s9", Some(&json!({"network_id": "n9"}))));
    }

    #[test]
    fn security_group_topic_wants_the_group_its_rules_and_its_ports() {
        let t = groups(&["sg1"], &[]);
        let rule = |g: &str| json!({"security_group_id": g, "remote_group_id": "sg1"});
        let port = |g: Value| json!({"network_id": "n1", "security_groups": g});
        assert!(t.wants("/r/security_groups/sg1", Some(&json!({}))));
        assert!(!t.wants("/r/security_groups/sg2", Some(&json!({}))));
        assert!(t.wants("/r/security_group_rules/r1", Some(&rule("sg1"))));
        // A rule of another group that only refers to this one belongs to the other group.
        assert!(!t.wants("/r/security_group_rules/r2", Some(&rule("sg2"))));
        assert!(t.wants("/r/ports/p1", Some(&port(json!(["sg0", "sg1"])))));
        assert!(!t.wants("/r/ports/p2", Some(&port(json!(["sg2"])))));
        assert!(!t.wants("/r/ports/p3", Some(&port(json!([])))));
        assert!(!t.wants("/r/ports/p4", Some(&json!({"network_id": "n1"}))));
        assert!(!t.wants("/r/networks/n1", Some(&json!({}))));
        assert!(!t.wants("/r/address_groups/a1", Some(&json!({}))));
        // Ports name groups only through a topic that follows a group.
        assert!(!Topics::default().wants("/r/ports/p1", Some(&port(json!(["sg1"])))));
    }

    #[test]
    fn physnet_topic_wants_the_external_networks_on_it() {
        let t = Topics {
            physnets: set(&["physnet1"]),
            ..Topics::default()
        };
        let net = |physnet: &str, external: bool| json!({"provider:physical_network": physnet, "router:external": external});
        assert!(t.wants("/r/networks/n1", Some(&net("physnet1", true))));
        assert!(!t.wants("/r/networks/n2", Some(&net("physnet1", false))));
        assert!(!t.wants("/r/networks/n3", Some(&net("physnet2", true))));
        // Their subnets and ports come with network topics of their own.
        assert!(!t.wants("/r/subnets/s1", Some(&json!({"network_id": "n1"}))));
    }

    #[test]
    fn address_group_topic_wants_the_address_group() {
        let t = groups(&[], &["a1"]);
        assert!(t.wants("/r/address_groups/a1", Some(&json!({"addresses": []}))));
        assert!(!t.wants("/r/address_groups/a2", Some(&json!({}))));
        let rule = json!({"security_group_id": "sg1", "remote_address_group_id": "a1"});
        assert!(!t.wants("/r/security_group_rules/r1", Some(&rule)));
    }

    #[test]
    fn chassis_topic_wants_the_ports_bound_there() {
        let t = topics(&[], &[], Some("c1"));
        assert!(t.wants("/r/ports/p1", Some(&json!({"binding:host_id": "c1"}))));
        assert!(!t.wants("/r/ports/p2", Some(&json!({"binding:host_id": "c2"}))));
        assert!(!t.wants("/r/ports/p3", Some(&json!({"binding:host_id": ""}))));
        let unbound = topics(&[], &[], None);
        assert!(!unbound.wants("/r/ports/p3", Some(&json!({"binding:host_id": ""}))));
    }

    #[test]
    fn chassis_keys_and_deletions_always_other_keys_never() {
        let none = Topics::default();
        assert!(none.wants("/chassis/c1", Some(&json!({}))));
        assert!(none.wants("/chassis-up/c1", Some(&json!({}))));
        assert!(none.wants("/r/ports/p1", None));
        assert!(none.wants("/r/routers/r1", None));
        assert!(!none.wants("/r/security-groups/s1", None));
        let all = Topics::everything();
        assert!(all.wants("/r/routers/r1", Some(&json!({}))));
        assert!(all.wants("/r/ports/p1", Some(&json!("not an object"))));
        assert!(all.wants("/r/floatingips/f1", Some(&json!({}))));
        assert!(!all.wants("/r/qos_policies/q1", Some(&json!({}))));
    }

    #[test]
    fn params_round_trip_with_and_without_a_start() {
        for topic in [
            Topic::Network("n1".into()),
            Topic::Router("r1".into()),
            Topic::SecurityGroup("sg1".into()),
            Topic::AddressGroup("a1".into()),
            Topic::Chassis("c1".into()),
            Topic::Physnet("physnet1".into()),
        ] {
            for after in [None, Some(42)] {
                let param = topic.param(after);
                let (name, value) = param.split_once('=').unwrap();
                assert_eq!(
                    Topic::from_param(name, value),
                    Some(Ok((topic.clone(), after)))
                );
            }
        }
        assert_eq!(Topic::from_param("all", "1"), None);
        assert_eq!(
            Topic::from_param("network", "n1@soon"),
            Some(Err(InvalidTopic("n1@soon".into())))
        );
    }

    #[test]
    fn set_operations() {
        let with_groups = |mut t: Topics, sgs: &[&str], ags: &[&str]| {
            t.security_groups = set(sgs);
            t.address_groups = set(ags);
            t
        };
        let old = with_groups(
            topics(&["n1", "n2"], &["r1"], Some("c1")),
            &["s1", "s2"],
            &["a1"],
        );
        let new = with_groups(
            topics(&["n2", "n3"], &["r1", "r2"], Some("c2")),
            &["s2", "s3"],
            &["a2"],
        );
        let added = with_groups(topics(&["n3"], &["r2"], Some("c2")), &["s3"], &["a2"]);
        assert_eq!(new.minus(&old), added);
        let removed = with_groups(topics(&["n1"], &[], Some("c1")), &["s1"], &["a1"]);
        assert_eq!(old.minus(&new), removed);
        assert!(old.minus(&old).is_empty());
        let mut grown = old.clone();
        for t in new.minus(&old).iter() {
            grown.insert(t);
        }
        assert!(new.iter().all(|t| grown.contains(&t)));
        assert!(!Topics::everything().is_empty());
        assert!(Topics::everything().minus(&old).everything);
        assert!(!old.minus(&Topics::everything()).everything);
    }

    #[test]
    fn membership_keeps_what_wants_reads() {
        let net = "11111111-1111-4111-8111-111111111111";
        let other = "22222222-2222-4222-8222-222222222222";
        let group = "33333333-3333-4333-8333-333333333333";
        let router = "44444444-4444-4444-8444-444444444444";
        let objects = [
            (
                format!("{PORTS}{other}"),
                json!({"id": other, "name": "p", "network_id": net, "device_id": router,
                       "security_groups": [group], "binding:host_id": "c1",
                       "fixed_ips": [{"ip_address": "10.0.0.5"}], "mac_address": "fa:16:3e:00:00:01"}),
            ),
            (
                format!("{NETWORKS}{other}"),
                json!({"id": other, "router:external": true, "provider:physical_network": "ext",
                       "mtu": 1500}),
            ),
            (
                format!("{SUBNETS}{other}"),
                json!({"id": other, "network_id": net, "cidr": "10.0.0.0/24"}),
            ),
            (
                format!("{SECURITY_GROUP_RULES}{other}"),
                json!({"id": other, "security_group_id": group, "protocol": "tcp"}),
            ),
            (
                format!("{FLOATING_IPS}{other}"),
                json!({"id": other, "floating_network_id": net}),
            ),
            (
                format!("{LOADBALANCERS}{other}"),
                json!({"id": other, "vip_network_id": net}),
            ),
            (
                format!("{POOLS}{other}"),
                json!({"id": other, "_vip_network_id": net}),
            ),
            (
                format!("{TRUNKS}{other}"),
                json!({"id": other, "_network_ids": [other, net]}),
            ),
        ];
        let topic_sets = [
            Topics::default(),
            Topics::networks([net.to_owned()].into()),
            Topics {
                security_groups: [group.to_owned()].into(),
                ..Topics::default()
            },
            Topics {
                routers: [router.to_owned()].into(),
                ..Topics::default()
            },
            Topics {
                chassis: Some("c1".into()),
                physnets: ["ext".to_owned()].into(),
                ..Topics::default()
            },
        ];
        let mut wanted = 0;
        for (key, value) in &objects {
            assert!(parse(key).is_some(), "{key}");
            let cut = Topics::membership(value);
            let encoded = serde_json::to_vec(value).unwrap();
            assert_eq!(
                Topics::membership_of_encoded(&encoded),
                Some(cut.clone()),
                "{key}"
            );
            assert!(
                cut.as_object().unwrap().len() < value.as_object().unwrap().len(),
                "{key}"
            );
            for topics in &topic_sets {
                let wants = topics.wants(key, Some(value));
                assert_eq!(wants, topics.wants(key, Some(&cut)), "{key} {topics:?}");
                wanted += usize::from(wants);
            }
        }
        // The objects are each wanted by some topics (the test would not show a field dropped).
        assert!(wanted >= objects.len(), "{wanted}");
        // Only one JSON object has a membership read from its encoding.
        for bad in [
            &b"[1]"[..],
            b"\"text\"",
            b"{\"network_id\": ",
            b"{} {}",
            b"not json",
            b"{\"x\": \"\xff\"}",
        ] {
            assert_eq!(Topics::membership_of_encoded(bad), None, "{bad:?}");
        }
        let escaped = br#"{"network\u005fid": "n", "x": {"network_id": "inner"}}"#;
        assert_eq!(
            Topics::membership_of_encoded(escaped),
            Some(json!({"network_id": "n"}))
        );
    }
}
