//! NetworkPolicy → security-group rules, the pure part.
//!
//! A policy becomes one security group holding the rules of the directions it governs (its
//! `policyTypes`, defaulted as Kubernetes does: `Ingress` always, `Egress` when it has egress
//! rules). Peers become rule remotes: `ipBlock` the CIDR minus its excepts as prefixes
//! ([`subtract`]), a `podSelector`/`namespaceSelector` a [`PeerKey`] — the membership security
//! group of the pods it matches, named by the rule's `remote_group_id` — and no peers at all any
//! address. Ports become protocol + port range; a named port is resolved against the container
//! ports of the pods it can name (the selected pods for ingress, the peers' pods for egress).
//! Everything is deterministic and ordered, so a rule set can be diffed against what the API has.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::Error;
use crate::selector::Selector;

/// A rule's direction, seen from the selected pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    /// Traffic to the pod.
    Ingress,
    /// Traffic from the pod.
    Egress,
}

impl Direction {
    /// Neutron's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// An address family (Neutron's `ethertype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Neutron's `ethertype`.
    pub fn ethertype(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The family of a prefix.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// The family of an address.
    pub fn of_ip(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// A transport protocol of a policy port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From Kubernetes' name (`TCP`, `UDP`, `SCTP`).
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Neutron's name.
    pub fn neutron(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// Which namespaces a peer selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NsScope {
    /// The policy's own namespace (a `podSelector` alone).
    Name(String),
    /// The namespaces whose labels match (a `namespaceSelector`).
    Selector(Selector),
}

/// A peer selector: the pods of the namespaces in scope whose labels match `pods`. Its
/// membership security group is shared by every rule naming the same peer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerKey {
    /// The namespaces.
    pub namespaces: NsScope,
    /// The pods in them.
    pub pods: Selector,
}

impl PeerKey {
    /// A readable, canonical description (`ns=default pods=app=web`).
    pub fn describe(&self) -> String {
        match &self.namespaces {
            NsScope::Name(n) => format!("ns={n} pods={}", self.pods),
            NsScope::Selector(s) => format!("ns-selector={s} pods={}", self.pods),
        }
    }

    /// A stable short id (FNV-1a 64 of [`PeerKey::describe`], hex), used in the group's tag.
    pub fn id(&self) -> String {
        format!("{:016x}", fnv1a(self.describe().as_bytes()))
    }

    /// Whether a pod (its namespace, the namespace's labels, its labels) is a member.
    pub fn matches(
        &self,
        namespace: &str,
        ns_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let ns_ok = match &self.namespaces {
            NsScope::Name(n) => n == namespace,
            NsScope::Selector(s) => s.matches(ns_labels),
        };
        ns_ok && self.pods.matches(labels)
    }
}

/// FNV-1a, 64 bits: stable across builds (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Where a rule's traffic may come from or go to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Remote {
    /// Any address.
    Any,
    /// A prefix.
    Prefix(IpNet),
    /// The members of a peer selector's group.
    Peer(PeerKey),
}

/// One security-group rule, as the policy wants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSpec {
    /// Direction.
    pub direction: Direction,
    /// Address family.
    pub family: Family,
    /// Protocol (`None`: any).
    pub protocol: Option<Protocol>,
    /// Port range (`None`: any port).
    pub ports: Option<(u16, u16)>,
    /// The remote end.
    pub remote: Remote,
}

/// What a pod looks like to the policy mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Named container ports: name → (protocol, number).
    pub named_ports: Vec<(String, Protocol, u16)>,
}

/// The cluster as the mapping sees it: the pods that have ports and the namespaces' labels.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Pods.
    pub pods: Vec<PodView>,
    /// Namespace name → labels.
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl ClusterView {
    fn ns_labels(&self, ns: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.namespaces.get(ns).unwrap_or(&EMPTY)
    }

    /// Whether a peer selector matches `pod`.
    pub fn selects(&self, peer: &PeerKey, pod: &PodView) -> bool {
        peer.matches(&pod.namespace, self.ns_labels(&pod.namespace), &pod.labels)
    }

    /// The pods a peer selector matches.
    pub fn members<'a>(&'a self, peer: &'a PeerKey) -> impl Iterator<Item = &'a PodView> + 'a {
        self.pods.iter().filter(move |p| self.selects(peer, p))
    }
}

/// A policy's security group, as computed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRules {
    /// The pods it selects: its namespace and pod selector.
    pub selects: Option<PeerKey>,
    /// It governs ingress of the pods it selects.
    pub ingress: bool,
    /// It governs egress.
    pub egress: bool,
    /// The rules (no duplicates: Neutron answers 409 to a duplicate rule).
    pub rules: BTreeSet<RuleSpec>,
    /// The peer selectors the rules name.
    pub peers: BTreeSet<PeerKey>,
    /// What was skipped, for the log.
    pub skipped: Vec<String>,
}

/// The rules of `policy`. `pod_families` are the families pod addresses have (the pod
/// subnets'): rules naming pods get one rule per family. An invalid pod selector is an error
/// (the whole policy is skipped); invalid peers or ports are skipped and named in
/// [`PolicyRules::skipped`] — fewer allowed peers, never more.
pub fn map_policy(
    policy: &NetworkPolicy,
    cluster: &ClusterView,
    pod_families: &BTreeSet<Family>,
) -> Result<PolicyRules, Error> {
    let ns = policy.metadata.namespace.clone().unwrap_or_default();
    let spec = policy.spec.clone().unwrap_or_default();
    let selects = PeerKey {
        namespaces: NsScope::Name(ns.clone()),
        pods: Selector::parse(&spec.pod_selector.unwrap_or_default())?,
    };
    // Each direction's rules as (peers, ports).
    let ingress_rules: Vec<_> = spec
        .ingress
        .into_iter()
        .flatten()
        .map(|r| (r.from, r.ports))
        .collect();
    let egress_rules: Vec<_> = spec
        .egress
        .into_iter()
        .flatten()
        .map(|r| (r.to, r.ports))
        .collect();
    let (ingress, egress) = match spec.policy_types.as_deref() {
        Some(types) if !types.is_empty() => (
            types.iter().any(|t| t == "Ingress"),
            types.iter().any(|t| t == "Egress"),
        ),
        _ => (true, !egress_rules.is_empty()),
    };
    let mut out = PolicyRules {
        selects: Some(selects.clone()),
        ingress,
        egress,
        ..PolicyRules::default()
    };
    let selected: Vec<&PodView> = cluster.members(&selects).collect();
    for (direction, governed, rules) in [
        (Direction::Ingress, ingress, ingress_rules),
        (Direction::Egress, egress, egress_rules),
    ] {
        if !governed {
            continue;
        }
        for (peers, ports) in rules {
            add_rule(
                &mut out,
                direction,
                &ns,
                &peers.unwrap_or_default(),
                &ports.unwrap_or_default(),
                cluster,
                &selected,
                pod_families,
            );
        }
    }
    Ok(out)
}

/// A protocol (`None`: any) and port range (`None`: any).
type PortSpec = (Option<Protocol>, Option<(u16, u16)>);

/// One ingress or egress rule: the product of its peers and its ports.
#[allow(clippy::too_many_arguments)]
fn add_rule(
    out: &mut PolicyRules,
    direction: Direction,
    ns: &str,
    peers: &[NetworkPolicyPeer],
    ports: &[NetworkPolicyPort],
    cluster: &ClusterView,
    selected: &[&PodView],
    pod_families: &BTreeSet<Family>,
) {
    // The remotes, each with its family.
    let mut remotes: Vec<(Family, Remote)> = Vec::new();
    let mut peer_keys: Vec<PeerKey> = Vec::new();
    if peers.is_empty() {
        remotes.push((Family::V4, Remote::Any));
        remotes.push((Family::V6, Remote::Any));
    }
    for peer in peers {
        match peer_remote(peer, ns) {
            Ok(PeerRemote::Block(prefixes)) => {
                remotes.extend(
                    prefixes
                        .into_iter()
                        .map(|p| (Family::of(&p), Remote::Prefix(p))),
                );
            }
            Ok(PeerRemote::Pods(key)) => {
                for f in pod_families {
                    remotes.push((*f, Remote::Peer(key.clone())));
                }
                peer_keys.push(key);
            }
            Err(e) => out
                .skipped
                .push(format!("{} peer skipped: {e}", direction.as_str())),
        }
    }
    // The ports. Named ports name the destination's container ports: the selected pods' for
    // ingress, the peers' pods for egress (any pod when the rule has no pod peers).
    let mut port_specs: BTreeSet<PortSpec> = BTreeSet::new();
    if ports.is_empty() {
        port_specs.insert((None, None));
    }
    for p in ports {
        let proto_name = p.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = Protocol::parse(proto_name) else {
            out.skipped
                .push(format!("port with unknown protocol {proto_name:?} skipped"));
            continue;
        };
        match &p.port {
            None => {
                port_specs.insert((Some(proto), None));
            }
            Some(IntOrString::Int(n)) => {
                let Ok(start) = u16::try_from(*n) else {
                    out.skipped.push(format!("port {n} out of range, skipped"));
                    continue;
                };
                let end = match p.end_port {
                    None => start,
                    Some(e) => match u16::try_from(e) {
                        Ok(e) if e >= start && start > 0 => e,
                        _ => {
                            out.skipped
                                .push(format!("endPort {e} invalid for port {n}, skipped"));
                            continue;
                        }
                    },
                };
                if start == 0 {
                    out.skipped.push("port 0 skipped".into());
                    continue;
                }
                port_specs.insert((Some(proto), Some((start, end))));
            }
            Some(IntOrString::String(name)) => {
                let candidates: Vec<&PodView> = match direction {
                    Direction::Ingress => selected.to_vec(),
                    Direction::Egress if peer_keys.is_empty() => cluster.pods.iter().collect(),
                    Direction::Egress => cluster
                        .pods
                        .iter()
                        .filter(|pod| {
                            peer_keys.iter().any(|k| {
                                k.matches(
                                    &pod.namespace,
                                    cluster.ns_labels(&pod.namespace),
                                    &pod.labels,
                                )
                            })
                        })
                        .collect(),
                };
                let numbers: BTreeSet<u16> = candidates
                    .iter()
                    .flat_map(|pod| pod.named_ports.iter())
                    .filter(|(n, pr, _)| n == name && *pr == proto)
                    .map(|(_, _, num)| *num)
                    .collect();
                if numbers.is_empty() {
                    out.skipped.push(format!(
                        "named port {name:?}/{proto_name} names no container port (yet), nothing allowed for it"
                    ));
                }
                for n in numbers {
                    port_specs.insert((Some(proto), Some((n, n))));
                }
            }
        }
    }
    out.peers.extend(peer_keys);
    for (family, remote) in &remotes {
        for (protocol, range) in &port_specs {
            out.rules.insert(RuleSpec {
                direction,
                family: *family,
                protocol: *protocol,
                ports: *range,
                remote: remote.clone(),
            });
        }
    }
}

enum PeerRemote {
    Block(Vec<IpNet>),
    Pods(PeerKey),
}

fn peer_remote(peer: &NetworkPolicyPeer, ns: &str) -> Result<PeerRemote, Error> {
    if let Some(block) = &peer.ip_block {
        if peer.pod_selector.is_some() || peer.namespace_selector.is_some() {
            return Err(Error::Invalid(
                "ipBlock may not be combined with selectors".into(),
            ));
        }
        let cidr: IpNet = block
            .cidr
            .parse()
            .map_err(|_| Error::Invalid(format!("ipBlock cidr {:?} is not a CIDR", block.cidr)))?;
        let mut excepts = Vec::new();
        for e in block.except.iter().flatten() {
            let net: IpNet = e
                .parse()
                .map_err(|_| Error::Invalid(format!("ipBlock except {e:?} is not a CIDR")))?;
            excepts.push(net);
        }
        return Ok(PeerRemote::Block(subtract(cidr.trunc(), &excepts)));
    }
    let namespaces = match &peer.namespace_selector {
        Some(s) => NsScope::Selector(Selector::parse(s)?),
        None => NsScope::Name(ns.to_string()),
    };
    let pods = match &peer.pod_selector {
        Some(s) => Selector::parse(s)?,
        None if peer.namespace_selector.is_some() => Selector::everything(),
        None => return Err(Error::Invalid("a peer without ipBlock or selectors".into())),
    };
    Ok(PeerRemote::Pods(PeerKey { namespaces, pods }))
}

/// `cidr` minus `excepts`, as the fewest disjoint prefixes (in address order): a prefix that
/// no except overlaps is kept whole, one inside an except dropped, the others halved.
/// Excepts of the other family or outside `cidr` change nothing.
pub fn subtract(cidr: IpNet, excepts: &[IpNet]) -> Vec<IpNet> {
    let excepts: Vec<IpNet> = excepts
        .iter()
        .map(IpNet::trunc)
        .filter(|e| Family::of(e) == Family::of(&cidr))
        .collect();
    let mut out = Vec::new();
    split(cidr.trunc(), &excepts, &mut out);
    out
}

fn split(net: IpNet, excepts: &[IpNet], out: &mut Vec<IpNet>) {
    let overlapping: Vec<IpNet> = excepts
        .iter()
        .filter(|e| e.contains(&net) || net.contains(*e))
        .copied()
        .collect();
    if overlapping.is_empty() {
        out.push(net);
        return;
    }
    if overlapping.iter().any(|e| e.contains(&net)) {
        return;
    }
    // Some except lies strictly inside `net`, so `net` has halves.
    if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
        for half in halves {
            split(half, &overlapping, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn v4() -> BTreeSet<Family> {
        [Family::V4].into_iter().collect()
    }

    fn policy(v: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(v).unwrap()
    }

    fn pod(ns: &str, labels: &[(&str, &str)], named: &[(&str, u16)]) -> PodView {
        PodView {
            namespace: ns.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            named_ports: named
                .iter()
                .map(|(n, p)| (n.to_string(), Protocol::Tcp, *p))
                .collect(),
        }
    }

    #[test]
    fn default_deny_has_no_rules_and_governs_ingress() {
        let p = policy(json!({"metadata": {"name": "deny", "namespace": "default"},
            "spec": {"podSelector": {}}}));
        let r = map_policy(&p, &ClusterView::default(), &v4()).unwrap();
        assert!(r.ingress);
        assert!(!r.egress);
        assert!(r.rules.is_empty());
        assert!(r.selects.unwrap().pods.is_everything());
    }

    #[test]
    fn policy_types_default_from_egress_rules() {
        let p = policy(json!({"metadata": {"name": "e", "namespace": "default"},
            "spec": {"podSelector": {}, "egress": [{}]}}));
        let r = map_policy(&p, &ClusterView::default(), &v4()).unwrap();
        assert!(r.ingress && r.egress);
        // An empty egress rule: everything, both families.
        assert_eq!(r.rules.len(), 2);
        let p = policy(json!({"metadata": {"name": "e", "namespace": "default"},
            "spec": {"podSelector": {}, "policyTypes": ["Egress"]}}));
        let r = map_policy(&p, &ClusterView::default(), &v4()).unwrap();
        assert!(!r.ingress && r.egress && r.rules.is_empty());
    }

    #[test]
    fn peers_and_ports_multiply() {
        let p = policy(json!({"metadata": {"name": "allow", "namespace": "prod"},
        "spec": {"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"app": "web"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                    {"namespaceSelector": {"matchLabels": {"team": "a"}},
                     "podSelector": {"matchLabels": {"role": "x"}}},
                    {"ipBlock": {"cidr": "192.168.0.0/24", "except": ["192.168.0.128/25"]}}
                ],
                "ports": [{"port": 5432}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]
            }]}}));
        let r = map_policy(&p, &ClusterView::default(), &v4()).unwrap();
        assert_eq!(r.peers.len(), 3);
        // 4 remotes (3 peers in one family, 1 prefix) × 2 ports.
        assert_eq!(r.rules.len(), 8);
        let web = PeerKey {
            namespaces: NsScope::Name("prod".into()),
            pods: Selector::parse(
                &serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap(),
            )
            .unwrap(),
        };
        assert!(r.peers.contains(&web));
        assert!(r.rules.contains(&RuleSpec {
            direction: Direction::Ingress,
            family: Family::V4,
            protocol: Some(Protocol::Udp),
            ports: Some((5000, 5010)),
            remote: Remote::Prefix("192.168.0.0/25".parse().unwrap()),
        }));
        assert!(r.rules.contains(&RuleSpec {
            direction: Direction::Ingress,
            family: Family::V4,
            protocol: Some(Protocol::Tcp),
            ports: Some((5432, 5432)),
            remote: Remote::Peer(web),
        }));
        // Namespace selector alone: every pod of those namespaces.
        let ops = r
            .peers
            .iter()
            .find(|k| matches!(&k.namespaces, NsScope::Selector(s) if s.to_string() == "team=ops"))
            .unwrap();
        assert!(ops.pods.is_everything());
        let mut ops_labels = BTreeMap::new();
        ops_labels.insert("team".to_string(), "ops".to_string());
        assert!(ops.matches("anything", &ops_labels, &BTreeMap::new()));
        assert!(!ops.matches("anything", &BTreeMap::new(), &BTreeMap::new()));
    }

    #[test]
    fn named_ports_resolve_against_the_right_pods() {
        let cluster = ClusterView {
            pods: vec![
                pod("default", &[("app", "db")], &[("sql", 5432)]),
                pod("default", &[("app", "web")], &[("http", 8080)]),
                pod("other", &[("app", "db")], &[("sql", 3306)]),
            ],
            namespaces: BTreeMap::new(),
        };
        let p = policy(json!({"metadata": {"name": "n", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"ports": [{"port": "sql"}, {"port": "http"}]}],
                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                            "ports": [{"port": "http"}]}]}}));
        let r = map_policy(&p, &cluster, &v4()).unwrap();
        let ranges: BTreeSet<(Direction, Option<(u16, u16)>)> =
            r.rules.iter().map(|r| (r.direction, r.ports)).collect();
        // Ingress "sql" resolves on the selected db pod of `default` only; "http" on none.
        assert!(ranges.contains(&(Direction::Ingress, Some((5432, 5432)))));
        assert!(!ranges.contains(&(Direction::Ingress, Some((3306, 3306)))));
        assert!(!ranges.contains(&(Direction::Ingress, Some((8080, 8080)))));
        assert!(ranges.contains(&(Direction::Egress, Some((8080, 8080)))));
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    }

    #[test]
    fn bad_peers_are_skipped_not_fatal() {
        let p = policy(json!({"metadata": {"name": "bad", "namespace": "default"},
            "spec": {"podSelector": {},
                "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}},
                                      {"ipBlock": {"cidr": "10.1.0.0/16"}}]}]}}));
        let r = map_policy(&p, &ClusterView::default(), &v4()).unwrap();
        assert_eq!(r.rules.len(), 1);
        assert_eq!(r.skipped.len(), 1);
        let p = policy(json!({"metadata": {"name": "bad", "namespace": "default"},
            "spec": {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}}));
        assert!(map_policy(&p, &ClusterView::default(), &v4()).is_err());
    }

    #[test]
    fn subtract_examples() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        assert_eq!(subtract(n("10.0.0.0/8"), &[]), vec![n("10.0.0.0/8")]);
        assert_eq!(subtract(n("10.0.0.0/8"), &[n("10.0.0.0/8")]), vec![]);
        assert_eq!(
            subtract(n("10.0.0.0/30"), &[n("10.0.0.1/32")]),
            vec![n("10.0.0.0/32"), n("10.0.0.2/31")]
        );
        assert_eq!(
            subtract(n("10.0.0.0/24"), &[n("11.0.0.0/8")]),
            vec![n("10.0.0.0/24")]
        );
        assert_eq!(subtract(n("::/0"), &[n("::/1")]), vec![n("8000::/1")]);
        assert_eq!(
            subtract(n("10.0.0.0/24"), &[n("fd00::/8")]),
            vec![n("10.0.0.0/24")]
        );
    }

    fn v4net(addr: u32, len: u8) -> IpNet {
        IpNet::V4(
            ipnet::Ipv4Net::new(Ipv4Addr::from(addr), len)
                .unwrap()
                .trunc(),
        )
    }

    proptest! {
        // The prefixes are disjoint and cover exactly the CIDR minus the excepts: checked
        // address by address over the whole block (prefixes of /20 and longer).
        #[test]
        fn subtract_covers_exactly(
            base in any::<u32>(),
            len in 20u8..=32,
            excepts in proptest::collection::vec((any::<u32>(), 0u8..=32), 0..6),
        ) {
            let cidr = v4net(base, len);
            let IpNet::V4(c4) = cidr else { unreachable!() };
            // Excepts inside the CIDR, as Kubernetes requires (and a few outside).
            let excepts: Vec<IpNet> = excepts
                .iter()
                .enumerate()
                .map(|(i, (a, l))| {
                    if i % 3 == 2 {
                        v4net(*a, *l)
                    } else {
                        let l = (*l).max(len);
                        let span = 1u64 << (32 - u32::from(len));
                        let addr = u32::from(c4.network()) + (u64::from(*a) % span) as u32;
                        v4net(addr, l)
                    }
                })
                .collect();
            let out = subtract(cidr, &excepts);
            for (i, a) in out.iter().enumerate() {
                prop_assert!(cidr.contains(a));
                for b in &out[i + 1..] {
                    prop_assert!(!a.contains(b) && !b.contains(a), "{a} and {b} overlap");
                }
            }
            let start = u32::from(c4.network());
            let count = 1u64 << (32 - u32::from(len));
            for off in 0..count {
                let ip = IpAddr::V4(Ipv4Addr::from(start + off as u32));
                let want = !excepts.iter().any(|e| e.contains(&ip));
                let got = out.iter().filter(|p| p.contains(&ip)).count();
                prop_assert_eq!(got, usize::from(want), "{}", ip);
            }
        }
    }
}
