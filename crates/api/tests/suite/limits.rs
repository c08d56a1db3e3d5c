//! What a client may make the server hold: request bodies over the size limit (413), not JSON (415) or
//! too slow (408), all with `NeutronError` bodies; error messages that never repeat a large input; and
//! connections: a cap on how many are served at once, and a header timeout that also closes idle
//! keep-alive connections, so that stalled sockets cannot take the server's file descriptors.

use crate::support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api::{ApiConfig, Limits};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest any test here waits for the server (a guard against hanging, not a measurement).
const PATIENCE: Duration = Duration::from_secs(30);

fn limited(limits: Limits) -> support::Server {
    support::Server::start_with(ApiConfig {
        limits,
        ..ApiConfig::default()
    })
}

fn addr(server: &support::Server) -> &str {
    server.base.trim_start_matches("http://")
}

/// The status and JSON body of a raw HTTP/1.1 answer.
fn parse(answer: &str) -> (u16, Value) {
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Sends `head` and `body` on a new connection, then reads the answer until the server closes.
async fn raw(server: &support::Server, head: &str, body: &[u8]) -> (u16, Value) {
    let exchange = async {
        let mut socket = TcpStream::connect(addr(server)).await.unwrap();
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    let answer = tokio::time::timeout(PATIENCE, exchange)
        .await
        .expect("the server answered");
    parse(&answer)
}

/// Sends a request with a raw body and content type; the status and JSON answer.
async fn send(
    method: reqwest::Method,
    url: &str,
    content_type: Option<&str>,
    body: String,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, url).body(body);
    if let Some(ct) = content_type {
        req = req.header("Content-Type", ct);
    }
    let resp = req.send().await.expect("an answer");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn assert_error(answer: &(u16, Value), status: u16, kind: &str) {
    let (got, body) = answer;
    let shown: String = body.to_string().chars().take(300).collect();
    assert_eq!(*got, status, "{shown}");
    assert_eq!(body["NeutronError"]["type"], kind, "{shown}");
    assert_eq!(body["NeutronError"]["detail"], "", "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413() {
    let server = limited(Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    });
    let url = format!("{}/v2.0/networks", server.base);
    let bulk = |n: usize| json!({"networks": vec![json!({"name": "n"}); n]}).to_string();
    let json = Some("application/json");
    let (status, body) = send(reqwest::Method::POST, &url, json, bulk(20)).await;
    assert_eq!(status, 201, "a body under the limit: {body}");
    // Over the limit: the client still sending gets the answer, not a reset connection.
    let answer = send(reqwest::Method::POST, &url, json, bulk(1000)).await;
    assert_error(&answer, 413, "HTTPRequestEntityTooLarge");
    let message = answer.1["NeutronError"]["message"].as_str().unwrap();
    assert!(message.contains("4096"), "{message}");
    // A body declared far beyond the limit is answered at once, without being read.
    let head = "POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 1073741824\r\n\r\n";
    let answer = raw(&server, head, b"{\"networks\": [").await;
    assert_error(&answer, 413, "HTTPRequestEntityTooLarge");
    // A body of undeclared length is cut off once it passes the limit.
    let head = "POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    let chunk = format!("{:x}\r\n{}\r\n", 3000, " ".repeat(3000));
    let body = format!("{chunk}{chunk}0\r\n\r\n");
    let answer = raw(&server, head, body.as_bytes()).await;
    assert_error(&answer, 413, "HTTPRequestEntityTooLarge");
    // The agents' API has the same limit.
    let url = format!("{}/wyvern/v1/chassis/c1", server.base);
    let reg = json!({"tunnel_ip": "192.0.2.1", "hostname": "h".repeat(5000)}).to_string();
    let answer = send(reqwest::Method::PUT, &url, json, reg).await;
    assert_error(&answer, 413, "HTTPRequestEntityTooLarge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_body_limit_is_one_mebibyte() {
    let server = support::Server::start();
    let url = format!("{}/v2.0/networks", server.base);
    let body = |len: usize| json!({"network": {"description": "x".repeat(len)}}).to_string();
    let json = Some("application/json");
    let under = send(reqwest::Method::POST, &url, json, body(1_000_000)).await;
    assert_error(&under, 400, "HTTPBadRequest");
    let over = send(reqwest::Method::POST, &url, json, body(1_500_000)).await;
    assert_error(&over, 413, "HTTPRequestEntityTooLarge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_408() {
    let server = limited(Limits {
        idle_timeout: Duration::from_millis(500),
        ..Limits::default()
    });
    let head = "POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n";
    let answer = raw(&server, head, b"{\"network\":").await;
    assert_error(&answer, 408, "HTTPRequestTimeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_must_be_json() {
    let server = support::Server::start();
    let url = format!("{}/v2.0/networks", server.base);
    let body = || json!({"network": {"name": "n"}}).to_string();
    for refused in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let answer = send(reqwest::Method::POST, &url, Some(refused), body()).await;
        assert_error(&answer, 415, "HTTPUnsupportedMediaType");
    }
    for accepted in [
        Some("application/json"),
        Some("application/json; charset=UTF-8"),
        None,
    ] {
        let (status, answer) = send(reqwest::Method::POST, &url, accepted, body()).await;
        assert_eq!(status, 201, "{accepted:?}: {answer}");
    }
    // Requests without a body are not concerned.
    let net = send(reqwest::Method::POST, &url, None, body()).await.1["network"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tag = format!("{url}/{net}/tags/red");
    let (status, _) = send(
        reqwest::Method::PUT,
        &tag,
        Some("text/plain"),
        String::new(),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        reqwest::Method::GET,
        &url,
        Some("text/plain"),
        String::new(),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_never_echo_large_input() {
    let server = support::Server::start();
    let base = &server.base;
    let json = Some("application/json");
    let (_, net) = send(
        reqwest::Method::POST,
        &format!("{base}/v2.0/networks"),
        json,
        json!({"network": {"name": "n"}}).to_string(),
    )
    .await;
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let (_, group) = send(
        reqwest::Method::POST,
        &format!("{base}/v2.0/address-groups"),
        json,
        json!({"address_group": {"name": "g"}}).to_string(),
    )
    .await;
    let group = group["address_group"]["id"].as_str().unwrap().to_string();
    let big = "a".repeat(300_000);
    let long = "b".repeat(50_000);
    let cases: Vec<(reqwest::Method, String, Option<Value>)> = vec![
        (
            reqwest::Method::POST,
            "/v2.0/networks".into(),
            Some(json!({"network": {"name": big}})),
        ),
        (
            reqwest::Method::POST,
            "/v2.0/networks".into(),
            Some(json!({"network": {big.clone(): 1}})),
        ),
        (
            reqwest::Method::POST,
            "/v2.0/ports".into(),
            Some(json!({"port": {"network_id": big}})),
        ),
        (
            reqwest::Method::POST,
            "/v2.0/ports".into(),
            Some(json!({"port": {"network_id": net, "fixed_ips": [{big.clone(): 1}]}})),
        ),
        (
            reqwest::Method::POST,
            "/v2.0/subnets".into(),
            Some(json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": big}})),
        ),
        (
            reqwest::Method::PUT,
            format!("/v2.0/address-groups/{group}/add_addresses"),
            Some(json!({"addresses": [big]})),
        ),
        (reqwest::Method::GET, format!("/v2.0/networks/{long}"), None),
        (
            reqwest::Method::PUT,
            format!("/v2.0/networks/{net}/tags/{long}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/v2.0/networks?limit={long}"),
            None,
        ),
        (
            reqwest::Method::GET,
            format!("/v2.0/networks?{long}=1"),
            None,
        ),
        (
            reqwest::Method::PUT,
            format!("/wyvern/v1/chassis/{long}"),
            Some(json!({"tunnel_ip": "192.0.2.1"})),
        ),
        (
            reqwest::Method::POST,
            "/wyvern/v1/chassis/c1/heartbeat".into(),
            Some(json!({"lease": big})),
        ),
    ];
    for (method, path, body) in cases {
        let mut req = reqwest::Client::new().request(method.clone(), format!("{base}{path}"));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("an answer");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let shown = &path[..path.len().min(60)];
        assert!((400..500).contains(&status), "{method} {shown}: {status}");
        assert!(
            text.len() < 2048,
            "{method} {shown} answered {status} with {} bytes: {}...",
            text.len(),
            text.chars().take(200).collect::<String>()
        );
        let answer: Value = serde_json::from_str(&text).expect("a JSON answer");
        assert!(answer["NeutronError"]["message"].is_string(), "{text}");
    }
}

/// Opens a connection that sends the start of a request and then one byte every 100 ms for as long
/// as the server keeps it; returns the `order` value at the moment the server closed it.
async fn stalled(
    server: &support::Server,
    order: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<usize> {
    let socket = TcpStream::connect(addr(server)).await.unwrap();
    let (mut read, mut write) = socket.into_split();
    tokio::spawn(async move {
        write
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b"a").await.is_err() {
                return;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = [0u8; 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
        order.fetch_add(1, Ordering::SeqCst)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_connections_are_capped_and_closed() {
    const CAP: usize = 4;
    const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
    let server = limited(Limits {
        max_connections: Some(CAP),
        header_read_timeout: HEADER_TIMEOUT,
        ..Limits::default()
    });
    let order = Arc::new(AtomicUsize::new(0));
    // CAP + 2 connections trickle a request head; the server serves CAP of them, the others wait.
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..CAP + 2 {
        slow.push(stalled(&server, order.clone()).await);
    }
    let answered = {
        let (order, url) = (order.clone(), format!("{}/healthz", server.base));
        tokio::spawn(async move {
            let status = reqwest::get(url).await.map(|r| r.status().as_u16());
            (
                status,
                opened.elapsed(),
                order.fetch_add(1, Ordering::SeqCst),
            )
        })
    };
    let closed: Vec<usize> = tokio::time::timeout(PATIENCE, futures::future::join_all(slow))
        .await
        .expect("the server closed every stalled connection")
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let (status, answered_after, answered_at) = tokio::time::timeout(PATIENCE, answered)
        .await
        .expect("a normal request was answered")
        .unwrap();
    assert_eq!(status.ok(), Some(200));
    // The server's header timer of the first stalled connection starts when it accepts it,
    // after `opened`: with the cap, the normal request waits at least that long. (The order in
    // which this side notices the first close and the answer is no evidence: the server accepts
    // the waiting request the moment it closes one, and a loaded machine may wake the reader of
    // the answer first.)
    assert!(
        answered_after >= HEADER_TIMEOUT,
        "the normal request was served {answered_after:?} after the stalled connections \
         opened, before any of them could time out: no cap (closed {closed:?}, answered \
         {answered_at})"
    );
    let (first, later) = closed.split_at(CAP);
    let last_of_first = first.iter().max().unwrap();
    assert!(
        later.iter().all(|c| c > last_of_first),
        "connections beyond the cap were served alongside the first {CAP}: {closed:?}"
    );

    // An idle keep-alive connection is closed by the same timer.
    let mut socket = TcpStream::connect(addr(&server)).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, socket.read_to_end(&mut answer))
        .await
        .expect("the idle connection was closed")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}
