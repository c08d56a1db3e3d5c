//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod cases;
pub mod ovs;
pub mod strategies;

use std::process::Command;

/// Asserts that `ovs-ofctl` is installed: a test that needs it fails rather than skips unseen
/// (CI installs everything with scripts/install-deps).
pub fn require_ofctl(test: &str) {
    let ok = Command::new("ovs-ofctl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{test} needs ovs-ofctl (Open vSwitch), which is not installed: scripts/install-deps installs it"
    );
}

/// Hex string of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ovs-ofctl ofp-print HEX` output (trailing whitespace trimmed).
pub fn ofp_print(bytes: &[u8]) -> String {
    let out = Command::new("ovs-ofctl")
        .arg("ofp-print")
        .arg(hex(bytes))
        .output()
        .expect("run ovs-ofctl");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A broadcast ARP request from 00:11:22:33:44:55 (10.0.0.1) for 10.0.0.2.
pub fn arp_frame() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x06]);
    f.extend_from_slice(&[
        0, 1, 8, 0, 6, 4, 0, 1, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 10, 0, 0, 1,
    ]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f
}
