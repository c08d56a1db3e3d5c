//! A private Open vSwitch (userspace datapath) for tests: its own network namespace, run dir,
//! ovsdb-server and ovs-vswitchd, and a `br0` bridge with veth ports. Everything is removed
//! when the [`Switch`] is dropped (daemons killed by PID, namespace and directory deleted).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running private switch.
pub struct Switch {
    /// Network namespace name.
    pub netns: String,
    /// Run dir (sockets, pidfiles, logs).
    pub dir: PathBuf,
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether this machine can run a switch (root, Open vSwitch installed).
pub fn available() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("ovs-vswitchd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Asserts that this machine can run the switch tests: they fail rather than skip unseen (CI
/// installs everything with scripts/install-deps).
pub fn require(test: &str) {
    assert!(
        available(),
        "{test} needs root and Open vSwitch; scripts/install-deps installs it"
    );
}

impl Switch {
    /// Starts a switch with `br0` and `n_ports` veth ports `p1..pN` (peers `v1..vN` in the
    /// same namespace, up, with IPv6 off so that they stay quiet).
    pub fn start(n_ports: usize) -> Result<Switch, String> {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let netns = format!("oft{}x{n}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/oft{}x{n}", std::process::id()));
        let sw = Switch { netns, dir };
        sw.setup(n_ports)?;
        Ok(sw)
    }

    fn setup(&self, n_ports: usize) -> Result<(), String> {
        let d = self.dir.display().to_string();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| e.to_string())?;
        run(Command::new("ip").args(["netns", "add", &self.netns]))?;
        self.nsx(&["ip", "link", "set", "lo", "up"])?;
        self.nsx(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        run(Command::new("ovsdb-tool").args([
            "create",
            &format!("{d}/conf.db"),
            "/usr/share/openvswitch/vswitch.ovsschema",
        ]))?;
        let env = [
            ("OVS_RUNDIR", &d),
            ("OVS_LOGDIR", &d),
            ("OVS_DBDIR", &d),
            ("OVS_SYSCONFDIR", &d),
        ];
        let mut db = Command::new("ip");
        db.args([
            "netns",
            "exec",
            &self.netns,
            "ovsdb-server",
            &format!("{d}/conf.db"),
        ])
        .arg(format!("--remote=punix:{d}/db.sock"))
        .arg(format!("--pidfile={d}/ovsdb-server.pid"))
        .arg(format!("--unixctl={d}/ovsdb-server.ctl"))
        .arg(format!("--log-file={d}/ovsdb-server.log"))
        .args(["-vconsole:off", "--detach", "--no-chdir"])
        .envs(env);
        run(&mut db)?;
        self.vsctl(&["--no-wait", "init"])?;
        let mut vs = Command::new("ip");
        vs.args([
            "netns",
            "exec",
            &self.netns,
            "ovs-vswitchd",
            &format!("unix:{d}/db.sock"),
        ])
        .arg(format!("--pidfile={d}/ovs-vswitchd.pid"))
        .arg(format!("--unixctl={d}/ovs-vswitchd.ctl"))
        .arg(format!("--log-file={d}/ovs-vswitchd.log"))
        .args(["-vconsole:off", "--detach", "--no-chdir"])
        .envs(env);
        run(&mut vs)?;
        self.vsctl(&[
            "add-br",
            "br0",
            "--",
            "set",
            "bridge",
            "br0",
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            "fail_mode=secure",
            "other_config:datapath-id=0000000000000001",
        ])?;
        for i in 1..=n_ports {
            let (p, v) = (format!("p{i}"), format!("v{i}"));
            self.nsx(&["ip", "link", "add", &p, "type", "veth", "peer", "name", &v])?;
            self.nsx(&["ip", "link", "set", &p, "up"])?;
            self.nsx(&["ip", "link", "set", &v, "up"])?;
            self.vsctl(&[
                "add-port",
                "br0",
                &p,
                "--",
                "set",
                "interface",
                &p,
                &format!("ofport_request={i}"),
            ])?;
        }
        // Wait for the management socket.
        let mgmt = self.dir.join("br0.mgmt");
        let t = Instant::now();
        while !mgmt.exists() {
            if t.elapsed() > Duration::from_secs(10) {
                return Err("br0.mgmt did not appear".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Runs a command inside the namespace.
    pub fn nsx(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(args))
    }

    /// `ovs-vsctl` against this switch's database.
    pub fn vsctl(&self, args: &[&str]) -> Result<String, String> {
        run(Command::new("ovs-vsctl")
            .arg(format!("--db=unix:{}/db.sock", self.dir.display()))
            .arg("--timeout=20")
            .args(args))
    }

    /// `ovs-ofctl -O OpenFlow13` against this switch's bridge.
    pub fn ofctl(&self, args: &[&str]) -> Result<String, String> {
        let mut c = Command::new("ovs-ofctl");
        c.env("OVS_RUNDIR", &self.dir).args(["-O", "OpenFlow13"]);
        let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if let Some(pos) = a.iter().position(|s| s == "BR") {
            a[pos] = format!("unix:{}/br0.mgmt", self.dir.display());
        }
        run(c.args(a))
    }

    /// The connection target for the bridge.
    pub fn target(&self) -> String {
        format!("unix:{}/br0.mgmt", self.dir.display())
    }

    fn kill_pidfile(&self, name: &str) {
        let Ok(pid) = std::fs::read_to_string(self.dir.join(name)) else {
            return;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !(cmdline.contains("ovs-vswitchd") || cmdline.contains("ovsdb-server")) {
            return;
        }
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if st.is_empty() || st.split_whitespace().nth(2) == Some("Z") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// A running `tcpdump` waiting for one ARP frame from 00:11:22:33:44:55; killed on drop.
pub struct Capture {
    child: std::process::Child,
    out: PathBuf,
}

impl Capture {
    /// Waits (up to `timeout`) for the frame; returns tcpdump's output.
    pub fn wait(mut self, timeout: Duration) -> String {
        let t = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() && t.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Switch {
    /// Starts capturing on `iface` (inside the namespace) and gives tcpdump time to attach.
    pub fn capture_arp(&self, iface: &str, name: &str) -> Capture {
        let out = self.dir.join(format!("{name}.txt"));
        let err = self.dir.join(format!("{name}.log"));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "tcpdump",
                "-l",
                "-nn",
                "-e",
                "-c",
                "1",
                "-i",
                iface,
            ])
            .args(["arp", "and", "ether", "src", "00:11:22:33:44:55"])
            .stdout(std::fs::File::create(&out).expect("capture file"))
            .stderr(std::fs::File::create(&err).expect("capture log"))
            .spawn()
            .expect("tcpdump");
        // tcpdump says when it listens: wait for that, not for a guessed time.
        let t = Instant::now();
        loop {
            let log = std::fs::read_to_string(&err).unwrap_or_default();
            if log.contains("listening on") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "tcpdump did not start listening: {log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Capture { child, out }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_SWITCH").is_some() {
            eprintln!(
                "KEEP_SWITCH: leaving {} / {}",
                self.netns,
                self.dir.display()
            );
            return;
        }
        self.kill_pidfile("ovs-vswitchd.pid");
        self.kill_pidfile("ovsdb-server.pid");
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
