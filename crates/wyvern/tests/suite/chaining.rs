//! Service function chaining end to end, with real packets through the lab: 3 chassis with Open
//! vSwitch and agents; network net1 with VM a on c1 and VM b on c2 (b answers HTTP on 8080 and
//! 8081 with its name); service-function VMs (a Linux bridge between their two ports, a bump in
//! the wire) fw on c2, ids1 on c3 and ids2 on c1 (a group of two pairs), lbl on c3, an
//! MPLS-aware one, and rev on c2. Chain `web`: a's TCP to b's port 8080 through fw, then ids1 or
//! ids2; chain `tagged` (symmetric): a's TCP to b's port 8081 through lbl, then rev.
//!
//! Checked: a's requests to 8080 are answered and pass fw before ids (capture timestamps of one
//! SYN on both), `wyvern trace` names the chain, the hop and fw's pair, other traffic (ping, port 9999 closed: refused at once) passes no function; twenty
//! connections spread over ids1 and ids2, each answered (a connection split over both would not
//! be); the MPLS-aware function sees the label on its wire; the symmetric chain's replies pass
//! rev, then lbl (capture timestamps of one reply, in at their egress legs); updating the chain (ids dropped) redirects only classified traffic,
//! and deleting it restores direct traffic.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support;
use support::{Checks, Outcome, api, lab_options, run};

const FUNCTIONS: [&str; 5] = ["fw", "ids1", "ids2", "lbl", "rev"];

fn topology(name: &str) -> Topology {
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.50.0/24"
encap = "geneve"
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
chassis = "c2"
ip = "10.0.0.12"
serve = [{{ protocol = "http", port = 8080 }}, {{ protocol = "http", port = 8081 }}]
[[vm]]
name = "fw"
network = "net1"
chassis = "c2"
sf = {{}}
[[vm]]
name = "ids1"
network = "net1"
chassis = "c3"
sf = {{}}
[[vm]]
name = "ids2"
network = "net1"
chassis = "c1"
sf = {{}}
[[vm]]
name = "lbl"
network = "net1"
chassis = "c3"
sf = {{ mpls = true }}
[[vm]]
name = "rev"
network = "net1"
chassis = "c2"
sf = {{}}
[[port_chain]]
name = "web"
groups = [["fw"], ["ids1", "ids2"]]
classifiers = [{{ source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 8080 }}]
[[port_chain]]
name = "tagged"
groups = [["lbl"], ["rev"]]
classifiers = [{{ source_vm = "a", destination_vm = "b", protocol = "tcp", destination_port = 8081 }}]
symmetric = true
"#
    );
    Topology::parse(&text, std::path::Path::new("chaining.toml")).expect("topology")
}

/// Frames a function's interface received (`rx`) or sent (`tx`), from its counters.
fn frames(lab: &Lab, vm: &str, dev: &str, rx: bool) -> Result<u64, String> {
    let (ok, out) = run(
        lab,
        vm,
        &[
            "cat",
            &format!(
                "/sys/class/net/{dev}/statistics/{}_packets",
                if rx { "rx" } else { "tx" }
            ),
        ],
    );
    if !ok {
        return Err(format!("{vm} {dev}: {out}"));
    }
    out.trim()
        .parse()
        .map_err(|e| format!("{vm} {dev}: {e}: {out}"))
}

/// What each function passed on so far, from its ingress to its egress (its bridge passes unicast
/// only, so nothing flooded on the network counts).
fn received(lab: &Lab) -> Result<Vec<u64>, String> {
    FUNCTIONS
        .iter()
        .map(|f| frames(lab, f, "eth1", false))
        .collect()
}

fn http(lab: &Lab, port: u16) -> (bool, String) {
    run(
        lab,
        "a",
        &[
            "curl",
            "-s",
            "-m",
            "3",
            &format!("http://10.0.0.12:{port}/"),
        ],
    )
}

/// tcpdump in a VM's namespace, started and ready (its "listening on" line read), killed when
/// dropped.
struct Capture(Child);

impl Capture {
    fn start(lab: &Lab, vm: &str, dev: &str, filter: &str) -> Result<Capture, String> {
        let netns = format!("wyl-{}.{vm}", lab.name());
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &netns, "tcpdump", "-ttnl", "-c", "50", "-i", dev,
            ])
            .args(filter.split_whitespace())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
        let started = Instant::now();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(_)) => {}
                _ => return Err("tcpdump ended before listening".into()),
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("tcpdump not listening".into());
            }
        }
        Ok(Capture(child))
    }

    /// What it captured, after `wait` (it is stopped then).
    fn lines(mut self, wait: Duration) -> Vec<String> {
        std::thread::sleep(wait);
        let _ = self.0.kill();
        let mut out = String::new();
        if let Some(mut s) = self.0.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut s, &mut out);
        }
        let _ = self.0.wait();
        out.lines().map(str::to_owned).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The capture time of the first line mentioning `what`.
fn first_time(lines: &[String], what: &str) -> Option<f64> {
    lines
        .iter()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
}

fn chain_id(lab: &Lab, name: &str) -> Result<String, String> {
    let (status, body) = api(
        lab,
        Method::GET,
        &format!("sfc/port_chains?name={name}"),
        &Value::Null,
    );
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}"))?;
    v["port_chains"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or(format!("no chain {name}: {body}"))
}

fn grew(before: &[u64], after: &[u64], i: usize) -> bool {
    after[i] > before[i]
}

#[test]
fn chaining() {
    let _alone = support::alone();
    let name = format!("ch{}", std::process::id() % 100_000);
    let topo = topology(&name);
    // Dropping the lab tears it down, also when the test panics.
    let lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("service function chaining");

    checks.run("classified traffic passes fw, then ids; answered", || {
        // The agents program the chain shortly after the lab is up.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let before = received(&lab)?;
            let (ok, body) = http(&lab, 8080);
            let after = received(&lab)?;
            if ok
                && body == "b\n"
                && grew(&before, &after, 0)
                && (grew(&before, &after, 1) || grew(&before, &after, 2))
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "answered {ok} {body:?}; functions received {before:?} -> {after:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // One SYN, seen by fw before ids.
        let fw = Capture::start(
            &lab,
            "fw",
            "eth0",
            "tcp port 8080 and tcp[tcpflags] & tcp-syn != 0",
        )?;
        let ids1 = Capture::start(
            &lab,
            "ids1",
            "eth0",
            "tcp port 8080 and tcp[tcpflags] & tcp-syn != 0",
        )?;
        let ids2 = Capture::start(
            &lab,
            "ids2",
            "eth0",
            "tcp port 8080 and tcp[tcpflags] & tcp-syn != 0",
        )?;
        let (ok, _) = run(
            &lab,
            "a",
            &[
                "curl",
                "-s",
                "-m",
                "3",
                "--local-port",
                "41234",
                "http://10.0.0.12:8080/",
            ],
        );
        let (fw, ids1, ids2) = (
            fw.lines(Duration::from_millis(500)),
            ids1.lines(Duration::ZERO),
            ids2.lines(Duration::ZERO),
        );
        let at_fw = first_time(&fw, ".41234 >").ok_or(format!("fw saw no SYN: {fw:?}"))?;
        let at_ids = first_time(&ids1, ".41234 >")
            .or_else(|| first_time(&ids2, ".41234 >"))
            .ok_or(format!("no ids saw the SYN: {ids1:?} {ids2:?}"))?;
        if ok && at_fw < at_ids {
            Ok(())
        } else {
            Err(format!("answered {ok}; fw at {at_fw}, ids at {at_ids}"))
        }
    });
    checks.run("trace names the chain, its hop and the pair", || {
        let out = Command::new(env!("CARGO_BIN_EXE_wyvern"))
            .args([
                "trace",
                "--lab",
                lab.name(),
                "--from-switch",
                "a",
                "10.0.0.12",
                "--tcp",
                "8080",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success()
            && text.contains("port chain")
            && text.contains("hop 1")
            && text.contains("(fw)")
        {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    checks.run("other traffic passes no function", || {
        let before = received(&lab)?;
        let (ping, _) = run(&lab, "a", &["ping", "-c", "3", "-i", "0.2", "-W", "1", "10.0.0.12"]);
        let started = Instant::now();
        let (open, _) = run(&lab, "a", &["curl", "-s", "-m", "3", "http://10.0.0.12:9999/"]);
        let refused_in = started.elapsed();
        let after = received(&lab)?;
        if ping && !open && refused_in < Duration::from_secs(2) && before == after {
            Ok(())
        } else {
            Err(format!("ping {ping}, port 9999 {open} after {refused_in:?}; functions {before:?} -> {after:?}"))
        }
    });
    checks.run(
        "twenty connections spread over ids1 and ids2, each answered",
        || {
            let before = received(&lab)?;
            for i in 0..20 {
                let (ok, body) = http(&lab, 8080);
                if !ok || body != "b\n" {
                    return Err(format!("connection {i}: {ok} {body:?}"));
                }
            }
            let after = received(&lab)?;
            if grew(&before, &after, 1) && grew(&before, &after, 2) {
                Ok(())
            } else {
                Err(format!("functions {before:?} -> {after:?}"))
            }
        },
    );
    checks.run(
        "the symmetric chain's replies pass its functions in reverse order",
        || {
            // Replies go in at the functions' egress legs: rev (the last hop) first, then lbl.
            let rev = Capture::start(&lab, "rev", "eth1", "tcp src port 8081")?;
            let lbl = Capture::start(&lab, "lbl", "eth1", "tcp src port 8081 or mpls")?;
            let (ok, _) = run(
                &lab,
                "a",
                &[
                    "curl",
                    "-s",
                    "-m",
                    "3",
                    "--local-port",
                    "41235",
                    "http://10.0.0.12:8081/",
                ],
            );
            let (rev, lbl) = (
                rev.lines(Duration::from_millis(500)),
                lbl.lines(Duration::ZERO),
            );
            let at_rev = first_time(&rev, ".41235:").ok_or(format!("rev saw no reply: {rev:?}"))?;
            let at_lbl = first_time(&lbl, ".41235:").ok_or(format!("lbl saw no reply: {lbl:?}"))?;
            if ok && at_rev < at_lbl {
                Ok(())
            } else {
                Err(format!(
                    "answered {ok}; reply at rev {at_rev}, at lbl {at_lbl}"
                ))
            }
        },
    );
    checks.run("the MPLS-aware function sees the label; replies pass it in reverse", || {
        let label = Capture::start(&lab, "lbl", "eth0", "mpls")?;
        // Replies go in at the egress leg: the bridge passes them on to the ingress leg.
        let before_egress = frames(&lab, "lbl", "eth0", false)?;
        let (ok, body) = http(&lab, 8081);
        let seen = label.lines(Duration::from_millis(500));
        let after_egress = frames(&lab, "lbl", "eth0", false)?;
        if ok && body == "b\n" && seen.iter().any(|l| l.contains("MPLS")) && after_egress > before_egress {
            Ok(())
        } else {
            Err(format!("answered {ok} {body:?}; labelled frames {seen:?}; replies in at egress {before_egress} -> {after_egress}"))
        }
    });
    checks.run("a chain update redirects only classified traffic", || {
        let id = chain_id(&lab, "web")?;
        let (status, body) = api(
            &lab,
            Method::GET,
            &format!("sfc/port_chains/{id}"),
            &Value::Null,
        );
        let chain: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}"))?;
        let groups = chain["port_chain"]["port_pair_groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let first = groups.first().cloned().ok_or("no groups")?;
        let (status, body) = api(
            &lab,
            Method::PUT,
            &format!("sfc/port_chains/{id}"),
            &json!({"port_chain": {"port_pair_groups": [first]}}),
        );
        if status != 200 {
            return Err(format!("update: {status} {body}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = received(&lab)?;
            let (ok, _) = http(&lab, 8080);
            let after = received(&lab)?;
            if ok
                && grew(&before, &after, 0)
                && !grew(&before, &after, 1)
                && !grew(&before, &after, 2)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "after the update: answered {ok}, functions {before:?} -> {after:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    checks.run(
        "deleting the chain restores direct traffic",
        || -> Outcome {
            let id = chain_id(&lab, "web")?;
            let (status, body) = api(
                &lab,
                Method::DELETE,
                &format!("sfc/port_chains/{id}"),
                &Value::Null,
            );
            if status != 204 {
                return Err(format!("delete: {status} {body}"));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let before = received(&lab)?;
                let (ok, _) = http(&lab, 8080);
                let after = received(&lab)?;
                if ok && before == after {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "after the delete: answered {ok}, functions {before:?} -> {after:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        },
    );
    let failed = checks.report();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
