//! The README says openstacksdk drives Wyvern unchanged: short SDK scripts (tests/sdk/: the life of
//! a few objects, and quotas) run against a live server with the SDK that `scripts/install-deps`
//! puts in `<repo>/.venv` (its Python sits beside the CLI that `$WYVERN_OPENSTACK_CLI` names, when
//! set).

use crate::support;

use std::path::PathBuf;
use std::process::Command;

fn python() -> PathBuf {
    let cli = std::env::var_os("WYVERN_OPENSTACK_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
        });
    cli.with_file_name("python")
}

/// Runs `tests/sdk/<script>` against a new server; what it prints.
fn run(script: &str) -> String {
    let python = python();
    assert!(
        python.exists(),
        "no Python with openstacksdk at {}: run scripts/install-deps",
        python.display()
    );
    let server = support::Server::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(script);
    let out = Command::new(&python)
        .arg(&script)
        .arg(&server.base)
        .env_remove("OS_CLOUD")
        .output()
        .expect("run the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn openstacksdk_creates_lists_and_deletes() {
    let stdout = run("lifecycle.py");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("port 10.50.0."), "{stdout}");
    assert_eq!(
        &lines[1..],
        [
            "nets ['sdk-net']",
            "router ports ['network:router_interface']",
            "after []"
        ],
        "{stdout}"
    );
}

/// The SDK calls behind `openstack quota show/set --network` (the CLI itself needs Keystone to
/// turn a project name into an id).
#[test]
fn openstacksdk_reads_and_sets_quotas() {
    let stdout = run("quotas.py");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "default 100",
            "limits 2 -1 10",
            "listed ['sdk-project']",
            "refused c Quota exceeded for resources: ['network'].",
            "used 2 of 2",
            "after 100",
        ],
        "{stdout}"
    );
}
