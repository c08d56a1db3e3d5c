//! The built-in EndpointSlice controller (`Config::endpoint_controller`): slices follow services
//! and pods as kube-controller-manager's would.

use std::time::Duration;

use kube_fixture::{Config, KubeApi};
use serde_json::{Value, json};

fn api() -> KubeApi {
    KubeApi::start_with(Config {
        endpoint_controller: true,
        ..Config::default()
    })
    .unwrap()
}

/// The slices of service `svc` in `ns`, over HTTP with the label selector, in name order.
async fn slices(api: &KubeApi, ns: &str, svc: &str) -> Vec<Value> {
    let url = format!(
        "{}/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name%3D{svc}",
        api.url()
    );
    let list: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod(name: &str, labels: Value, node: &str, ports: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox", "ports": ports}]},
    })
}

fn run(api: &KubeApi, name: &str, ip: &str, ready: bool) {
    api.update_status(
        "v1",
        "Pod",
        "default",
        name,
        json!({
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        }),
    )
    .unwrap();
}

/// (address, ready, nodeName, targetRef name) of a slice's endpoints, sorted.
fn endpoints(slice: &Value) -> Vec<(String, bool, String, String)> {
    let mut out: Vec<_> = slice["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["addresses"][0].as_str().unwrap().to_string(),
                e["conditions"]["ready"].as_bool().unwrap(),
                e["nodeName"].as_str().unwrap_or("").to_string(),
                e["targetRef"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn slices_follow_pods_and_services() {
    let api = api();
    let web = json!([{"name": "http", "containerPort": 8080}]);
    api.create(pod("web-1", json!({"app": "web"}), "n1", web.clone()))
        .unwrap();
    api.create(pod("web-2", json!({"app": "web"}), "n2", web.clone()))
        .unwrap();
    api.create(pod("other", json!({"app": "db"}), "n1", json!([])))
        .unwrap();
    let svc = api
        .create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "labels": {"tier": "front"}},
            "spec": {"selector": {"app": "web"}, "ports": [
                {"name": "http", "port": 80, "targetPort": "http"},
                {"name": "alt", "port": 81, "targetPort": 9090},
            ]},
        }))
        .unwrap();

    // No pod has an IP yet: one placeholder slice without endpoints or ports.
    let s = slices(&api, "default", "web").await;
    assert_eq!(s.len(), 1, "{s:#?}");
    let slice = &s[0];
    assert!(
        slice["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("web-")
    );
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["labels"]["tier"], "front");
    assert_eq!(
        slice["metadata"]["ownerReferences"][0]["uid"],
        svc["metadata"]["uid"]
    );
    assert_eq!(endpoints(slice), vec![]);
    let name = slice["metadata"]["name"].clone();

    // Running pods with IPs become endpoints, ready as their condition says; the named target
    // port resolves against the container port, the numbered one is kept.
    run(&api, "web-1", "10.244.0.11", true);
    run(&api, "web-2", "10.244.0.12", false);
    run(&api, "other", "10.244.0.13", true);
    let s = slices(&api, "default", "web").await;
    assert_eq!(s.len(), 1, "{s:#?}");
    assert_eq!(s[0]["metadata"]["name"], name, "updated in place");
    assert_eq!(
        endpoints(&s[0]),
        vec![
            ("10.244.0.11".into(), true, "n1".into(), "web-1".into()),
            ("10.244.0.12".into(), false, "n2".into(), "web-2".into()),
        ]
    );
    assert_eq!(
        s[0]["ports"],
        json!([
            {"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "alt", "port": 9090, "protocol": "TCP"},
        ])
    );
    assert_eq!(s[0]["endpoints"][0]["targetRef"]["kind"], "Pod");
    assert_eq!(s[0]["endpoints"][0]["conditions"]["terminating"], false);

    // Readiness changes, a pod goes, a pod loses its label: the slice follows.
    run(&api, "web-2", "10.244.0.12", true);
    api.delete("v1", "Pod", "default", "web-1").unwrap();
    let s = slices(&api, "default", "web").await;
    assert_eq!(
        endpoints(&s[0]),
        vec![("10.244.0.12".into(), true, "n2".into(), "web-2".into())]
    );
    let mut relabeled = api.get("v1", "Pod", "default", "web-2").unwrap();
    relabeled["metadata"]["labels"] = json!({"app": "gone"});
    relabeled["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let http = reqwest::Client::new();
    let resp = http
        .put(format!(
            "{}/api/v1/namespaces/default/pods/web-2",
            api.url()
        ))
        .json(&relabeled)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let s = slices(&api, "default", "web").await;
    assert_eq!(s.len(), 1);
    assert_eq!(endpoints(&s[0]), vec![]);

    // Deleting the service deletes its slices.
    api.delete("v1", "Service", "default", "web").unwrap();
    assert_eq!(slices(&api, "default", "web").await, Vec::<Value>::new());
}

#[tokio::test]
async fn named_ports_split_slices_and_unselected_services_have_none() {
    let api = api();
    api.create(pod(
        "a",
        json!({"app": "x"}),
        "n1",
        json!([{"name": "web", "containerPort": 8080}]),
    ))
    .unwrap();
    api.create(pod(
        "b",
        json!({"app": "x"}),
        "n1",
        json!([{"name": "web", "containerPort": 9000}]),
    ))
    .unwrap();
    run(&api, "a", "10.244.1.1", true);
    run(&api, "b", "10.244.1.2", true);
    api.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "x", "namespace": "default"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80, "targetPort": "web"}]},
    }))
    .unwrap();
    // A service without a selector gets no slices (its endpoints are the user's).
    api.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "manual", "namespace": "default"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    let s = slices(&api, "default", "x").await;
    assert_eq!(s.len(), 2, "one slice per resolved port: {s:#?}");
    let mut by_port: Vec<(i64, Vec<String>)> = s
        .iter()
        .map(|slice| {
            (
                slice["ports"][0]["port"].as_i64().unwrap(),
                endpoints(slice).into_iter().map(|e| e.0).collect(),
            )
        })
        .collect();
    by_port.sort();
    assert_eq!(
        by_port,
        vec![
            (8080, vec!["10.244.1.1".to_string()]),
            (9000, vec!["10.244.1.2".to_string()])
        ]
    );
    assert_eq!(slices(&api, "default", "manual").await, Vec::<Value>::new());
    // Removing the selector removes the slices.
    let mut svc = api.get("v1", "Service", "default", "x").unwrap();
    svc["spec"].as_object_mut().unwrap().remove("selector");
    svc["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let resp = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/namespaces/default/services/x",
            api.url()
        ))
        .json(&svc)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    assert_eq!(slices(&api, "default", "x").await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_watch_sees_the_slice_change_and_off_by_default() {
    let api = api();
    api.create(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "w", "namespace": "default"},
        "spec": {"selector": {"app": "w"}, "ports": [{"port": 80}]},
    }))
    .unwrap();
    let rv = api.resource_version();
    let mut resp = reqwest::get(format!(
        "{}/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={rv}",
        api.url()
    ))
    .await
    .unwrap();
    api.create(pod("w1", json!({"app": "w"}), "n1", json!([])))
        .unwrap();
    run(&api, "w1", "10.244.2.1", true);
    let mut buf = Vec::new();
    let event: Value = loop {
        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
            break serde_json::from_slice(&buf[..i]).unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event")
            .unwrap()
            .expect("an open stream");
        buf.extend_from_slice(&chunk);
    };
    assert_eq!(event["type"], "MODIFIED");
    assert_eq!(
        event["object"]["endpoints"][0]["addresses"][0],
        "10.244.2.1"
    );

    // Without the option the fixture leaves slices to its clients.
    let plain = KubeApi::start().unwrap();
    plain
        .create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "w", "namespace": "default"},
            "spec": {"selector": {"app": "w"}, "ports": [{"port": 80}]},
        }))
        .unwrap();
    assert_eq!(slices(&plain, "default", "w").await, Vec::<Value>::new());
}
