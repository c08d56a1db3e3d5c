//! The real kube-rs client: `kube::runtime::watcher` on pods sees ADDED/MODIFIED/DELETED,
//! re-lists after a 410 (compaction while the watch is down), and resumes after every watch was
//! closed (as an API server restart would) without re-listing.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube_fixture::{Config, KubeApi, Verb};
use serde_json::json;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap()
}

/// What the watcher reported, in a comparable form (`Error` for a watch error).
fn describe(e: &Result<Event<Pod>, watcher::Error>) -> String {
    match e {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(p)) => {
            format!("InitApply {}", p.metadata.name.as_deref().unwrap_or(""))
        }
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(p)) => format!(
            "Apply {} {}",
            p.metadata.name.as_deref().unwrap_or(""),
            p.status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("")
        ),
        Ok(Event::Delete(p)) => format!("Delete {}", p.metadata.name.as_deref().unwrap_or("")),
        Err(e) => format!("Error {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_follows_changes_and_survives_410_and_restarts() {
    let mut server = KubeApi::start_with(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .unwrap();
    let config = kube::Config::new(server.url().parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let pods: Api<Pod> = Api::namespaced(client, "default");
    pods.create(&PostParams::default(), &pod("before"))
        .await
        .unwrap();

    let mut events = watcher::watcher(pods.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        describe(
            &tokio::time::timeout(Duration::from_secs(15), events.next())
                .await
                .expect("a watcher event within 15 s")
                .expect("the watcher stream goes on"),
        )
    };
    assert_eq!(next().await, "Init");
    assert_eq!(next().await, "InitApply before");
    assert_eq!(next().await, "InitDone");
    assert_eq!(server.requests(Verb::List, "pods"), 1);

    pods.create(&PostParams::default(), &pod("a"))
        .await
        .unwrap();
    assert_eq!(next().await, "Apply a Pending");
    pods.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap();
    assert_eq!(next().await, "Apply a Running");
    pods.delete("a", &Default::default()).await.unwrap();
    assert_eq!(next().await, "Delete a");

    // Every watch closed (an API server restart): the watcher watches again from its last
    // resourceVersion, without listing, and misses nothing.
    server.close_watches();
    for _ in 0..100 {
        if server.open_watches() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.open_watches(), 0);
    pods.create(&PostParams::default(), &pod("b"))
        .await
        .unwrap();
    assert_eq!(next().await, "Apply b Pending");
    assert_eq!(
        server.requests(Verb::List, "pods"),
        1,
        "no re-list after a closed watch"
    );
    assert!(server.requests(Verb::Watch, "pods") >= 2);

    // The watch is closed, changes happen and the history is compacted: the next watch gets
    // 410 Expired and the watcher lists again (Init, the current objects, InitDone).
    server.stop();
    pods_direct_changes(&server);
    server.compact();
    server.resume().unwrap();
    let mut seen = Vec::new();
    loop {
        let e = next().await;
        let done = e == "InitDone";
        seen.push(e);
        if done {
            break;
        }
    }
    let errors = seen.iter().filter(|e| e.starts_with("Error")).count();
    assert!(errors >= 1, "{seen:?}");
    assert!(
        seen.iter()
            .any(|e| e.contains("410") || e.contains("Expired") || e.contains("too old")),
        "{seen:?}"
    );
    let listed: Vec<&String> = seen.iter().filter(|e| e.starts_with("InitApply")).collect();
    assert_eq!(listed, ["InitApply b", "InitApply c"], "{seen:?}");
    assert_eq!(
        server.requests(Verb::List, "pods"),
        2,
        "exactly one re-list"
    );

    pods.create(&PostParams::default(), &pod("d"))
        .await
        .unwrap();
    assert_eq!(next().await, "Apply d Pending");
}

/// Changes made while the server is off the port (directly in the store).
fn pods_direct_changes(server: &KubeApi) {
    server
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "c"}, "spec": {"containers": [{"name": "c"}]}}))
        .unwrap();
    server.delete("v1", "Pod", "default", "before").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_client_round_trip() {
    let server = KubeApi::start().unwrap();
    let client = kube::Client::try_from(kube::Config::new(server.url().parse().unwrap())).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod("x"))
        .await
        .unwrap();
    let list = pods.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let err = pods
        .create(&PostParams::default(), &pod("x"))
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists")),
        other => panic!("{other}"),
    }
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::all(client);
    let list = services.list(&Default::default()).await.unwrap();
    assert_eq!(
        list.items[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
        Some("10.96.0.1")
    );
    let mut stream = pods.watch(&Default::default(), "0").await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(kube::api::WatchEvent::Added(p)) => assert_eq!(p.metadata.name.as_deref(), Some("x")),
        other => panic!("{other:?}"),
    }
}
