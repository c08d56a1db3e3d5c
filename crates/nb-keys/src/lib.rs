//! The northbound store keys the datapath follows, and the one rule saying which of them a sync
//! topic wants.
//!
//! The API server keeps each object under `/r/<collection>/<id>` and each chassis under `/chassis/<id>`
//! (what it is) and `/chassis-up/<id>` (alive: a key on a lease). The sync API serves the kinds in
//! [`Kind`]. [`Topics::wants`] is its membership rule: the server filters snapshots and watches with
//! it, and an agent's replica evaluates it locally to know what a new topic adds to what it holds and
//! what a dropped topic takes away. [`Topic::param`] and [`Topic::from_param`] are the query
//! parameters naming one topic (`network=ID`, `router=ID`, `chassis=ID`, each optionally `@REV`).

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
/// What a chassis is (tunnel IP, encapsulations): `/chassis/<id>`.
pub const CHASSIS: &str = "/chassis/";
/// That a chassis is alive, on a store lease: `/chassis-up/<id>`.
pub const CHASSIS_UP: &str = "/chassis-up/";

/// The kinds of keys the sync API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Network,
    Subnet,
    Port,
    Router,
    Chassis,
    ChassisUp,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Network,
        Kind::Subnet,
        Kind::Port,
        Kind::Router,
        Kind::Chassis,
        Kind::ChassisUp,
    ];

    /// The prefix of this kind's keys (ends with `/`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Network => NETWORKS,
            Kind::Subnet => SUBNETS,
            Kind::Port => PORTS,
            Kind::Router => ROUTERS,
            Kind::Chassis => CHASSIS,
            Kind::ChassisUp => CHASSIS_UP,
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
/// whose `device_id` is the router: its interfaces and gateway port), or a chassis (the ports bound
/// to it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Topic {
    Network(String),
    Router(String),
    Chassis(String),
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
            Topic::Chassis(id) => ("chassis", id),
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
            "chassis" => Topic::Chassis,
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
    /// The [`Topic::Chassis`] (at most one).
    pub chassis: Option<String>,
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
    /// object no longer says where it was; deleting a key one does not hold is a no-op). A network,
    /// subnet, port or router is wanted when a topic names it: a network by its id, a subnet by its
    /// `network_id`, a router by its id, a port by its `network_id`, its `device_id` (a router) or its
    /// `binding:host_id` (the chassis).
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
            Kind::Chassis | Kind::ChassisUp => true,
            Kind::Network => self.networks.contains(id),
            Kind::Router => self.routers.contains(id),
            Kind::Subnet => on_network(),
            Kind::Port => {
                on_network()
                    || field("device_id").is_some_and(|d| self.routers.contains(d))
                    || (self.chassis.is_some()
                        && field("binding:host_id") == self.chassis.as_deref())
            }
        }
    }

    /// The named topics (not [`Topics::everything`]).
    pub fn iter(&self) -> impl Iterator<Item = Topic> + '_ {
        let networks = self.networks.iter().cloned().map(Topic::Network);
        let routers = self.routers.iter().cloned().map(Topic::Router);
        let chassis = self.chassis.iter().cloned().map(Topic::Chassis);
        networks.chain(routers).chain(chassis)
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
            Topic::Chassis(id) => self.chassis = Some(id),
        }
    }

    pub fn contains(&self, topic: &Topic) -> bool {
        match topic {
            Topic::Network(id) => self.networks.contains(id),
            Topic::Router(id) => self.routers.contains(id),
            Topic::Chassis(id) => self.chassis.as_ref() == Some(id),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn topics(networks: &[&str], routers: &[&str], chassis: Option<&str>) -> Topics {
        Topics {
            everything: false,
            networks: networks.iter().map(|s| s.to_string()).collect(),
            routers: routers.iter().map(|s| s.to_string()).collect(),
            chassis: chassis.map(str::to_string),
        }
    }

    #[test]
    fn parses_every_kind_and_nothing_else() {
        for kind in Kind::ALL {
            assert_eq!(parse(&kind.key("x1")), Some((kind, "x1")));
        }
        assert_eq!(parse("/chassis-up/c1"), Some((Kind::ChassisUp, "c1")));
        assert_eq!(parse("/chassis/c1"), Some((Kind::Chassis, "c1")));
        assert_eq!(parse("/r/security-groups/s1"), None);
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
        assert!(!all.wants("/r/floatingips/f1", Some(&json!({}))));
    }

    #[test]
    fn params_round_trip_with_and_without_a_start() {
        for topic in [
            Topic::Network("n1".into()),
            Topic::Router("r1".into()),
            Topic::Chassis("c1".into()),
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
        let old = topics(&["n1", "n2"], &["r1"], Some("c1"));
        let new = topics(&["n2", "n3"], &["r1", "r2"], Some("c2"));
        assert_eq!(new.minus(&old), topics(&["n3"], &["r2"], Some("c2")));
        assert_eq!(old.minus(&new), topics(&["n1"], &[], Some("c1")));
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
}
