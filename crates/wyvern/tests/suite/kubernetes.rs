//! Kubernetes on Wyvern, end to end: a lab with `[kubernetes]` (the in-memory API server with its
//! EndpointSlice controller, the controller `wyvern k8s`, the lab as the kubelet of nodes c1 and
//! c2 running `wyvern-cni`), real Open vSwitch and real packets.
//!
//! The pods are on the file's network `pods` (`[kubernetes] network`, the controller's
//! `--pod-network`), shared with the VM `vm1` on a third chassis, c3. The lab's router `edge`
//! holds the subnet's gateway, so the controller's router joins it through a port of its own:
//! the ClusterIP is still reached from the VM (balanced in the client's chassis).
//!
//! Checked: pods on two nodes reach each other (ICMP, TCP); the VM and the pods on both nodes
//! reach each other (ICMP both ways, TCP); the Service's ClusterIP balances over its pods (from
//! a pod and from the VM, more than one answers); the kubelet's pods show one ready container;
//! the NetworkPolicy (ingress to `app=web` only from `role=client` and the VM's address, TCP
//! 8080) admits the client and refuses another pod; a pod added to
//! the file joins the Service, a pod removed loses its port and its membership; the controller
//! killed while a pod goes and started again converges: one port per pod, no port of the gone
//! pod, members exactly the remaining pods.
//!
//! Needs the binaries `wyvern-kube-apiserver` and `wyvern-cni` next to `wyvern`
//! (`cargo build -p kube-fixture -p cni --bins`).

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use lab::{Lab, Topology};

use crate::support;
use support::kube::{http_from, kube_get, need_binaries, pings, until};
use support::{api, lab_options, run};

fn pod(name: &str, node: &str, labels: &str, web: bool) -> String {
    // Every pod answers on 9090, which the policy never admits; web pods on 8080 too.
    let serve = if web {
        "ports = [{ name = \"http\", port = 8080 }]\nserve = [{ protocol = \"http\", port = 8080 }, { protocol = \"http\", port = 9090 }]\n"
    } else {
        "serve = [{ protocol = \"http\", port = 9090 }]\n"
    };
    format!(
        "[[kubernetes.pod]]\nname = \"{name}\"\nnode = \"{node}\"\nlabels = {{ {labels} }}\n{serve}"
    )
}

/// The VM's address on the pods' network.
const VM_IP: &str = "10.244.0.100";

fn topology(name: &str, webs: &[(&str, &str)]) -> Topology {
    let mut text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.60.0/24"
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
[[router]]
name = "edge"
interfaces = ["pods-1"]
[[security_group]]
name = "from-pods"
rules = [
  {{ direction = "ingress", protocol = "icmp", remote_ip_prefix = "10.244.0.0/24" }},
  {{ direction = "ingress", protocol = "tcp", remote_ip_prefix = "10.244.0.0/24" }},
]
[[vm]]
name = "vm1"
network = "pods"
chassis = "c3"
ip = "{VM_IP}"
security_groups = ["from-pods"]
serve = [{{ protocol = "http", port = 8080 }}]
[kubernetes]
nodes = ["c1", "c2"]
network = "pods"
[[kubernetes.service]]
name = "web"
selector = {{ app = "web" }}
ports = [{{ port = 80, target_port = "http" }}]
[[kubernetes.network_policy]]
name = "web-ingress"
spec = '''{{"podSelector": {{"matchLabels": {{"app": "web"}}}}, "policyTypes": ["Ingress"],
  "ingress": [{{"from": [{{"podSelector": {{"matchLabels": {{"role": "client"}}}}}},
                        {{"ipBlock": {{"cidr": "{VM_IP}/32"}}}}],
               "ports": [{{"protocol": "TCP", "port": 8080}}]}}]}}'''
"#
    );
    text += &pod("client", "c1", "role = \"client\"", false);
    text += &pod("other", "c2", "role = \"other\"", false);
    for (w, node) in webs {
        text += &pod(w, node, "app = \"web\"", true);
    }
    Topology::parse(&text, std::path::Path::new("kubernetes.toml")).expect("topology")
}

/// The pods answering `n` HTTP requests from `from` to `url`.
fn answers(lab: &Lab, from: &str, url: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .filter_map(|_| {
            let (ok, out) = run(lab, from, &["curl", "-s", "-m", "2", url]);
            ok.then(|| out.trim().to_owned())
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn list(lab: &Lab, path: &str, key: &str) -> Vec<Value> {
    let (code, body) = api(lab, Method::GET, path, &Value::Null);
    assert_eq!(code, 200, "GET {path}: {body}");
    let v: Value = serde_json::from_str(&body).expect("JSON");
    v[key].as_array().cloned().unwrap_or_default()
}

/// The addresses of every load-balancer member in the lab.
fn members(lab: &Lab) -> Vec<String> {
    let mut out = Vec::new();
    for pool in list(lab, "lbaas/pools", "pools") {
        let id = pool["id"].as_str().unwrap_or_default();
        for m in list(lab, &format!("lbaas/pools/{id}/members"), "members") {
            out.push(m["address"].as_str().unwrap_or_default().to_owned());
        }
    }
    out.sort();
    out
}

fn pod_ports(lab: &Lab, pod: &str) -> usize {
    list(lab, &format!("ports?tags=k8s-pod:default:{pod}"), "ports").len()
}

fn ip(lab: &Lab, pod: &str) -> String {
    lab.pods()[pod].ip.clone()
}

#[test]
fn pods_services_and_policies_end_to_end() {
    let _alone = support::alone();
    need_binaries();
    let name = format!("k8{}", std::process::id());
    let topo = topology(&name, &[("web-1", "c1"), ("web-2", "c2")]);
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let svc = "http://10.96.0.2/";

    // Pods on two nodes reach each other.
    let other = ip(&lab, "other");
    let client = ip(&lab, "client");
    let (ok, out) = run(&lab, "client", &["ping", "-c", "2", "-W", "2", &other]);
    assert!(ok, "client (c1) -> other (c2): {out}");
    let (ok, out) = run(&lab, "other", &["ping", "-c", "2", "-W", "2", &client]);
    assert!(ok, "other (c2) -> client (c1): {out}");
    // TCP across nodes, admitted by the policy for the client only.
    let web2 = format!("http://{}:8080/", ip(&lab, "web-2"));
    until(20, || {
        let (_, out) = run(&lab, "client", &["curl", "-s", "-m", "2", &web2]);
        (out.trim() == "web-2")
            .then_some(())
            .ok_or(format!("client -> web-2: {out:?}"))
    })
    .unwrap();
    let (ok, out) = run(&lab, "other", &["curl", "-s", "-m", "2", &web2]);
    assert!(!ok, "the policy refuses other -> web-2, got {out:?}");
    // Only its port: the client's TCP to web-2's 9090 is refused too.
    let web2_other_port = format!("http://{}:9090/", ip(&lab, "web-2"));
    let (ok, out) = run(&lab, "client", &["curl", "-s", "-m", "2", &web2_other_port]);
    assert!(
        !ok,
        "the policy admits 8080 only: client -> web-2:9090 got {out:?}"
    );
    // Pods no policy selects stay open both ways: other -> client, web-2 -> other.
    http_from(&lab, "other", &format!("http://{client}:9090/"), "client");
    http_from(&lab, "web-2", &format!("http://{other}:9090/"), "other");

    // The ClusterIP balances over both pods.
    until(30, || {
        let seen = answers(&lab, "client", svc, 12);
        (seen.len() == 2)
            .then_some(())
            .ok_or(format!("{svc} from client: {seen:?}"))
    })
    .unwrap();

    // The VM on c3 shares the pods' network: ICMP both ways with pods on both nodes, TCP.
    let web1 = ip(&lab, "web-1");
    assert!(
        web1.starts_with("10.244.0."),
        "pods on the file's network: {web1}"
    );
    for p in ["client", "other"] {
        pings(&lab, "vm1", &ip(&lab, p));
        pings(&lab, p, VM_IP);
        http_from(&lab, p, &format!("http://{VM_IP}:8080/"), "vm1");
    }
    // The policy admits the VM's address to the web pods (TCP 8080), on both nodes.
    http_from(&lab, "vm1", &format!("http://{web1}:8080/"), "web-1");
    http_from(&lab, "vm1", &web2, "web-2");
    // The ClusterIP from the VM balances over both pods.
    until(30, || {
        let seen = answers(&lab, "vm1", svc, 12);
        (seen.len() == 2)
            .then_some(())
            .ok_or(format!("{svc} from vm1: {seen:?}"))
    })
    .unwrap();

    // The kubelet's pods show one ready container (`kubectl get pods`: READY 1/1).
    let pod = kube_get(&lab, "/api/v1/namespaces/default/pods/client");
    let statuses = pod["status"]["containerStatuses"].as_array().cloned();
    let statuses = statuses.unwrap_or_default();
    assert_eq!(statuses.len(), 1, "{pod}");
    assert_eq!(statuses[0]["name"], pod["spec"]["containers"][0]["name"]);
    assert_eq!(statuses[0]["ready"], true);

    // Scale up: web-3 on c2 joins.
    let topo = topology(&name, &[("web-1", "c1"), ("web-2", "c2"), ("web-3", "c2")]);
    lab.converge(&topo).expect("scale up");
    until(30, || {
        let seen = answers(&lab, "client", svc, 15);
        seen.contains("web-3")
            .then_some(())
            .ok_or(format!("web-3 not behind {svc}: {seen:?}"))
    })
    .unwrap();

    // Scale down: web-1 goes with its port and membership.
    let web1_port = lab.pods()["web-1"].port_id.clone();
    let web1_ip = ip(&lab, "web-1");
    let topo = topology(&name, &[("web-2", "c2"), ("web-3", "c2")]);
    lab.converge(&topo).expect("scale down");
    until(30, || {
        let (code, _) = api(
            &lab,
            Method::GET,
            &format!("ports/{web1_port}"),
            &Value::Null,
        );
        let m = members(&lab);
        (code == 404 && !m.contains(&web1_ip))
            .then_some(())
            .ok_or(format!("web-1's port: {code}, members {m:?}"))
    })
    .unwrap();
    until(20, || {
        let seen = answers(&lab, "client", svc, 12);
        (seen == BTreeSet::from(["web-2".to_owned(), "web-3".to_owned()]))
            .then_some(())
            .ok_or(format!("{svc} after scale-down: {seen:?}"))
    })
    .unwrap();

    // The controller dies; web-2 goes meanwhile; started again it converges.
    lab.kill_k8s_controller().expect("kill the controller");
    let topo = topology(&name, &[("web-3", "c2")]);
    lab.converge(&topo)
        .expect("web-2 goes while the controller is down");
    lab.restart_k8s_controller()
        .expect("restart the controller");
    let web3 = ip(&lab, "web-3");
    until(60, || {
        let counts: Vec<(&str, usize)> = ["client", "other", "web-2", "web-3"]
            .into_iter()
            .map(|p| (p, pod_ports(&lab, p)))
            .collect();
        let m = members(&lab);
        (counts == [("client", 1), ("other", 1), ("web-2", 0), ("web-3", 1)]
            && m == vec![web3.clone()])
        .then_some(())
        .ok_or(format!("ports {counts:?}, members {m:?}"))
    })
    .unwrap();
    until(20, || {
        let seen = answers(&lab, "client", svc, 6);
        (seen == BTreeSet::from(["web-3".to_owned()]))
            .then_some(())
            .ok_or(format!("{svc} after the restart: {seen:?}"))
    })
    .unwrap();

    // The shared network is still the lab's, the VM still on it.
    let net_id = lab.state().networks["pods"].id.clone();
    let (code, body) = api(
        &lab,
        Method::GET,
        &format!("networks/{net_id}"),
        &Value::Null,
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        !body.contains("k8s-cluster"),
        "the network is not tagged: {body}"
    );
    http_from(&lab, "vm1", &format!("http://{web3}:8080/"), "web-3");

    let gone = lab.down().expect("lab down");
    assert!(!gone.is_empty());
    assert!(
        !testbed::list_netns()
            .iter()
            .any(|n| n.contains(&format!("-{name}."))),
        "namespaces left behind"
    );
}
