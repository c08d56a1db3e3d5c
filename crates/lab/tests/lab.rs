//! The lab against real Open vSwitch: up (twice), what the API and the namespaces show,
//! repair, topology changes, two labs side by side, teardown after a crash, and a failed up.
//!
//! This test binary has no libtest harness: when the lab runs it as `server --listen ADDR
//! --store SPEC` it serves the Neutron API (so the lab starts a real server process without
//! needing the `wyvern` binary, which lives in another crate), and as `agent` it answers like
//! a `wyvern` without that subcommand. Otherwise it runs the tests below, one after the other
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
        _ => run_tests(&args[1..]),
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
            "agents_are_started_killed_and_restarted",
            agents_are_started_killed_and_restarted,
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
    let server_pid = lab::status(&name).unwrap().server_pid;
    assert!(server_pid.is_some());
    lab.keep();
    let mut lab = Lab::open(&name, &opts()).expect("open");
    assert_eq!(
        lab.converge(&topo).expect("second up"),
        Vec::<String>::new()
    );
    assert!(lab.converge(&topo).expect("third up").is_empty());
    let st = lab::status(&name).unwrap();
    assert_eq!(st.server_pid, server_pid, "server not restarted");
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
    assert!(st.contains(&format!("agent pid {p2b}")), "{st}");
    let agents = [lab.agent_pid("c1").unwrap(), p2b];
    drop(lab);
    assert!(agents.iter().all(|p| !alive(*p)));
    assert_eq!(leftovers(&name), Vec::<String>::new());
}
