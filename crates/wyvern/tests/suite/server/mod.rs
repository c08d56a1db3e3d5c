//! A `wyvern server` process for end-to-end tests: started on a free loopback port, killed (by
//! its PID) when dropped, and by the kernel if the test process dies first.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server process, killed when dropped.
pub struct ServerProcess {
    child: Child,
    pub base: String,
}

impl ServerProcess {
    /// `wyvern server` on `store` (`embedded:PATH`), on a free loopback port, with `extra`
    /// arguments.
    pub fn start(store: &str, extra: &[&str]) -> Self {
        Self::start_logging(store, extra, Stdio::null())
    }

    /// Like [`ServerProcess::start`], the server's log (its standard error) going to `log`.
    pub fn start_logging(store: &str, extra: &[&str], log: impl Into<Stdio>) -> Self {
        let port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_wyvern"));
        command
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                store,
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log);
        // Dies with the test process, however it ends (a killed test run included).
        let child = testbed::spawn_tied(command).expect("start wyvern server");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Waits until the server answers HTTP (minutes at most: a hang guard, not a time limit).
    pub async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if client.get(&self.base).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not come up");
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server with SIGKILL.
    pub fn kill9(&mut self) {
        // SIGKILL by PID: no chance to flush anything.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
