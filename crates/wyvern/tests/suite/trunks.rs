//! Trunk ports (VLAN-aware VMs) end to end, with real packets through the lab: 2 chassis with
//! Open vSwitch and agents; VM `tvm` on c1 is a trunk's parent on net1, with subports on net2
//! (VLAN 101) and net3 (VLAN 102), tagged inside the VM by its own Open vSwitch; `v1` (net1) and
//! `v2` (net2) on c2, `v3` (net3) on c1.
//!
//! Checked: the agent of c1 made a patch pair per subport; from the VM, untagged traffic (its own
//! address) reaches v1 on the other chassis, VLAN 101 traffic reaches v2 there and VLAN 102
//! traffic v3 on its own chassis, by ping and TCP; the subport's own security group (no ICMP in)
//! is honoured where the parent's (ICMP in) lets pings through; `up` again changes nothing;
//! removing the subport on VLAN 102 from the trunk (through the API: the VM still tags) stops its
//! traffic (its pair and flows go) while VLAN 101 keeps working, and `up` puts it back; a file
//! without that subport removes its port. Every check runs even when an earlier one failed; the lab is torn
//! down in any case (dropping it does, also on a panic), and so are the servers the test starts.

use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support;
use support::{
    Checks, Outcome, Servers, agents_in_sync, api, lab_options, reply_ttl, run, silent, tcp_reaches,
};

const PORT: u16 = 7100;

/// The lab's file; `second` says whether the VM has its subport on VLAN 102.
fn topology(name: &str, second: bool) -> Topology {
    let second = if second {
        r#", { network = "net3", vlan = 102, ip = "10.51.3.10", security_groups = ["open"] }"#
    } else {
        ""
    };
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.57.0/24"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[network]]
name = "net1"
[[network.subnet]]
cidr = "10.51.1.0/24"
[[network]]
name = "net2"
[[network.subnet]]
cidr = "10.51.2.0/24"
[[network]]
name = "net3"
[[network.subnet]]
cidr = "10.51.3.0/24"
[[security_group]]
name = "open"
rules = [
  {{ direction = "ingress", protocol = "tcp" }},
  {{ direction = "ingress", protocol = "icmp" }},
]
[[security_group]]
name = "noicmp"
rules = [{{ direction = "ingress", protocol = "tcp" }}]
[[vm]]
name = "tvm"
network = "net1"
chassis = "c1"
ip = "10.51.1.10"
security_groups = ["open"]
subports = [{{ network = "net2", vlan = 101, ip = "10.51.2.10", security_groups = ["noicmp"] }}{second}]
[[vm]]
name = "v1"
network = "net1"
chassis = "c2"
ip = "10.51.1.11"
security_groups = ["open"]
[[vm]]
name = "v2"
network = "net2"
chassis = "c2"
ip = "10.51.2.11"
security_groups = ["open"]
[[vm]]
name = "v3"
network = "net3"
chassis = "c1"
ip = "10.51.3.11"
security_groups = ["open"]
"#
    );
    Topology::parse(&text, std::path::Path::new("trunks.toml")).expect("topology")
}

/// `check` holds within `timeout` (tried every half second).
fn eventually(timeout: Duration, mut check: impl FnMut() -> Outcome) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `from` reaches `ip` (VM `vm`) by ping and by TCP.
fn reaches(lab: &Lab, from: &str, ip: &str, vm: &str) -> Outcome {
    eventually(Duration::from_secs(20), || {
        reply_ttl(lab, from, ip)?;
        tcp_reaches(lab, from, ip, PORT, vm)
    })
}

/// The names of the subports' patch-pair ends on chassis `c1`'s `br-int`.
fn pair_ends(lab: &Lab) -> Vec<String> {
    let Some(ch) = lab.chassis("c1") else {
        return Vec::new();
    };
    let out = ch
        .ovs_vsctl(&["--bare", "--columns=name", "list", "Interface"])
        .unwrap_or_default();
    let mut ends: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("spt") || n.starts_with("spi"))
        .map(str::to_owned)
        .collect();
    ends.sort();
    ends
}

#[test]
fn trunk_subports_carry_their_networks_tagged() {
    let _alone = support::alone();
    let name = format!("tk{}", std::process::id() % 100_000);
    let topo = topology(&name, true);
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("trunk ports");
    checks.run("agents in sync", || agents_in_sync(&lab, &["c1", "c2"]));
    let servers = Servers::start(
        &lab,
        &[("v1", PORT), ("v2", PORT), ("v3", PORT), ("tvm", PORT)],
    );

    checks.run("c1 has a patch pair per subport", || {
        let ends = eventually(Duration::from_secs(20), || {
            let n = pair_ends(&lab).len();
            if n == 4 {
                Ok(())
            } else {
                Err(format!("{n} ends: {:?}", pair_ends(&lab)))
            }
        });
        ends.map_err(|e| {
            format!(
                "{e}; the VM's bridge: {:?}",
                run(&lab, "tvm", &["ip", "-br", "link"])
            )
        })
    });
    checks.run("untagged: the parent reaches v1 on c2", || {
        reaches(&lab, "tvm", "10.51.1.11", "v1")
    });
    checks.run("VLAN 101: the subport reaches v2 on c2", || {
        reaches(&lab, "tvm", "10.51.2.11", "v2")
    });
    checks.run("VLAN 102: the subport reaches v3 on c1", || {
        reaches(&lab, "tvm", "10.51.3.11", "v3")
    });
    checks.run(
        "the subport's group (no ICMP in) is honoured, the parent's (ICMP in) too",
        || {
            reply_ttl(&lab, "v1", "10.51.1.10")?;
            silent(&lab, "v2", "10.51.2.10")?;
            tcp_reaches(&lab, "v2", "10.51.2.10", PORT, "tvm")
        },
    );
    checks.run("up again changes nothing", || {
        let changes = lab.converge(&topo).map_err(|e| e.to_string())?;
        if changes.is_empty() {
            Ok(())
        } else {
            Err(format!("changes: {changes:?}"))
        }
    });

    checks.run(
        "the subport on VLAN 102 removed: its traffic stops, VLAN 101's goes on",
        || {
            // Through the API: the VM still tags its frames with 102; the switch drops them.
            let trunk = lab.state().trunks.get("tvm").cloned().ok_or("no trunk")?;
            let sub = trunk
                .subports
                .iter()
                .find(|s| s.vlan == 102)
                .ok_or("no subport on VLAN 102")?;
            let body = json!({"sub_ports": [{"port_id": sub.port_id}]});
            let path = format!("trunks/{}/remove_subports", trunk.trunk_id);
            let (status, answer) = api(&lab, Method::PUT, &path, &body);
            if status != 200 {
                return Err(format!("remove_subports: {status} {answer}"));
            }
            eventually(Duration::from_secs(20), || {
                let n = pair_ends(&lab).len();
                if n == 2 {
                    Ok(())
                } else {
                    Err(format!("{n} ends: {:?}", pair_ends(&lab)))
                }
            })?;
            silent(&lab, "tvm", "10.51.3.11")?;
            let ch = lab.chassis("c1").ok_or("no c1")?;
            let flows = ch
                .ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
                .map_err(|e| e.to_string())?;
            if flows.contains("dl_vlan=102") {
                return Err(format!("VLAN 102 still has flows: {flows}"));
            }
            reaches(&lab, "tvm", "10.51.2.11", "v2")
        },
    );
    checks.run(
        "up puts the subport back, and its traffic flows again",
        || {
            let changes = lab.converge(&topo).map_err(|e| e.to_string())?;
            println!("{}", changes.join("\n"));
            reaches(&lab, "tvm", "10.51.3.11", "v3")
        },
    );
    let without = topology(&name, false);
    checks.run("a file without the subport: its port goes too", || {
        let port = lab
            .state()
            .trunks
            .get("tvm")
            .and_then(|t| t.subports.iter().find(|s| s.vlan == 102))
            .map(|s| s.port_id.clone())
            .ok_or("no subport on VLAN 102")?;
        let changes = lab.converge(&without).map_err(|e| e.to_string())?;
        println!("{}", changes.join("\n"));
        let (status, _) = api(&lab, Method::GET, &format!("ports/{port}"), &Value::Null);
        if status != 404 {
            return Err(format!("the subport's port: {status}"));
        }
        reaches(&lab, "tvm", "10.51.2.11", "v2")
    });
    drop(servers);
    let failed = checks.report();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
