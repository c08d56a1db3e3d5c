//! Host mode against real parts: a testbed chassis (its own `ovsdb-server` and `ovs-vswitchd`,
//! userspace datapath, `br-int`), Wyvern's API on an embedded store with ports tagged for
//! pods, fresh pod namespaces, and the real `wyvern-cni` binary run inside the chassis'
//! namespace (where, on a real chassis, the host namespace would be).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Netns, Relay};

use crate::support::{Agent, Answer, Rest, Server, invoke, link_in, links_in};

/// A chassis with `br-int`, the API (forwarded into the chassis' namespace) and a client.
struct Bed {
    chassis: Chassis,
    api: Rest,
    fwd: Relay,
    _server: Server,
}

impl Bed {
    fn start() -> Bed {
        let server = Server::start();
        let chassis = Chassis::start("cni1", &ChassisOpts::default()).expect("start a chassis");
        chassis.add_bridge("br-int").expect("br-int");
        let fwd = Relay::start(chassis.netns().name(), server.addr())
            .expect("relay the API into the namespace");
        Bed {
            api: Rest::new(&server.base),
            chassis,
            fwd,
            _server: server,
        }
    }

    /// The plugin configuration for this bed, with `extra` keys.
    fn conf(&self, extra: Value) -> Value {
        let mut c = json!({
            "cniVersion": "1.0.0",
            "name": "wyvern",
            "type": "wyvern-cni",
            "api_url": self.fwd.url(),
            "ovsdb": self.chassis.db_endpoint(),
            "port_wait": 2,
            // No Wyvern agent on this chassis unless a test starts one: nothing would mark the
            // VIFs installed.
            "install_wait": 0
        });
        for (k, v) in extra.as_object().expect("an object") {
            c[k] = v.clone();
        }
        c
    }

    /// Runs the plugin in the chassis' namespace.
    fn cni(&self, command: &str, pod: &Netns, args: &str, conf: &Value) -> Answer {
        let netns = format!("/var/run/netns/{}", pod.name());
        invoke(
            Some(self.chassis.netns().name()),
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", "0123456789abcdef"),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
                ("CNI_PATH", "/opt/cni/bin"),
            ],
            conf,
        )
    }

    /// The OVS interfaces of the chassis (name → external_ids as `ovs-vsctl` prints them).
    fn ovs_interfaces(&self) -> Vec<(String, String)> {
        let out = self
            .chassis
            .ovs_vsctl(&[
                "--format=csv",
                "--no-headings",
                "--columns=name,external_ids",
                "list",
                "Interface",
            ])
            .expect("list interfaces");
        out.lines()
            .filter_map(|l| l.split_once(','))
            .map(|(n, ids)| (n.trim_matches('"').to_owned(), ids.to_owned()))
            .filter(|(n, _)| n != "br-int")
            .collect()
    }

    fn chassis_has_link(&self, name: &str) -> bool {
        link_in(self.chassis.netns().name(), name).is_some()
    }
}

fn tap(port: &Value) -> String {
    format!("tap{}", &port["id"].as_str().unwrap()[..11])
}

fn addresses(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn add_check_del_in_host_mode() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(71, 1400, true);
    let port = bed.api.port(&net, &["k8s-pod:default:web-0", "other"]);
    let mac = port["mac_address"].as_str().unwrap().to_owned();
    let ips: Vec<&str> = port["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["ip_address"].as_str().unwrap())
        .collect();
    assert_eq!(ips.len(), 2, "{port}");
    let v4 = ips.iter().find(|a| !a.contains(':')).unwrap().to_string();
    let v6 = ips.iter().find(|a| a.contains(':')).unwrap().to_string();
    let pod = Netns::create('p').expect("pod namespace");
    let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef";
    let conf = bed.conf(json!({}));

    let add = bed.cni("ADD", &pod, args, &conf);
    assert!(add.ok, "ADD failed: {add:?}");
    let tap = tap(&port);
    let sandbox = format!("/var/run/netns/{}", pod.name());
    let r = &add.doc;
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["interfaces"][0]["name"], tap.as_str());
    assert!(r["interfaces"][0].get("sandbox").is_none());
    assert_eq!(
        r["interfaces"][1],
        json!({"name": "eth0", "mac": mac, "sandbox": sandbox})
    );
    assert_eq!(
        r["ips"],
        json!([
            {"address": format!("{v4}/24"), "gateway": "10.71.0.1", "interface": 1},
            {"address": format!("{v6}/64"), "gateway": "fd47::1", "interface": 1}
        ])
    );
    assert_eq!(
        r["routes"],
        json!([
            {"dst": "0.0.0.0/0", "gw": "10.71.0.1"},
            {"dst": "::/0", "gw": "fd47::1"},
            {"dst": "192.168.71.0/24", "gw": "10.71.0.254"}
        ])
    );
    assert_eq!(r["dns"], json!({"nameservers": ["10.71.0.2"]}));

    // The pod's interface.
    let eth0 = link_in(pod.name(), "eth0").expect("eth0 in the pod");
    assert_eq!(eth0["address"], mac.as_str());
    assert_eq!(eth0["mtu"], 1400);
    assert!(eth0["flags"].as_array().unwrap().iter().any(|f| f == "UP"));
    assert_eq!(addresses(&eth0), [format!("{v4}/24"), format!("{v6}/64")]);
    let routes = pod.ip(&["route", "show"]).unwrap();
    assert!(
        routes.contains("default via 10.71.0.1 dev eth0"),
        "{routes}"
    );
    assert!(
        routes.contains("192.168.71.0/24 via 10.71.0.254 dev eth0"),
        "{routes}"
    );
    let routes6 = pod.ip(&["-6", "route", "show"]).unwrap();
    assert!(
        routes6.contains("default via fd47::1 dev eth0"),
        "{routes6}"
    );
    let offload = pod.exec(&["ethtool", "-k", "eth0"]).unwrap();
    assert!(offload.contains("tx-checksumming: off"), "{offload}");
    // The host end, on br-int with the port's identity.
    let host = link_in(bed.chassis.netns().name(), &tap).expect("the host end");
    assert_eq!(host["mtu"], 1400);
    assert_eq!(
        bed.chassis.ovs_vsctl(&["port-to-br", &tap]).unwrap().trim(),
        "br-int"
    );
    let get = |key: &str| {
        bed.chassis
            .ovs_vsctl(&["get", "Interface", &tap, &format!("external_ids:{key}")])
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    assert_eq!(get("iface-id"), port["id"].as_str().unwrap());
    assert_eq!(get("attached-mac"), mac);
    assert_eq!(get("iface-status"), "active");
    assert_eq!(get("wyvern-cni-owner"), "0123456789abcdef/eth0");
    // vswitchd opened it.
    bed.chassis
        .wait_until(Duration::from_secs(10), || {
            bed.chassis
                .ovs_vsctl(&["get", "Interface", &tap, "ofport"])
                .is_ok_and(|o| o.trim().parse::<i64>().is_ok_and(|p| p > 0))
        })
        .expect("vswitchd gives the port an OpenFlow number");

    // CHECK with the result passes.
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = add.doc.clone();
    let check = bed.cni("CHECK", &pod, args, &with_prev);
    assert!(check.ok, "CHECK failed: {check:?}");
    assert_eq!(check.doc, Value::Null);
    // ... and fails once the pod's interface no longer matches.
    pod.ip(&["addr", "del", &format!("{v4}/24"), "dev", "eth0"])
        .unwrap();
    bed.cni("CHECK", &pod, args, &with_prev)
        .assert_failed(103, &v4);

    // ADD again (no DEL) refuses: eth0 exists.
    let again = bed.cni("ADD", &pod, args, &conf);
    assert!(!again.ok);
    assert!(
        again.doc["details"].as_str().unwrap().contains("exists"),
        "{again:?}"
    );

    // DEL twice: both succeed, nothing is left.
    for round in 0..2 {
        let del = bed.cni("DEL", &pod, args, &with_prev);
        assert!(del.ok, "DEL {round}: {del:?}");
        assert_eq!(del.doc, Value::Null);
    }
    assert!(link_in(pod.name(), "eth0").is_none());
    assert!(!bed.chassis_has_link(&tap));
    assert!(
        bed.ovs_interfaces().is_empty(),
        "{:?}",
        bed.ovs_interfaces()
    );
}

/// The flows of `br-int` that match on OpenFlow port `ofport`.
fn flows_from(chassis: &Chassis, ofport: &str) -> Vec<String> {
    let dump = chassis
        .ovs_ofctl(&["--no-names", "dump-flows", "br-int"])
        .unwrap_or_default();
    let matching = format!("in_port={ofport}");
    dump.lines()
        .filter(|l| l.split([',', ' ']).any(|t| t == matching))
        .map(str::to_owned)
        .collect()
}

#[test]
fn add_waits_until_the_agent_installed_the_flows() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(76, 1400, false);
    let port = bed.api.port(&net, &["k8s-pod:default:db-0"]);
    let pod = Netns::create('p').expect("pod namespace");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=db-0";
    let tap = tap(&port);

    // No agent: nothing marks the VIF; ADD gives up after install_wait, asks to try again
    // later, and leaves nothing behind.
    let started = Instant::now();
    let add = bed.cni("ADD", &pod, args, &bed.conf(json!({"install_wait": 0.8})));
    let took = started.elapsed();
    add.assert_failed(11, "wyvern-installed");
    assert!(took >= Duration::from_millis(800), "gave up after {took:?}");
    assert!(!bed.chassis_has_link(&tap));
    assert!(link_in(pod.name(), "eth0").is_none());
    assert!(
        bed.ovs_interfaces().is_empty(),
        "{:?}",
        bed.ovs_interfaces()
    );

    // With the chassis' agent (and the default wait): when ADD answers, the flows are in.
    let agent = Agent::start(&bed._server.base, &bed.chassis);
    let conf = bed.conf(json!({}));
    let mut conf = conf;
    conf.as_object_mut().unwrap().remove("install_wait");
    let add = bed.cni("ADD", &pod, args, &conf);
    assert!(add.ok, "{add:?}");
    assert!(agent.running());
    let get = |column: &str| {
        bed.chassis
            .ovs_vsctl(&["get", "Interface", &tap, column])
            .unwrap()
            .trim()
            .trim_matches('"')
            .to_owned()
    };
    assert_eq!(get("external_ids:wyvern-installed"), "true");
    let ofport = get("ofport");
    assert!(
        !flows_from(&bed.chassis, &ofport).is_empty(),
        "ADD answered, br-int has no flows for port {ofport}"
    );
    let del = bed.cni("DEL", &pod, args, &conf);
    assert!(del.ok, "{del:?}");
    assert!(!bed.chassis_has_link(&tap));
}

#[test]
fn del_without_namespace_or_prev_result_cleans_up() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(72, 1450, false);
    let port = bed
        .api
        .port(&net, &["k8s-pod-uid:5c1d9a7e-0b1f-4f3c-8d2e-6a7b8c9d0e1f"]);
    let pod = Netns::create('p').expect("pod namespace");
    let args =
        "K8S_POD_UID=5c1d9a7e-0b1f-4f3c-8d2e-6a7b8c9d0e1f;K8S_POD_NAMESPACE=x;K8S_POD_NAME=y";
    let conf = bed.conf(json!({"cniVersion": "0.4.0"}));
    let add = bed.cni("ADD", &pod, args, &conf);
    assert!(add.ok, "{add:?}");
    // The result speaks the configuration's version.
    assert_eq!(add.doc["cniVersion"], "0.4.0");
    assert_eq!(add.doc["ips"][0]["version"], "4");
    let tap = tap(&port);
    assert!(bed.chassis_has_link(&tap));
    // The pod goes away (its namespace with it, which takes the veth along), then the port.
    let pod_name = pod.name().to_owned();
    drop(pod);
    bed.api.call(
        reqwest::Method::DELETE,
        &format!("ports/{}", port["id"].as_str().unwrap()),
        None,
    );
    // DEL with neither the namespace nor prevResult still removes the OVS port.
    let netns = format!("/var/run/netns/{pod_name}");
    for _ in 0..2 {
        let del = invoke(
            Some(bed.chassis.netns().name()),
            &[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "0123456789abcdef"),
                ("CNI_NETNS", &netns),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", args),
            ],
            &conf,
        );
        assert!(del.ok, "{del:?}");
    }
    assert!(!bed.chassis_has_link(&tap));
    assert!(
        bed.ovs_interfaces().is_empty(),
        "{:?}",
        bed.ovs_interfaces()
    );
}

#[test]
fn add_waits_for_the_port_then_asks_to_try_again() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(73, 1400, false);
    let pod = Netns::create('p').expect("pod namespace");
    let conf = bed.conf(json!({"port_wait": 0.6}));
    let started = Instant::now();
    let add = bed.cni(
        "ADD",
        &pod,
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=ghost",
        &conf,
    );
    let took = started.elapsed();
    add.assert_failed(11, "k8s-pod:default:ghost");
    assert!(took >= Duration::from_millis(600), "gave up after {took:?}");
    assert!(link_in(pod.name(), "eth0").is_none());

    // A port that appears while ADD waits (a controller lagging the kubelet) is used.
    let conf = bed.conf(json!({"port_wait": 20}));
    let late = std::thread::scope(|s| {
        let waiting = s.spawn(|| {
            bed.cni(
                "ADD",
                &pod,
                "K8S_POD_NAMESPACE=default;K8S_POD_NAME=late",
                &conf,
            )
        });
        std::thread::sleep(Duration::from_millis(700));
        let port = bed.api.port(&net, &["k8s-pod:default:late"]);
        (waiting.join().expect("ADD ran"), port)
    });
    let (add, port) = late;
    assert!(add.ok, "{add:?}");
    assert_eq!(add.doc["interfaces"][1]["mac"], port["mac_address"]);
    let del = bed.cni(
        "DEL",
        &pod,
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=late",
        &conf,
    );
    assert!(del.ok, "{del:?}");
    assert!(bed.ovs_interfaces().is_empty());
}

#[test]
fn a_failed_add_leaves_nothing_behind() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(74, 1400, false);
    let port = bed.api.port(&net, &["k8s-pod:default:web-1"]);
    let pod = Netns::create('p').expect("pod namespace");
    let args = "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1";
    let before = links_in(bed.chassis.netns().name()).len();
    // No such bridge: the last step fails.
    let add = bed.cni(
        "ADD",
        &pod,
        args,
        &bed.conf(json!({"bridge": "br-missing"})),
    );
    add.assert_failed(102, "br-missing");
    assert!(!bed.chassis_has_link(&tap(&port)));
    assert_eq!(links_in(bed.chassis.netns().name()).len(), before);
    assert!(link_in(pod.name(), "eth0").is_none());
    assert!(
        bed.ovs_interfaces().is_empty(),
        "{:?}",
        bed.ovs_interfaces()
    );
    // Two ports with the pod's tag: refused before anything is made.
    bed.api.port(&net, &["k8s-pod:default:web-1"]);
    let add = bed.cni("ADD", &pod, args, &bed.conf(json!({})));
    assert_eq!(add.code(), 101, "{add:?}");
    assert!(!bed.chassis_has_link(&tap(&port)));
    // A namespace that does not exist: code 3.
    let add = invoke(
        Some(bed.chassis.netns().name()),
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/var/run/netns/wyt-no-such-namespace"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", args),
        ],
        &bed.conf(json!({})),
    );
    assert_eq!(add.code(), 3, "{add:?}");
}

/// What one `ADD` costs here (no agent, so no wait for flows: `install_wait` 0), as the median
/// and 90th percentile of 30: `cargo test -p cni --test suite -- --ignored add_latency
/// --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn add_latency() {
    let bed = Bed::start();
    let (net, _) = bed.api.network(75, 1400, false);
    let conf = bed.conf(json!({"install_wait": 0}));
    let mut took = Vec::new();
    for i in 0..30 {
        let name = format!("lat-{i}");
        bed.api.port(&net, &[&format!("k8s-pod:default:{name}")]);
        let pod = Netns::create('p').expect("pod namespace");
        let args = format!("K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}");
        let started = Instant::now();
        let add = bed.cni("ADD", &pod, &args, &conf);
        took.push(started.elapsed());
        assert!(add.ok, "{add:?}");
        let del = bed.cni("DEL", &pod, &args, &conf);
        assert!(del.ok, "{del:?}");
    }
    took.sort();
    println!(
        "ADD: p50 {:?}, p90 {:?}, min {:?} (30 runs)",
        took[took.len() / 2],
        took[took.len() * 9 / 10],
        took[0]
    );
}
