//! What the agent's end-to-end tests share: an in-process server on the embedded store, its API
//! as admin, an agent of a chassis (in this process, on its task), its metrics, and VMs plugged
//! into `br-int`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testbed::{Chassis, Host, HostOpts};

pub async fn server() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(&format!(
        "embedded:{}",
        dir.path().join("nb.redb").display()
    ))
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, store, api::ApiConfig::default()));
    (base, dir)
}

pub async fn call(method: reqwest::Method, url: String, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .request(method, &url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{url}: {status} {answer}");
    answer
}

pub async fn post(base: &str, path: &str, key: &str, body: Value) -> Value {
    let url = format!("{base}{path}");
    call(reqwest::Method::POST, url, json!({ key: body })).await[key].clone()
}

pub fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

/// Starts the agent of `chassis`; returns its task and where it serves its metrics.
pub fn start_agent(base: &str, chassis: &Chassis) -> (tokio::task::JoinHandle<()>, SocketAddr) {
    // A free port for the metrics (closed again before the agent binds it).
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = agent::AgentConfig {
        server: base.to_string(),
        chassis: chassis.name().to_string(),
        ovsdb: chassis.db_endpoint(),
        ovs_rundir: chassis.rundir().to_path_buf(),
        tunnel_ip: "172.31.9.1".parse::<IpAddr>().unwrap(),
        encap: chassis::Encap::Geneve,
        bridge: "br-int".into(),
        datapath_type: "netdev".into(),
        metrics_listen: Some(metrics),
        bridge_mappings: Vec::new(),
        gateway: false,
    };
    let task = tokio::spawn(async move {
        if let Err(e) = agent::run(cfg).await {
            eprintln!("agent stopped: {e}");
        }
    });
    (task, metrics)
}

/// The agent's metrics, by name (without labels).
pub async fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    let Ok(resp) = reqwest::get(format!("http://{addr}/metrics")).await else {
        return HashMap::new();
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let name = name.split('{').next()?.to_string();
            Some((name, value.trim().parse().ok()?))
        })
        .collect()
}

/// Polls `f` every 100 ms until it holds; panics with `what` and the last state after `timeout`.
pub async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut f: impl AsyncFnMut() -> (bool, T),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, state) = f().await;
        if ok {
            return state;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last state: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Tells when an agent has settled: in sync with what it has heard so far is not enough, as
/// topology still on its way (a subnet's, a neighbour port's) changes the switch again. Settled
/// means in sync, and the switch state the same as at the previous look, a second earlier.
// Not every test binary that includes this module waits for a settled agent.
#[allow(dead_code)]
pub struct Settling<T> {
    last: Option<T>,
}

#[allow(dead_code)]
impl<T: PartialEq + Clone> Settling<T> {
    pub fn new() -> Self {
        Self { last: None }
    }

    /// Whether the agent has settled, given whether it is in sync now and the switch state `now`;
    /// waits a second before answering no (the caller looks again).
    pub async fn settled(&mut self, in_sync: bool, now: &T) -> bool {
        let settled = in_sync && self.last.as_ref() == Some(now);
        self.last = in_sync.then(|| now.clone());
        if !settled {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        settled
    }
}

/// A VM for `port` on `chassis`, with the port's address, plugged into br-int.
pub async fn vm(chassis: &Chassis, port: &Value) -> Host {
    let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
    let mac = port["mac_address"].as_str().unwrap();
    let host = Host::create(
        chassis,
        &HostOpts {
            ip: Some(format!("{ip}/24")),
            mac: Some(mac.into()),
            mtu: Some(1400),
            ..HostOpts::default()
        },
    )
    .unwrap();
    let client = ovsdb::Client::connect(
        &chassis.db_endpoint().parse().unwrap(),
        ovsdb::ClientOptions::default(),
    )
    .await
    .unwrap();
    chassis::plug_vif(&client, "br-int", host.port(), &id(port), Some(mac))
        .await
        .unwrap();
    host
}
