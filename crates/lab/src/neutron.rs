//! A small client of the server's Neutron API: what the lab needs to create and find
//! networks, subnets, ports, routers, security groups and address groups, acting as admin or
//! as a project. Collections are named as in JSON bodies (`security_groups`); their URL segment
//! has dashes instead (`security-groups`), as Neutron's. The load-balancer API's collections are
//! paths below `/v2.0/` (`lbaas/loadbalancers`, `lbaas/pools/<id>/members`) whose last segment
//! names the list in JSON bodies.

use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::{Error, Result};

/// How long one readiness probe of a server may take.
const PROBE: Duration = Duration::from_secs(1);

/// The API at `base` (`http://ADDR:PORT`).
#[derive(Debug, Clone)]
pub(crate) struct Neutron {
    base: String,
    http: reqwest::Client,
}

impl Neutron {
    pub(crate) fn new(base: &str) -> Result<Neutron> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Neutron {
            base: base.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Waits until the server answers, for at most `timeout`; false if it never did.
    pub(crate) async fn wait_ready(
        &self,
        timeout: Duration,
        mut alive: impl FnMut() -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            // Each probe briefly: what holds the port may never answer (another program).
            let ok = self
                .http
                .get(format!("{}/v2.0/networks?limit=1", self.base))
                .timeout(PROBE)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return true;
            }
            if Instant::now() >= end || !alive() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a request, as `project` (with the member role) or as admin (`None`); returns
    /// the JSON body (`Null` for an empty one).
    async fn call(
        &self,
        method: Method,
        path: &str,
        project: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let url = format!("{}/v2.0/{path}", self.base);
        let mut req: RequestBuilder = self.http.request(method.clone(), &url);
        if let Some(p) = project {
            req = req.header("X-Project-Id", p).header("X-Roles", "member");
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        if !status.is_success() {
            return Err(Error::Api {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                body: text,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Error::Api {
            method: method.to_string(),
            url,
            status: status.as_u16(),
            body: format!("not JSON ({e}): {text}"),
        })
    }

    /// Lists `collection` filtered by `query` (`k=v&...`, values without reserved
    /// characters), as admin.
    pub(crate) async fn list(&self, collection: &str, query: &str) -> Result<Vec<Value>> {
        self.list_as(collection, query, None).await
    }

    /// Like [`Neutron::list`], as `project` (`None`: admin): what that project sees.
    pub(crate) async fn list_as(
        &self,
        collection: &str,
        query: &str,
        project: Option<&str>,
    ) -> Result<Vec<Value>> {
        let path = format!("{}?{query}", segment(collection));
        let v = self.call(Method::GET, &path, project, None).await?;
        let key = collection.rsplit('/').next().unwrap_or(collection);
        Ok(v.get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Shows one object; `None` if it does not exist.
    pub(crate) async fn show(
        &self,
        collection: &str,
        singular: &str,
        id: &str,
    ) -> Result<Option<Value>> {
        match self
            .call(
                Method::GET,
                &format!("{}/{id}", segment(collection)),
                None,
                None,
            )
            .await
        {
            Ok(v) => Ok(v.get(singular).cloned()),
            Err(Error::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The object the lab made as `known` (its id, if the state has one), else the one called
    /// `name` that `owner` owns; `None` if neither exists.
    pub(crate) async fn find(
        &self,
        collection: &str,
        singular: &str,
        known: Option<&str>,
        name: &str,
        owner: &str,
    ) -> Result<Option<Value>> {
        if let Some(id) = known
            && let Some(v) = self.show(collection, singular, id).await?
        {
            return Ok(Some(v));
        }
        Ok(self
            .list(collection, &format!("name={name}"))
            .await?
            .into_iter()
            .find(|v| text(v, "project_id") == owner))
    }

    /// Creates an object as `project`; returns it.
    pub(crate) async fn create(
        &self,
        collection: &str,
        singular: &str,
        project: Option<&str>,
        attrs: Value,
    ) -> Result<Value> {
        let body = serde_json::json!({ singular: attrs });
        let v = self
            .call(Method::POST, &segment(collection), project, Some(&body))
            .await?;
        Ok(v.get(singular).cloned().unwrap_or(Value::Null))
    }

    /// Updates an object as admin; returns it.
    pub(crate) async fn update(
        &self,
        collection: &str,
        singular: &str,
        id: &str,
        attrs: Value,
    ) -> Result<Value> {
        let body = serde_json::json!({ singular: attrs });
        let v = self
            .call(
                Method::PUT,
                &format!("{}/{id}", segment(collection)),
                None,
                Some(&body),
            )
            .await?;
        Ok(v.get(singular).cloned().unwrap_or(Value::Null))
    }

    /// `PUT <collection>/<id>/<action>` with `body` as it is, as admin (a router's
    /// `add_router_interface`, an address group's `add_addresses`); returns the answer.
    pub(crate) async fn act(
        &self,
        collection: &str,
        id: &str,
        action: &str,
        body: Value,
    ) -> Result<Value> {
        self.call(
            Method::PUT,
            &format!("{}/{id}/{action}", segment(collection)),
            None,
            Some(&body),
        )
        .await
    }

    /// Deletes an object as admin; a missing one is no error.
    pub(crate) async fn delete(&self, collection: &str, id: &str) -> Result<()> {
        self.delete_with(collection, id, "").await
    }

    /// Like [`Neutron::delete`], with `query` (`cascade=true`; empty: none).
    pub(crate) async fn delete_with(&self, collection: &str, id: &str, query: &str) -> Result<()> {
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        match self
            .call(
                Method::DELETE,
                &format!("{}/{id}{query}", segment(collection)),
                None,
                None,
            )
            .await
        {
            Ok(_) | Err(Error::Api { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The URL segment of `collection` (Neutron's have dashes, networking-sfc's under `sfc/`
/// underscores).
fn segment(collection: &str) -> String {
    if collection.starts_with("sfc/") {
        collection.to_owned()
    } else {
        collection.replace('_', "-")
    }
}

/// `v[key]` as a string.
pub(crate) fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}
