//! Test support: a real etcd cluster (Debian `etcd-server`, `/usr/bin/etcd`) of 1 or 3 members.
//!
//! Every member listens on free loopback ports and keeps its data in a private temporary directory.
//! Members are started as child processes and stopped by PID: [`EtcdCluster`] kills and reaps every
//! member and removes its directory when dropped, also while a test unwinds from a panic. Tests can kill a
//! member (or the current leader) and restart it on the same ports and data directory.
//!
//! It is a crate of its own so that tests of any crate (store, api, agent) can add it as a
//! dev-dependency without pulling test code into a library. `wyvern lab` starts its members with
//! the same command line ([`MemberSpec`]) and free ports ([`free_port`]), as daemons of its own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions, ConnectOptions};

/// The etcd binary, overridable with `WYVERN_ETCD_BIN`.
const DEFAULT_ETCD: &str = "/usr/bin/etcd";
/// How long a (re)started cluster may take to elect a leader and answer: a hang guard (the wait
/// ends as soon as the cluster is healthy), minutes so that a loaded machine never trips it.
const HEALTHY_WITHIN: Duration = Duration::from_secs(120);

/// Fixture failures.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("cannot run etcd: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("etcd member {member} exited early ({status}); its log:\n{log}")]
    Exited {
        member: usize,
        status: std::process::ExitStatus,
        log: String,
    },
    #[error("etcd cluster not healthy within {0:?}: {1}")]
    Unhealthy(Duration, String),
    #[error("no member {0}")]
    NoMember(usize),
    #[error("etcd client: {0}")]
    Client(#[from] etcd_client::Error),
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    process: Option<Child>,
}

/// A running etcd cluster; dropping it kills every member and deletes the data.
pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
    dir: tempfile::TempDir,
}

/// Ports are taken from below Linux's ephemeral range (32768 and up): a port the kernel picked for
/// some outgoing connection could otherwise be taken by the time etcd binds it, or after a restart.
const PORTS: std::ops::Range<u32> = 20_000..32_000;
/// How many times a cluster start is tried again when a port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A loopback port that is free now (below the ephemeral range); each process walks the range
/// from its own starting point.
pub fn free_port() -> std::io::Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let span = u64::from(PORTS.end - PORTS.start);
    let base = u64::from(std::process::id()).wrapping_mul(2_654_435_761);
    for _ in 0..span {
        let offset = (base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))) % span;
        let port = u16::try_from(u64::from(PORTS.start) + offset).unwrap_or(u16::MAX);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no free loopback port",
    ))
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader and serves linearizable reads.
    ///
    /// A member is also killed when the thread that started it exits (so a killed test process leaves
    /// no etcd behind): start and restart members from the test's own thread or a runtime worker, not
    /// from a short-lived thread.
    pub async fn start(size: usize) -> Result<Self, FixtureError> {
        let mut attempt = 1;
        loop {
            match Self::start_once(size).await {
                Err(FixtureError::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(size: usize) -> Result<Self, FixtureError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let token = format!(
            "wyvern-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new().prefix(&token).tempdir()?;
        let mut members = Vec::with_capacity(size);
        for i in 0..size {
            members.push(Member {
                name: format!("m{i}"),
                client_port: free_port()?,
                peer_port: free_port()?,
                process: None,
            });
        }
        let mut cluster = Self {
            members,
            token,
            dir,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> Result<(), FixtureError> {
        let initial = initial_cluster(self.members.iter().map(|m| (m.name.as_str(), m.peer_port)));
        let dir = self.dir.path().to_path_buf();
        let m = self.members.get_mut(i).ok_or(FixtureError::NoMember(i))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path(&dir, &m.name))?;
        let mut command = MemberSpec {
            name: &m.name,
            client_port: m.client_port,
            peer_port: m.peer_port,
            data_dir: &dir.join(&m.name),
            initial_cluster: &initial,
            token: &self.token,
        }
        .command();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // Dies with this process, however it ends (a killed test run included).
        let child = testbed::spawn_tied(command)?;
        m.process = Some(child);
        Ok(())
    }

    /// The client endpoints (`127.0.0.1:PORT`) of all members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The client endpoint of member `i`.
    pub fn endpoint(&self, i: usize) -> Result<String, FixtureError> {
        let m = self.members.get(i).ok_or(FixtureError::NoMember(i))?;
        Ok(format!("127.0.0.1:{}", m.client_port))
    }

    /// A `store::open` spelling for this cluster with key prefix `prefix` (e.g. `/test`).
    pub fn spec(&self, prefix: &str) -> String {
        format!("etcd://{}{}", self.endpoints().join(","), prefix)
    }

    /// How many members there are.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// A client connected to every member.
    pub async fn client(&self) -> Result<Client, FixtureError> {
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        Ok(Client::connect(self.endpoints(), Some(options)).await?)
    }

    /// The index of the current leader, asked of the running members.
    pub async fn leader(&self) -> Result<usize, FixtureError> {
        let running = self.running();
        let endpoints = running
            .iter()
            .map(|&i| self.endpoint(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(running[leader_among(&endpoints).await?])
    }

    /// Indices of the members that are running.
    pub fn running(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].process.is_some())
            .collect()
    }

    /// The PIDs of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref().map(Child::id))
            .collect()
    }

    /// Kills member `i` with SIGKILL and reaps it.
    pub fn kill(&mut self, i: usize) -> Result<(), FixtureError> {
        let m = self.members.get_mut(i).ok_or(FixtureError::NoMember(i))?;
        if let Some(mut child) = m.process.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Kills the current leader; returns its index.
    pub async fn kill_leader(&mut self) -> Result<usize, FixtureError> {
        let leader = self.leader().await?;
        self.kill(leader)?;
        Ok(leader)
    }

    /// Restarts a stopped member on its old ports and data, and waits until the cluster is healthy.
    pub async fn restart(&mut self, i: usize) -> Result<(), FixtureError> {
        if self
            .members
            .get(i)
            .ok_or(FixtureError::NoMember(i))?
            .process
            .is_none()
        {
            self.spawn(i)?;
        }
        self.wait_healthy().await
    }

    /// Compacts the key-value history up to `revision`.
    pub async fn compact(&self, revision: i64) -> Result<(), FixtureError> {
        let mut client = self.client().await?;
        client
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await?;
        Ok(())
    }

    /// Waits until every running member knows a leader and answers a linearizable read.
    pub async fn wait_healthy(&mut self) -> Result<(), FixtureError> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        loop {
            self.check_alive()?;
            let mut problem = None;
            for i in self.running() {
                if let Err(e) = member_ready(&self.endpoint(i)?).await {
                    problem = Some(format!("member {i}: {e}"));
                    break;
                }
            }
            let Some(problem) = problem else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(FixtureError::Unhealthy(HEALTHY_WITHIN, problem));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Fails if a member that should run has exited.
    fn check_alive(&mut self) -> Result<(), FixtureError> {
        for (i, m) in self.members.iter_mut().enumerate() {
            let Some(child) = m.process.as_mut() else {
                continue;
            };
            if let Some(status) = child.try_wait()? {
                m.process = None;
                let log =
                    std::fs::read_to_string(log_path(self.dir.path(), &m.name)).unwrap_or_default();
                return Err(FixtureError::Exited {
                    member: i,
                    status,
                    log,
                });
            }
        }
        Ok(())
    }

    /// The directory holding the members' data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One member of a new cluster on loopback ports.
#[derive(Debug, Clone, Copy)]
pub struct MemberSpec<'a> {
    /// Its name (unique in the cluster).
    pub name: &'a str,
    /// Port for clients.
    pub client_port: u16,
    /// Port for the other members.
    pub peer_port: u16,
    /// Its data directory (kept across restarts).
    pub data_dir: &'a Path,
    /// Every member: see [`initial_cluster`].
    pub initial_cluster: &'a str,
    /// The cluster's token (unique per cluster).
    pub token: &'a str,
}

impl MemberSpec<'_> {
    /// The member's command (the etcd binary is `WYVERN_ETCD_BIN`, default `/usr/bin/etcd`),
    /// logging to stderr; the caller sets up stdio. A restarted member finds its cluster in its
    /// data directory, so the same command starts it again.
    pub fn command(&self) -> Command {
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let bin = std::env::var("WYVERN_ETCD_BIN").unwrap_or_else(|_| DEFAULT_ETCD.into());
        let mut command = Command::new(bin);
        command
            .arg("--name")
            .arg(self.name)
            .arg("--data-dir")
            .arg(self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", self.initial_cluster])
            .args(["--initial-cluster-token", self.token])
            .args(["--initial-cluster-state", "new"])
            // Failure detection fast enough for short leader-failure tests, yet ten heartbeats
            // per election timeout (etcd's advice), so that a loaded 2-core machine does not
            // cause spurious elections.
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        command
    }
}

/// etcd's `--initial-cluster` for members given by name and peer port.
pub fn initial_cluster<'a>(members: impl IntoIterator<Item = (&'a str, u16)>) -> String {
    members
        .into_iter()
        .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.log"))
}

/// Connects to one member only.
async fn member_client(endpoint: &str) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    Client::connect([endpoint], Some(options)).await
}

/// A member's own id and the leader it knows (0: none).
async fn member_status(endpoint: &str) -> Result<(u64, u64), etcd_client::Error> {
    let status = member_client(endpoint).await?.status().await?;
    let id = status.header().map(|h| h.member_id()).unwrap_or(0);
    Ok((id, status.leader()))
}

/// The index in `endpoints` (`127.0.0.1:PORT` of each member) of the member that leads the
/// cluster, as the members that answer know it (members that are down are passed over); an
/// error while no answering member knows a leader that is among them.
pub async fn leader_among(endpoints: &[String]) -> Result<usize, FixtureError> {
    let mut last = String::from("no member answers");
    for endpoint in endpoints {
        match member_status(endpoint).await {
            Ok((_, leader)) if leader != 0 => {
                for (j, other) in endpoints.iter().enumerate() {
                    if member_status(other).await.ok().map(|s| s.0) == Some(leader) {
                        return Ok(j);
                    }
                }
                last = format!("leader {leader:x} is not an answering member");
            }
            Ok(_) => last = format!("member {endpoint} sees no leader"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(FixtureError::Unhealthy(Duration::ZERO, last))
}

/// Whether the member at `endpoint` (`127.0.0.1:PORT`) knows a leader and answers a
/// linearizable read.
pub async fn member_ready(endpoint: &str) -> Result<(), etcd_client::Error> {
    let mut client = member_client(endpoint).await?;
    if client.status().await?.leader() == 0 {
        return Err(etcd_client::Error::Internal("no leader".into()));
    }
    client.get("/health-probe", None).await?;
    Ok(())
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.process.take() {
                // SIGTERM first so that etcd shuts down cleanly; SIGKILL if it lingers.
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the PID of our own unreaped child.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                let deadline = Instant::now() + Duration::from_secs(3);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
