//! A small client of Wyvern's Neutron API for the controller: list (with filters), create,
//! update, delete, tags and member actions. Collections are given as URL paths below `/v2.0/`
//! (`security-groups`, `lbaas/pools/<id>/members`); a list's JSON key is the last segment with
//! underscores. Authentication as the CNI plugin and the lab do: a token (`X-Auth-Token`) or the
//! no-auth headers (`X-Project-Id`, `X-Roles: admin`).

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::Error;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the API at one base URL.
#[derive(Debug, Clone)]
pub struct Neutron {
    base: String,
    http: reqwest::Client,
    headers: Vec<(&'static str, String)>,
}

/// Percent-encodes a query component (everything but unreserved characters).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON key of a collection path: its last segment with underscores.
fn key_of(path: &str) -> String {
    path.split('?')
        .next()
        .unwrap_or(path)
        .rsplit('/')
        .next()
        .unwrap_or(path)
        .replace('-', "_")
}

impl Neutron {
    /// A client for `base` (`http://HOST:PORT`) sending `headers` with every request.
    pub fn new(base: &str, headers: Vec<(&'static str, String)>) -> Result<Neutron, Error> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| Error::Neutron {
                what: "building the HTTP client".into(),
                status: None,
                body: e.to_string(),
            })?;
        Ok(Neutron {
            base: base.trim_end_matches('/').to_owned(),
            http,
            headers,
        })
    }

    /// One request; the JSON body of the answer (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, Error> {
        let mut url = format!("{}/v2.0/{path}", self.base);
        if !query.is_empty() {
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
            url = format!("{url}?{}", q.join("&"));
        }
        let what = format!("{method} /v2.0/{path}");
        let mut req = self.http.request(method, &url);
        for (k, v) in &self.headers {
            req = req.header(*k, v);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| Error::Neutron {
            what: what.clone(),
            status: None,
            body: e.to_string(),
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| Error::Neutron {
            what: what.clone(),
            status: Some(status.as_u16()),
            body: e.to_string(),
        })?;
        if !status.is_success() {
            return Err(Error::Neutron {
                what,
                status: Some(status.as_u16()),
                body: text,
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| Error::Neutron {
            what,
            status: Some(status.as_u16()),
            body: format!("not JSON ({e}): {text}"),
        })
    }

    /// The objects of `collection` that pass `query`.
    pub async fn list(
        &self,
        collection: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<Value>, Error> {
        let v = self.call(Method::GET, collection, query, None).await?;
        Ok(v.get(key_of(collection))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Creates a `singular` in `collection`; returns it.
    pub async fn create(
        &self,
        collection: &str,
        singular: &str,
        body: Value,
    ) -> Result<Value, Error> {
        let v = self
            .call(
                Method::POST,
                collection,
                &[],
                Some(&json!({ singular: body })),
            )
            .await?;
        Ok(v.get(singular).cloned().unwrap_or(v))
    }

    /// Creates several objects in one bulk request (`{"<plural>": [...]}`, all or none);
    /// returns them in order.
    pub async fn create_many(
        &self,
        collection: &str,
        plural: &str,
        bodies: Vec<Value>,
    ) -> Result<Vec<Value>, Error> {
        let v = self
            .call(
                Method::POST,
                collection,
                &[],
                Some(&json!({ plural: bodies })),
            )
            .await?;
        Ok(v.get(plural)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Updates `id`; returns it.
    pub async fn update(
        &self,
        collection: &str,
        singular: &str,
        id: &str,
        body: Value,
    ) -> Result<Value, Error> {
        let v = self
            .call(
                Method::PUT,
                &format!("{collection}/{id}"),
                &[],
                Some(&json!({ singular: body })),
            )
            .await?;
        Ok(v.get(singular).cloned().unwrap_or(v))
    }

    /// Deletes `id` (with `query`, e.g. `cascade=true`); one already gone is success.
    pub async fn delete(
        &self,
        collection: &str,
        id: &str,
        query: &[(&str, String)],
    ) -> Result<(), Error> {
        match self
            .call(Method::DELETE, &format!("{collection}/{id}"), query, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the tags of `id`.
    pub async fn set_tags(&self, collection: &str, id: &str, tags: &[String]) -> Result<(), Error> {
        self.call(
            Method::PUT,
            &format!("{collection}/{id}/tags"),
            &[],
            Some(&json!({ "tags": tags })),
        )
        .await
        .map(|_| ())
    }

    /// `PUT <collection>/<id>/<action>` with `body`.
    pub async fn action(
        &self,
        collection: &str,
        id: &str,
        action: &str,
        body: Value,
    ) -> Result<Value, Error> {
        self.call(
            Method::PUT,
            &format!("{collection}/{id}/{action}"),
            &[],
            Some(&body),
        )
        .await
    }

    /// `PUT /v2.0/quotas/<project>` with `limits`.
    pub async fn set_quotas(&self, project: &str, limits: Value) -> Result<(), Error> {
        self.call(
            Method::PUT,
            &format!("quotas/{project}"),
            &[],
            Some(&json!({ "quota": limits })),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn list_keys() {
        assert_eq!(super::key_of("security-groups"), "security_groups");
        assert_eq!(super::key_of("lbaas/pools/x/members"), "members");
        assert_eq!(super::key_of("lbaas/loadbalancers"), "loadbalancers");
        assert_eq!(
            super::encode("k8s-cluster:a,b c"),
            "k8s-cluster%3Aa%2Cb%20c"
        );
    }
}
