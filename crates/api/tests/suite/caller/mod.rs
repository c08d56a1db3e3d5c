//! Who calls the API in the tests that check policy (the admin, or a member of a project) and a
//! client that calls as them.

use serde_json::Value;

use crate::support;

/// Who sends a request: the admin (an agent, for Wyvern's own endpoints), or a member of a
/// project.
#[derive(Clone, Copy)]
pub enum Who {
    Admin,
    Member(&'static str),
}

pub const ADMIN: Who = Who::Admin;
pub const ALICE: Who = Who::Member("project-alice");
pub const BOB: Who = Who::Member("project-bob");

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

impl Client {
    pub fn new(server: &support::Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    pub async fn call(
        &self,
        who: Who,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Who::Member(project) = who {
            req = req
                .header("X-Project-Id", project)
                .header("X-Roles", "member,reader");
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}
