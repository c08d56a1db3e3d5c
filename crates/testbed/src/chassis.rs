//! One Open vSwitch chassis: `ovsdb-server` + `ovs-vswitchd` in a private namespace and run dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::cmd::{self, output, run};
use crate::{Error, Netns, Result};

/// Schema installed by the `openvswitch-common` package.
const VSWITCH_SCHEMA: &str = "/usr/share/openvswitch/vswitch.ovsschema";
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// How to start a [`Chassis`].
#[derive(Debug, Clone)]
pub struct ChassisOpts {
    /// Start `ovs-vswitchd` too (default). Without it only the database runs.
    pub vswitchd: bool,
    /// `Open_vSwitch` `other_config` keys set before `ovs-vswitchd` starts (some, such as
    /// `userspace-tso-enable`, are read only at startup).
    pub other_config: Vec<(String, String)>,
    /// Directory that holds the run directory; it must be short (unix socket paths live
    /// there). Default `/tmp`, the only place [`crate::leftovers`] looks.
    pub base_dir: PathBuf,
}

impl Default for ChassisOpts {
    fn default() -> Self {
        ChassisOpts {
            vswitchd: true,
            other_config: Vec::new(),
            base_dir: PathBuf::from("/tmp"),
        }
    }
}

/// A running chassis. Dropping it stops both daemons by PID, deletes the namespace (and with
/// it every port of the userspace datapath) and removes the run directory, unless it was
/// [detached](Chassis::detach).
///
/// The daemons of a chassis made by [`Chassis::start`] (tests) are children of this process
/// that the kernel kills when the process ends, however it ends (see [`Chassis::start`]); those
/// of [`Chassis::start_in`] and [`Chassis::adopt`] (`wyvern lab`) are detached and outlive it.
#[derive(Debug)]
pub struct Chassis {
    name: String,
    rundir: PathBuf,
    // Declared after `rundir` but dropped explicitly in `Drop` (daemons first).
    netns: Option<Netns>,
    keep: bool,
    /// The daemons die with this process (`PR_SET_PDEATHSIG`) instead of detaching.
    tied: bool,
}

impl Chassis {
    /// Starts a chassis whose OVS `system-id` and `hostname` are `name`.
    ///
    /// Its `ovsdb-server` and `ovs-vswitchd` (also when started again) are children of this
    /// process, not detached daemons, started with `PR_SET_PDEATHSIG` = SIGKILL from a thread
    /// that lives as long as the process: a test run killed with SIGKILL leaves no OVS daemon
    /// behind (its namespace and run directory stay, for [`crate::leftovers`]). Such a chassis
    /// cannot outlive the process, [detached](Chassis::detach) or not: use
    /// [`Chassis::start_in`] for that.
    pub fn start(name: &str, opts: &ChassisOpts) -> Result<Chassis> {
        let netns = Netns::create('c')?;
        let rundir = opts.base_dir.join(netns.name());
        Chassis::launch(name, netns, rundir, opts, true)
    }

    /// Starts a chassis in the given namespace with run directory `rundir`, which must not
    /// exist yet (its parent must); `opts.base_dir` is not used. For fixtures that choose
    /// their own names, such as `wyvern lab`.
    pub fn start_in(
        name: &str,
        netns: Netns,
        rundir: PathBuf,
        opts: &ChassisOpts,
    ) -> Result<Chassis> {
        Chassis::launch(name, netns, rundir, opts, false)
    }

    fn launch(
        name: &str,
        netns: Netns,
        rundir: PathBuf,
        opts: &ChassisOpts,
        tied: bool,
    ) -> Result<Chassis> {
        cmd::become_subreaper();
        let chassis = Chassis {
            name: name.to_owned(),
            rundir,
            netns: Some(netns),
            keep: false,
            tied,
        };
        chassis.init(opts)?;
        Ok(chassis)
    }

    /// Takes charge of a chassis started earlier (possibly by another process) in `netns`
    /// with run directory `rundir`. Nothing is checked or started: see
    /// [`Chassis::ovsdb_pid`] and [`Chassis::vswitchd_pid`] for whether it still runs.
    /// Dropping the value tears it down as if it had been started here.
    pub fn adopt(name: &str, netns: Netns, rundir: PathBuf) -> Chassis {
        Chassis {
            name: name.to_owned(),
            rundir,
            netns: Some(netns),
            keep: false,
            tied: false,
        }
    }

    /// Leaves the chassis running when the value is dropped (it outlives this process);
    /// [`Chassis::adopt`] takes charge of it again.
    pub fn detach(mut self) {
        self.keep = true;
        if let Some(ns) = self.netns.take() {
            ns.detach();
        }
    }

    fn init(&self, opts: &ChassisOpts) -> Result<()> {
        // Longest socket: vswitchd's control socket with the largest PID Linux hands out (a
        // bridge's is at most 15 bytes plus ".mgmt").
        let longest = self.rundir.join("ovs-vswitchd.4194304.ctl");
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(Error::Invalid(format!(
                "run directory {} is too long for unix sockets",
                self.rundir.display()
            )));
        }
        std::fs::create_dir(&self.rundir).map_err(|source| Error::Io {
            what: format!("mkdir {}", self.rundir.display()),
            source,
        })?;
        let db = self.rundir.join("conf.db");
        run(
            "ovsdb-tool",
            ["create".as_ref(), db.as_os_str(), VSWITCH_SCHEMA.as_ref()],
        )?;
        self.start_ovsdb()?;
        let mut init = vec![
            "--no-wait".to_owned(),
            "--".to_owned(),
            "init".to_owned(),
            "--".to_owned(),
            "set".to_owned(),
            "Open_vSwitch".to_owned(),
            ".".to_owned(),
            format!("external_ids:system-id={}", self.name),
            format!("external_ids:hostname={}", self.name),
        ];
        for (k, v) in &opts.other_config {
            init.push(format!("other_config:{k}={v}"));
        }
        self.ovs_vsctl(&init.iter().map(String::as_str).collect::<Vec<_>>())?;
        if opts.vswitchd {
            self.start_vswitchd()?;
        }
        Ok(())
    }

    /// The name given to [`Chassis::start`] (OVS `system-id`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The chassis' network namespace.
    pub fn netns(&self) -> &Netns {
        self.netns.as_ref().expect("namespace lives until drop")
    }

    /// The private run directory (`OVS_RUNDIR`): database, sockets, pidfiles and logs.
    pub fn rundir(&self) -> &Path {
        &self.rundir
    }

    /// Path of the database's unix socket.
    pub fn db_socket(&self) -> PathBuf {
        self.rundir.join("db.sock")
    }

    /// OVSDB remote of this chassis, e.g. `unix:/tmp/wyt1c0/db.sock`.
    pub fn db_endpoint(&self) -> String {
        format!("unix:{}", self.db_socket().display())
    }

    /// The database file.
    pub fn db_file(&self) -> PathBuf {
        self.rundir.join("conf.db")
    }

    /// The OpenFlow management socket of `bridge` (what a controller in the root namespace
    /// connects to).
    pub fn mgmt_socket(&self, bridge: &str) -> PathBuf {
        self.rundir.join(format!("{bridge}.mgmt"))
    }

    /// Starts `program` in the namespace: detached (it returns once the daemon is up), or, for
    /// a tied chassis, as a child of this process that dies with it; then the caller waits
    /// until it is up ([`Chassis::start_ovsdb`], [`Chassis::start_vswitchd`]). Returns the
    /// tied child's PID.
    fn daemon(&self, program: &str, args: &[String]) -> Result<Option<u32>> {
        let d = self.rundir.display().to_string();
        let mut c = Command::new("ip");
        // `ip netns exec` and `env` exec in place: the daemon keeps the child's PID.
        c.args(["netns", "exec", self.netns().name(), "env"])
            .arg(format!("OVS_RUNDIR={d}"))
            .arg(format!("OVS_LOGDIR={d}"))
            .arg(format!("OVS_DBDIR={d}"))
            .arg(format!("OVS_SYSCONFDIR={d}"))
            .arg(program)
            .args(args)
            .arg(format!("--pidfile={d}/{program}.pid"))
            .arg(format!("--log-file={d}/{program}.log"))
            .args(["-vconsole:off", "--no-chdir"]);
        if !self.tied {
            c.arg("--detach");
            return output(&mut c).map(|_| None);
        }
        use std::os::unix::process::CommandExt;
        let console = self.rundir.join(format!("{program}.console"));
        let io = |what: String| move |source| Error::Io { what, source };
        let out = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&console)
            .map_err(io(format!("open {}", console.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("dup {}", console.display())))?;
        c.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let line = format!("{c:?}");
        let child = cmd::spawn_tied(c).map_err(|source| Error::Spawn { cmd: line, source })?;
        // Reaped when stopped (`cmd::kill_pid`), like the detached daemons this process
        // is the subreaper of.
        Ok(Some(child.id()))
    }

    /// Waits until `ready` holds for the tied daemon `pid`, or fails if it exits first.
    fn wait_up(&self, program: &str, pid: u32, mut ready: impl FnMut() -> bool) -> Result<()> {
        let mut died = false;
        let up = cmd::wait_until(Duration::from_secs(30), || {
            died = !cmd::alive(pid);
            died || ready()
        });
        if up && !died {
            return Ok(());
        }
        let log =
            std::fs::read_to_string(self.rundir.join(format!("{program}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        Err(Error::Timeout(format!(
            "{program} of chassis {} {}; its log ends: {}",
            self.name,
            if died { "exited" } else { "did not come up" },
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )))
    }

    fn pid_of(&self, program: &str) -> Option<u32> {
        cmd::read_pidfile(&self.rundir.join(format!("{program}.pid"))).filter(|p| cmd::alive(*p))
    }

    fn stop(&self, program: &str) {
        if let Some(pid) = self.pid_of(program) {
            // Only a process whose command line names our run dir is ours.
            cmd::kill_pid(pid, &self.rundir.display().to_string());
        }
    }

    /// PID of the running `ovsdb-server`, if any.
    pub fn ovsdb_pid(&self) -> Option<u32> {
        self.pid_of("ovsdb-server")
    }

    /// PID of the running `ovs-vswitchd`, if any.
    pub fn vswitchd_pid(&self) -> Option<u32> {
        self.pid_of("ovs-vswitchd")
    }

    /// Starts `ovsdb-server` on the existing database (also after [`Chassis::stop_ovsdb`]).
    pub fn start_ovsdb(&self) -> Result<()> {
        let d = self.rundir.display();
        let tied = self.daemon(
            "ovsdb-server",
            &[
                format!("{d}/conf.db"),
                format!("--remote=punix:{d}/db.sock"),
                "--remote=db:Open_vSwitch,Open_vSwitch,manager_options".to_owned(),
            ],
        )?;
        match tied {
            // Up once its socket accepts connections (a stale socket file refuses them).
            Some(pid) => self.wait_up("ovsdb-server", pid, || {
                std::os::unix::net::UnixStream::connect(self.db_socket()).is_ok()
            }),
            None => Ok(()),
        }
    }

    /// Kills `ovsdb-server` (SIGTERM, then SIGKILL) and waits until it is gone.
    pub fn stop_ovsdb(&self) {
        self.stop("ovsdb-server");
    }

    /// Starts `ovs-vswitchd`; returns once it is up.
    pub fn start_vswitchd(&self) -> Result<()> {
        let Some(pid) = self.daemon("ovs-vswitchd", &[self.db_endpoint()])? else {
            return Ok(());
        };
        // Up, as `--detach` would have said, once it applied the database's configuration (its
        // bridges and their OpenFlow sockets exist): `ovs-vsctl` without `--no-wait` returns
        // when ovs-vswitchd has reconfigured after a change, here one that names this process
        // and the attempt (an unchanged value would not wait).
        let mut attempt = 0;
        self.wait_up("ovs-vswitchd", pid, || {
            attempt += 1;
            cmd::run(
                "ovs-vsctl",
                [
                    format!("--db={}", self.db_endpoint()),
                    "--timeout=5".to_owned(),
                    "set".to_owned(),
                    "Open_vSwitch".to_owned(),
                    ".".to_owned(),
                    format!("external_ids:testbed-vswitchd={pid}.{attempt}"),
                ],
            )
            .is_ok()
        })
    }

    /// Stops `ovs-vswitchd` by PID.
    pub fn stop_vswitchd(&self) {
        self.stop("ovs-vswitchd");
    }

    /// Runs `ovs-vsctl` against this chassis' database.
    pub fn ovs_vsctl(&self, args: &[&str]) -> Result<String> {
        let db = format!("--db={}", self.db_endpoint());
        let mut all = vec![db.as_str(), "--timeout=20"];
        all.extend_from_slice(args);
        run("ovs-vsctl", all)
    }

    /// Runs `ovs-ofctl` with this chassis' run dir, so bridge names find their `.mgmt` socket.
    /// `-O OpenFlow13` is added unless `args` choose a version.
    pub fn ovs_ofctl(&self, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ovs-ofctl");
        c.env("OVS_RUNDIR", &self.rundir);
        if !args
            .iter()
            .any(|a| *a == "-O" || a.starts_with("--protocols"))
        {
            c.args(["-O", "OpenFlow13"]);
        }
        c.args(args);
        output(&mut c)
    }

    /// Runs `ovs-appctl` against this chassis' `ovs-vswitchd`.
    pub fn ovs_appctl(&self, args: &[&str]) -> Result<String> {
        self.appctl("ovs-vswitchd", args)
    }

    /// Runs `ovs-appctl` against this chassis' `ovsdb-server` (e.g. `ovsdb-server/reconnect`,
    /// which drops every client connection).
    pub fn ovsdb_appctl(&self, args: &[&str]) -> Result<String> {
        self.appctl("ovsdb-server", args)
    }

    /// The daemons keep OVS' default control socket, `<rundir>/<daemon>.<pid>.ctl`, which
    /// `ovs-appctl -t <daemon>` finds through the pidfile in `OVS_RUNDIR` — so a plain
    /// `ovs-appctl` with `OVS_RUNDIR` set (as `wyvern lab exec` runs it) works too.
    fn appctl(&self, daemon: &str, args: &[&str]) -> Result<String> {
        let mut c = Command::new("ovs-appctl");
        c.env("OVS_RUNDIR", &self.rundir)
            .args(["-t", daemon])
            .args(args);
        output(&mut c)
    }

    /// Runs `ovsdb-tool args... <conf.db>`; e.g. `transact` to change the database while
    /// `ovsdb-server` is stopped.
    pub fn ovsdb_tool(&self, args: &[&str]) -> Result<String> {
        let (cmd, rest) = args
            .split_first()
            .ok_or_else(|| Error::Invalid("ovsdb_tool needs a command".into()))?;
        let db = self.db_file();
        let mut c = Command::new("ovsdb-tool");
        c.arg(cmd).arg(db).args(rest);
        output(&mut c)
    }

    /// Adds a userspace bridge: `datapath_type=netdev`, `fail_mode=secure`, OpenFlow 1.0, 1.3
    /// and 1.5.
    pub fn add_bridge(&self, bridge: &str) -> Result<()> {
        self.ovs_vsctl(&[
            "--",
            "add-br",
            bridge,
            "--",
            "set",
            "Bridge",
            bridge,
            "datapath_type=netdev",
            "fail_mode=secure",
            "protocols=OpenFlow10,OpenFlow13,OpenFlow15",
        ])
        .map(drop)
    }

    /// Waits until `f` holds, polling every 10 ms.
    pub fn wait_until(&self, timeout: Duration, f: impl FnMut() -> bool) -> Result<()> {
        if cmd::wait_until(timeout, f) {
            Ok(())
        } else {
            Err(Error::Timeout(format!(
                "condition on chassis {}",
                self.name
            )))
        }
    }
}

impl Drop for Chassis {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop_vswitchd();
        self.stop_ovsdb();
        drop(self.netns.take());
        if let Err(e) = std::fs::remove_dir_all(&self.rundir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.rundir.display(), "cannot remove run dir: {e}");
        }
    }
}
