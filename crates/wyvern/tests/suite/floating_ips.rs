//! Floating IPs and SNAT end to end, with real packets through the lab: 3 chassis with Open
//! vSwitch and agents (c2 and c3 may host gateways), a physical segment `extnet` with the external
//! host inet (172.24.4.100) on the flat external network `public`. Projects alpha and beta both
//! use 10.0.0.0/24 behind their own routers ra and rb (gateways on public, distributed SNAT):
//! a1 and b1 on c1 share 10.0.0.11, a2 and b2 on c2 share 10.0.0.12; a1 has the floating IP
//! 172.24.4.50. Project gamma's router rg has centralized SNAT: g1 on c1 reaches the outside
//! through rg's gateway address on the gateway chassis the agents elect (c2 or c3).
//!
//! Checked: ports of both projects with the same address, on one chassis, reach inet at the
//! same time, each through its chassis' SNAT address, and get their own answers (ping, TCP); inet
//! reaches a1 through its floating IP (ping, TCP) and a1 leaves with it as its source; the
//! floating IP moved to a2 (another chassis) through the API answers from a2, and again when a2
//! moves to c3 (the time each took is printed; the benchmark measures it); TCP connections through
//! a floating IP and through SNAT survive a `kill -9` and restart of the agents on their path;
//! centralized SNAT leaves from rg's gateway address; when the agent of the chassis hosting it is
//! killed it stays there and loses no ping (the switch forwards on: data-plane liveness, not the
//! agent's lease, elects gateways); when that chassis' underlay is cut, the other gateway chassis
//! takes over within 3 s, and the first takes it back when the link returns.
//!
//! Every check runs even when an earlier one failed; the test prints each outcome and fails at the
//! end if any check did. The lab is torn down in any case (dropping it does, also on a panic).

use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::{Value, json};

use crate::outside;
use crate::support;
use outside::{chassis_snat_address, ports_active, reaches_from};
use support::restarts::{PING_INTERVAL, Pinger};
use support::{
    Checks, Outcome, Servers, TCP_BYTES, agents_in_sync, all, api, in_parallel, lab_options, need,
    run, sessions_up, silent, tcp_reaches,
};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const TCP_PORT: u16 = 7000;
/// Port of the servers that answer slowly (a stream of numbered lines).
const STREAM_PORT: u16 = 7100;
/// Lines a stream sends, one every 100 ms.
const STREAM_LINES: usize = 40;
const FIP: &str = "172.24.4.50";
const INET: &str = "172.24.4.100";
/// How long a moved floating IP may take before the check gives up (the benchmark measures).
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The issue's budget from a chassis' underlay cut to its peers no longer sending to it, for a
/// gateway chassis: until g1's pings through the other one are answered.
const GATEWAY_FAILOVER: Duration = Duration::from_secs(3);

/// The topology, with a1's floating IP on `fip_vm` and a2 on `a2_chassis`.
fn topology(name: &str, fip_vm: &str, a2_chassis: &str) -> Topology {
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.47.0/24"

[[physical]]
name = "extnet"

[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
gateway = true
[[chassis]]
name = "c3"
gateway = true

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
name = "a"
project = "alpha"
[[network.subnet]]
name = "a-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[network]]
name = "b"
project = "beta"
[[network.subnet]]
name = "b-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[network]]
name = "g"
project = "gamma"
[[network.subnet]]
name = "g-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"

[[router]]
name = "ra"
project = "alpha"
interfaces = ["a-v4"]
gateway = "public"
[[router]]
name = "rb"
project = "beta"
interfaces = ["b-v4"]
gateway = "public"
[[router]]
name = "rg"
project = "gamma"
interfaces = ["g-v4"]
gateway = "public"
snat_mode = "centralized"

[[security_group]]
name = "open"
project = "alpha"
rules = [
  {{ direction = "ingress", protocol = "icmp" }},
  {{ direction = "ingress", protocol = "tcp" }},
]

[[vm]]
name = "a1"
network = "a"
chassis = "c1"
ip = "10.0.0.11"
security_groups = ["open"]
[[vm]]
name = "a2"
network = "a"
chassis = "{a2_chassis}"
ip = "10.0.0.12"
security_groups = ["open"]
[[vm]]
name = "b1"
network = "b"
chassis = "c1"
ip = "10.0.0.11"
[[vm]]
name = "b2"
network = "b"
chassis = "c2"
ip = "10.0.0.12"
[[vm]]
name = "g1"
network = "g"
chassis = "c1"
ip = "10.0.0.11"

[[floating_ip]]
vm = "{fip_vm}"
network = "public"
address = "{FIP}"
"#
    );
    Topology::parse(&text, Path::new("floating_ips.toml")).expect("valid topology")
}

/// Pings from every VM of `vms` to inet at the same time (20 each, 50 ms apart): all but the
/// first may not be lost (the first may be spent on resolving the next hop).
fn pinging_together(lab: &Lab, vms: &[&str]) -> Outcome {
    in_parallel(vms.to_vec(), |vm| {
        let (_, out) = run(
            lab,
            vm,
            &["ping", "-c", "20", "-i", "0.05", "-W", "1", INET],
        );
        let received = out
            .split(" received")
            .next()
            .and_then(|s| s.rsplit(' ').next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        if received >= 19 {
            Ok(())
        } else {
            Err(format!("{vm} -> inet: {received} of 20 answered"))
        }
    })
}

/// Connects to `ip`:[`TCP_PORT`] from `from` until the VM `want` answers; how long it took.
fn answered_by(lab: &Lab, from: &str, ip: &str, want: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let port = TCP_PORT.to_string();
    let mut last = String::new();
    while started.elapsed() < MOVE_TIMEOUT {
        let (_, out) = run(lab, from, &["busybox", "nc", "-w", "1", ip, &port]);
        last = out.lines().next().unwrap_or("").to_owned();
        if last == want && out.len() == want.len() + 1 + TCP_BYTES {
            return Ok(started.elapsed());
        }
        thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "{from} -> {ip}: not answered by {want} within {MOVE_TIMEOUT:?} (last answer {last:?})"
    ))
}

/// A running stream server; dropping it stops it.
struct Stream(std::process::Child);

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A stream server in `host` on [`STREAM_PORT`]: every connection gets [`STREAM_LINES`] numbered
/// lines, 100 ms apart.
fn stream_server(lab: &Lab, host: &str) -> Stream {
    let script =
        format!("i=0; while [ $i -lt {STREAM_LINES} ]; do echo $i; sleep 0.1; i=$((i+1)); done");
    let mut cmd = lab::exec_command(lab.name(), host).expect("host namespace");
    cmd.args([
        "busybox",
        "nc",
        "-ll",
        "-p",
        &STREAM_PORT.to_string(),
        "-e",
        "sh",
        "-c",
        &script,
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let server = Stream(cmd.spawn().expect("start the stream server"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !run(lab, host, &["ss", "-ltn"])
        .1
        .contains(&format!(":{STREAM_PORT} "))
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(50));
    }
    server
}

/// A stream from `server` (listening at `ip`) read by `client` is complete although the agent of
/// `chassis` is killed (`kill -9`) and started again while it flows.
fn stream_survives_agent_restart(
    lab: &mut Lab,
    client: &str,
    server: &str,
    ip: &str,
    chassis: &str,
) -> Outcome {
    let _server = stream_server(lab, server);
    let mut cmd = lab::exec_command(lab.name(), client).map_err(|e| e.to_string())?;
    // Bounded: a stream cut off without a reset would otherwise hang the test.
    cmd.args([
        "timeout",
        "15",
        "busybox",
        "nc",
        "-w",
        "8",
        ip,
        &STREAM_PORT.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let reader = cmd.spawn().map_err(|e| e.to_string())?;
    thread::sleep(Duration::from_millis(800));
    lab.kill_agent(chassis).map_err(|e| e.to_string())?;
    thread::sleep(Duration::from_millis(300));
    lab.restart_agent(chassis).map_err(|e| e.to_string())?;
    let out = reader.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let want: Vec<String> = (0..STREAM_LINES).map(|i| i.to_string()).collect();
    if lines == want {
        agents_in_sync(lab, &[chassis])
    } else {
        Err(format!(
            "{client} -> {ip} across {chassis}'s agent restart: got {} of {STREAM_LINES} lines \
             ({:?}...)",
            lines.len(),
            lines.iter().take(5).collect::<Vec<_>>()
        ))
    }
}

/// The API's view of the floating IP: its status, and the port it forwards to.
fn fip_state(lab: &Lab, id: &str) -> (String, String) {
    let (_, body) = api(lab, Method::GET, &format!("floatingips/{id}"), &Value::Null);
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let f = &v["floatingip"];
    (
        f["status"].as_str().unwrap_or("?").to_owned(),
        f["port_id"].as_str().unwrap_or("").to_owned(),
    )
}

/// Whether `chassis`' br-int translates sources in a router's zone (centralized SNAT: zones from
/// 0xC000 up are routers').
fn translates_to_router_zone(lab: &Lab, chassis: &str) -> bool {
    let (_, flows) = run(
        lab,
        chassis,
        &["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-int"],
    );
    flows.lines().filter(|f| f.contains("nat(src=")).any(|f| {
        f.split("zone=")
            .nth(1)
            .and_then(|z| z.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|z| z.parse::<u32>().ok())
            .is_some_and(|z| z >= 0xc000)
    })
}

/// Router `router`'s gateway address, as the lab made it.
fn gateway_address(lab: &Lab, router: &str) -> Option<String> {
    lab.state()
        .routers
        .get(router)?
        .gateway
        .as_ref()?
        .addresses
        .first()
        .map(ToString::to_string)
}

/// The gateway chassis that is not `host`.
fn other_gateway(host: &str) -> &'static str {
    if host == "c2" { "c3" } else { "c2" }
}

/// Cuts `host`'s underlay link while g1 pings inet through rg's centralized SNAT there: the
/// other gateway chassis takes over within [`GATEWAY_FAILOVER`] (counted in lost pings), `host`
/// (isolated) lets go of its SNAT; the link back up, `host` serves again.
fn gateway_follows_the_underlay(lab: &Lab, host: &str) -> Outcome {
    let other = other_gateway(host);
    sessions_up(lab, &CHASSIS)?;
    let link = format!("ul-{host}");
    let mut pings = Pinger::start(lab.name(), "g1", INET);
    pings.more_replies(5, "g1 -> inet before the cut");
    lab.exec(host, &["ip", "link", "set", &link, "down"])
        .map_err(|e| e.to_string())?;
    pings.more_replies(40, "g1 -> inet after the cut");
    let lost = pings.stop();
    let outage = PING_INTERVAL * u32::try_from(lost.len()).unwrap_or(u32::MAX);
    println!("    centralized SNAT through {other} after {outage:?} of lost pings");
    let moved = translates_to_router_zone(lab, other);
    let held = translates_to_router_zone(lab, host);
    lab.exec(host, &["ip", "link", "set", &link, "up"])
        .map_err(|e| e.to_string())?;
    if !moved || held {
        return Err(format!(
            "after the cut: SNAT flows on {other}: {moved}, still on {host}: {held}"
        ));
    }
    if outage > GATEWAY_FAILOVER {
        return Err(format!("SNAT back after {outage:?}"));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !translates_to_router_zone(lab, host) || translates_to_router_zone(lab, other) {
        if Instant::now() > deadline {
            return Err(format!(
                "{host} did not take rg's SNAT back 30 s after the link returned"
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let mut again = Pinger::start(lab.name(), "g1", INET);
    again.more_replies(10, "g1 -> inet after the link returned");
    again.stop();
    Ok(())
}

#[test]
fn floating_ips_and_snat() {
    let _alone = support::alone();
    let name = format!("fi{}", std::process::id() % 100_000);
    let topo = topology(&name, "a1", "c2");
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("floating ips");

    checks.run("agents in sync", || agents_in_sync(&lab, &CHASSIS));
    checks.run("every VM's port is ACTIVE", || {
        ports_active(&lab, &["a1", "a2", "b1", "b2", "g1"])
    });
    let fip_id = lab.state().floating_ips[0].id.clone();
    checks.run("the floating IP is ACTIVE", || {
        match fip_state(&lab, &fip_id) {
            (s, _) if s == "ACTIVE" => Ok(()),
            (s, _) => Err(format!("status {s}")),
        }
    });

    // Distributed SNAT, two projects with the same addresses.
    checks.run(
        "a2 and b2 (both 10.0.0.12 on c2) and b1 reach inet together",
        || pinging_together(&lab, &["a2", "b2", "b1"]),
    );
    let sources = "a2, b2 leave from c2's SNAT address, b1 from c1's";
    checks.run(sources, || {
        need("tcpdump")?;
        let c1 = chassis_snat_address(&lab, "public", "c1").ok_or("c1 has no SNAT address")?;
        let c2 = chassis_snat_address(&lab, "public", "c2").ok_or("c2 has no SNAT address")?;
        all([
            reaches_from(&lab, "a2", "inet", INET, std::slice::from_ref(&c2)),
            reaches_from(&lab, "b2", "inet", INET, &[c2]),
            reaches_from(&lab, "b1", "inet", INET, &[c1]),
        ])
    });
    let servers = Servers::start(
        &lab,
        &[("inet", TCP_PORT), ("a1", TCP_PORT), ("a2", TCP_PORT)],
    );
    checks.run(
        "inet cannot start a connection to a chassis' SNAT address",
        || {
            let c2 = chassis_snat_address(&lab, "public", "c2").ok_or("c2 has no SNAT address")?;
            silent(&lab, "inet", &c2)
        },
    );
    checks.run("TCP (200 kB) a2 and b2 -> inet at the same time", || {
        in_parallel(vec!["a2", "b2"], |vm| {
            tcp_reaches(&lab, vm, INET, TCP_PORT, "inet")
        })
    });

    // The floating IP.
    checks.run(
        "inet reaches a1 through its floating IP (ping, TCP)",
        || {
            all([
                support::reply_ttl(&lab, "inet", FIP).map(drop),
                tcp_reaches(&lab, "inet", FIP, TCP_PORT, "a1"),
            ])
        },
    );
    let fip_source = "a1 leaves with its floating IP as source";
    checks.run(fip_source, || {
        need("tcpdump")?;
        reaches_from(&lab, "a1", "inet", INET, &[FIP.to_owned()])
    });
    checks.run(
        "the floating IP moved to a2 (on c2) through the API answers from a2",
        || {
            let port = lab.port_id("a2").ok_or("a2 has no port")?.to_owned();
            let body = json!({"floatingip": {"port_id": port}});
            let (status, text) = api(&lab, Method::PUT, &format!("floatingips/{fip_id}"), &body);
            if status != 200 {
                return Err(format!("re-association answered {status}: {text}"));
            }
            let took = answered_by(&lab, "inet", FIP, "a2")?;
            println!("    the moved floating IP answered from a2 after {took:?}");
            Ok(())
        },
    );
    checks.run("a2 moved to c3 keeps its floating IP", || {
        lab.converge(&topology(&name, "a2", "c3"))
            .map_err(|e| e.to_string())?;
        // A new namespace on c3: a new server.
        let _moved = Servers::start(&lab, &[("a2", TCP_PORT)]);
        let took = answered_by(&lab, "inet", FIP, "a2")?;
        println!("    a2's floating IP answered from c3 after {took:?}");
        ports_active(&lab, &["a2"])
    });
    drop(servers);

    // Agent restarts on the path of NATed connections.
    checks.run(
        "a TCP stream to a2's floating IP survives a restart of c3's agent",
        || stream_survives_agent_restart(&mut lab, "inet", "a2", FIP, "c3"),
    );
    checks.run(
        "a TCP stream b1 -> inet through SNAT survives a restart of c1's agent",
        || stream_survives_agent_restart(&mut lab, "b1", "inet", INET, "c1"),
    );

    // Centralized SNAT.
    let rg = gateway_address(&lab, "rg");
    let centralized = "g1 (c1) leaves from rg's gateway address (centralized SNAT)";
    checks.run(centralized, || {
        need("tcpdump")?;
        let rg = rg.clone().ok_or("rg has no gateway address")?;
        reaches_from(&lab, "g1", "inet", INET, &[rg])
    });
    let host = ["c2", "c3"]
        .into_iter()
        .find(|c| translates_to_router_zone(&lab, c));
    checks.run(
        "centralized SNAT stays on its gateway chassis, losing nothing, while that chassis' agent \
         is dead beyond its lease (its switch forwards)",
        || {
            let host = host.ok_or("no gateway chassis holds rg's centralized SNAT flow")?;
            let other = other_gateway(host);
            let mut pings = Pinger::start(lab.name(), "g1", INET);
            pings.more_replies(5, "g1 -> inet before the kill");
            lab.kill_agent(host).map_err(|e| e.to_string())?;
            // 15 s at 20 pings a second: beyond the 10 s lease and a second of hold-down.
            pings.more_replies(300, "g1 -> inet while the gateway's agent is dead");
            let moved = translates_to_router_zone(&lab, other);
            let lost = pings.stop();
            lab.restart_agent(host).map_err(|e| e.to_string())?;
            agents_in_sync(&lab, &CHASSIS)?;
            if moved {
                return Err(format!("{other} took rg's SNAT over from {host}"));
            }
            match lost.is_empty() {
                true => Ok(()),
                false => Err(format!("lost (icmp_seq) {lost:?}")),
            }
        },
    );
    checks.run(
        "centralized SNAT moves to the other gateway chassis when its host's underlay is cut, \
         and back when the link returns",
        || {
            let host = host.ok_or("no gateway chassis holds rg's centralized SNAT flow")?;
            gateway_follows_the_underlay(&lab, host)
        },
    );

    let failed = checks.report();
    lab.down().expect("lab down");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}
