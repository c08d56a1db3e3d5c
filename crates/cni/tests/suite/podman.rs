//! Podman (Debian's 4.3, its CNI network backend) runs a container on a network whose only
//! plugin is `wyvern-cni`: the container gets the Neutron port's MAC and address, the port's
//! host end sits on the chassis' `br-int` with the port's `iface-id`, and removing the
//! container (podman's DEL) removes it again.
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
use testbed::{Chassis, ChassisOpts};

use crate::support::{BIN, Forward, Rest, Server, link_in};

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
    for applet in ["sh", "ip", "cat", "sleep"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
}

#[test]
fn podman_runs_a_container_on_a_wyvern_port() {
    let server = Server::start();
    let chassis = Chassis::start("cnipod", &ChassisOpts::default()).expect("start a chassis");
    chassis.add_bridge("br-int").expect("br-int");
    let fwd = Forward::start(chassis.netns().name(), server.addr());
    let api = Rest::new(&server.base);
    let (net, _) = api.network(75, 1400, false);
    let name = format!("{}-box", testbed::unique_name('k'));
    let port = api.port(&net, &[&format!("k8s-pod:podman:{name}")]);
    let mac = port["mac_address"].as_str().unwrap().to_owned();
    let ip = port["fixed_ips"][0]["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    let tap = format!("tap{}", &port["id"].as_str().unwrap()[..11]);

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
            "api_url": fwd.base,
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
        "--rootfs",
        &rootfs,
        "/bin/sleep",
        "300",
    ]);
    assert!(ok, "podman run failed: {err}");

    // Inside the container: the port's MAC and address, the subnet's gateway as default route.
    let addr = podman.ok(&["exec", &name, "/bin/ip", "addr", "show", "eth0"]);
    assert!(addr.contains(&format!("link/ether {mac}")), "{addr}");
    assert!(addr.contains(&format!("inet {ip}/24")), "{addr}");
    assert!(addr.contains("mtu 1400"), "{addr}");
    let routes = podman.ok(&["exec", &name, "/bin/ip", "route"]);
    assert!(
        routes.contains("default via 10.75.0.1 dev eth0"),
        "{routes}"
    );
    // Podman read the plugin's result.
    let inspect: serde_json::Value =
        serde_json::from_str(&podman.ok(&["inspect", &name])).expect("podman inspect JSON");
    let seen = &inspect[0]["NetworkSettings"]["Networks"][&network];
    assert_eq!(seen["IPAddress"], ip.as_str(), "{seen}");
    assert_eq!(seen["MacAddress"], mac.as_str(), "{seen}");
    // On the chassis: the host end on br-int as the port's VIF.
    assert_eq!(
        chassis.ovs_vsctl(&["port-to-br", &tap]).unwrap().trim(),
        "br-int"
    );
    let iface_id = chassis
        .ovs_vsctl(&["get", "Interface", &tap, "external_ids:iface-id"])
        .unwrap();
    assert_eq!(
        iface_id.trim().trim_matches('"'),
        port["id"].as_str().unwrap()
    );

    // Removing the container detaches it.
    podman.ok(&["rm", "--force", "--time", "0", &name]);
    chassis
        .wait_until(Duration::from_secs(10), || {
            link_in(chassis.netns().name(), &tap).is_none()
                && chassis
                    .ovs_vsctl(&["list-ports", "br-int"])
                    .is_ok_and(|p| p.trim().is_empty())
        })
        .expect("podman's DEL removed the port and its link");
}
