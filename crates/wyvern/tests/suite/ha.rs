//! High availability end to end: a lab on 3 etcd members with 2 API servers and 3 chassis, the
//! agents spread over the servers (c1 and c3 use server-1 first, c2 server-2).
//!
//! Checked: server-1 killed with -9, c1's and c3's agents are on server-2 within 1 s
//! (`wyvern_agent_server_failovers_total` up) without a new snapshot (`sync_snapshots`
//! unchanged); a port created through server-2 (with the `openstack` CLI) and plugged on c3 has
//! its flows on every chassis within 1 s and answers pings; the `openstack` CLI lists networks
//! against either server; with server-1 back, the etcd leader killed with -9 while networks and
//! ports are created through both servers at once: after the election writes go on through
//! either server, and every write a server acknowledged is listed by both (and by server-1 again
//! at the end); with both servers down VM traffic keeps flowing (0 of 150 pings lost over 30 s,
//! on two pairs of VMs); when server-1 returns every agent resumes its watch (no snapshot) and
//! follows a change made through it.
//!
//! The lab (etcd members, servers, agents, OVS, namespaces) is torn down in any case: dropping
//! it does, also on a panic; the test's own VM namespace is dropped before it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, LabOptions, Topology, names};
use serde_json::{Value, json};
use testbed::{Host, HostOpts, Netns};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const FAILOVERS: &str = "wyvern_agent_server_failovers_total";
const SNAPSHOTS: &str = "wyvern_agent_sync_snapshots_total";
const RESUMES: &str = "wyvern_agent_sync_resumes_total";
/// The address of the port made through server-2.
const NEW_IP: &str = "10.0.0.20";

fn topology(name: &str) -> Topology {
    let mut text = format!(
        "name = \"{name}\"\n[server]\nstore = \"etcd\"\netcd_members = 3\nservers = 2\n\
         [underlay]\ncidr = \"172.31.46.0/24\"\n\
         [[network]]\nname = \"web\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n"
    );
    for (i, c) in CHASSIS.iter().enumerate() {
        text.push_str(&format!(
            "[[chassis]]\nname = \"{c}\"\n\
             [[vm]]\nname = \"web{n}\"\nnetwork = \"web\"\nchassis = \"{c}\"\nip = \"10.0.0.1{n}\"\n",
            n = i + 1
        ));
    }
    Topology::parse(&text, Path::new("ha.toml")).expect("valid topology")
}

/// Waits until `ok`, at most `timeout`; how long it took.
fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ok() {
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "no {what} within {timeout:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn metric(lab: &Lab, chassis: &str, name: &str) -> f64 {
    lab.agent_metric(chassis, name)
        .unwrap_or_else(|| panic!("no {name} from {chassis}'s agent"))
}

fn metrics(lab: &Lab, name: &str) -> Vec<f64> {
    CHASSIS.iter().map(|c| metric(lab, c, name)).collect()
}

/// `openstack ARGS` against the server at `url` (auth type none); what it prints.
fn openstack(url: &str, args: &[&str]) -> String {
    let exe = std::env::var_os("WYVERN_OPENSTACK_CLI").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack"),
        PathBuf::from,
    );
    let mut cmd = Command::new(&exe);
    for (var, _) in std::env::vars().filter(|(v, _)| v.starts_with("OS_")) {
        cmd.env_remove(var);
    }
    let out = cmd
        .env("OS_AUTH_TYPE", "none")
        .env("OS_ENDPOINT", url)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(
        out.status.success(),
        "openstack {args:?} at {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lists_network_web(url: &str) -> bool {
    let out = openstack(url, &["network", "list", "-f", "json"]);
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|nets| nets.iter().any(|n| n["Name"] == "web"))
}

/// How many chassis have a flow mentioning `mac`.
fn chassis_with_flows_for(lab: &Lab, mac: &str) -> usize {
    CHASSIS
        .iter()
        .filter(|c| {
            lab.chassis(c)
                .and_then(|ch| {
                    ch.ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
                        .ok()
                })
                .is_some_and(|flows| flows.contains(mac))
        })
        .count()
}

/// Pings `ip` from VM `vm` until one answer, at most `tries` times (a first packet may go to
/// neighbour resolution).
fn reaches(lab: &Lab, vm: &str, ip: &str, tries: usize) -> bool {
    (0..tries).any(|_| {
        lab.exec(vm, &["ping", "-c", "1", "-W", "1", ip])
            .is_ok_and(|o| o.status.success())
    })
}

/// 150 pings over 30 s from `vm` to `ip`; ping's summary line (how many were lost).
fn lost_pings(lab: &Lab, vm: &str, ip: &str) -> String {
    let out = lab
        .exec(vm, &["ping", "-c", "150", "-i", "0.2", "-W", "1", ip])
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.contains("packet loss"))
        .unwrap_or(&text)
        .to_owned()
}

/// The agents' log lines saying that BFD changed its mind about a chassis (evidence for a
/// failure: a datapath that stalled long enough for BFD to call a chassis down).
fn bfd_changes(lab: &Lab) -> Vec<String> {
    CHASSIS
        .iter()
        .flat_map(|c| {
            let log = std::fs::read_to_string(lab.dir().join(format!("agent-{c}.log")));
            let lines: Vec<String> = log
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("data plane of chassis"))
                .map(|l| format!("{c}: {l}"))
                .collect();
            lines
        })
        .collect()
}

/// A write a server acknowledged: which server, what was made (`networks` or `ports`), its id,
/// and when the request was sent.
struct Ack {
    server: usize,
    kind: &'static str,
    id: String,
    sent: Instant,
}

/// What every writer records while it runs.
#[derive(Default)]
struct Journal {
    acks: Mutex<Vec<Ack>>,
    failed: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Journal {
    /// How many writes of `kind` through `server` sent after `since` were acknowledged.
    fn acked_since(&self, server: usize, kind: &str, since: Instant) -> usize {
        let acks = self.acks.lock().unwrap();
        acks.iter()
            .filter(|a| a.server == server && a.kind == kind && a.sent >= since)
            .count()
    }
}

/// The writers of one kind and server at a time: one network writer and two port writers
/// (ports on `net`) per server.
const WRITERS: [&str; 3] = ["networks", "ports", "ports"];

/// Creates `kind` through the server at `url` (`server` is its index) one after the other
/// until the journal says stop, recording what was acknowledged and what failed.
async fn writer(
    http: reqwest::Client,
    url: String,
    server: usize,
    kind: &'static str,
    net: String,
    journal: Arc<Journal>,
) {
    let mut n = 0;
    while !journal.stop.load(Ordering::Relaxed) {
        n += 1;
        let name = format!("w{server}-{n}");
        let (one, body) = match kind {
            "networks" => ("network", json!({"network": {"name": name}})),
            _ => ("port", json!({"port": {"network_id": net, "name": name}})),
        };
        let sent = Instant::now();
        let answer = http
            .post(format!("{url}/v2.0/{kind}"))
            .json(&body)
            .send()
            .await;
        let outcome = match answer {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                v[one]["id"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or(format!("{v}"))
            }
            Ok(r) => {
                let status = r.status();
                Err(format!("{status} {}", r.text().await.unwrap_or_default()))
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(id) => journal.acks.lock().unwrap().push(Ack {
                server,
                kind,
                id,
                sent,
            }),
            Err(why) => {
                let why = format!("{kind} via server-{}: {why}", server + 1);
                journal.failed.lock().unwrap().push(why);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of every `kind` the server at `url` lists.
fn listed(
    rt: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    url: &str,
    kind: &str,
) -> BTreeSet<String> {
    let v: Value = rt.block_on(async {
        let r = http
            .get(format!("{url}/v2.0/{kind}?fields=id"))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .unwrap_or_else(|e| panic!("listing {kind} at {url}: {e}"));
        r.json().await.expect("a list as JSON")
    });
    v[kind]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect()
}

/// Every acknowledged write is listed by the server at `url`.
fn all_listed(rt: &tokio::runtime::Runtime, http: &reqwest::Client, url: &str, acks: &[Ack]) {
    for kind in ["networks", "ports"] {
        let have = listed(rt, http, url, kind);
        let missing: Vec<&str> = acks
            .iter()
            .filter(|a| a.kind == kind && !have.contains(&a.id))
            .map(|a| a.id.as_str())
            .collect();
        assert!(
            missing.is_empty(),
            "{url} lacks acknowledged {kind}: {missing:?}"
        );
    }
}

/// Kills the etcd leader with -9 while every server takes writes (networks, and ports on a
/// network of their own): writes go on through every server after the election, and every
/// acknowledged write is listed by every server. Starts the member again; returns the
/// acknowledged writes.
fn kill_the_etcd_leader_under_writes(lab: &mut Lab, urls: &[String]) -> Vec<Ack> {
    /// Acknowledged writes per writer that show it is writing (before and after the kill).
    const FLOWING: usize = 3;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    let net = rt.block_on(async {
        let post = |kind: &str, body: Value| {
            let req = http.post(format!("{}/v2.0/{kind}", urls[0])).json(&body);
            async move {
                let v: Value = req.send().await.expect("POST").json().await.expect("JSON");
                v
            }
        };
        let net = post("networks", json!({"network": {"name": "writes"}})).await;
        let id = net["network"]["id"]
            .as_str()
            .expect("network id")
            .to_owned();
        let subnet = json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": "10.99.0.0/16"}});
        post("subnets", subnet).await;
        id
    });
    let journal = Arc::new(Journal::default());
    let tasks: Vec<_> = (0..urls.len())
        .flat_map(|s| WRITERS.map(|kind| (s, kind)))
        .map(|(s, kind)| {
            let task = writer(
                http.clone(),
                urls[s].clone(),
                s,
                kind,
                net.clone(),
                journal.clone(),
            );
            rt.spawn(task)
        })
        .collect();
    let flowing = |since: Instant| {
        (0..urls.len()).all(|s| {
            ["networks", "ports"]
                .iter()
                .all(|k| journal.acked_since(s, k, since) >= FLOWING)
        })
    };
    let start = Instant::now();
    wait_for(
        "writes through every server",
        Duration::from_secs(10),
        || flowing(start),
    );

    let leader = lab.etcd_leader().expect("the etcd leader");
    lab.stop(&leader).expect("kill the etcd leader");
    let killed = Instant::now();
    let elected = wait_for("a new etcd leader", Duration::from_secs(10), || {
        lab.etcd_leader().is_ok_and(|l| l != leader)
    });
    let after = Instant::now();
    let resumed = wait_for("writes after the election", Duration::from_secs(10), || {
        flowing(after)
    });
    journal.stop.store(true, Ordering::Relaxed);
    rt.block_on(async {
        for t in tasks {
            t.await.expect("a writer");
        }
    });
    let acks = std::mem::take(&mut *journal.acks.lock().unwrap());
    let failed = journal.failed.lock().unwrap();
    // The longest time no server acknowledged anything around the kill.
    let mut sent: Vec<Instant> = acks.iter().map(|a| a.sent).collect();
    sent.sort();
    let stall = sent
        .windows(2)
        .filter(|w| w[1] >= killed)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    println!(
        "{leader} (the etcd leader) killed: a new leader within {elected:?}, writes through \
         both servers {resumed:?} after that; {} writes acknowledged, {} failed, longest stall \
         {stall:?}; failures: {failed:?}",
        acks.len(),
        failed.len()
    );
    for url in urls {
        all_listed(&rt, &http, url, &acks);
    }
    lab.start(&leader).expect("start the old leader again");
    acks
}

/// A VM on `chassis` for `port` (made through the API, not by the lab): a namespace named like
/// the lab's VMs (so `down` removes it too) wired into br-int with the port's id and MAC.
fn plug(lab: &Lab, chassis: &str, port: &Value, mtu: u32) -> Host {
    let id = port["id"].as_str().expect("port id");
    let mac = port["mac_address"].as_str().expect("port MAC");
    let ch = lab.chassis(chassis).expect("chassis");
    let ns = Netns::create_named(&names::host_netns(lab.name(), "web9")).expect("netns");
    let tap = format!("tap{}", &id[..11]);
    let opts = HostOpts {
        ip: Some(format!("{NEW_IP}/24")),
        mac: Some(mac.to_owned()),
        mtu: Some(mtu),
        gateway: None,
    };
    let host = Host::create_in(ch, ns, &tap, &opts).expect("VM web9");
    ch.ovs_vsctl(&[
        "add-port",
        "br-int",
        &tap,
        "--",
        "set",
        "Interface",
        &tap,
        &format!("external_ids:iface-id={id}"),
        &format!("external_ids:attached-mac={mac}"),
        "external_ids:iface-status=active",
    ])
    .expect("plug web9");
    host
}

#[test]
fn agents_fail_over_and_traffic_survives_the_servers() {
    let _alone = crate::support::alone();
    let name = format!("ha{}", std::process::id() % 100_000);
    let opts = LabOptions {
        wyvern: env!("CARGO_BIN_EXE_wyvern").into(),
        progress: false,
    };
    let mut lab = Lab::up(&topology(&name), &opts).expect("lab up");
    let urls = lab.server_urls();
    for c in CHASSIS {
        wait_for("agents in sync", Duration::from_secs(30), || {
            lab.agent_metric(c, "wyvern_agent_in_sync") == Some(1.0)
        });
    }
    assert!(reaches(&lab, "web1", "10.0.0.13", 3), "web1 -> web3");
    let failovers = metrics(&lab, FAILOVERS);
    let snapshots = metrics(&lab, SNAPSHOTS);

    // server-1 dies: c1 and c3 (index 0 and 2) move to server-2 within 1 s, without a snapshot.
    lab.stop("server-1").expect("kill server-1");
    let took = wait_for("failover of c1 and c3", Duration::from_secs(1), || {
        [0, 2]
            .iter()
            .all(|&i| metric(&lab, CHASSIS[i], FAILOVERS) > failovers[i])
    });
    println!("c1 and c3 failed over within {took:?}");
    assert_eq!(metric(&lab, "c2", FAILOVERS), failovers[1], "c2 moved");

    // A port made through server-2 and plugged on c3: flows on every chassis within 1 s.
    assert!(
        lists_network_web(&urls[1]),
        "openstack network list on server-2"
    );
    let port = openstack(
        &urls[1],
        &[
            "port",
            "create",
            "--network",
            "web",
            "--host",
            "c3",
            "--fixed-ip",
            &format!("ip-address={NEW_IP}"),
            "web9",
            "-f",
            "json",
        ],
    );
    let port: Value = serde_json::from_str(&port).expect("the port as JSON");
    let created = Instant::now();
    let mtu = lab.state().networks["web"].mtu;
    let web9 = plug(&lab, "c3", &port, mtu);
    let mac = port["mac_address"].as_str().unwrap().to_owned();
    wait_for("the new port's flows", Duration::from_secs(1), || {
        chassis_with_flows_for(&lab, &mac) == CHASSIS.len()
    });
    println!(
        "web9's flows everywhere {:?} after it was created",
        created.elapsed()
    );
    for vm in ["web1", "web2"] {
        assert!(reaches(&lab, vm, NEW_IP, 3), "{vm} -> web9");
    }
    assert_eq!(metrics(&lab, SNAPSHOTS), snapshots, "a snapshot was taken");

    // server-1 back: the etcd leader dies while both servers take writes.
    lab.start("server-1").expect("start server-1");
    let acks = kill_the_etcd_leader_under_writes(&mut lab, &urls);

    // No server at all: traffic keeps flowing.
    lab.stop("server-1").expect("kill server-1");
    lab.stop("server-2").expect("kill server-2");
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(|| lost_pings(&lab, "web1", "10.0.0.13"));
        let b = s.spawn(|| lost_pings(&lab, "web2", NEW_IP));
        (a.join().unwrap(), b.join().unwrap())
    });
    for loss in [a, b] {
        assert!(
            loss.contains(" 0% packet loss"),
            "{loss}; what BFD told the agents meanwhile: {:?}",
            bfd_changes(&lab)
        );
    }

    // server-1 returns: every agent resumes its watch there (no snapshot) and follows a change.
    let resumes = metrics(&lab, RESUMES);
    lab.start("server-1").expect("start server-1");
    for (i, c) in CHASSIS.iter().enumerate() {
        wait_for("a resumed watch", Duration::from_secs(10), || {
            metric(&lab, c, RESUMES) > resumes[i]
        });
    }
    assert!(
        lists_network_web(&urls[0]),
        "openstack network list on server-1"
    );
    openstack(&urls[0], &["port", "delete", "web9"]);
    wait_for("web9's flows gone", Duration::from_secs(5), || {
        chassis_with_flows_for(&lab, &mac) == 0
    });
    assert_eq!(metrics(&lab, SNAPSHOTS), snapshots, "a snapshot was taken");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    all_listed(&rt, &reqwest::Client::new(), &urls[0], &acks);
    drop(web9);
    drop(lab);
}
