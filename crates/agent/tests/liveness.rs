//! Chassis liveness end to end (server in this process, real Open vSwitch, agents as processes
//! of their own so that they can be frozen with SIGSTOP):
//!
//! * an agent frozen for longer than its chassis lease's TTL loses the lease (its `chassis-up`
//!   key goes); resumed, its next heartbeat is answered 404 `ChassisLeaseNotFound` and it
//!   registers again by itself, under a new lease. Its ports stay bound to it and ACTIVE, and its
//!   switch keeps forwarding throughout: two local VMs ping each other across the whole episode
//!   without losing a packet, the switch holds the same flows (match, priority, cookie, actions)
//!   all along, and the agent sends it no flow-mod at all (nothing was removed and re-added);
//! * a port moved from chassis A to chassis B while A's agent is frozen (its VIF unplugged on A,
//!   `binding:host_id` set to B as Nova does, its VIF plugged on B): B reports it up; A, resumed,
//!   sees the VIF gone and reports it DOWN, late, and that report changes nothing (the port stays
//!   ACTIVE on B, same revision). The same report from B does count.
//!
//! The agents are this test binary run again ([`agent_process`], an ignored test that runs an
//! agent when its environment says so), killed by PID when the test ends, however it ends.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use openflow::Flow;
use openflow::conn::Connection;
use openflow::flow::FlowKey;
use serde_json::{Value, json};
use testbed::{Chassis, ChassisOpts, Host, Underlay};

// The agents here are processes, not tasks: `start_agent` is not used.
#[allow(dead_code)]
mod support;
use support::{Settling, call, id, metrics, post, server, vm, wait_for};

/// Generous: what is waited for takes seconds (a lease runs out within 10 s).
const HANG_GUARD: Duration = Duration::from_secs(180);

/// The environment variable that makes [`agent_process`] run an agent (its configuration).
const AGENT_ENV: &str = "WYVERN_LIVENESS_AGENT";

/// The agent process: runs an agent configured by [`AGENT_ENV`] until it is killed; without it,
/// nothing (as when the ignored tests are run).
#[test]
#[ignore = "the agent process of the liveness tests, which start it themselves"]
fn agent_process() {
    let Ok(spec) = std::env::var(AGENT_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).unwrap();
    let text = |k: &str| spec[k].as_str().unwrap().to_string();
    let cfg = agent::AgentConfig {
        server: text("server"),
        chassis: text("chassis"),
        ovsdb: text("ovsdb"),
        ovs_rundir: text("rundir").into(),
        tunnel_ip: text("tunnel_ip").parse().unwrap(),
        encap: chassis::Encap::Geneve,
        bridge: "br-int".into(),
        datapath_type: "netdev".into(),
        metrics_listen: Some(text("metrics").parse().unwrap()),
        bridge_mappings: Vec::new(),
        gateway: false,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Err(e) = runtime.block_on(agent::run(cfg)) {
        eprintln!("agent stopped: {e}");
        std::process::exit(1);
    }
}

/// Spawns `cmd` so that it is killed when this thread (the test's) ends, however it ends.
fn spawn_tied(cmd: &mut Command) -> Child {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().unwrap()
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: plain kill(2) on a child of this process.
    let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// A process' state letter (`T`: stopped), from `/proc/<pid>/stat`.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// An agent process of `chassis`, killed (by PID) when dropped.
struct AgentProcess {
    child: Child,
    metrics: SocketAddr,
}

impl AgentProcess {
    fn start(base: &str, chassis: &Chassis, tunnel_ip: &str) -> AgentProcess {
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let spec = json!({
            "server": base, "chassis": chassis.name(), "ovsdb": chassis.db_endpoint(),
            "rundir": chassis.rundir().display().to_string(), "tunnel_ip": tunnel_ip,
            "metrics": metrics.to_string(),
        });
        let child = spawn_tied(
            Command::new(std::env::current_exe().unwrap())
                .args(["agent_process", "--exact", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(AGENT_ENV, spec.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        );
        AgentProcess { child, metrics }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Freezes the agent (SIGSTOP), and checks that it is.
    fn freeze(&self) {
        signal(self.pid(), libc::SIGSTOP);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while state(self.pid()) != Some('T') {
            assert!(
                std::time::Instant::now() < deadline,
                "agent {} not stopped: {:?}",
                self.pid(),
                state(self.pid())
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Lets it run again (SIGCONT).
    fn resume(&self) {
        signal(self.pid(), libc::SIGCONT);
    }

    /// Whether it still runs (stopped or not): it never exits by itself.
    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    async fn metric(&self, name: &str) -> Option<u64> {
        metrics(self.metrics).await.get(name).copied()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ping` from `host` to `ip`, every 0.2 s, in the background until [`Pinger::stop`]; killed
/// when dropped.
struct Pinger {
    child: Option<Child>,
}

impl Pinger {
    fn start(host: &Host, ip: &str) -> Pinger {
        let child = spawn_tied(
            Command::new("ip")
                .args(["netns", "exec", host.netns().name()])
                .args(["ping", "-n", "-i", "0.2", "-W", "1", ip])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        Pinger { child: Some(child) }
    }

    /// Interrupts it; echo requests sent and replies received, and its output.
    fn stop(mut self) -> (u64, u64, String) {
        let child = self.child.take().unwrap();
        signal(child.id(), libc::SIGINT);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let count = |what: &str| {
            text.lines()
                .find_map(|l| {
                    l.split(", ")
                        .find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
                })
                .unwrap_or_else(|| panic!("no {what:?} in ping's output: {text}"))
        };
        (
            count(" packets transmitted"),
            count(" received"),
            text.lines()
                .filter(|l| !l.contains("bytes from"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The flows on `chassis`' `br-int` that the agent owns (not those the switch learned), by
/// identity; `None` while the switch does not answer.
async fn held(chassis: &Chassis) -> Option<std::collections::HashMap<FlowKey, Flow>> {
    let mgmt = format!("unix:{}", chassis.mgmt_socket("br-int").display());
    let (conn, _events, _) = Connection::connect(&mgmt, Duration::from_secs(2))
        .await
        .ok()?;
    let flows = conn.dump_flows(Default::default()).await.ok()?;
    Some(
        flows
            .into_iter()
            .filter(|s| !pipeline::cookie::is_learned(s.flow.cookie))
            .map(|s| (s.flow.key(), s.flow))
            .collect(),
    )
}

/// The lease of `chassis`' `chassis-up` key as the sync API shows it (every snapshot carries
/// the chassis list); `None` while the chassis is down.
async fn chassis_up(base: &str, chassis: &str) -> Option<i64> {
    let url = format!("{base}/wyvern/v1/sync/snapshot");
    let snapshot = call(reqwest::Method::GET, url, Value::Null).await;
    let key = nb_keys::Kind::ChassisUp.key(chassis);
    snapshot["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key.as_str())
        .map(|i| i["value"]["lease"].as_i64().expect("a lease"))
}

/// How many requests the server answered for `resource` (its metrics' label), by method and
/// status.
async fn answered(base: &str, resource: &str, method: &str, status: u16) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "wyvern_api_request_duration_seconds_count{{resource=\"{resource}\",method=\"{method}\",status=\"{status}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0)
}

async fn show_port(base: &str, port: &str) -> Value {
    let url = format!("{base}/v2.0/ports/{port}");
    call(reqwest::Method::GET, url, Value::Null).await["port"].clone()
}

fn state_of(port: &Value) -> (String, String) {
    let text = |k: &str| port[k].as_str().unwrap_or_default().to_string();
    (text("status"), text("binding:host_id"))
}

/// Whether `host` reaches `ip` within a minute (one echo request at a time).
fn reaches(host: &Host, ip: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if host.exec(&["ping", "-c", "1", "-W", "1", ip]).is_ok() {
            return true;
        }
    }
    false
}

fn ip(port: &Value) -> String {
    port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until `agent` is in sync and the switch holds exactly the flows it wants; returns them.
async fn converged(
    chassis: &Chassis,
    agent: &AgentProcess,
) -> std::collections::HashMap<FlowKey, Flow> {
    let mut settling = Settling::new();
    wait_for("the agent converges", HANG_GUARD, async || {
        let m = metrics(agent.metrics).await;
        let flows = held(chassis).await.unwrap_or_default();
        let desired = m.get("wyvern_agent_flows_desired").copied();
        let in_sync = m.get("wyvern_agent_in_sync") == Some(&1)
            && desired.is_some_and(|d| d > 0)
            && desired == m.get("wyvern_agent_flows_installed").copied()
            && desired == Some(flows.len() as u64);
        let settled = settling.settled(in_sync, &flows).await;
        (settled, (flows, m))
    })
    .await
    .0
}

/// Waits until `port` is ACTIVE on `chassis`; returns it.
async fn active_on(base: &str, port: &str, chassis: &str) -> Value {
    let want = ("ACTIVE".to_string(), chassis.to_string());
    wait_for(
        &format!("port {port} ACTIVE on {chassis}"),
        HANG_GUARD,
        async || {
            let p = show_port(base, port).await;
            (state_of(&p) == want, p)
        },
    )
    .await
}

/// Checks that the switch holds `flows`, unchanged (the agent's flows were never removed).
fn assert_kept(
    now: &std::collections::HashMap<FlowKey, Flow>,
    flows: &std::collections::HashMap<FlowKey, Flow>,
    when: &str,
) {
    let missing: Vec<&Flow> = flows
        .iter()
        .filter(|(k, f)| now.get(*k) != Some(*f))
        .map(|(_, f)| f)
        .collect();
    assert!(
        missing.is_empty() && now.len() == flows.len(),
        "{when}: {} flows held instead of {}, {} missing or changed (first: {:?})",
        now.len(),
        flows.len(),
        missing.len(),
        missing.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_chassis_registers_again_and_keeps_forwarding() {
    let (base, _dir) = server().await;
    let ch = Chassis::start("lv1", &ChassisOpts::default()).unwrap();
    let mut agent = AgentProcess::start(&base, &ch, "172.31.9.1");
    let net = post(&base, "/v2.0/networks", "network", json!({"name": "n"})).await;
    post(
        &base,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.79.0.0/24"}),
    )
    .await;
    let mut ports = Vec::new();
    for n in ["vm1", "vm2"] {
        let body = json!({"network_id": id(&net), "name": n});
        ports.push(post(&base, "/v2.0/ports", "port", body).await);
    }
    ch.wait_until(HANG_GUARD, || {
        ch.ovs_vsctl(&["br-exists", "br-int"]).is_ok()
    })
    .unwrap();
    let h1 = vm(&ch, &ports[0]).await;
    let _h2 = vm(&ch, &ports[1]).await;
    for p in &ports {
        active_on(&base, &id(p), ch.name()).await;
    }
    let flows = converged(&ch, &agent).await;
    let mods = agent.metric("wyvern_agent_flow_mods_sent_total").await;
    assert!(mods.is_some_and(|m| m > 0), "{mods:?}");
    let lease = chassis_up(&base, ch.name()).await.expect("lv1 is up");
    let not_found = answered(&base, "chassis", "POST", 404).await;
    assert!(
        reaches(&h1, &ip(&ports[1])),
        "vm1 cannot reach vm2 to begin with"
    );

    // Frozen past its lease's TTL: the chassis goes down, and the switch keeps forwarding.
    let pinger = Pinger::start(&h1, &ip(&ports[1]));
    agent.freeze();
    wait_for("lv1's lease runs out", HANG_GUARD, async || {
        let up = chassis_up(&base, ch.name()).await;
        if let Some(now) = held(&ch).await {
            assert_kept(&now, &flows, "while the agent is frozen");
        }
        (up.is_none(), up)
    })
    .await;
    assert_eq!(
        answered(&base, "chassis", "POST", 404).await,
        not_found,
        "no heartbeat from a frozen agent"
    );

    // Resumed: its heartbeat is answered 404 and it registers again, under a new lease.
    agent.resume();
    let again = wait_for("lv1 registers again", HANG_GUARD, async || {
        let up = chassis_up(&base, ch.name()).await;
        if let Some(now) = held(&ch).await {
            assert_kept(&now, &flows, "while the agent registers again");
        }
        (up.is_some(), up)
    })
    .await
    .unwrap();
    assert_ne!(again, lease, "the chassis is up under its old lease");
    assert!(
        answered(&base, "chassis", "POST", 404).await > not_found,
        "lv1 registered again without a heartbeat answered 404"
    );
    assert!(agent.alive(), "the agent process ended");
    for p in &ports {
        let p = show_port(&base, &id(p)).await;
        assert_eq!(
            state_of(&p),
            ("ACTIVE".to_string(), ch.name().to_string()),
            "{p}"
        );
    }

    // Back in sync with the same flows, and nothing was sent to the switch meanwhile.
    assert_kept(&converged(&ch, &agent).await, &flows, "after the episode");
    assert_eq!(
        agent.metric("wyvern_agent_flow_mods_sent_total").await,
        mods,
        "the agent sent flow-mods: its flows were changed"
    );
    // And the lease is kept alive again: the chassis stays up past another TTL.
    let renewed = answered(&base, "chassis", "POST", 200).await;
    wait_for("heartbeats on the new lease", HANG_GUARD, async || {
        let n = answered(&base, "chassis", "POST", 200).await;
        (n >= renewed + 2, n)
    })
    .await;
    assert_eq!(chassis_up(&base, ch.name()).await, Some(again));

    let m = metrics(agent.metrics).await;
    println!(
        "after the episode: resyncs {:?}, sync resumes {:?}, snapshots {:?}",
        m.get("wyvern_agent_resyncs_total"),
        m.get("wyvern_agent_sync_resumes_total"),
        m.get("wyvern_agent_sync_snapshots_total")
    );
    let (sent, received, summary) = pinger.stop();
    println!("{summary}");
    // A reply still in flight when ping is interrupted counts as lost: one at most.
    assert!(
        sent >= 25 && received + 1 >= sent,
        "vm1 -> vm2 lost packets during the episode: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_down_report_from_the_old_chassis_changes_nothing() {
    let (base, _dir) = server().await;
    let mut underlay = Underlay::create().unwrap();
    let ca = Chassis::start("lva", &ChassisOpts::default()).unwrap();
    let cb = Chassis::start("lvb", &ChassisOpts::default()).unwrap();
    underlay.attach(&ca, "172.31.13.1/24").unwrap();
    underlay.attach(&cb, "172.31.13.2/24").unwrap();
    let mut agent_a = AgentProcess::start(&base, &ca, "172.31.13.1");
    let agent_b = AgentProcess::start(&base, &cb, "172.31.13.2");
    let net = post(&base, "/v2.0/networks", "network", json!({"name": "n"})).await;
    post(
        &base,
        "/v2.0/subnets",
        "subnet",
        json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.80.0.0/24"}),
    )
    .await;
    // `moving` starts on A and moves to B; `stays` is on A all along.
    let moving = post(
        &base,
        "/v2.0/ports",
        "port",
        json!({"network_id": id(&net), "name": "moving"}),
    )
    .await;
    let stays = post(
        &base,
        "/v2.0/ports",
        "port",
        json!({"network_id": id(&net), "name": "stays"}),
    )
    .await;
    let (moving_id, stays_id) = (id(&moving), id(&stays));
    for c in [&ca, &cb] {
        c.wait_until(HANG_GUARD, || c.ovs_vsctl(&["br-exists", "br-int"]).is_ok())
            .unwrap();
    }
    let on_a = vm(&ca, &moving).await;
    let h_stays = vm(&ca, &stays).await;
    active_on(&base, &moving_id, ca.name()).await;
    active_on(&base, &stays_id, ca.name()).await;
    assert!(
        reaches(&h_stays, &ip(&moving)),
        "stays cannot reach moving on A"
    );
    // Both agents are up and settled before the move.
    for c in [ca.name(), cb.name()] {
        wait_for(&format!("{c} is up"), HANG_GUARD, async || {
            let up = chassis_up(&base, c).await;
            (up.is_some(), up)
        })
        .await;
    }
    converged(&cb, &agent_b).await;

    // A is slow: frozen across the move.
    agent_a.freeze();
    let client_a = ovsdb::Client::connect(
        &ca.db_endpoint().parse().unwrap(),
        ovsdb::ClientOptions::default(),
    )
    .await
    .unwrap();
    chassis::unplug_vif(&client_a, "br-int", on_a.port())
        .await
        .unwrap();
    drop(on_a);
    let reports = answered(&base, "port_bindings", "POST", 200).await;
    call(
        reqwest::Method::PUT,
        format!("{base}/v2.0/ports/{moving_id}"),
        json!({"port": {"binding:host_id": cb.name()}}),
    )
    .await;
    let on_b = vm(&cb, &moving).await;
    // B's report that the VIF appeared there.
    wait_for("B reports the moved VIF", HANG_GUARD, async || {
        let n = answered(&base, "port_bindings", "POST", 200).await;
        let vifs = agent_b.metric("wyvern_agent_local_vifs").await;
        (n > reports && vifs == Some(1), (n, vifs))
    })
    .await;
    let moved = active_on(&base, &moving_id, cb.name()).await;
    assert_eq!(state(agent_a.pid()), Some('T'), "A ran during the move");

    // A resumes: it sees the VIF gone and reports it DOWN, late.
    let reports = answered(&base, "port_bindings", "POST", 200).await;
    agent_a.resume();
    wait_for("A's late DOWN report arrives", HANG_GUARD, async || {
        let n = answered(&base, "port_bindings", "POST", 200).await;
        let vifs = agent_a.metric("wyvern_agent_local_vifs").await;
        (n > reports && vifs == Some(1), (n, vifs))
    })
    .await;
    let after = show_port(&base, &moving_id).await;
    assert_eq!(
        after, moved,
        "A's late DOWN report changed the port that moved to B"
    );
    assert!(agent_a.alive(), "agent A ended");
    // A follows the move: its VM reaches the moved one on B, and back.
    let h_moved = on_b;
    assert!(
        reaches(&h_stays, &ip(&moving)),
        "stays (on A) cannot reach moving on B"
    );
    assert!(
        reaches(&h_moved, &ip(&stays)),
        "moving (on B) cannot reach stays on A"
    );
    assert_eq!(show_port(&base, &moving_id).await, moved);

    // The same report from the port's chassis counts: unplugged on B, it goes DOWN.
    let client_b = ovsdb::Client::connect(
        &cb.db_endpoint().parse().unwrap(),
        ovsdb::ClientOptions::default(),
    )
    .await
    .unwrap();
    chassis::unplug_vif(&client_b, "br-int", h_moved.port())
        .await
        .unwrap();
    let want = ("DOWN".to_string(), cb.name().to_string());
    let down = wait_for("B reports the VIF gone", HANG_GUARD, async || {
        let p = show_port(&base, &moving_id).await;
        (state_of(&p) == want, p)
    })
    .await;
    assert_eq!(
        down["revision_number"].as_u64(),
        moved["revision_number"].as_u64().map(|r| r + 1),
        "{down}"
    );
}
