//! The server's listening socket queues a reconnection storm: its backlog (what `ss` shows as
//! the listening socket's Send-Q) is the kernel's cap, not the 128 that dropped connections of
//! 1 000 clients connecting at once (each dropped one waits a second before it tries again).

use std::process::Command;

use crate::server::ServerProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listen_backlog_holds_a_reconnection_storm() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let server = ServerProcess::start(&store, &[]);
    server.wait_ready(&reqwest::Client::new()).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // State, Recv-Q, Send-Q (the backlog of a listening socket), local and peer address.
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port}: {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        backlog >= somaxconn.min(4096) && backlog > 128,
        "backlog {backlog} (kernel cap {somaxconn}): {text}"
    );
}
