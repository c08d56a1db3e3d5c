//! The systemd units in `dist/` are valid: `systemd-analyze verify` accepts them without a
//! warning (an unknown key or a bad value is only a warning to systemd, so any output fails),
//! with their `ExecStart` pointing at the built `wyvern` (verify checks that the binary exists),
//! and every option their `ExecStart` gives is one the subcommand knows.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shipped units: the server's and the agent's, each with the subcommand it runs.
const UNITS: [(&str, &str); 2] = [
    ("wyvern-server.service", "server"),
    ("wyvern-agent.service", "agent"),
];
/// Where the units expect the binary.
const INSTALLED: &str = "/usr/local/bin/wyvern";

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
}

#[test]
fn the_units_verify_cleanly() {
    crate::support::need("systemd-analyze").unwrap();
    let dir = tempfile::tempdir().expect("temporary directory");
    let built = env!("CARGO_BIN_EXE_wyvern");
    let mut copies = Vec::new();
    for (name, role) in UNITS {
        let text = std::fs::read_to_string(dist().join(name)).expect(name);
        let exec = exec_start(&text);
        assert!(
            exec.starts_with(&format!("{INSTALLED} {role} ")),
            "{name}: {exec}"
        );
        // The copies have names of their own (the unit's name does not matter to the check).
        let copy = dir.path().join(format!("{role}.service"));
        std::fs::write(&copy, text.replace(INSTALLED, built)).expect("write a copy");
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .expect("run systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

#[test]
fn exec_start_uses_options_the_subcommands_know() {
    for (name, role) in UNITS {
        let text = std::fs::read_to_string(dist().join(name)).expect(name);
        let help = Command::new(env!("CARGO_BIN_EXE_wyvern"))
            .args([role, "--help"])
            .output()
            .expect("wyvern --help");
        let help = String::from_utf8_lossy(&help.stdout);
        for option in exec_start(&text)
            .split_whitespace()
            .filter(|w| w.starts_with("--"))
        {
            assert!(
                help.contains(&format!("{option} ")),
                "{name}: `wyvern {role}` has no {option}"
            );
        }
    }
}
