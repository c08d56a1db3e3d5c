//! Load balancing end to end, with real packets through the lab and the load balancers made by the
//! real `openstack loadbalancer ...` commands: 3 chassis with Open vSwitch and agents; network
//! `web` (10.0.0.0/24) with web1 (c1) and web2 (c2), network `back` (10.0.1.0/24) with web3 (c2),
//! router r1 between them; the client on c3 on `web`. Every web VM answers HTTP on 8080 and UDP on
//! 5353 with its name. Load balancer `web` (VIP 10.0.0.100): an HTTP listener on 80 over the three
//! (round robin, HTTP health monitor: delay 1 s, timeout 1 s, 2 failures down), a TCP listener on
//! 81 with `SOURCE_IP` persistence, a UDP listener on 53.
//!
//! Checked: 300 HTTP requests from the client (a new connection each) reach each member 70–130
//! times; the members are reported ONLINE; `SOURCE_IP` keeps the client on one member; UDP
//! datagrams are balanced; `wyvern trace` names the listener and the member its group chose; a
//! member whose server is killed is reported ERROR (the time is
//! printed) and, from then on, no request fails and none reaches it; it is ONLINE again and
//! gets requests once its server is back; with every member disabled, a connection is refused at
//! once (a reset, not silence); a member reaching its own VIP gets an answer (hairpin); an
//! external host (on the flat external network `public`, where r1 has its gateway and c2 is the
//! gateway chassis) reaches every member through a floating IP of the VIP.
//!
//! Every check runs even when an earlier one failed; the lab is torn down in any case.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use serde_json::Value;

use crate::support;
use support::{Checks, Outcome, lab_options, run};

const VIP: &str = "10.0.0.100";
const WEB: [&str; 3] = ["web1", "web2", "web3"];
/// The HTTP monitor: a probe a second, two failures make a member ERROR.
const DELAY: u64 = 1;
const RETRIES_DOWN: u64 = 2;

fn topology(name: &str) -> Topology {
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.49.0/24"
[[physical]]
name = "extnet"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
gateway = true
[[chassis]]
name = "c3"
[[external]]
name = "inet"
physical = "extnet"
ip = "172.24.4.100/24"
[[network]]
name = "public"
network_type = "flat"
physical_network = "extnet"
external = true
[[network.subnet]]
cidr = "172.24.4.0/24"
gateway = "172.24.4.1"
[[network]]
name = "web"
project = "alpha"
[[network.subnet]]
name = "web-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[network]]
name = "back"
project = "alpha"
[[network.subnet]]
name = "back-v4"
cidr = "10.0.1.0/24"
gateway = "10.0.1.1"
[[router]]
name = "r1"
project = "alpha"
interfaces = ["web-v4", "back-v4"]
gateway = "public"
[[vm]]
name = "web1"
network = "web"
chassis = "c1"
ip = "10.0.0.11"
serve = [{{ protocol = "http", port = 8080 }}, {{ protocol = "udp", port = 5353 }}]
[[vm]]
name = "web2"
network = "web"
chassis = "c2"
ip = "10.0.0.12"
serve = [{{ protocol = "http", port = 8080 }}, {{ protocol = "udp", port = 5353 }}]
[[vm]]
name = "web3"
network = "back"
chassis = "c2"
ip = "10.0.1.13"
serve = [{{ protocol = "http", port = 8080 }}, {{ protocol = "udp", port = 5353 }}]
[[vm]]
name = "client"
network = "web"
chassis = "c3"
ip = "10.0.0.20"
"#
    );
    Topology::parse(&text, std::path::Path::new("load_balancing.toml")).expect("topology")
}

fn cli_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WYVERN_OPENSTACK_CLI") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
}

/// Runs `openstack <line>` (split on whitespace) against the lab's server; its JSON output.
fn openstack(lab: &Lab, line: &str) -> Result<Value, String> {
    let mut command = Command::new(cli_path());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OS_")) {
        command.env_remove(name);
    }
    let output = command
        .env("OS_AUTH_TYPE", "none")
        .env("OS_ENDPOINT", lab.server_url())
        .args(line.split_whitespace())
        // `set` commands print nothing and take no format.
        .args(if line.contains(" set ") {
            &[][..]
        } else {
            &["-f", "json"][..]
        })
        .output()
        .map_err(|e| format!("openstack: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "`openstack {line}` failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    if stdout.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&stdout).map_err(|e| format!("`openstack {line}`: {e}: {stdout}"))
}

/// The load balancer, its listeners, pools, members and monitor, as an operator makes them.
fn create_load_balancer(lab: &Lab) -> Result<(), String> {
    let web = openstack(lab, "subnet show web-v4")?["id"].clone();
    let back = openstack(lab, "subnet show back-v4")?["id"].clone();
    let (web, back) = (web.as_str().unwrap_or(""), back.as_str().unwrap_or(""));
    openstack(
        lab,
        &format!("loadbalancer create --name web --vip-subnet-id {web} --vip-address {VIP} --wait"),
    )?;
    // The members' default group admits their project's addresses; health checks and
    // hairpinned connections come from the VIP, which is the admin's: admitted by a rule, as
    // Octavia asks members to admit its amphorae.
    let groups = openstack(lab, "security group list")?;
    let alpha = groups
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["Name"] == "default" && g["Project"] == "alpha")
        .and_then(|g| g["ID"].as_str())
        .ok_or(format!("no default group of alpha: {groups}"))?
        .to_owned();
    openstack(
        lab,
        &format!("security group rule create --ingress --remote-ip {VIP}/32 {alpha}"),
    )?;
    let members = [("10.0.0.11", web), ("10.0.0.12", web), ("10.0.1.13", back)];
    for (listener, protocol, port, pool_options, member_port) in [
        ("http", "HTTP", 80, "--lb-algorithm ROUND_ROBIN", 8080),
        (
            "sticky",
            "TCP",
            81,
            "--lb-algorithm ROUND_ROBIN --session-persistence type=SOURCE_IP",
            8080,
        ),
        ("dns", "UDP", 53, "--lb-algorithm ROUND_ROBIN", 5353),
    ] {
        openstack(
            lab,
            &format!(
                "loadbalancer listener create --name {listener} --protocol {protocol} \
                 --protocol-port {port} web --wait"
            ),
        )?;
        openstack(
            lab,
            &format!(
                "loadbalancer pool create --name {listener}-pool {pool_options} \
                 --listener {listener} --protocol {protocol} --wait"
            ),
        )?;
        for (i, (address, subnet)) in members.iter().enumerate() {
            openstack(
                lab,
                &format!(
                    "loadbalancer member create --name {} --subnet-id {subnet} --address {address} \
                     --protocol-port {member_port} {listener}-pool --wait",
                    WEB[i]
                ),
            )?;
        }
    }
    openstack(
        lab,
        &format!(
            "loadbalancer healthmonitor create --name web-check --delay {DELAY} --timeout 1 \
             --max-retries 1 --max-retries-down {RETRIES_DOWN} --type HTTP --url-path / \
             http-pool --wait"
        ),
    )?;
    Ok(())
}

/// `n` HTTP requests from `vm` to `url`, a new connection each: how often each answer came, and
/// how many failed.
fn http_requests(lab: &Lab, vm: &str, url: &str, n: usize) -> Result<(Value, u64), String> {
    let script = format!(
        "import json, urllib.request\n\
         o = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))\n\
         c, f = {{}}, 0\n\
         for i in range({n}):\n\
         \x20   try:\n\
         \x20       b = o.open('{url}', timeout=3).read().decode().strip()\n\
         \x20       c[b] = c.get(b, 0) + 1\n\
         \x20   except Exception:\n\
         \x20       f += 1\n\
         \x20       if f >= 10 and not c: break\n\
         print(json.dumps({{'counts': c, 'failed': f}}))\n"
    );
    let (ok, out) = run(lab, vm, &["python3", "-c", &script]);
    if !ok {
        return Err(format!("requests from {vm}: {out}"));
    }
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))?;
    Ok((
        v["counts"].clone(),
        v["failed"].as_u64().unwrap_or(u64::MAX),
    ))
}

/// `n` UDP datagrams from `vm` to VIP:53, each from a new socket: how often each member answered.
fn udp_requests(lab: &Lab, vm: &str, n: usize) -> Result<Value, String> {
    let script = format!(
        "import json, socket\n\
         c = {{}}\n\
         for i in range({n}):\n\
         \x20   s = socket.socket(2, 2); s.settimeout(2)\n\
         \x20   try:\n\
         \x20       s.sendto(b'hi', ('{VIP}', 53)); b = s.recv(99).decode().strip()\n\
         \x20   except Exception:\n\
         \x20       b = 'no answer'\n\
         \x20   c[b] = c.get(b, 0) + 1; s.close()\n\
         print(json.dumps(c))\n"
    );
    let (ok, out) = run(lab, vm, &["python3", "-c", &script]);
    if !ok {
        return Err(format!("datagrams from {vm}: {out}"));
    }
    serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))
}

fn count(counts: &Value, vm: &str) -> u64 {
    counts[vm].as_u64().unwrap_or(0)
}

/// The members of the HTTP pool by name, with their operating status.
fn statuses(lab: &Lab) -> Result<Vec<(String, String)>, String> {
    let list = openstack(lab, "loadbalancer member list http-pool")?;
    let mut out: Vec<(String, String)> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("operating_status"))
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Waits until `member` of the HTTP pool shows `status`; how long it took.
fn wait_status(lab: &Lab, member: &str, status: &str, limit: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let now = statuses(lab)?;
        if now.iter().any(|(m, s)| m == member && s == status) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            return Err(format!("{member} not {status} after {limit:?}: {now:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn spread_evenly(counts: &Value, lo: u64, hi: u64) -> Outcome {
    for vm in WEB {
        let n = count(counts, vm);
        if !(lo..=hi).contains(&n) {
            return Err(format!("{vm} got {n} (want {lo}..={hi}): {counts}"));
        }
    }
    Ok(())
}

#[test]
fn load_balancing() {
    let _alone = support::alone();
    if !cli_path().exists() {
        panic!(
            "the openstack CLI is missing at {} (scripts/install-deps makes it)",
            cli_path().display()
        );
    }
    let name = format!("lbe{}", std::process::id() % 100_000);
    let topo = topology(&name);
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("load balancing");
    let http = format!("http://{VIP}/");

    checks.run("the openstack CLI makes the load balancer", || {
        create_load_balancer(&lab)
    });
    checks.run("the members are reported ONLINE", || {
        for vm in WEB {
            let took = wait_status(&lab, vm, "ONLINE", Duration::from_secs(15))?;
            println!("{vm} ONLINE after {took:.1?}");
        }
        Ok(())
    });
    checks.run("300 requests reach each member 70-130 times", || {
        let (counts, failed) = http_requests(&lab, "client", &http, 300)?;
        println!("HTTP through the VIP: {counts}, {failed} failed");
        if failed > 0 {
            return Err(format!("{failed} requests failed: {counts}"));
        }
        spread_evenly(&counts, 70, 130)
    });
    checks.run("trace shows the listener and the member chosen", || {
        let out = Command::new(env!("CARGO_BIN_EXE_wyvern"))
            .args([
                "trace",
                "--lab",
                lab.name(),
                "--from-switch",
                "client",
                VIP,
                "--tcp",
                "80",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}");
        let chose = text.contains("reaches listener")
            && text.contains("the listener's group chose member")
            && WEB.iter().any(|vm| text.contains(&format!("({vm})")));
        if out.status.success() && chose {
            Ok(())
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    });
    checks.run(
        "SOURCE_IP persistence keeps the client on one member",
        || {
            let (counts, failed) = http_requests(&lab, "client", &format!("http://{VIP}:81/"), 30)?;
            let used = counts.as_object().map_or(0, |o| o.len());
            if failed > 0 || used != 1 {
                return Err(format!("{used} members, {failed} failed: {counts}"));
            }
            Ok(())
        },
    );
    checks.run("UDP datagrams are balanced", || {
        let counts = udp_requests(&lab, "client", 90)?;
        println!("UDP through the VIP: {counts}");
        if count(&counts, "no answer") > 0 {
            return Err(format!("unanswered datagrams: {counts}"));
        }
        spread_evenly(&counts, 10, 80)
    });
    checks.run("a member reaching its own VIP gets an answer", || {
        // A third of them go to web1 itself (all 30 elsewhere: one chance in 190 000).
        let (counts, failed) = http_requests(&lab, "web1", &http, 30)?;
        if failed > 0 || count(&counts, "web1") == 0 {
            return Err(format!("{failed} of 30 failed from web1: {counts}"));
        }
        Ok(())
    });
    checks.run(
        "a member whose server dies is taken out, no request fails after",
        || {
            let pid = lab.serve_pid("web2").ok_or("web2 serves nothing")?;
            let killed = Instant::now();
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            wait_status(&lab, "web2", "ERROR", Duration::from_secs(15))?;
            let took = killed.elapsed();
            println!(
                "web2 ERROR {took:.1?} after its server died (monitor: {} s)",
                DELAY * RETRIES_DOWN
            );
            // Flows follow the report at once; a second for every chassis to have them.
            std::thread::sleep(Duration::from_secs(1));
            let (counts, failed) = http_requests(&lab, "client", &http, 100)?;
            if failed > 0 || count(&counts, "web2") > 0 {
                return Err(format!("after ERROR: {failed} failed: {counts}"));
            }
            if took > Duration::from_secs(DELAY * RETRIES_DOWN + 3) {
                return Err(format!("taken out after {took:?}"));
            }
            Ok(())
        },
    );
    checks.run("it returns when its server does", || {
        lab.converge(&topo).map_err(|e| e.to_string())?;
        let took = wait_status(&lab, "web2", "ONLINE", Duration::from_secs(15))?;
        println!("web2 ONLINE {took:.1?} after its server came back");
        std::thread::sleep(Duration::from_secs(1));
        let (counts, failed) = http_requests(&lab, "client", &http, 60)?;
        if failed > 0 || count(&counts, "web2") == 0 {
            return Err(format!("{failed} failed, web2 unused: {counts}"));
        }
        Ok(())
    });
    checks.run(
        "the VIP is reached from outside through a floating IP",
        || {
            let lb = openstack(&lab, "loadbalancer show web")?;
            let port = lb["vip_port_id"].as_str().ok_or("no VIP port")?.to_owned();
            let fip = openstack(&lab, &format!("floating ip create --port {port} public"))?;
            let address = fip["floating_ip_address"]
                .as_str()
                .ok_or(format!("no address: {fip}"))?
                .to_owned();
            let (counts, failed) = http_requests(&lab, "inet", &format!("http://{address}/"), 60)?;
            println!("HTTP from outside through {address}: {counts}, {failed} failed");
            if failed > 0 || WEB.iter().any(|vm| count(&counts, vm) == 0) {
                return Err(format!("{failed} failed: {counts}"));
            }
            Ok(())
        },
    );
    checks.run(
        "with every member disabled a connection is refused at once",
        || {
            for vm in WEB {
                openstack(
                    &lab,
                    &format!("loadbalancer member set --disable http-pool {vm}"),
                )?;
            }
            std::thread::sleep(Duration::from_secs(1));
            let started = Instant::now();
            let (ok, out) = run(
                &lab,
                "client",
                &[
                    "curl",
                    "-s",
                    "-m",
                    "5",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    &http,
                ],
            );
            let took = started.elapsed();
            for vm in WEB {
                openstack(
                    &lab,
                    &format!("loadbalancer member set --enable http-pool {vm}"),
                )?;
            }
            // curl exits 7 (could not connect) on a reset; 28 on a timeout.
            if ok || took > Duration::from_secs(2) {
                return Err(format!("curl {ok} after {took:?}: {out}"));
            }
            Ok(())
        },
    );
    let failed = checks.report();
    assert!(failed.is_empty(), "failed: {failed:?}");
}
