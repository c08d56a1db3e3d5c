//! Tests of the fixture itself against real Open vSwitch: start, tunnel traffic, teardown
//! (also on panic).

use std::path::PathBuf;

use testbed::{Chassis, ChassisOpts, Host, HostOpts, Underlay};

fn netns_exists(name: &str) -> bool {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

fn pid_alive(pid: u32) -> bool {
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

struct Traces {
    netns: Vec<String>,
    dir: PathBuf,
    pids: Vec<u32>,
}

fn traces(c: &Chassis) -> Traces {
    Traces {
        netns: vec![c.netns().name().to_owned()],
        dir: c.rundir().to_owned(),
        pids: [c.ovsdb_pid(), c.vswitchd_pid()]
            .into_iter()
            .flatten()
            .collect(),
    }
}

fn assert_gone(t: &Traces) {
    for n in &t.netns {
        assert!(!netns_exists(n), "netns {n} left");
    }
    assert!(!t.dir.exists(), "dir {} left", t.dir.display());
    for p in &t.pids {
        assert!(!pid_alive(*p), "process {p} left");
    }
}

#[test]
fn chassis_starts_and_is_removed_on_drop() {
    let c = Chassis::start("c1", &ChassisOpts::default()).unwrap();
    assert!(c.db_socket().as_os_str().len() < 108);
    c.add_bridge("br-int").unwrap();
    let show = c.ovs_vsctl(&["list-br"]).unwrap();
    assert_eq!(show.trim(), "br-int");
    assert!(c.mgmt_socket("br-int").exists());
    assert!(c.ovs_appctl(&["version"]).unwrap().contains("ovs-vswitchd"));
    assert!(c.ovs_appctl(&["dpif/show"]).unwrap().contains("netdev"));
    let id = c
        .ovs_vsctl(&["get", "Open_vSwitch", ".", "external_ids:system-id"])
        .unwrap();
    assert_eq!(id.trim(), "c1");
    let flows = c.ovs_ofctl(&["dump-flows", "br-int"]).unwrap();
    assert!(
        !flows.contains("actions="),
        "secure bridge has no flows: {flows}"
    );
    let t = traces(&c);
    assert_eq!(t.pids.len(), 2);
    drop(c);
    assert_gone(&t);
}

#[test]
fn everything_is_removed_when_a_test_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let c = Chassis::start("panicky", &ChassisOpts::default()).unwrap();
        let h = Host::create(&c, &HostOpts::default()).unwrap();
        let mut t = traces(&c);
        t.netns.push(h.netns().name().to_owned());
        tx.send(t).unwrap();
        panic!("test failure inside the fixture's lifetime");
    });
    assert!(r.is_err());
    assert_gone(&rx.recv().unwrap());
}

#[test]
fn ovsdb_restart_keeps_the_database() {
    let c = Chassis::start(
        "c1",
        &ChassisOpts {
            vswitchd: false,
            ..ChassisOpts::default()
        },
    )
    .unwrap();
    assert!(c.vswitchd_pid().is_none());
    let pid = c.ovsdb_pid().unwrap();
    c.stop_ovsdb();
    assert!(!pid_alive(pid));
    c.ovsdb_tool(&[
        "transact",
        r#"["Open_vSwitch",{"op":"mutate","table":"Open_vSwitch","where":[],"mutations":[["external_ids","insert",["map",[["k","v"]]]]]}]"#,
    ])
    .unwrap();
    c.start_ovsdb().unwrap();
    let v = c
        .ovs_vsctl(&["get", "Open_vSwitch", ".", "external_ids:k"])
        .unwrap();
    assert_eq!(v.trim(), "v");
}

/// Two chassis over the fixture's underlay: hosts reach each other through a Geneve port with
/// `remote_ip=flow`, which needs br-phy set up the way the fixture does it.
#[test]
fn hosts_talk_over_a_userspace_geneve_tunnel() {
    let mut ul = Underlay::create().unwrap();
    let mut chassis = Vec::new();
    let mut hosts = Vec::new();
    for n in 1..=2u32 {
        let c = Chassis::start(&format!("c{n}"), &ChassisOpts::default()).unwrap();
        ul.attach(&c, &format!("172.31.0.{n}/24")).unwrap();
        c.add_bridge("br-int").unwrap();
        let h = Host::create(
            &c,
            &HostOpts {
                ip: Some(format!("10.0.0.{n}/24")),
                mac: Some(format!("02:00:00:00:00:0{n}")),
                mtu: Some(1400),
                gateway: None,
            },
        )
        .unwrap();
        c.ovs_vsctl(&[
            "add-port",
            "br-int",
            h.port(),
            "--",
            "set",
            "Interface",
            h.port(),
            "ofport_request=1",
            "--",
            "add-port",
            "br-int",
            "tun",
            "--",
            "set",
            "Interface",
            "tun",
            "type=geneve",
            "options:remote_ip=flow",
            "options:key=flow",
            "ofport_request=100",
        ])
        .unwrap();
        let peer = 3 - n;
        for f in [
            format!(
                "priority=10,in_port=1,actions=set_field:0x64->tun_id,set_field:172.31.0.{peer}->tun_dst,output:100"
            ),
            "priority=10,in_port=100,tun_id=0x64,actions=output:1".to_owned(),
        ] {
            c.ovs_ofctl(&["add-flow", "br-int", &f]).unwrap();
        }
        chassis.push(c);
        hosts.push(h);
    }
    chassis[0]
        .netns()
        .exec(&["ping", "-c", "1", "-W", "2", "172.31.0.2"])
        .expect("underlay reachable");
    // The first packet to a new tunnel peer may be used up by next-hop resolution.
    let _ = hosts[0].ping("10.0.0.2", 1);
    hosts[0].ping("10.0.0.2", 3).expect("ping over geneve");
}

/// What a killed test run leaves behind is found and removed by prefix; other names are
/// not touched.
#[test]
fn leftovers_are_found_and_cleaned_by_prefix() {
    let name = format!("{}lo{:x}", testbed::PREFIX, std::process::id());
    let dir = PathBuf::from("/tmp").join(&name);
    std::fs::create_dir(&dir).unwrap();
    // A plain file with the prefix (a log someone left) is a leftover too.
    let file = PathBuf::from("/tmp").join(format!("{name}.log"));
    std::fs::write(&file, "left behind").unwrap();
    let status = std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(status.success());
    let other = Chassis::start("bystander", &ChassisOpts::default()).unwrap();
    let found = testbed::leftovers::find(&name);
    assert!(
        found.contains(&testbed::leftovers::Leftover::Netns(name.clone())),
        "{found:?}"
    );
    assert!(
        found.contains(&testbed::leftovers::Leftover::Dir(dir.clone())),
        "{found:?}"
    );
    testbed::leftovers::cleanup(&name);
    assert!(testbed::leftovers::find(&name).is_empty());
    assert!(!netns_exists(&name) && !dir.exists() && !file.exists());
    assert!(
        netns_exists(other.netns().name()),
        "other tests' namespaces stay"
    );
    assert!(other.ovsdb_pid().is_some());
}

/// Pieces made for a later process (`wyvern lab`): detached values leave everything running;
/// adopted values (found again by name, PID file and marker) tear it down on drop.
#[test]
fn detached_pieces_outlive_their_values_and_are_adopted_again() {
    let name = format!("{}dt{:x}", testbed::PREFIX, std::process::id());
    // Detached pieces have no guard: sweep by name whatever a failing assertion leaves.
    struct Sweep(String);
    impl Drop for Sweep {
        fn drop(&mut self) {
            testbed::leftovers::cleanup(&self.0);
        }
    }
    let _sweep = Sweep(name.clone());
    let dir = PathBuf::from("/tmp").join(&name);
    std::fs::create_dir(&dir).unwrap();
    let marker = format!("{}/", dir.display());
    let ns_name = format!("{name}.c1");
    let ns = testbed::Netns::create_named(&ns_name).unwrap();
    assert!(testbed::Netns::create_named(&ns_name).is_err(), "exists");
    assert!(testbed::Netns::create_named("bad name").is_err());
    let c = Chassis::start_in("c1", ns, dir.join("c1"), &ChassisOpts::default()).unwrap();
    let pids = [c.ovsdb_pid().unwrap(), c.vswitchd_pid().unwrap()];
    c.detach();
    let pidfile = dir.join("d.pid");
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "while :; do sleep 0.1; done", &format!("{marker}d")]);
    let d = testbed::Daemon::spawn(cmd, &pidfile, &dir.join("d.log"), &marker).unwrap();
    let dpid = d.detach();
    assert!(netns_exists(&ns_name) && pids.iter().all(|p| pid_alive(*p)) && pid_alive(dpid));
    assert_eq!(testbed::Daemon::running(&pidfile, &marker), Some(dpid));
    assert_eq!(testbed::Daemon::running(&pidfile, "/elsewhere/"), None);

    let c = Chassis::adopt(
        "c1",
        testbed::Netns::adopt(&ns_name).unwrap(),
        dir.join("c1"),
    );
    assert_eq!(c.vswitchd_pid(), Some(pids[1]));
    drop(c);
    drop(testbed::Daemon::find(&pidfile, &marker).expect("daemon found"));
    assert!(!netns_exists(&ns_name) && !dir.join("c1").exists() && !pidfile.exists());
    assert!(pids.iter().chain([&dpid]).all(|p| !pid_alive(*p)));
    assert!(testbed::Netns::adopt(&ns_name).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}
