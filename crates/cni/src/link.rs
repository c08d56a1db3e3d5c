//! Links, addresses and routes, through iproute2's `ip` (and `ethtool`), run in the plugin's
//! own network namespace or, with `nsenter --net=<path>`, in the container's: `CNI_NETNS` is
//! a path (`/var/run/netns/NAME`, `/proc/PID/ns/net`), which `nsenter` takes as it is.
//!
//! Links are read with `ip -json`, so nothing depends on `/sys` (which `nsenter` does not
//! remount). Removing a link that does not exist is not an error: `DEL` is idempotent.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::neutron::Attachment;

/// Where a command runs: here, or in the network namespace at a path.
#[derive(Debug, Clone, Copy)]
pub enum Ns<'a> {
    /// The plugin's own namespace (the host, or the VM in nested mode).
    Here,
    /// The namespace at this path.
    At(&'a Path),
}

/// Runs `program args` in `ns`; its stdout, or an error with its stderr.
pub fn run(ns: Ns<'_>, program: &str, args: &[&str]) -> Result<String> {
    let mut c = match ns {
        Ns::Here => Command::new(program),
        Ns::At(path) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", path.display()))
                .arg("--")
                .arg(program);
            c
        }
    };
    c.args(args).stdin(Stdio::null());
    let line = format!("{c:?}");
    let out = c
        .output()
        .map_err(|e| Error::Datapath(format!("running {line}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Datapath(format!(
            "{line} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `ip args` in `ns`.
pub fn ip(ns: Ns<'_>, args: &[&str]) -> Result<String> {
    run(ns, "ip", args)
}

/// A link as `ip -json` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Its name.
    pub name: String,
    /// Its index in its namespace.
    pub index: u64,
    /// The peer's (veth) or lower device's (VLAN) index, in the namespace `link_netnsid`
    /// names.
    pub link_index: Option<u64>,
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u64,
    /// Administratively up.
    pub up: bool,
    /// Its addresses with prefix lengths (`10.0.0.5/24`), link-local IPv6 ones excluded.
    pub addresses: Vec<String>,
}

/// Every link in `ns` with its addresses.
pub fn links(ns: Ns<'_>) -> Result<Vec<Link>> {
    let out = ip(ns, &["-json", "addr", "show"])?;
    let all: Vec<Value> = serde_json::from_str(out.trim())
        .map_err(|e| Error::Datapath(format!("ip -json addr show: {e}: {out}")))?;
    Ok(all.iter().map(parse_link).collect())
}

fn parse_link(v: &Value) -> Link {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let addresses = v
        .get("addr_info")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("scope").and_then(Value::as_str) != Some("link"))
        .filter_map(|a| {
            let local = a.get("local")?.as_str()?;
            let prefix = a.get("prefixlen")?.as_u64()?;
            Some(format!("{local}/{prefix}"))
        })
        .collect();
    Link {
        name: s("ifname"),
        index: v.get("ifindex").and_then(Value::as_u64).unwrap_or(0),
        link_index: v.get("link_index").and_then(Value::as_u64),
        mac: s("address"),
        mtu: v.get("mtu").and_then(Value::as_u64).unwrap_or(0),
        up: v
            .get("flags")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        addresses,
    }
}

/// The link called `name` in `ns`, if any.
pub fn find(ns: Ns<'_>, name: &str) -> Result<Option<Link>> {
    Ok(links(ns)?.into_iter().find(|l| l.name == name))
}

/// Deletes link `name` in `ns` if it exists; true if it did.
pub fn delete(ns: Ns<'_>, name: &str) -> Result<bool> {
    if find(ns, name)?.is_none() {
        return Ok(false);
    }
    match ip(ns, &["link", "del", name]) {
        Ok(_) => Ok(true),
        // Gone meanwhile (its peer's deletion took it along).
        Err(_) if find(ns, name)?.is_none() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Creates a veth pair: `host` here, `peer` born in the namespace at `netns`, both with `mtu`.
pub fn create_veth(host: &str, peer: &str, netns: &Path, mtu: Option<u32>) -> Result<()> {
    let netns = netns.display().to_string();
    let mtu = mtu.map(|m| m.to_string());
    let mut args = vec!["link", "add", host];
    if let Some(m) = &mtu {
        args.extend(["mtu", m]);
    }
    args.extend(["type", "veth", "peer", "name", peer]);
    if let Some(m) = &mtu {
        args.extend(["mtu", m]);
    }
    args.extend(["netns", &netns]);
    ip(Ns::Here, &args).map(drop)
}

/// Creates VLAN interface `name` (id `vid`) on `lower` here, then moves it into the namespace
/// at `netns`.
pub fn create_vlan(lower: &str, name: &str, vid: u16, netns: &Path) -> Result<()> {
    let vid = vid.to_string();
    ip(
        Ns::Here,
        &[
            "link", "add", "link", lower, "name", name, "type", "vlan", "id", &vid,
        ],
    )
    .map_err(|e| Error::Datapath(format!("creating VLAN {vid} on {lower}: {e}")))?;
    let netns = netns.display().to_string();
    ip(Ns::Here, &["link", "set", name, "netns", &netns]).map(drop)
}

/// Sets up the container's interface `ifname` (already in the namespace at `netns`, possibly
/// still called `current`): its name, the port's MAC, the network's MTU, TX checksum offload
/// off (for veths: TCP through the userspace datapath needs it), up, the port's addresses
/// (IPv6 ones without duplicate address detection: they are the port's own), its routes.
pub fn configure(
    netns: &Path,
    current: &str,
    ifname: &str,
    att: &Attachment,
    tx_off: bool,
) -> Result<()> {
    let ns = Ns::At(netns);
    if current != ifname {
        ip(ns, &["link", "set", current, "name", ifname])?;
    }
    ip(ns, &["link", "set", ifname, "address", &att.mac])?;
    if let Some(mtu) = att.mtu {
        ip(ns, &["link", "set", ifname, "mtu", &mtu.to_string()])?;
    }
    if att.addresses.iter().any(|a| a.ip.is_ipv6()) {
        let conf = format!("net.ipv6.conf.{ifname}");
        run(
            ns,
            "sysctl",
            &[
                "-qw",
                &format!("{conf}.disable_ipv6=0"),
                &format!("{conf}.accept_ra=0"),
            ],
        )?;
    }
    if tx_off {
        run(ns, "ethtool", &["-K", ifname, "tx", "off"])?;
    }
    ip(ns, &["link", "set", ifname, "up"])?;
    for a in &att.addresses {
        let cidr = a.cidr();
        let mut args = vec!["addr", "add", cidr.as_str(), "dev", ifname];
        if a.ip.is_ipv6() {
            args.push("nodad");
        }
        ip(ns, &args)?;
    }
    for r in &att.routes {
        let v6 = r.dst.contains(':');
        let family = if v6 { "-6" } else { "-4" };
        let via = r.via.map(|v| v.to_string());
        let mut args = vec![family, "route", "replace", r.dst.as_str()];
        if let Some(v) = &via {
            args.extend(["via", v.as_str()]);
        }
        args.extend(["dev", ifname]);
        ip(ns, &args)?;
    }
    Ok(())
}

/// Brings link `name` here up.
pub fn set_up(name: &str) -> Result<()> {
    ip(Ns::Here, &["link", "set", name, "up"]).map(drop)
}

/// True if `a` and `b` name the same address (`fd00::5/64` and `fd00:0::5/64`).
pub fn same_address(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        let (ip, prefix) = s.split_once('/')?;
        Some((ip.parse::<IpAddr>().ok()?, prefix.parse::<u8>().ok()?))
    };
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn links_are_read_from_json() {
        let l = parse_link(&json!({
            "ifindex": 2, "link_index": 11, "ifname": "eth0", "flags": ["BROADCAST", "UP"],
            "mtu": 1450, "address": "fa:16:3e:00:00:05", "link_netnsid": 0,
            "addr_info": [
                {"family": "inet", "local": "10.0.0.5", "prefixlen": 24, "scope": "global"},
                {"family": "inet6", "local": "fd00::5", "prefixlen": 64, "scope": "global"},
                {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}
            ]
        }));
        assert_eq!(l.name, "eth0");
        assert_eq!(l.index, 2);
        assert_eq!(l.link_index, Some(11));
        assert_eq!(l.mtu, 1450);
        assert!(l.up);
        assert_eq!(l.addresses, ["10.0.0.5/24", "fd00::5/64"]);
    }

    #[test]
    fn addresses_compare_by_value() {
        assert!(same_address("fd00::5/64", "fd00:0:0::5/64"));
        assert!(!same_address("fd00::5/64", "fd00::5/128"));
        assert!(same_address("10.0.0.5/24", "10.0.0.5/24"));
    }
}
