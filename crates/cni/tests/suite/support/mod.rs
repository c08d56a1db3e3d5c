//! Shared helpers of the plugin's integration tests: Wyvern's API in-process on a fresh
//! embedded store, a relay that makes it reachable from inside a test namespace, a
//! small Neutron client, running the real `wyvern-cni` binary, and a chassis' Wyvern agent
//! in-process ([`Agent`]) for tests whose traffic must flow.
//!
//! The plugin runs where the chassis' Open vSwitch runs (its host end must be a link OVS can
//! open), which in these tests is a testbed chassis namespace: it is started with
//! `ip netns exec <chassis> wyvern-cni`. That namespace has its own loopback, so the API —
//! listening on the test's loopback — is relayed into it ([`testbed::Relay`], as the lab does
//! for the plugin). Nothing touches the host's own interfaces.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};

/// The plugin binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wyvern-cni");

/// A Wyvern API server on a fresh embedded store, in this process.
pub struct Server {
    /// `http://127.0.0.1:PORT` (this process' namespace).
    pub base: String,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Starts the server (no authentication: requests without headers are admin).
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let spec = format!("embedded:{}", dir.path().join("wyvern.redb").display());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let (ready, started) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("server runtime");
            let served = rt.block_on(async move {
                let store = store::open(&spec).expect("open the store");
                let listener = tokio::net::TcpListener::from_std(listener)?;
                let _ = ready.send(());
                tokio::select! {
                    s = api::serve(listener, store, api::ApiConfig::default()) => s,
                    _ = stopped => Ok(()),
                }
            });
            if let Err(e) = served {
                eprintln!("test API server stopped: {e}");
            }
        });
        started.recv().expect("the API server started");
        Server {
            base: format!("http://{addr}"),
            addr,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small Neutron client for setting up the tests' networks, subnets and ports (as admin).
pub struct Rest {
    base: String,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Rest {
    /// A client of `base`.
    pub fn new(base: &str) -> Rest {
        Rest {
            base: base.to_owned(),
            http: reqwest::Client::new(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("client runtime"),
        }
    }

    /// `method /v2.0/path` with `body`; the answer, which must be a success.
    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/v2.0/{path}", self.base);
        self.rt.block_on(async {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(b) = &body {
                req = req.json(b);
            }
            let resp = req.send().await.expect("API request");
            let status = resp.status();
            let text = resp.text().await.expect("API body");
            assert!(status.is_success(), "{method} {url}: {status}: {text}");
            if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).expect("JSON")
            }
        })
    }

    /// Creates a `singular` in `collection` (URL segment); returns it.
    pub fn create(&self, collection: &str, singular: &str, attrs: Value) -> Value {
        let v = self.call(
            reqwest::Method::POST,
            collection,
            Some(json!({ singular: attrs })),
        );
        v[singular].clone()
    }

    /// A network with `mtu` and an IPv4 subnet `10.<n>.0.0/24` (gateway `.1`, DNS server `.2`,
    /// a host route to `192.168.<n>.0/24` via `.254`), plus, if `v6`, `fd<n>::/64` (gateway
    /// `::1`). Returns (network, [subnets]).
    pub fn network(&self, n: u8, mtu: u32, v6: bool) -> (Value, Vec<Value>) {
        let net = self.create(
            "networks",
            "network",
            json!({"name": format!("pods-{n}"), "mtu": mtu}),
        );
        let id = net["id"].as_str().unwrap();
        let mut subnets = vec![self.create(
            "subnets",
            "subnet",
            json!({
                "network_id": id, "ip_version": 4, "cidr": format!("10.{n}.0.0/24"),
                "gateway_ip": format!("10.{n}.0.1"),
                "dns_nameservers": [format!("10.{n}.0.2")],
                "host_routes": [{"destination": format!("192.168.{n}.0/24"),
                                 "nexthop": format!("10.{n}.0.254")}]
            }),
        )];
        if v6 {
            subnets.push(self.create(
                "subnets",
                "subnet",
                json!({
                    "network_id": id, "ip_version": 6, "cidr": format!("fd{n:02x}::/64"),
                    "gateway_ip": format!("fd{n:02x}::1")
                }),
            ));
        }
        (net, subnets)
    }

    /// A port on `network` tagged `tags`.
    pub fn port(&self, network: &Value, tags: &[&str]) -> Value {
        self.port_with(network, json!({}), tags)
    }

    /// A port on `network` with the attributes `extra` (e.g. `fixed_ips`), tagged `tags`.
    pub fn port_with(&self, network: &Value, extra: Value, tags: &[&str]) -> Value {
        let mut attrs = json!({"network_id": network["id"], "name": "pod"});
        for (k, v) in extra.as_object().expect("an object") {
            attrs[k] = v.clone();
        }
        let port = self.create("ports", "port", attrs);
        let id = port["id"].as_str().unwrap();
        self.call(
            reqwest::Method::PUT,
            &format!("ports/{id}/tags"),
            Some(json!({ "tags": tags })),
        );
        self.call(reqwest::Method::GET, &format!("ports/{id}"), None)["port"].clone()
    }
}

/// What one run of the plugin answered.
#[derive(Debug)]
pub struct Answer {
    /// Exit status zero.
    pub ok: bool,
    /// stdout as JSON (`Null` if empty).
    pub doc: Value,
    /// stderr.
    pub stderr: String,
}

impl Answer {
    /// The error code, for a failed run.
    pub fn code(&self) -> u64 {
        self.doc["code"].as_u64().unwrap_or(0)
    }

    /// Asserts that the run failed with `code` and details that mention `needle`.
    pub fn assert_failed(&self, code: u64, needle: &str) {
        assert!(!self.ok, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        let details = self.doc["details"].as_str().unwrap_or("");
        assert!(details.contains(needle), "{needle:?} not in {self:?}");
    }
}

/// Runs the plugin (inside network namespace `netns` if given) with `env` and `stdin`.
pub fn invoke(netns: Option<&str>, env: &[(&str, &str)], stdin: &Value) -> Answer {
    let mut c = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, BIN]);
            c
        }
        None => Command::new(BIN),
    };
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("start wyvern-cni");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wyvern-cni ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let doc = if stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"))
    };
    let answer = Answer {
        ok: out.status.success(),
        doc,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !answer.ok {
        assert!(
            answer.doc["code"].is_u64() && answer.doc["msg"].is_string(),
            "a failure without an error document: {answer:?}"
        );
    }
    answer
}

/// Runs a command, returns stdout; panics with stderr on failure.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The links of namespace `netns` (by name) as `ip -json addr` shows them.
pub fn links_in(netns: &str) -> Vec<Value> {
    serde_json::from_str(&sh("ip", &["-n", netns, "-json", "addr", "show"])).expect("ip -json")
}

/// The link called `name` in `netns`, if any.
pub fn link_in(netns: &str, name: &str) -> Option<Value> {
    links_in(netns).into_iter().find(|l| l["ifname"] == name)
}

/// A Wyvern agent for a chassis, in this process on its own runtime (as the agent's own
/// end-to-end tests run it): it creates the chassis' `br-int`, registers the chassis with
/// the API at `server` and programs the bridge for the VIFs on it. Stops when dropped.
pub struct Agent {
    rt: Option<tokio::runtime::Runtime>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Starts the agent of `chassis` (chassis id: its name), talking to the API at `server`
    /// (`http://…` in this process' namespace); OVSDB and OpenFlow through the chassis' unix
    /// sockets.
    pub fn start(server: &str, chassis: &testbed::Chassis) -> Agent {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("agent runtime");
        let cfg = agent::AgentConfig {
            server: server.to_owned(),
            chassis: chassis.name().to_owned(),
            ovsdb: chassis.db_endpoint(),
            ovs_rundir: chassis.rundir().to_path_buf(),
            // No underlay: the tunnel port exists, nothing uses it.
            tunnel_ip: std::net::Ipv4Addr::new(172, 31, 9, 1).into(),
            encap: chassis::Encap::Geneve,
            bridge: "br-int".into(),
            datapath_type: "netdev".into(),
            metrics_listen: None,
            bridge_mappings: Vec::new(),
            gateway: false,
        };
        let task = rt.spawn(async move {
            if let Err(e) = agent::run(cfg).await {
                eprintln!("agent stopped: {e}");
            }
        });
        Agent { rt: Some(rt), task }
    }

    /// False once the agent has stopped (it runs until dropped unless it fails).
    pub fn running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            // Ends the agent's tasks (and their connections); nothing of it outlives this.
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
