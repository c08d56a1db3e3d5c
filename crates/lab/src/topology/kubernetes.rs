//! The topology file's Kubernetes cluster (`[kubernetes]`): an in-memory API server
//! (`wyvern-kube-apiserver`), the controller (`wyvern k8s`), node chassis, and pods, services
//! and network policies that the lab creates — the lab acting as the kubelet of its nodes.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use serde::Deserialize;

use super::{NetworkSpec, ServeSpec, SubnetSpec, Topology, check_prefix};
use crate::names::{self, VM_MAX};
use crate::{Error, Result};

fn default_namespace() -> String {
    "default".into()
}

fn default_project() -> String {
    "kubernetes".into()
}

fn default_pod_cidr() -> IpNet {
    "10.244.0.0/16".parse().expect("a CIDR")
}

fn default_service_cidr() -> IpNet {
    "10.96.0.0/16".parse().expect("a CIDR")
}

fn tcp() -> String {
    "TCP".into()
}

/// `[kubernetes]`: the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The cluster's name (tag `k8s-cluster:<name>`); default: the lab's name.
    pub cluster_name: Option<String>,
    /// Pod addresses (the controller's `--pod-cidr`; unused with `network`).
    #[serde(default = "default_pod_cidr")]
    pub pod_cidr: IpNet,
    /// A network of the file for the pods (the controller's `--pod-network`, with its first
    /// IPv4 subnet as `--pod-subnet`) instead of the controller's own: VMs on it share it with
    /// the pods.
    pub network: Option<String>,
    /// Service cluster IPs (the API server's and the controller's `--service-cidr`).
    #[serde(default = "default_service_cidr")]
    pub service_cidr: IpNet,
    /// The Neutron project of the controller's objects.
    #[serde(default = "default_project")]
    pub project: String,
    /// The chassis that are Kubernetes nodes (Node objects, pods run there).
    #[serde(default)]
    pub nodes: Vec<String>,
    /// The VMs of the file that are Kubernetes nodes in nested mode: each is made a trunk's
    /// parent (as a VM with `subports` is), its Node annotated `wyvern.io/trunk-port=<its
    /// port>`, and its pods are subports of its trunk, tagged by the VM's own Open vSwitch.
    #[serde(default)]
    pub vm_nodes: Vec<String>,
    /// Pods, each on a node.
    #[serde(default, rename = "pod")]
    pub pods: Vec<PodSpec>,
    /// Services.
    #[serde(default, rename = "service")]
    pub services: Vec<KubeServiceSpec>,
    /// Network policies.
    #[serde(default, rename = "network_policy")]
    pub network_policies: Vec<NetworkPolicySpec>,
}

impl KubernetesSpec {
    /// With `network`: that network of `topo` and the subnet the pods get addresses from (its
    /// first IPv4 subnet), with the subnet's name.
    pub fn pod_subnet<'a>(
        &self,
        topo: &'a Topology,
    ) -> Option<(&'a NetworkSpec, String, &'a SubnetSpec)> {
        let net = topo.network(self.network.as_deref()?)?;
        let (i, subnet) = net
            .subnets
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s.cidr, IpNet::V4(_)))?;
        Some((net, topo.subnet_name(net, i), subnet))
    }

    /// The cluster's name in lab `lab`.
    pub fn cluster(&self, lab: &str) -> String {
        self.cluster_name.clone().unwrap_or_else(|| lab.to_owned())
    }

    /// Every node: the chassis, then the VMs.
    pub fn all_nodes(&self) -> impl Iterator<Item = &String> {
        self.nodes.iter().chain(&self.vm_nodes)
    }

    /// Whether node `name` is a VM (nested mode).
    pub fn is_vm_node(&self, name: &str) -> bool {
        self.vm_nodes.iter().any(|n| n == name)
    }
}

/// A container port of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerPortSpec {
    /// Its name (for services' named target ports).
    pub name: Option<String>,
    /// The port.
    pub port: u16,
    /// TCP (default), UDP or SCTP.
    #[serde(default = "tcp")]
    pub protocol: String,
}

/// `[[kubernetes.pod]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// The pod's name; also its host name in the lab (unique among hosts).
    pub name: String,
    /// Its Kubernetes namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The node (a chassis in `nodes`).
    pub node: String,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its container ports.
    #[serde(default)]
    pub ports: Vec<ContainerPortSpec>,
    /// A tiny server in the pod answering with its name, as a VM's `serve`.
    #[serde(default)]
    pub serve: Vec<ServeSpec>,
}

/// A service's `targetPort`: a number or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port's name.
    Name(String),
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePortSpec {
    /// Its name (needed when there are several).
    pub name: Option<String>,
    /// The service's port.
    pub port: u16,
    /// The pods' port; default `port`.
    pub target_port: Option<TargetPort>,
    /// TCP (default) or UDP.
    #[serde(default = "tcp")]
    pub protocol: String,
}

/// `[[kubernetes.service]]` (type ClusterIP).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeServiceSpec {
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The pods' labels it selects.
    pub selector: BTreeMap<String, String>,
    /// Its ports.
    pub ports: Vec<ServicePortSpec>,
}

/// `[[kubernetes.network_policy]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicySpec {
    /// Its name.
    pub name: String,
    /// Its namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// The policy's `spec`, as JSON (`'{"podSelector": {}, "policyTypes": ["Ingress"]}'`).
    pub spec: String,
}

/// Checks the names of a namespaced object of the file, and that `seen` (the objects of its
/// kind before it) has none with the same; adds it there.
fn check_unique<'a>(
    what: &str,
    namespace: &'a str,
    name: &'a str,
    seen: &mut BTreeSet<(&'a str, &'a str)>,
) -> Result<()> {
    check_k8s_name(what, name)?;
    check_k8s_name("namespace", namespace)?;
    if seen.insert((namespace, name)) {
        Ok(())
    } else {
        Err(Error::Topology(format!(
            "kubernetes: {what} {namespace}/{name} twice"
        )))
    }
}

fn check_k8s_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::Topology(format!(
            "{what} {name:?}: 1-63 of [a-z0-9-], not starting or ending with -"
        )))
    }
}

/// Checks `[kubernetes]` against the rest of the file.
pub(super) fn validate(topo: &Topology) -> Result<()> {
    let Some(k) = &topo.kubernetes else {
        return Ok(());
    };
    let bad = |s: String| Err(Error::Topology(format!("kubernetes: {s}")));
    for (key, prefix) in [("pod_cidr", k.pod_cidr), ("service_cidr", k.service_cidr)] {
        if let Err(why) = check_prefix(key, prefix) {
            return bad(why);
        }
    }
    let pod_cidr = match &k.network {
        None => k.pod_cidr,
        Some(name) => {
            let Some(net) = topo.network(name) else {
                return bad(format!("network {name} is not in the file"));
            };
            if net.external {
                return bad(format!("network {name} is external"));
            }
            let Some((_, _, v4)) = k.pod_subnet(topo) else {
                return bad(format!("network {name} has no IPv4 subnet"));
            };
            v4.cidr
        }
    };
    if pod_cidr.contains(&k.service_cidr.network()) || k.service_cidr.contains(&pod_cidr.network())
    {
        return bad(format!(
            "the pods' {pod_cidr} and service_cidr {} overlap",
            k.service_cidr
        ));
    }
    check_k8s_name("kubernetes cluster_name", &k.cluster(&topo.name))?;
    if k.nodes.is_empty() && k.vm_nodes.is_empty() {
        return bad("at least one node is needed".into());
    }
    let mut nodes = BTreeSet::new();
    for n in &k.nodes {
        if !topo.chassis.iter().any(|c| &c.name == n) {
            return bad(format!("node {n} is no chassis"));
        }
        if !nodes.insert(n.as_str()) {
            return bad(format!("node {n} listed twice"));
        }
    }
    for n in &k.vm_nodes {
        let Some(vm) = topo.vms.iter().find(|v| &v.name == n) else {
            return bad(format!("vm node {n} is no vm"));
        };
        if vm.sf.is_some() {
            return bad(format!("vm node {n} is a service function"));
        }
        check_k8s_name("vm node", n)?;
        if !nodes.insert(n.as_str()) {
            return bad(format!("node {n} listed twice"));
        }
    }
    let mut hosts: BTreeSet<&str> = topo
        .chassis
        .iter()
        .map(|c| c.name.as_str())
        .chain(topo.vms.iter().map(|v| v.name.as_str()))
        .chain(topo.externals.iter().map(|e| e.name.as_str()))
        .chain(topo.physical.iter().map(|p| p.name.as_str()))
        .collect();
    for p in &k.pods {
        names::check_host_name("pod", &p.name, VM_MAX)?;
        check_k8s_name("namespace", &p.namespace)?;
        if !hosts.insert(p.name.as_str()) {
            return bad(format!("pod name {} used by another host", p.name));
        }
        if !nodes.contains(p.node.as_str()) {
            return bad(format!("pod {}: node {} is not a node", p.name, p.node));
        }
        for port in &p.ports {
            if port.port == 0 {
                return bad(format!("pod {}: port 0", p.name));
            }
        }
        for (i, sv) in p.serve.iter().enumerate() {
            if sv.port == 0 || p.serve[..i].contains(sv) {
                return bad(format!(
                    "pod {}: serve {sv}: port 0 or listed twice",
                    p.name
                ));
            }
        }
    }
    let mut services = BTreeSet::new();
    for s in &k.services {
        check_unique("service", &s.namespace, &s.name, &mut services)?;
        if s.ports.is_empty() || (s.ports.len() > 1 && s.ports.iter().any(|p| p.name.is_none())) {
            return bad(format!(
                "service {}: one port, or several each with a name",
                s.name
            ));
        }
    }
    let mut policies = BTreeSet::new();
    for p in &k.network_policies {
        check_unique("network policy", &p.namespace, &p.name, &mut policies)?;
        match serde_json::from_str::<serde_json::Value>(&p.spec) {
            Ok(v) if v.is_object() => {}
            _ => return bad(format!("network policy {}: spec is no JSON object", p.name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::topology::Topology;

    fn parse(kube: &str) -> crate::Result<Topology> {
        let text = format!(
            r#"name = "k"
[[chassis]]
name = "c1"
[[network]]
name = "pods"
[[network.subnet]]
cidr = "fd00:1::/64"
[[network.subnet]]
cidr = "10.0.0.0/24"
[[network]]
name = "v6"
[[network.subnet]]
cidr = "fd00:2::/64"
[kubernetes]
nodes = ["c1"]
{kube}
"#
        );
        Topology::parse(&text, Path::new("k.toml"))
    }

    #[test]
    fn the_pod_network_is_a_network_of_the_file_with_ipv4() {
        let t = parse(r#"network = "pods""#).unwrap();
        let k = t.kubernetes.as_ref().unwrap();
        let (net, name, subnet) = k.pod_subnet(&t).unwrap();
        assert_eq!((net.name.as_str(), name.as_str()), ("pods", "pods-2"));
        assert_eq!(subnet.cidr.to_string(), "10.0.0.0/24");
        // pod_cidr is unused then: only the subnet must stay clear of the service CIDR.
        parse("network = \"pods\"\npod_cidr = \"10.96.0.0/12\"\nservice_cidr = \"10.112.0.0/16\"")
            .unwrap();
        for (kube, why) in [
            (r#"network = "nope""#, "not in the file"),
            (r#"network = "v6""#, "no IPv4 subnet"),
            (
                "network = \"pods\"\nservice_cidr = \"10.0.0.0/16\"",
                "overlap",
            ),
            // Prefixes with host bits are refused, naming the network address meant (before
            // an overlap that the cut prefix would make).
            (
                "pod_cidr = \"10.96.0.5/12\"",
                "kubernetes: pod_cidr 10.96.0.5/12 is not a network address (it has host bits \
                 set; the network address is 10.96.0.0/12)",
            ),
            (
                "service_cidr = \"10.0.0.1/24\"",
                "kubernetes: service_cidr 10.0.0.1/24 is not a network address",
            ),
        ] {
            let e = parse(kube).unwrap_err().to_string();
            assert!(e.contains(why), "{kube}: {e}");
        }
    }

    #[test]
    fn vm_nodes_are_trunk_parents() {
        let t = Topology::parse(
            include_str!("../../../../examples/nested.toml"),
            Path::new("nested.toml"),
        )
        .unwrap();
        let k = t.kubernetes.as_ref().unwrap();
        let kvm = t.vms.iter().find(|v| v.name == "kvm1").unwrap();
        assert!(kvm.subports.is_empty() && t.is_trunk_parent(kvm) && k.is_vm_node("kvm1"));
        assert!(k.pods.iter().any(|p| p.node == "kvm1"));
        let vm1 = t.vms.iter().find(|v| v.name == "vm1").unwrap();
        assert!(!t.is_trunk_parent(vm1));
        let vm = "[[vm]]\nname = \"kvm\"\nnetwork = \"pods\"\nchassis = \"c1\"\n";
        for (extra, kube, why) in [
            ("", "vm_nodes = [\"nope\"]", "vm node nope is no vm"),
            ("", "vm_nodes = [\"c1\"]", "vm node c1 is no vm"),
            (
                vm,
                "vm_nodes = [\"kvm\"]\n[[kubernetes.pod]]\nname = \"p\"\nnode = \"kvm2\"",
                "not a node",
            ),
            (
                "[[vm]]\nname = \"kvm\"\nnetwork = \"pods\"\nchassis = \"c1\"\nipv6 = \"slaac\"\n",
                "vm_nodes = [\"kvm\"]",
                "slaac",
            ),
        ] {
            let text = format!(
                "name = \"k\"\n[[chassis]]\nname = \"c1\"\n[[network]]\nname = \"pods\"\n\
                 [[network.subnet]]\ncidr = \"fd00:1::/64\"\n[[network.subnet]]\n\
                 cidr = \"10.0.0.0/24\"\n{extra}[kubernetes]\nnodes = [\"c1\"]\n{kube}\n"
            );
            let e = Topology::parse(&text, Path::new("k.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{kube}: {e}");
        }
        // Pods on a VM node only: no chassis node needed.
        let text = format!(
            "name = \"k\"\n[[chassis]]\nname = \"c1\"\n[[network]]\nname = \"pods\"\n\
             [[network.subnet]]\ncidr = \"10.0.0.0/24\"\n{vm}[kubernetes]\n\
             vm_nodes = [\"kvm\"]\n"
        );
        Topology::parse(&text, Path::new("k.toml")).unwrap();
    }

    #[test]
    fn the_example_puts_a_vm_on_the_pod_network() {
        let t = Topology::parse(
            include_str!("../../../../examples/kubernetes.toml"),
            Path::new("kubernetes.toml"),
        )
        .unwrap();
        let k = t.kubernetes.as_ref().unwrap();
        let (net, _, _) = k.pod_subnet(&t).unwrap();
        assert!(
            t.vms
                .iter()
                .any(|v| v.network == net.name && !k.nodes.contains(&v.chassis))
        );
    }
}
