//! Two chassis with real Open vSwitch, two agents, one server: VMs on different chassis talk over a
//! Geneve tunnel (IPv4, and IPv6 with the agent's neighbour advertisements), a VM without an address
//! gets its port's from the agent's DHCP server (busybox `udhcpc`), and port security drops a spoofed
//! source address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Host, HostOpts, Underlay};

async fn server() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!(
        "embedded:{}",
        dir.path().join("nb.redb").display()
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, store, api::ApiConfig::default()));
    (base, dir)
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn start_agent(base: &str, chassis: &Chassis, name: &str, tunnel_ip: &str) {
    let cfg = agent::AgentConfig {
        server: base.to_string(),
        chassis: name.to_string(),
        ovsdb: chassis.db_endpoint(),
        ovs_rundir: chassis.rundir().to_path_buf(),
        tunnel_ip: tunnel_ip.parse::<IpAddr>().unwrap(),
        encap: chassis::Encap::Geneve,
        bridge: "br-int".into(),
        datapath_type: "netdev".into(),
        metrics_listen: None,
        bridge_mappings: Vec::new(),
        gateway: false,
    };
    tokio::spawn(async move {
        if let Err(e) = agent::run(cfg).await {
            eprintln!("agent stopped: {e}");
        }
    });
}

/// A VM for `port` on `chassis`, plugged into br-int; `configured`: with the port's address.
async fn vm(chassis: &Chassis, port: &Value, configured: bool) -> Host {
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let mac = port["mac_address"].as_str().unwrap();
    let host = Host::create(
        chassis,
        &HostOpts {
            ip: configured.then(|| format!("{ip}/24")),
            mac: Some(mac.into()),
            mtu: Some(1400),
            ..HostOpts::default()
        },
    )
    .unwrap();
    let client = ovsdb::Client::connect(
        &chassis.db_endpoint().parse().unwrap(),
        ovsdb::ClientOptions::default(),
    )
    .await
    .unwrap();
    chassis::plug_vif(
        &client,
        "br-int",
        host.port(),
        port["id"].as_str().unwrap(),
        Some(mac),
    )
    .await
    .unwrap();
    host
}

/// `tcpdump` on a VM's `eth0`, started and ready (it said "listening on"): what it sees
/// arrive, line by line.
struct Capture {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Capture {
    fn start(host: &Host, filter: &str) -> Capture {
        use std::io::BufRead;
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", host.netns().name()])
            .args(["tcpdump", "-i", "eth0", "-n", "-l", "-p", filter])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let (out, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = out.send(line);
            }
        });
        let (said, heard) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = said.send(line);
            }
        });
        let mut stderr = Vec::new();
        loop {
            match heard.recv_timeout(Duration::from_secs(20)) {
                Ok(l) if l.contains("listening on") => break,
                Ok(l) => stderr.push(l),
                Err(_) => panic!("tcpdump did not start listening: {stderr:?}"),
            }
        }
        Capture { child, lines }
    }

    /// The lines seen so far.
    fn seen(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pings `ip` from `from` out of `host`, with the neighbour entry for `ip` fixed to `mac` first
/// (no ARP: a spoofed ping must not fail for want of an ARP answer); returns the lines
/// `capture` (on the target) saw of echo requests from `from`, after the target's answers
/// could have come back.
fn spoofed_pings(host: &Host, from: &str, ip: &str, mac: &str, capture: &Capture) -> Vec<String> {
    host.exec(&[
        "ip",
        "neigh",
        "replace",
        ip,
        "lladdr",
        mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .unwrap();
    let answered = host
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", from, ip])
        .is_ok();
    let seen: Vec<String> = capture
        .seen()
        .into_iter()
        .filter(|l| l.contains(&format!("{from} > {ip}")) && l.contains("echo request"))
        .collect();
    if answered {
        // An answer came back, so its request had arrived: tcpdump printed it before.
        assert!(!seen.is_empty(), "answered, yet the capture saw nothing");
    }
    seen
}

fn pings(host: &Host, ip: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if host.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok() {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_on_two_chassis_talk_and_spoofing_is_dropped() {
    let (base, _dir) = server().await;
    let mut underlay = Underlay::create().unwrap();
    let c1 = Chassis::start("ag1", &ChassisOpts::default()).unwrap();
    let c2 = Chassis::start("ag2", &ChassisOpts::default()).unwrap();
    underlay.attach(&c1, "172.31.7.1/24").unwrap();
    underlay.attach(&c2, "172.31.7.2/24").unwrap();
    start_agent(&base, &c1, "ag1", "172.31.7.1");
    start_agent(&base, &c2, "ag2", "172.31.7.2");

    let net = post(&base, "/v2.0/networks", json!({"network": {"name": "n"}})).await;
    let net_id = net["network"]["id"].as_str().unwrap();
    post(
        &base,
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.77.0.0/24"}}),
    )
    .await;
    post(
        &base,
        "/v2.0/subnets",
        json!({"subnet": {"network_id": net_id, "ip_version": 6, "cidr": "2001:db8:77::/64"}}),
    )
    .await;
    let p1 = post(
        &base,
        "/v2.0/ports",
        json!({"port": {"network_id": net_id, "name": "vm1"}}),
    )
    .await["port"]
        .clone();
    let p2 = post(
        &base,
        "/v2.0/ports",
        json!({"port": {"network_id": net_id, "name": "vm2"}}),
    )
    .await["port"]
        .clone();
    // Wait for the bridges the agents create.
    for c in [&c1, &c2] {
        c.wait_until(Duration::from_secs(20), || {
            c.ovs_vsctl(&["br-exists", "br-int"]).is_ok()
        })
        .unwrap();
    }
    let h1 = vm(&c1, &p1, true).await;
    let h2 = vm(&c2, &p2, true).await;
    let ip2 = p2["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    let ip1 = p1["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        pings(&h1, &ip2, Duration::from_secs(20)),
        "vm1 cannot reach vm2\n{}",
        c1.ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
            .unwrap_or_default()
    );
    assert!(
        pings(&h2, &ip1, Duration::from_secs(5)),
        "vm2 cannot reach vm1"
    );
    h1.exec(&["ping", "-c", "3", "-i", "0.2", &ip2])
        .expect("steady ping");

    // IPv6: neighbour solicitations for known addresses are answered by the agent (they are not
    // flooded), so ping6 across chassis works only if that answer is right.
    let v6 = |p: &Value| {
        p["fixed_ips"][1]["ip_address"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for (h, p) in [(&h1, &p1), (&h2, &p2)] {
        h.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"])
            .unwrap();
        h.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{}/64", v6(p)),
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
    }
    let ok6 = (0..10).any(|_| {
        h1.exec(&["ping", "-6", "-c", "1", "-W", "1", &v6(&p2)])
            .is_ok()
    });
    assert!(ok6, "vm1 cannot reach vm2 over IPv6");
    let neigh = h1.exec(&["ip", "-6", "neigh", "show", &v6(&p2)]).unwrap();
    assert!(
        neigh.contains(p2["mac_address"].as_str().unwrap()),
        "{neigh}"
    );

    // DHCP: vm3 has no address; the agent of its chassis answers its DHCP client with the port's
    // address and the subnet's settings, and with that address it reaches vm1 on the other chassis.
    let p3 = post(
        &base,
        "/v2.0/ports",
        json!({"port": {"network_id": net_id, "name": "vm3"}}),
    )
    .await["port"]
        .clone();
    let ip3 = p3["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let h3 = vm(&c2, &p3, false).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\nip addr add \"$ip/$mask\" dev \"$interface\"\n\
         echo \"lease ip=$ip mask=$mask router=$router mtu=$mtu hostname=$hostname domain=$domain \
         serverid=$serverid lease=$lease\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let script = script.to_str().unwrap();
    let udhcpc = [
        "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", script,
    ];
    let out = h3.exec(&udhcpc).expect("a DHCP lease");
    for want in [
        format!("ip={ip3} "),
        "mask=24 ".to_string(),
        "router=10.77.0.1 ".to_string(),
        "mtu=1450 ".to_string(),
        format!("hostname=host-{} ", ip3.replace('.', "-")),
        "domain=openstacklocal ".to_string(),
        "serverid=10.77.0.1 ".to_string(),
        "lease=86400".to_string(),
    ] {
        assert!(out.contains(&want), "{want:?} not in the lease: {out}");
    }
    assert!(
        pings(&h3, &ip1, Duration::from_secs(10)),
        "vm3 cannot reach vm1 with its DHCP address"
    );

    // A spoofed source address from vm1 is dropped: vm2 never sees its echo requests (seen
    // on vm2 itself; vm1 knows vm2's MAC already, so an ARP failure cannot pass for the drop).
    h1.exec(&["ip", "addr", "add", "10.77.0.222/24", "dev", "eth0"])
        .unwrap();
    let mac2 = p2["mac_address"].as_str().unwrap();
    let capture = Capture::start(&h2, "icmp");
    let seen = spoofed_pings(&h1, "10.77.0.222", &ip2, mac2, &capture);
    assert!(seen.is_empty(), "spoofed source got through: {seen:?}");

    // An allowed address pair admits that source: the datapath follows the port's update.
    let pair = json!({"port": {"allowed_address_pairs": [{"ip_address": "10.77.0.222"}]}});
    let id1 = p1["id"].as_str().unwrap();
    let client = reqwest::Client::new();
    let status = client
        .put(format!("{base}/v2.0/ports/{id1}"))
        .json(&pair)
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success(), "port update: {status}");
    let paired = (0..20).any(|_| {
        h1.exec(&["ping", "-c", "1", "-W", "1", "-I", "10.77.0.222", &ip2])
            .is_ok()
    });
    assert!(paired, "the allowed address pair's source is still dropped");
    // The same capture sees the same pings once they are allowed: its silence above meant a
    // drop.
    let seen = spoofed_pings(&h1, "10.77.0.222", &ip2, mac2, &capture);
    assert!(!seen.is_empty(), "the capture on vm2 sees nothing");
    drop(capture);

    // Open vSwitch restarts (its flows are gone with it): the agent reconnects, reads the empty
    // switch and installs the pipeline again.
    c1.stop_vswitchd();
    c1.start_vswitchd().unwrap();
    assert!(
        pings(&h1, &ip2, Duration::from_secs(30)),
        "vm1 cannot reach vm2 after ovs-vswitchd restarted\n{}\n{}\n{}",
        c1.ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
            .unwrap_or_default(),
        c1.ovs_ofctl(&["-O", "OpenFlow13", "show", "br-int"])
            .unwrap_or_default(),
        c1.ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-phy"])
            .unwrap_or_default()
    );
}
