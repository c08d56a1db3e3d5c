//! `kill -9` of the server during a stream of writes, then a restart on the same store file: every
//! write the server acknowledged is still there.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server;
use server::ServerProcess;

/// A hang guard, not a time limit: how long the writes may take before the test gives up.
const HANG_GUARD: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let _alone = crate::support::alone_async().await;
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let client = reqwest::Client::new();
    let mut server = ServerProcess::start(&store, &[]);
    server.wait_ready(&client).await;
    // More networks than Neutron's default quota of 100: the admin project's limit is lifted.
    let lifted = client
        .put(format!("{}/v2.0/quotas/admin", server.base))
        .json(&json!({"quota": {"network": -1}}))
        .send()
        .await
        .expect("quota update");
    assert_eq!(lifted.status().as_u16(), 200, "lifting the network quota");

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
    // Let the writes flow, then kill the server in the middle of them: once 300 are acknowledged
    // (a condition; the guard only ends a server that stopped acknowledging altogether).
    let started = Instant::now();
    while acked.lock().unwrap().len() < 300 {
        assert!(
            writers.iter().any(|w| !w.is_finished()),
            "every writer stopped after {} acknowledged writes",
            acked.lock().unwrap().len()
        );
        assert!(
            started.elapsed() < HANG_GUARD,
            "only {} writes acknowledged in {HANG_GUARD:?}",
            acked.lock().unwrap().len()
        );
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

    let server = ServerProcess::start(&store, &[]);
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
