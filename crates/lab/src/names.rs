//! How the lab names what it makes: everything carries the lab's name, so two labs coexist.
//!
//! * state directory `/tmp/wyl-<lab>/` (chassis run directories below it, so every daemon's
//!   command line mentions it: that is how `down` finds them even without a state file);
//! * network namespaces `wyl-<lab>.<host>` for chassis, VMs, external hosts and physical
//!   segments, `wyl-<lab>._u` for the underlay (lab and host names cannot contain `.` or `_`, so
//!   no lab's names are a prefix of another's);
//! * inside namespaces: `ul-<chassis>` for the underlay veth, `tap<port id[..11]>` for a VM's
//!   port on `br-int` (as Nova names it), `eth0` in the VM and in an external host;
//! * a physical segment `<seg>`: an Open vSwitch bridge `<seg>` in its own namespace (run
//!   directory `<seg>/` in the state directory, like a chassis'), whose ports are called after
//!   what they lead to: `<chassis>` (a chassis' uplink) and `<host>` (an external host); on each
//!   chassis the provider bridge `br-<seg>` with the uplink `ph-<seg>` (the other end of the
//!   veth `<chassis>`).

use std::path::PathBuf;

use crate::{Error, Result};

/// Prefix of every namespace and directory a lab makes (`scripts/check-leftovers wyl`).
pub const PREFIX: &str = "wyl";

/// Longest lab name.
const LAB_MAX: usize = 16;
/// Longest chassis name (`ul-<chassis>` must fit the 15-byte interface name limit).
pub(crate) const CHASSIS_MAX: usize = 12;
/// Longest VM name.
pub(crate) const VM_MAX: usize = 32;
/// Longest external host name (its port on the segment's bridge is called after it).
pub(crate) const EXTERNAL_MAX: usize = 12;
/// Longest physical segment name (`int-br-<seg>`, the agent's patch port on `br-int`, must fit
/// 15 bytes).
pub(crate) const PHYSICAL_MAX: usize = 8;
/// Segment names that would make a provider bridge called like one of the chassis' own.
pub(crate) const PHYSICAL_RESERVED: [&str; 2] = ["int", "phy"];

/// Checks a lab, chassis or VM name: 1 to `max` of `[a-z0-9-]`, starting with a letter or
/// digit.
pub(crate) fn check_host_name(what: &str, name: &str, max: usize) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Topology(format!(
            "{what} name {name:?}: 1 to {max} of [a-z0-9-], not starting with '-'"
        )))
    }
}

/// Checks a lab name.
pub fn check_lab_name(name: &str) -> Result<()> {
    check_host_name("lab", name, LAB_MAX)
}

/// The lab's state directory.
pub fn state_dir(lab: &str) -> PathBuf {
    PathBuf::from(format!("/tmp/{PREFIX}-{lab}"))
}

/// What the command line of every process of the lab contains (its state directory, with a
/// trailing slash so that lab `a` does not match lab `ab`).
pub(crate) fn marker(lab: &str) -> String {
    format!("{}/", state_dir(lab).display())
}

/// Prefix of the lab's network namespaces.
pub(crate) fn netns_prefix(lab: &str) -> String {
    format!("{PREFIX}-{lab}.")
}

/// Namespace of chassis or VM `host`.
pub fn host_netns(lab: &str, host: &str) -> String {
    format!("{}{host}", netns_prefix(lab))
}

/// Namespace of the underlay.
pub(crate) fn underlay_netns(lab: &str) -> String {
    format!("{}_u", netns_prefix(lab))
}

/// The underlay veth of a chassis (both ends).
pub(crate) fn underlay_link(chassis: &str) -> String {
    format!("ul-{chassis}")
}

/// The provider bridge of physical segment `seg` on every chassis (the agent's
/// `--bridge-mappings <seg>:br-<seg>`).
pub(crate) fn provider_bridge(seg: &str) -> String {
    format!("br-{seg}")
}

/// A chassis' uplink into physical segment `seg`: the chassis end of the veth, a port of
/// [`provider_bridge`].
pub(crate) fn uplink(seg: &str) -> String {
    format!("ph-{seg}")
}

/// The chassis-side interface of a VM's port.
pub(crate) fn tap(port_id: &str) -> String {
    let short: String = port_id.chars().take(11).collect();
    format!("tap{short}")
}

/// Names of the labs that have a state directory.
pub fn labs() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/tmp")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.strip_prefix(&format!("{PREFIX}-"))
                        .filter(|l| check_lab_name(l).is_ok())
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_lab_and_fit() {
        assert!(check_lab_name("demo-1").is_ok());
        for bad in ["", "-x", "Demo", "a.b", "a_b", "seventeen-chars-x"] {
            assert!(check_lab_name(bad).is_err(), "{bad}");
        }
        assert_eq!(host_netns("demo", "vm1"), "wyl-demo.vm1");
        assert!(!host_netns("ab", "x").starts_with(&netns_prefix("a")));
        assert_eq!(tap("0123456789abcdef"), "tap0123456789a");
        assert_eq!(underlay_link("twelve-chars"), "ul-twelve-chars");
        assert_eq!(provider_bridge("physnet1"), "br-physnet1");
        assert_eq!(uplink("physnet1"), "ph-physnet1");
        assert_eq!(marker("a"), "/tmp/wyl-a/");
    }
}
