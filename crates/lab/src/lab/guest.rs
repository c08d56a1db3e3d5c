//! Inside a VM's namespace: the sysctls, addresses and routes the lab gives it, as its
//! [`VmState`] says. Only ever applied to namespaces the lab created for its VMs.
//!
//! IPv4: the port's addresses on `eth0`, a default route via the first one's gateway.
//! IPv6, `static`: the port's IPv6 addresses (no duplicate address detection: they are the
//! port's own), a default route via the gateway, router advertisements ignored. IPv6, `slaac`:
//! nothing but `accept_ra=2`, `autoconf=1` on `eth0`, with IPv6 started afresh once the port
//! is on `br-int`, so that the router solicitation goes out through it. `forwarding`: IPv4 and
//! IPv6 forwarding on. Extra addresses: on [`EXTRA_IF`], a dummy interface. The external hosts
//! (see `physical`) use [`sysctl`] and [`add_address`] too.

use testbed::{HOST_IF, Host, HostOpts, Netns};

use crate::Result;
use crate::state::VmState;
use crate::topology::Ipv6Config;

/// The dummy interface holding a VM's extra addresses: one end of a veth pair whose both ends
/// stay inside the VM (kernels without the `dummy` driver exist, a veth is needed anyway).
pub const EXTRA_IF: &str = "behind0";
/// The other end of that pair.
const EXTRA_PEER: &str = "behind0p";

fn is_v6(address: &str) -> bool {
    address.contains(':')
}

fn slaac(vm: &VmState) -> bool {
    vm.ipv6 == Ipv6Config::Slaac
}

/// The addresses the lab puts on `eth0`: IPv4 ones first.
fn eth0_addresses(vm: &VmState) -> impl Iterator<Item = &String> {
    vm.addresses.iter().filter(|a| !(slaac(vm) && is_v6(a)))
}

fn uses_ipv6(vm: &VmState) -> bool {
    vm.addresses
        .iter()
        .chain(&vm.extra_addresses)
        .any(|a| is_v6(a))
}

/// `sysctl -qw` of `settings` (`key=value`) in `ns`.
pub(super) fn sysctl(ns: &Netns, settings: &[String]) -> Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let mut args = vec!["sysctl", "-qw"];
    args.extend(settings.iter().map(String::as_str));
    ns.exec(&args)?;
    Ok(())
}

/// `ip addr add` of `address` on `dev`; IPv6 ones without duplicate address detection.
pub(super) fn add_address(ns: &Netns, dev: &str, address: &str) -> Result<()> {
    let mut args = vec!["addr", "add", address, "dev", dev];
    if is_v6(address) {
        args.push("nodad");
    }
    ns.ip(&args)?;
    Ok(())
}

/// Sysctls set before `eth0` exists, so that it is born with them: IPv6 on where the VM uses
/// it (router advertisements accepted only with SLAAC), forwarding if asked for.
pub fn prepare(ns: &Netns, vm: &VmState) -> Result<()> {
    let mut settings = Vec::new();
    if uses_ipv6(vm) {
        let ra = if slaac(vm) { 2 } else { 0 };
        let auto = u8::from(slaac(vm));
        settings.extend([
            "net.ipv6.conf.all.disable_ipv6=0".to_owned(),
            "net.ipv6.conf.default.disable_ipv6=0".to_owned(),
            format!("net.ipv6.conf.default.accept_ra={ra}"),
            format!("net.ipv6.conf.default.autoconf={auto}"),
        ]);
    }
    if vm.forwarding {
        settings.extend([
            "net.ipv4.ip_forward=1".to_owned(),
            "net.ipv6.conf.all.forwarding=1".to_owned(),
        ]);
    }
    sysctl(ns, &settings)
}

/// How [`Host::create_in`] sets up `eth0`: MAC, MTU, the first IPv4 address and the IPv4
/// default route.
pub fn host_opts(vm: &VmState) -> HostOpts {
    HostOpts {
        ip: eth0_addresses(vm).find(|a| !is_v6(a)).cloned(),
        mac: Some(vm.mac.clone()),
        mtu: Some(vm.mtu),
        gateway: vm.gateway.clone(),
    }
}

/// [`host_opts`] without addresses or routes: `eth0` of a VM whose addresses live elsewhere (a
/// service function's bridge, a trunk VM's own switch).
pub fn bare_opts(vm: &VmState) -> HostOpts {
    HostOpts {
        ip: None,
        gateway: None,
        ..host_opts(vm)
    }
}

/// Once `eth0` exists: its other addresses, the IPv6 default route, [`EXTRA_IF`] with the
/// extra addresses.
pub fn configure(host: &Host, vm: &VmState) -> Result<()> {
    let ns = host.netns();
    let first = host_opts(vm).ip;
    for a in eth0_addresses(vm).filter(|a| Some(*a) != first.as_ref()) {
        add_address(ns, HOST_IF, a)?;
    }
    if let Some(gw) = &vm.gateway6 {
        ns.ip(&["-6", "route", "add", "default", "via", gw, "dev", HOST_IF])?;
    }
    if !vm.extra_addresses.is_empty() {
        ns.ip(&[
            "link", "add", EXTRA_IF, "type", "veth", "peer", "name", EXTRA_PEER,
        ])?;
        for dev in [EXTRA_PEER, EXTRA_IF] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        for a in &vm.extra_addresses {
            add_address(ns, EXTRA_IF, a)?;
        }
    }
    Ok(())
}

/// With SLAAC, once the port is on `br-int`: router advertisements accepted on `eth0` and its
/// IPv6 restarted (a new link-local address, then a router solicitation). Nothing otherwise.
pub fn start_slaac(host: &Host, vm: &VmState) -> Result<()> {
    if !slaac(vm) || !uses_ipv6(vm) {
        return Ok(());
    }
    let conf = format!("net.ipv6.conf.{HOST_IF}");
    sysctl(
        host.netns(),
        &[
            format!("{conf}.accept_ra=2"),
            format!("{conf}.autoconf=1"),
            format!("{conf}.forwarding={}", u8::from(vm.forwarding)),
            format!("{conf}.disable_ipv6=1"),
            format!("{conf}.disable_ipv6=0"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(ipv6: Ipv6Config) -> VmState {
        VmState {
            port_id: "p".into(),
            project: None,
            network: "n".into(),
            chassis: "c1".into(),
            netns: "ns".into(),
            tap: "tap".into(),
            mac: "fa:16:3e:00:00:01".into(),
            addresses: vec![
                "10.0.0.5/24".into(),
                "10.0.1.5/24".into(),
                "fd00::5/64".into(),
            ],
            gateway: Some("10.0.0.1".into()),
            gateway6: None,
            mtu: 1450,
            ipv6,
            forwarding: false,
            extra_addresses: vec![],
        }
    }

    #[test]
    fn slaac_leaves_ipv6_to_router_advertisements() {
        let s = vm(Ipv6Config::Static);
        assert_eq!(eth0_addresses(&s).count(), 3);
        assert_eq!(host_opts(&s).ip.as_deref(), Some("10.0.0.5/24"));
        let a = vm(Ipv6Config::Slaac);
        let on_eth0: Vec<&String> = eth0_addresses(&a).collect();
        assert_eq!(on_eth0, ["10.0.0.5/24", "10.0.1.5/24"]);
        assert!(uses_ipv6(&a));
        let mut v4 = vm(Ipv6Config::Static);
        v4.addresses.pop();
        assert!(!uses_ipv6(&v4));
        v4.extra_addresses.push("fd50::1/64".into());
        assert!(uses_ipv6(&v4));
    }
}
