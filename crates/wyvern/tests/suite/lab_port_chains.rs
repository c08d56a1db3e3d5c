//! The lab's service functions and port chains, through the real server and Open vSwitch: 3
//! chassis, VMs a and b (c1, b answering HTTP on 8080), service functions fw (c2) and ids (c3),
//! a port chain `web` from a to b (TCP 80 and 8080) through fw, then ids.
//!
//! Checked: the objects the file asks for are in networking-sfc's API (pairs of the service
//! functions' ingress and egress ports, groups in order, classifiers of a's and b's ports, the
//! chain); the service functions' ports have no port security, their two interfaces are ports
//! of an up bridge; a and b reach each other directly (the chains' datapath is not part of
//! this); `up` again changes nothing; a file with the groups the other way round and one
//! classifier converges (the chain made again), then nothing changes; a file without the chain,
//! ids no longer a service function, converges (chain, groups, pairs, classifiers and ids'
//! egress port gone); `down` leaves nothing behind.

use reqwest::Method;
use serde_json::{Value, json};

use lab::{Lab, Topology};

use crate::support;
use support::{Checks, api, lab_options, run};

/// The lab's file: `chain` its `[[port_chain]]` entry (empty: none), `ids_sf` whether ids is a
/// service function.
fn topology(name: &str, chain: &str, ids_sf: bool) -> Topology {
    let ids_sf = if ids_sf { "sf = {}" } else { "" };
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.50.0/24"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[chassis]]
name = "c3"
[[network]]
name = "net1"
[[network.subnet]]
cidr = "10.0.0.0/24"
[[vm]]
name = "a"
network = "net1"
chassis = "c1"
ip = "10.0.0.11"
[[vm]]
name = "b"
network = "net1"
chassis = "c1"
ip = "10.0.0.12"
serve = [{{ protocol = "http", port = 8080 }}]
[[vm]]
name = "fw"
network = "net1"
chassis = "c2"
ip = "10.0.0.21"
sf = {{ network = "net1" }}
[[vm]]
name = "ids"
network = "net1"
chassis = "c3"
ip = "10.0.0.22"
{ids_sf}
{chain}"#
    );
    Topology::parse(&text, std::path::Path::new("lab_port_chains.toml")).expect("topology")
}

const CHAIN: &str = r#"[[port_chain]]
name = "web"
groups = [["fw"], ["ids"]]
classifiers = [
  { source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 80 },
  { source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 8080 },
]
"#;

const REVERSED: &str = r#"[[port_chain]]
name = "web"
groups = [["ids"], ["fw"]]
classifiers = [
  { source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 8080 },
]
"#;

/// `GET /v2.0/<path>` as admin.
fn get(lab: &Lab, path: &str) -> Result<Value, String> {
    let (status, body) = api(lab, Method::GET, path, &Value::Null);
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

/// `GET /v2.0/sfc/<collection>`: the objects.
fn list(lab: &Lab, collection: &str) -> Result<Vec<Value>, String> {
    let v = get(lab, &format!("sfc/{collection}"))?;
    Ok(v[collection].as_array().cloned().unwrap_or_default())
}

fn expect(
    what: &str,
    have: impl std::fmt::Debug,
    want: impl std::fmt::Debug,
) -> Result<(), String> {
    let (h, w) = (format!("{have:?}"), format!("{want:?}"));
    if h == w {
        Ok(())
    } else {
        Err(format!("{what}: {h}, wanted {w}"))
    }
}

/// The ingress and egress port ids of service function `vm`.
fn sf_ports(lab: &Lab, vm: &str) -> (String, String) {
    let ingress = lab.port_id(vm).unwrap_or_default().to_owned();
    let egress = lab
        .state()
        .service_functions
        .get(vm)
        .map(|s| s.egress_port_id.clone())
        .unwrap_or_default();
    (ingress, egress)
}

/// The chain `web` as the API shows it: its groups' pairs' VMs (by the pairs' names) in order,
/// its classifiers' destination ports.
fn chain_shape(lab: &Lab) -> Result<(Vec<Vec<String>>, Vec<Value>), String> {
    let chains = list(lab, "port_chains")?;
    let [chain] = chains.as_slice() else {
        return Err(format!("not one chain: {chains:?}"));
    };
    let pairs = list(lab, "port_pairs")?;
    let groups = list(lab, "port_pair_groups")?;
    let classifiers = list(lab, "flow_classifiers")?;
    let name_of = |id: &Value, of: &[Value]| {
        of.iter()
            .find(|o| &o["id"] == id)
            .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_else(|| format!("missing {id}"))
    };
    let mut path = Vec::new();
    for g in chain["port_pair_groups"].as_array().into_iter().flatten() {
        let group = groups
            .iter()
            .find(|o| &o["id"] == g)
            .ok_or(format!("no group {g}"))?;
        let members = group["port_pairs"].as_array().cloned().unwrap_or_default();
        path.push(members.iter().map(|p| name_of(p, &pairs)).collect());
    }
    let ports = chain["flow_classifiers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| classifiers.iter().find(|o| &o["id"] == f))
        .map(|f| f["destination_port_range_min"].clone())
        .collect();
    Ok((path, ports))
}

#[test]
fn service_functions_and_port_chains() {
    let _alone = support::alone();
    let name = format!("sfc{}", std::process::id() % 100_000);
    let topo = topology(&name, CHAIN, true);
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("lab port chains");

    checks.run("the port pairs are the service functions' ports", || {
        let pairs = list(&lab, "port_pairs")?;
        expect("pairs", pairs.len(), 2)?;
        for vm in ["fw", "ids"] {
            let (ingress, egress) = sf_ports(&lab, vm);
            let pair = pairs
                .iter()
                .find(|p| p["name"] == vm)
                .ok_or(format!("no pair {vm}"))?;
            expect("ingress", &pair["ingress"], json!(ingress))?;
            expect("egress", &pair["egress"], json!(egress))?;
            expect(
                "correlation",
                &pair["service_function_parameters"]["correlation"],
                Value::Null,
            )?;
        }
        Ok(())
    });
    checks.run(
        "the chain: groups in order, classifiers of a's port",
        || {
            let (path, ports) = chain_shape(&lab)?;
            expect("groups", path, [["fw"], ["ids"]])?;
            expect("classifier ports", ports, [json!(80), json!(8080)])?;
            let chain = &list(&lab, "port_chains")?[0];
            expect(
                "chain_parameters",
                &chain["chain_parameters"],
                json!({"correlation": "mpls", "symmetric": false}),
            )?;
            let fc = &list(&lab, "flow_classifiers")?[0];
            expect(
                "source",
                &fc["logical_source_port"],
                json!(lab.port_id("a").unwrap_or_default()),
            )?;
            expect(
                "destination",
                &fc["logical_destination_port"],
                json!(lab.port_id("b").unwrap_or_default()),
            )
        },
    );
    checks.run(
        "the service functions' ports have no port security, a bridge joins them",
        || {
            for vm in ["fw", "ids"] {
                let (ingress, egress) = sf_ports(&lab, vm);
                for port in [ingress, egress] {
                    let p = get(&lab, &format!("ports/{port}"))?;
                    expect(
                        "port security",
                        &p["port"]["port_security_enabled"],
                        json!(false),
                    )?;
                }
                let (ok, out) = run(&lab, vm, &["ip", "-o", "link", "show", "master", "br0"]);
                if !ok || !out.contains("eth0") || !out.contains("eth1") {
                    return Err(format!("{vm}: br0's ports: {out}"));
                }
                let (_, br) = run(&lab, vm, &["ip", "-o", "link", "show", "br0"]);
                if !br.contains("state UP") && !br.contains(",UP") {
                    return Err(format!("{vm}: br0 is not up: {br}"));
                }
            }
            Ok(())
        },
    );
    checks.run("a reaches b directly", || {
        let (_, out) = run(
            &lab,
            "a",
            &["curl", "-s", "-m", "5", "http://10.0.0.12:8080/"],
        );
        expect("b's answer", out, "b\n")
    });
    checks.run("up again changes nothing", || {
        let changes = lab.converge(&topo).map_err(|e| e.to_string())?;
        expect("changes", changes, Vec::<String>::new())
    });

    let reversed = topology(&name, REVERSED, true);
    checks.run(
        "the groups the other way round: the chain is made again",
        || {
            let changes = lab.converge(&reversed).map_err(|e| e.to_string())?;
            println!("{}", changes.join("\n"));
            let (path, ports) = chain_shape(&lab)?;
            expect("groups", path, [["ids"], ["fw"]])?;
            expect("classifier ports", ports, [json!(8080)])?;
            expect("pairs", list(&lab, "port_pairs")?.len(), 2)?;
            expect("classifiers", list(&lab, "flow_classifiers")?.len(), 1)?;
            let changes = lab.converge(&reversed).map_err(|e| e.to_string())?;
            expect("changes the second time", changes, Vec::<String>::new())
        },
    );

    let without = topology(&name, "", false);
    checks.run("without the chain, ids a plain VM: everything goes", || {
        let (_, egress) = sf_ports(&lab, "ids");
        let changes = lab.converge(&without).map_err(|e| e.to_string())?;
        println!("{}", changes.join("\n"));
        for collection in [
            "port_chains",
            "port_pair_groups",
            "port_pairs",
            "flow_classifiers",
        ] {
            expect(collection, list(&lab, collection)?.len(), 0)?;
        }
        let (status, _) = api(&lab, Method::GET, &format!("ports/{egress}"), &Value::Null);
        expect("ids' egress port", status, 404)?;
        let (ok, _) = run(&lab, "ids", &["ip", "link", "show", "br0"]);
        expect("ids has a bridge", ok, false)?;
        let changes = lab.converge(&without).map_err(|e| e.to_string())?;
        expect("changes the second time", changes, Vec::<String>::new())
    });

    let dir = lab.dir().to_owned();
    lab.down().expect("lab down");
    checks.run("down leaves nothing behind", || {
        if dir.exists() {
            return Err(format!("{} is still there", dir.display()));
        }
        let prefix = format!("wyl-{name}.");
        let out = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .map_err(|e| e.to_string())?;
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        expect("namespaces left", left, Vec::<String>::new())
    });
    let failed = checks.report();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
