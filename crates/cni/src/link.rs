//! Links, addresses and routes, through iproute2's `ip`, run in the plugin's own network
//! namespace or in the container's: `CNI_NETNS` is a path (`/var/run/netns/NAME`,
//! `/proc/PID/ns/net`), which a thread of the plugin enters (`setns(2)`, [`within`]); what it
//! runs from there (a process, an `ioctl`, a sysctl write) acts in that namespace.
//!
//! Links are read with `ip -json`, so nothing depends on `/sys` (which entering a network
//! namespace does not remount). Removing a link that does not exist is not an error: `DEL` is
//! idempotent.
//!
//! Each process costs (a fork and an exec, on a busy node milliseconds to tens of
//! milliseconds), so `ADD` runs two: the veth pair is created and its host end brought up by
//! one `ip -batch -`, the pod's end is configured by one more (name, MAC, MTU, up, addresses,
//! routes). Whether a link exists is asked of the kernel directly (`if_nametoindex`), TX
//! checksum offload is turned off by the ethtool `ioctl` and IPv6 settings are written to
//! `/proc/sys`, all from the thread in the namespace.

use std::ffi::CString;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
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

/// Runs `f` in `ns`: for [`Ns::At`] on a thread of its own that entered the namespace (and
/// ends with `f`), so that the sockets `f` opens and the processes it starts are there.
pub fn within<T: Send>(ns: Ns<'_>, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let Ns::At(path) = ns else {
        return f();
    };
    let file = std::fs::File::open(path).map_err(|e| {
        Error::Datapath(format!("opening network namespace {}: {e}", path.display()))
    })?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) on a descriptor that stays open for the call; it moves only
                // this thread, which ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(Error::Datapath(format!(
                        "entering network namespace {}: {}",
                        path.display(),
                        std::io::Error::last_os_error()
                    )));
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::Datapath(format!(
                    "the thread in network namespace {} panicked",
                    path.display()
                )))
            })
    })
}

/// Runs `program args` in `ns`; its stdout, or an error with its stderr.
pub fn run(ns: Ns<'_>, program: &str, args: &[&str]) -> Result<String> {
    run_with(ns, program, args, None)
}

/// Runs `program args` in `ns` with `input` on its stdin (none: `/dev/null`); its stdout, or an
/// error with its stderr.
fn run_with(ns: Ns<'_>, program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    within(ns, || spawn_here(program, args, input)).map_err(|e| match (ns, e) {
        (Ns::At(path), Error::Datapath(m)) => {
            Error::Datapath(format!("{m} (in {})", path.display()))
        }
        (_, e) => e,
    })
}

/// Runs `program args` from the calling thread (in its namespace), `input` on its stdin.
fn spawn_here(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut c = Command::new(program);
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

/// The standard input of `ip -batch -` for `commands`.
fn batch_input(commands: &[String]) -> String {
    let mut input = commands.join("\n");
    input.push('\n');
    input
}

/// `ip -batch -` in `ns`: every command of `commands` (one `ip` command line each, without the
/// `ip`), in one process; stops at the first that fails.
pub fn ip_batch(ns: Ns<'_>, commands: &[String]) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    run_with(ns, "ip", &["-batch", "-"], Some(&batch_input(commands))).map(drop)
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

/// Whether a link called `name` exists in `ns` (no process: `if_nametoindex(3)` in the
/// namespace).
pub fn exists(ns: Ns<'_>, name: &str) -> Result<bool> {
    let c = CString::new(name)
        .map_err(|_| Error::Datapath(format!("interface name {name:?} has a NUL byte")))?;
    // SAFETY: a valid NUL-terminated string; the call only reads it.
    within(ns, || Ok(unsafe { libc::if_nametoindex(c.as_ptr()) } != 0))
}

/// Runs interface `ioctl` `request` on link `name` in the calling thread's namespace, with
/// `fill` setting the request's data first; the `ifreq` as the kernel left it.
fn link_ioctl(
    name: &str,
    request: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
) -> std::io::Result<libc::ifreq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    // SAFETY: a plain socket(2) call; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid `ifreq` (a name of NULs and a union of plain data).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    fill(&mut req);
    // SAFETY: an interface request with an `ifreq` naming the link; whatever `fill` pointed
    // it at outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(req)
}

/// Turns TX checksum offload of link `name` off, as `ethtool -K NAME tx off` does (the
/// `ETHTOOL_STXCSUM` request, the kernel clearing what depends on it), in the calling thread's
/// namespace.
fn tx_checksum_off(name: &str) -> Result<()> {
    /// `ETHTOOL_STXCSUM` (linux/ethtool.h).
    const ETHTOOL_STXCSUM: u32 = 0x17;
    /// `struct ethtool_value`.
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: 0,
    };
    link_ioctl(name, libc::SIOCETHTOOL, |req| {
        req.ifr_ifru.ifru_data = (&raw mut value).cast();
    })
    .map(drop)
    .map_err(|e| Error::Datapath(format!("turning TX checksum offload of {name} off: {e}")))
}

/// The MAC of link `name` here, `None` if there is no such link (`SIOCGIFHWADDR`: no process,
/// and right whatever `/sys` shows).
pub fn mac_here(name: &str) -> Result<Option<String>> {
    match link_ioctl(name, libc::SIOCGIFHWADDR, |_| {}) {
        Ok(req) => {
            // SAFETY: SIOCGIFHWADDR answered in `ifru_hwaddr`.
            let data = unsafe { req.ifr_ifru.ifru_hwaddr }.sa_data;
            let mac: Vec<String> = data[..6]
                .iter()
                .map(|b| format!("{:02x}", *b as u8))
                .collect();
            Ok(Some(mac.join(":")))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(Error::Datapath(format!("reading the MAC of {name}: {e}"))),
    }
}

/// Writes `value` to the IPv6 setting `key` of link `name`
/// (`/proc/sys/net/ipv6/conf/NAME/KEY`), in the calling thread's namespace.
fn ipv6_setting(name: &str, key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/net/ipv6/conf/{name}/{key}");
    std::fs::write(&path, value).map_err(|e| Error::Datapath(format!("writing {path}: {e}")))
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

/// Deletes link `name` in `ns` if it exists; true if it did.
pub fn delete(ns: Ns<'_>, name: &str) -> Result<bool> {
    if !exists(ns, name)? {
        return Ok(false);
    }
    match ip(ns, &["link", "del", name]) {
        Ok(_) => Ok(true),
        // Gone meanwhile (its peer's deletion took it along).
        Err(_) if !exists(ns, name)? => Ok(true),
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
    let v6 = att.addresses.iter().any(|a| a.ip.is_ipv6());
    let mut batch = Vec::new();
    if current != ifname {
        batch.push(format!("link set {current} name {ifname}"));
    }
    batch.push(format!("link set {ifname} address {}", att.mac));
    if let Some(mtu) = att.mtu {
        batch.push(format!("link set {ifname} mtu {mtu}"));
    }
    batch.push(format!("link set {ifname} up"));
    for a in &att.addresses {
        let nodad = if a.ip.is_ipv6() { " nodad" } else { "" };
        batch.push(format!("addr add {} dev {ifname}{nodad}", a.cidr()));
    }
    batch.extend(att.routes.iter().map(|r| route_command(r, ifname)));
    let input = batch_input(&batch);
    // Settings by the link's current name (a rename keeps them), then the batch.
    within(Ns::At(netns), || {
        if v6 {
            ipv6_setting(current, "disable_ipv6", "0")?;
            ipv6_setting(current, "accept_ra", "0")?;
        }
        if tx_off {
            tx_checksum_off(current)?;
        }
        spawn_here("ip", &["-batch", "-"], Some(&input)).map(drop)
    })
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
