//! The agent's own calls fail over with its replica: a chassis registered through server A keeps its
//! lease alive through server B once A is dead (the lease is etcd's, so any server can renew it), and
//! binding reports and port lookups go to B.

use std::time::{Duration, Instant};

use agent::Server;
use etcd_fixture::EtcdCluster;
use nb_sync::Servers;
use serde_json::{Value, json};

/// A server's runtime: shutting it down ends the server as a killed process ends (its listener and
/// connections close at once); so does dropping it, also while a failed test unwinds.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl OwnRuntime {
    fn kill(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server with a runtime of its own.
fn own_server(spec: &str) -> (String, OwnRuntime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let spec = spec.to_string();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let store = store::open(&spec).unwrap();
        let _ = api::serve(listener, store, api::ApiConfig::default()).await;
    });
    (base, OwnRuntime(Some(runtime)))
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_bindings_and_lookups_move_to_the_surviving_server() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let spec = cluster.spec("/wyvern-agent-failover");
    let (a, mut runtime_a) = own_server(&spec);
    let (b, _runtime_b) = own_server(&spec);
    let servers = Servers::parse(&format!("{a},{b}"));
    let server = Server::new(servers.clone());

    let lease = server
        .register(
            "fo-chassis",
            "192.0.2.10".parse().unwrap(),
            "geneve",
            &[],
            false,
        )
        .await
        .expect("registration through A");
    let net = post(&b, "/v2.0/networks", json!({"network": {"name": "n"}})).await;
    let net_id = net["network"]["id"].as_str().unwrap();
    let body = json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": "10.9.0.0/24"}});
    post(&b, "/v2.0/subnets", body).await;
    let port = post(&b, "/v2.0/ports", json!({"port": {"network_id": net_id}})).await;
    let port_id = port["port"]["id"].as_str().unwrap();

    runtime_a.kill();
    let killed = Instant::now();
    // The first call finds A dead and moves the agent; the retry goes to B.
    assert!(server.heartbeat("fo-chassis", lease).await.is_err());
    assert_eq!(servers.current(), b);
    assert!(
        server
            .heartbeat("fo-chassis", lease)
            .await
            .expect("heartbeat through B"),
        "the lease granted through A is renewed through B"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        server.port_network(port_id).await.unwrap().as_deref(),
        Some(net_id)
    );
    server.bind(port_id, "fo-chassis", true).await.unwrap();
    let shown: Value = reqwest::get(format!("{b}/v2.0/ports/{port_id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["port"]["status"], "ACTIVE");
    assert_eq!(shown["port"]["binding:host_id"], "fo-chassis");
}
