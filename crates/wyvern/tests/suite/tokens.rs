//! Token authentication through the server's configuration file (`wyvern server --config FILE`):
//! once tokens are configured, `X-Auth-Token` alone says who asks — a request without a known
//! token is 401, and the `X-Project-Id` / `X-Roles` headers that select a project without tokens
//! are ignored.

use serde_json::{Value, json};

use crate::server;
use server::ServerProcess;

/// Sends `req` with `headers`; the status and the JSON body (null if none).
async fn request(req: reqwest::RequestBuilder, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = req;
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_config_file_decide_who_asks() {
    let _alone = crate::support::alone_async().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("wyvern.json");
    std::fs::write(
        &config,
        json!({"auth": {"tokens": {
            "t-admin": {"project_id": "ops", "roles": ["admin"]},
            "t-alpha": {"project_id": "alpha", "roles": ["member"]},
            "t-beta": {"project_id": "beta", "roles": ["member"]},
        }}})
        .to_string(),
    )
    .unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let server = ServerProcess::start(&store, &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    let networks = format!("{}/v2.0/networks", server.base);
    let create = |name: &str| json!({"network": {"name": name}});

    // No token, an unknown one, or only the headers that work without tokens: 401.
    for headers in [
        vec![],
        vec![("X-Auth-Token", "t-nobody")],
        vec![("X-Project-Id", "alpha"), ("X-Roles", "admin")],
    ] {
        let (status, body) = request(client.get(&networks), &headers).await;
        assert_eq!(status, 401, "{headers:?}: {body}");
        assert_eq!(body["NeutronError"]["type"], "HTTPUnauthorized", "{body}");
    }

    // A member's token: its own project, whatever the headers claim.
    let (status, body) = request(
        client.post(&networks).json(&create("a-net")),
        &[
            ("X-Auth-Token", "t-alpha"),
            ("X-Project-Id", "beta"),
            ("X-Roles", "admin"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["network"]["project_id"], "alpha");
    // Members may not create shared networks (admin only): the headers gave no admin role.
    let shared = json!({"network": {"name": "s", "shared": true}});
    let (status, _) = request(
        client.post(&networks).json(&shared),
        &[("X-Auth-Token", "t-alpha"), ("X-Roles", "admin")],
    )
    .await;
    assert_eq!(status, 403);

    // Another project does not see it; the admin token does.
    let names = |body: &Value| -> Vec<String> {
        body["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = request(client.get(&networks), &[("X-Auth-Token", "t-beta")]).await;
    assert_eq!(status, 200);
    assert!(names(&body).is_empty(), "{body}");
    let (_, body) = request(client.get(&networks), &[("X-Auth-Token", "t-admin")]).await;
    assert_eq!(names(&body), ["a-net"]);
    let (status, body) = request(
        client.post(&networks).json(&shared),
        &[("X-Auth-Token", "t-admin")],
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["network"]["project_id"], "ops");
}
