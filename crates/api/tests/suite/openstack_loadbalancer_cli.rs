//! Drives the load-balancer API with the real `openstack loadbalancer ...` commands
//! (python-octaviaclient, auth type `none`) against a live in-process server: a load balancer on a
//! subnet named by the CLI, a listener, a pool, a member, a health monitor, the status tree, and a
//! cascading delete, with `--wait` as an operator would type it.
//!
//! The CLI is `<repo>/.venv/bin/openstack` (made by `scripts/install-deps`) or `$WYVERN_OPENSTACK_CLI`.
//! With auth type `none` the CLI sends network and load-balancer calls to the one `OS_ENDPOINT`, so
//! it resolves `--vip-subnet-id` and `--subnet-id` through Wyvern's Neutron API. Each command is one
//! CLI process, which the test waits for.

use crate::cli;
use crate::support;
use cli::run;

use serde_json::Value;

#[test]
fn openstack_loadbalancer_commands() {
    let server = support::Server::start();
    let url = server.base.as_str();
    run(url, "network create lbnet", true);
    run(
        url,
        "subnet create --network lbnet --subnet-range 10.9.0.0/24 lbsub",
        true,
    );
    let lb = run(
        url,
        "loadbalancer create --name lb1 --vip-subnet-id lbsub --wait",
        true,
    );
    assert_eq!(lb["provisioning_status"], "ACTIVE", "{lb}");
    assert_eq!(lb["vip_address"], "10.9.0.2", "{lb}");
    let listener = run(
        url,
        "loadbalancer listener create --name l1 --protocol HTTP --protocol-port 80 lb1 --wait",
        true,
    );
    assert_eq!(listener["protocol_port"], 80, "{listener}");
    let pool = run(
        url,
        "loadbalancer pool create --name p1 --protocol HTTP --lb-algorithm ROUND_ROBIN \
         --listener l1 --session-persistence type=SOURCE_IP --wait",
        true,
    );
    assert_eq!(pool["lb_algorithm"], "ROUND_ROBIN", "{pool}");
    let member = run(
        url,
        "loadbalancer member create --name m1 --address 10.9.0.10 --protocol-port 8080 \
         --subnet-id lbsub --weight 3 p1 --wait",
        true,
    );
    assert_eq!(member["weight"], 3, "{member}");
    assert_eq!(member["operating_status"], "NO_MONITOR", "{member}");
    let monitor = run(
        url,
        "loadbalancer healthmonitor create --name hm1 --delay 5 --timeout 3 --max-retries 3 \
         --type HTTP --url-path /health p1 --wait",
        true,
    );
    assert_eq!(monitor["url_path"], "/health", "{monitor}");
    run(
        url,
        "loadbalancer member set --weight 7 p1 m1 --wait",
        false,
    );
    let members = run(url, "loadbalancer member list p1", true);
    assert_eq!(members[0]["weight"], 7, "{members}");
    // `status show` prints its JSON tree itself (it takes no `-f`).
    let status = run(url, "loadbalancer status show lb1", false);
    let status: Value = serde_json::from_str(status.as_str().unwrap_or_default()).expect("JSON");
    let pools = &status["loadbalancer"]["listeners"][0]["pools"][0];
    assert_eq!(pools["health_monitor"]["type"], "HTTP", "{status}");
    assert_eq!(pools["members"][0]["address"], "10.9.0.10", "{status}");
    let listed = run(url, "loadbalancer list", true);
    assert_eq!(listed[0]["name"], "lb1", "{listed}");
    run(url, "loadbalancer delete --cascade --wait lb1", false);
    assert_eq!(run(url, "loadbalancer list", true), serde_json::json!([]));
    let ports = run(url, "port list --device-owner Octavia", true);
    assert_eq!(ports, serde_json::json!([]), "the VIP port is gone");
}
