//! The API conventions over real HTTP (reqwest): list → watch from a resourceVersion, bookmarks,
//! 410 after compaction, conflicts, patches, the status subresource, cluster IPs, namespace
//! deletion, pagination, streaming lists, selectors on watches and the test hooks.

use std::time::Duration;

use kube_fixture::{Config, Fault, KubeApi, Verb};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(api: &KubeApi) -> Self {
        Self {
            client: reqwest::Client::new(),
            base: api.url(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some((ct, body)) = body {
            req = req.header("content-type", ct).body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(("application/json", body)),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PUT, path, Some(("application/json", body)))
            .await
    }

    async fn patch(&self, path: &str, ct: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::PATCH, path, Some((ct, body)))
            .await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    async fn watch(&self, path: &str) -> Watch {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        Watch {
            resp,
            buf: Vec::new(),
        }
    }
}

/// A watch response read line by line.
struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, or `None` when the stream ends; panics after 10 s without one.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("a watch event within 10 s")
                .unwrap();
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return None,
            }
        }
    }

    /// The next event that is not a bookmark.
    async fn next_change(&mut self) -> Value {
        loop {
            let e = self.next().await.expect("an event");
            if e["type"] != "BOOKMARK" {
                return e;
            }
        }
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    })
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn discovery_documents() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let (s, v) = http.get("/version").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["major"], "1");
    let (_, v) = http.get("/api").await;
    assert_eq!(v["versions"], json!(["v1"]));
    let (_, v) = http.get("/api/v1").await;
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "namespaces",
        "pods",
        "pods/status",
        "services",
        "services/status",
        "nodes",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let (_, v) = http.get("/apis").await;
    let groups: Vec<&str> = v["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["preferredVersion"]["groupVersion"].as_str().unwrap())
        .collect();
    assert_eq!(groups, ["discovery.k8s.io/v1", "networking.k8s.io/v1"]);
    let (_, v) = http.get("/apis/networking.k8s.io/v1").await;
    assert_eq!(v["resources"][0]["name"], "networkpolicies");
    let (_, v) = http.get("/apis/discovery.k8s.io/v1").await;
    assert_eq!(v["resources"][0]["kind"], "EndpointSlice");
    let (s, v) = http.get("/apis/apps/v1/deployments").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["kind"], "Status");
}

#[tokio::test]
async fn list_then_watch_from_its_resource_version() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let (s, created) = http.post(PODS, pod("a", json!({"app": "web"}))).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["uid"].as_str().unwrap().len() > 10);
    assert_eq!(created["metadata"]["generation"], 1);
    assert!(created["metadata"]["creationTimestamp"].is_string());
    let (s, list) = http.get(PODS).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        list["items"][0].get("kind").is_none(),
        "list items carry no kind"
    );
    let rv = rv_of(&list);
    assert_eq!(rv, rv_of(&created));

    // Changes made before the watch starts are replayed from the list's resourceVersion.
    http.post(PODS, pod("b", json!({}))).await;
    let mut w = http
        .watch(&format!("{PODS}?watch=true&resourceVersion={rv}"))
        .await;
    let e = w.next_change().await;
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("b"))
    );
    assert_eq!(e["object"]["kind"], "Pod");
    let (_, p) = http
        .patch(
            &format!("{PODS}/a"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"x": "1"}}}),
        )
        .await;
    let e = w.next_change().await;
    assert_eq!(e["type"], "MODIFIED");
    assert_eq!(e["object"]["metadata"]["labels"]["x"], "1");
    assert_eq!(rv_of(&e["object"]), rv_of(&p));
    let (s, deleted) = http.delete(&format!("{PODS}/b")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(deleted["metadata"]["name"], "b");
    let e = w.next_change().await;
    assert_eq!(e["type"], "DELETED");
    assert_eq!(rv_of(&e["object"]), api.resource_version());
    // Pods in other namespaces are not in this watch; they are in the all-namespaces one.
    http.post("/api/v1/namespaces", json!({"metadata": {"name": "other"}}))
        .await;
    let mut all = http
        .watch(&format!(
            "/api/v1/pods?watch=1&resourceVersion={}",
            api.resource_version()
        ))
        .await;
    http.post("/api/v1/namespaces/other/pods", pod("c", json!({})))
        .await;
    http.post(PODS, pod("d", json!({}))).await;
    let e = w.next_change().await;
    assert_eq!(e["object"]["metadata"]["name"], "d");
    let e = all.next_change().await;
    assert_eq!(e["object"]["metadata"]["namespace"], "other");
    let e = all.next_change().await;
    assert_eq!(e["object"]["metadata"]["name"], "d");

    // A watch without a resourceVersion starts with the current objects.
    let mut w = http.watch(&format!("{PODS}?watch=true")).await;
    let mut names = Vec::new();
    for _ in 0..2 {
        let e = w.next_change().await;
        assert_eq!(e["type"], "ADDED");
        names.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(names, ["a", "d"]);
}

#[tokio::test]
async fn bookmarks_and_timeouts() {
    let api = KubeApi::start_with(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .unwrap();
    let http = Http::new(&api);
    let rv = api.resource_version();
    let mut w = http
        .watch(&format!(
            "{PODS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"
        ))
        .await;
    http.post("/api/v1/nodes", json!({"metadata": {"name": "n1"}}))
        .await;
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(b["object"]["kind"], "Pod");
    // The node's change is not a pod event, but the bookmark moves past it.
    let b = w.next().await.unwrap();
    assert_eq!(b["type"], "BOOKMARK");
    assert_eq!(rv_of(&b["object"]), api.resource_version());
    // No bookmarks unless asked for; timeoutSeconds ends the stream.
    let mut w = http
        .watch(&format!(
            "{PODS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"
        ))
        .await;
    assert_eq!(w.next().await, None);
}

#[tokio::test]
async fn expired_after_compaction() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let (_, list) = http.get(PODS).await;
    let old = rv_of(&list);
    http.post(PODS, pod("a", json!({}))).await;
    api.compact();
    // The real server accepts the watch and reports the error in the stream.
    let mut w = http
        .watch(&format!("{PODS}?watch=true&resourceVersion={old}"))
        .await;
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["kind"], "Status");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert_eq!(w.next().await, None);
    // An exact list at that resourceVersion is a plain 410.
    let (s, v) = http
        .get(&format!(
            "{PODS}?resourceVersion={old}&resourceVersionMatch=Exact"
        ))
        .await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["reason"], "Expired");
    // A watch from the current resourceVersion works.
    let now = api.resource_version();
    let mut w = http
        .watch(&format!("{PODS}?watch=true&resourceVersion={now}"))
        .await;
    http.post(PODS, pod("b", json!({}))).await;
    assert_eq!(w.next_change().await["type"], "ADDED");
    // A resourceVersion from the future: 504 after waiting for it.
    let (s, v) = http
        .get(&format!("{PODS}?resourceVersion={}", now + 100))
        .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(v["reason"], "Timeout");
}

#[tokio::test]
async fn stale_update_conflicts() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let (_, created) = http.post(PODS, pod("a", json!({}))).await;
    let (s, v) = http.post(PODS, pod("a", json!({}))).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "AlreadyExists");
    assert_eq!(v["message"], "pods \"a\" already exists");
    assert_eq!(v["details"], json!({"name": "a", "kind": "pods"}));
    let mut first = created.clone();
    first["metadata"]["labels"] = json!({"v": "1"});
    let (s, updated) = http.put(&format!("{PODS}/a"), first).await;
    assert_eq!(s, StatusCode::OK);
    assert!(rv_of(&updated) > rv_of(&created));
    assert_eq!(updated["metadata"]["generation"], 1, "labels are not spec");
    let mut stale = created.clone();
    stale["metadata"]["labels"] = json!({"v": "2"});
    let (s, v) = http.put(&format!("{PODS}/a"), stale.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "Conflict");
    assert_eq!(v["status"], "Failure");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    // A merge patch carrying a stale resourceVersion conflicts too.
    let (s, _) = http
        .patch(&format!("{PODS}/a"), "application/merge-patch+json", json!({"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"v": "3"}}}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // Without a resourceVersion the update is unconditional; a spec change bumps generation.
    stale["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    stale["spec"]["containers"][0]["image"] = json!("nginx");
    let (s, v) = http.put(&format!("{PODS}/a"), stale).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"]["generation"], 2);
    // An update that changes nothing keeps the resourceVersion.
    let (_, same) = http.put(&format!("{PODS}/a"), v.clone()).await;
    assert_eq!(rv_of(&same), rv_of(&v));
    let (s, v) = http
        .put(&format!("{PODS}/nope"), pod("nope", json!({})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "pods \"nope\" not found");
    let (s, v) = http.put(&format!("{PODS}/a"), pod("b", json!({}))).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    let (s, v) = http
        .send(reqwest::Method::POST, &format!("{PODS}/a"), None)
        .await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed"))
    );
    let (s, v) = http.post(PODS, json!({"metadata": {}})).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
}

#[tokio::test]
async fn merge_patch_and_status_subresource() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    http.post(PODS, pod("a", json!({"app": "web", "tier": "x"})))
        .await;
    let (s, v) = http
        .patch(&format!("{PODS}/a"), "application/merge-patch+json", json!({"metadata": {"labels": {"tier": null, "new": "1"}}, "status": {"phase": "Running"}}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"]["labels"], json!({"app": "web", "new": "1"}));
    assert_eq!(
        v["status"]["phase"], "Pending",
        "the main resource leaves status alone"
    );
    let (s, v) = http
        .patch(&format!("{PODS}/a/status"), "application/merge-patch+json", json!({"metadata": {"labels": {"ignored": "1"}}, "status": {"phase": "Running", "podIP": "10.244.0.5"}}))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["status"],
        json!({"phase": "Running", "podIP": "10.244.0.5"})
    );
    assert!(
        v["metadata"]["labels"].get("ignored").is_none(),
        "status writes change only status"
    );
    let mut whole = v.clone();
    whole["status"]["phase"] = json!("Succeeded");
    whole["spec"]["nodeName"] = json!("ignored");
    let (s, v) = http.put(&format!("{PODS}/a/status"), whole).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["phase"], "Succeeded");
    assert!(v["spec"].get("nodeName").is_none());
    // Strategic merge patch (what kubectl sends) merges containers by name; JSON patch works.
    let (s, v) = http
        .patch(
            &format!("{PODS}/a"),
            "application/strategic-merge-patch+json",
            json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["spec"]["containers"],
        json!([{"name": "c", "image": "nginx"}])
    );
    let (s, v) = http
        .patch(
            &format!("{PODS}/a"),
            "application/json-patch+json",
            json!([{"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["metadata"]["annotations"], json!({"a": "b"}));
    let (s, v) = http
        .patch(&format!("{PODS}/a"), "text/plain", json!({}))
        .await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some("UnsupportedMediaType")
        )
    );
    let (s, _) = http
        .patch(
            &format!("{PODS}/zz"),
            "application/merge-patch+json",
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // Server-side apply (approximated as a merge patch) creates and updates.
    let (s, v) = http
        .patch(
            &format!("{PODS}/applied?fieldManager=test"),
            "application/apply-patch+yaml",
            pod("applied", json!({"a": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["metadata"]["labels"]["a"], "1");
    // Nodes have a status subresource too.
    http.post("/api/v1/nodes", json!({"metadata": {"name": "n1"}}))
        .await;
    let (s, v) = http
        .patch(
            "/api/v1/nodes/n1/status",
            "application/merge-patch+json",
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["addresses"][0]["address"], "192.0.2.1");
}

#[tokio::test]
async fn cluster_ip_allocation() {
    let api = KubeApi::start_with(Config {
        service_cidr: "10.100.0.0/24".parse().unwrap(),
        ..Config::default()
    })
    .unwrap();
    let http = Http::new(&api);
    let svc = |name: &str, spec: Value| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec});
    let (_, k) = http
        .get("/api/v1/namespaces/default/services/kubernetes")
        .await;
    assert_eq!(k["spec"]["clusterIP"], "10.100.0.1");
    let (s, a) = http
        .post(
            "/api/v1/namespaces/default/services",
            svc(
                "a",
                json!({"selector": {"app": "a"}, "ports": [{"port": 80}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(a["spec"]["clusterIP"], "10.100.0.2");
    assert_eq!(a["spec"]["clusterIPs"], json!(["10.100.0.2"]));
    assert_eq!(a["spec"]["type"], "ClusterIP");
    assert_eq!(
        a["spec"]["ports"][0],
        json!({"port": 80, "protocol": "TCP", "targetPort": 80})
    );
    let (_, h) = http
        .post(
            "/api/v1/namespaces/default/services",
            svc("h", json!({"clusterIP": "None"})),
        )
        .await;
    assert_eq!(h["spec"]["clusterIP"], "None");
    let (s, g) = http
        .post(
            "/api/v1/namespaces/default/services",
            svc("g", json!({"clusterIP": "10.100.0.50"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(g["spec"]["clusterIP"], "10.100.0.50");
    for (name, ip) in [("dup", "10.100.0.50"), ("out", "10.0.0.1")] {
        let (s, v) = http
            .post(
                "/api/v1/namespaces/default/services",
                svc(name, json!({"clusterIP": ip})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        assert_eq!(v["reason"], "Invalid");
    }
    let (_, np) = http
        .post(
            "/api/v1/namespaces/default/services",
            svc(
                "np",
                json!({"type": "NodePort", "ports": [{"port": 53, "protocol": "UDP"}]}),
            ),
        )
        .await;
    assert_eq!(np["spec"]["ports"][0]["nodePort"], 30000);
    // The cluster IP is immutable; an update that leaves it out keeps it.
    let mut changed = a.clone();
    changed["spec"]["clusterIP"] = json!("10.100.0.99");
    let (s, _) = http
        .put("/api/v1/namespaces/default/services/a", changed)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let mut omitted = a.clone();
    omitted["spec"].as_object_mut().unwrap().remove("clusterIP");
    omitted["spec"]
        .as_object_mut()
        .unwrap()
        .remove("clusterIPs");
    omitted["spec"]["selector"] = json!({"app": "b"});
    let (s, v) = http
        .put("/api/v1/namespaces/default/services/a", omitted)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["spec"]["clusterIP"], "10.100.0.2");
    // Deleting releases the address.
    http.delete("/api/v1/namespaces/default/services/a").await;
    let (_, b) = http
        .post("/api/v1/namespaces/default/services", svc("b", json!({})))
        .await;
    assert_eq!(b["spec"]["clusterIP"], "10.100.0.2");
}

#[tokio::test]
async fn namespaces_scope_and_cascade() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let (s, v) = http
        .post("/api/v1/namespaces/missing/pods", pod("a", json!({})))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "namespaces \"missing\" not found");
    let (_, ns) = http
        .post("/api/v1/namespaces", json!({"metadata": {"name": "team"}}))
        .await;
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team"
    );
    assert_eq!(ns["status"]["phase"], "Active");
    for name in ["a", "b"] {
        let (s, _) = http
            .post("/api/v1/namespaces/team/pods", pod(name, json!({})))
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    http.post(
        "/api/v1/namespaces/team/services",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    http.post(
        "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies",
        json!({"metadata": {"name": "np"}, "spec": {"podSelector": {}}}),
    )
    .await;
    http.post("/apis/discovery.k8s.io/v1/namespaces/team/endpointslices", json!({"metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}}, "addressType": "IPv4", "endpoints": []})).await;
    let (s, v) = http
        .post(
            "/api/v1/namespaces/team/pods",
            json!({"metadata": {"name": "x", "namespace": "default"}}),
        )
        .await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::BAD_REQUEST, Some("BadRequest"))
    );
    let rv = api.resource_version();
    let mut w = http
        .watch(&format!("/api/v1/pods?watch=true&resourceVersion={rv}"))
        .await;
    let (s, v) = http.delete("/api/v1/namespaces/team").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["phase"], "Terminating");
    let mut gone = Vec::new();
    for _ in 0..2 {
        let e = w.next_change().await;
        assert_eq!(e["type"], "DELETED");
        gone.push(
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(gone, ["a", "b"]);
    for path in [
        "/api/v1/namespaces/team/pods",
        "/api/v1/namespaces/team/services",
        "/apis/networking.k8s.io/v1/namespaces/team/networkpolicies",
        "/apis/discovery.k8s.io/v1/namespaces/team/endpointslices",
    ] {
        let (_, v) = http.get(path).await;
        assert_eq!(v["items"], json!([]), "{path}");
    }
    let (s, _) = http.get("/api/v1/namespaces/team").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = http.delete("/api/v1/namespaces/default").await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("Forbidden"))
    );
}

#[tokio::test]
async fn selectors_and_pagination() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    for (i, app) in ["web", "web", "db", "cache", "web"].iter().enumerate() {
        let mut p = pod(&format!("p{i}"), json!({"app": app}));
        if i % 2 == 0 {
            p["spec"]["nodeName"] = json!("n1");
        }
        http.post(PODS, p).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (_, v) = http.get(&format!("{PODS}?labelSelector=app%3Dweb")).await;
    assert_eq!(names(&v), ["p0", "p1", "p4"]);
    let (_, v) = http
        .get(&format!("{PODS}?labelSelector=app%20in%20(db,cache)"))
        .await;
    assert_eq!(names(&v), ["p2", "p3"]);
    let (_, v) = http
        .get(&format!(
            "{PODS}?labelSelector=app%20notin%20(web),!missing"
        ))
        .await;
    assert_eq!(names(&v), ["p2", "p3"]);
    let (_, v) = http
        .get(&format!("{PODS}?fieldSelector=spec.nodeName%3Dn1"))
        .await;
    assert_eq!(names(&v), ["p0", "p2", "p4"]);
    let (_, v) = http
        .get("/api/v1/pods?fieldSelector=metadata.name%3Dp3,metadata.namespace%3Ddefault")
        .await;
    assert_eq!(names(&v), ["p3"]);
    let (s, v) = http
        .get(&format!("{PODS}?fieldSelector=spec.bogus%3Dx"))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported")
    );
    // Pages come from one snapshot even if objects change between them.
    let (_, page1) = http.get(&format!("{PODS}?limit=2")).await;
    assert_eq!(names(&page1), ["p0", "p1"]);
    assert_eq!(page1["metadata"]["remainingItemCount"], 3);
    let token = page1["metadata"]["continue"].as_str().unwrap().to_string();
    http.delete(&format!("{PODS}/p2")).await;
    let (_, page2) = http.get(&format!("{PODS}?limit=2&continue={token}")).await;
    assert_eq!(names(&page2), ["p2", "p3"]);
    assert_eq!(
        page2["metadata"]["resourceVersion"],
        page1["metadata"]["resourceVersion"]
    );
    let token = page2["metadata"]["continue"].as_str().unwrap().to_string();
    let (_, page3) = http.get(&format!("{PODS}?limit=2&continue={token}")).await;
    assert_eq!(names(&page3), ["p4"]);
    assert!(page3["metadata"].get("continue").is_none());
    api.compact();
    let (s, v) = http.get(&format!("{PODS}?limit=2&continue={token}")).await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::GONE, Some("Expired"))
    );

    // A label change moves objects into and out of a watch's selection.
    let rv = api.resource_version();
    let mut w = http
        .watch(&format!(
            "{PODS}?watch=true&resourceVersion={rv}&labelSelector=app%3Dweb"
        ))
        .await;
    http.patch(
        &format!("{PODS}/p0"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "db"}}}),
    )
    .await;
    http.patch(
        &format!("{PODS}/p3"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"app": "web"}}}),
    )
    .await;
    http.patch(
        &format!("{PODS}/p3"),
        "application/merge-patch+json",
        json!({"metadata": {"labels": {"v": "2"}}}),
    )
    .await;
    let seen: Vec<(String, String)> = {
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = w.next_change().await;
            seen.push((
                e["type"].as_str().unwrap().into(),
                e["object"]["metadata"]["name"].as_str().unwrap().into(),
            ));
        }
        seen
    };
    assert_eq!(
        seen,
        [
            ("DELETED".into(), "p0".into()),
            ("ADDED".into(), "p3".into()),
            ("MODIFIED".into(), "p3".into())
        ]
    );
}

#[tokio::test]
async fn streaming_list() {
    let api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    http.post(PODS, pod("a", json!({}))).await;
    let (s, v) = http
        .get(&format!(
            "{PODS}?watch=true&sendInitialEvents=true&allowWatchBookmarks=true"
        ))
        .await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("Invalid"))
    );
    let mut w = http
        .watch(&format!("{PODS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=0"))
        .await;
    let e = w.next().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("a"))
    );
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(
        e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(rv_of(&e["object"]), api.resource_version());
    http.post(PODS, pod("b", json!({}))).await;
    assert_eq!(w.next_change().await["object"]["metadata"]["name"], "b");
}

#[tokio::test]
async fn hooks_close_watches_count_requests_inject_faults_and_restart() {
    let mut api = KubeApi::start().unwrap();
    let http = Http::new(&api);
    let mut w = http
        .watch(&format!(
            "{PODS}?watch=true&resourceVersion={}",
            api.resource_version()
        ))
        .await;
    for _ in 0..50 {
        if api.open_watches() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(api.open_watches(), 1);
    api.close_watches();
    assert_eq!(w.next().await, None);
    http.get(PODS).await;
    http.get(PODS).await;
    http.get("/api/v1/services").await;
    http.post(PODS, pod("a", json!({}))).await;
    http.get(&format!("{PODS}/a")).await;
    assert_eq!(api.requests(Verb::List, "pods"), 2);
    assert_eq!(api.requests(Verb::List, "services"), 1);
    assert_eq!(api.requests(Verb::Watch, "pods"), 1);
    assert_eq!(api.requests(Verb::Create, "pods"), 1);
    assert_eq!(api.requests(Verb::Get, "pods"), 1);
    api.reset_request_counts();
    assert!(api.request_counts().is_empty());
    api.inject_fault(Fault {
        verb: Some(Verb::List),
        resource: Some("pods".into()),
        code: 503,
        times: 2,
    });
    assert_eq!(http.get(PODS).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(http.get("/api/v1/services").await.0, StatusCode::OK);
    assert_eq!(http.get(PODS).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(http.get(PODS).await.0, StatusCode::OK);
    // Direct changes.
    api.update_status("v1", "Pod", "default", "a", json!({"phase": "Running"}))
        .unwrap();
    assert_eq!(
        api.get("v1", "Pod", "default", "a").unwrap()["status"]["phase"],
        "Running"
    );
    // Stop and resume on the same port, objects kept.
    api.stop();
    assert!(
        reqwest::Client::new()
            .get(format!("{}/api/v1/pods", api.url()))
            .send()
            .await
            .is_err()
    );
    api.resume().unwrap();
    let (s, v) = Http::new(&api).get(&format!("{PODS}/a")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["phase"], "Running");
    api.delete("v1", "Pod", "default", "a").unwrap();
    assert!(api.get("v1", "Pod", "default", "a").is_err());
}
