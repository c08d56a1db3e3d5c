//! The agent's calls to the server: chassis registration and heartbeats, port bindings, and port
//! lookups (which network a new local VIF belongs to).

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Value, json};

use crate::AgentError;

/// An HTTP client for the server's agent-facing endpoints.
#[derive(Clone)]
pub struct Server {
    base: String,
    http: reqwest::Client,
}

impl Server {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), AgentError> {
        let resp = req
            .send()
            .await
            .map_err(|e| AgentError::Server(e.to_string()))?;
        let status = resp.status().as_u16();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body))
    }

    /// Registers the chassis; returns its liveness lease.
    pub async fn register(
        &self,
        chassis: &str,
        tunnel_ip: IpAddr,
        encap: &str,
    ) -> Result<i64, AgentError> {
        let body = json!({"tunnel_ip": tunnel_ip, "encaps": [encap]});
        let url = format!("{}/wyvern/v1/chassis/{chassis}", self.base);
        match self.send(self.http.put(url).json(&body)).await? {
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
        let url = format!("{}/wyvern/v1/chassis/{chassis}/heartbeat", self.base);
        match self
            .send(self.http.post(url).json(&json!({"lease": lease})))
            .await?
        {
            (200, _) => Ok(true),
            (404, _) => Ok(false),
            (s, v) => Err(AgentError::Server(format!("heartbeat answered {s}: {v}"))),
        }
    }

    /// Reports that a port's VIF appeared on (`up`) or left this chassis.
    pub async fn bind(&self, port: &str, chassis: &str, up: bool) -> Result<(), AgentError> {
        let url = format!("{}/wyvern/v1/ports/{port}/binding", self.base);
        match self
            .send(
                self.http
                    .put(url)
                    .json(&json!({"chassis": chassis, "up": up})),
            )
            .await?
        {
            (200, _) | (404, _) => Ok(()),
            (s, v) => Err(AgentError::Server(format!("binding answered {s}: {v}"))),
        }
    }

    /// The network of a port, if the port exists.
    pub async fn port_network(&self, port: &str) -> Result<Option<String>, AgentError> {
        let url = format!("{}/v2.0/ports/{port}?fields=network_id", self.base);
        match self.send(self.http.get(url)).await? {
            (200, v) => Ok(v["port"]["network_id"].as_str().map(String::from)),
            (404, _) => Ok(None),
            (s, v) => Err(AgentError::Server(format!("port lookup answered {s}: {v}"))),
        }
    }
}
