//! The real `openstack` CLI (`<repo>/.venv/bin/openstack`, made by `scripts/install-deps`, or
//! `$WYVERN_OPENSTACK_CLI`) run against a server with auth type `none`, for the CLI tests.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

pub fn cli_path() -> PathBuf {
    if let Some(path) = std::env::var_os("WYVERN_OPENSTACK_CLI") {
        return PathBuf::from(path);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/openstack")
}

pub fn command(url: &str, line: &str, json: bool) -> Output {
    let mut command = Command::new(cli_path());
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OS_")) {
        command.env_remove(name);
    }
    command
        .env("OS_AUTH_TYPE", "none")
        .env("OS_ENDPOINT", url)
        .args(line.split_whitespace());
    if json {
        command.args(["-f", "json"]);
    }
    command.output().expect("run the openstack CLI")
}

/// Runs `openstack <line>` (split on whitespace); its standard output, parsed as JSON when `json`.
pub fn run(url: &str, line: &str, json: bool) -> Value {
    let output = command(url, line, json);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`openstack {line}` failed ({}):\n{stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    if json {
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("`openstack {line}` printed no JSON ({e}): {stdout}"))
    } else {
        Value::String(stdout.into_owned())
    }
}

/// Runs `openstack <line>`, which must fail; what it printed.
pub fn fails(url: &str, line: &str) -> String {
    let output = command(url, line, false);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !output.status.success(),
        "`openstack {line}` succeeded: {printed}"
    );
    printed
}
