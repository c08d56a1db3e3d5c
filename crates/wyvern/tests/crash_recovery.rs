//! `kill -9` of the server during a stream of writes, then a restart on the same store file: every
//! write the server acknowledged is still there.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A server process, killed when dropped.
struct ServerProcess {
    child: Child,
    base: String,
}

impl ServerProcess {
    fn start(store: &str) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_wyvern"))
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--store",
                store,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start wyvern server");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn wait_ready(&self, client: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if client.get(&self.base).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("server did not come up");
    }

    fn kill9(&mut self) {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let client = reqwest::Client::new();
    let mut server = ServerProcess::start(&store);
    server.wait_ready(&client).await;

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, base, acked) = (client.clone(), server.base.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let body = json!({"network": {"name": format!("w{w}-{i}")}});
                    let Ok(resp) = client
                        .post(format!("{base}/v2.0/networks"))
                        .json(&body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if resp.status().as_u16() != 201 {
                        return;
                    }
                    let Ok(v) = resp.json::<Value>().await else {
                        return;
                    };
                    acked
                        .lock()
                        .unwrap()
                        .push(v["network"]["id"].as_str().unwrap().to_string());
                }
            })
        })
        .collect();
    // Let the writes flow, then kill the server in the middle of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 300,
        "too few writes before the kill: {}",
        acked.len()
    );

    let server = ServerProcess::start(&store);
    server.wait_ready(&client).await;
    let listed: Value = client
        .get(format!("{}/v2.0/networks?fields=id", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let present: std::collections::HashSet<&str> = listed["networks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| !present.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
}
