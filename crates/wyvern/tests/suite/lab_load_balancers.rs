//! The lab's load balancers and the VMs' tiny servers, through the real server and Open
//! vSwitch: 2 chassis, web servers w1 (c1) and w2 (c2) answering HTTP on 8080 and UDP on 5353
//! with their names, a client on c2, a load balancer `web` with an HTTP listener (HTTP monitor)
//! and a UDP listener over them.
//!
//! Checked: the objects the file asks for are in the Octavia API (VIP, listeners, pools with the
//! VMs' addresses as members, the monitor); the servers answer the client with their names over
//! HTTP and UDP (on the VMs' own addresses: the load balancers' datapath is not part of this);
//! `up` again changes nothing; a file without the UDP listener, with another weight and another
//! serve port converges (the listener goes with its pool, the member is replaced, the server
//! restarted), then nothing changes again; `down` leaves nothing behind.

use reqwest::Method;
use serde_json::{Value, json};

use lab::{Lab, Topology};

use crate::support;
use support::{Checks, api, lab_options, run};

fn topology(name: &str, udp: bool, weight: u16, w2_http: u16) -> Topology {
    let udp_listener = if udp {
        r#"[[load_balancer.listener]]
protocol = "UDP"
port = 53
members = [{ vm = "w1", port = 5353 }, { vm = "w2", port = 5353 }]
"#
    } else {
        ""
    };
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.48.0/24"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[network]]
name = "web"
project = "alpha"
[[network.subnet]]
cidr = "10.0.0.0/24"
[[vm]]
name = "w1"
network = "web"
chassis = "c1"
ip = "10.0.0.11"
serve = [{{ protocol = "http", port = 8080 }}, {{ protocol = "udp", port = 5353 }}]
[[vm]]
name = "w2"
network = "web"
chassis = "c2"
ip = "10.0.0.12"
serve = [{{ protocol = "http", port = {w2_http} }}, {{ protocol = "udp", port = 5353 }}]
[[vm]]
name = "client"
network = "web"
chassis = "c2"
[[load_balancer]]
name = "web"
network = "web"
vip = "10.0.0.100"
[[load_balancer.listener]]
protocol = "HTTP"
port = 80
members = [{{ vm = "w1", port = 8080 }}, {{ vm = "w2", port = 8080, weight = {weight} }}]
monitor = {{ type = "HTTP", delay = 1, timeout = 1, max_retries = 2, url_path = "/" }}
{udp_listener}"#
    );
    Topology::parse(&text, std::path::Path::new("lab_load_balancers.toml")).expect("topology")
}

/// `GET /v2.0/<path>` as admin.
fn get(lab: &Lab, path: &str) -> Result<Value, String> {
    let (status, body) = api(lab, Method::GET, path, &Value::Null);
    if status != 200 {
        return Err(format!("GET {path}: {status} {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {path}: {e}: {body}"))
}

/// The members of the listener on `port` as `address:port weight`, sorted.
fn members(lab: &Lab, port: u16) -> Result<Vec<String>, String> {
    let listeners = get(lab, &format!("lbaas/listeners?protocol_port={port}"))?;
    let pool = listeners["listeners"][0]["default_pool_id"]
        .as_str()
        .ok_or(format!("no listener on {port} with a pool: {listeners}"))?
        .to_owned();
    let shown = get(lab, &format!("lbaas/pools/{pool}/members"))?;
    let mut out: Vec<String> = shown["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{}:{} {}", m["address"], m["protocol_port"], m["weight"]))
        .map(|s| s.replace('"', ""))
        .collect();
    out.sort();
    Ok(out)
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

/// What `vm` answers over UDP to the client.
fn udp_answer(lab: &Lab, ip: &str) -> String {
    let script = format!(
        "import socket; s = socket.socket(2, 2); s.settimeout(3); \
         s.sendto(b'hi', ('{ip}', 5353)); print(s.recv(99).decode(), end='')"
    );
    run(lab, "client", &["python3", "-c", &script]).1
}

fn http_answer(lab: &Lab, ip: &str, port: u16) -> String {
    let url = format!("http://{ip}:{port}/");
    run(lab, "client", &["curl", "-s", "-m", "5", &url]).1
}

#[test]
fn load_balancers_and_servers() {
    let _alone = support::alone();
    let name = format!("lb{}", std::process::id() % 100_000);
    let topo = topology(&name, true, 1, 8080);
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("lab load balancers");

    checks.run("the load balancer is in the API with its VIP", || {
        let lbs = get(&lab, "lbaas/loadbalancers?name=web")?;
        let lb = &lbs["loadbalancers"][0];
        expect("vip", &lb["vip_address"], json!("10.0.0.100"))?;
        expect("project", &lb["project_id"], json!("alpha"))?;
        expect(
            "listeners",
            lb["listeners"].as_array().map(Vec::len),
            Some(2),
        )
    });
    checks.run("the pools have the VMs as members, one a monitor", || {
        expect(
            "HTTP members",
            members(&lab, 80)?,
            ["10.0.0.11:8080 1", "10.0.0.12:8080 1"],
        )?;
        expect(
            "UDP members",
            members(&lab, 53)?,
            ["10.0.0.11:5353 1", "10.0.0.12:5353 1"],
        )?;
        let monitors = get(&lab, "lbaas/healthmonitors")?;
        expect(
            "monitors",
            monitors["healthmonitors"].as_array().map(Vec::len),
            Some(1),
        )
    });
    checks.run(
        "the VMs' servers answer with their names (HTTP, UDP)",
        || {
            expect("w1 http", http_answer(&lab, "10.0.0.11", 8080), "w1\n")?;
            expect("w2 http", http_answer(&lab, "10.0.0.12", 8080), "w2\n")?;
            expect("w1 udp", udp_answer(&lab, "10.0.0.11"), "w1\n")?;
            expect("w2 udp", udp_answer(&lab, "10.0.0.12"), "w2\n")
        },
    );
    checks.run("up again changes nothing", || {
        let changes = lab.converge(&topo).map_err(|e| e.to_string())?;
        expect("changes", changes, Vec::<String>::new())
    });

    let changed = topology(&name, false, 3, 8081);
    checks.run("a changed file converges", || {
        let changes = lab.converge(&changed).map_err(|e| e.to_string())?;
        println!("{}", changes.join("\n"));
        let listeners = get(&lab, "lbaas/listeners")?;
        expect(
            "listeners",
            listeners["listeners"].as_array().map(Vec::len),
            Some(1),
        )?;
        let pools = get(&lab, "lbaas/pools")?;
        expect("pools", pools["pools"].as_array().map(Vec::len), Some(1))?;
        expect(
            "HTTP members",
            members(&lab, 80)?,
            ["10.0.0.11:8080 1", "10.0.0.12:8080 3"],
        )?;
        expect("w2 on 8081", http_answer(&lab, "10.0.0.12", 8081), "w2\n")?;
        let changes = lab.converge(&changed).map_err(|e| e.to_string())?;
        expect("changes the second time", changes, Vec::<String>::new())
    });

    let dir = lab.dir().to_owned();
    let gone = lab.down().expect("lab down");
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
        expect("namespaces left", left, Vec::<String>::new())?;
        if gone.iter().any(|g| g.contains("serve")) {
            Ok(())
        } else {
            Err(format!("no server was stopped: {gone:?}"))
        }
    });
    let failed = checks.report();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
