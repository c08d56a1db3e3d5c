//! Podman (Debian's 4.3, its CNI network backend) runs a container on a network whose only
//! plugin is `wyvern-cni`, and the address it gets works: the container gets the Neutron
//! port's MAC, address and routes (static, no DHCP), the port's host end sits on the
//! chassis' `br-int` with the port's `iface-id`, and the chassis' Wyvern agent (in this
//! process) binds the port and programs the bridge, so from inside the container (`podman
//! exec`) a testbed host with its own port on the same network answers pings and a TCP
//! exchange (busybox `nc` both ends). Removing the container (podman's DEL) removes the VIF;
//! the agent reports the port DOWN and its flows leave `br-int`, the host's stay.
//!
//! Everything podman uses is private to the test: a `containers.conf` (through
//! `CONTAINERS_CONF`) selecting the CNI backend with a plugin directory holding `wyvern-cni`,
//! the network configuration directory (`--network-config-dir`), the storage (`--root`,
//! `--runroot`) and a root file system of static busybox (`--rootfs`), so nothing is pulled.
//!
//! What this machine needs, found the hard way (each is a line of `containers.conf` below):
//! * `runtime = "runc"`: crun 1.8 refuses to start any container here ("cgroups in hybrid
//!   mode not supported, drop all controllers from cgroupv2"): the cgroup v1 hierarchies are
//!   mounted and the v2 one has the `hugetlb` controller enabled. runc accepts that.
//! * `default_ulimits`: the test runs without `CAP_SYS_RESOURCE`, and podman asks for
//!   RLIMIT_NOFILE 1048576 and an RLIMIT_NPROC above its own limit; lower limits work.
//!
//! Podman runs CNI plugins in its own (here: the root) network namespace, where a chassis'
//! host namespace would be; this chassis is a testbed namespace, so the plugin directory holds
//! a two-line wrapper that runs the real binary there (`ip netns exec`). Podman passes
//! `K8S_POD_NAME=<container name>` and no namespace, hence `pod_namespace` in the
//! configuration.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testbed::{Chassis, ChassisOpts, Relay};

use crate::support::{Agent, BIN, Rest, Server, link_in};

/// Podman with the test's private configuration and storage; removes its container (and any
/// mount left under its directory) when dropped.
struct Podman {
    dir: tempfile::TempDir,
    container: String,
}

impl Podman {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// `podman <global flags> args` (at most two minutes); (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("timeout")
            .arg("120")
            .arg("podman")
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .arg("--network-config-dir")
            .arg(self.path("net"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .output()
            .expect("podman is installed (scripts/install-deps)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Like [`Podman::run`]; panics with podman's stderr on failure.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(ok, "podman {args:?} failed: {err}");
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--time", "0", &self.container]);
        // Whatever podman left mounted under our directory (a container's shm).
        let dir = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&dir))
            .collect();
        ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// A root file system of static busybox: `/bin/busybox` and links for the applets used.
fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = Path::new("/bin/busybox");
    let kind = Command::new("file").arg("-L").arg(busybox).output();
    let statically =
        kind.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("statically linked"));
    assert!(
        statically,
        "/bin/busybox must be the static build (apt-get install busybox-static; scripts/install-deps)"
    );
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "ip", "cat", "sleep", "ping", "nc"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

/// A process started here (a listener in a testbed host), killed and reaped when dropped.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The flows of `br-int` that match on or output to OpenFlow port `ofport` (port numbers,
/// not names: `--no-names`).
fn flows_of(chassis: &Chassis, ofport: &str) -> Vec<String> {
    let dump = chassis
        .ovs_ofctl(&["--no-names", "dump-flows", "br-int"])
        .unwrap_or_default();
    let (matching, output) = (format!("in_port={ofport}"), format!("output:{ofport}"));
    dump.lines()
        .filter(|l| l.split([',', ' ']).any(|t| t == matching || t == output))
        .map(str::to_owned)
        .collect()
}

/// Polls `f` (every 200 ms) until it holds or `timeout` passes; whether it held.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn podman_runs_a_container_on_a_wyvern_port() {
    let server = Server::start();
    let chassis = Chassis::start("cnipod", &ChassisOpts::default()).expect("start a chassis");
    // The chassis' agent makes br-int and programs it (dropped before the chassis).
    let agent = Agent::start(&server.base, &chassis);
    chassis
        .wait_until(Duration::from_secs(20), || {
            chassis.ovs_vsctl(&["br-exists", "br-int"]).is_ok()
        })
        .expect("the agent made br-int");
    let fwd = Relay::start(chassis.netns().name(), server.addr())
        .expect("relay the API into the namespace");
    let api = Rest::new(&server.base);
    let (net, _) = api.network(75, 1400, false);
    let name = format!("{}-box", testbed::unique_name('k'));
    let port = api.port(&net, &[&format!("k8s-pod:podman:{name}")]);
    let port_id = port["id"].as_str().unwrap().to_owned();
    let mac = port["mac_address"].as_str().unwrap().to_owned();
    let ip = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let tap = format!("tap{}", &port_id[..11]);
    let show =
        |id: &str| api.call(reqwest::Method::GET, &format!("ports/{id}"), None)["port"].clone();
    let bound_here =
        |p: &serde_json::Value| p["status"] == "ACTIVE" && p["binding:host_id"] == chassis.name();

    // The other end: a testbed host with its own port on the same network, plugged into the
    // same br-int as a VIF (TX checksum offload off on its side, as Host does).
    let peer_port = api.port(&net, &[]);
    let peer_id = peer_port["id"].as_str().unwrap().to_owned();
    let peer_mac = peer_port["mac_address"].as_str().unwrap().to_owned();
    let peer_ip = peer_port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let peer = testbed::Host::create(
        &chassis,
        &testbed::HostOpts {
            ip: Some(format!("{peer_ip}/24")),
            mac: Some(peer_mac.clone()),
            mtu: Some(1400),
            ..testbed::HostOpts::default()
        },
    )
    .expect("the peer host");
    chassis
        .ovs_vsctl(&[
            "add-port",
            "br-int",
            peer.port(),
            "--",
            "set",
            "Interface",
            peer.port(),
            &format!("external_ids:iface-id={peer_id}"),
            "external_ids:iface-status=active",
            &format!("external_ids:attached-mac={peer_mac}"),
        ])
        .expect("plug the peer into br-int");
    assert!(
        eventually(Duration::from_secs(20), || bound_here(&show(&peer_id))),
        "the agent did not bind the peer's port: {}",
        show(&peer_id)
    );

    let podman = Podman {
        dir: tempfile::tempdir().expect("a temporary directory"),
        container: name.clone(),
    };
    for d in ["cni", "net", "root", "run", "tmp"] {
        std::fs::create_dir_all(podman.path(d)).unwrap();
    }
    busybox_rootfs(&podman.path("rootfs"));
    // The plugin runs where the chassis' OVS runs.
    let wrapper = podman.path("cni/wyvern-cni");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {BIN} \"$@\"\n",
            chassis.netns().name()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        podman.path("containers.conf"),
        format!(
            "[containers]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             log_driver = \"k8s-file\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [\"{cni}\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             tmp_dir = \"{tmp}\"\n",
            cni = podman.path("cni").display(),
            tmp = podman.path("tmp").display(),
        ),
    )
    .unwrap();
    let network = format!("{name}-net");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": network,
        "plugins": [{
            "type": "wyvern-cni",
            "api_url": fwd.url(),
            "ovsdb": chassis.db_endpoint(),
            "pod_namespace": "podman",
            "port_wait": 5
        }]
    });
    std::fs::write(
        podman.path(&format!("net/{network}.conflist")),
        serde_json::to_string_pretty(&conflist).unwrap(),
    )
    .unwrap();

    let info = podman.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(info.trim(), "cni", "podman must use its CNI backend");
    let rootfs = podman.path("rootfs").display().to_string();
    let (ok, _, err) = podman.run(&[
        "run",
        "--detach",
        "--name",
        &name,
        "--network",
        &network,
        // busybox ping sends from a raw socket.
        "--cap-add",
        "NET_RAW",
        "--rootfs",
        &rootfs,
        "/bin/sleep",
        "300",
    ]);
    assert!(ok, "podman run failed: {err}");
    let exec = |args: &[&str]| {
        let mut all = vec!["exec", name.as_str()];
        all.extend_from_slice(args);
        podman.run(&all)
    };

    // Inside the container, without DHCP: the port's MAC and address (static: no lease
    // lifetime), the network's MTU, and exactly the subnet's routes — its prefix, the
    // gateway as default route, the subnet's host route.
    let addr = podman.ok(&["exec", &name, "/bin/ip", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("link/ether {mac}")), "{addr}");
    assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
    assert!(addr.contains("valid_lft forever"), "{addr}");
    assert!(!addr.contains("dynamic"), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = podman.ok(&["exec", &name, "/bin/ip", "-4", "route"]);
    let mut routes: Vec<String> = routes
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "10.75.0.0/24 dev eth0 scope link src ".to_owned() + &ip,
            "192.168.75.0/24 via 10.75.0.254 dev eth0".to_owned(),
            "default via 10.75.0.1 dev eth0".to_owned(),
        ],
        "the container's IPv4 routes"
    );
    // Podman read the plugin's result.
    let inspect: serde_json::Value =
        serde_json::from_str(&podman.ok(&["inspect", &name])).expect("podman inspect JSON");
    let seen = &inspect[0]["NetworkSettings"]["Networks"][&network];
    assert_eq!(seen["IPAddress"], ip.as_str(), "{seen}");
    assert_eq!(seen["MacAddress"], mac.as_str(), "{seen}");
    // On the chassis: the host end on br-int as the port's VIF, which the agent binds.
    assert_eq!(
        chassis.ovs_vsctl(&["port-to-br", &tap]).unwrap().trim(),
        "br-int"
    );
    let iface_id = chassis
        .ovs_vsctl(&["get", "Interface", &tap, "external_ids:iface-id"])
        .unwrap();
    assert_eq!(iface_id.trim().trim_matches('"'), port_id);
    assert!(
        eventually(Duration::from_secs(20), || bound_here(&show(&port_id))),
        "the agent did not bind the container's port: {}",
        show(&port_id)
    );
    let ofport = chassis
        .ovs_vsctl(&["get", "Interface", &tap, "ofport"])
        .unwrap()
        .trim()
        .to_owned();
    let peer_ofport = chassis
        .ovs_vsctl(&["get", "Interface", peer.port(), "ofport"])
        .unwrap()
        .trim()
        .to_owned();

    // The address works: the peer answers pings from the container, and back.
    let pinged = eventually(Duration::from_secs(20), || {
        exec(&["/bin/ping", "-c", "1", "-W", "1", &peer_ip]).0
    });
    assert!(
        pinged,
        "the container cannot ping the peer {peer_ip}: {:?}\n{}",
        exec(&["/bin/ping", "-c", "1", "-W", "1", &peer_ip]),
        chassis
            .ovs_ofctl(&["--no-names", "dump-flows", "br-int"])
            .unwrap_or_default()
    );
    let (ok, out, err) = exec(&["/bin/ping", "-c", "3", "-i", "0.2", "-W", "2", &peer_ip]);
    assert!(ok && out.contains("3 packets received"), "{out}{err}");
    peer.ping(&ip, 3).expect("the peer pings the container");

    // TCP: a listener on the peer (busybox nc, one connection) whose shell reads a line and
    // answers it; the client in the container sends a line and must get the answer back —
    // both directions, in order (no race between the two ends' closes).
    let tcp_port = "7075";
    let mut listener = Child(
        Command::new("timeout")
            .args(["60", "ip", "netns", "exec", peer.netns().name()])
            .args(["busybox", "nc", "-l", "-p", tcp_port, "-e"])
            .args(["sh", "-c", "read line; echo \"peer-got:$line\""])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the peer's listener"),
    );
    let client = format!("echo from-the-container | /bin/nc -w 5 {peer_ip} {tcp_port}");
    let mut answer = (false, String::new(), String::new());
    // Until the listener listens (a refused connection ends the client at once); a
    // connection ends the listener.
    let connected = eventually(Duration::from_secs(20), || {
        answer = exec(&["/bin/sh", "-c", &client]);
        answer.0 || !matches!(listener.0.try_wait(), Ok(None))
    });
    drop(listener);
    assert!(
        connected && answer.0 && answer.1.contains("peer-got:from-the-container"),
        "no TCP exchange with the peer: the container's client: {answer:?}"
    );

    // The agent programmed the container's VIF; removing the container (podman's DEL)
    // detaches it, and the agent reports the port DOWN and removes its flows — the peer's
    // stay.
    assert!(
        !flows_of(&chassis, &ofport).is_empty(),
        "no flows of the container's OpenFlow port {ofport}"
    );
    podman.ok(&["rm", "--force", "--time", "0", &name]);
    chassis
        .wait_until(Duration::from_secs(10), || {
            link_in(chassis.netns().name(), &tap).is_none()
                && chassis
                    .ovs_vsctl(&["list-ports", "br-int"])
                    .is_ok_and(|p| p.lines().all(|l| l.trim() != tap))
        })
        .expect("podman's DEL removed the port and its link");
    assert!(
        eventually(Duration::from_secs(20), || show(&port_id)["status"]
            == "DOWN"),
        "the agent did not report the container's port DOWN: {}",
        show(&port_id)
    );
    assert!(
        eventually(Duration::from_secs(20), || flows_of(&chassis, &ofport)
            .is_empty()),
        "flows of the removed VIF (OpenFlow port {ofport}) remain: {:#?}",
        flows_of(&chassis, &ofport)
    );
    assert!(
        !flows_of(&chassis, &peer_ofport).is_empty(),
        "the peer's flows went too"
    );
    assert!(bound_here(&show(&peer_id)), "{}", show(&peer_id));
    assert!(agent.running(), "the agent stopped");
}
