//! The controller against the in-memory Kubernetes API (kube-fixture) and Wyvern's API served
//! in-process on an embedded store: pods, services, policies, deletions, restarts and re-lists.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use kube_fixture::KubeApi;
use serde_json::{Value, json};

/// Wyvern's API on a fresh embedded store, on its own thread and runtime.
struct Server {
    base: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let spec = format!("embedded:{}", dir.path().join("wyvern.redb").display());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let store = store::open(&spec).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let _ = ready.send(());
                tokio::select! {
                    r = api::serve(listener, store, api::ApiConfig::default()) => {
                        if let Err(e) = r { eprintln!("server: {e}"); }
                    }
                    _ = stopped => {}
                }
            });
        });
        started.recv().unwrap();
        Server {
            base,
            _dir: dir,
            stop: Some(stop),
            thread: Some(thread),
        }
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

const PROJECT: &str = "k8sproject";

/// Both APIs, a Neutron client and the controller (started and stopped at will).
struct Env {
    kube: KubeApi,
    server: Server,
    http: reqwest::Client,
    controller: Option<tokio::task::JoinHandle<()>>,
    per_namespace: bool,
    /// `--pod-network` and `--pod-subnet`.
    pod_network: Option<(String, Option<String>)>,
}

impl Env {
    fn new() -> Env {
        Env {
            kube: KubeApi::start().unwrap(),
            server: Server::start(),
            http: reqwest::Client::new(),
            controller: None,
            per_namespace: false,
            pod_network: None,
        }
    }

    fn config(&self) -> k8s::Config {
        let mut c = k8s::Config::new(&self.server.base, PROJECT);
        c.cluster_name = "test".into();
        c.network_per_namespace = self.per_namespace;
        if let Some((net, subnet)) = &self.pod_network {
            c.pod_network = Some(net.clone());
            c.pod_subnet = subnet.clone();
        }
        c.resync = Duration::from_secs(3600);
        c
    }

    fn start(&mut self) {
        let client =
            kube::Client::try_from(kube::Config::new(self.kube.url().parse().unwrap())).unwrap();
        let config = self.config();
        self.controller = Some(tokio::spawn(async move {
            if let Err(e) = k8s::run(config, client).await {
                panic!("controller: {e}");
            }
        }));
    }

    /// Stops the controller at once, wherever it is (as a crash would).
    async fn stop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
            let _ = c.await;
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/v2.0/{path}", self.server.base))
            .header("X-Project-Id", PROJECT)
            .header("X-Roles", "admin")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    /// `method` on `path` as an admin of `project`; the answer's body.
    async fn call(&self, method: reqwest::Method, path: &str, project: &str, body: Value) -> Value {
        let r = self
            .http
            .request(method.clone(), format!("{}/v2.0/{path}", self.server.base))
            .header("X-Project-Id", project)
            .header("X-Roles", "admin")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// Creates a `singular` in `collection` as an admin of `project`; its id.
    async fn create(&self, collection: &str, singular: &str, project: &str, body: Value) -> String {
        let made = self
            .call(
                reqwest::Method::POST,
                collection,
                project,
                json!({ singular: body }),
            )
            .await;
        s(&made[singular], "id")
    }

    /// The controller's router.
    async fn router(&self) -> String {
        let routers = self.list("routers?tags=k8s-cluster:test", "routers").await;
        s(&routers[0], "id")
    }

    async fn list(&self, path: &str, key: &str) -> Vec<Value> {
        self.get(path)
            .await
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    async fn ports(&self) -> Vec<Value> {
        self.list("ports?tags=k8s-cluster:test", "ports").await
    }

    async fn port_of(&self, ns: &str, name: &str) -> Option<Value> {
        let p = self
            .list(&format!("ports?tags=k8s-pod:{ns}:{name}"), "ports")
            .await;
        assert!(p.len() <= 1, "two ports for {ns}/{name}");
        p.into_iter().next()
    }

    /// The port of pod `ns`/`name`, once there is one.
    async fn wait_port(&self, ns: &str, name: &str) -> Value {
        eventually(&format!("{ns}/{name}'s port"), || self.port_of(ns, name)).await
    }

    /// The port annotation of pod `ns`/`name`, once it has one.
    async fn annotation(&self, ns: &str, name: &str) -> Value {
        eventually(&format!("{ns}/{name}'s annotation"), || async {
            let pod = self.kube.get("v1", "Pod", ns, name).unwrap();
            pod.pointer("/metadata/annotations/wyvern.io~1port")
                .and_then(Value::as_str)
                .map(|t| serde_json::from_str::<Value>(t).unwrap())
        })
        .await
    }

    async fn sgs(&self) -> Vec<Value> {
        self.list("security-groups?tags=k8s-cluster:test", "security_groups")
            .await
    }

    /// The members of the one pool of each load balancer, by LB name.
    async fn members(&self) -> Vec<(String, Vec<String>)> {
        let mut out = Vec::new();
        for lb in self
            .list("lbaas/loadbalancers?tags=k8s-cluster:test", "loadbalancers")
            .await
        {
            let mut all = Vec::new();
            for pool in self
                .list(
                    &format!("lbaas/pools?loadbalancer_id={}", s(&lb, "id")),
                    "pools",
                )
                .await
            {
                for m in self
                    .list(
                        &format!("lbaas/pools/{}/members", s(&pool, "id")),
                        "members",
                    )
                    .await
                {
                    all.push(format!("{}:{}", s(&m, "address"), m["protocol_port"]));
                }
            }
            all.sort();
            out.push((s(&lb, "name"), all));
        }
        out.sort();
        out
    }

    /// Counts of every kind of object the controller makes.
    async fn counts(&self) -> Vec<(&'static str, usize)> {
        let t = "tags=k8s-cluster:test";
        vec![
            (
                "networks",
                self.list(&format!("networks?{t}"), "networks").await.len(),
            ),
            (
                "subnets",
                self.list(&format!("subnets?{t}"), "subnets").await.len(),
            ),
            (
                "routers",
                self.list(&format!("routers?{t}"), "routers").await.len(),
            ),
            ("ports", self.ports().await.len()),
            ("all ports", self.list("ports", "ports").await.len()),
            ("security_groups", self.sgs().await.len()),
            (
                "rules",
                self.list("security-group-rules", "security_group_rules")
                    .await
                    .len(),
            ),
            (
                "loadbalancers",
                self.list(&format!("lbaas/loadbalancers?{t}"), "loadbalancers")
                    .await
                    .len(),
            ),
            (
                "listeners",
                self.list(&format!("lbaas/listeners?{t}"), "listeners")
                    .await
                    .len(),
            ),
            (
                "pools",
                self.list(&format!("lbaas/pools?{t}"), "pools").await.len(),
            ),
        ]
    }

    fn pod(&self, ns: &str, name: &str, node: &str, labels: Value) -> String {
        let p = self
            .kube
            .create(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox",
                    "ports": [{"name": "http", "containerPort": 8080}]}]}}))
            .unwrap();
        self.kube
            .update_status("v1", "Pod", ns, name, json!({"phase": "Running"}))
            .unwrap();
        s(&p, "/metadata/uid")
    }

    fn node(&self, name: &str, annotations: Value) {
        self.kube
            .create(json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": annotations}}))
            .unwrap();
    }

    fn namespace(&self, name: &str, labels: Value) {
        self.kube
            .create(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": name, "labels": labels}}))
            .unwrap();
    }

    fn slice(&self, ns: &str, name: &str, svc: &str, addrs: &[&str]) {
        let obj = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "namespace": ns,
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": addrs.iter().map(|a| json!({"addresses": [a],
                "conditions": {"ready": true}})).collect::<Vec<_>>()});
        let _ = self
            .kube
            .delete("discovery.k8s.io/v1", "EndpointSlice", ns, name);
        self.kube.create(obj).unwrap();
    }
}

fn s(v: &Value, path: &str) -> String {
    let v = if path.starts_with('/') {
        v.pointer(path)
    } else {
        v.get(path)
    };
    v.and_then(Value::as_str).unwrap_or_default().to_string()
}

/// Polls `f` until it returns `Some`, for at most 20 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the object counts stop changing for a while, and returns them.
async fn settled(env: &Env) -> Vec<(&'static str, usize)> {
    let mut last = env.counts().await;
    let mut same = 0;
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = env.counts().await;
        if now == last {
            same += 1;
            if same >= 8 {
                return now;
            }
        } else {
            same = 0;
            last = now;
        }
    }
    panic!("the controller never settled: {last:?}");
}

fn ips_of(port: &Value) -> Vec<String> {
    port["fixed_ips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| s(f, "ip_address"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_on_two_nodes_get_bound_tagged_annotated_ports() {
    let mut env = Env::new();
    env.node("node-a", json!({}));
    env.node("node-b", json!({"wyvern.io/chassis": "chassis-b"}));
    let ua = env.pod("default", "web-0", "node-a", json!({"app": "web"}));
    let ub = env.pod("default", "web-1", "node-b", json!({"app": "web"}));
    // Not for us: unscheduled, host network, finished.
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pending", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hostnet", "namespace": "default"},
            "spec": {"nodeName": "node-a", "hostNetwork": true,
                     "containers": [{"name": "c", "image": "x"}]}}))
        .unwrap();
    env.pod("default", "done", "node-a", json!({}));
    env.kube
        .update_status(
            "v1",
            "Pod",
            "default",
            "done",
            json!({"phase": "Succeeded"}),
        )
        .unwrap();
    env.start();

    let a = env.wait_port("default", "web-0").await;
    let b = env.wait_port("default", "web-1").await;
    assert_eq!(s(&a, "binding:host_id"), "node-a");
    assert_eq!(s(&b, "binding:host_id"), "chassis-b");
    assert_eq!(s(&a, "device_owner"), "compute:kubernetes");
    assert_eq!(s(&a, "device_id"), ua);
    assert_eq!(s(&b, "device_id"), ub);
    assert_eq!(s(&a, "name"), "default/web-0");
    let tags: Vec<String> = serde_json::from_value(a["tags"].clone()).unwrap();
    for t in [
        format!("k8s-pod-uid:{ua}"),
        "k8s-pod:default:web-0".into(),
        "k8s-cluster:test".into(),
    ] {
        assert!(tags.contains(&t), "{t} in {tags:?}");
    }
    // The CNI's lookup by uid finds it.
    let by_uid = env
        .list(&format!("ports?tags=k8s-pod-uid:{ub}"), "ports")
        .await;
    assert_eq!(by_uid.len(), 1);
    // The annotation.
    let ann: Value = env.annotation("default", "web-0").await;
    assert_eq!(ann["port_id"], a["id"]);
    assert_eq!(ann["mac_address"], a["mac_address"]);
    let ip = &ips_of(&a)[0];
    assert_eq!(ann["ips"], json!([format!("{ip}/16")]));
    assert_eq!(ann["gateway"], "10.244.0.1");
    assert!(ann["mtu"].as_u64().is_some());
    assert!(ip.starts_with("10.244."));
    // Only the two pods have ports.
    settled(&env).await;
    assert_eq!(env.ports().await.len(), 2);
    // A pod deleted: its port goes.
    env.kube.delete("v1", "Pod", "default", "web-1").unwrap();
    eventually("web-1's port gone", || async {
        env.port_of("default", "web-1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    // A pod that finishes: its port goes too.
    env.kube
        .update_status("v1", "Pod", "default", "web-0", json!({"phase": "Failed"}))
        .unwrap();
    eventually("web-0's port gone", || async {
        env.port_of("default", "web-0")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_become_load_balancers_following_their_endpoints() {
    let mut env = Env::new();
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "sessionAffinity": "ClientIP",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        .unwrap();
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "headless", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}))
        .unwrap();
    let svc = env.kube.get("v1", "Service", "default", "web").unwrap();
    let vip = s(&svc, "/spec/clusterIP");
    env.node("n1", json!({}));
    env.pod("default", "web-0", "n1", json!({"app": "web"}));
    env.pod("default", "web-1", "n1", json!({"app": "web"}));
    env.start();
    let ip0 =
        ips_of(&eventually("port 0", || async { env.port_of("default", "web-0").await }).await)[0]
            .clone();
    let ip1 =
        ips_of(&eventually("port 1", || async { env.port_of("default", "web-1").await }).await)[0]
            .clone();
    env.slice("default", "web-abc", "web", &[&ip0]);
    let lb = eventually("the load balancer", || async {
        env.list("lbaas/loadbalancers?name=default/web", "loadbalancers")
            .await
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(s(&lb, "vip_address"), vip);
    // The controller makes the load balancer first, then its listener and pool: wait for them.
    let (listeners, pools) = eventually("the listener and the pool", || async {
        let listeners = env
            .list(
                &format!("lbaas/listeners?loadbalancer_id={}", s(&lb, "id")),
                "listeners",
            )
            .await;
        let pools = env
            .list(
                &format!("lbaas/pools?loadbalancer_id={}", s(&lb, "id")),
                "pools",
            )
            .await;
        (!listeners.is_empty() && !pools.is_empty()).then_some((listeners, pools))
    })
    .await;
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0]["protocol"], "TCP");
    assert_eq!(listeners[0]["protocol_port"], 80);
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0]["lb_algorithm"], "ROUND_ROBIN");
    assert_eq!(pools[0]["session_persistence"]["type"], "SOURCE_IP");
    let want = |ips: &[&String]| {
        let mut m: Vec<String> = ips.iter().map(|i| format!("{i}:8080")).collect();
        m.sort();
        m
    };
    eventually("one member", || async {
        (web_members(&env).await == want(&[&ip0])).then_some(())
    })
    .await;
    let pool_id = s(&pools[0], "id");
    // Scale up: the second endpoint is added as a member of the same pool.
    env.slice("default", "web-abc", "web", &[&ip0, &ip1]);
    eventually("two members", || async {
        (web_members(&env).await == want(&[&ip0, &ip1])).then_some(())
    })
    .await;
    // Scale down.
    env.slice("default", "web-abc", "web", &[&ip1]);
    eventually("member 1 only", || async {
        (web_members(&env).await == want(&[&ip1])).then_some(())
    })
    .await;
    // The pod is deleted and the endpoint goes: port and member go, the LB stays.
    env.kube.delete("v1", "Pod", "default", "web-1").unwrap();
    env.slice("default", "web-abc", "web", &[]);
    eventually("no members, no port", || async {
        (web_members(&env).await.is_empty() && env.port_of("default", "web-1").await.is_none())
            .then_some(())
    })
    .await;
    let lbs = env
        .list("lbaas/loadbalancers?tags=k8s-cluster:test", "loadbalancers")
        .await;
    // `web` and the API server's `kubernetes` service; not the headless one.
    let mut names: Vec<String> = lbs.iter().map(|l| s(l, "name")).collect();
    names.sort();
    assert_eq!(names, ["default/kubernetes", "default/web"]);
    assert!(lbs.iter().any(|l| s(l, "id") == s(&lb, "id")), "same LB");
    let pools = env
        .list(
            &format!("lbaas/pools?loadbalancer_id={}", s(&lb, "id")),
            "pools",
        )
        .await;
    assert_eq!(s(&pools[0], "id"), pool_id, "same pool");
    // The service deleted: its load balancer goes.
    env.kube.delete("v1", "Service", "default", "web").unwrap();
    eventually("the LB gone", || async {
        env.list("lbaas/loadbalancers?name=default/web", "loadbalancers")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    env.stop().await;
}

/// The members of `default/web`'s pool.
async fn web_members(env: &Env) -> Vec<String> {
    env.members()
        .await
        .into_iter()
        .find(|(n, _)| n == "default/web")
        .map(|(_, m)| m)
        .unwrap_or_default()
}

/// The ids of the security groups of a pod's port.
async fn groups_of(env: &Env, ns: &str, name: &str) -> Vec<String> {
    let port = env.port_of(ns, name).await.unwrap();
    let mut g: Vec<String> = serde_json::from_value(port["security_groups"].clone()).unwrap();
    g.sort();
    g
}

fn kind_of(sg: &Value) -> String {
    let tags: Vec<String> = serde_json::from_value(sg["tags"].clone()).unwrap();
    tags.iter()
        .find_map(|t| t.strip_prefix("k8s-kind:").map(String::from))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn default_deny_and_one_allow_rule_become_groups_on_exactly_the_selected_ports() {
    let mut env = Env::new();
    env.namespace("prod", json!({"team": "prod"}));
    env.node("n1", json!({}));
    env.pod("prod", "db", "n1", json!({"app": "db"}));
    env.pod("prod", "web", "n1", json!({"app": "web"}));
    env.pod("default", "other", "n1", json!({"app": "db"}));
    env.kube
        .create(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "deny", "namespace": "prod"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}}),
        )
        .unwrap();
    env.kube
        .create(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "allow-web", "namespace": "prod"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}},
                                      {"ipBlock": {"cidr": "192.168.0.0/24",
                                                   "except": ["192.168.0.0/25"]}}],
                             "ports": [{"port": 5432}, {"port": "http"}]}]}}),
        )
        .unwrap();
    // A policy with an invalid CIDR: its bad peer is skipped, the controller goes on.
    env.kube
        .create(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "bad", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "none"}},
                "ingress": [{"from": [{"ipBlock": {"cidr": "300.1.2.3/8"}}]}]}}),
        )
        .unwrap();
    env.start();
    settled(&env).await;
    let sgs = env.sgs().await;
    let by_kind =
        |k: &str| -> Vec<Value> { sgs.iter().filter(|g| kind_of(g) == k).cloned().collect() };
    let allow_in = s(&by_kind("allow-ingress")[0], "id");
    let allow_out = s(&by_kind("allow-egress")[0], "id");
    let policies = by_kind("networkpolicy");
    assert_eq!(policies.len(), 3);
    let peers = by_kind("peer");
    assert_eq!(peers.len(), 1, "one membership group: app=web in prod");
    let peer = s(&peers[0], "id");
    let pol = |name: &str| {
        policies
            .iter()
            .find(|p| s(p, "name").ends_with(&format!("/{name}")))
            .unwrap()
            .clone()
    };
    let deny = pol("deny");
    let allow = pol("allow-web");
    // The deny policy's group has no rules; the membership group none either.
    assert!(deny["security_group_rules"].as_array().unwrap().is_empty());
    assert!(
        peers[0]["security_group_rules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // allow-web: (group web + 192.168.0.128/25) × (5432, http → 8080 on the db pod? no: db
    // has a container port named http on 8080) = 4 rules, ingress, IPv4.
    let mut rules: Vec<String> = allow["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}-{} {}{}",
                s(r, "direction"),
                s(r, "ethertype"),
                s(r, "protocol"),
                r["port_range_min"],
                r["port_range_max"],
                s(r, "remote_ip_prefix"),
                if s(r, "remote_group_id") == peer {
                    "peer"
                } else {
                    ""
                }
            )
        })
        .collect();
    rules.sort();
    assert_eq!(
        rules,
        [
            "ingress IPv4 tcp 5432-5432 192.168.0.128/25",
            "ingress IPv4 tcp 5432-5432 peer",
            "ingress IPv4 tcp 8080-8080 192.168.0.128/25",
            "ingress IPv4 tcp 8080-8080 peer",
        ]
    );
    // The db pod: both policies' groups and allow-egress, not allow-ingress.
    let mut want = vec![s(&deny, "id"), s(&allow, "id"), allow_out.clone()];
    want.sort();
    assert_eq!(groups_of(&env, "prod", "db").await, want);
    // The web pod: not selected, allow-all both ways, plus the membership group.
    let mut want = vec![allow_in.clone(), allow_out.clone(), peer.clone()];
    want.sort();
    assert_eq!(groups_of(&env, "prod", "web").await, want);
    // The pod of another namespace with the same labels: untouched by prod's policies.
    let mut want = vec![allow_in.clone(), allow_out.clone()];
    want.sort();
    assert_eq!(groups_of(&env, "default", "other").await, want);
    // The allow-all groups hold exactly their rules.
    let dirs = |g: &Value| {
        let mut d: Vec<String> = g["security_group_rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", s(r, "direction"), s(r, "ethertype")))
            .collect();
        d.sort();
        d
    };
    assert_eq!(
        dirs(&by_kind("allow-ingress")[0]),
        ["ingress IPv4", "ingress IPv6"]
    );
    assert_eq!(
        dirs(&by_kind("allow-egress")[0]),
        ["egress IPv4", "egress IPv6"]
    );

    // The web pod deleted: its port (and with it its membership) goes.
    env.kube.delete("v1", "Pod", "prod", "web").unwrap();
    eventually("web's port gone", || async {
        env.port_of("prod", "web").await.is_none().then_some(())
    })
    .await;
    // Allow-web deleted: its rules and group go; db keeps only the deny group.
    env.kube
        .delete("networking.k8s.io/v1", "NetworkPolicy", "prod", "allow-web")
        .unwrap();
    let mut want = vec![s(&deny, "id"), allow_out.clone()];
    want.sort();
    eventually("db's groups without allow-web", || async {
        (groups_of(&env, "prod", "db").await == want).then_some(())
    })
    .await;
    eventually("allow-web's and the membership group gone", || async {
        let ids: Vec<String> = env.sgs().await.iter().map(|g| s(g, "id")).collect();
        (!ids.contains(&s(&allow, "id")) && !ids.contains(&peer)).then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_controller_converges_without_duplicates_and_collects_leftovers() {
    let mut env = Env::new();
    env.node("n1", json!({}));
    env.pod("default", "a", "n1", json!({"app": "a"}));
    env.pod("default", "b", "n1", json!({"app": "b"}));
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc-a", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}))
        .unwrap();
    env.kube
        .create(
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p1", "namespace": "default"},
            "spec": {"podSelector": {"matchLabels": {"app": "a"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "b"}}}]}]}}),
        )
        .unwrap();
    env.start();
    let first = settled(&env).await;
    let get = |c: &[(&str, usize)], k: &str| c.iter().find(|(n, _)| *n == k).unwrap().1;
    assert_eq!(get(&first, "ports"), 2);
    assert_eq!(get(&first, "loadbalancers"), 2); // svc-a and kubernetes

    // Restarted with nothing changed: nothing changes.
    env.stop().await;
    env.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(settled(&env).await, first);

    // Stopped; meanwhile pods, a service and a policy go and others come.
    env.stop().await;
    env.kube.delete("v1", "Pod", "default", "b").unwrap();
    env.kube
        .delete("v1", "Service", "default", "svc-a")
        .unwrap();
    env.kube
        .delete("networking.k8s.io/v1", "NetworkPolicy", "default", "p1")
        .unwrap();
    env.pod("default", "c", "n1", json!({"app": "c"}));
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "svc-c", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 8080}]}}))
        .unwrap();
    // Leftovers a crash could leave: a port and a group of ours created but never tagged.
    let marker = json!("wyvern-k8s:test");
    let net = env
        .list(
            "networks?tags=k8s-cluster:test,k8s-kind:pod-network",
            "networks",
        )
        .await;
    let net_id = s(&net[0], "id");
    for (path, body) in [
        (
            "ports",
            json!({"port": {"network_id": net_id, "description": marker}}),
        ),
        (
            "security-groups",
            json!({"security_group": {"name": "half", "description": marker}}),
        ),
    ] {
        let r = env
            .http
            .post(format!("{}/v2.0/{path}", env.server.base))
            .header("X-Project-Id", PROJECT)
            .header("X-Roles", "admin")
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status.is_success(), "{path}: {}", r.text().await.unwrap());
    }
    // And objects that are not ours, which must stay.
    let r = env
        .http
        .post(format!("{}/v2.0/ports", env.server.base))
        .header("X-Project-Id", PROJECT)
        .header("X-Roles", "admin")
        .json(&json!({"port": {"network_id": net_id, "name": "someone-elses"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    env.start();
    eventually("convergence after the restart", || async {
        let ports = env.ports().await;
        let mut names: Vec<String> = ports.iter().map(|p| s(p, "name")).collect();
        names.sort();
        let lbs = env
            .list("lbaas/loadbalancers?tags=k8s-cluster:test", "loadbalancers")
            .await;
        let mut lb_names: Vec<String> = lbs.iter().map(|l| s(l, "name")).collect();
        lb_names.sort();
        let sgs = env.sgs().await;
        let half = env
            .list("security-groups?name=half", "security_groups")
            .await;
        (names == ["default/a", "default/c"]
            && lb_names == ["default/kubernetes", "default/svc-c"]
            && !sgs
                .iter()
                .any(|g| kind_of(g) == "networkpolicy" || kind_of(g) == "peer")
            && half.is_empty())
        .then_some(())
    })
    .await;
    let now = settled(&env).await;
    // No duplicates: one of each infrastructure object, one port per pod, the two allow-all
    // groups, one LB per service, one listener and pool each.
    assert_eq!(get(&now, "networks"), 2);
    assert_eq!(get(&now, "subnets"), 2);
    assert_eq!(get(&now, "routers"), 1);
    assert_eq!(get(&now, "ports"), 2);
    assert_eq!(get(&now, "security_groups"), 2);
    assert_eq!(get(&now, "loadbalancers"), 2);
    assert_eq!(get(&now, "listeners"), 2);
    assert_eq!(get(&now, "pools"), 2);
    let all = env.list("ports", "ports").await;
    assert!(all.iter().any(|p| s(p, "name") == "someone-elses"));
    assert!(
        !all.iter()
            .any(|p| p["description"] == marker && p["tags"].as_array().unwrap().is_empty()),
        "the half-made port is gone"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relist_after_compaction_duplicates_nothing() {
    let mut env = Env::new();
    env.node("n1", json!({}));
    env.pod("default", "a", "n1", json!({"app": "a"}));
    env.start();
    let first = settled(&env).await;
    let lists_before = env.kube.requests(kube_fixture::Verb::List, "pods");
    // Changes the watches miss, then history gone and watches closed: the watcher re-lists.
    env.kube.compact();
    env.kube.close_watches();
    env.pod("default", "b", "n1", json!({"app": "b"}));
    env.kube.delete("v1", "Pod", "default", "a").unwrap();
    env.kube.compact();
    env.kube.close_watches();
    eventually("b's port, a's gone", || async {
        (env.port_of("default", "b").await.is_some() && env.port_of("default", "a").await.is_none())
            .then_some(())
    })
    .await;
    let now = settled(&env).await;
    assert_eq!(now, first, "same counts: one pod, one port");
    assert!(env.kube.requests(kube_fixture::Verb::List, "pods") >= lists_before);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn network_per_namespace_gives_each_namespace_its_subnet() {
    let mut env = Env::new();
    env.per_namespace = true;
    env.namespace("team-a", json!({}));
    env.node("n1", json!({}));
    env.pod("team-a", "x", "n1", json!({}));
    env.pod("default", "y", "n1", json!({}));
    env.start();
    let x = env.wait_port("team-a", "x").await;
    let y = env.wait_port("default", "y").await;
    assert_ne!(x["network_id"], y["network_id"]);
    let subnets = env
        .list(
            "subnets?tags=k8s-cluster:test,k8s-kind:pod-subnet",
            "subnets",
        )
        .await;
    // One per namespace (default, kube-system, kube-public, kube-node-lease, team-a).
    assert_eq!(subnets.len(), 5);
    assert!(
        subnets
            .iter()
            .all(|s| s["cidr"].as_str().unwrap().ends_with("/24"))
    );
    env.kube.delete("v1", "Namespace", "", "team-a").unwrap();
    eventually("team-a's network gone", || async {
        env.list("subnets?tags=k8s-namespace:team-a", "subnets")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_pods_become_subports_of_the_vm_trunk() {
    let mut env = Env::new();
    // The VM's NIC: a port on a network of its own, not bound (the trunk plugin refuses to
    // trunk a bound port).
    let post = |path: &'static str, body: Value| {
        let http = env.http.clone();
        let base = env.server.base.clone();
        async move {
            let r = http
                .post(format!("{base}/v2.0/{path}"))
                .header("X-Project-Id", PROJECT)
                .header("X-Roles", "admin")
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            let v: Value = r.json().await.unwrap();
            assert!(status.is_success(), "{path}: {v}");
            v
        }
    };
    let net = post("networks", json!({"network": {"name": "vms"}})).await;
    let net_id = s(&net["network"], "id");
    post(
        "subnets",
        json!({"subnet": {"network_id": net_id, "cidr": "192.168.50.0/24", "ip_version": 4}}),
    )
    .await;
    let vm = post(
        "ports",
        json!({"port": {"network_id": net_id, "name": "vm-nic"}}),
    )
    .await;
    let vm_id = s(&vm["port"], "id");
    env.node("vm-node", json!({"wyvern.io/trunk-port": vm_id}));
    env.pod("default", "n0", "vm-node", json!({}));
    env.pod("default", "n1", "vm-node", json!({}));
    env.start();
    let trunk = eventually("the trunk with two subports", || async {
        env.list(&format!("trunks?port_id={vm_id}"), "trunks")
            .await
            .into_iter()
            .next()
            .filter(|t| t["sub_ports"].as_array().unwrap().len() == 2)
    })
    .await;
    let mut vlans: Vec<u64> = trunk["sub_ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["segmentation_id"].as_u64().unwrap())
        .collect();
    vlans.sort();
    assert_eq!(vlans, [1, 2]);
    assert!(
        trunk["sub_ports"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["segmentation_type"] == "vlan")
    );
    let p0 = env.port_of("default", "n0").await.unwrap();
    assert_eq!(s(&p0, "device_owner"), "trunk:subport");
    let vlan0 = trunk["sub_ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["port_id"] == p0["id"])
        .unwrap()["segmentation_id"]
        .clone();
    let ann: Value = env.annotation("default", "n0").await;
    assert!(ann["vlan"].as_u64().is_some());
    // A pod deleted: removed from the trunk, then its port deleted; its VLAN is reused.
    env.kube.delete("v1", "Pod", "default", "n0").unwrap();
    eventually("one subport left", || async {
        let t = env.list(&format!("trunks?port_id={vm_id}"), "trunks").await;
        (t[0]["sub_ports"].as_array().unwrap().len() == 1
            && env.port_of("default", "n0").await.is_none())
        .then_some(())
    })
    .await;
    env.pod("default", "n2", "vm-node", json!({}));
    eventually("n2 on the free VLAN", || async {
        let t = env.list(&format!("trunks?port_id={vm_id}"), "trunks").await;
        let p = env.port_of("default", "n2").await?;
        t[0]["sub_ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["port_id"] == p["id"] && s["segmentation_id"] == vlan0)
            .then_some(())
    })
    .await;
    env.stop().await;
}

/// Another project's network (with a subnet and a VM port) for `--pod-network`.
const INFRA: &str = "infra";

/// The interfaces (IP on `subnet`) of router `router`.
async fn router_ips_on(env: &Env, router: &str, subnet: &str) -> Vec<String> {
    env.list(&format!("ports?device_id={router}"), "ports")
        .await
        .iter()
        .flat_map(|p| p["fixed_ips"].as_array().cloned().unwrap_or_default())
        .filter(|f| s(f, "subnet_id") == subnet)
        .map(|f| s(&f, "ip_address"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_on_an_existing_network_share_it_and_never_own_it() {
    use reqwest::Method;
    let mut env = Env::new();
    // Someone else's network, whose gateway another router holds, with a VM on it.
    let net_id = env
        .create("networks", "network", INFRA, json!({"name": "shared"}))
        .await;
    let subnet_id = env
        .create(
            "subnets",
            "subnet",
            INFRA,
            json!({"network_id": net_id, "cidr": "192.168.60.0/24", "ip_version": 4}),
        )
        .await;
    let edge_id = env
        .create("routers", "router", INFRA, json!({"name": "edge"}))
        .await;
    env.call(
        Method::PUT,
        &format!("routers/{edge_id}/add_router_interface"),
        INFRA,
        json!({"subnet_id": subnet_id}),
    )
    .await;
    let vm_id = env
        .create(
            "ports",
            "port",
            INFRA,
            json!({"network_id": net_id, "name": "vm"}),
        )
        .await;
    env.pod_network = Some(("shared".into(), None));
    env.node("n1", json!({}));
    env.node("n2", json!({}));
    env.pod("default", "web-0", "n1", json!({"app": "web"}));
    env.pod("default", "web-1", "n2", json!({"app": "web"}));
    env.kube
        .create(json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}))
        .unwrap();
    env.start();

    // The pods' ports are on the shared network, with its gateway.
    let p0 = env.wait_port("default", "web-0").await;
    let p1 = env.wait_port("default", "web-1").await;
    for p in [&p0, &p1] {
        assert_eq!(s(p, "network_id"), net_id);
        assert!(ips_of(p)[0].starts_with("192.168.60."), "{p}");
    }
    let ann = env.annotation("default", "web-0").await;
    assert_eq!(ann["ips"], json!([format!("{}/24", ips_of(&p0)[0])]));
    assert_eq!(ann["gateway"], "192.168.60.1", "the subnet's gateway");
    // The controller's router joined the subnet through a port of its own (the gateway is
    // edge's), and the service subnet as before.
    let router_id = env.router().await;
    let ours = eventually("the router on the shared subnet", || async {
        let ips = router_ips_on(&env, &router_id, &subnet_id).await;
        (!ips.is_empty()).then_some(ips)
    })
    .await;
    assert_eq!(ours.len(), 1);
    assert_ne!(ours[0], "192.168.60.1");
    assert_eq!(
        router_ips_on(&env, &edge_id, &subnet_id).await,
        ["192.168.60.1"]
    );
    // The service's VIP pool follows its endpoints as before.
    let (ip0, ip1) = (ips_of(&p0)[0].clone(), ips_of(&p1)[0].clone());
    env.slice("default", "web-abc", "web", &[&ip0, &ip1]);
    let mut want = vec![format!("{ip0}:8080"), format!("{ip1}:8080")];
    want.sort();
    eventually("two members", || async {
        (web_members(&env).await == want).then_some(())
    })
    .await;
    // The network is not the controller's: untagged, not counted, no pod subnet of its own.
    let first = settled(&env).await;
    let get = |c: &[(&str, usize)], k: &str| c.iter().find(|(n, _)| *n == k).unwrap().1;
    assert_eq!(get(&first, "networks"), 1, "the service network only");
    assert_eq!(get(&first, "subnets"), 1);
    let shared = env.get(&format!("networks/{net_id}")).await;
    assert_eq!(shared["network"]["tags"], json!([]));
    assert_eq!(shared["network"]["description"], "");

    // Restarted with nothing changed: nothing changes (no second router port).
    env.stop().await;
    env.start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(settled(&env).await, first);
    assert_eq!(router_ips_on(&env, &router_id, &subnet_id).await, ours);

    // Stopped; a pod goes meanwhile; restarted, GC takes its port and nothing else.
    env.stop().await;
    env.kube.delete("v1", "Pod", "default", "web-1").unwrap();
    env.slice("default", "web-abc", "web", &[&ip0]);
    env.start();
    eventually("web-1's port and member gone", || async {
        (env.port_of("default", "web-1").await.is_none()
            && web_members(&env).await == [format!("{ip0}:8080")])
        .then_some(())
    })
    .await;
    settled(&env).await;
    env.get(&format!("networks/{net_id}")).await;
    env.get(&format!("subnets/{subnet_id}")).await;
    env.get(&format!("ports/{vm_id}")).await;
    assert_eq!(
        s(&env.port_of("default", "web-0").await.unwrap(), "id"),
        s(&p0, "id")
    );
    assert_eq!(router_ips_on(&env, &router_id, &subnet_id).await, ours);
    assert_eq!(
        router_ips_on(&env, &edge_id, &subnet_id).await,
        ["192.168.60.1"]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_router_takes_a_free_gateway_of_the_chosen_pod_subnet() {
    let mut env = Env::new();
    let net_id = env
        .create("networks", "network", INFRA, json!({"name": "lan"}))
        .await;
    let mut ids = Vec::new();
    for (name, cidr) in [("lan-a", "192.168.70.0/24"), ("lan-b", "192.168.71.0/24")] {
        ids.push(
            env.create(
                "subnets",
                "subnet",
                INFRA,
                json!({"network_id": net_id, "name": name, "cidr": cidr, "ip_version": 4}),
            )
            .await,
        );
    }
    // By id, and the second subnet by name.
    env.pod_network = Some((net_id.clone(), Some("lan-b".into())));
    env.node("n1", json!({}));
    env.pod("default", "a", "n1", json!({}));
    env.start();
    let p = env.wait_port("default", "a").await;
    assert_eq!(s(&p, "network_id"), net_id);
    assert_eq!(s(&p["fixed_ips"][0], "subnet_id"), ids[1]);
    let ann = env.annotation("default", "a").await;
    assert_eq!(ann["gateway"], "192.168.71.1");
    let router_id = env.router().await;
    assert_eq!(
        router_ips_on(&env, &router_id, &ids[1]).await,
        ["192.168.71.1"],
        "the router is the pods' (and the VMs') gateway"
    );
    assert!(router_ips_on(&env, &router_id, &ids[0]).await.is_empty());
    env.stop().await;
}

/// A micro-measure, not a timed assertion: 12 pods created at once in the fixture, the time from
/// each pod's create to its port being listable in the API (by its `k8s-pod-uid` tag). Printed
/// as `pod→port 12 pods: p50 … p99 … max …`; run with `--nocapture` to see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twelve_pods_at_once_time_to_port() {
    let mut env = Env::new();
    env.node("n1", json!({}));
    env.start();
    // The controller is set up and idle: its pod network exists and the counts are settled.
    eventually("the pod network", || async {
        let n = env
            .list(
                "networks?tags=k8s-cluster:test,k8s-kind:pod-network",
                "networks",
            )
            .await;
        (!n.is_empty()).then_some(())
    })
    .await;
    settled(&env).await;
    let mut created: Vec<(String, Instant)> = Vec::new();
    for i in 0..12 {
        let uid = env.pod(
            "default",
            &format!("burst-{i}"),
            "n1",
            json!({"app": "burst"}),
        );
        created.push((uid, Instant::now()));
    }
    let mut seen: std::collections::HashMap<String, Instant> = std::collections::HashMap::new();
    let end = Instant::now() + Duration::from_secs(30);
    while seen.len() < created.len() {
        assert!(
            Instant::now() < end,
            "ports missing: {} of 12",
            12 - seen.len()
        );
        for p in env.list("ports?tags=k8s-kind:pod", "ports").await {
            let t: Vec<String> = p["tags"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            if let Some(uid) = t.iter().find_map(|t| t.strip_prefix("k8s-pod-uid:")) {
                seen.entry(uid.to_string()).or_insert_with(Instant::now);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut ms: Vec<f64> = created
        .iter()
        .map(|(uid, at)| (seen[uid] - *at).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms[((ms.len() as f64 * p).ceil() as usize).clamp(1, ms.len()) - 1];
    println!(
        "pod→port 12 pods: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, min {:.0} ms",
        pct(0.5),
        pct(0.99),
        ms[ms.len() - 1],
        ms[0]
    );
}
