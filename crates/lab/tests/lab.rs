//! The lab against real Open vSwitch: up (twice), what the API and the namespaces show,
//! repair, topology changes, routers and VM options (dual stack, SLAAC, forwarding, extra
//! addresses) converging, security groups, their rules and address groups converging, physical
//! segments with their uplinks, external hosts (VLANs kept apart by the switch, IPv6), provider
//! and external networks, gateways (at the file's addresses) and floating IPs converging,
//! subnets replaced when their CIDR or IPv6 modes change, two labs side by side, teardown after
//! a crash, and a failed up.
//!
//! This test binary has no libtest harness: when the lab runs it as `server --listen ADDR
//! --store SPEC` it serves the Neutron API (so the lab starts a real server process without
//! needing the `wyvern` binary, which lives in another crate), as `supervise` it is `wyvern
//! supervise` (which the lab runs agents under), and as `agent` it answers like a `wyvern`
//! without that subcommand. Otherwise it runs the tests below, one after the other
//! (`cargo test -p lab --test lab -- NAME` runs those whose name contains NAME).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use lab::{Lab, LabOptions, Topology};
use serde_json::Value;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let with_agent = args[0].ends_with(WITH_AGENT);
    match args.get(1).map(String::as_str) {
        Some("server") => serve(&args[2..]),
        Some("agent") if with_agent => fake_agent(&args[2..]),
        Some("agent") => {
            eprintln!("error: unrecognized subcommand 'agent'");
            std::process::exit(2);
        }
        Some("supervise") => supervise(&args),
        _ => run_tests(&args[1..]),
    }
}

/// `supervise ...`: `wyvern supervise`, which the lab runs its agents under.
fn supervise(args: &[String]) {
    #[derive(clap::Parser)]
    struct Supervise {
        #[command(flatten)]
        args: lab::supervise::SuperviseArgs,
    }
    let cli = <Supervise as clap::Parser>::parse_from(args.iter().skip(1));
    if let Err(e) = lab::supervise::run(&cli.args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Run under this name (a symbolic link), the binary also has an `agent` subcommand.
const WITH_AGENT: &str = "lab-test-with-agent";

/// `agent ...`: checks its arguments, then idles until killed.
fn fake_agent(args: &[String]) {
    if args.iter().any(|a| a == "--help") {
        println!("the test's stand-in agent");
        return;
    }
    for a in [
        "--server",
        "--chassis",
        "--ovsdb",
        "--ovs-rundir",
        "--tunnel-ip",
        "--encap",
    ] {
        assert!(args.iter().any(|x| x == a), "agent without {a}");
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// The test binary under the name that gives it an `agent` subcommand.
fn with_agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary");
    let link = exe.with_file_name(WITH_AGENT);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&exe, &link).expect("symlink");
    link
}

/// `server --listen ADDR --store SPEC`: the API server, until killed.
fn serve(args: &[String]) {
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    let (listen, spec) = (arg("--listen"), arg("--store"));
    let store = store::open(&spec).expect("open the store");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async move {
            let l = tokio::net::TcpListener::bind(&listen).await.expect("bind");
            api::serve(l, store, api::ApiConfig::default())
                .await
                .expect("serve");
        });
}

fn run_tests(args: &[String]) {
    let tests: &[(&str, fn())] = &[
        (
            "up_wires_vms_is_idempotent_and_down_leaves_nothing",
            up_wires_vms_is_idempotent_and_down_leaves_nothing,
        ),
        (
            "two_labs_coexist_and_down_works_without_state",
            two_labs_coexist_and_down_works_without_state,
        ),
        ("a_failed_up_leaves_nothing", a_failed_up_leaves_nothing),
        (
            "routers_and_vm_options_converge",
            routers_and_vm_options_converge,
        ),
        (
            "agents_are_started_killed_and_restarted",
            agents_are_started_killed_and_restarted,
        ),
        ("security_groups_converge", security_groups_converge),
        (
            "etcd_members_and_servers_stop_and_start",
            etcd_members_and_servers_stop_and_start,
        ),
        (
            "segments_external_hosts_and_floating_ips_converge",
            segments_external_hosts_and_floating_ips_converge,
        ),
        (
            "subnets_whose_cidr_or_modes_change_are_replaced",
            subnets_whose_cidr_or_modes_change_are_replaced,
        ),
    ];
    let filter = args.iter().find(|a| !a.starts_with('-'));
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if filter.is_some_and(|x| !name.contains(x.as_str())) {
            continue;
        }
        println!("test {name} ...");
        ran += 1;
        let t = std::time::Instant::now();
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => println!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}

/// A lab name unique to this process and call.
fn lab_name(tag: &str) -> String {
    format!("t{:x}{tag}", std::process::id())
}

fn opts() -> LabOptions {
    LabOptions {
        wyvern: std::env::current_exe().expect("test binary"),
        progress: true,
    }
}

fn topology(name: &str) -> Topology {
    let text = format!(
        r#"
name = "{name}"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"

[[network]]
name = "blue"
project = "alpha"
[[network.subnet]]
cidr = "10.1.0.0/24"
gateway = "10.1.0.1"

[[network]]
name = "green"
mtu = 1400
[[network.subnet]]
cidr = "10.2.0.0/24"

[[vm]]
name = "v1"
network = "blue"
chassis = "c1"
ip = "10.1.0.11"
[[vm]]
name = "v2"
network = "blue"
chassis = "c2"
[[vm]]
name = "v3"
network = "green"
chassis = "c2"
ip = "10.2.0.20"
"#
    );
    Topology::parse(&text, Path::new("test.toml")).expect("valid topology")
}

/// GET `path` as admin; the JSON body.
fn get(base: &str, path: &str) -> Value {
    let url = format!("{base}/v2.0/{path}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            reqwest::get(&url)
                .await
                .expect("GET")
                .json::<Value>()
                .await
                .expect("JSON")
        })
}

/// POST `body` to `path` as admin; the JSON answer (which must be a success).
fn post(base: &str, path: &str, body: &Value) -> Value {
    let url = format!("{base}/v2.0/{path}");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let resp = reqwest::Client::new()
                .post(&url)
                .json(body)
                .send()
                .await
                .expect("POST");
            assert!(resp.status().is_success(), "POST {url}: {}", resp.status());
            resp.json::<Value>().await.expect("JSON")
        })
}

fn sh(lab: &Lab, host: &str, args: &[&str]) -> String {
    let out = lab.exec(host, args).expect("exec");
    assert!(
        out.status.success(),
        "{host}: {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Everything of lab `name` that could be left: processes, namespaces, the directory.
fn leftovers(name: &str) -> Vec<String> {
    let dir = format!("/tmp/wyl-{name}");
    let mut out: Vec<String> = testbed::leftovers::processes_mentioning(&format!("{dir}/"))
        .into_iter()
        .map(|(pid, cmd)| format!("process {pid}: {cmd}"))
        .collect();
    let prefix = format!("wyl-{name}.");
    out.extend(
        testbed::list_netns()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .map(|n| format!("netns {n}")),
    );
    if Path::new(&dir).exists() {
        out.push(format!("dir {dir}"));
    }
    out
}

fn up_wires_vms_is_idempotent_and_down_leaves_nothing() {
    let name = lab_name("a");
    let topo = topology(&name);
    let lab = Lab::up(&topo, &opts()).expect("lab up");
    let base = lab.server_url();
    // The test binary has no `agent` subcommand: the lab warned and went on.
    assert_eq!(lab.state().agents_available, Some(false));
    assert_eq!(lab.agent_pid("c1"), None);

    // The API has the ports, with what the VMs use.
    let ports = get(&base, "ports");
    let ports = ports["ports"].as_array().expect("ports");
    assert_eq!(ports.len(), 3, "{ports:?}");
    let nets = get(&base, "networks");
    let blue = nets["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "blue")
        .expect("network blue");
    assert_eq!(blue["project_id"], "alpha");
    for (vm, chassis, mtu) in [
        ("v1", "c1", "1450"),
        ("v2", "c2", "1450"),
        ("v3", "c2", "1400"),
    ] {
        let v = lab.vm(vm).expect("vm state").clone();
        let port = ports
            .iter()
            .find(|p| p["id"] == v.port_id.as_str())
            .expect("port of vm");
        assert_eq!(port["name"], vm);
        assert_eq!(port["mac_address"], v.mac.as_str());
        assert_eq!(port["binding:host_id"], chassis);
        let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
        assert_eq!(v.addresses, [format!("{ip}/24")]);
        assert_eq!(lab.port_id(vm), Some(v.port_id.as_str()));

        // The VM's namespace: MAC, address, MTU, default route, TX checksum offload off.
        assert_eq!(sh(&lab, vm, &["cat", "/sys/class/net/eth0/address"]), v.mac);
        assert_eq!(sh(&lab, vm, &["cat", "/sys/class/net/eth0/mtu"]), mtu);
        let addrs = sh(&lab, vm, &["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(addrs.contains(&v.addresses[0]), "{addrs}");
        let route = sh(&lab, vm, &["ip", "route", "show", "default"]);
        let gw = if vm == "v3" { "10.2.0.1" } else { "10.1.0.1" };
        assert!(route.contains(&format!("via {gw} dev eth0")), "{route}");
        let offload = sh(&lab, vm, &["ethtool", "-k", "eth0"]);
        assert!(offload.contains("tx-checksumming: off"), "{offload}");

        // Its OVS interface on the chassis.
        let ch = lab.chassis(chassis).expect("chassis");
        let get_ext = |key: &str| {
            ch.ovs_vsctl(&["get", "Interface", &v.tap, &format!("external_ids:{key}")])
                .expect("ovs-vsctl get")
                .trim()
                .trim_matches('"')
                .to_owned()
        };
        assert_eq!(get_ext("iface-id"), v.port_id);
        assert_eq!(get_ext("attached-mac"), v.mac);
        assert_eq!(get_ext("iface-status"), "active");
        let br = ch.ovs_vsctl(&["port-to-br", &v.tap]).expect("port-to-br");
        assert_eq!(br.trim(), "br-int");
    }
    assert_eq!(
        get(&base, "ports?name=v1")["ports"][0]["fixed_ips"][0]["ip_address"],
        "10.1.0.11"
    );

    // br-int: userspace datapath, both tunnel ports; `exec` on a chassis finds its OVS.
    let ports_c1 = sh(&lab, "c1", &["ovs-vsctl", "list-ports", "br-int"]);
    assert!(
        ports_c1.contains("tun-geneve") && ports_c1.contains("tun-vxlan"),
        "{ports_c1}"
    );
    let dp = sh(
        &lab,
        "c1",
        &["ovs-vsctl", "get", "Bridge", "br-int", "datapath_type"],
    );
    assert_eq!(dp, "netdev");
    // The underlay works: chassis reach each other's tunnel address.
    let c2_ip = lab.state().chassis["c2"].tunnel_ip.to_string();
    sh(
        &lab,
        "c1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", &c2_ip],
    );
    // Exit codes come back.
    let out = lab.exec("v1", &["sh", "-c", "exit 3"]).unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(lab.exec("nope", &["true"]).is_err());

    // Up again, from "another process" (state file, adopted daemons): nothing changes.
    let server_pid = lab::status(&name).unwrap().services[0].pid;
    assert!(server_pid.is_some());
    lab.keep();
    let mut lab = Lab::open(&name, &opts()).expect("open");
    assert_eq!(
        lab.converge(&topo).expect("second up"),
        Vec::<String>::new()
    );
    assert!(lab.converge(&topo).expect("third up").is_empty());
    let st = lab::status(&name).unwrap();
    assert_eq!(st.services[0].pid, server_pid, "server not restarted");
    let text = st.to_string();
    assert!(
        text.contains("10.1.0.11/24") && text.contains("c2"),
        "{text}"
    );
    assert!(
        !text.contains("DOWN ") && !text.contains("MISSING"),
        "{text}"
    );

    // A VM whose namespace vanished is rebuilt; nothing else changes.
    testbed::leftovers::destroy_netns(&lab.vm("v2").unwrap().netns);
    let changes = lab.converge(&topo).expect("repair");
    assert!(
        changes.iter().all(|c| c.starts_with("vm v2")),
        "{changes:?}"
    );
    assert!(!changes.is_empty());
    assert_eq!(
        sh(&lab, "v2", &["cat", "/sys/class/net/eth0/address"]),
        lab.vm("v2").unwrap().mac
    );

    // Moving a VM to another chassis rebinds its port and rewires it there.
    let mut moved = topo.clone();
    moved
        .vms
        .iter_mut()
        .find(|v| v.name == "v2")
        .unwrap()
        .chassis = "c1".into();
    let changes = lab.converge(&moved).expect("move");
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(
        changes[0].starts_with("port v2: updated (binding:host_id)"),
        "{changes:?}"
    );
    let v2 = lab.vm("v2").unwrap().clone();
    assert_eq!(v2.chassis, "c1");
    let c1 = lab.chassis("c1").unwrap();
    assert_eq!(
        c1.ovs_vsctl(&["port-to-br", &v2.tap]).unwrap().trim(),
        "br-int"
    );
    let on_c2 = lab
        .chassis("c2")
        .unwrap()
        .ovs_vsctl(&["list-ports", "br-int"]);
    assert!(!on_c2.unwrap().contains(&v2.tap), "unplugged from c2");
    let port = get(&base, &format!("ports/{}", v2.port_id));
    assert_eq!(port["port"]["binding:host_id"], "c1");

    // Dropping a VM and a network from the file removes them, port included.
    let mut smaller = moved.clone();
    smaller.vms.retain(|v| v.name != "v3");
    smaller.networks.retain(|n| n.name != "green");
    let changes = lab.converge(&smaller).expect("shrink");
    assert_eq!(changes, ["vm v3: removed", "network green: deleted"]);
    assert_eq!(get(&base, "ports")["ports"].as_array().unwrap().len(), 2);
    assert!(lab.exec("v3", &["true"]).is_err());

    // Down leaves nothing; a second down finds nothing.
    let ovs: Vec<u32> = ["c1", "c2"]
        .iter()
        .flat_map(|c| {
            let ch = lab.chassis(c).unwrap();
            [ch.ovsdb_pid(), ch.vswitchd_pid()]
        })
        .flatten()
        .collect();
    assert_eq!(ovs.len(), 4);
    let gone = lab.down().expect("down");
    assert!(gone.iter().any(|g| g.starts_with("netns")), "{gone:?}");
    assert_eq!(leftovers(&name), Vec::<String>::new());
    for pid in ovs {
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || !alive(pid),
            "pid {pid}"
        );
    }
    assert!(lab::down(&name, false).unwrap().is_empty());
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn one_chassis(name: &str) -> Topology {
    let text = format!("name = \"{name}\"\n[[chassis]]\nname = \"c1\"\n");
    Topology::parse(&text, Path::new("t.toml")).unwrap()
}

fn two_labs_coexist_and_down_works_without_state() {
    let (a, b) = (lab_name("b"), format!("{}-2", lab_name("b")));
    let la = Lab::up(&one_chassis(&a), &opts()).expect("lab a");
    let lb = Lab::up(&one_chassis(&b), &opts()).expect("lab b");
    assert_ne!(la.server_url(), lb.server_url());
    // `up` crashed half way: no state file, and a process of the lab nobody recorded.
    let dir = la.dir().to_owned();
    la.keep();
    std::fs::remove_file(dir.join("state.json")).unwrap();
    let marker = format!("{}/straggler", dir.display());
    // `read` is a shell builtin: no child process outlives the shell.
    let mut straggler = std::process::Command::new("sh")
        .args(["-c", "read x", &marker])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let gone = lab::down(&a, true).expect("down a");
    assert!(gone.iter().any(|g| g.contains("straggler")), "{gone:?}");
    assert_eq!(leftovers(&a), Vec::<String>::new());
    assert!(!alive(straggler.id()));
    // Already reaped by the teardown (it is our child); this only collects a late status.
    let _ = straggler.try_wait();
    // Lab b is untouched by a's teardown.
    assert!(lb.chassis("c1").unwrap().vswitchd_pid().is_some());
    assert_eq!(sh(&lb, "c1", &["ovs-vsctl", "br-exists", "br-int"]), "");
    drop(lb);
    assert_eq!(leftovers(&b), Vec::<String>::new());
}

fn a_failed_up_leaves_nothing() {
    let name = lab_name("c");
    let bad = LabOptions {
        wyvern: "/bin/false".into(),
        progress: true,
    };
    let err = Lab::up(&one_chassis(&name), &bad).expect_err("no server");
    assert!(err.to_string().contains("server did not come up"), "{err}");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

fn agents_are_started_killed_and_restarted() {
    let name = lab_name("d");
    let text = format!(
        "name = \"{name}\"\n[underlay]\nencap = \"vxlan\"\n\
         [[chassis]]\nname = \"c1\"\n[[chassis]]\nname = \"c2\"\n"
    );
    let topo = Topology::parse(&text, Path::new("t.toml")).unwrap();
    let o = LabOptions {
        wyvern: with_agent_binary(),
        progress: true,
    };
    let mut lab = Lab::up(&topo, &o).expect("lab up");
    assert_eq!(lab.state().agents_available, Some(true));
    let p1 = lab.agent_pid("c1").expect("agent c1");
    let cmdline = std::fs::read_to_string(format!("/proc/{p1}/cmdline")).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    let rundir = format!("/tmp/wyl-{name}/c1");
    for pair in [
        ["--server", lab.server_url().as_str()],
        ["--chassis", "c1"],
        ["--ovsdb", &format!("unix:{rundir}/db.sock")],
        ["--ovs-rundir", &rundir],
        ["--tunnel-ip", "172.31.0.1"],
        ["--encap", "vxlan"],
    ] {
        assert!(args.windows(2).any(|w| w == pair), "{pair:?} in {args:?}");
    }

    lab.kill_agent("c1").expect("kill");
    assert!(!alive(p1) && lab.agent_pid("c1").is_none());
    let changes = lab.converge(&topo).expect("up again");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(changes[0].starts_with("agent c1: started"), "{changes:?}");
    let p2 = lab.agent_pid("c2").unwrap();
    let p2b = lab.restart_agent("c2").expect("restart");
    assert!(p2b != p2 && !alive(p2) && alive(p2b));
    assert!(lab.converge(&topo).expect("up again").is_empty());
    let st = lab::status(&name).unwrap().to_string();
    assert!(
        st.contains(&format!("agent pid {p2b} (restarts 0)")),
        "{st}"
    );

    // A crash of the agent alone: its supervisor starts it again, and says so.
    let crashed = lab.crash_agent("c2").expect("crash");
    assert_eq!(crashed, p2b);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let p2c = loop {
        match lab.agent_pid("c2") {
            Some(p) if p != crashed => break p,
            _ if std::time::Instant::now() > end => panic!("c2's agent not started again"),
            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    let sup = lab.agent_supervision("c2").expect("supervised");
    let exit = sup.last_exit.clone().expect("last exit");
    assert_eq!((sup.restarts, exit.pid, exit.signal), (1, crashed, Some(9)));
    let st = lab::status(&name).unwrap().to_string();
    let want =
        format!("agent pid {p2c} (restarts 1, last: pid {crashed} killed by signal 9 (SIGKILL)");
    assert!(st.contains(&want), "{st}");
    assert!(
        lab.converge(&topo).expect("up again").is_empty(),
        "the restarted agent is left alone"
    );

    let agents = [lab.agent_pid("c1").unwrap(), p2c];
    drop(lab);
    assert!(agents.iter().all(|p| !alive(*p)));
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// `store = "etcd"`: real etcd members and two servers on them, agents spread over the servers;
/// members and servers stopped and started by name; `down` leaves nothing.
fn etcd_members_and_servers_stop_and_start() {
    let name = lab_name("e");
    let text = format!(
        "name = \"{name}\"\n[server]\nstore = \"etcd\"\nservers = 2\n\
         [[chassis]]\nname = \"c1\"\n[[chassis]]\nname = \"c2\"\n[[chassis]]\nname = \"c3\"\n"
    );
    let topo = Topology::parse(&text, Path::new("t.toml")).unwrap();
    let o = LabOptions {
        wyvern: with_agent_binary(),
        progress: true,
    };
    let mut lab = Lab::up(&topo, &o).expect("lab up");
    let urls = lab.server_urls();
    assert_eq!(urls.len(), 2);
    // c1 and c3 use server-1 first, c2 server-2; each knows both.
    for (c, first) in [("c1", 0), ("c2", 1), ("c3", 0)] {
        let args = lab.state().chassis[c].agent_args.clone().unwrap();
        let servers = &args[args.iter().position(|a| a == "--server").unwrap() + 1];
        let want = format!("{},{}", urls[first], urls[1 - first]);
        assert_eq!(servers, &want, "{c}");
    }
    let st = lab::status(&name).unwrap();
    let up: Vec<(&str, bool)> = st
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.pid.is_some()))
        .collect();
    let all_up = [
        ("etcd-1", true),
        ("etcd-2", true),
        ("etcd-3", true),
        ("server-1", true),
        ("server-2", true),
    ];
    assert_eq!(up, all_up);

    // One server and one member down: the other server still serves (etcd has a quorum).
    lab.stop("server-1").expect("stop server-1");
    lab.stop("etcd-2").expect("stop etcd-2");
    assert!(lab.stop("server-1").is_err(), "stopped twice");
    assert!(lab.stop("server-3").is_err() && lab.start("etcd-9").is_err());
    let text = lab::status(&name).unwrap().to_string();
    for down in ["server-1", "etcd-2"] {
        let line = text.lines().find(|l| l.contains(down)).unwrap();
        assert!(line.ends_with("DOWN"), "{text}");
    }
    assert!(get(&urls[1], "networks")["networks"].is_array());
    lab.start("etcd-2").expect("start etcd-2");
    let pid = lab.start("server-1").expect("start server-1");
    assert_eq!(
        lab.start("server-1").unwrap(),
        pid,
        "a running server is left alone"
    );
    let st = lab::status(&name).unwrap();
    assert!(st.services.iter().all(|s| s.pid.is_some()), "{st}");
    // Up again: nothing to change; asking for another store is refused.
    assert!(lab.converge(&topo).expect("up again").is_empty());
    let err = lab.converge(&one_chassis(&name)).unwrap_err().to_string();
    assert!(err.contains("cannot change"), "{err}");
    drop(lab);
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// Alpha's router r1 on blue, green (dual stack) and auto (IPv6 by SLAAC); v1 is a forwarding
/// VM with a prefix behind it, v2 configures IPv6 by SLAAC. `routes`, `interfaces` and `dns`
/// replace r1's routes, interfaces and green-v6's DNS servers; `router` false drops r1.
fn routed_topology(
    name: &str,
    routes: &str,
    interfaces: &str,
    dns: &str,
    router: bool,
) -> Topology {
    let mut text = format!(
        r#"
name = "{name}"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"

[[network]]
name = "blue"
project = "alpha"
[[network.subnet]]
cidr = "10.1.0.0/24"
gateway = "10.1.0.1"

[[network]]
name = "green"
project = "alpha"
[[network.subnet]]
cidr = "10.2.0.0/24"
gateway = "10.2.0.1"
[[network.subnet]]
name = "green-v6"
cidr = "fd00:2::/64"
gateway = "fd00:2::1"
dns_nameservers = {dns}

[[network]]
name = "auto"
project = "alpha"
[[network.subnet]]
cidr = "10.3.0.0/24"
[[network.subnet]]
name = "auto-v6"
cidr = "fd00:3::/64"
gateway = "fd00:3::1"
ipv6_ra_mode = "slaac"
ipv6_address_mode = "slaac"

[[vm]]
name = "v1"
network = "green"
chassis = "c1"
ip = "10.2.0.20"
forwarding = true
extra_addresses = ["192.168.50.1/24", "fd00:50::1/64"]
[[vm]]
name = "v2"
network = "auto"
chassis = "c2"
ip = "10.3.0.11"
ipv6 = "slaac"
"#
    );
    if router {
        text.push_str(&format!(
            "[[router]]\nname = \"r1\"\nproject = \"alpha\"\ninterfaces = {interfaces}\nroutes = {routes}\n"
        ));
    }
    Topology::parse(&text, Path::new("routed.toml")).expect("valid topology")
}

const ALL_INTERFACES: &str = r#"["blue-1", "green-1", "green-v6", "auto-1", "auto-v6"]"#;
const ROUTE_50: &str = r#"[{ destination = "192.168.50.0/24", nexthop = "10.2.0.20" }]"#;

/// Router r1's interfaces as (subnet id, IP address) and its routes as `D via H`.
fn router_view(base: &str, id: &str) -> (Vec<(String, String)>, Vec<String>) {
    let ports = get(base, &format!("ports?device_id={id}"));
    let mut ifaces: Vec<(String, String)> = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["device_owner"] == "network:router_interface")
        .map(|p| {
            let f = &p["fixed_ips"][0];
            (
                f["subnet_id"].as_str().unwrap().to_owned(),
                f["ip_address"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    ifaces.sort();
    let router = get(base, &format!("routers/{id}"));
    let routes = router["router"]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} via {}",
                r["destination"].as_str().unwrap(),
                r["nexthop"].as_str().unwrap()
            )
        })
        .collect();
    (ifaces, routes)
}

fn routers_and_vm_options_converge() {
    let name = lab_name("e");
    let topo = routed_topology(&name, ROUTE_50, ALL_INTERFACES, r#"["fd00:2::53"]"#, true);
    let mut lab = Lab::up(&topo, &opts()).expect("lab up");
    let base = lab.server_url();
    let subnet_id = |lab: &Lab, subnet: &str| {
        lab.state()
            .networks
            .values()
            .flat_map(|n| &n.subnets)
            .find(|s| s.name == subnet)
            .unwrap_or_else(|| panic!("subnet {subnet}"))
            .id
            .clone()
    };

    // The router: alpha's, an interface at every subnet's gateway, the file's route.
    let r1 = lab.state().routers["r1"].clone();
    assert_eq!(
        get(&base, &format!("routers/{}", r1.id))["router"]["project_id"],
        "alpha"
    );
    let (ifaces, routes) = router_view(&base, &r1.id);
    let mut want: Vec<(String, String)> = [
        ("blue-1", "10.1.0.1"),
        ("green-1", "10.2.0.1"),
        ("green-v6", "fd00:2::1"),
        ("auto-1", "10.3.0.1"),
        ("auto-v6", "fd00:3::1"),
    ]
    .iter()
    .map(|(s, ip)| (subnet_id(&lab, s), (*ip).to_owned()))
    .collect();
    want.sort();
    assert_eq!(ifaces, want);
    assert_eq!(routes, ["192.168.50.0/24 via 10.2.0.20"]);
    let auto_v6 = get(&base, &format!("subnets/{}", subnet_id(&lab, "auto-v6")));
    assert_eq!(auto_v6["subnet"]["ipv6_ra_mode"], "slaac");
    assert_eq!(auto_v6["subnet"]["ipv6_address_mode"], "slaac");
    let green_v6 = get(&base, &format!("subnets/{}", subnet_id(&lab, "green-v6")));
    assert_eq!(
        green_v6["subnet"]["dns_nameservers"],
        serde_json::json!(["fd00:2::53"])
    );

    // v1: both versions configured by the lab, forwarding, the prefix behind it, its port
    // allowing that prefix as a source.
    let v1 = lab.vm("v1").unwrap().clone();
    assert_eq!(v1.addresses.len(), 2, "{:?}", v1.addresses);
    assert_eq!(v1.addresses[0], "10.2.0.20/24");
    assert!(
        v1.addresses[1].starts_with("fd00:2::"),
        "{:?}",
        v1.addresses
    );
    let v6 = sh(
        &lab,
        "v1",
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
        ],
    );
    assert!(
        v6.contains(&v1.addresses[1]) && !v6.contains("tentative"),
        "{v6}"
    );
    let route6 = sh(&lab, "v1", &["ip", "-6", "route", "show", "default"]);
    assert!(route6.contains("via fd00:2::1 dev eth0"), "{route6}");
    let route4 = sh(&lab, "v1", &["ip", "route", "show", "default"]);
    assert!(route4.contains("via 10.2.0.1 dev eth0"), "{route4}");
    for (key, value) in [
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
        ("net.ipv6.conf.eth0.accept_ra", "0"),
    ] {
        assert_eq!(sh(&lab, "v1", &["sysctl", "-n", key]), value, "v1 {key}");
    }
    let dummy = sh(&lab, "v1", &["ip", "-o", "addr", "show", "dev", "behind0"]);
    assert!(
        dummy.contains("192.168.50.1/24") && dummy.contains("fd00:50::1/64"),
        "{dummy}"
    );
    let port = get(&base, &format!("ports/{}", v1.port_id));
    let mut pairs: Vec<&str> = port["port"]["allowed_address_pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip_address"].as_str().unwrap())
        .collect();
    pairs.sort_unstable();
    assert_eq!(pairs, ["192.168.50.0/24", "fd00:50::/64"]);

    // v2: IPv4 by the lab, IPv6 left to router advertisements (none come: no agent here).
    let v2 = lab.vm("v2").unwrap().clone();
    assert_eq!(v2.gateway6, None);
    assert!(
        v2.addresses.iter().any(|a| a.starts_with("fd00:3::")),
        "the port's SLAAC address: {:?}",
        v2.addresses
    );
    for (key, value) in [
        ("net.ipv6.conf.eth0.disable_ipv6", "0"),
        ("net.ipv6.conf.eth0.accept_ra", "2"),
        ("net.ipv6.conf.eth0.autoconf", "1"),
        ("net.ipv6.conf.eth0.forwarding", "0"),
        ("net.ipv4.ip_forward", "0"),
    ] {
        assert_eq!(sh(&lab, "v2", &["sysctl", "-n", key]), value, "v2 {key}");
    }
    let v6 = sh(
        &lab,
        "v2",
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
        ],
    );
    assert_eq!(v6, "", "the lab configured IPv6 on a SLAAC VM");
    assert!(
        sh(
            &lab,
            "v2",
            &["ip", "-6", "-o", "addr", "show", "dev", "eth0"]
        )
        .contains("fe80::")
    );
    assert!(sh(&lab, "v2", &["ip", "-o", "addr", "show", "dev", "eth0"]).contains("10.3.0.11/24"));

    // Up again: nothing changes.
    assert_eq!(
        lab.converge(&topo).expect("second up"),
        Vec::<String>::new()
    );
    assert!(
        lab::status(&name)
            .unwrap()
            .to_string()
            .contains("192.168.50.0/24 via 10.2.0.20")
    );

    // Other routes and DNS servers in the file: updated in place.
    let other = r#"[{ destination = "192.168.60.0/24", nexthop = "10.2.0.21" }]"#;
    let changed = routed_topology(&name, other, ALL_INTERFACES, r#"["fd00:2::54"]"#, true);
    assert_eq!(
        lab.converge(&changed).expect("new routes"),
        [
            "subnet green-v6: updated (dns_nameservers)",
            "router r1: routes set (192.168.60.0/24 via 10.2.0.21)",
        ]
    );
    assert_eq!(
        router_view(&base, &r1.id).1,
        ["192.168.60.0/24 via 10.2.0.21"]
    );
    assert!(lab.converge(&changed).expect("up again").is_empty());

    // An interface (and the route through it) dropped from the file: removed, the route first
    // (the server refuses to remove an interface a route goes through).
    let fewer = r#"["blue-1", "green-v6", "auto-1", "auto-v6"]"#;
    let smaller = routed_topology(&name, "[]", fewer, r#"["fd00:2::54"]"#, true);
    assert_eq!(
        lab.converge(&smaller).expect("fewer interfaces"),
        [
            "router r1: interface on green-1 removed",
            "router r1: routes set (none)",
        ]
    );
    let (ifaces, routes) = router_view(&base, &r1.id);
    assert_eq!(ifaces.len(), 4);
    assert!(!ifaces.iter().any(|(s, _)| *s == subnet_id(&lab, "green-1")));
    assert!(routes.is_empty());
    // Back in the file: added again.
    let changes = lab.converge(&changed).expect("interface back");
    assert!(
        changes.contains(&"router r1: interface on green-1 added".to_owned()),
        "{changes:?}"
    );

    // The router dropped from the file: deleted, interfaces and all.
    let gone = routed_topology(&name, "[]", "[]", r#"["fd00:2::54"]"#, false);
    assert_eq!(
        lab.converge(&gone).expect("no router"),
        ["router r1: deleted"]
    );
    assert_eq!(get(&base, "routers")["routers"], serde_json::json!([]));
    assert!(router_view_ports(&base, &r1.id).is_empty());
    assert!(lab.state().routers.is_empty());

    lab.down().expect("down");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// The ports router `id` owned (any `device_owner`).
fn router_view_ports(base: &str, id: &str) -> Vec<Value> {
    get(base, &format!("ports?device_id={id}"))["ports"]
        .as_array()
        .unwrap()
        .clone()
}

/// One chassis, project alpha's network, groups and VMs; `second` is the changed file: web's
/// port 80 rule replaced by 8080, its remote group `app` by `default`, Neutron's egress rules
/// dropped; lan's addresses changed; app gone; v1 out of app, v2 without port security.
fn secgroup_topology(name: &str, second: bool) -> Topology {
    let (port, remote, defaults, lan, app, v1, v2) = if second {
        (
            8080,
            "default",
            "default_rules = false",
            r#"["10.5.0.0/25", "10.5.1.1"]"#,
            "",
            r#"["web"]"#,
            "port_security = false",
        )
    } else {
        (
            80,
            "app",
            "",
            r#"["10.5.0.0/24"]"#,
            "[[security_group]]\nname = \"app\"\nproject = \"alpha\"\n",
            r#"["web", "app"]"#,
            "",
        )
    };
    let text = format!(
        r#"
name = "{name}"
[[chassis]]
name = "c1"
[[network]]
name = "n"
project = "alpha"
[[network.subnet]]
cidr = "10.5.0.0/24"
[[address_group]]
name = "lan"
project = "alpha"
addresses = {lan}
[[security_group]]
name = "web"
project = "alpha"
{defaults}
rules = [
  {{ direction = "ingress", protocol = "tcp", port_range_min = {port}, port_range_max = {port} }},
  {{ direction = "ingress", protocol = "udp", port_range_min = 53, port_range_max = 53, remote_address_group = "lan" }},
  {{ direction = "ingress", ethertype = "IPv6", protocol = "icmp", remote_group = "{remote}" }},
]
{app}
[[vm]]
name = "v1"
network = "n"
chassis = "c1"
security_groups = {v1}
[[vm]]
name = "v2"
network = "n"
chassis = "c1"
{v2}
"#
    );
    Topology::parse(&text, Path::new("test.toml")).expect("valid topology")
}

/// Group `id`'s rules, each as `direction ethertype protocol min-max remote`.
fn rule_view(base: &str, id: &str) -> Vec<String> {
    let rules = get(
        base,
        &format!("security-group-rules?security_group_id={id}"),
    );
    let show = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let mut out: Vec<String> = rules["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let remote = [
                "remote_ip_prefix",
                "remote_group_id",
                "remote_address_group_id",
            ]
            .iter()
            .map(|k| show(&r[*k]))
            .find(|s| s != "-")
            .unwrap_or_else(|| "-".into());
            format!(
                "{} {} {} {}-{} {remote}",
                show(&r["direction"]),
                show(&r["ethertype"]),
                show(&r["protocol"]),
                show(&r["port_range_min"]),
                show(&r["port_range_max"])
            )
        })
        .collect();
    out.sort();
    out
}

fn security_groups_converge() {
    let name = lab_name("s");
    let mut lab = Lab::up(&secgroup_topology(&name, false), &opts()).expect("lab up");
    let base = lab.server_url();
    let groups = lab.state().security_groups.clone();
    let (web, app) = (groups["web"].id.clone(), groups["app"].id.clone());
    let lan = lab.state().address_groups["lan"].id.clone();
    let port = |lab: &Lab, vm: &str| {
        get(&base, &format!("ports/{}", lab.port_id(vm).unwrap()))["port"].clone()
    };
    let alpha_default =
        get(&base, "security-groups?name=default&project_id=alpha")["security_groups"][0]["id"]
            .as_str()
            .expect("alpha's default group")
            .to_owned();

    // The file's rules plus Neutron's egress rules; the VMs' ports in their groups.
    assert_eq!(
        rule_view(&base, &web),
        [
            "egress IPv4 - --- -".to_owned(),
            "egress IPv6 - --- -".to_owned(),
            "ingress IPv4 tcp 80-80 -".to_owned(),
            format!("ingress IPv4 udp 53-53 {lan}"),
            format!("ingress IPv6 ipv6-icmp --- {app}"),
        ]
    );
    assert_eq!(rule_view(&base, &app).len(), 2);
    let mut v1_groups = vec![web.clone(), app.clone()];
    v1_groups.sort();
    let mut have: Vec<String> =
        serde_json::from_value(port(&lab, "v1")["security_groups"].clone()).unwrap();
    have.sort();
    assert_eq!(have, v1_groups);
    assert_eq!(
        port(&lab, "v2")["security_groups"],
        serde_json::json!([alpha_default])
    );
    assert_eq!(
        get(&base, &format!("address-groups/{lan}"))["address_group"]["addresses"],
        serde_json::json!(["10.5.0.0/24"])
    );
    assert!(
        lab.converge(&secgroup_topology(&name, false))
            .expect("again")
            .is_empty()
    );

    // The changed file: rules replaced, addresses changed, ports updated, app deleted.
    let changes = lab
        .converge(&secgroup_topology(&name, true))
        .expect("changed");
    for want in [
        "address group lan: remove_addresses",
        "address group lan: add_addresses",
        "security group web: rule removed",
        "security group web: rule added",
        "port v1: updated (security_groups)",
        "port v2: updated (port_security_enabled, security_groups)",
        "security group app: deleted",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(want)),
            "{want}: {changes:?}"
        );
    }
    assert_eq!(
        rule_view(&base, &web),
        [
            "ingress IPv4 tcp 8080-8080 -".to_owned(),
            format!("ingress IPv4 udp 53-53 {lan}"),
            format!("ingress IPv6 ipv6-icmp --- {alpha_default}"),
        ]
    );
    assert_eq!(
        port(&lab, "v1")["security_groups"],
        serde_json::json!([web])
    );
    let v2 = port(&lab, "v2");
    assert_eq!(
        (
            v2["port_security_enabled"].clone(),
            v2["security_groups"].clone()
        ),
        (Value::Bool(false), serde_json::json!([]))
    );
    let mut addresses: Vec<String> = serde_json::from_value(
        get(&base, &format!("address-groups/{lan}"))["address_group"]["addresses"].clone(),
    )
    .unwrap();
    addresses.sort();
    assert_eq!(addresses, ["10.5.0.0/25", "10.5.1.1/32"]);
    assert!(!lab.state().security_groups.contains_key("app"));
    assert!(
        lab.converge(&secgroup_topology(&name, true))
            .expect("again")
            .is_empty()
    );

    lab.down().expect("down");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// Segments physnet1 (VLAN 101 and 102 hosts, an untagged one) and ext (MTU 9000, the flat
/// external network public with host inet); alpha's router r1 with its gateway on public and v1's
/// floating IP; `outside` false drops ext, public, inet, the gateway and the floating IP.
fn outside_topology(name: &str, outside: bool) -> Topology {
    Topology::parse(&outside_file(name, outside), Path::new("outside.toml"))
        .expect("valid topology")
}

/// The text of [`outside_topology`].
fn outside_file(name: &str, outside: bool) -> String {
    let mut text = format!(
        r#"
name = "{name}"
[[physical]]
name = "physnet1"
[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
gateway = true
[[external]]
name = "h101"
physical = "physnet1"
vlan = 101
ip = "192.168.101.100/24"
ip6 = "fd00:101::100/64"
gateway = "192.168.101.1"
[[external]]
name = "h101b"
physical = "physnet1"
vlan = 101
ip = "192.168.101.103/24"
ip6 = "fd00:101::103/64"
[[external]]
name = "h102"
physical = "physnet1"
vlan = 102
ip = "192.168.101.101/24"
[[external]]
name = "hu"
physical = "physnet1"
ip = "192.168.101.102/24"
[[network]]
name = "vlan101"
network_type = "vlan"
physical_network = "physnet1"
segmentation_id = 101
[[network.subnet]]
cidr = "192.168.101.0/24"
gateway = "none"
[[network]]
name = "inside"
project = "alpha"
[[network.subnet]]
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[vm]]
name = "v1"
network = "inside"
chassis = "c1"
ip = "10.0.0.11"
[[vm]]
name = "p1"
network = "vlan101"
chassis = "c2"
ip = "192.168.101.11"
"#
    );
    let router = "[[router]]\nname = \"r1\"\nproject = \"alpha\"\ninterfaces = [\"inside-1\"]\n";
    if outside {
        text.push_str(&format!(
            r#"
[[physical]]
name = "ext"
mtu = 9000
[[external]]
name = "inet"
physical = "ext"
ip = "172.24.4.100/24"
ip6 = "2001:db8:ee::100/64"
routes = [
  {{ destination = "10.0.0.0/24", nexthop = "172.24.4.2" }},
  {{ destination = "fd00:a::/64", nexthop = "2001:db8:ee::2" }},
]
[[network]]
name = "public"
network_type = "flat"
physical_network = "ext"
external = true
[[network.subnet]]
cidr = "172.24.4.0/24"
gateway = "172.24.4.1"
[[network.subnet]]
cidr = "2001:db8:ee::/64"
gateway = "2001:db8:ee::1"
{router}gateway = "public"
[[floating_ip]]
vm = "v1"
network = "public"
address = "172.24.4.50"
"#
        ));
    } else {
        text.push_str(router);
    }
    text
}

/// The arguments chassis `c`'s agent was started with.
fn agent_args(lab: &Lab, c: &str) -> Vec<String> {
    lab.state().chassis[c]
        .agent_args
        .clone()
        .unwrap_or_default()
}

/// `(success, stdout)` of `args` in `host`.
fn try_sh(lab: &Lab, host: &str, args: &[&str]) -> (bool, String) {
    let out = lab.exec(host, args).expect("exec");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// The network called `name`, as the API shows it to an admin.
fn network(base: &str, name: &str) -> Value {
    get(base, &format!("networks?name={name}"))["networks"][0].clone()
}

/// The frames `host`'s ARP requests for an address nobody has make on chassis `c1`'s uplink into
/// physnet1 (the switch floods them).
fn flooded_to_c1(lab: &Lab, host: &str) -> Vec<String> {
    let cap = lab::Capture::start(lab.name(), "c1", "ph-physnet1", &["arp"]).expect("tcpdump");
    let _ = lab.exec(host, &["ping", "-c", "1", "-W", "1", "192.168.101.250"]);
    cap.stop()
}

fn segments_external_hosts_and_floating_ips_converge() {
    let name = lab_name("g");
    let topo = outside_topology(&name, true);
    let o = LabOptions {
        wyvern: with_agent_binary(),
        progress: true,
    };
    let mut lab = Lab::up(&topo, &o).expect("lab up");
    let base = lab.server_url();

    // Each segment is a switch: a trunk port per chassis, an access port per external host.
    let ports = sh(&lab, "physnet1", &["ovs-vsctl", "list-ports", "physnet1"]);
    assert_eq!(
        ports.split_whitespace().collect::<Vec<_>>(),
        ["c1", "c2", "h101", "h101b", "h102", "hu"]
    );
    for (port, tag) in [("c1", "[]"), ("h101", "101"), ("h102", "102"), ("hu", "0")] {
        assert_eq!(
            sh(&lab, "physnet1", &["ovs-vsctl", "get", "Port", port, "tag"]),
            tag,
            "{port}"
        );
    }
    // Every chassis: a standalone provider bridge per segment with the uplink, patched to br-int.
    for c in ["c1", "c2"] {
        for (seg, mtu) in [("physnet1", "1500"), ("ext", "9000")] {
            let br = format!("br-{seg}");
            let get_br = |col: &str| sh(&lab, c, &["ovs-vsctl", "get", "Bridge", &br, col]);
            assert_eq!(get_br("datapath_type"), "netdev");
            assert_eq!(get_br("fail_mode"), "standalone");
            let ports = sh(&lab, c, &["ovs-vsctl", "list-ports", &br]);
            assert!(
                ports.contains(&format!("ph-{seg}")) && ports.contains(&format!("phy-{br}")),
                "{c} {br}: {ports}"
            );
            let int = sh(&lab, c, &["ovs-vsctl", "list-ports", "br-int"]);
            assert!(int.contains(&format!("int-{br}")), "{c}: {int}");
            let dev = format!("/sys/class/net/ph-{seg}/mtu");
            assert_eq!(sh(&lab, c, &["cat", &dev]), mtu);
        }
    }
    // The agents know the mappings; the gateway chassis says so.

    for c in ["c1", "c2"] {
        assert!(
            agent_args(&lab, c)
                .windows(2)
                .any(|w| w == ["--bridge-mappings", "ext:br-ext,physnet1:br-physnet1"]),
            "{:?}",
            agent_args(&lab, c)
        );
    }
    assert!(agent_args(&lab, "c2").iter().any(|a| a == "--gateway"));
    assert!(!agent_args(&lab, "c1").iter().any(|a| a == "--gateway"));

    // External hosts: address, MTU, routes, no TX checksum offload.
    assert!(sh(&lab, "inet", &["ip", "-o", "-4", "addr"]).contains("172.24.4.100/24"));
    assert_eq!(
        sh(&lab, "inet", &["cat", "/sys/class/net/eth0/mtu"]),
        "9000"
    );
    assert!(
        sh(&lab, "inet", &["ip", "route"]).contains("10.0.0.0/24 via 172.24.4.2 dev eth0"),
        "inet's route"
    );
    assert!(sh(&lab, "h101", &["ip", "route"]).contains("default via 192.168.101.1"));
    assert!(sh(&lab, "hu", &["ethtool", "-k", "eth0"]).contains("tx-checksumming: off"));
    // IPv6 where the file gives an address: usable at once, routes only the file's.
    let inet6 = sh(
        &lab,
        "inet",
        &["ip", "-o", "-6", "addr", "show", "dev", "eth0"],
    );
    assert!(
        inet6
            .lines()
            .any(|l| l.contains("2001:db8:ee::100/64") && !l.contains("tentative")),
        "{inet6}"
    );
    assert!(
        sh(&lab, "inet", &["ip", "-6", "route"])
            .contains("fd00:a::/64 via 2001:db8:ee::2 dev eth0"),
        "inet's IPv6 route"
    );
    let ipv6_conf = |host: &str, key: &str| {
        let key = format!("net.ipv6.conf.eth0.{key}");
        sh(&lab, host, &["sysctl", "-n", &key])
    };
    assert_eq!(ipv6_conf("inet", "disable_ipv6"), "0");
    assert_eq!(ipv6_conf("inet", "accept_ra"), "0");
    assert_eq!(ipv6_conf("hu", "disable_ipv6"), "1");
    sh(
        &lab,
        "h101",
        &[
            "ping",
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "2",
            "fd00:101::103",
        ],
    );
    // The switch keeps VLANs apart: h101 reaches h101b, not h102 (VLAN 102) nor hu (untagged).
    sh(
        &lab,
        "h101",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.101.103"],
    );
    for other in ["192.168.101.101", "192.168.101.102"] {
        let (ok, _) = try_sh(
            &lab,
            "h101",
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", other],
        );
        assert!(!ok, "h101 reached {other}");
    }
    // Chassis get the segment's frames on their uplink: tagged from VLAN 101, untagged from hu.
    let tagged = flooded_to_c1(&lab, "h101");
    assert!(
        tagged
            .iter()
            .any(|l| l.contains("vlan 101") && l.contains("tell 192.168.101.100")),
        "{tagged:?}"
    );
    let plain = flooded_to_c1(&lab, "hu");
    let from_hu: Vec<&String> = plain
        .iter()
        .filter(|l| l.contains("tell 192.168.101.102"))
        .collect();
    assert!(
        !from_hu.is_empty() && from_hu.iter().all(|l| !l.contains("vlan")),
        "{plain:?}"
    );

    // The API: provider and external networks, r1's gateway, v1's floating IP.
    let vlan = network(&base, "vlan101");
    assert_eq!(vlan["provider:network_type"], "vlan");
    assert_eq!(vlan["provider:physical_network"], "physnet1");
    assert_eq!(vlan["provider:segmentation_id"], 101);
    assert_eq!(vlan["mtu"], 1500);
    let public = network(&base, "public");
    assert_eq!(public["router:external"], true);
    assert_eq!(public["provider:network_type"], "flat");
    assert_eq!(network(&base, "inside")["project_id"], "alpha");
    let r1 = &lab.state().routers["r1"];
    let router = get(&base, &format!("routers/{}", r1.id))["router"].clone();
    assert_eq!(router["external_gateway_info"]["network_id"], public["id"]);
    assert_eq!(router["external_gateway_info"]["enable_snat"], true);
    let gw = r1.gateway.as_ref().expect("r1's gateway");
    assert_eq!(gw.addresses.len(), 2, "{gw:?}");
    let v4 = gw
        .addresses
        .iter()
        .find(|a| a.is_ipv4())
        .expect("an IPv4 gateway address")
        .to_string();
    let fips = get(&base, "floatingips")["floatingips"].clone();
    assert_eq!(fips.as_array().map(Vec::len), Some(1), "{fips}");
    assert_eq!(fips[0]["floating_ip_address"], "172.24.4.50");
    assert_eq!(fips[0]["port_id"], lab.port_id("v1").unwrap());
    assert_eq!(fips[0]["fixed_ip_address"], "10.0.0.11");
    assert_eq!(fips[0]["project_id"], "alpha");
    assert_eq!(fips[0]["router_id"], r1.id.as_str());
    let text = lab::status(&name).unwrap().to_string();
    for want in [
        "physical physnet1",
        "external h101",
        "2001:db8:ee::100/64",
        "vlan 101",
        "fip      172.24.4.50",
        "gateway public",
        "vlan 101 on physnet1",
        "flat on ext, external",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(
        !text.contains("DOWN ") && !text.contains("MISSING"),
        "{text}"
    );

    // Up again: nothing changes.
    assert_eq!(
        lab.converge(&topo).expect("second up"),
        Vec::<String>::new()
    );

    // The gateway's addresses from the file: the gateway port is replaced (it keeps its IPv4
    // address, which the old port has to give up first), v1's floating IP associated again; a
    // new IPv6 address remakes its host.

    let pinned = outside_file(&name, true)
        .replacen(
            "gateway = \"public\"",
            &format!("gateway = \"public\"\ngateway_ips = [\"{v4}\", \"2001:db8:ee::9\"]"),
            1,
        )
        .replacen("2001:db8:ee::100/64", "2001:db8:ee::101/64", 1);
    let pinned = Topology::parse(&pinned, Path::new("outside.toml")).expect("valid topology");
    let changes = lab.converge(&pinned).expect("gateway addresses");
    for want in [
        "floating ip 172.24.4.50: disassociated",
        "router r1: gateway removed (new addresses)",
        &format!("router r1: gateway on public set (snat on, at {v4} 2001:db8:ee::9)"),
        "floating ip 172.24.4.50: associated with vm v1",
        "external inet: wired (172.24.4.100/24 2001:db8:ee::101/64",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(want)),
            "{want}: {changes:?}"
        );
    }
    let r1 = &lab.state().routers["r1"];
    let router = get(&base, &format!("routers/{}", r1.id))["router"].clone();
    let fixed: Vec<&str> = router["external_gateway_info"]["external_fixed_ips"]
        .as_array()
        .expect("external_fixed_ips")
        .iter()
        .filter_map(|f| f["ip_address"].as_str())
        .collect();
    assert_eq!(fixed, [v4.as_str(), "2001:db8:ee::9"]);
    let fips = get(&base, "floatingips")["floatingips"].clone();
    assert_eq!(fips[0]["port_id"], lab.port_id("v1").unwrap());
    assert_eq!(fips[0]["router_id"], r1.id.as_str());
    let inet6 = sh(
        &lab,
        "inet",
        &["ip", "-o", "-6", "addr", "show", "dev", "eth0"],
    );
    assert!(inet6.contains("2001:db8:ee::101/64"), "{inet6}");
    assert_eq!(
        lab.converge(&pinned).expect("pinned again"),
        Vec::<String>::new()
    );
    // Without gateway_ips the server's choice stands: the addresses stay.
    let changes = lab.converge(&topo).expect("unpinned");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].starts_with("external inet: wired"),
        "{changes:?}"
    );

    // A host that vanished is rebuilt alone; a switch that vanished comes back with every
    // uplink and host on it.
    testbed::leftovers::destroy_netns(&lab.state().externals["h101b"].netns.clone());
    let changes = lab.converge(&topo).expect("repair host");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert!(
        changes[0].starts_with("external h101b: wired"),
        "{changes:?}"
    );
    testbed::leftovers::destroy_netns(&lab.state().physical["physnet1"].netns.clone());
    let changes = lab.converge(&topo).expect("repair switch");
    for want in [
        "physical physnet1: switch started",
        "chassis c1: uplink ph-physnet1",
        "chassis c2: uplink ph-physnet1",
        "external h101: wired",
        "external hu: wired",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(want)),
            "{want}: {changes:?}"
        );
    }
    assert!(!changes.iter().any(|c| c.contains("inet")), "{changes:?}");
    sh(
        &lab,
        "h101",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "192.168.101.103"],
    );
    assert!(lab.converge(&topo).expect("after repair").is_empty());

    // Dropping the outside: the floating IP (first: the gateway needs it gone), the gateway,
    // the segment with its bridges and host, the network; the agents get the new mappings.
    let changes = lab
        .converge(&outside_topology(&name, false))
        .expect("shrink");
    for want in [
        "floating ip 172.24.4.50: deleted",
        "router r1: gateway removed",
        "chassis c1: br-ext removed",
        "chassis c2: br-ext removed",
        "external inet: removed",
        "physical ext: removed",
        "agent c1: started",
        "network public: deleted",
    ] {
        assert!(
            changes.iter().any(|c| c.starts_with(want)),
            "{want}: {changes:?}"
        );
    }
    assert_eq!(
        get(&base, "floatingips")["floatingips"],
        serde_json::json!([])
    );
    let router = get(&base, &format!("routers/{}", lab.state().routers["r1"].id));
    assert_eq!(router["router"]["external_gateway_info"], Value::Null);
    let (has_br, _) = try_sh(&lab, "c1", &["ovs-vsctl", "br-exists", "br-ext"]);
    assert!(!has_br);
    assert!(lab.exec("inet", &["true"]).is_err() && lab.exec("ext", &["true"]).is_err());
    assert!(
        agent_args(&lab, "c1")
            .windows(2)
            .any(|w| w == ["--bridge-mappings", "physnet1:br-physnet1"]),
        "{:?}",
        agent_args(&lab, "c1")
    );

    lab.down().expect("down");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}

/// Network n (IPv4 `cidr`, IPv6 with `v6_mode` as its address mode, if any) and network m, both
/// on alpha's router r1 with a route through v2 (fixed IP `v2`); v1's addresses are allocated.
fn subnet_topology(name: &str, cidr: &str, v2: &str, v6_mode: &str) -> Topology {
    let text = format!(
        r#"
name = "{name}"
[[chassis]]
name = "c1"
[[network]]
name = "n"
project = "alpha"
[[network.subnet]]
cidr = "{cidr}"
[[network.subnet]]
cidr = "fd00:9::/64"
{v6_mode}
[[network]]
name = "m"
project = "alpha"
[[network.subnet]]
cidr = "10.7.0.0/24"
[[router]]
name = "r1"
project = "alpha"
interfaces = ["n-1", "m-1"]
routes = [{{ destination = "192.168.9.0/24", nexthop = "{v2}" }}]
[[vm]]
name = "v1"
network = "n"
chassis = "c1"
[[vm]]
name = "v2"
network = "n"
chassis = "c1"
ip = "{v2}"
forwarding = true
"#
    );
    Topology::parse(&text, Path::new("subnets.toml")).expect("valid topology")
}

fn subnets_whose_cidr_or_modes_change_are_replaced() {
    let name = lab_name("h");
    let mut lab = Lab::up(
        &subnet_topology(&name, "10.9.0.0/24", "10.9.0.20", ""),
        &opts(),
    )
    .expect("lab up");
    let base = lab.server_url();
    let net_id = lab.state().networks["n"].id.clone();
    let router = lab.state().routers["r1"].id.clone();
    for (cidr, v2, v6_mode) in [
        // Overlapping the old CIDR: the old subnet must go before the new one is made.
        ("10.9.0.0/16", "10.9.1.20", ""),
        // Elsewhere, and the IPv6 subnet with another address mode (fixed once made).
        (
            "10.8.0.0/24",
            "10.8.0.20",
            "ipv6_address_mode = \"dhcpv6-stateful\"",
        ),
    ] {
        let topo = subnet_topology(&name, cidr, v2, v6_mode);
        let changes = lab.converge(&topo).expect("converge to the new subnets");
        assert!(
            changes.iter().any(|c| c.starts_with("subnet n-1: deleted")),
            "{changes:?}"
        );
        // The network has the file's subnets, each once.
        let subnets = get(&base, &format!("subnets?network_id={net_id}"));
        let mut have: Vec<(String, String, String)> = subnets["subnets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let text = |k: &str| s[k].as_str().unwrap_or("").to_owned();
                (text("name"), text("cidr"), text("ipv6_address_mode"))
            })
            .collect();
        have.sort();
        let mode = if v6_mode.is_empty() {
            ""
        } else {
            "dhcpv6-stateful"
        };
        let want = [
            ("n-1".to_owned(), cidr.to_owned(), String::new()),
            ("n-2".to_owned(), "fd00:9::/64".to_owned(), mode.to_owned()),
        ];
        assert_eq!(have, want);
        let net: ipnet::IpNet = cidr.parse().unwrap();
        // The VMs have ports with addresses on the new subnets, on their eth0 too.
        for vm in ["v1", "v2"] {
            let v = lab.vm(vm).expect("vm").clone();
            let v4: ipnet::IpNet = v.addresses[0].parse().unwrap();
            assert_eq!(v4.trunc(), net, "{vm}: {:?}", v.addresses);
            assert!(v.addresses[1].starts_with("fd00:9::"), "{:?}", v.addresses);
            let eth0 = sh(&lab, vm, &["ip", "-o", "addr", "show", "dev", "eth0"]);
            for a in &v.addresses {
                assert!(eth0.contains(a.as_str()), "{vm}: {a} in {eth0}");
            }
        }
        assert_eq!(
            lab.vm("v2").unwrap().addresses[0],
            format!("{v2}/{}", net.prefix_len())
        );
        // The router is on the new subnet (at its gateway) and routes through v2 again.
        let n1 = lab.state().networks["n"].subnets[0].clone();
        let (ifaces, routes) = router_view(&base, &router);
        assert!(
            ifaces
                .iter()
                .any(|(s, ip)| *s == n1.id && Some(ip) == n1.gateway.as_ref()),
            "{ifaces:?} {n1:?}"
        );
        assert_eq!(ifaces.len(), 2, "{ifaces:?}");
        assert_eq!(routes, [format!("192.168.9.0/24 via {v2}")]);
        // Up again: nothing to change (before, every later up failed: "got no address").
        assert_eq!(lab.converge(&topo).expect("up again"), Vec::<String>::new());
    }
    // A port the lab does not remove (here: one made through the API) stops a replacement
    // before anything changes (also the IPv6 subnet, which would be replaced as well).
    let n1 = lab.state().networks["n"].subnets[0].id.clone();
    let body = serde_json::json!({ "port": { "network_id": net_id, "name": "other",
        "fixed_ips": [{ "subnet_id": n1 }] } });
    post(&base, "ports", &body);
    let e = lab
        .converge(&subnet_topology(&name, "10.6.0.0/24", "10.6.0.20", ""))
        .expect_err("a port of someone else's");
    assert!(
        e.to_string()
            .contains("held by what the lab does not remove"),
        "{e}"
    );
    for vm in ["v1", "v2"] {
        let port = lab.port_id(vm).unwrap();
        assert_eq!(get(&base, &format!("ports/{port}"))["port"]["id"], port);
    }
    let subnets = get(&base, &format!("subnets?network_id={net_id}"));
    assert_eq!(subnets["subnets"].as_array().unwrap().len(), 2);
    lab.down().expect("down");
    assert_eq!(leftovers(&name), Vec::<String>::new());
}
