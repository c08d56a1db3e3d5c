//! `revision_number` as Neutron keeps it (its revision plugin, neutron/services/revisions/
//! revision_plugin.py): every write that changes an object bumps its revision by exactly one, however
//! many attributes the write changes (one bump per object and transaction); a write that changes
//! nothing (`session.is_modified` is false) keeps it; adding or removing a tag bumps it (a tag
//! `revises_on_change` its standard attributes). Some changes revise a related object too: a subnet
//! created, updated or deleted bumps its network (`Subnet.revises_on_change =
//! ('network_standard_attr',)`), a security group rule created or deleted bumps its group
//! (`SecurityGroupRule.revises_on_change = ('security_group',)`). Checked for every kind with a
//! revision number.

use crate::support;

use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(server: &support::Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/v2.0", server.base),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Creates one `singular` in `collection`; its body as answered.
    async fn create(&self, collection: &str, singular: &str, body: Value) -> Value {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                &format!("/{collection}"),
                Some(json!({ singular: body })),
            )
            .await;
        assert_eq!(status, 201, "creating a {singular}: {v}");
        v[singular].clone()
    }

    /// The revision number `GET` shows.
    async fn revision(&self, collection: &str, singular: &str, id: &str) -> u64 {
        let (status, v) = self
            .call(reqwest::Method::GET, &format!("/{collection}/{id}"), None)
            .await;
        assert_eq!(status, 200, "showing {singular} {id}: {v}");
        revision_of(&v[singular])
    }

    /// Updates `id` with `changes`; the revision number of the answer, which `GET` must show too.
    async fn update(&self, collection: &str, singular: &str, id: &str, changes: Value) -> u64 {
        let (status, v) = self
            .call(
                reqwest::Method::PUT,
                &format!("/{collection}/{id}"),
                Some(json!({ singular: changes })),
            )
            .await;
        assert_eq!(status, 200, "updating {singular} {id} with {changes}: {v}");
        let answered = revision_of(&v[singular]);
        let shown = self.revision(collection, singular, id).await;
        assert_eq!(
            answered, shown,
            "{singular}: the update answered revision {answered}, GET shows {shown}"
        );
        answered
    }
}

fn revision_of(obj: &Value) -> u64 {
    obj["revision_number"]
        .as_u64()
        .unwrap_or_else(|| panic!("no revision_number in {obj}"))
}

fn id(obj: &Value) -> String {
    obj["id"].as_str().expect("an id").to_owned()
}

/// One kind: its path under `/v2.0`, an attribute an update may change (and another one, if it
/// has a second free-text attribute), and whether it takes tags.
struct Kind {
    collection: &'static str,
    singular: &'static str,
    attr: &'static str,
    other: Option<&'static str>,
    taggable: bool,
}

/// Records a wrong revision number.
fn expect(wrong: &mut Vec<String>, got: u64, want: u64, what: String) {
    if got != want {
        wrong.push(format!("{what}: revision {got}, want {want}"));
    }
}

/// The life of one object of `kind`: every update, tag and no-op, and the revision each must leave;
/// what was wrong.
async fn check_kind(c: &Client, kind: &Kind, obj: &Value) -> Vec<String> {
    let (coll, sing, attr) = (kind.collection, kind.singular, kind.attr);
    let mut wrong = Vec::new();
    let id = id(obj);
    let r0 = revision_of(obj);
    let shown = c.revision(coll, sing, &id).await;
    expect(&mut wrong, shown, r0, format!("{sing}: GET after create"));

    let r = c.update(coll, sing, &id, json!({ attr: "first" })).await;
    expect(
        &mut wrong,
        r,
        r0 + 1,
        format!("{sing}: an update changing {attr}"),
    );
    let r0 = r - 1;
    let r = c.update(coll, sing, &id, json!({ attr: "second" })).await;
    expect(
        &mut wrong,
        r,
        r0 + 2,
        format!("{sing}: a second changing update"),
    );
    let r0 = r - 2;
    // Neutron bumps only objects the session modified: the same value again changes nothing.
    let r = c.update(coll, sing, &id, json!({ attr: "second" })).await;
    expect(
        &mut wrong,
        r,
        r0 + 2,
        format!("{sing}: an update to the same {attr}"),
    );
    let r0 = r - 2;
    let r = c.update(coll, sing, &id, json!({})).await;
    expect(&mut wrong, r, r0 + 2, format!("{sing}: an empty update"));
    let r0 = r - 2;
    // Two attributes in one update: one write, one bump.
    let changed = match kind.other {
        Some(other) => json!({ attr: "third", other: "changed too" }),
        None => json!({ attr: "third" }),
    };
    let r = c.update(coll, sing, &id, changed.clone()).await;
    expect(
        &mut wrong,
        r,
        r0 + 3,
        format!("{sing}: one update of {changed}"),
    );
    let r0 = r - 3;

    if kind.taggable {
        let tag = format!("/{coll}/{id}/tags/red");
        let (status, v) = c.call(reqwest::Method::PUT, &tag, None).await;
        assert_eq!(status, 201, "{sing}: adding a tag: {v}");
        let r = c.revision(coll, sing, &id).await;
        expect(&mut wrong, r, r0 + 4, format!("{sing}: adding a tag"));
        let r0 = r - 4;
        let (status, v) = c.call(reqwest::Method::DELETE, &tag, None).await;
        assert_eq!(status, 204, "{sing}: removing a tag: {v}");
        let r = c.revision(coll, sing, &id).await;
        expect(&mut wrong, r, r0 + 5, format!("{sing}: removing a tag"));
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_update_of_every_kind_bumps_the_revision_by_exactly_one() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let kind = |collection, singular, attr, taggable| Kind {
        collection,
        singular,
        attr,
        other: Some("description"),
        taggable,
    };

    let net = c.create("networks", "network", json!({"name": "n"})).await;
    let subnet = c
        .create(
            "subnets",
            "subnet",
            json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.9.0.0/24", "name": "s"}),
        )
        .await;
    let port = c
        .create(
            "ports",
            "port",
            json!({"network_id": id(&net), "name": "p"}),
        )
        .await;
    let router = c.create("routers", "router", json!({"name": "r"})).await;
    let group = c
        .create("security-groups", "security_group", json!({"name": "g"}))
        .await;
    let address_group = c
        .create(
            "address-groups",
            "address_group",
            json!({"name": "ag", "addresses": ["10.1.0.0/24"]}),
        )
        .await;
    let public = c
        .create(
            "networks",
            "network",
            json!({"name": "public", "router:external": true}),
        )
        .await;
    c.create(
        "subnets",
        "subnet",
        json!({"network_id": id(&public), "ip_version": 4, "cidr": "203.0.113.0/24"}),
    )
    .await;
    let fip = c
        .create(
            "floatingips",
            "floatingip",
            json!({"floating_network_id": id(&public)}),
        )
        .await;
    let parent = c
        .create(
            "ports",
            "port",
            json!({"network_id": id(&net), "name": "parent"}),
        )
        .await;
    let trunk = c
        .create(
            "trunks",
            "trunk",
            json!({"port_id": id(&parent), "name": "t"}),
        )
        .await;

    let cases = [
        (kind("networks", "network", "name", true), &net),
        (kind("subnets", "subnet", "name", true), &subnet),
        (kind("ports", "port", "name", true), &port),
        (kind("routers", "router", "name", true), &router),
        (
            kind("security-groups", "security_group", "name", true),
            &group,
        ),
        (
            kind("address-groups", "address_group", "name", false),
            &address_group,
        ),
        (
            Kind {
                other: None,
                ..kind("floatingips", "floatingip", "description", true)
            },
            &fip,
        ),
        (kind("trunks", "trunk", "name", true), &trunk),
    ];
    let mut wrong = Vec::new();
    for (kind, obj) in &cases {
        // The network's revision moves with its subnets: read it afresh.
        let obj = if kind.collection == "networks" {
            let (_, v) = c
                .call(
                    reqwest::Method::GET,
                    &format!("/networks/{}", id(obj)),
                    None,
                )
                .await;
            v["network"].clone()
        } else {
            (*obj).clone()
        };
        wrong.extend(check_kind(&c, kind, &obj).await);
    }
    assert!(wrong.is_empty(), "wrong revisions:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_bump_their_network_and_rules_their_group() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.create("networks", "network", json!({"name": "n"})).await;
    let net_id = id(&net);
    let mut rev = revision_of(&net);

    // A subnet created, updated and deleted: each bumps the network by one.
    let subnet = c
        .create(
            "subnets",
            "subnet",
            json!({"network_id": net_id, "ip_version": 4, "cidr": "10.8.0.0/24"}),
        )
        .await;
    rev += 1;
    assert_eq!(
        c.revision("networks", "network", &net_id).await,
        rev,
        "a new subnet bumps its network by one"
    );
    c.update(
        "subnets",
        "subnet",
        &id(&subnet),
        json!({"name": "renamed"}),
    )
    .await;
    rev += 1;
    assert_eq!(
        c.revision("networks", "network", &net_id).await,
        rev,
        "an updated subnet bumps its network by one"
    );
    let (status, v) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/subnets/{}", id(&subnet)),
            None,
        )
        .await;
    assert_eq!(status, 204, "{v}");
    rev += 1;
    assert_eq!(
        c.revision("networks", "network", &net_id).await,
        rev,
        "a deleted subnet bumps its network by one"
    );

    // A rule created and deleted: each bumps its group by one.
    let group = c
        .create("security-groups", "security_group", json!({"name": "g"}))
        .await;
    let group_id = id(&group);
    let before = c
        .revision("security-groups", "security_group", &group_id)
        .await;
    let rule = c
        .create(
            "security-group-rules",
            "security_group_rule",
            json!({"security_group_id": group_id, "direction": "ingress",
                   "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}),
        )
        .await;
    assert_eq!(
        c.revision("security-groups", "security_group", &group_id)
            .await,
        before + 1,
        "a new rule bumps its group by one"
    );
    let (status, v) = c
        .call(
            reqwest::Method::DELETE,
            &format!("/security-group-rules/{}", id(&rule)),
            None,
        )
        .await;
    assert_eq!(status, 204, "{v}");
    assert_eq!(
        c.revision("security-groups", "security_group", &group_id)
            .await,
        before + 2,
        "a deleted rule bumps its group by one"
    );
}
