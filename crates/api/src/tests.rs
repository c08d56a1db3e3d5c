//! In-process tests of the work one call does: which store keys it reads (it must not grow with
//! other projects' data, nor with unrelated objects of the kinds it looks up), and that a large
//! request lets other tasks run between its items.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use futures::future::BoxFuture;
use model::resources::{
    FLOATING_IP, NETWORK, PORT, ROUTER, SECURITY_GROUP, SECURITY_GROUP_RULE, SUBNET,
};
use serde_json::{Value, json};
use store::{KeyValue, LeaseId, Revision, Store, StoreError, Txn, TxnOutcome, Watch};

use crate::{Api, ApiConfig, Ctx};

/// A store that records every key it reads (a `get`, or each key a `range` returns), with the value
/// of `clock` at the time.
struct Recording {
    inner: Arc<dyn Store>,
    clock: Arc<AtomicUsize>,
    reads: Mutex<Vec<(String, usize)>>,
}

impl Recording {
    fn note(&self, key: &str) {
        let now = self.clock.load(Ordering::SeqCst);
        self.reads.lock().unwrap().push((key.to_string(), now));
    }
    /// The reads since the last call.
    fn take(&self) -> Vec<(String, usize)> {
        std::mem::take(&mut self.reads.lock().unwrap())
    }
}

impl Store for Recording {
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        self.inner.revision()
    }
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.note(key);
        self.inner.get(key)
    }
    fn range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        Box::pin(async move {
            let (kvs, rev) = self.inner.range(prefix).await?;
            kvs.iter().for_each(|kv| self.note(&kv.key));
            Ok((kvs, rev))
        })
    }
    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        self.inner.txn(txn)
    }
    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<Box<dyn Watch>, StoreError>> {
        self.inner.watch(prefix, after)
    }
    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        self.inner.lease_grant(ttl)
    }
    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        self.inner.lease_keep_alive(lease)
    }
    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lease_revoke(lease)
    }
}

/// An API on a new embedded store that records its reads (the directory holds the store).
fn recording_api() -> (Api, Arc<Recording>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wyvern.redb");
    let recording = Arc::new(Recording {
        inner: store::open(&format!("embedded:{}", path.display())).unwrap(),
        clock: Arc::default(),
        reads: Mutex::default(),
    });
    // Unlimited quotas: the measured calls run among hundreds of objects of one project.
    let config = ApiConfig {
        quotas: crate::quota::Defaults::unlimited(),
        ..ApiConfig::default()
    };
    (Api::new(recording.clone(), config), recording, dir)
}

fn member(project: &str) -> Ctx {
    Ctx {
        project_id: project.to_string(),
        is_admin: false,
        read_only: false,
    }
}

fn admin(project: &str) -> Ctx {
    Ctx {
        project_id: project.to_string(),
        is_admin: true,
        read_only: false,
    }
}

/// The keys of `reads` but `project`'s own usage counters: a range of a resource's counters holds
/// as many as the project's own objects have filled (up to eight), whatever other projects hold.
fn own_work(reads: &[(String, usize)], project: &str) -> Vec<String> {
    let counters = format!("/quota/used/{project}/");
    reads
        .iter()
        .map(|(key, _)| key.clone())
        .filter(|key| !key.starts_with(&counters))
        .collect()
}

/// Creates one object; returns its id.
async fn create(api: &Api, ctx: &Ctx, def: &model::ResourceDef, attrs: Value) -> String {
    let answer = api
        .create(ctx, def, json!({ def.singular: attrs }))
        .await
        .unwrap();
    answer[def.singular]["id"].as_str().unwrap().to_string()
}

/// Creates objects in one bulk request; returns their ids.
async fn create_all(
    api: &Api,
    ctx: &Ctx,
    def: &model::ResourceDef,
    items: Vec<Value>,
) -> Vec<String> {
    let answer = api
        .create(ctx, def, json!({ def.collection: items }))
        .await
        .unwrap();
    let created = answer[def.collection].as_array().unwrap();
    created
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

/// A network with a subnet of `cidr`; returns both ids.
async fn network(api: &Api, ctx: &Ctx, attrs: Value, cidr: &str) -> (String, String) {
    let net = create(api, ctx, &NETWORK, attrs).await;
    let subnet = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
    (net.clone(), create(api, ctx, &SUBNET, subnet).await)
}

/// A router with its gateway on `external` and an interface on `subnet`.
async fn router(api: &Api, ctx: &Ctx, external: &str, subnet: &str) -> String {
    let gateway = json!({"external_gateway_info": {"network_id": external}});
    let router = create(api, ctx, &ROUTER, gateway).await;
    let add = json!({"subnet_id": subnet});
    crate::resources::action(api, ctx, &ROUTER, &router, "add_router_interface", add)
        .await
        .unwrap();
    router
}

/// Project beta's objects, which the calls measured in project alpha have nothing to do with.
struct Unrelated {
    ctx: Ctx,
    external: String,
    network: String,
    group: String,
    /// The ids of everything made so far.
    ids: Vec<String>,
}

impl Unrelated {
    async fn new(api: &Api, external: &str) -> Self {
        let ctx = admin("beta");
        let (network, subnet) = network(api, &ctx, json!({}), "10.200.0.0/16").await;
        let router = router(api, &ctx, external, &subnet).await;
        let group = create(api, &ctx, &SECURITY_GROUP, json!({"name": "b"})).await;
        Unrelated {
            ids: vec![network.clone(), subnet, router, group.clone()],
            ctx,
            external: external.to_string(),
            network,
            group,
        }
    }

    /// Adds `n` of each kind: ports, floating IPs on them, routers with a gateway on the external
    /// network, and rules.
    async fn grow(&mut self, api: &Api, n: usize) {
        let first = self.ids.len();
        let ports = vec![json!({"network_id": self.network}); n];
        let ports = create_all(api, &self.ctx, &PORT, ports).await;
        let fips = ports
            .iter()
            .map(|p| json!({"floating_network_id": self.external, "port_id": p}))
            .collect();
        let fips = create_all(api, &self.ctx, &FLOATING_IP, fips).await;
        let gateway = json!({"external_gateway_info": {"network_id": self.external}});
        let routers = create_all(api, &self.ctx, &ROUTER, vec![gateway; n]).await;
        let rules = (first..first + n)
            .map(|i| {
                json!({"security_group_id": self.group, "direction": "ingress",
                    "protocol": "tcp", "port_range_min": i + 1, "port_range_max": i + 1})
            })
            .collect();
        let rules = create_all(api, &self.ctx, &SECURITY_GROUP_RULE, rules).await;
        self.ids.extend([ports, fips, routers, rules].concat());
    }
}

/// The keys read by a floating IP association, a binding report of the associated port, and a rule
/// create in project alpha, with a new port on `network`, whose subnet a router connects to
/// `external`.
async fn reads_of_calls(
    api: &Api,
    recording: &Recording,
    (external, network): (&str, &str),
) -> [Vec<String>; 3] {
    let alpha = admin("alpha");
    let port = create(api, &alpha, &PORT, json!({"network_id": network})).await;
    let fip = json!({"floating_network_id": external});
    let fip = create(api, &alpha, &FLOATING_IP, fip).await;
    let group = create(api, &alpha, &SECURITY_GROUP, json!({"name": "g"})).await;
    let keys = |reads: Vec<(String, usize)>| own_work(&reads, "alpha");
    recording.take();

    let associate = json!({"floatingip": {"port_id": port}});
    let answer = api
        .update(&alpha, &FLOATING_IP, &fip, &HeaderMap::new(), associate)
        .await
        .unwrap();
    assert_eq!(answer["floatingip"]["port_id"], port.as_str(), "{answer}");
    let association = keys(recording.take());

    let up = Bytes::from(json!({"chassis": "c1", "up": true}).to_string());
    let bound = crate::chassis::bind(
        State(api.clone()),
        Path(port.clone()),
        HeaderMap::new(),
        crate::limits::RequestBody(up),
    )
    .await;
    assert_eq!(bound.status(), 200);
    let binding = keys(recording.take());
    let shown = api.db.require(&FLOATING_IP, &fip).await.unwrap();
    assert_eq!(shown.obj["status"], "ACTIVE", "the binding report followed");
    recording.take();

    let rule = json!({"security_group_id": group, "direction": "ingress", "protocol": "udp"});
    create(api, &alpha, &SECURITY_GROUP_RULE, rule).await;
    let rule_create = keys(recording.take());
    [association, binding, rule_create]
}

#[tokio::test]
async fn a_port_create_reads_only_its_own_networks_subnets() {
    let (api, recording, _dir) = recording_api();
    let alpha = member("alpha");
    let net = create(&api, &alpha, &NETWORK, json!({"name": "a"})).await;
    let subnet = json!({"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"});
    create(&api, &alpha, &SUBNET, subnet).await;
    let port = json!({"network_id": net});
    create(&api, &alpha, &PORT, port.clone()).await;

    recording.take();
    create(&api, &alpha, &PORT, port.clone()).await;
    let before = recording.take();

    // Another project's network with five large subnets.
    let beta = member("beta");
    let other = create(&api, &beta, &NETWORK, json!({"name": "b"})).await;
    let mut unrelated = vec![other.clone()];
    for i in 0..5 {
        let cidr = format!("10.{}.0.0/16", 100 + i);
        let subnet = json!({"network_id": other, "ip_version": 4, "cidr": cidr,
            "host_routes": (0..20).map(|r| json!({"destination": format!("172.16.{r}.0/24"),
                "nexthop": format!("10.{}.0.9", 100 + i)})).collect::<Vec<_>>(),
            "description": "x".repeat(255)});
        unrelated.push(create(&api, &beta, &SUBNET, subnet).await);
    }

    recording.take();
    create(&api, &alpha, &PORT, port).await;
    let after = recording.take();
    let (before, after) = (own_work(&before, "alpha"), own_work(&after, "alpha"));
    assert_eq!(
        after.len(),
        before.len(),
        "a port create read {before:?} before another project's subnets existed, {after:?} after",
    );
    for key in &after {
        assert!(
            !unrelated.iter().any(|id| key.contains(id.as_str())),
            "a port create of project alpha read {key}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_bulk_create_lets_other_tasks_run_between_its_items() {
    let (api, recording, _dir) = recording_api();
    let ticks = recording.clock.clone();
    let ticker = tokio::spawn(async move {
        loop {
            ticks.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
        }
    });
    let items = vec![json!({"name": "n"}); 50];
    api.create(
        &member("alpha"),
        &NETWORK,
        json!({ NETWORK.collection: items }),
    )
    .await
    .unwrap();
    ticker.abort();
    // Each item reads one tunnel id claim while it is planned.
    let ticks: Vec<usize> = recording
        .take()
        .into_iter()
        .filter(|(key, _)| key.starts_with("/seg/tunnel/"))
        .map(|(_, tick)| tick)
        .collect();
    assert_eq!(ticks.len(), 50, "{ticks:?}");
    assert!(
        ticks[0] >= 50,
        "the other task ran {} times while 50 items were checked",
        ticks[0]
    );
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "the other task did not run between the items: {ticks:?}"
    );
}

#[tokio::test]
async fn associations_binding_reports_and_rules_read_the_same_with_more_unrelated_objects() {
    let (api, recording, _dir) = recording_api();
    let alpha = admin("alpha");
    let (external, _) = network(
        &api,
        &alpha,
        json!({"router:external": true}),
        "172.16.0.0/16",
    )
    .await;
    let (net, subnet) = network(&api, &alpha, json!({}), "10.0.0.0/16").await;
    router(&api, &alpha, &external, &subnet).await;
    let world = (external.as_str(), net.as_str());

    let mut unrelated = Unrelated::new(&api, &external).await;
    unrelated.grow(&api, 5).await;
    let few = reads_of_calls(&api, &recording, world).await;
    unrelated.grow(&api, 195).await;
    let many = reads_of_calls(&api, &recording, world).await;

    for (call, (few, many)) in [
        "a floating IP association",
        "a binding report",
        "a rule create",
    ]
    .iter()
    .zip(few.iter().zip(&many))
    {
        assert_eq!(
            few.len(),
            many.len(),
            "{call} read {few:?} with 5 unrelated objects of each kind, {many:?} with 200"
        );
        for key in many {
            assert!(
                !unrelated.ids.iter().any(|id| key.contains(id.as_str())),
                "{call} read {key}, an unrelated object's"
            );
        }
    }
}

#[tokio::test]
async fn a_list_filtered_by_network_reads_only_that_networks_ports() {
    let (api, recording, _dir) = recording_api();
    let alpha = admin("alpha");
    let (mine, _) = network(&api, &alpha, json!({}), "10.0.0.0/24").await;
    let (other, _) = network(&api, &alpha, json!({}), "10.1.0.0/16").await;
    let mut ports = create_all(&api, &alpha, &PORT, vec![json!({"network_id": mine}); 3]).await;
    let others = create_all(&api, &alpha, &PORT, vec![json!({"network_id": other}); 50]).await;
    let list = |query: String| {
        let (api, alpha) = (api.clone(), alpha.clone());
        async move {
            let q = crate::query::Query::parse(Some(&query));
            api.list(&alpha, &PORT, &q, "").await.unwrap()
        }
    };
    let ids = |listed: &Value| -> Vec<String> {
        listed["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };

    recording.take();
    let listed = list(format!("network_id={mine}&network_id={mine}")).await;
    let reads = recording.take();
    ports.sort();
    assert_eq!(ids(&listed), ports);
    for (key, _) in &reads {
        assert!(
            !others.iter().any(|id| key.contains(id.as_str())),
            "a list of one network's ports read {key}"
        );
    }
    // Any of two networks answers as the whole collection does, pages included (their links
    // repeat each query); a null spelling (which an index cannot answer) reads the collection and
    // finds nothing.
    assert_eq!(
        list(format!("network_id={mine}&network_id={other}&limit=7")).await["ports"],
        list("limit=7".to_string()).await["ports"]
    );
    assert_eq!(
        list(format!("network_id={other}&network_id={mine}")).await,
        list(String::new()).await
    );
    assert_eq!(
        ids(&list("network_id=None".to_string()).await),
        Vec::<String>::new()
    );
}
