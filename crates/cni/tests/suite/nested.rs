//! Nested mode (a pod inside a VM whose port is a trunk). Against a stub of the API: the trunk
//! API is Neutron's (`GET /v2.0/trunks/<id>` with `sub_ports`), served here with canned
//! answers. The lookup is tested through the library; the whole `ADD` with kernel VLANs through
//! the binary, run in a "VM" namespace whose `eth0` carries the trunk. With `"vlan": "ovs"`
//! against real parts: Wyvern's trunk API in-process, a testbed chassis standing in for the
//! VM's own Open vSwitch (`br-trunk`, its trunk port a veth to a second chassis, the far end of
//! the trunk, which pops each VLAN to a host of its own), and pods on two VLANs pinging across.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use cni::neutron::Neutron;
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Host, HostOpts, Netns, Relay};

use crate::support::{Answer, Rest, Server, invoke, link_in, links_in};

const NET: &str = "6e700000-0000-4000-8000-000000000001";
const SUBNET: &str = "5b000000-0000-4000-8000-000000000001";
const TRUNK: &str = "7a000000-0000-4000-8000-000000000001";
const SUBPORT: &str = "5e000000-0000-4000-8000-000000000001";
const MAC: &str = "fa:16:3e:12:34:56";

/// Canned answers by path and query, and the headers of every request.
#[derive(Default)]
struct Stub {
    answers: HashMap<String, Value>,
    seen: Mutex<Vec<HeaderMap>>,
}

async fn answer(State(stub): State<Arc<Stub>>, uri: Uri, headers: HeaderMap) -> impl IntoResponse {
    stub.seen.lock().unwrap().push(headers);
    let key = uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
    match stub.answers.get(key) {
        Some(v) => (StatusCode::OK, axum::Json(v.clone())),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"NeutronError": {"type": "NotFound", "message": key}})),
        ),
    }
}

/// A stub API on the test's loopback.
struct StubServer {
    addr: std::net::SocketAddr,
    stub: Arc<Stub>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StubServer {
    fn start(answers: HashMap<String, Value>) -> StubServer {
        let stub = Arc::new(Stub {
            answers,
            ..Stub::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(stub.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        StubServer {
            addr,
            stub,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for StubServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn subport(owner: &str) -> Value {
    json!({
        "id": SUBPORT, "network_id": NET, "mac_address": MAC,
        "device_owner": owner, "device_id": TRUNK,
        "fixed_ips": [{"subnet_id": SUBNET, "ip_address": "10.90.0.7"}],
        "tags": ["k8s-pod:default:nested-0"]
    })
}

/// The stub's answers for a trunk whose subport is `sub` (segmentation type and id).
fn answers(port: Value, sub: Value) -> HashMap<String, Value> {
    HashMap::from([
        (
            "/v2.0/ports?tags=k8s-pod%3Adefault%3Anested-0".to_owned(),
            json!({"ports": [port]}),
        ),
        (
            format!("/v2.0/networks/{NET}"),
            json!({"network": {"id": NET, "mtu": 1450}}),
        ),
        (
            format!("/v2.0/subnets/{SUBNET}"),
            json!({"subnet": {"id": SUBNET, "cidr": "10.90.0.0/24", "gateway_ip": "10.90.0.1",
                              "host_routes": [], "dns_nameservers": ["10.90.0.3"]}}),
        ),
        (
            format!("/v2.0/trunks/{TRUNK}"),
            json!({"trunk": trunk(&sub)}),
        ),
        (
            "/v2.0/trunks".to_owned(),
            json!({"trunks": [
                {"id": "7a000000-0000-4000-8000-0000000000ff", "sub_ports": []},
                trunk(&sub)
            ]}),
        ),
    ])
}

fn trunk(sub: &Value) -> Value {
    json!({"id": TRUNK, "port_id": "9a000000-0000-4000-8000-000000000001", "sub_ports": [sub]})
}

fn vlan_sub(id: u64) -> Value {
    json!({"port_id": SUBPORT, "segmentation_type": "vlan", "segmentation_id": id})
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_subports_vlan_comes_from_its_trunk() {
    let server = StubServer::start(answers(subport("trunk:subport"), vlan_sub(101)));
    let api = Neutron::with_headers(&server.base(), vec![("X-Project-Id", "p1".into())]).unwrap();
    let rt = rt();
    let port = rt
        .block_on(api.wait_port("k8s-pod:default:nested-0", std::time::Duration::ZERO))
        .unwrap();
    let att = rt.block_on(api.attachment(&port, true)).unwrap();
    assert_eq!(att.vlan, Some(101));
    assert_eq!(att.mac, MAC);
    assert_eq!(att.mtu, Some(1450));
    assert_eq!(att.addresses[0].cidr(), "10.90.0.7/24");
    assert_eq!(att.routes[0].dst, "0.0.0.0/0");
    assert_eq!(att.nameservers, ["10.90.0.3"]);
    // Host mode does not ask for the trunk.
    assert_eq!(
        rt.block_on(api.attachment(&port, false)).unwrap().vlan,
        None
    );
    let seen = server.stub.seen.lock().unwrap();
    assert!(
        seen.iter()
            .all(|h| h.get("x-project-id").is_some_and(|v| v == "p1"))
    );
}

#[test]
fn ports_that_are_no_vlan_subports_are_refused() {
    let rt = rt();
    let cases = [
        (
            subport("trunk:subport"),
            json!({"port_id": "other", "segmentation_type": "vlan", "segmentation_id": 5}),
            "subport of no trunk",
        ),
        (
            subport("compute:nova"),
            json!({"port_id": "other", "segmentation_type": "vlan", "segmentation_id": 5}),
            "subport of no trunk",
        ),
        (
            subport("trunk:subport"),
            json!({"port_id": SUBPORT, "segmentation_type": "inherit", "segmentation_id": 5}),
            "only vlan",
        ),
        (
            subport("trunk:subport"),
            vlan_sub(4095),
            "bad segmentation_id",
        ),
    ];
    for (port, sub, why) in cases {
        let server = StubServer::start(answers(port.clone(), sub));
        let api = Neutron::with_headers(&server.base(), vec![]).unwrap();
        let e = rt.block_on(api.attachment(&port, true)).unwrap_err();
        assert_eq!(e.code(), 100, "{e}");
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
    // The trunk device_id names is gone (404) and no listed trunk holds the port.
    let mut a = answers(subport("trunk:subport"), vlan_sub(7));
    a.remove(&format!("/v2.0/trunks/{TRUNK}"));
    a.insert("/v2.0/trunks".into(), json!({"trunks": []}));
    let server = StubServer::start(a);
    let api = Neutron::with_headers(&server.base(), vec![]).unwrap();
    let e = rt
        .block_on(api.attachment(&subport("trunk:subport"), true))
        .unwrap_err();
    assert_eq!(e.code(), 100, "{e}");
    assert!(e.to_string().contains("subport of no trunk"), "{e}");
}

#[test]
fn a_subport_without_device_id_is_found_in_the_trunk_list() {
    // What Neutron and Wyvern show: device_owner trunk:subport, no device_id.
    let mut port = subport("trunk:subport");
    port["device_id"] = json!("");
    let mut a = answers(port.clone(), vlan_sub(42));
    a.remove(&format!("/v2.0/trunks/{TRUNK}"));
    let server = StubServer::start(a);
    let api = Neutron::with_headers(&server.base(), vec![]).unwrap();
    assert_eq!(rt().block_on(api.subport_vlan(&port)).unwrap(), 42);
    // A device_id naming a trunk that does not hold the port: the list decides.
    let mut port = subport("trunk:subport");
    port["device_id"] = json!("7a000000-0000-4000-8000-0000000000ff");
    let mut a = answers(port.clone(), vlan_sub(43));
    a.insert(
        "/v2.0/trunks/7a000000-0000-4000-8000-0000000000ff".into(),
        json!({"trunk": {"id": "7a000000-0000-4000-8000-0000000000ff", "sub_ports": []}}),
    );
    let server = StubServer::start(a);
    let api = Neutron::with_headers(&server.base(), vec![]).unwrap();
    assert_eq!(rt().block_on(api.subport_vlan(&port)).unwrap(), 43);
}

/// True if this kernel can make 802.1Q interfaces (probed in a scratch namespace).
fn kernel_has_vlans() -> bool {
    let ns = Netns::create('q').expect("scratch namespace");
    ns.ip(&[
        "link", "add", "probe0", "type", "veth", "peer", "name", "probe1",
    ])
    .expect("veth");
    ns.ip(&[
        "link", "add", "link", "probe0", "name", "probe0.9", "type", "vlan", "id", "9",
    ])
    .is_ok()
}

#[test]
fn nested_add_and_del_through_the_binary() {
    let server = StubServer::start(answers(subport("trunk:subport"), vlan_sub(101)));
    // The VM: its eth0 carries the trunk (a veth whose peer stays inside, for the test).
    let vm = Netns::create('v').expect("VM namespace");
    vm.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ])
    .unwrap();
    vm.ip(&["link", "set", "eth0", "up"]).unwrap();
    vm.ip(&["link", "set", "eth0p", "up"]).unwrap();
    let fwd = Relay::start(vm.name(), server.addr).expect("relay the API into the namespace");
    let pod = Netns::create('p').expect("pod namespace");
    let netns = format!("/var/run/netns/{}", pod.name());
    let conf = json!({
        "cniVersion": "1.0.0", "name": "nested", "type": "wyvern-cni",
        "api_url": fwd.url(), "mode": "nested", "trunk_interface": "eth0",
        "project_id": "p-vm", "roles": "member", "port_wait": 1
    });
    let env = |command: &'static str| {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "feedface"),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=nested-0",
            ),
        ]
    };
    let vm_links = || {
        let mut names: Vec<String> = links_in(vm.name())
            .iter()
            .map(|l| l["ifname"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    let add = invoke(Some(vm.name()), &env("ADD"), &conf);
    let headers = server.stub.seen.lock().unwrap().clone();
    assert!(!headers.is_empty());
    assert!(
        headers
            .iter()
            .all(|h| h.get("x-project-id").is_some_and(|v| v == "p-vm")
                && h.get("x-roles").is_some_and(|v| v == "member"))
    );
    if kernel_has_vlans() {
        assert!(add.ok, "{add:?}");
        assert_eq!(
            add.doc["interfaces"],
            json!([{"name": "eth0", "mac": MAC, "sandbox": netns}])
        );
        assert_eq!(add.doc["ips"][0]["address"], "10.90.0.7/24");
        let eth0 = link_in(pod.name(), "eth0").expect("eth0 in the pod");
        assert_eq!(eth0["address"], MAC);
        assert_eq!(eth0["mtu"], 1450);
        let mut prev = conf.clone();
        prev["prevResult"] = add.doc.clone();
        let check = invoke(Some(vm.name()), &env("CHECK"), &prev);
        assert!(check.ok, "{check:?}");
        for _ in 0..2 {
            let del = invoke(Some(vm.name()), &env("DEL"), &prev);
            assert!(del.ok, "{del:?}");
        }
        assert!(link_in(pod.name(), "eth0").is_none());
    } else {
        // This machine's kernel has no 802.1Q driver: ADD reports it and leaves nothing.
        eprintln!("nested ADD: this kernel cannot create VLAN interfaces; checking the failure");
        add.assert_failed(102, "creating VLAN 101 on eth0");
        assert!(link_in(pod.name(), "eth0").is_none());
        let del = invoke(Some(vm.name()), &env("DEL"), &conf);
        assert!(del.ok, "{del:?}");
    }
    assert_eq!(vm_links(), ["eth0", "eth0p", "lo"]);
}

#[test]
fn the_vlan_comes_from_wyverns_own_trunk_api() {
    let server = crate::support::Server::start();
    let api = crate::support::Rest::new(&server.base);
    let (vm_net, _) = api.network(81, 1450, false);
    let (pod_net, _) = api.network(82, 1450, false);
    let parent = api.port(&vm_net, &[]);
    let sub = api.port(&pod_net, &["k8s-pod:default:nested-1"]);
    api.create(
        "trunks",
        "trunk",
        json!({"port_id": parent["id"], "sub_ports": [
            {"port_id": sub["id"], "segmentation_type": "vlan", "segmentation_id": 123}
        ]}),
    );
    let client = Neutron::with_headers(&server.base, vec![]).unwrap();
    let rt = rt();
    let port = rt
        .block_on(client.wait_port("k8s-pod:default:nested-1", std::time::Duration::ZERO))
        .unwrap();
    assert_eq!(port["device_owner"], "trunk:subport", "{port}");
    let att = rt.block_on(client.attachment(&port, true)).unwrap();
    assert_eq!(att.vlan, Some(123));
    assert_eq!(att.mtu, Some(1450));
    assert_eq!(att.mac, sub["mac_address"].as_str().unwrap());
}

/// The VM's bridge in the `"vlan": "ovs"` test, and its trunk port.
const VM_BRIDGE: &str = "br-trunk";
const VM_TRUNK: &str = "trunk0";
/// The far end of the trunk: a bridge with the trunk port and one access port per VLAN.
const FAR_BRIDGE: &str = "br-far";
const FAR_TRUNK: &str = "trunk0p";
/// The pods' subnet, the same on both VLANs (two networks with one CIDR), so that only the
/// tags keep them apart.
const POD_CIDR: &str = "10.95.0.0/24";

/// A userspace bridge switching normally (`priority=0,actions=NORMAL`) on `ch`.
fn normal_bridge(ch: &Chassis, bridge: &str) {
    ch.add_bridge(bridge).expect("a bridge");
    ch.ovs_ofctl(&["add-flow", bridge, "priority=0,actions=NORMAL"])
        .expect("the NORMAL flow");
}

/// One pod on a VLAN of the trunk: its port, namespace and the far side's host on its VLAN.
struct VlanPod {
    vid: u16,
    port: Value,
    ip: String,
    pod: Netns,
    far: Host,
    far_ip: String,
    container: String,
}

impl VlanPod {
    fn tap(&self) -> String {
        cni::plugin::tap_name(self.port["id"].as_str().unwrap())
    }

    fn netns(&self) -> String {
        format!("/var/run/netns/{}", self.pod.name())
    }

    fn args(&self) -> String {
        format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME=vlan-{}", self.vid)
    }

    /// `ping` from the pod: true if a reply came back.
    fn reaches(&self, ip: &str) -> bool {
        self.pod
            .exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", ip])
            .is_ok()
    }
}

#[test]
fn nested_pods_tag_through_the_vms_open_vswitch() {
    let server = Server::start();
    let api = Rest::new(&server.base);
    // The VM's port (the trunk's parent) and a network per VLAN, both with POD_CIDR.
    let (vm_net, _) = api.network(94, 1450, false);
    let parent = api.port(&vm_net, &[]);
    let vm = Chassis::start("cni-vm", &ChassisOpts::default()).expect("the VM's Open vSwitch");
    normal_bridge(&vm, VM_BRIDGE);
    let far = Chassis::start("cni-far", &ChassisOpts::default()).expect("the trunk's far end");
    normal_bridge(&far, FAR_BRIDGE);
    vm.netns()
        .ip(&[
            "link",
            "add",
            VM_TRUNK,
            "type",
            "veth",
            "peer",
            "name",
            FAR_TRUNK,
            "netns",
            far.netns().name(),
        ])
        .expect("the trunk's veth");
    vm.netns().ip(&["link", "set", VM_TRUNK, "up"]).unwrap();
    far.netns().ip(&["link", "set", FAR_TRUNK, "up"]).unwrap();
    // Trunk ports: no tag, every VLAN.
    vm.ovs_vsctl(&["add-port", VM_BRIDGE, VM_TRUNK]).unwrap();
    far.ovs_vsctl(&["add-port", FAR_BRIDGE, FAR_TRUNK]).unwrap();

    let mut pods = Vec::new();
    let mut sub_ports = Vec::new();
    for (i, vid) in [(0u8, 101u16), (1, 102)] {
        let net = api.create(
            "networks",
            "network",
            json!({"name": format!("vlan-{vid}"), "mtu": 1400}),
        );
        let subnet = api.create(
            "subnets",
            "subnet",
            json!({"network_id": net["id"], "ip_version": 4, "cidr": POD_CIDR,
                   "gateway_ip": "10.95.0.1"}),
        );
        let ip = format!("10.95.0.{}", 10 + i);
        let port = api.port_with(
            &net,
            json!({"fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ip}]}),
            &[&format!("k8s-pod:default:vlan-{vid}")],
        );
        sub_ports.push(
            json!({"port_id": port["id"], "segmentation_type": "vlan", "segmentation_id": vid}),
        );
        // The far side pops the VLAN to a host with an address in the pods' subnet.
        let far_ip = format!("10.95.0.{}", 201 + i);
        let host = Host::create(
            &far,
            &HostOpts {
                ip: Some(format!("{far_ip}/24")),
                mtu: Some(1400),
                ..HostOpts::default()
            },
        )
        .expect("a host behind the far end");
        far.ovs_vsctl(&["add-port", FAR_BRIDGE, host.port(), &format!("tag={vid}")])
            .unwrap();
        pods.push(VlanPod {
            vid,
            port,
            ip,
            pod: Netns::create('p').expect("pod namespace"),
            far: host,
            far_ip,
            container: format!("c0ffee{vid}"),
        });
    }
    api.create(
        "trunks",
        "trunk",
        json!({"port_id": parent["id"], "sub_ports": sub_ports}),
    );

    // The plugin runs in the VM (the chassis' namespace), the API forwarded into it.
    let fwd =
        Relay::start(vm.netns().name(), server.addr()).expect("relay the API into the namespace");
    let conf = |bridge: &str| {
        json!({
            "cniVersion": "1.0.0", "name": "nested", "type": "wyvern-cni",
            "api_url": fwd.url(), "mode": "nested", "vlan": "ovs",
            "vm_bridge": bridge, "vm_ovsdb": vm.db_endpoint(), "port_wait": 2
        })
    };
    let cni = |command: &str, p: &VlanPod, conf: &Value| -> Answer {
        let netns = p.netns();
        let args = p.args();
        invoke(
            Some(vm.netns().name()),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", &p.container),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", &args),
            ],
            conf,
        )
    };
    let vm_ports = || {
        let mut ports: Vec<String> = vm
            .ovs_vsctl(&["list-ports", VM_BRIDGE])
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        ports.sort();
        ports
    };
    let vm_taps = || {
        links_in(vm.netns().name())
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("tap"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    // A bridge the VM does not have: ADD fails and leaves nothing behind.
    cni("ADD", &pods[0], &conf("br-missing")).assert_failed(102, "br-missing");
    assert!(vm_taps().is_empty(), "{:?}", vm_taps());
    assert!(link_in(pods[0].pod.name(), "eth0").is_none());
    assert_eq!(vm_ports(), [VM_TRUNK]);

    let conf = conf(VM_BRIDGE);
    let mut results = Vec::new();
    for p in &pods {
        let add = cni("ADD", p, &conf);
        assert!(add.ok, "ADD on VLAN {}: {add:?}", p.vid);
        let mac = p.port["mac_address"].as_str().unwrap();
        let tap = p.tap();
        // (a) The result and the pod's interface, as host mode makes them.
        assert_eq!(add.doc["interfaces"][0]["name"], tap.as_str());
        assert_eq!(
            add.doc["interfaces"][1],
            json!({"name": "eth0", "mac": mac, "sandbox": p.netns()})
        );
        assert_eq!(
            add.doc["ips"],
            json!([{"address": format!("{}/24", p.ip), "gateway": "10.95.0.1", "interface": 1}])
        );
        let eth0 = link_in(p.pod.name(), "eth0").expect("eth0 in the pod");
        assert_eq!(eth0["address"], mac);
        assert_eq!(eth0["mtu"], 1400);
        assert!(eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
        let routes = p.pod.ip(&["route", "show"]).unwrap();
        assert!(
            routes.contains("default via 10.95.0.1 dev eth0"),
            "{routes}"
        );
        assert!(routes.contains("10.95.0.0/24 dev eth0"), "{routes}");
        let offload = p.pod.exec(&["ethtool", "-k", "eth0"]).unwrap();
        assert!(offload.contains("tx-checksumming: off"), "{offload}");
        assert_eq!(
            link_in(vm.netns().name(), &tap).expect("the VM's end")["mtu"],
            1400
        );
        // (b) The VM's end: an access port of the subport's VLAN, no Neutron identity.
        assert_eq!(
            vm.ovs_vsctl(&["port-to-br", &tap]).unwrap().trim(),
            VM_BRIDGE
        );
        assert_eq!(
            vm.ovs_vsctl(&["get", "Port", &tap, "tag"]).unwrap().trim(),
            p.vid.to_string()
        );
        let ids = vm
            .ovs_vsctl(&["get", "Interface", &tap, "external_ids"])
            .unwrap();
        assert_eq!(
            ids.trim(),
            format!("{{wyvern-cni-owner=\"{}/eth0\"}}", p.container)
        );
        vm.wait_until(Duration::from_secs(10), || {
            vm.ovs_vsctl(&["get", "Interface", &tap, "ofport"])
                .is_ok_and(|o| o.trim().parse::<i64>().is_ok_and(|n| n > 0))
        })
        .expect("the VM's vswitchd opens the port");
        let mut prev = conf.clone();
        prev["prevResult"] = add.doc.clone();
        let check = cni("CHECK", p, &prev);
        assert!(check.ok, "CHECK on VLAN {}: {check:?}", p.vid);
        results.push(prev);
    }

    // (c) Real frames: each pod reaches the far host of its VLAN, popped from the trunk ...
    for p in &pods {
        assert!(
            p.reaches(&p.far_ip),
            "VLAN {}: the pod does not reach {}",
            p.vid,
            p.far_ip
        );
        assert!(p.far.ping(&p.ip, 2).is_ok(), "VLAN {}: no way back", p.vid);
    }
    // ... having crossed it tagged: the far bridge learned each pod's MAC on the trunk port,
    // in the pod's VLAN.
    let trunk_ofport = far
        .ovs_vsctl(&["get", "Interface", FAR_TRUNK, "ofport"])
        .unwrap()
        .trim()
        .to_owned();
    let fdb = far.ovs_appctl(&["fdb/show", FAR_BRIDGE]).unwrap();
    for p in &pods {
        let mac = p.port["mac_address"].as_str().unwrap();
        let learned = fdb.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 3 && f[0] == trunk_ofport && f[1] == p.vid.to_string() && f[2] == mac
        });
        assert!(
            learned,
            "{mac} on VLAN {} via the trunk port:\n{fdb}",
            p.vid
        );
    }
    // Nothing crosses between the VLANs, although every address is in one subnet.
    let (a, b) = (&pods[0], &pods[1]);
    assert!(!a.reaches(&b.ip), "VLAN {} reaches VLAN {}", a.vid, b.vid);
    assert!(
        !a.reaches(&b.far_ip),
        "VLAN {} reaches far {}",
        a.vid,
        b.vid
    );
    assert!(
        !b.reaches(&a.far_ip),
        "VLAN {} reaches far {}",
        b.vid,
        a.vid
    );

    // CHECK notices a port moved to another VLAN.
    vm.ovs_vsctl(&["set", "Port", &b.tap(), "tag=999"]).unwrap();
    cni("CHECK", b, &results[1]).assert_failed(103, "has tag Some(999)");

    // (d) DEL twice each (the second one without prevResult): nothing is left.
    for (p, prev) in pods.iter().zip(&results) {
        for (round, c) in [prev, &conf].into_iter().enumerate() {
            let del = cni("DEL", p, c);
            assert!(del.ok, "DEL {round} on VLAN {}: {del:?}", p.vid);
            assert_eq!(del.doc, Value::Null);
        }
        assert!(link_in(p.pod.name(), "eth0").is_none());
    }
    assert!(vm_taps().is_empty(), "{:?}", vm_taps());
    assert_eq!(vm_ports(), [VM_TRUNK]);
    let interfaces = vm
        .ovs_vsctl(&["--bare", "--columns=name", "list", "Interface"])
        .unwrap();
    let mut interfaces: Vec<&str> = interfaces.split_whitespace().collect();
    interfaces.sort();
    assert_eq!(interfaces, [VM_BRIDGE, VM_TRUNK]);
}
