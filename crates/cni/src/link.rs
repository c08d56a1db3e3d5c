//! Links, addresses and routes, through iproute2's `ip` (and `ethtool`), run in the plugin's
//! own network namespace or, with `nsenter --net=<path>`, in the container's: `CNI_NETNS` is
//! a path (`/var/run/netns/NAME`, `/proc/PID/ns/net`), which `nsenter` takes as it is.
//!
//! Links are read with `ip -json`, so nothing depends on `/sys` (which `nsenter` does not
//! remount). Removing a link that does not exist is not an error: `DEL` is idempotent.
//!
//! Each process costs (a fork and an exec, two under `nsenter`, on a busy node tens of
//! milliseconds), so `ADD` runs few: the veth pair is created and its host end brought up by one
//! `ip -batch -`, the pod's end is configured by one more (name, MAC, MTU, up, addresses,
//! routes) after a single `ethtool` (and, with IPv6 addresses, a single `sysctl`), and links
//! are looked up by name (`ip -json addr show dev NAME`), not by listing every link.

use std::io::Write;
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
    run_with(ns, program, args, None)
}

/// Runs `program args` in `ns` with `input` on its stdin (none: `/dev/null`); its stdout, or an
/// error with its stderr.
fn run_with(ns: Ns<'_>, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
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
    c.args(args);
    let line = format!("{c:?}");
    let out = match input {
        None => c.stdin(Stdio::null()).output(),
        Some(text) => c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                if let Some(mut stdin) = child.stdin.take() {
                    // Small: fits the pipe, so writing before reading cannot block.
                    stdin.write_all(text.as_bytes())?;
                }
                child.wait_with_output()
            }),
    }
    .map_err(|e| Error::Datapath(format!("running {line}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let input = input
            .map(|i| format!(" (stdin: {:?})", i.trim()))
            .unwrap_or_default();
        Err(Error::Datapath(format!(
            "{line} failed ({}): {}{input}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `ip -batch -` in `ns`: every command of `commands` (one `ip` command line each, without the
/// `ip`), in one process; stops at the first that fails.
pub fn ip_batch(ns: Ns<'_>, commands: &[String]) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let mut input = commands.join("\n");
    input.push('\n');
    run_with(ns, "ip", &["-batch", "-"], Some(&input)).map(drop)
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
    let out = match ip(ns, &["-json", "addr", "show", "dev", name]) {
        Ok(out) => out,
        // `Device "NAME" does not exist.`
        Err(Error::Datapath(e)) if e.contains("does not exist") => return Ok(None),
        Err(e) => return Err(e),
    };
    let all: Vec<Value> = serde_json::from_str(out.trim())
        .map_err(|e| Error::Datapath(format!("ip -json addr show dev {name}: {e}: {out}")))?;
    Ok(all.iter().map(parse_link).find(|l| l.name == name))
}

/// The MAC of link `name` here: from `/sys/class/net` when that shows it (no process), else
/// from `ip`.
pub fn mac_here(name: &str) -> Result<Option<String>> {
    if let Ok(mac) = std::fs::read_to_string(format!("/sys/class/net/{name}/address")) {
        return Ok(Some(mac.trim().to_owned()));
    }
    Ok(find(Ns::Here, name)?.map(|l| l.mac))
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

/// Creates a veth pair: `host` here, up, `peer` born in the namespace at `netns`, both with
/// `mtu` (one process).
pub fn create_veth(host: &str, peer: &str, netns: &Path, mtu: Option<u32>) -> Result<()> {
    let mtu = mtu.map(|m| format!(" mtu {m}")).unwrap_or_default();
    ip_batch(
        Ns::Here,
        &[
            format!(
                "link add {host}{mtu} type veth peer name {peer}{mtu} netns {}",
                netns.display()
            ),
            format!("link set {host} up"),
        ],
    )
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
    let v6 = att.addresses.iter().any(|a| a.ip.is_ipv6());
    let mut batch = Vec::new();
    if current != ifname {
        let rename = format!("link set {current} name {ifname}");
        if v6 || tx_off {
            // What runs before the batch needs the final name.
            ip_batch(ns, &[rename])?;
        } else {
            batch.push(rename);
        }
    }
    batch.push(format!("link set {ifname} address {}", att.mac));
    if let Some(mtu) = att.mtu {
        batch.push(format!("link set {ifname} mtu {mtu}"));
    }
    if v6 {
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
    batch.push(format!("link set {ifname} up"));
    for a in &att.addresses {
        let nodad = if a.ip.is_ipv6() { " nodad" } else { "" };
        batch.push(format!("addr add {} dev {ifname}{nodad}", a.cidr()));
    }
    batch.extend(att.routes.iter().map(|r| route_command(r, ifname)));
    ip_batch(ns, &batch)
}

/// The `ip -batch` line for route `r` through `ifname`. A batch line takes no `-4`/`-6`, so
/// the family comes from the destination: `default` (IPv4, as Neutron never names an IPv6
/// default so) is written `0.0.0.0/0`.
fn route_command(r: &crate::neutron::RouteSpec, ifname: &str) -> String {
    let dst = if r.dst == "default" {
        "0.0.0.0/0"
    } else {
        r.dst.as_str()
    };
    let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
    format!("route replace {dst}{via} dev {ifname}")
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
