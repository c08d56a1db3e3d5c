//! The agent's calls to the server: chassis registration and heartbeats, port bindings, and port
//! lookups (which network a new local VIF belongs to). They go to the server in use of the agent's
//! [`Servers`], the replica's: a call that finds it failing (no connection, no answer in time, an
//! error status 5xx) moves the agent to another, and the caller's retry goes there.

use std::time::Duration;

use nb_sync::Servers;
use serde_json::{Value, json};

use std::net::IpAddr;

use crate::AgentError;

/// An HTTP client for the server's agent-facing endpoints.
#[derive(Clone)]
pub struct Server {
    servers: Servers,
    http: reqwest::Client,
}

impl Server {
    pub fn new(servers: Servers) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Self { servers, http }
    }

    /// Sends the request `build` makes from the base URL of the server in use; a transport failure
    /// or a 5xx answer counts against that server.
    async fn send(
        &self,
        build: impl FnOnce(&str) -> reqwest::RequestBuilder,
    ) -> Result<(u16, Value), AgentError> {
        let base = self.servers.current();
        let resp = match build(&base).send().await {
            Ok(resp) => resp,
            Err(e) => {
                self.servers.failed(&base);
                return Err(AgentError::Server(format!("{base}: {e}")));
            }
        };
        let status = resp.status().as_u16();
        if status >= 500 {
            self.servers.failed(&base);
        }
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Registers the chassis (its tunnel address and encapsulation, the physical networks it
    /// reaches, whether it may host gateways); returns its liveness lease.
    pub async fn register(
        &self,
        chassis: &str,
        tunnel_ip: IpAddr,
        encap: &str,
        physnets: &[&str],
        gateway: bool,
    ) -> Result<i64, AgentError> {
        let body = json!({"tunnel_ip": tunnel_ip, "encaps": [encap],
            "physnets": physnets, "gateway": gateway});
        let path = format!("/wyvern/v1/chassis/{chassis}");
        match self
            .send(|base| self.http.put(format!("{base}{path}")).json(&body))
            .await?
        {
            (200, v) => v["lease"]
                .as_i64()
                .ok_or_else(|| AgentError::Server(format!("registration without lease: {v}"))),
            (s, v) => Err(AgentError::Server(format!(
                "registration answered {s}: {v}"
            ))),
        }
    }

    /// Keeps the lease alive; `false` when it already ended.
    pub async fn heartbeat(&self, chassis: &str, lease: i64) -> Result<bool, AgentError> {
        self.heartbeat_with(chassis, lease, None).await
    }

    /// Keeps the lease alive and, with `peers`, reports the data plane of the other chassis as
    /// this chassis' BFD sees it (`{"<chassis>": "up" | "down"}`, known verdicts only); `false`
    /// when the lease already ended.
    pub async fn heartbeat_with(
        &self,
        chassis: &str,
        lease: i64,
        peers: Option<&std::collections::BTreeMap<String, bool>>,
    ) -> Result<bool, AgentError> {
        let path = format!("/wyvern/v1/chassis/{chassis}/heartbeat");
        let mut body = json!({"lease": lease});
        if let Some(peers) = peers {
            let shown: serde_json::Map<String, serde_json::Value> = peers
                .iter()
                .map(|(c, up)| (c.clone(), json!(if *up { "up" } else { "down" })))
                .collect();
            body["peers"] = serde_json::Value::Object(shown);
        }
        match self
            .send(|base| self.http.post(format!("{base}{path}")).json(&body))
            .await?
        {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (s, v) => Err(AgentError::Server(format!("heartbeat answered {s}: {v}"))),
        }
    }

    /// Reports that a port's VIF appeared on (`up`) or left this chassis.
    pub async fn bind(&self, port: &str, chassis: &str, up: bool) -> Result<(), AgentError> {
        let path = format!("/wyvern/v1/ports/{port}/binding");
        let body = json!({"chassis": chassis, "up": up});
        match self
            .send(|base| self.http.put(format!("{base}{path}")).json(&body))
            .await?
        {
            (200, _) | (404, _) => Ok(()),
            (s, v) => Err(AgentError::Server(format!("binding answered {s}: {v}"))),
        }
    }

    /// Reports many VIFs of `chassis` at once (`(port, up)`), in one request; a server without
    /// the batch endpoint (an older one, during an upgrade) gets them one by one.
    pub async fn bind_many(
        &self,
        chassis: &str,
        batch: &[(String, bool)],
    ) -> Result<(), AgentError> {
        let path = format!("/wyvern/v1/chassis/{chassis}/bindings");
        let bindings: Vec<Value> = batch
            .iter()
            .map(|(port, up)| json!({"port_id": port, "up": up}))
            .collect();
        let body = json!({ "bindings": bindings });
        match self
            .send(|base| self.http.post(format!("{base}{path}")).json(&body))
            .await?
        {
            (200, _) => Ok(()),
            (404, _) => {
                for (port, up) in batch {
                    self.bind(port, chassis, *up).await?;
                }
                Ok(())
            }
            (s, v) => Err(AgentError::Server(format!("bindings answered {s}: {v}"))),
        }
    }

    /// Asks for this chassis' SNAT address on an external network (allocated on first use).
    pub async fn snat_address(&self, chassis: &str, network: &str) -> Result<(), AgentError> {
        let path = format!("/wyvern/v1/chassis/{chassis}/snat/{network}");
        match self
            .send(|base| self.http.put(format!("{base}{path}")))
            .await?
        {
            (200, _) => Ok(()),
            (s, v) => Err(AgentError::Server(format!(
                "SNAT address request answered {s}: {v}"
            ))),
        }
    }

    /// Reports a health check's verdict on a load-balancer member (`ONLINE` or `ERROR`); a member
    /// that no longer exists needs no report.
    pub async fn member_health(&self, member: &str, health: &str) -> Result<(), AgentError> {
        let path = format!("/wyvern/v1/members/{member}/health");
        let body = json!({"health": health});
        match self
            .send(|base| self.http.put(format!("{base}{path}")).json(&body))
            .await?
        {
            (200, _) | (404, _) => Ok(()),
            (s, v) => Err(AgentError::Server(format!(
                "member health report answered {s}: {v}"
            ))),
        }
    }

    /// The network of a port, if the port exists.
    pub async fn port_network(&self, port: &str) -> Result<Option<String>, AgentError> {
        let path = format!("/v2.0/ports/{port}?fields=network_id");
        match self
            .send(|base| self.http.get(format!("{base}{path}")))
            .await?
        {
            (200, v) => Ok(v["port"]["network_id"].as_str().map(String::from)),
            (404, _) => Ok(None),
            (s, v) => Err(AgentError::Server(format!("port lookup answered {s}: {v}"))),
        }
    }
}
