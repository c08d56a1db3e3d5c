//! Kubernetes nested mode end to end (issue #15): a pod inside a VM is a subport of the VM's
//! trunk with a VLAN of its own. The lab's `[kubernetes] vm_nodes = ["kvm1"]` makes the VM
//! `kvm1` (on chassis c3) a trunk's parent with its own Open vSwitch (`br-trunk`, eth0 its trunk
//! port) and a Node annotated `wyvern.io/trunk-port=<its port>`; as the kubelet of that node it
//! runs `wyvern-cni` inside the VM in nested `ovs` mode. The VM also has a subport of the file
//! (VLAN 1 on the network `side`), so the controller's subport shares the trunk with the lab's.
//!
//! Checked: the Node's annotation; the nested pod's port is in the trunk on the lowest free VLAN
//! (2), next to the file's subport; its tap is on the VM's bridge as an access port of that
//! VLAN; the pod reaches a pod on node c1 and a VM on c2 (ICMP both ways, TCP both ways with the
//! pod), and the Service's ClusterIP (balanced to the pod on c1); `lab status` lists the pod on
//! its VM node; `up` again leaves the controller's subport in the trunk; the pod dropped from the
//! file loses its subport, its port and its tap on the VM's bridge, while the file's subport
//! stays; `down` leaves no namespace and stops the VM's Open vSwitch.
//!
//! Needs the binaries `wyvern-kube-apiserver` and `wyvern-cni` next to `wyvern`
//! (`cargo build -p kube-fixture -p cni --bins`).

use reqwest::Method;
use serde_json::Value;

use lab::{Lab, Topology};

use crate::support;
use support::kube::{http_from, kube_get, need_binaries, pings, until};
use support::{api, lab_options, run};

/// The VM on the pods' network (c2).
const VM_IP: &str = "10.244.0.100";
/// The node VM's own address (c3).
const NODE_IP: &str = "10.244.0.50";

fn topology(name: &str, inner: bool) -> Topology {
    let mut text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.61.0/24"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[chassis]]
name = "c3"
[[network]]
name = "pods"
[[network.subnet]]
cidr = "10.244.0.0/24"
[[network]]
name = "side"
[[network.subnet]]
cidr = "10.245.0.0/24"
[[security_group]]
name = "from-pods"
rules = [
  {{ direction = "ingress", protocol = "icmp", remote_ip_prefix = "10.244.0.0/24" }},
  {{ direction = "ingress", protocol = "tcp", remote_ip_prefix = "10.244.0.0/24" }},
]
[[vm]]
name = "vm1"
network = "pods"
chassis = "c2"
ip = "{VM_IP}"
security_groups = ["from-pods"]
serve = [{{ protocol = "http", port = 8080 }}]
[[vm]]
name = "kvm1"
network = "pods"
chassis = "c3"
ip = "{NODE_IP}"
security_groups = ["from-pods"]
subports = [{{ network = "side", vlan = 1, ip = "10.245.0.10" }}]
[kubernetes]
nodes = ["c1"]
vm_nodes = ["kvm1"]
network = "pods"
[[kubernetes.service]]
name = "web"
selector = {{ app = "web" }}
ports = [{{ port = 80, target_port = "http" }}]
[[kubernetes.pod]]
name = "web-1"
node = "c1"
labels = {{ app = "web" }}
ports = [{{ name = "http", port = 8080 }}]
serve = [{{ protocol = "http", port = 8080 }}]
"#
    );
    if inner {
        text += r#"[[kubernetes.pod]]
name = "inner"
node = "kvm1"
labels = { role = "nested" }
serve = [{ protocol = "http", port = 8080 }]
"#;
    }
    Topology::parse(&text, std::path::Path::new("nested.toml")).expect("topology")
}

fn get(lab: &Lab, path: &str) -> (u16, Value) {
    let (code, body) = api(lab, Method::GET, path, &Value::Null);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// The subports of VM `vm`'s trunk: (port id, VLAN).
fn subports(lab: &Lab, vm: &str) -> Vec<(String, u64)> {
    let parent = lab.port_id(vm).expect("the VM's port");
    let (code, v) = get(lab, &format!("trunks?port_id={parent}"));
    assert_eq!(code, 200, "{v}");
    let trunks = v["trunks"].as_array().cloned().unwrap_or_default();
    assert_eq!(trunks.len(), 1, "one trunk on {vm}'s port: {v}");
    let mut out: Vec<(String, u64)> = trunks[0]["sub_ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["port_id"].as_str().unwrap_or_default().to_owned(),
                s["segmentation_id"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    out.sort_by_key(|s| s.1);
    out
}

/// The ports on the VM's own bridge.
fn bridge_ports(lab: &Lab, vm: &str) -> Vec<String> {
    let (ok, out) = run(lab, vm, &["ovs-vsctl", "list-ports", "br-trunk"]);
    assert!(ok, "ovs-vsctl list-ports br-trunk in {vm}: {out}");
    out.lines().map(str::to_owned).collect()
}

#[test]
fn a_nested_pod_in_a_vm_reaches_pods_vms_and_services() {
    let _alone = support::alone();
    need_binaries();
    let name = format!("np{}", std::process::id());
    let mut lab = Lab::up(&topology(&name, true), &lab_options()).expect("lab up");
    let vm_port = lab.port_id("kvm1").expect("kvm1's port").to_owned();

    // The Node of the VM names its port.
    let node = kube_get(&lab, "/api/v1/nodes/kvm1");
    assert_eq!(
        node["metadata"]["annotations"]["wyvern.io/trunk-port"], vm_port,
        "{node}"
    );

    // The pod's port is a subport on the lowest free VLAN, next to the file's on VLAN 1.
    let pods = lab.pods();
    let inner = pods["inner"].clone();
    assert_eq!(inner.node, "kvm1");
    let file_sub = lab.state().trunks["kvm1"].subports[0].port_id.clone();
    assert_eq!(
        subports(&lab, "kvm1"),
        vec![(file_sub.clone(), 1), (inner.port_id.clone(), 2)]
    );
    // Its tap is an access port of VLAN 2 on the VM's bridge.
    let tap = format!("tap{}", &inner.port_id[..11]);
    assert!(
        bridge_ports(&lab, "kvm1").contains(&tap),
        "{tap} on br-trunk"
    );
    let (_, tag) = run(&lab, "kvm1", &["ovs-vsctl", "get", "Port", &tap, "tag"]);
    assert_eq!(tag.trim(), "2", "{tap}'s tag");

    // The nested pod and a pod on c1: ICMP and TCP both ways.
    let web1 = pods["web-1"].ip.clone();
    pings(&lab, "inner", &web1);
    pings(&lab, "web-1", &inner.ip);
    http_from(&lab, "inner", &format!("http://{web1}:8080/"), "web-1");
    http_from(
        &lab,
        "web-1",
        &format!("http://{}:8080/", inner.ip),
        "inner",
    );
    // ... and a VM on c2.
    pings(&lab, "inner", VM_IP);
    pings(&lab, "vm1", &inner.ip);
    http_from(&lab, "inner", &format!("http://{VM_IP}:8080/"), "vm1");
    http_from(&lab, "vm1", &format!("http://{}:8080/", inner.ip), "inner");
    // The VM node itself (untagged) still reaches the other VM.
    pings(&lab, "kvm1", VM_IP);
    // The Service's ClusterIP, from the nested pod.
    http_from(&lab, "inner", "http://10.96.0.2/", "web-1");

    // `lab status` shows the pod on its VM node.
    let status = lab::status(&name).expect("status").to_string();
    assert!(
        status
            .lines()
            .any(|l| l.contains("pod") && l.contains("inner") && l.contains("on kvm1")),
        "{status}"
    );

    // `up` again leaves the controller's subport alone.
    lab.converge(&topology(&name, true)).expect("up again");
    assert_eq!(
        subports(&lab, "kvm1"),
        vec![(file_sub.clone(), 1), (inner.port_id.clone(), 2)]
    );
    http_from(&lab, "inner", &format!("http://{web1}:8080/"), "web-1");

    // The pod goes: its subport, its port and its tap go; the file's subport stays.
    lab.converge(&topology(&name, false)).expect("the pod goes");
    assert!(!lab.pods().contains_key("inner"));
    until(30, || {
        let subs = subports(&lab, "kvm1");
        let (code, _) = get(&lab, &format!("ports/{}", inner.port_id));
        (subs == vec![(file_sub.clone(), 1)] && code == 404)
            .then_some(())
            .ok_or(format!("subports {subs:?}, the pod's port: {code}"))
    })
    .unwrap();
    assert!(
        !bridge_ports(&lab, "kvm1").contains(&tap),
        "{tap} left on br-trunk"
    );
    assert!(!testbed::Netns::exists(&inner.netns), "the pod's namespace");

    let vswitchd = std::fs::read_to_string(lab.dir().join("kvm1.ovs/ovs-vswitchd.pid"))
        .expect("the VM's ovs-vswitchd.pid");
    let vswitchd = vswitchd.trim().to_owned();
    assert!(std::path::Path::new(&format!("/proc/{vswitchd}")).exists());
    lab.down().expect("lab down");
    assert!(
        !testbed::list_netns()
            .iter()
            .any(|n| n.contains(&format!("-{name}."))),
        "namespaces left behind"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{vswitchd}")).exists(),
        "the VM's ovs-vswitchd {vswitchd} still runs"
    );
}
