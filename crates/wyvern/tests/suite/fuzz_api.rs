//! The northbound API under a schema-driven fuzzer: schemathesis (which `scripts/install-deps`
//! puts in `<repo>/.venv`, beside the `openstack` CLI that `$WYVERN_OPENSTACK_CLI` names when set)
//! runs against a live `wyvern server`, from the OpenAPI description the server generates from its
//! attribute maps (`GET /wyvern/v1/openapi.json`), with a fixed budget: once as admin, once as a
//! member of a project (`X-Project-Id`, `X-Roles`). Every phase runs: the coverage phase's boundary
//! values and unexpected methods, the fuzzing phase's generated requests (valid and invalid) and
//! stateful sequences along the description's links. The server starts with a small topology
//! ([`make_topology`]), and hooks (`tests/fuzz/hooks.py`) let requests refer to the objects earlier
//! answers showed, so that fuzzing reaches past "not found".
//!
//! The test counts the requests in the server (its `/metrics`), prints them by resource, method
//! and status, and requires at least [`MIN_REQUESTS`] of them, no answer >= 500 (schemathesis's
//! `not_a_server_error` check, and the server's own count), a server still running that logged no
//! panic, and a peak resident memory under [`MAX_RSS_KIB`]. `WYVERN_FUZZ_SEED` replays another
//! seed than the fixed one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server;
use server::ServerProcess;

/// Fewest requests the fuzzer must make in all.
const MIN_REQUESTS: u64 = 10_000;

/// Bound on the server's peak resident memory (VmHWM). It holds a few thousand small objects after
/// the runs and answers one request at a time, each body at most 1 MiB: 25 to 30 MiB in a debug
/// build. Less than four times that fits any machine the tests run on, and a leak of 4 KiB per
/// request (over 20 000 requests) or of a body per connection crosses it.
const MAX_RSS_KIB: u64 = 100 * 1024;

/// Longest a schemathesis run may take before the test fails (a run takes about a minute).
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The random seed of the runs unless `WYVERN_FUZZ_SEED` gives another.
const SEED: &str = "20261206";

/// One run of the fuzzer: who asks, and its budget.
struct Run {
    name: &'static str,
    headers: &'static [&'static str],
    /// Test cases per operation in the fuzzing phase (the coverage phase adds its own).
    max_examples: u32,
    /// Scenarios of the stateful phase.
    scenarios: u32,
}

const RUNS: &[Run] = &[
    Run {
        name: "admin",
        headers: &[],
        max_examples: 75,
        scenarios: 150,
    },
    Run {
        name: "member of project fuzz-member",
        headers: &["X-Project-Id: fuzz-member", "X-Roles: member"],
        max_examples: 50,
        scenarios: 75,
    },
];

/// Makes what fuzzing on an empty server would seldom reach: an external network with subnets (for
/// gateways and floating IPs), a shared one (which members see too), a private one with subnets on a
/// router, a port with a floating IP, a security group with a rule, an address group. The hooks pick
/// their ids up from the lists the fuzzer asks for.
async fn make_topology(client: &reqwest::Client, base: &str) {
    let create = async |path: &str, body: Value| -> Value {
        let answer = client
            .post(format!("{base}/v2.0/{path}"))
            .json(&body)
            .send()
            .await
            .expect("a topology request");
        assert_eq!(answer.status().as_u16(), 201, "making {path}: {body}");
        let answer: Value = answer.json().await.expect("a topology object");
        answer
            .as_object()
            .and_then(|o| o.values().next())
            .cloned()
            .unwrap_or_default()
    };
    let id = |obj: &Value| obj["id"].as_str().unwrap_or_default().to_string();
    let subnet = async |network: &str, version: u8, cidr: &str| -> String {
        let body = json!({"subnet": {"network_id": network, "ip_version": version, "cidr": cidr}});
        id(&create("subnets", body).await)
    };
    let public = id(&create(
        "networks",
        json!({"network": {"name": "public", "router:external": true}}),
    )
    .await);
    subnet(&public, 4, "203.0.113.0/24").await;
    subnet(&public, 6, "2001:db8:ff::/64").await;
    let shared = id(&create(
        "networks",
        json!({"network": {"name": "shared", "shared": true}}),
    )
    .await);
    subnet(&shared, 4, "10.1.0.0/24").await;
    let private = id(&create("networks", json!({"network": {"name": "private"}})).await);
    let private4 = subnet(&private, 4, "10.0.0.0/24").await;
    subnet(&private, 6, "2001:db8:1::/64").await;
    let router = json!({"router": {"name": "r", "external_gateway_info": {"network_id": public}}});
    let router = id(&create("routers", router).await);
    let added = client
        .put(format!("{base}/v2.0/routers/{router}/add_router_interface"))
        .json(&json!({"subnet_id": private4}))
        .send()
        .await
        .expect("a topology request");
    assert_eq!(
        added.status().as_u16(),
        200,
        "adding the router's interface"
    );
    let port = id(&create("ports", json!({"port": {"network_id": private}})).await);
    create(
        "floatingips",
        json!({"floatingip": {"floating_network_id": public, "port_id": port}}),
    )
    .await;
    let group = id(&create(
        "security-groups",
        json!({"security_group": {"name": "web"}}),
    )
    .await);
    create(
        "security-group-rules",
        json!({"security_group_rule": {"security_group_id": group, "direction": "ingress",
            "protocol": "tcp", "port_range_min": 80, "port_range_max": 80}}),
    )
    .await;
    create(
        "address-groups",
        json!({"address_group": {"name": "a", "addresses": ["192.0.2.0/24"]}}),
    )
    .await;
}

/// The schemathesis of `<repo>/.venv` (or of the venv `$WYVERN_OPENSTACK_CLI` is in).
fn schemathesis() -> PathBuf {
    let cli = std::env::var_os("WYVERN_OPENSTACK_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
        });
    let schemathesis = cli.with_file_name("schemathesis");
    assert!(
        schemathesis.exists(),
        "no schemathesis at {}: run scripts/install-deps",
        schemathesis.display()
    );
    schemathesis
}

/// The schemathesis configuration of a run.
fn config_text(run: &Run) -> String {
    // `POST /v2.0/quotas` is 501 in Neutron as in Wyvern: the coverage phase does not try
    // methods the description leaves out on that path.
    format!(
        r#"[phases.stateful]
max-steps = 10
[phases.stateful.generation]
max-examples = {}

[[operations]]
include-path = "/v2.0/quotas"
phases.coverage.unexpected-methods = ["put", "delete", "patch", "options", "trace"]
"#,
        run.scenarios
    )
}

/// Runs schemathesis against `base` as `run` says; its output if it failed.
async fn fuzz(
    schemathesis: &Path,
    dir: &Path,
    base: &str,
    run: &Run,
    seed: &str,
) -> Result<(), String> {
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, config_text(run)).unwrap();
    let hooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/hooks.py");
    let mut command = tokio::process::Command::new(schemathesis);
    command
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{base}{}", api::openapi::PATH))
        // One worker: Python runs one at a time anyway, and Hypothesis is not thread-safe on the
        // venv's Python 3.11 ("AST constructor recursion depth mismatch").
        .args(["--checks", "not_a_server_error", "--workers", "1"])
        .args([
            "--seed",
            seed,
            "--generation-database",
            "none",
            "--no-color",
        ])
        .arg(format!("--max-examples={}", run.max_examples))
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", &hooks)
        .kill_on_drop(true);
    for header in run.headers {
        command.args(["--header", header]);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ({}) ran over {RUN_TIMEOUT:?}", run.name))
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains(" SUMMARY "))
        .collect();
    println!(
        "schemathesis as {} in {:.0?}:\n{}",
        run.name,
        started.elapsed(),
        summary.join("\n")
    );
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!("schemathesis as {}:\n{stdout}\n{stderr}", run.name))
    }
}

/// The API requests the server counted, by (resource, method, status), from its `/metrics`.
async fn requests(client: &reqwest::Client, base: &str) -> BTreeMap<(String, String, u16), u64> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("wyvern_api_request_duration_seconds_count{")?;
            let (labels, count) = rest.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|l| l.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            let status = label("status")?.parse().ok()?;
            Some((
                (label("resource")?, label("method")?, status),
                count.parse().ok()?,
            ))
        })
        .collect()
}

/// A `VmRSS`/`VmHWM` line of `/proc/<pid>/status`, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Prints the requests of one run (the difference of two counts) and returns how many there were.
fn report(
    name: &str,
    before: &BTreeMap<(String, String, u16), u64>,
    after: &BTreeMap<(String, String, u16), u64>,
) -> u64 {
    let mut by_operation: BTreeMap<(&str, &str), BTreeMap<u16, u64>> = BTreeMap::new();
    for ((resource, method, status), count) in after {
        let made = count
            - before
                .get(&(resource.clone(), method.clone(), *status))
                .unwrap_or(&0);
        if made > 0 && resource != "metrics" && resource != "openapi" {
            *by_operation
                .entry((resource, method))
                .or_default()
                .entry(*status)
                .or_default() += made;
        }
    }
    let mut total = 0;
    println!("requests as {name}, by resource and method (status: count):");
    for ((resource, method), statuses) in &by_operation {
        let sum: u64 = statuses.values().sum();
        total += sum;
        let statuses: Vec<String> = statuses.iter().map(|(s, c)| format!("{s}: {c}")).collect();
        println!(
            "  {resource:<22} {method:<7} {sum:>6}  ({})",
            statuses.join(", ")
        );
    }
    println!("  in all: {total}");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fuzzer_finds_no_server_error() {
    let _alone = crate::support::alone_async().await;
    let schemathesis = schemathesis();
    let seed = std::env::var("WYVERN_FUZZ_SEED").unwrap_or_else(|_| SEED.to_string());
    let dir = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", dir.path().join("nb.redb").display());
    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut server = ServerProcess::start_logging(&store, &[], log);
    let client = reqwest::Client::new();
    server.wait_ready(&client).await;
    make_topology(&client, &server.base).await;
    let started = Instant::now();
    println!("random seed {seed}");

    let mut counts = requests(&client, &server.base).await;
    let mut total = 0;
    let mut failed = Vec::new();
    for run in RUNS {
        if let Err(output) = fuzz(&schemathesis, dir.path(), &server.base, run, &seed).await {
            failed.push(output);
        }
        if !server.is_running() {
            break;
        }
        let after = requests(&client, &server.base).await;
        total += report(run.name, &counts, &after);
        counts = after;
    }
    let log = std::fs::read_to_string(&log_path).unwrap();
    // The log from the first panic on, a backtrace long (it may hold thousands of them).
    let excerpt: Vec<&str> = log
        .lines()
        .skip_while(|l| !l.contains("panicked"))
        .take(60)
        .collect();
    let excerpt = excerpt.join("\n");
    let tail = log.lines().rev().take(40).collect::<Vec<_>>();
    assert!(
        server.is_running(),
        "the server died:\n{excerpt}\n...\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    let rss = memory_kib(server.pid(), "VmRSS");
    let peak = memory_kib(server.pid(), "VmHWM");
    println!(
        "{total} requests in {:.0?}; server memory: {} KiB resident, {} KiB at the peak (bound {} KiB)",
        started.elapsed(),
        rss,
        peak,
        MAX_RSS_KIB
    );

    assert!(excerpt.is_empty(), "the server panicked:\n{excerpt}");
    let errors: Vec<_> = counts.iter().filter(|((_, _, s), _)| *s >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    assert!(
        failed.is_empty(),
        "schemathesis failed: {}",
        failed.join("\n")
    );
    assert!(total >= MIN_REQUESTS, "only {total} requests");
    assert!(peak <= MAX_RSS_KIB, "peak resident memory {peak} KiB");
}
