//! Security groups end to end, with real packets through the lab: 2 chassis with Open vSwitch and
//! agents, project alpha's dual-stack network (IPv6 configured statically by the lab) and project
//! beta's network on the same CIDR, VMs of both on both chassis, the groups and their rules from
//! the topology file.
//!
//! Checked (each check can fail both ways: a connection that must pass, one that must not, with a
//! listener behind it so that only filtering can refuse it): an allowed TCP port connects and a
//! closed one times out; replies pass a group without egress rules, which opens no connection
//! itself; a remote-group rule admits members and refuses others, and a port added to the group
//! through the API gets in within a second (`up` puts the file's groups back); deleting a rule cuts
//! an open TCP connection it allowed within a second; ICMP by type (echo allowed, a group allowing
//! only echo replies is not pinged); IPv6 TCP by an IPv6 rule, an IPv4 rule does not cover IPv6;
//! a stateless group needs its egress rule for the replies (added by `up` from the file); two
//! projects with the same addresses do not share rules; a port without port security receives
//! everything; the `default` group admits its members only; DHCP (udhcpc) and ARP work in a group
//! without rules; UDP by port (python3, busybox nc has no UDP here); address groups as remotes;
//! an open TCP stream survives `kill -9` and restart of both agents (no gap over a second).
//!
//! Every check runs even when an earlier one failed; the test prints each outcome and fails at the
//! end if any did. The lab is torn down in any case (dropping it does, also on a panic), and so are
//! the servers and streams the test starts in VMs.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support;
use support::{
    Checks, Outcome, Servers, agents_in_sync, all, api, in_parallel, lab_options, need, reply_ttl,
    run, silent, tcp_reaches, v6,
};

const CHASSIS: [&str; 2] = ["c1", "c2"];

/// srv's address, and beta's bsrv's: the same.
const SRV: &str = "10.10.0.10";
/// The ports of the rules the test removes (a stream through it) and keeps (the stream through
/// the agents' restarts).
const CUT_PORT: u16 = 9000;
const STREAM_PORT: u16 = 9001;
/// UDP: allowed from cli by prefix, from the address group `lan`.
const UDP_PORT: u16 = 5353;
const UDP_GROUP_PORT: u16 = 5354;

/// VMs: name, network, chassis, IPv4 address, further TOML lines.
const VMS: [(&str, &str, &str, &str, &str); 12] = [
    ("srv", "net", "c2", SRV, "security_groups = [\"web\"]"),
    (
        "cli",
        "net",
        "c1",
        "10.10.0.11",
        "security_groups = [\"client\"]",
    ),
    (
        "member",
        "net",
        "c1",
        "10.10.0.13",
        "security_groups = [\"app\"]",
    ),
    (
        "outsider",
        "net",
        "c2",
        "10.10.0.14",
        "security_groups = [\"client\"]",
    ),
    (
        "stl",
        "net",
        "c2",
        "10.10.0.15",
        "security_groups = [\"stateless\"]",
    ),
    ("open", "net", "c2", "10.10.0.16", "port_security = false"),
    ("d1", "net", "c1", "10.10.0.21", ""),
    ("d2", "net", "c2", "10.10.0.22", ""),
    (
        "bare",
        "net",
        "c1",
        "10.10.0.30",
        "security_groups = [\"empty\"]",
    ),
    ("bsrv", "bnet", "c2", SRV, "security_groups = [\"bweb\"]"),
    (
        "bmem",
        "bnet",
        "c1",
        "10.10.0.12",
        "security_groups = [\"bapp\"]",
    ),
    // Alpha's member's address, in beta and not a member of bapp.
    (
        "bcli",
        "bnet",
        "c1",
        "10.10.0.13",
        "security_groups = [\"bclient\"]",
    ),
];

const NETWORKS: &str = r#"
[[network]]
name = "net"
project = "alpha"
[[network.subnet]]
cidr = "10.10.0.0/24"
[[network.subnet]]
cidr = "fd00:10::/64"

[[network]]
name = "bnet"
project = "beta"
[[network.subnet]]
cidr = "10.10.0.0/24"

[[security_group]]
name = "web"
project = "alpha"
default_rules = false
rules = [
  { direction = "ingress", protocol = "tcp", port_range_min = 80, port_range_max = 80, remote_ip_prefix = "10.10.0.0/24" },
  { direction = "ingress", ethertype = "IPv6", protocol = "tcp", port_range_min = 80, port_range_max = 80 },
  { direction = "ingress", protocol = "tcp", port_range_min = 7000, port_range_max = 7000, remote_group = "app" },
  { direction = "ingress", protocol = "icmp", port_range_min = 8 },
  { direction = "ingress", protocol = "tcp", port_range_min = 9000, port_range_max = 9000 },
  { direction = "ingress", protocol = "tcp", port_range_min = 9001, port_range_max = 9001 },
  { direction = "ingress", protocol = "udp", port_range_min = 5353, port_range_max = 5353, remote_ip_prefix = "10.10.0.11/32" },
]

[[security_group]]
name = "client"
project = "alpha"
rules = [{ direction = "ingress", protocol = "tcp", port_range_min = 80, port_range_max = 80 }]

[[security_group]]
name = "app"
project = "alpha"
rules = [{ direction = "ingress", protocol = "icmp", port_range_min = 0 }]

[[security_group]]
name = "empty"
project = "alpha"
default_rules = false

[[security_group]]
name = "bweb"
project = "beta"
rules = [{ direction = "ingress", protocol = "tcp", port_range_min = 7000, port_range_max = 7000, remote_group = "bapp" }]

[[security_group]]
name = "bapp"
project = "beta"

[[security_group]]
name = "bclient"
project = "beta"
"#;

/// What differs between the topologies the test converges to.
#[derive(Clone, Copy, Default)]
struct Variant {
    /// The stateless group has the egress rule its replies need.
    stateless_egress: bool,
    /// Address group `lan` (outsider's address) and a UDP rule of srv's group naming it.
    address_group: bool,
}

fn topology(name: &str, v: Variant) -> Topology {
    let mut text = format!("name = \"{name}\"\n[underlay]\ncidr = \"172.31.46.0/24\"\n");
    for c in CHASSIS {
        text.push_str(&format!("[[chassis]]\nname = \"{c}\"\n"));
    }
    let mut networks = NETWORKS.to_owned();
    if v.address_group {
        networks = networks.replace(
            "remote_ip_prefix = \"10.10.0.11/32\" },\n",
            "remote_ip_prefix = \"10.10.0.11/32\" },\n  { direction = \"ingress\", protocol = \
             \"udp\", port_range_min = 5354, port_range_max = 5354, remote_address_group = \
             \"lan\" },\n",
        );
        networks.push_str(
            "[[address_group]]\nname = \"lan\"\nproject = \"alpha\"\naddresses = \
             [\"10.10.0.14/32\"]\n",
        );
    }
    text.push_str(&networks);
    let egress = if v.stateless_egress {
        ", { direction = \"egress\", protocol = \"tcp\", port_range_min = 32768, port_range_max \
         = 60999 }"
    } else {
        ""
    };
    text.push_str(&format!(
        "[[security_group]]\nname = \"stateless\"\nproject = \"alpha\"\nstateful = false\n\
         default_rules = false\nrules = [{{ direction = \"ingress\", protocol = \"tcp\", \
         port_range_min = 80, port_range_max = 80 }}{egress}]\n"
    ));
    for (vm, net, chassis, ip, extra) in VMS {
        text.push_str(&format!(
            "[[vm]]\nname = \"{vm}\"\nnetwork = \"{net}\"\nchassis = \"{chassis}\"\nip = \
             \"{ip}\"\n{extra}\n"
        ));
    }
    Topology::parse(&text, Path::new("security_groups.toml")).expect("valid topology")
}

/// A TCP connection from `from` to `ip`:`port` (where a server listens) times out: no answer,
/// not even a refusal.
fn tcp_times_out(lab: &Lab, from: &str, ip: &str, port: u16) -> Outcome {
    let started = Instant::now();
    let (_, out) = run(
        lab,
        from,
        &["busybox", "nc", "-w", "2", ip, &port.to_string()],
    );
    let took = started.elapsed();
    if !out.is_empty() {
        Err(format!(
            "{from} -> {ip}:{port}: connected (got {} bytes), must time out",
            out.len()
        ))
    } else if took < Duration::from_millis(1500) {
        Err(format!(
            "{from} -> {ip}:{port}: refused after {took:?}, must time out (a silent drop)"
        ))
    } else {
        Ok(())
    }
}

/// Like [`tcp_reaches`], and within `limit` (no SYN lost to a late flow).
fn tcp_reaches_at_once(
    lab: &Lab,
    from: &str,
    ip: &str,
    port: u16,
    want: &str,
    limit: Duration,
) -> Outcome {
    let started = Instant::now();
    tcp_reaches(lab, from, ip, port, want)?;
    match started.elapsed() {
        t if t <= limit => Ok(()),
        t => Err(format!(
            "{from} -> {ip}:{port}: took {t:?}, want at most {limit:?}"
        )),
    }
}

/// The id of the lab's security group `name`.
fn group_id(lab: &Lab, name: &str) -> String {
    lab.state().security_groups[name].id.clone()
}

/// A GET of the lab's API as admin, as JSON.
fn get(lab: &Lab, path: &str) -> Result<Value, String> {
    let (status, text) = api(lab, Method::GET, path, &Value::Null);
    if status != 200 {
        return Err(format!("GET {path}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("GET {path}: {e}"))
}

/// UDP servers (python3): each answers every datagram with its VM's name.
struct UdpServers(Vec<Child>);

impl UdpServers {
    fn start(lab: &Lab, listeners: &[(&str, u16)]) -> UdpServers {
        let mut servers = UdpServers(Vec::new());
        for (vm, port) in listeners {
            let code = format!(
                "import socket\ns = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n\
                 s.bind(('::', {port}))\nwhile True:\n    d, a = s.recvfrom(100)\n    \
                 s.sendto(b'{vm}', a)\n"
            );
            let mut cmd = lab::exec_command(lab.name(), vm).expect("vm namespace");
            cmd.args(["python3", "-c", &code])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            servers.0.push(cmd.spawn().expect("start a UDP server"));
        }
        servers
    }
}

impl Drop for UdpServers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A UDP datagram from `from` to `ip`:`port` gets `want`'s name back (`Some`) or no answer
/// within 2 s (`None`), as `answer` says.
fn udp(lab: &Lab, from: &str, ip: &str, port: u16, answer: Option<&str>) -> Outcome {
    let code = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(1)\n\
         for _ in range(2):\n    s.sendto(b'hi', ('{ip}', {port}))\n    try:\n        \
         print(s.recv(100).decode()); break\n    except OSError: pass\n"
    );
    let (_, out) = run(lab, from, &["python3", "-c", &code]);
    let got = out.trim();
    match answer {
        Some(want) if got == want => Ok(()),
        None if got.is_empty() => Ok(()),
        _ => Err(format!(
            "UDP {from} -> {ip}:{port}: got {got:?}, want {answer:?}"
        )),
    }
}

/// A TCP stream: a line every 100 ms from one VM to another (busybox nc at both ends), the
/// arrival time of every read at the receiver recorded. Dropping it stops both ends.
struct Stream {
    receiver: Child,
    sender: Child,
    arrivals: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Stream {
    fn start(lab: &Lab, from: &str, to: &str, ip: &str, port: u16) -> Result<Stream, String> {
        let spawn = |vm: &str, args: &[&str]| {
            let mut cmd = lab::exec_command(lab.name(), vm).map_err(|e| e.to_string())?;
            cmd.args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            cmd.spawn().map_err(|e| e.to_string())
        };
        let port = port.to_string();
        let mut receiver = spawn(to, &["busybox", "nc", "-l", "-p", &port])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !run(lab, to, &["ss", "-ltn"])
            .1
            .contains(&format!(":{port} "))
        {
            if Instant::now() > deadline {
                let _ = receiver.kill();
                let _ = receiver.wait();
                return Err(format!("{to} does not listen on {port}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
        let mut sender = spawn(from, &["busybox", "nc", ip, &port])?;
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let out = receiver.stdout.take().expect("piped stdout");
        let seen = Arc::clone(&arrivals);
        let reader = thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                if line.is_err() {
                    break;
                }
                seen.lock().expect("arrivals").push(Instant::now());
            }
        });
        let mut input = sender.stdin.take().expect("piped stdin");
        let stopped = Arc::clone(&stop);
        let writer = thread::spawn(move || {
            let mut n = 0u64;
            while !stopped.load(Ordering::Relaxed) && writeln!(input, "line {n}").is_ok() {
                n += 1;
                thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(Stream {
            receiver,
            sender,
            arrivals,
            stop,
            threads: vec![reader, writer],
        })
    }

    /// The arrival times so far.
    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().expect("arrivals").clone()
    }

    /// Lines arrived within the last `window`.
    fn flowing(&self, window: Duration) -> bool {
        self.arrivals()
            .last()
            .is_some_and(|t| t.elapsed() <= window)
    }

    /// The longest time between two arrivals from `since` on (and from the last one to now).
    fn longest_gap(&self, since: Instant) -> Duration {
        let mut times: Vec<Instant> = self
            .arrivals()
            .into_iter()
            .filter(|t| *t >= since)
            .collect();
        times.insert(0, since);
        times.push(Instant::now());
        times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for c in [&mut self.sender, &mut self.receiver] {
            let _ = c.kill();
            let _ = c.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Waits up to 5 s for `stream` to carry lines.
fn wait_flowing(stream: &Stream) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.flowing(Duration::from_millis(300)) {
        if Instant::now() > deadline {
            return Err("the stream carries no lines".into());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `up` with topology `topo` changed exactly what `want` says (each change line contains its
/// item, in order).
fn converge_changes(lab: &mut Lab, topo: &Topology, want: &[&str]) -> Outcome {
    let changes = lab.converge(topo).map_err(|e| format!("up: {e}"))?;
    let matches =
        changes.len() == want.len() && changes.iter().zip(want).all(|(c, w)| c.contains(w));
    if matches {
        Ok(())
    } else {
        Err(format!("up changed {changes:?}, want {want:?}"))
    }
}

#[test]
fn security_groups() {
    let _alone = support::alone();
    let name = format!("sg{}", std::process::id() % 100_000);
    let base = Variant::default();
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topology(&name, base), &lab_options()).expect("lab up");
    let mut checks = Checks::new("security group");

    checks.run("agents in sync", || agents_in_sync(&lab, &CHASSIS));
    checks.run("up again changes nothing", || {
        converge_changes(&mut lab, &topology(&name, base), &[])
    });
    let servers = Servers::start(
        &lab,
        &[
            ("srv", 80),
            ("srv", 81),
            ("srv", 7000),
            ("cli", 80),
            ("stl", 80),
            ("open", 81),
            ("open", 7000),
            ("d2", 80),
            ("bsrv", 7000),
        ],
    );
    let srv6 = v6(&lab, "srv");

    checks.run(
        "TCP: an allowed port connects, a closed one times out",
        || {
            all([
                tcp_reaches(&lab, "cli", SRV, 80, "srv"),
                tcp_times_out(&lab, "cli", SRV, 81),
            ])
        },
    );
    checks.run(
        "replies leave a group without egress rules; it opens no connection itself",
        || {
            all([
                tcp_reaches(&lab, "cli", SRV, 80, "srv"),
                tcp_times_out(&lab, "srv", "10.10.0.11", 80),
            ])
        },
    );
    checks.run(
        "remote group: members in, others out; added to the group through the API, in within 1 s",
        || {
            let before = all([
                tcp_reaches(&lab, "member", SRV, 7000, "srv"),
                tcp_times_out(&lab, "outsider", SRV, 7000),
            ]);
            let port = lab.port_id("outsider").expect("outsider's port").to_owned();
            let groups = json!([group_id(&lab, "client"), group_id(&lab, "app")]);
            let body = json!({ "port": { "security_groups": groups } });
            let (status, text) = api(&lab, Method::PUT, &format!("ports/{port}"), &body);
            if status != 200 {
                return Err(format!("port update: {status} {text}"));
            }
            thread::sleep(Duration::from_secs(1));
            let admitted = tcp_reaches_at_once(
                &lab,
                "outsider",
                SRV,
                7000,
                "srv",
                Duration::from_millis(800),
            );
            let restored = converge_changes(
                &mut lab,
                &topology(&name, base),
                &["port outsider: updated (security_groups)"],
            );
            thread::sleep(Duration::from_secs(1));
            all([
                before,
                admitted,
                restored,
                tcp_times_out(&lab, "outsider", SRV, 7000),
            ])
        },
    );
    checks.run(
        "deleting a rule cuts the open TCP connection it allowed within 1 s",
        || {
            let stream = Stream::start(&lab, "cli", "srv", SRV, CUT_PORT)?;
            wait_flowing(&stream)?;
            let web = get(
                &lab,
                &format!(
                    "security-group-rules?security_group_id={}",
                    group_id(&lab, "web")
                ),
            )?;
            let rule = web["security_group_rules"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["port_range_min"] == json!(CUT_PORT))
                .and_then(|r| r["id"].as_str())
                .ok_or("srv's group has no rule for the port")?
                .to_owned();
            let (status, text) = api(
                &lab,
                Method::DELETE,
                &format!("security-group-rules/{rule}"),
                &Value::Null,
            );
            if status != 204 {
                return Err(format!("rule delete: {status} {text}"));
            }
            let deleted = Instant::now();
            thread::sleep(Duration::from_secs(3));
            let last = stream.arrivals().last().copied();
            let cut = match last {
                Some(t) if t > deleted + Duration::from_secs(1) => Err(format!(
                    "lines still arrived {:?} after the rule was deleted",
                    t - deleted
                )),
                _ => Ok(()),
            };
            drop(stream);
            let restored = converge_changes(
                &mut lab,
                &topology(&name, base),
                &["security group web: rule added"],
            );
            all([cut, restored])
        },
    );
    checks.run(
        "ICMP by type: echo (type 8) allowed; a group allowing only type 0 is not pinged",
        || {
            all([
                reply_ttl(&lab, "cli", SRV).map(drop),
                reply_ttl(&lab, "member", SRV).map(drop),
                silent(&lab, "cli", "10.10.0.13"),
            ])
        },
    );
    checks.run(
        "IPv6: TCP by an IPv6 rule; a closed port and an IPv4-only rule time out",
        || {
            all([
                tcp_reaches(&lab, "cli", &srv6, 80, "srv"),
                tcp_times_out(&lab, "cli", &srv6, 81),
                tcp_times_out(&lab, "member", &srv6, 7000),
            ])
        },
    );
    checks.run(
        "stateless group: ingress TCP 80 alone fails, with the egress rule for replies it works",
        || {
            let without = tcp_times_out(&lab, "cli", "10.10.0.15", 80);
            let with_egress = Variant {
                stateless_egress: true,
                ..base
            };
            let added = converge_changes(
                &mut lab,
                &topology(&name, with_egress),
                &["security group stateless: rule added"],
            );
            thread::sleep(Duration::from_secs(1));
            let works = tcp_reaches(&lab, "cli", "10.10.0.15", 80, "stl");
            let removed = converge_changes(
                &mut lab,
                &topology(&name, base),
                &["security group stateless: rule removed"],
            );
            all([without, added, works, removed])
        },
    );
    checks.run(
        "projects with the same addresses: beta's rules are its own",
        || {
            all([
                tcp_reaches(&lab, "bmem", SRV, 7000, "bsrv"),
                // bcli has the address of alpha's member, which alpha's srv admits.
                tcp_times_out(&lab, "bcli", SRV, 7000),
                tcp_reaches(&lab, "member", SRV, 7000, "srv"),
            ])
        },
    );
    checks.run("a port without port security receives everything", || {
        all([
            tcp_reaches(&lab, "cli", "10.10.0.16", 81, "open"),
            tcp_reaches(&lab, "member", "10.10.0.16", 7000, "open"),
            reply_ttl(&lab, "cli", "10.10.0.16").map(drop),
        ])
    });
    checks.run("the default group admits its members only", || {
        in_parallel(vec![0, 1, 2, 3], |i| match i {
            0 => tcp_reaches(&lab, "d1", "10.10.0.22", 80, "d2"),
            1 => tcp_times_out(&lab, "cli", "10.10.0.22", 80),
            2 => reply_ttl(&lab, "d1", "10.10.0.22").map(drop),
            _ => silent(&lab, "cli", "10.10.0.22"),
        })
    });
    checks.run(
        "DHCP and ARP work in a group without rules (udhcpc, arping both ways)",
        || {
            let (_, lease) = run(
                &lab,
                "bare",
                &[
                    "sh",
                    "-c",
                    "busybox udhcpc -i eth0 -f -q -n -t 3 -T 1 -s /bin/true 2>&1",
                ],
            );
            let dhcp = if lease.contains("lease of 10.10.0.30 obtained") {
                Ok(())
            } else {
                Err(format!("bare: no DHCP lease; udhcpc says {lease:?}"))
            };
            let arping = |from: &str, ip: &str| {
                let (ok, out) = run(
                    &lab,
                    from,
                    &["busybox", "arping", "-c", "2", "-w", "3", "-I", "eth0", ip],
                );
                if ok && out.contains("Received") && !out.contains("Received 0") {
                    Ok(())
                } else {
                    Err(format!("{from}: no ARP answer from {ip}: {out:?}"))
                }
            };
            all([
                dhcp,
                arping("bare", "10.10.0.11"),
                arping("cli", "10.10.0.30"),
                silent(&lab, "cli", "10.10.0.30"),
            ])
        },
    );
    checks.run("UDP by port and by address group (python3)", || {
        need("python3")?;
        let udp_servers = UdpServers::start(&lab, &[("srv", UDP_PORT), ("srv", UDP_GROUP_PORT)]);
        thread::sleep(Duration::from_millis(500));
        let by_port = all([
            udp(&lab, "cli", SRV, UDP_PORT, Some("srv")),
            udp(&lab, "member", SRV, UDP_PORT, None),
            udp(&lab, "outsider", SRV, UDP_GROUP_PORT, None),
        ]);
        let grouped = Variant {
            address_group: true,
            ..base
        };
        let by_group = converge_changes(
            &mut lab,
            &topology(&name, grouped),
            &[
                "address group lan: created",
                "security group web: rule added",
            ],
        )
        .and_then(|()| {
            thread::sleep(Duration::from_secs(1));
            all([
                udp(&lab, "outsider", SRV, UDP_GROUP_PORT, Some("srv")),
                udp(&lab, "cli", SRV, UDP_GROUP_PORT, None),
            ])
        });
        let back = converge_changes(
            &mut lab,
            &topology(&name, base),
            &[
                "security group web: rule removed",
                "address group lan: deleted",
            ],
        );
        drop(udp_servers);
        all([by_port, by_group, back])
    });
    checks.run(
        "an open TCP stream survives kill -9 and restart of both agents (no gap over 1 s)",
        || {
            let stream = Stream::start(&lab, "cli", "srv", SRV, STREAM_PORT)?;
            wait_flowing(&stream)?;
            let since = Instant::now();
            for c in CHASSIS {
                lab.kill_agent(c).map_err(|e| e.to_string())?;
                thread::sleep(Duration::from_millis(500));
                lab.restart_agent(c).map_err(|e| e.to_string())?;
                agents_in_sync(&lab, &[c])?;
                thread::sleep(Duration::from_secs(1));
            }
            let gap = stream.longest_gap(since);
            if gap > Duration::from_millis(1000) {
                Err(format!("the stream stopped for {gap:?}"))
            } else {
                Ok(())
            }
        },
    );
    drop(servers);

    let failed = checks.report();
    lab.down().expect("lab down");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}
