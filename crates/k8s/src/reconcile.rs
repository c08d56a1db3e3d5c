//! One reconcile pass: the wanted Neutron state from a [`Snapshot`], diffed against the
//! controller's view of the API ([`Actual`]), the differences applied.
//!
//! The view is listed from the API (by the cluster tag) at start, after any failed write and
//! every resync interval; between listings each successful write updates it, so a pass costs
//! API calls only for what changed. Every failure is the failing object's alone: it is logged,
//! the object waits out its own backoff (0.5 s doubling to 60 s) and the view is listed again
//! before the next pass. Order within a pass: namespace networks, security groups (groups before
//! rules, rules by diff), ports (create/update, trunk subports, the pod annotation), ports of
//! gone pods, load balancers (listeners, pools and members by diff), then what lost its owner:
//! groups, namespace networks, trunks, half-made objects.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use crate::controller::Snapshot;
use crate::neutron::Neutron;
use crate::policy::{self, ClusterView, Direction, Family, PeerKey, PodView, Protocol, Remote};
use crate::service::{self, LbProtocol, LbSpec};
use crate::{Auth, Config, Error, tags};

/// The pod annotation holding the port's details.
pub const PORT_ANNOTATION: &str = "wyvern.io/port";
/// The node annotation naming its chassis (default: the node's name).
pub const CHASSIS_ANNOTATION: &str = "wyvern.io/chassis";
/// The node annotation naming the port of the VM the node is (nested mode).
pub const TRUNK_PORT_ANNOTATION: &str = "wyvern.io/trunk-port";
/// A pod port's device owner.
pub const DEVICE_OWNER: &str = "compute:kubernetes";

const PORTS: &str = "ports";
const SGS: &str = "security-groups";
const RULES: &str = "security-group-rules";
const LBS: &str = "lbaas/loadbalancers";
const LISTENERS: &str = "lbaas/listeners";
const POOLS: &str = "lbaas/pools";
const TRUNKS: &str = "trunks";
/// At most this many pod annotations are written at once.
const ANNOTATIONS_AT_ONCE: usize = 16;

/// The query of a load balancer's deletion: with its listeners, pools and members.
fn cascade() -> [(&'static str, String); 1] {
    [("cascade", "true".into())]
}

/// A network (and its one subnet) the controller made.
#[derive(Debug, Clone)]
struct NetInfo {
    network_id: String,
    subnet_id: String,
    cidr: IpNet,
    gateway: Option<IpAddr>,
    mtu: Option<u64>,
    /// `k8s-uid` of a namespace's network.
    owner: Option<String>,
}

/// The security groups the controller keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum SgKey {
    AllowIngress,
    AllowEgress,
    Policy(String),
    Peer(String),
}

impl SgKey {
    fn tags(&self, cluster: &str) -> Vec<String> {
        let mut t = vec![tags::cluster(cluster)];
        match self {
            SgKey::AllowIngress => t.push(tags::kind(tags::ALLOW_INGRESS)),
            SgKey::AllowEgress => t.push(tags::kind(tags::ALLOW_EGRESS)),
            SgKey::Policy(uid) => {
                t.push(tags::kind(tags::POLICY));
                t.push(tags::uid(uid));
            }
            SgKey::Peer(id) => {
                t.push(tags::kind(tags::PEER));
                t.push(tags::peer(id));
            }
        }
        t
    }

    fn from_tags(t: &[String]) -> Option<SgKey> {
        match tags::value(t, "k8s-kind")? {
            tags::ALLOW_INGRESS => Some(SgKey::AllowIngress),
            tags::ALLOW_EGRESS => Some(SgKey::AllowEgress),
            tags::POLICY => Some(SgKey::Policy(tags::value(t, "k8s-uid")?.to_string())),
            tags::PEER => Some(SgKey::Peer(tags::value(t, "k8s-peer")?.to_string())),
            _ => None,
        }
    }

    fn backoff_key(&self) -> String {
        format!("sg:{self:?}")
    }
}

/// A rule as the API shows it, reduced to what identifies it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RuleKey {
    direction: String,
    ethertype: String,
    protocol: Option<String>,
    min: Option<u16>,
    max: Option<u16>,
    prefix: Option<IpNet>,
    group: Option<String>,
}

impl RuleKey {
    fn of(rule: &Value) -> RuleKey {
        let s = |k: &str| rule.get(k).and_then(Value::as_str).map(String::from);
        let n = |k: &str| {
            rule.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u16::try_from(v).ok())
        };
        RuleKey {
            direction: s("direction").unwrap_or_default(),
            ethertype: s("ethertype").unwrap_or_default(),
            protocol: s("protocol").map(|p| p.to_lowercase()),
            min: n("port_range_min"),
            max: n("port_range_max"),
            prefix: s("remote_ip_prefix").and_then(|p| p.parse::<IpNet>().ok()),
            group: s("remote_group_id"),
        }
    }

    fn body(&self, sg_id: &str) -> Value {
        json!({
            "security_group_id": sg_id,
            "direction": self.direction,
            "ethertype": self.ethertype,
            "protocol": self.protocol,
            "port_range_min": self.min,
            "port_range_max": self.max,
            "remote_ip_prefix": self.prefix.map(|p| p.to_string()),
            "remote_group_id": self.group,
        })
    }
}

#[derive(Debug, Clone)]
struct SgState {
    id: String,
    rules: HashMap<RuleKey, String>,
}

impl SgState {
    fn of(g: &Value) -> SgState {
        SgState {
            id: str_of(g, "id"),
            rules: g
                .get("security_group_rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| (RuleKey::of(r), str_of(r, "id")))
                .collect(),
        }
    }
}

#[derive(Debug, Clone)]
struct PortState {
    id: String,
    network_id: String,
    mac: String,
    ips: Vec<(IpAddr, String)>,
    security_groups: BTreeSet<String>,
    host: String,
    name: String,
}

impl PortState {
    fn of(p: &Value) -> PortState {
        let s = |k: &str| {
            p.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        PortState {
            id: s("id"),
            network_id: s("network_id"),
            mac: s("mac_address"),
            ips: p
                .get("fixed_ips")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|f| {
                    Some((
                        f.get("ip_address")?.as_str()?.parse().ok()?,
                        f.get("subnet_id")?.as_str()?.to_string(),
                    ))
                })
                .collect(),
            security_groups: p
                .get("security_groups")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
            host: s("binding:host_id"),
            name: s("name"),
        }
    }
}

#[derive(Debug, Clone)]
struct PoolState {
    id: String,
    source_ip: bool,
    members: HashMap<(IpAddr, u16), String>,
}

#[derive(Debug, Clone)]
struct ListenerState {
    id: String,
    pool: Option<PoolState>,
}

#[derive(Debug, Clone)]
struct LbState {
    id: String,
    vip: Option<IpAddr>,
    listeners: HashMap<(LbProtocol, u16), ListenerState>,
}

#[derive(Debug, Clone)]
struct TrunkState {
    id: String,
    /// Subport id → VLAN.
    sub_ports: BTreeMap<String, u16>,
    /// `k8s-uid` of the node it was made for (only trunks the controller made).
    owner: Option<String>,
}

/// The controller's objects as the API has them.
#[derive(Debug, Default)]
struct Actual {
    /// Pod uid → its port.
    ports: HashMap<String, PortState>,
    sgs: HashMap<SgKey, SgState>,
    /// Service uid → its load balancer.
    lbs: HashMap<String, LbState>,
    /// Parent port id → trunk (every trunk, not only the controller's).
    trunks: HashMap<String, TrunkState>,
    /// Objects of ours to delete: duplicates and half-made ones (collection, id).
    strays: Vec<(&'static str, String)>,
}

/// The port annotation written to a pod.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortAnnotation {
    /// The port's id.
    pub port_id: String,
    /// Its MAC.
    pub mac_address: String,
    /// Its addresses with their subnet's prefix length (`10.244.0.5/16`).
    pub ips: Vec<String>,
    /// The subnet's gateway.
    pub gateway: Option<String>,
    /// The network's MTU.
    pub mtu: Option<u64>,
    /// Nested mode: the subport's VLAN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
}

/// What a pod needs.
#[derive(Debug, Clone)]
struct WantPod {
    uid: String,
    namespace: String,
    name: String,
    chassis: String,
    trunk_parent: Option<String>,
    sgs: BTreeSet<SgKey>,
    annotation: Option<String>,
}

impl WantPod {
    /// `<namespace>/<name>`: its port's name.
    fn full_name(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn backoff_key(&self) -> String {
        format!("pod:{}", self.full_name())
    }
}

/// What a pass wants.
#[derive(Debug, Default)]
struct Wanted {
    pods: Vec<WantPod>,
    sgs: BTreeMap<SgKey, (String, BTreeSet<policy::RuleSpec>)>,
    lbs: BTreeMap<String, LbSpec>,
    namespaces: BTreeMap<String, String>,
    /// The VM ports nodes name in their trunk annotation.
    trunk_parents: HashSet<String>,
}

/// The reconciler: configuration, clients, the view of the API and the backoffs.
pub(crate) struct Reconciler {
    cfg: Config,
    neutron: Neutron,
    kube: kube::Client,
    /// The cluster-wide pod network (not in network-per-namespace mode).
    pod_net: Option<NetInfo>,
    /// Namespace name → its network (network-per-namespace mode).
    ns_nets: BTreeMap<String, NetInfo>,
    svc_net: Option<NetInfo>,
    router_id: String,
    actual: Actual,
    dirty: bool,
    listed: Option<Instant>,
    backoff: HashMap<String, (u32, Instant)>,
    /// Log lines said once per distinct text (skipped ports, bad policies, ...).
    said: HashSet<String>,
}

fn str_of(v: &Value, k: &str) -> String {
    v.get(k)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

impl Reconciler {
    pub(crate) fn new(cfg: Config, kube: kube::Client) -> Result<Reconciler, Error> {
        let headers = match &cfg.auth {
            Auth::Token(t) => vec![("X-Auth-Token", t.clone())],
            Auth::Project(p) => vec![("X-Project-Id", p.clone()), ("X-Roles", "admin".into())],
        };
        let neutron = Neutron::new(&cfg.api_url, headers)?;
        Ok(Reconciler {
            cfg,
            neutron,
            kube,
            pod_net: None,
            ns_nets: BTreeMap::new(),
            svc_net: None,
            router_id: String::new(),
            actual: Actual::default(),
            dirty: true,
            listed: None,
            backoff: HashMap::new(),
            said: HashSet::new(),
        })
    }

    fn cluster_tag(&self) -> String {
        tags::cluster(&self.cfg.cluster_name)
    }

    fn marker(&self) -> String {
        tags::marker(&self.cfg.cluster_name)
    }

    fn say_once(&mut self, text: String) {
        if self.said.insert(text.clone()) {
            tracing::warn!("{text}");
        }
    }

    // ---- backoff ----

    fn due(&self, key: &str) -> bool {
        self.backoff
            .get(key)
            .is_none_or(|(_, at)| *at <= Instant::now())
    }

    fn failed(&mut self, key: &str, e: &Error) {
        let n = self.backoff.get(key).map_or(0, |(n, _)| *n);
        let delay = Duration::from_millis(500)
            .saturating_mul(1 << n.min(7))
            .min(Duration::from_secs(60));
        tracing::warn!("{key}: {e}; retrying in {delay:?}");
        self.backoff
            .insert(key.to_string(), (n + 1, Instant::now() + delay));
        self.dirty = true;
    }

    fn ok(&mut self, key: &str) {
        self.backoff.remove(key);
    }

    /// Books the outcome of `key`'s write: its backoff cleared, or (logged) lengthened.
    /// Whether the write succeeded.
    fn settle(&mut self, key: &str, r: Result<(), Error>) -> bool {
        match r {
            Ok(()) => {
                self.ok(key);
                true
            }
            Err(e) => {
                self.failed(key, &e);
                false
            }
        }
    }

    /// Deletes `id` from `collection` (with `query`) if `key`'s backoff is due, and books the
    /// outcome. Whether it is gone.
    async fn delete_when_due(
        &mut self,
        key: &str,
        collection: &str,
        id: &str,
        query: &[(&str, String)],
    ) -> bool {
        if !self.due(key) {
            return false;
        }
        let r = self.neutron.delete(collection, id, query).await;
        self.settle(key, r)
    }

    /// Creates an object of a kind Neutron tags only after its creation: with the marker
    /// description (so a crash before the tagging leaves it recognisable as half-made), then
    /// tagged with `tags`. The create response is returned (without the tags); a failed tagging
    /// gives the error with the untagged object's id.
    async fn create_then_tag(
        &self,
        collection: &str,
        singular: &str,
        mut body: Value,
        tags: &[String],
    ) -> Result<Value, (Error, Option<String>)> {
        body["description"] = json!(self.marker());
        let obj = self
            .neutron
            .create(collection, singular, body)
            .await
            .map_err(|e| (e, None))?;
        let id = str_of(&obj, "id");
        self.neutron
            .set_tags(collection, &id, tags)
            .await
            .map_err(|e| (e, Some(id)))?;
        Ok(obj)
    }

    // ---- set-up: networks, subnets, router ----

    /// Ensures the pod network (cluster-wide mode), the service network and the router with
    /// their interfaces, finding them by tags; raises quotas if asked.
    pub(crate) async fn setup(&mut self) -> Result<(), Error> {
        if self.cfg.unlimited_quotas
            && let Some(p) = &self.cfg.project_id
        {
            self.neutron
                .set_quotas(
                    p,
                    json!({"network": -1, "subnet": -1, "port": -1, "security_group": -1,
                           "security_group_rule": -1, "router": -1}),
                )
                .await?;
        }
        let router = self
            .ensure_one(
                "routers",
                "router",
                vec![tags::kind(tags::ROUTER)],
                json!({"name": format!("k8s-{}", self.cfg.cluster_name)}),
            )
            .await?;
        self.router_id = str_of(&router, "id");
        // Service subnet: the gateway is the last usable address and the pool one address below
        // it, so the API server's cluster IPs (handed out from the bottom, or at random) are free
        // to be VIPs: VIP ports name their address.
        let svc = self.cfg.service_cidr;
        let hosts: Vec<IpAddr> = svc.hosts().collect::<Vec<_>>();
        let (gw, pool) = match hosts.as_slice() {
            [.., p, g] => (*g, *p),
            _ => return Err(Error::Config("--service-cidr is too small".into())),
        };
        let svc_net = self
            .ensure_net(
                tags::SERVICE_NETWORK,
                tags::SERVICE_SUBNET,
                &format!("k8s-{}-services", self.cfg.cluster_name),
                svc,
                Some((gw, pool)),
                vec![],
                None,
            )
            .await?;
        self.svc_net = Some(svc_net);
        if let Some(wanted) = self.cfg.pod_network.clone() {
            let net = self.shared_pod_net(&wanted).await?;
            // Policies' address family and the members' subnet follow the subnet's CIDR.
            self.cfg.pod_cidr = net.cidr;
            self.pod_net = Some(net);
        } else if !self.cfg.network_per_namespace {
            let net = self
                .ensure_net(
                    tags::POD_NETWORK,
                    tags::POD_SUBNET,
                    &format!("k8s-{}-pods", self.cfg.cluster_name),
                    self.cfg.pod_cidr,
                    None,
                    vec![],
                    None,
                )
                .await?;
            self.pod_net = Some(net);
        } else {
            self.list_ns_nets().await?;
        }
        Ok(())
    }

    /// The one object of `collection` with the cluster tag and `extra` tags; made (with
    /// `body`, the marker description, then the tags) if there is none. One created but not
    /// tagged (a crash between the two) is found by name and description and tagged.
    async fn ensure_one(
        &self,
        collection: &str,
        singular: &str,
        extra: Vec<String>,
        body: Value,
    ) -> Result<Value, Error> {
        let mut want = vec![self.cluster_tag()];
        want.extend(extra);
        let found = self
            .neutron
            .list(collection, &[("tags", want.join(","))])
            .await?;
        if let Some(obj) = found.into_iter().next() {
            return Ok(obj);
        }
        let name = str_of(&body, "name");
        let half = self
            .neutron
            .list(
                collection,
                &[("name", name.clone()), ("description", self.marker())],
            )
            .await?;
        match half.into_iter().find(|o| tags::of(o).is_empty()) {
            Some(obj) => {
                self.neutron
                    .set_tags(collection, &str_of(&obj, "id"), &want)
                    .await?;
                Ok(obj)
            }
            None => self
                .create_then_tag(collection, singular, body, &want)
                .await
                .map_err(|(e, _)| e),
        }
    }

    /// A network with one subnet, plugged into the router.
    #[allow(clippy::too_many_arguments)]
    async fn ensure_net(
        &self,
        net_kind: &str,
        subnet_kind: &str,
        name: &str,
        cidr: IpNet,
        gateway_and_pool: Option<(IpAddr, IpAddr)>,
        extra: Vec<String>,
        owner: Option<String>,
    ) -> Result<NetInfo, Error> {
        let mut net_tags = vec![tags::kind(net_kind)];
        net_tags.extend(extra.clone());
        let net = self
            .ensure_one("networks", "network", net_tags, json!({"name": name}))
            .await?;
        let network_id = str_of(&net, "id");
        let mut sub_tags = vec![tags::kind(subnet_kind)];
        sub_tags.extend(extra);
        let mut body = json!({"name": name, "network_id": network_id, "cidr": cidr.to_string(),
            "ip_version": if matches!(cidr, IpNet::V4(_)) { 4 } else { 6 }});
        if let Some((gw, pool)) = gateway_and_pool {
            body["gateway_ip"] = json!(gw.to_string());
            body["allocation_pools"] =
                json!([{"start": pool.to_string(), "end": pool.to_string()}]);
        }
        let subnet = self.ensure_one("subnets", "subnet", sub_tags, body).await?;
        let subnet_id = str_of(&subnet, "id");
        // The router's interface on it.
        let ifaces = self
            .neutron
            .list(PORTS, &[("device_id", self.router_id.clone())])
            .await?;
        let plugged = ifaces
            .iter()
            .flat_map(fixed_ips)
            .any(|(s, _)| s == subnet_id);
        if !plugged {
            self.neutron
                .action(
                    "routers",
                    &self.router_id,
                    "add_router_interface",
                    json!({"subnet_id": subnet_id}),
                )
                .await?;
        }
        let net = self
            .neutron
            .list("networks", &[("id", network_id.clone())])
            .await?;
        Ok(NetInfo {
            network_id,
            subnet_id,
            cidr: str_of(&subnet, "cidr").parse().unwrap_or(cidr),
            gateway: str_of(&subnet, "gateway_ip").parse().ok(),
            mtu: net
                .first()
                .and_then(|n| n.get("mtu"))
                .and_then(Value::as_u64),
            owner,
        })
    }

    /// The existing network `wanted` (`--pod-network`: a name, else an id) and its IPv4 subnet
    /// (`--pod-subnet`, or its only one), with the controller's router plugged into the subnet.
    /// The network is not the controller's: it is never tagged, changed or deleted, and what
    /// the controller adds to it (pod ports, the router's interface) is all it touches.
    ///
    /// The router joins at the subnet's gateway address when no port holds it (Neutron's
    /// `add_router_interface` by subnet): the VMs' and pods' default gateway is then the
    /// controller's router. When another router (or any port) holds it, or the subnet has no
    /// gateway, the router joins through a port of its own (`k8s-<cluster>-router`, an address
    /// from the subnet's pool) and the gateway stays the other router's. Cluster IPs are
    /// reached from every port of the network either way: a VIP is balanced in the client's own
    /// chassis on every network of a router on the VIP's network, whatever next hop the client
    /// sent the packet to. Pods get the subnet's gateway (the router's own address on a subnet
    /// without one).
    async fn shared_pod_net(&self, wanted: &str) -> Result<NetInfo, Error> {
        let mut nets = self
            .neutron
            .list("networks", &[("name", wanted.to_string())])
            .await?;
        if nets.is_empty() {
            nets = match self
                .neutron
                .list("networks", &[("id", wanted.to_string())])
                .await
            {
                Ok(n) => n,
                Err(e) if e.status() == Some(400) => Vec::new(),
                Err(e) => return Err(e),
            };
        }
        let net = only_one(
            nets,
            format!("--pod-network {wanted}: no such network (yet)"),
            format!("--pod-network {wanted}: several networks have that name; give its id"),
        )?;
        let network_id = str_of(&net, "id");
        let subnets: Vec<Value> = self
            .neutron
            .list("subnets", &[("network_id", network_id.clone())])
            .await?
            .into_iter()
            .filter(|s| s.get("ip_version").and_then(Value::as_u64) == Some(4))
            .collect();
        let subnet = match &self.cfg.pod_subnet {
            Some(w) => subnets
                .iter()
                .find(|s| str_of(s, "id") == *w)
                .or_else(|| subnets.iter().find(|s| str_of(s, "name") == *w))
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "--pod-subnet {w}: no IPv4 subnet of that name or id on network {wanted}"
                    ))
                })?,
            None => only_one(
                subnets,
                format!("--pod-network {wanted} has no IPv4 subnet (yet)"),
                format!(
                    "--pod-network {wanted} has several IPv4 subnets: name one with --pod-subnet"
                ),
            )?,
        };
        let subnet_id = str_of(&subnet, "id");
        let cidr: IpNet = str_of(&subnet, "cidr")
            .parse()
            .map_err(|_| Error::Invalid(format!("subnet {subnet_id} has no CIDR")))?;
        let svc = self.cfg.service_cidr;
        if cidr.contains(&svc.network()) || svc.contains(&cidr.network()) {
            return Err(Error::Config(format!(
                "the pod subnet {cidr} and --service-cidr {svc} overlap"
            )));
        }
        let gateway: Option<IpAddr> = str_of(&subnet, "gateway_ip").parse().ok();
        let router_ip = self
            .join_shared_subnet(&network_id, &subnet_id, cidr, gateway)
            .await?;
        Ok(NetInfo {
            network_id,
            subnet_id,
            cidr,
            gateway: gateway.or(router_ip),
            mtu: net.get("mtu").and_then(Value::as_u64),
            owner: None,
        })
    }

    /// Plugs the router into the shared pod subnet (`subnet_id` of `network_id`) unless it
    /// is plugged already: at the subnet's gateway if no port holds it, else through a port of
    /// its own (see [`Reconciler::shared_pod_net`]). Returns the router's address there.
    async fn join_shared_subnet(
        &self,
        network_id: &str,
        subnet_id: &str,
        cidr: IpNet,
        gateway: Option<IpAddr>,
    ) -> Result<Option<IpAddr>, Error> {
        let ifaces = self
            .neutron
            .list(PORTS, &[("device_id", self.router_id.clone())])
            .await?;
        if let Some(ip) = address_on(&ifaces, subnet_id) {
            return Ok(Some(ip));
        }
        let on_net = self
            .neutron
            .list(PORTS, &[("network_id", network_id.to_string())])
            .await?;
        let holder = gateway.and_then(|g| {
            on_net
                .iter()
                .find(|p| fixed_ips(p).iter().any(|(_, ip)| *ip == Some(g)))
        });
        let interface = match (gateway, holder) {
            (Some(g), None) => {
                tracing::info!(
                    "router k8s-{} joins the pod subnet {cidr} at its gateway {g}",
                    self.cfg.cluster_name
                );
                json!({"subnet_id": subnet_id})
            }
            (_, holder) => {
                // A port of the router's own (one left by a crash before it was plugged
                // is reused).
                let name = format!("k8s-{}-router", self.cfg.cluster_name);
                let port = match on_net.iter().find(|p| {
                    str_of(p, "name") == name
                        && str_of(p, "device_id").is_empty()
                        && fixed_ips(p).iter().any(|(s, _)| *s == subnet_id)
                }) {
                    Some(p) => p.clone(),
                    None => {
                        self.neutron
                            .create(
                                PORTS,
                                "port",
                                json!({"network_id": network_id, "name": name,
                                    "fixed_ips": [{"subnet_id": subnet_id}]}),
                            )
                            .await?
                    }
                };
                let port_id = str_of(&port, "id");
                let by = holder.map_or_else(
                    || "the subnet has no gateway".to_string(),
                    |h| {
                        format!(
                            "its gateway {} is held by {} {}",
                            gateway.map(|g| g.to_string()).unwrap_or_default(),
                            str_of(h, "device_owner"),
                            str_of(h, "device_id")
                        )
                    },
                );
                tracing::info!(
                    "router k8s-{} joins the pod subnet {cidr} through port {port_id} ({by}); \
                     the network's ports keep their gateway and reach cluster IPs all the same",
                    self.cfg.cluster_name
                );
                json!({"port_id": port_id})
            }
        };
        let info = self
            .neutron
            .action(
                "routers",
                &self.router_id,
                "add_router_interface",
                interface,
            )
            .await?;
        let port_id = str_of(&info, "port_id");
        let ports = self.neutron.list(PORTS, &[("id", port_id)]).await?;
        Ok(address_on(&ports, subnet_id))
    }

    /// The namespace networks that exist (network-per-namespace mode).
    async fn list_ns_nets(&mut self) -> Result<(), Error> {
        let want = [self.cluster_tag(), tags::kind(tags::POD_SUBNET)].join(",");
        let subnets = self.neutron.list("subnets", &[("tags", want)]).await?;
        let nets = self
            .neutron
            .list(
                "networks",
                &[(
                    "tags",
                    [self.cluster_tag(), tags::kind(tags::POD_NETWORK)].join(","),
                )],
            )
            .await?;
        self.ns_nets.clear();
        for s in &subnets {
            let t = tags::of(s);
            let Some(ns) = tags::value(&t, "k8s-namespace") else {
                continue;
            };
            let network_id = str_of(s, "network_id");
            let net = nets.iter().find(|n| str_of(n, "id") == network_id);
            self.ns_nets.insert(
                ns.to_string(),
                NetInfo {
                    network_id,
                    subnet_id: str_of(s, "id"),
                    cidr: str_of(s, "cidr").parse().unwrap_or(self.cfg.pod_cidr),
                    gateway: str_of(s, "gateway_ip").parse().ok(),
                    mtu: net.and_then(|n| n.get("mtu")).and_then(Value::as_u64),
                    owner: tags::value(&t, "k8s-uid").map(String::from),
                },
            );
        }
        Ok(())
    }

    // ---- listing the actual state ----

    async fn relist(&mut self) -> Result<(), Error> {
        let cluster = self.cluster_tag();
        let by_cluster = [("tags", cluster.clone())];
        let by_marker = [("description", self.marker())];
        let mut actual = Actual::default();
        // Ports.
        for p in self.neutron.list(PORTS, &by_cluster).await? {
            let t = tags::of(&p);
            let Some(uid) = tags::value(&t, "k8s-pod-uid") else {
                continue;
            };
            if actual.ports.contains_key(uid) {
                actual.strays.push((PORTS, str_of(&p, "id")));
            } else {
                actual.ports.insert(uid.to_string(), PortState::of(&p));
            }
        }
        // Security groups with their rules.
        for g in self.neutron.list(SGS, &by_cluster).await? {
            let Some(key) = SgKey::from_tags(&tags::of(&g)) else {
                continue;
            };
            match actual.sgs.entry(key) {
                Entry::Occupied(_) => actual.strays.push((SGS, str_of(&g, "id"))),
                Entry::Vacant(e) => {
                    e.insert(SgState::of(&g));
                }
            }
        }

        // Half-made (created, never tagged) groups, and ports of a controller from before ports
        // took their tags in the create request (it gave them the marker description; a port
        // made now has no description, so this lists only such leftovers).
        for (collection, kind) in [(PORTS, PORTS), (SGS, SGS)] {
            for o in self.neutron.list(collection, &by_marker).await? {
                if !tags::of(&o).contains(&cluster) {
                    actual.strays.push((kind, str_of(&o, "id")));
                }
            }
        }
        // Load balancers.
        let lbs = self.neutron.list(LBS, &by_cluster).await?;
        let listeners = self.neutron.list(LISTENERS, &by_cluster).await?;
        let pools = self.neutron.list(POOLS, &by_cluster).await?;
        let mut lb_of: HashMap<String, String> = HashMap::new();
        for lb in &lbs {
            let t = tags::of(lb);
            let Some(uid) = tags::value(&t, "k8s-uid") else {
                continue;
            };
            let id = str_of(lb, "id");
            if actual.lbs.contains_key(uid) {
                actual.strays.push((LBS, id));
                continue;
            }
            lb_of.insert(id.clone(), uid.to_string());
            actual.lbs.insert(
                uid.to_string(),
                LbState {
                    id,
                    vip: str_of(lb, "vip_address").parse().ok(),
                    listeners: HashMap::new(),
                },
            );
        }
        let mut listener_at: HashMap<String, (String, (LbProtocol, u16))> = HashMap::new();
        for l in &listeners {
            let lb_id = str_of(l, "loadbalancer_id");
            let lb_id = if lb_id.is_empty() {
                l.get("loadbalancers")
                    .and_then(|v| v.get(0))
                    .map(|v| str_of(v, "id"))
                    .unwrap_or_default()
            } else {
                lb_id
            };
            let Some(uid) = lb_of.get(&lb_id) else {
                continue;
            };
            let Some(proto) = LbProtocol::parse(&str_of(l, "protocol")) else {
                continue;
            };
            let Some(port) = l
                .get("protocol_port")
                .and_then(Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            let id = str_of(l, "id");
            if let Some(lb) = actual.lbs.get_mut(uid) {
                lb.listeners.insert(
                    (proto, port),
                    ListenerState {
                        id: id.clone(),
                        pool: None,
                    },
                );
            }
            listener_at.insert(id, (uid.clone(), (proto, port)));
        }
        for p in &pools {
            let listener = p
                .get("listeners")
                .and_then(Value::as_array)
                .and_then(|l| l.first())
                .map(|l| str_of(l, "id"))
                .unwrap_or_default();
            let Some((uid, at)) = listener_at.get(&listener) else {
                continue;
            };
            let pool_id = str_of(p, "id");
            let members = self
                .neutron
                .list(&format!("{POOLS}/{pool_id}/members"), &[])
                .await?
                .iter()
                .filter_map(|m| {
                    let ip: IpAddr = str_of(m, "address").parse().ok()?;
                    let port = u16::try_from(m.get("protocol_port")?.as_u64()?).ok()?;
                    Some(((ip, port), str_of(m, "id")))
                })
                .collect();
            let source_ip = p
                .get("session_persistence")
                .and_then(|s| s.get("type"))
                .and_then(Value::as_str)
                == Some("SOURCE_IP");
            if let Some(l) = actual
                .lbs
                .get_mut(uid)
                .and_then(|lb| lb.listeners.get_mut(at))
            {
                l.pool = Some(PoolState {
                    id: pool_id,
                    source_ip,
                    members,
                });
            }
        }
        // Trunks (all of them: a node's trunk may have been made by its operator).
        match self.neutron.list(TRUNKS, &[]).await {
            Ok(trunks) => {
                for t in trunks {
                    let tg = tags::of(&t);
                    let ours = tg.contains(&cluster);
                    actual.trunks.insert(
                        str_of(&t, "port_id"),
                        TrunkState {
                            id: str_of(&t, "id"),
                            sub_ports: sub_ports_of(&t),
                            owner: if ours {
                                tags::value(&tg, "k8s-uid").map(String::from)
                            } else {
                                None
                            },
                        },
                    );
                }
            }
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
        if self.cfg.network_per_namespace {
            self.list_ns_nets().await?;
        }
        self.actual = actual;
        self.dirty = false;
        self.listed = Some(Instant::now());
        Ok(())
    }

    // ---- the pass ----

    /// One pass; returns how long to wait at most before the next.
    pub(crate) async fn pass(&mut self, snap: &Snapshot) -> Duration {
        let resync_due = self.listed.is_none_or(|at| at.elapsed() >= self.cfg.resync);
        if (self.dirty || resync_due)
            && let Err(e) = self.relist().await
        {
            tracing::warn!("listing the Neutron state: {e}");
            return Duration::from_secs(1);
        }
        let wanted = self.wanted(snap);
        if self.cfg.network_per_namespace {
            self.sync_ns_nets(&wanted).await;
        }
        self.sync_sgs(&wanted).await;
        self.sync_ports(&wanted, None).await;
        self.sync_lbs(&wanted).await;
        self.delete_sgs(&wanted).await;
        if self.cfg.network_per_namespace {
            self.delete_ns_nets(&wanted).await;
        }
        self.delete_trunks(&wanted).await;
        self.delete_strays().await;
        let now = Instant::now();
        let next = self
            .backoff
            .values()
            .map(|(_, at)| at.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::MAX);
        let resync = self.listed.map_or(Duration::ZERO, |at| {
            self.cfg.resync.saturating_sub(at.elapsed())
        });
        next.min(resync).max(Duration::from_millis(50))
    }

    /// Whether the next pass must be a full one: the view is to be listed again (a write
    /// failed, or the resync interval is over).
    pub(crate) fn needs_full_pass(&self) -> bool {
        self.dirty || self.listed.is_none_or(|at| at.elapsed() >= self.cfg.resync)
    }

    /// The reconcile of pod events: the ports (create, update, annotation, deletion) of the pods
    /// with these uids only, after the groups (a pod's labels or named ports can change a
    /// policy's rules: a diff that costs no request when nothing changed). Load balancers
    /// follow endpoint slices (their own events), leftovers wait for the next full pass.
    pub(crate) async fn pods_pass(&mut self, snap: &Snapshot, uids: &HashSet<String>) {
        let wanted = self.wanted(snap);
        self.sync_sgs(&wanted).await;
        self.sync_ports(&wanted, Some(uids)).await;
    }

    /// The wanted state.
    fn wanted(&mut self, snap: &Snapshot) -> Wanted {
        let mut w = Wanted::default();
        let mut cluster = ClusterView::default();
        for ns in &snap.namespaces {
            let Some(name) = &ns.metadata.name else {
                continue;
            };
            if let Some(uid) = &ns.metadata.uid {
                w.namespaces.insert(name.clone(), uid.clone());
            }
            cluster
                .namespaces
                .insert(name.clone(), ns.metadata.labels.clone().unwrap_or_default());
        }
        let nodes = placements(&snap.nodes);
        w.trunk_parents = nodes.values().filter_map(|(_, t)| t.clone()).collect();
        // The pods that get ports.
        for pod in &snap.pods {
            let Some(node) = wants_port(pod) else {
                continue;
            };
            let (chassis, trunk_parent) = nodes
                .get(node)
                .cloned()
                .unwrap_or_else(|| (node.to_string(), None));
            let m = &pod.metadata;
            w.pods.push(WantPod {
                uid: m.uid.clone().unwrap_or_default(),
                namespace: m.namespace.clone().unwrap_or_default(),
                name: m.name.clone().unwrap_or_default(),
                chassis,
                trunk_parent,
                sgs: BTreeSet::new(),
                annotation: m
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(PORT_ANNOTATION))
                    .cloned(),
            });
            cluster.pods.push(pod_view(pod));
        }
        w.sgs = self.wanted_sgs(&snap.policies, &cluster, &mut w.pods);
        w.lbs = self.wanted_lbs(snap);
        w
    }

    /// The security groups `policies` need, each pod of `pods` (seen by the policies as the
    /// same index of `cluster.pods`) given the groups it is to be in: the groups of the
    /// policies that select it, the membership groups of the peers it matches, and the
    /// allow-all group of each direction no policy governs for it.
    fn wanted_sgs(
        &mut self,
        policies: &[Arc<NetworkPolicy>],
        cluster: &ClusterView,
        pods: &mut [WantPod],
    ) -> BTreeMap<SgKey, (String, BTreeSet<policy::RuleSpec>)> {
        let mut sgs = BTreeMap::new();
        let families: BTreeSet<Family> = [Family::of(&self.cfg.pod_cidr)].into_iter().collect();
        let mut selected_in = vec![false; pods.len()];
        let mut selected_out = vec![false; pods.len()];
        let mut peers: BTreeSet<PeerKey> = BTreeSet::new();
        for np in policies {
            let uid = np.metadata.uid.clone().unwrap_or_default();
            let what = format!(
                "networkpolicy {}/{}",
                np.metadata.namespace.as_deref().unwrap_or_default(),
                np.metadata.name.as_deref().unwrap_or_default()
            );
            let rules = match policy::map_policy(np, cluster, &families) {
                Ok(r) => r,
                Err(e) => {
                    self.say_once(format!("{what} skipped: {e}"));
                    continue;
                }
            };
            for s in &rules.skipped {
                self.say_once(format!("{what}: {s}"));
            }
            let key = SgKey::Policy(uid);
            if let Some(sel) = &rules.selects {
                for (i, want) in pods.iter_mut().enumerate() {
                    if cluster.selects(sel, &cluster.pods[i]) {
                        want.sgs.insert(key.clone());
                        selected_in[i] |= rules.ingress;
                        selected_out[i] |= rules.egress;
                    }
                }
            }
            peers.extend(rules.peers.iter().cloned());
            sgs.insert(key, (format!("k8s-policy {what}"), rules.rules));
        }
        for peer in &peers {
            let key = SgKey::Peer(peer.id());
            for (i, want) in pods.iter_mut().enumerate() {
                if cluster.selects(peer, &cluster.pods[i]) {
                    want.sgs.insert(key.clone());
                }
            }
            let name: String = format!("k8s-peer {}", peer.describe())
                .chars()
                .take(255)
                .collect();
            sgs.insert(key, (name, BTreeSet::new()));
        }
        let any = |direction| -> BTreeSet<policy::RuleSpec> {
            [Family::V4, Family::V6]
                .into_iter()
                .map(|family| policy::RuleSpec {
                    direction,
                    family,
                    protocol: None,
                    ports: None,
                    remote: Remote::Any,
                })
                .collect()
        };
        sgs.insert(
            SgKey::AllowIngress,
            ("k8s-allow-all-ingress".into(), any(Direction::Ingress)),
        );
        sgs.insert(
            SgKey::AllowEgress,
            ("k8s-allow-all-egress".into(), any(Direction::Egress)),
        );
        for (i, want) in pods.iter_mut().enumerate() {
            if !selected_in[i] {
                want.sgs.insert(SgKey::AllowIngress);
            }
            if !selected_out[i] {
                want.sgs.insert(SgKey::AllowEgress);
            }
        }
        sgs
    }

    /// The load balancers of the services (by service uid).
    fn wanted_lbs(&mut self, snap: &Snapshot) -> BTreeMap<String, LbSpec> {
        let mut lbs = BTreeMap::new();
        let slices: Vec<&EndpointSlice> = snap.slices.iter().map(AsRef::as_ref).collect();
        for svc in &snap.services {
            let Some(uid) = svc.metadata.uid.clone() else {
                continue;
            };
            let Some(lb) = service::map_service(svc, &slices) else {
                continue;
            };
            for s in &lb.skipped {
                self.say_once(format!("service {}: {s}", lb.name));
            }
            if !self.cfg.service_cidr.contains(&lb.vip) {
                self.say_once(format!(
                    "service {}: cluster IP {} is outside --service-cidr {}, skipped",
                    lb.name, lb.vip, self.cfg.service_cidr
                ));
                continue;
            }
            lbs.insert(uid, lb);
        }
        lbs
    }

    // ---- namespace networks ----

    async fn sync_ns_nets(&mut self, w: &Wanted) {
        for (ns, uid) in &w.namespaces {
            if self
                .ns_nets
                .get(ns)
                .is_some_and(|n| n.owner.as_deref() == Some(uid))
            {
                continue;
            }
            let key = format!("namespace-network:{ns}");
            if self.ns_nets.contains_key(ns) || !self.due(&key) {
                // A namespace of the same name from before: its network goes first (below).
                continue;
            }
            let used: Vec<IpNet> = self.ns_nets.values().map(|n| n.cidr).collect();
            let Some(cidr) = self
                .cfg
                .pod_cidr
                .subnets(self.cfg.namespace_prefix_len)
                .ok()
                .and_then(|mut s| s.find(|c| !used.iter().any(|u| u.contains(c) || c.contains(u))))
            else {
                self.say_once(format!(
                    "namespace {ns}: --pod-cidr has no free subnet left"
                ));
                continue;
            };
            let extra = vec![tags::namespace(ns), tags::uid(uid)];
            let r = self
                .ensure_net(
                    tags::POD_NETWORK,
                    tags::POD_SUBNET,
                    &format!("k8s-{}-{ns}", self.cfg.cluster_name),
                    cidr,
                    None,
                    extra,
                    Some(uid.clone()),
                )
                .await;
            match r {
                Ok(net) => {
                    self.ok(&key);
                    self.ns_nets.insert(ns.clone(), net);
                }
                Err(e) => self.failed(&key, &e),
            }
        }
    }

    async fn delete_ns_nets(&mut self, w: &Wanted) {
        let gone: Vec<(String, NetInfo)> = self
            .ns_nets
            .iter()
            .filter(|(ns, n)| w.namespaces.get(*ns) != n.owner.as_ref())
            .map(|(ns, n)| (ns.clone(), n.clone()))
            .collect();
        for (ns, net) in gone {
            // Its pods' ports first.
            if self
                .actual
                .ports
                .values()
                .any(|p| p.network_id == net.network_id)
            {
                continue;
            }
            let key = format!("namespace-network:{ns}");
            if !self.due(&key) {
                continue;
            }
            let r = async {
                match self
                    .neutron
                    .action(
                        "routers",
                        &self.router_id,
                        "remove_router_interface",
                        json!({"subnet_id": net.subnet_id}),
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.status() == Some(404) => {}
                    Err(e) => return Err(e),
                }
                self.neutron.delete("networks", &net.network_id, &[]).await
            }
            .await;
            if self.settle(&key, r) {
                tracing::info!("deleted the network of namespace {ns}");
                self.ns_nets.remove(&ns);
            }
        }
    }

    fn net_for(&self, ns: &str) -> Option<&NetInfo> {
        if self.cfg.network_per_namespace {
            self.ns_nets.get(ns)
        } else {
            self.pod_net.as_ref()
        }
    }

    // ---- security groups ----

    async fn sync_sgs(&mut self, w: &Wanted) {
        // Groups first: rules name membership groups by id.
        for (key, (name, _)) in &w.sgs {
            if self.actual.sgs.contains_key(key) || !self.due(&key.backoff_key()) {
                continue;
            }
            let r = self.create_sg(key, name).await;
            match r {
                Ok(st) => {
                    tracing::info!("created security group {name} ({})", st.id);
                    self.actual.sgs.insert(key.clone(), st);
                }
                Err((e, half)) => {
                    if let Some(id) = half {
                        self.actual.strays.push((SGS, id));
                    }
                    self.failed(&key.backoff_key(), &e);
                }
            }
        }
        // Rules by diff.
        for (key, (name, rules)) in &w.sgs {
            let bkey = key.backoff_key();
            let Some(st) = self.actual.sgs.get(key).cloned() else {
                continue;
            };
            if !self.due(&bkey) {
                continue;
            }
            let mut want: BTreeSet<RuleKey> = BTreeSet::new();
            let mut complete = true;
            for r in rules {
                let (prefix, group) = match &r.remote {
                    Remote::Any => (None, None),
                    Remote::Prefix(p) => (Some(*p), None),
                    Remote::Peer(peer) => match self.actual.sgs.get(&SgKey::Peer(peer.id())) {
                        Some(g) => (None, Some(g.id.clone())),
                        None => {
                            complete = false;
                            continue;
                        }
                    },
                };
                let (min, max) = match r.ports {
                    Some((a, b)) => (Some(a), Some(b)),
                    None => (None, None),
                };
                want.insert(RuleKey {
                    direction: r.direction.as_str().into(),
                    ethertype: r.family.ethertype().into(),
                    protocol: r.protocol.map(|p: Protocol| p.neutron().to_string()),
                    min,
                    max,
                    prefix,
                    group,
                });
            }
            let mut rules = st.rules;
            let neutron = &self.neutron;
            let result = apply_diff(
                &mut rules,
                &want,
                |id| async move { neutron.delete(RULES, &id, &[]).await },
                |k| {
                    let body = k.body(&st.id);
                    async move {
                        let rule = neutron.create(RULES, "security_group_rule", body).await?;
                        Ok(str_of(&rule, "id"))
                    }
                },
            )
            .await;
            if let Some(s) = self.actual.sgs.get_mut(key) {
                s.rules = rules;
            }
            match result {
                Ok(()) if complete => self.ok(&bkey),
                Ok(()) => {}
                Err(e) => self.failed(&bkey, &Error::Invalid(format!("{name}: {e}"))),
            }
        }
    }

    /// A new group, tagged; on a failed tagging the group's id with the error.
    async fn create_sg(&self, key: &SgKey, name: &str) -> Result<SgState, (Error, Option<String>)> {
        let g = self
            .create_then_tag(
                SGS,
                "security_group",
                json!({"name": name}),
                &key.tags(&self.cfg.cluster_name),
            )
            .await?;
        Ok(SgState::of(&g))
    }

    async fn delete_sgs(&mut self, w: &Wanted) {
        // Policy groups before membership groups (their rules name them).
        let mut gone: Vec<(SgKey, String)> = self
            .actual
            .sgs
            .iter()
            .filter(|(k, _)| !w.sgs.contains_key(*k))
            .map(|(k, s)| (k.clone(), s.id.clone()))
            .collect();
        gone.sort_by_key(|(k, _)| matches!(k, SgKey::Peer(_)));
        for (key, id) in gone {
            // Still on a port (a port update failed): the next pass.
            if self
                .actual
                .ports
                .values()
                .any(|p| p.security_groups.contains(&id))
            {
                continue;
            }
            if self
                .delete_when_due(&key.backoff_key(), SGS, &id, &[])
                .await
            {
                tracing::info!("deleted security group {id} ({key:?})");
                self.actual.sgs.remove(&key);
            }
        }
    }

    // ---- ports ----

    /// The ports of the wanted pods, and the deletion of those of gone pods; with `only`,
    /// just those of the pods with these uids (a pod event's reconcile).
    async fn sync_ports(&mut self, w: &Wanted, only: Option<&HashSet<String>>) {
        let wanted: HashSet<&str> = w.pods.iter().map(|p| p.uid.as_str()).collect();
        let in_scope = |uid: &str| only.is_none_or(|o| o.contains(uid));
        let pods: Vec<&WantPod> = w.pods.iter().filter(|p| in_scope(&p.uid)).collect();
        self.create_ports(&pods).await;
        // Ports first, one at a time (they change what the controller holds), then the pods'
        // annotations side by side: a burst of new pods is not held up by one annotation
        // round trip per pod.
        let mut annotations = Vec::new();
        for pod in pods {
            let key = pod.backoff_key();
            if self.due(&key) {
                match self.sync_port(pod).await {
                    Ok(attached) => annotations.push((key, pod, attached)),
                    Err(e) => self.failed(&key, &e),
                }
            }
        }
        let this = &*self;
        let mut writes = Vec::with_capacity(annotations.len());
        for (key, pod, (net, port, vlan)) in &annotations {
            writes.push(async move { (key, this.annotate(pod, net, port, *vlan).await) });
        }
        let annotated: Vec<(&String, Result<(), Error>)> = futures::stream::iter(writes)
            .buffer_unordered(ANNOTATIONS_AT_ONCE)
            .collect()
            .await;
        let annotated: Vec<(String, Result<(), Error>)> =
            annotated.into_iter().map(|(k, r)| (k.clone(), r)).collect();
        for (key, r) in annotated {
            self.settle(&key, r);
        }
        let gone: Vec<(String, PortState)> = self
            .actual
            .ports
            .iter()
            .filter(|(uid, _)| !wanted.contains(uid.as_str()) && in_scope(uid))
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect();
        for (uid, port) in gone {
            let key = format!("port:{}", port.id);
            if !self.due(&key) {
                continue;
            }
            let r = self.delete_port(&port).await;
            if self.settle(&key, r) {
                tracing::info!("deleted port {} of pod {}", port.id, port.name);
                self.actual.ports.remove(&uid);
            }
        }
    }

    async fn delete_port(&mut self, port: &PortState) -> Result<(), Error> {
        let trunk = self
            .actual
            .trunks
            .iter()
            .find(|(_, t)| t.sub_ports.contains_key(&port.id))
            .map(|(parent, t)| (parent.clone(), t.id.clone()));
        if let Some((parent, trunk_id)) = trunk {
            match self
                .neutron
                .action(
                    TRUNKS,
                    &trunk_id,
                    "remove_subports",
                    json!({"sub_ports": [{"port_id": port.id}]}),
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
            if let Some(t) = self.actual.trunks.get_mut(&parent) {
                t.sub_ports.remove(&port.id);
            }
        }
        self.neutron.delete(PORTS, &port.id, &[]).await
    }

    /// The create body of a pod's port on `net`, with its tags: one request makes the port
    /// whole (`tag-ports-during-bulk-creation`), so there is no half-made port to collect.
    fn port_body(&self, pod: &WantPod, net: &NetInfo) -> Value {
        let mut body = json!({
            "network_id": net.network_id,
            "name": pod.full_name(),
            "fixed_ips": [{"subnet_id": net.subnet_id}],
            "security_groups": self.sg_ids(pod),
            "device_owner": DEVICE_OWNER,
            "tags": [
                self.cluster_tag(),
                tags::kind(tags::POD),
                tags::pod_uid(&pod.uid),
                tags::pod(&pod.namespace, &pod.name),
            ],
        });
        if pod.trunk_parent.is_none() {
            body["device_id"] = json!(pod.uid);
            body["binding:host_id"] = json!(pod.chassis);
        } else {
            // A subport may have no device id (the trunk plugin's rule); the trunk gives it
            // its owner and host.
            body.as_object_mut().map(|o| o.remove("device_owner"));
        }
        body
    }

    /// The ids of the groups `pod` is to be in that exist, in order.
    fn sg_ids(&self, pod: &WantPod) -> BTreeSet<String> {
        pod.sgs
            .iter()
            .filter_map(|k| self.actual.sgs.get(k).map(|s| s.id.clone()))
            .collect()
    }

    /// Creates the missing ports of `pods` (those due, whose network is known) in one bulk
    /// request; when it is refused (all or none) the pods' own passes create them one by one,
    /// so that a failure stays the failing pod's.
    async fn create_ports(&mut self, pods: &[&WantPod]) {
        let mut todo: Vec<(&WantPod, Value)> = Vec::new();
        for pod in pods {
            if self.actual.ports.contains_key(&pod.uid) || !self.due(&pod.backoff_key()) {
                continue;
            }
            if let Some(net) = self.net_for(&pod.namespace).cloned() {
                todo.push((pod, self.port_body(pod, &net)));
            }
        }
        if todo.len() < 2 {
            return;
        }
        let bodies = todo.iter().map(|(_, b)| b.clone()).collect();
        match self.neutron.create_many(PORTS, "ports", bodies).await {
            Ok(created) if created.len() == todo.len() => {
                for ((pod, _), p) in todo.iter().zip(created) {
                    let st = PortState::of(&p);
                    tracing::info!("created port {} for pod {}", st.id, pod.full_name());
                    self.actual.ports.insert(pod.uid.clone(), st);
                }
            }
            Ok(_) => self.dirty = true,
            Err(e) => tracing::debug!("creating {} ports at once: {e}", todo.len()),
        }
    }

    /// Makes `pod`'s port as it should be (and, nested, its subport); returns what the pod's
    /// annotation is written from: the network, the port and the subport's VLAN.
    async fn sync_port(
        &mut self,
        pod: &WantPod,
    ) -> Result<(NetInfo, PortState, Option<u16>), Error> {
        let Some(net) = self.net_for(&pod.namespace).cloned() else {
            return Err(Error::Invalid(format!(
                "no pod network for namespace {} yet",
                pod.namespace
            )));
        };
        let port = self.ensure_port(pod, &net).await?;
        let vlan = match &pod.trunk_parent {
            Some(parent) => Some(self.ensure_subport(parent, &port.id).await?),
            None => None,
        };
        Ok((net, port, vlan))
    }

    /// The pod's port on `net`: made if missing (made again if the pod's network changed),
    /// its groups, host and name updated if they differ.
    async fn ensure_port(&mut self, pod: &WantPod, net: &NetInfo) -> Result<PortState, Error> {
        let name = pod.full_name();
        let st = match self.actual.ports.get(&pod.uid).cloned() {
            Some(p) if p.network_id == net.network_id => p,
            stale => {
                if let Some(p) = stale {
                    // The pod's network changed (the mode did): a new port.
                    self.delete_port(&p).await?;
                    self.actual.ports.remove(&pod.uid);
                }
                let created = self
                    .neutron
                    .create(PORTS, "port", self.port_body(pod, net))
                    .await?;
                let st = PortState::of(&created);
                tracing::info!("created port {} for pod {name}", st.id);
                self.actual.ports.insert(pod.uid.clone(), st.clone());
                st
            }
        };
        let sg_ids = self.sg_ids(pod);
        let mut update = serde_json::Map::new();
        if st.security_groups != sg_ids {
            update.insert("security_groups".into(), json!(sg_ids));
        }
        // A subport's host is the trunk's.
        if pod.trunk_parent.is_none() && st.host != pod.chassis {
            update.insert("binding:host_id".into(), json!(pod.chassis));
        }
        if st.name != name {
            update.insert("name".into(), json!(name));
        }
        if update.is_empty() {
            return Ok(st);
        }
        let updated = self
            .neutron
            .update(PORTS, "port", &st.id, Value::Object(update))
            .await?;
        let st = PortState::of(&updated);
        self.actual.ports.insert(pod.uid.clone(), st.clone());
        Ok(st)
    }

    /// Writes the port's details (`vlan`: its subport's) into the pod's annotation, unless
    /// it holds them already.
    async fn annotate(
        &self,
        pod: &WantPod,
        net: &NetInfo,
        port: &PortState,
        vlan: Option<u16>,
    ) -> Result<(), Error> {
        let ann = PortAnnotation {
            port_id: port.id.clone(),
            mac_address: port.mac.clone(),
            ips: port
                .ips
                .iter()
                .map(|(ip, _)| format!("{ip}/{}", net.cidr.prefix_len()))
                .collect(),
            gateway: net.gateway.map(|g| g.to_string()),
            mtu: net.mtu,
            vlan,
        };
        let text = serde_json::to_string(&ann).map_err(|e| Error::Invalid(e.to_string()))?;
        if pod.annotation.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let pods: kube::Api<Pod> = kube::Api::namespaced(self.kube.clone(), &pod.namespace);
        let patch = json!({"metadata": {"annotations": {PORT_ANNOTATION: text}}});
        match pods
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            // Deleted meanwhile: its port goes with the next pass.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(Error::Kube(format!(
                "annotating pod {}: {e}",
                pod.full_name()
            ))),
        }
    }

    /// The trunk of `parent`: the one recorded, else the one the API has, else a new one
    /// (tagged as the controller's, owned by the VM port the node names: it goes when no node
    /// names that port and it has no subports).
    async fn trunk_of(&mut self, parent: &str) -> Result<TrunkState, Error> {
        if let Some(t) = self.actual.trunks.get(parent) {
            return Ok(t.clone());
        }
        let owner = format!("port-{parent}");
        let found = self
            .neutron
            .list(TRUNKS, &[("port_id", parent.to_string())])
            .await?;
        let (t, ours) = match found.into_iter().next() {
            Some(t) => {
                let ours = tags::of(&t).contains(&self.cluster_tag());
                (t, ours)
            }
            None => {
                let tg = [
                    self.cluster_tag(),
                    tags::kind(tags::TRUNK),
                    tags::uid(&owner),
                ];
                let t = self
                    .create_then_tag(
                        TRUNKS,
                        "trunk",
                        json!({"port_id": parent, "name": format!("k8s-{parent}")}),
                        &tg,
                    )
                    .await
                    .map_err(|(e, _)| e)?;
                (t, true)
            }
        };
        let trunk = TrunkState {
            id: str_of(&t, "id"),
            owner: ours.then_some(owner),
            sub_ports: sub_ports_of(&t),
        };
        self.actual.trunks.insert(parent.to_string(), trunk.clone());
        Ok(trunk)
    }

    /// Puts `port_id` into the trunk of `parent` (made if missing); returns its VLAN.
    async fn ensure_subport(&mut self, parent: &str, port_id: &str) -> Result<u16, Error> {
        let trunk = self.trunk_of(parent).await?;
        if let Some(vlan) = trunk.sub_ports.get(port_id) {
            return Ok(*vlan);
        }
        let used: BTreeSet<u16> = trunk.sub_ports.values().copied().collect();
        let vlan = (1..=4094u16)
            .find(|v| !used.contains(v))
            .ok_or_else(|| Error::Invalid(format!("trunk {} has no free VLAN", trunk.id)))?;
        let answer = self
            .neutron
            .action(
                TRUNKS,
                &trunk.id,
                "add_subports",
                json!({"sub_ports": [{"port_id": port_id, "segmentation_type": "vlan",
                                      "segmentation_id": vlan}]}),
            )
            .await?;
        let t = answer.get("trunk").unwrap_or(&answer);
        let subs = sub_ports_of(t);
        if let Some(st) = self.actual.trunks.get_mut(parent) {
            if subs.is_empty() {
                st.sub_ports.insert(port_id.to_string(), vlan);
            } else {
                st.sub_ports = subs;
            }
        }
        Ok(vlan)
    }

    async fn delete_trunks(&mut self, w: &Wanted) {
        // Only trunks the controller made, once empty and their node has no trunk annotation
        // any more (deleting a trunk whose VM port is bound is refused: retried on backoff).
        let gone: Vec<(String, String)> = self
            .actual
            .trunks
            .iter()
            .filter(|(p, t)| {
                t.sub_ports.is_empty() && t.owner.is_some() && !w.trunk_parents.contains(*p)
            })
            .map(|(p, t)| (p.clone(), t.id.clone()))
            .collect();
        for (parent, id) in gone {
            if self
                .delete_when_due(&format!("trunk:{id}"), TRUNKS, &id, &[])
                .await
            {
                tracing::info!("deleted trunk {id} of port {parent}");
                self.actual.trunks.remove(&parent);
            }
        }
    }

    // ---- load balancers ----

    async fn sync_lbs(&mut self, w: &Wanted) {
        for (uid, spec) in &w.lbs {
            let key = format!("service:{}", spec.name);
            if self.due(&key) {
                let r = self.sync_lb(uid, spec).await;
                self.settle(&key, r);
            }
        }
        let gone: Vec<(String, String)> = self
            .actual
            .lbs
            .iter()
            .filter(|(uid, _)| !w.lbs.contains_key(*uid))
            .map(|(u, l)| (u.clone(), l.id.clone()))
            .collect();
        for (uid, id) in gone {
            let key = format!("loadbalancer:{id}");
            if self.delete_when_due(&key, LBS, &id, &cascade()).await {
                tracing::info!("deleted load balancer {id}");
                self.actual.lbs.remove(&uid);
            }
        }
    }

    fn lb_tags(&self, uid: &str) -> Vec<String> {
        vec![
            self.cluster_tag(),
            tags::kind(tags::SERVICE),
            tags::uid(uid),
        ]
    }

    async fn sync_lb(&mut self, uid: &str, spec: &LbSpec) -> Result<(), Error> {
        let tg = self.lb_tags(uid);
        if let Some(lb) = self.actual.lbs.get(uid)
            && lb.vip != Some(spec.vip)
        {
            // The cluster IP changed (the service was replaced in place): a new load balancer.
            let id = lb.id.clone();
            self.neutron.delete(LBS, &id, &cascade()).await?;
            self.actual.lbs.remove(uid);
        }
        if !self.actual.lbs.contains_key(uid) {
            let svc_subnet = self
                .svc_net
                .as_ref()
                .map(|n| n.subnet_id.clone())
                .unwrap_or_default();
            let lb = self
                .neutron
                .create(
                    LBS,
                    "loadbalancer",
                    json!({"name": spec.name,
                           "vip_subnet_id": svc_subnet, "vip_address": spec.vip.to_string(),
                           "tags": tg}),
                )
                .await?;
            tracing::info!(
                "created load balancer {} for service {}",
                str_of(&lb, "id"),
                spec.name
            );
            self.actual.lbs.insert(
                uid.to_string(),
                LbState {
                    id: str_of(&lb, "id"),
                    vip: Some(spec.vip),
                    listeners: HashMap::new(),
                },
            );
        }
        let lb_id = self.actual.lbs[uid].id.clone();
        // Listeners that are no longer wanted: pool (with its members), then listener.
        let extra: Vec<((LbProtocol, u16), ListenerState)> = self.actual.lbs[uid]
            .listeners
            .iter()
            .filter(|(k, _)| !spec.listeners.contains_key(*k))
            .map(|(k, l)| (*k, l.clone()))
            .collect();
        for (at, l) in extra {
            if let Some(p) = &l.pool {
                self.neutron.delete(POOLS, &p.id, &[]).await?;
            }
            self.neutron.delete(LISTENERS, &l.id, &[]).await?;
            if let Some(lb) = self.actual.lbs.get_mut(uid) {
                lb.listeners.remove(&at);
            }
        }
        for (at, want) in &spec.listeners {
            let (proto, port) = *at;
            if !self.actual.lbs[uid].listeners.contains_key(at) {
                let l = self
                    .neutron
                    .create(
                        LISTENERS,
                        "listener",
                        json!({"loadbalancer_id": lb_id, "protocol": proto.as_str(),
                               "protocol_port": port, "name": want.name, "tags": tg}),
                    )
                    .await?;
                if let Some(lb) = self.actual.lbs.get_mut(uid) {
                    lb.listeners.insert(
                        *at,
                        ListenerState {
                            id: str_of(&l, "id"),
                            pool: None,
                        },
                    );
                }
            }
            let listener = self.actual.lbs[uid].listeners[at].clone();
            let persistence = if want.source_ip {
                json!({"type": "SOURCE_IP"})
            } else {
                Value::Null
            };
            let pool = match listener.pool {
                Some(p) => {
                    if p.source_ip != want.source_ip {
                        self.neutron
                            .update(
                                POOLS,
                                "pool",
                                &p.id,
                                json!({"session_persistence": persistence}),
                            )
                            .await?;
                    }
                    PoolState {
                        source_ip: want.source_ip,
                        ..p
                    }
                }
                None => {
                    let p = self
                        .neutron
                        .create(
                            POOLS,
                            "pool",
                            json!({"listener_id": listener.id, "protocol": proto.as_str(),
                                   "lb_algorithm": "ROUND_ROBIN", "name": want.name,
                                   "session_persistence": persistence, "tags": tg}),
                        )
                        .await?;
                    PoolState {
                        id: str_of(&p, "id"),
                        source_ip: want.source_ip,
                        members: HashMap::new(),
                    }
                }
            };
            self.set_pool(uid, at, pool.clone());
            // Members by diff.
            let members_path = format!("{POOLS}/{}/members", pool.id);
            let mut members = pool.members.clone();
            let (neutron, path) = (&self.neutron, members_path.as_str());
            let result = apply_diff(
                &mut members,
                &want.members,
                |id| async move { neutron.delete(path, &id, &[]).await },
                |(ip, p)| {
                    let mut body = json!({"address": ip.to_string(), "protocol_port": p,
                                          "tags": tg});
                    if let Some(subnet) = self.subnet_containing(&ip) {
                        body["subnet_id"] = json!(subnet);
                    }
                    async move {
                        let m = neutron.create(path, "member", body).await?;
                        Ok(str_of(&m, "id"))
                    }
                },
            )
            .await;
            self.set_pool(uid, at, PoolState { members, ..pool });
            result?;
        }
        Ok(())
    }

    fn set_pool(&mut self, uid: &str, at: &(LbProtocol, u16), pool: PoolState) {
        if let Some(l) = self
            .actual
            .lbs
            .get_mut(uid)
            .and_then(|lb| lb.listeners.get_mut(at))
        {
            l.pool = Some(pool);
        }
    }

    fn subnet_containing(&self, ip: &IpAddr) -> Option<String> {
        self.pod_net
            .iter()
            .chain(self.ns_nets.values())
            .find(|n| n.cidr.contains(ip))
            .map(|n| n.subnet_id.clone())
    }

    // ---- leftovers ----

    async fn delete_strays(&mut self) {
        let strays = std::mem::take(&mut self.actual.strays);
        for (collection, id) in strays {
            let key = format!("stray:{collection}/{id}");
            if self.delete_when_due(&key, collection, &id, &[]).await {
                tracing::info!("deleted leftover {collection} {id}");
            } else {
                self.actual.strays.push((collection, id));
            }
        }
    }
}

/// Brings `have` (object by key → its id) to `want`: the extra objects deleted first (a
/// shrinking set of rules or members never allows more than either), then the missing ones
/// created in order. `have` follows each call that succeeds; the first failure ends the diff.
/// (The calls take owned arguments: futures of closures over borrowed ones would not be `Send`.)
async fn apply_diff<K, D, C>(
    have: &mut HashMap<K, String>,
    want: &BTreeSet<K>,
    delete: impl Fn(String) -> D,
    create: impl Fn(K) -> C,
) -> Result<(), Error>
where
    K: Clone + Ord + std::hash::Hash,
    D: Future<Output = Result<(), Error>>,
    C: Future<Output = Result<String, Error>>,
{
    let extra: Vec<(K, String)> = have
        .iter()
        .filter(|(k, _)| !want.contains(*k))
        .map(|(k, id)| (k.clone(), id.clone()))
        .collect();
    for (k, id) in extra {
        delete(id).await?;
        have.remove(&k);
    }
    for k in want {
        if !have.contains_key(k) {
            let id = create(k.clone()).await?;
            have.insert(k.clone(), id);
        }
    }
    Ok(())
}

/// The subnet and address of each of a port's fixed IPs.
fn fixed_ips(p: &Value) -> Vec<(String, Option<IpAddr>)> {
    p.get("fixed_ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|f| (str_of(f, "subnet_id"), str_of(f, "ip_address").parse().ok()))
        .collect()
}

/// The address on `subnet_id` of the first of `ports` with one there.
fn address_on(ports: &[Value], subnet_id: &str) -> Option<IpAddr> {
    ports
        .iter()
        .flat_map(fixed_ips)
        .find(|(s, _)| s == subnet_id)
        .and_then(|(_, ip)| ip)
}

/// The one object of `found`: none is `Error::Invalid` with `none` (it may come: retried),
/// several `Error::Config` with `several` (the configuration cannot work).
fn only_one(found: Vec<Value>, none: String, several: String) -> Result<Value, Error> {
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(Error::Invalid(none)),
        (Some(_), Some(_)) => Err(Error::Config(several)),
    }
}

/// A trunk's subports: port id → VLAN.
fn sub_ports_of(t: &Value) -> BTreeMap<String, u16> {
    t.get("sub_ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            Some((
                str_of(s, "port_id"),
                u16::try_from(s.get("segmentation_id")?.as_u64()?).ok()?,
            ))
        })
        .collect()
}

/// Where the pods of each node go (by node name): the node's chassis (its annotation, else its
/// name) and, for a node that is a VM, the VM's port whose trunk takes its pods' ports.
fn placements(nodes: &[Arc<Node>]) -> HashMap<&str, (String, Option<String>)> {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.as_deref()?;
            let ann = n.metadata.annotations.as_ref();
            let chassis = ann
                .and_then(|a| a.get(CHASSIS_ANNOTATION))
                .cloned()
                .unwrap_or_else(|| name.to_string());
            let trunk = ann.and_then(|a| a.get(TRUNK_PORT_ANNOTATION)).cloned();
            Some((name, (chassis, trunk)))
        })
        .collect()
}

/// The node of a pod that gets a port: scheduled, not on the host's network, not finished.
fn wants_port(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if spec.host_network == Some(true) {
        return None;
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return None;
    }
    pod.metadata.uid.as_ref()?;
    spec.node_name.as_deref().filter(|n| !n.is_empty())
}

/// How the policy mapping sees a pod.
fn pod_view(pod: &Pod) -> PodView {
    let named_ports = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some((
                p.name.clone()?,
                Protocol::parse(p.protocol.as_deref().unwrap_or("TCP"))?,
                u16::try_from(p.container_port).ok()?,
            ))
        })
        .collect();
    PodView {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        named_ports,
    }
}
