//! `ADD`, `DEL` and `CHECK`: what the plugin does with a validated configuration and
//! environment.
//!
//! * `ADD` finds the pod's port, then (host mode, and nested mode with `"vlan": "ovs"`)
//!   creates the veth pair `tap<port id[..11]>` (here) / `CNI_IFNAME` (born in the pod's
//!   namespace), configures the pod's end, and plugs the outer end into the bridge — host
//!   mode's integration bridge as the port's VIF, the VM's bridge as an access port of the
//!   subport's VLAN ([`PortKind`]); (nested mode with `"vlan": "kernel"`) creates a VLAN
//!   interface on the trunk interface under a temporary name ([`vlan_temp_name`]), moves it
//!   into the pod's namespace and configures it there as `CNI_IFNAME`. If a step fails, what
//!   the earlier steps made is removed before the error is returned.
//! * `DEL` removes, whichever of them exist, the Open vSwitch ports recorded for the
//!   attachment (and the outer ends named in `prevResult`), their links, and the pod's
//!   interface; everything missing is success.
//! * `CHECK` compares the pod's interface with `prevResult` (MAC, addresses, up), asks the API
//!   that the port still exists with that MAC, and (with a veth) that Open vSwitch has the
//!   outer end, without error, with the port's `iface-id` (host mode) or the subport's VLAN id
//!   as its `tag` (nested).

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, Env, Mode, Pod, Tagging, Vswitch};
use crate::error::{Error, Result};
use crate::link::{self, Ns};
use crate::neutron::{Attachment, Neutron, text};
use crate::ovs::{Ovs, PortKind};
use crate::spec::{self, Dns, Interface, IpConfig, Route, Success};

/// The host end's name: `tap` and the port id's first 11 characters, as Neutron names VIFs.
pub fn tap_name(port_id: &str) -> String {
    format!("tap{}", port_id.chars().take(11).collect::<String>())
}

/// The name a VLAN interface has from its creation on the trunk interface until it is renamed
/// in the pod's namespace: `wyc` and 12 hex digits of a hash of the attachment
/// (`<CNI_CONTAINERID>/<CNI_IFNAME>`), so that `DEL` can find one an interrupted `ADD` left.
pub fn vlan_temp_name(owner: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in owner.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("wyc{:012x}", h >> 16)
}

/// `ADD`: the result to print.
pub async fn add(cfg: &Config, env: &Env) -> Result<Success> {
    let netns = existing_netns(env)?;
    if link::exists(Ns::At(netns), &env.ifname)? {
        return Err(Error::Datapath(format!(
            "interface {} exists already in {}",
            env.ifname,
            netns.display()
        )));
    }
    let pod = Pod::from_args(&env.args, cfg.pod_namespace.as_deref())?;
    let api = Neutron::new(cfg)?;
    let port = api.wait_port(&pod.tag(), cfg.port_wait).await?;
    let nested = matches!(cfg.mode, Mode::Nested(_));
    let att = api.attachment(&port, nested).await?;
    let mut ours = match (&cfg.mode, cfg.vswitch()) {
        (Mode::Nested(Tagging::Kernel { trunk_interface }), _) => {
            add_vlan(env, netns, &att, trunk_interface)?
        }
        (_, None) => unreachable!("only kernel VLANs go without Open vSwitch"),
        (Mode::Host, Some(sw)) => {
            let vif = PortKind::Vif {
                port_id: &att.port_id,
                mac: &att.mac,
            };
            add_veth(sw, vif, env, netns, &att, cfg.install_wait).await?
        }
        // No Wyvern agent in the VM: nothing marks the access port (the parent's chassis
        // programs the subport, as soon as it is on the trunk — before the pod exists).
        (Mode::Nested(Tagging::Ovs { .. }), Some(sw)) => {
            let access = PortKind::Access {
                tag: vlan_of(&att)?,
            };
            add_veth(sw, access, env, netns, &att, Duration::ZERO).await?
        }
    };
    let sandbox_index = ours.interfaces.len() - 1;
    ours.ips = att
        .addresses
        .iter()
        .map(|a| IpConfig {
            version: None,
            address: a.cidr(),
            gateway: a.gateway.map(|g| g.to_string()),
            interface: Some(sandbox_index),
        })
        .collect();
    ours.routes = att
        .routes
        .iter()
        .map(|r| Route {
            dst: r.dst.clone(),
            gw: r.via.map(|v| v.to_string()),
        })
        .collect();
    ours.dns = Dns {
        nameservers: att.nameservers.clone(),
        ..Dns::default()
    };
    let result = match &cfg.prev_result {
        Some(prev) => prev.clone().merge(ours),
        None => ours,
    };
    Ok(result.for_version(cfg.cni_version))
}

fn existing_netns(env: &Env) -> Result<&Path> {
    let netns = env
        .netns
        .as_deref()
        .ok_or_else(|| Error::env("CNI_NETNS", "missing"))?;
    if netns.exists() {
        Ok(netns)
    } else {
        Err(Error::UnknownContainer(netns.display().to_string()))
    }
}

/// Nested mode: the subport's VLAN id.
fn vlan_of(att: &Attachment) -> Result<u16> {
    att.vlan
        .ok_or_else(|| Error::Api("nested mode: no VLAN id for the port".into()))
}

/// Host mode, and nested mode with `"vlan": "ovs"`: the veth pair and its outer end on `sw`
/// as `kind`; the interfaces of the result. A VIF is ready once the agent has marked it
/// installed (its flows are in the switch): `ADD` waits up to `install_wait` for that (zero:
/// not at all), and rolls back and asks to try again later if it does not come.
async fn add_veth(
    sw: Vswitch<'_>,
    kind: PortKind<'_>,
    env: &Env,
    netns: &Path,
    att: &Attachment,
    install_wait: Duration,
) -> Result<Success> {
    let tap = tap_name(&att.port_id);
    let wait = match kind {
        PortKind::Vif { .. } => install_wait,
        PortKind::Access { .. } => Duration::ZERO,
    };
    let ovs = Ovs::connect_waiting(sw.ovsdb, wait).await?;
    // What an attachment of this port that never saw its DEL left behind: the port can be
    // in one place only.
    ovs.unplug(&tap).await?;
    link::delete(Ns::Here, &tap)?;
    link::create_veth(&tap, &env.ifname, netns, att.mtu)?;
    let made = async {
        link::configure(netns, &env.ifname, &env.ifname, att, true)?;
        ovs.plug(sw.bridge, &tap, kind, &env.owner()).await?;
        let host_mac =
            link::mac_here(&tap)?.ok_or_else(|| Error::Datapath(format!("{tap} vanished")))?;
        if !wait.is_zero() {
            ovs.await_installed(&tap, &att.port_id, wait).await?;
        }
        Ok(host_mac)
    }
    .await;
    match made {
        Ok(host_mac) => Ok(Success {
            interfaces: vec![
                Interface {
                    name: tap,
                    mac: host_mac,
                    sandbox: String::new(),
                },
                Interface {
                    name: env.ifname.clone(),
                    mac: att.mac.clone(),
                    sandbox: netns.display().to_string(),
                },
            ],
            ..Success::default()
        }),
        Err(e) => {
            if let Err(u) = ovs.unplug(&tap).await {
                eprintln!("wyvern-cni: undoing ADD: unplugging {tap}: {u}");
            }
            // The pod's end goes with it.
            if let Err(u) = link::delete(Ns::Here, &tap) {
                eprintln!("wyvern-cni: undoing ADD: deleting {tap}: {u}");
            }
            Err(e)
        }
    }
}

/// Nested mode with `"vlan": "kernel"`: the VLAN interface; the interfaces of the result.
fn add_vlan(env: &Env, netns: &Path, att: &Attachment, trunk: &str) -> Result<Success> {
    let vid = vlan_of(att)?;
    let tmp = vlan_temp_name(&env.owner());
    link::delete(Ns::Here, &tmp)?;
    let made = link::create_vlan(trunk, &tmp, vid, netns)
        .and_then(|()| link::configure(netns, &tmp, &env.ifname, att, false));
    if let Err(e) = made {
        for (ns, name) in [
            (Ns::Here, tmp.as_str()),
            (Ns::At(netns), tmp.as_str()),
            (Ns::At(netns), env.ifname.as_str()),
        ] {
            if let Err(u) = link::delete(ns, name) {
                eprintln!("wyvern-cni: undoing ADD: deleting {name}: {u}");
            }
        }
        return Err(e);
    }
    Ok(Success {
        interfaces: vec![Interface {
            name: env.ifname.clone(),
            mac: att.mac.clone(),
            sandbox: netns.display().to_string(),
        }],
        ..Success::default()
    })
}

/// `DEL`.
pub async fn del(cfg: &Config, env: &Env) -> Result<()> {
    let netns = env.netns.as_deref().filter(|p| p.exists());
    match cfg.vswitch() {
        Some(sw) => {
            let ovs = Ovs::connect(sw.ovsdb).await?;
            let owner = env.owner();
            let mut names: Vec<String> = ovs
                .owned_by(&owner)
                .await?
                .into_iter()
                .map(|p| p.name)
                .collect();
            // The outer ends the ADD reported, unless Open vSwitch says they are someone
            // else's now.
            let reported = cfg.prev_result.iter().flat_map(|prev| {
                prev.interfaces
                    .iter()
                    .filter(|i| i.sandbox.is_empty() && i.name.starts_with("tap"))
                    .map(|i| i.name.clone())
            });
            for name in reported.collect::<Vec<_>>() {
                let foreign = ovs
                    .interface(&name)
                    .await?
                    .is_some_and(|p| p.owner != owner);
                if !foreign && !names.contains(&name) {
                    names.push(name);
                }
            }
            for name in &names {
                ovs.unplug(name).await?;
                link::delete(Ns::Here, name)?;
            }
        }
        None => {
            link::delete(Ns::Here, &vlan_temp_name(&env.owner()))?;
        }
    }
    if let Some(ns) = netns {
        link::delete(Ns::At(ns), &env.ifname)?;
    }
    Ok(())
}

/// `CHECK`.
pub async fn check(cfg: &Config, env: &Env) -> Result<()> {
    if !spec::has_check(cfg.cni_version) {
        return Err(Error::CommandTooNew {
            command: "CHECK".into(),
            version: cfg.cni_version.into(),
        });
    }
    let prev = cfg
        .prev_result
        .as_ref()
        .ok_or_else(|| Error::Config("CHECK needs prevResult".into()))?;
    let netns = existing_netns(env)?;
    let (index, expected) = prev
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.name == env.ifname && !i.sandbox.is_empty())
        .ok_or_else(|| {
            Error::Check(format!(
                "prevResult has no interface {} in a sandbox",
                env.ifname
            ))
        })?;
    let have = link::find(Ns::At(netns), &env.ifname)?.ok_or_else(|| {
        Error::Check(format!(
            "no interface {} in {}",
            env.ifname,
            netns.display()
        ))
    })?;
    if !have.mac.eq_ignore_ascii_case(&expected.mac) {
        return Err(Error::Check(format!(
            "{} has MAC {}, not {}",
            env.ifname, have.mac, expected.mac
        )));
    }
    if !have.up {
        return Err(Error::Check(format!("{} is down", env.ifname)));
    }
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(index)) {
        if !have
            .addresses
            .iter()
            .any(|a| link::same_address(a, &ip.address))
        {
            return Err(Error::Check(format!(
                "{} lacks address {} (has {})",
                env.ifname,
                ip.address,
                have.addresses.join(", ")
            )));
        }
    }
    let pod = Pod::from_args(&env.args, cfg.pod_namespace.as_deref())?;
    let api = Neutron::new(cfg)?;
    let port = api
        .find_port(&pod.tag())
        .await?
        .ok_or_else(|| Error::Check(format!("no port tagged {:?} any more", pod.tag())))?;
    if !text(&port, "mac_address").eq_ignore_ascii_case(&expected.mac) {
        return Err(Error::Check(format!(
            "port {} has MAC {}, the interface {}",
            text(&port, "id"),
            text(&port, "mac_address"),
            expected.mac
        )));
    }
    if let Some(sw) = cfg.vswitch() {
        let ovs = Ovs::connect(sw.ovsdb).await?;
        let plugged = ovs.owned_by(&env.owner()).await?;
        let [p] = plugged.as_slice() else {
            return Err(Error::Check(format!(
                "{} Open vSwitch ports recorded for {} (expected one)",
                plugged.len(),
                env.owner()
            )));
        };
        if let Mode::Nested(_) = cfg.mode {
            let vid = api.subport_vlan(&port).await?;
            let tag = ovs.tag(&p.name).await?;
            if tag != Some(vid) {
                return Err(Error::Check(format!(
                    "Open vSwitch port {} has tag {tag:?}, the pod's subport VLAN {vid}",
                    p.name
                )));
            }
        } else if p.iface_id != text(&port, "id") {
            return Err(Error::Check(format!(
                "Open vSwitch port {} has iface-id {:?}, the pod's port is {}",
                p.name,
                p.iface_id,
                text(&port, "id")
            )));
        }
        if let Some(err) = &p.error {
            return Err(Error::Check(format!(
                "Open vSwitch cannot use {}: {err}",
                p.name
            )));
        }
        let reported = prev
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_empty() && i.name.starts_with("tap"));
        if let Some(r) = reported
            && r.name != p.name
        {
            return Err(Error::Check(format!(
                "outer end is {}, ADD reported {}",
                p.name, r.name
            )));
        }
        match link::find(Ns::Here, &p.name)? {
            Some(l) if l.up => {}
            Some(_) => return Err(Error::Check(format!("{} is down", p.name))),
            None => return Err(Error::Check(format!("no link {}", p.name))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_are_stable() {
        assert_eq!(
            tap_name("3f2a9c1e-77b0-4d4e-9a51-0c6b8a1d2e3f"),
            "tap3f2a9c1e-77"
        );
        let a = vlan_temp_name("abc/eth0");
        assert_eq!(a, vlan_temp_name("abc/eth0"));
        assert_ne!(a, vlan_temp_name("abc/eth1"));
        assert_eq!(a.len(), 15);
        crate::config::check_ifname(&a).unwrap();
    }
}
