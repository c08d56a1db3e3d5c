//! The world outside the cloud: physical segments, the chassis' uplinks into them and external
//! hosts on them.
//!
//! A segment is a switch: an Open vSwitch bridge called like the segment (userspace datapath,
//! `fail_mode=standalone`, so a VLAN-aware learning switch) in a namespace of its own, run like a
//! chassis' (`wyvern lab exec <seg> -- ovs-vsctl show` finds it). Every chassis has an uplink into
//! every segment: a veth from the switch's port `<chassis>` (a trunk: all VLANs, tagged) to the
//! port `ph-<seg>` of the chassis' provider bridge `br-<seg>`, which the lab makes before the
//! agent starts (userspace datapath, `fail_mode=standalone`: the agent only adds its patch port
//! and programs `br-int`). An external host is a namespace whose `eth0` is the other end of the
//! switch's port `<host>`: an access port in the host's VLAN (`tag`), or of untagged frames only
//! (`tag=0`) — the kernel here has no 802.1Q devices, so the switch does the tagging, as a
//! physical access switch would. Everything carries the segment's MTU; the external hosts send
//! without TX checksum offload (TCP through the userspace datapath needs it). A host with an
//! IPv6 address (`ip6`) has IPv6 on (router advertisements ignored: its routes are the file's)
//! and the address without duplicate address detection, usable at once; one without has no
//! IPv6, like every namespace of the lab's.

use std::net::IpAddr;
use std::time::Duration;

use chassis::BridgeMapping;
use testbed::{Chassis, ChassisOpts, HOST_IF, Netns};

use super::{Lab, guest, io};
use crate::names::{self, host_netns};
use crate::state::{ExternalState, PhysicalState};
use crate::topology::{ExternalSpec, PhysicalSpec, Topology};
use crate::{Error, Result};

/// How long a new bridge may take to get its NORMAL flow.
const BRIDGE_READY: Duration = Duration::from_secs(10);

/// The agent's bridge mappings for `segments`: each to its provider bridge.
pub(super) fn bridge_mappings<'a>(
    segments: impl IntoIterator<Item = &'a str>,
) -> Vec<BridgeMapping> {
    segments
        .into_iter()
        .map(|s| BridgeMapping {
            physnet: s.to_owned(),
            bridge: names::provider_bridge(s),
        })
        .collect()
}

/// Makes `bridge` on `ovs` a standalone learning switch on the userspace datapath (if it is
/// not one already) and waits for its NORMAL flow.
fn learning_bridge(ovs: &Chassis, bridge: &str) -> Result<()> {
    if ovs.ovs_vsctl(&["br-exists", bridge]).is_err() {
        ovs.add_bridge(bridge)?;
    }
    if ovs.ovs_vsctl(&["get-fail-mode", bridge])?.trim() != "standalone" {
        ovs.ovs_vsctl(&["set-fail-mode", bridge, "standalone"])?;
    }
    ovs.wait_until(BRIDGE_READY, || {
        ovs.ovs_ofctl(&["dump-flows", bridge])
            .is_ok_and(|f| f.contains("actions=NORMAL"))
    })?;
    Ok(())
}

/// Makes `port` (a network device) the port `port` of `bridge` on `ovs`, afresh, with MTU `mtu`
/// and the Port `settings` (`tag=101`).
fn add_port(ovs: &Chassis, bridge: &str, port: &str, mtu: u32, settings: &[&str]) -> Result<()> {
    let mtu = format!("mtu_request={mtu}");
    let mut args = vec![
        "--if-exists",
        "del-port",
        bridge,
        port,
        "--",
        "add-port",
        bridge,
        port,
    ];
    args.extend_from_slice(settings);
    args.extend(["--", "set", "Interface", port, &mtu]);
    ovs.ovs_vsctl(&args)?;
    Ok(())
}

/// Whether `port` is a network device in `ovs`' namespace and a port of its `bridge`.
fn plugged(ovs: &Chassis, bridge: &str, port: &str) -> bool {
    ovs.netns().ip(&["link", "show", "dev", port]).is_ok()
        && ovs
            .ovs_vsctl(&["port-to-br", port])
            .is_ok_and(|b| b.trim() == bridge)
}

/// A veth pair from `a` in `a_ns` to `b` in `b_ns`, both up with MTU `mtu` (whatever was called
/// so before goes first).
fn veth(a_ns: &Netns, a: &str, b_ns: &Netns, b: &str, mtu: u32) -> Result<()> {
    let _ = a_ns.ip(&["link", "del", "dev", a]);
    let _ = b_ns.ip(&["link", "del", "dev", b]);
    a_ns.ip(&[
        "link",
        "add",
        "name",
        a,
        "type",
        "veth",
        "peer",
        "name",
        b,
        "netns",
        b_ns.name(),
    ])?;
    let mtu = mtu.to_string();
    for (ns, dev) in [(a_ns, a), (b_ns, b)] {
        ns.ip(&["link", "set", "dev", dev, "mtu", &mtu, "up"])?;
    }
    Ok(())
}

impl Lab {
    /// The running switch of segment `name`.
    fn switch(&self, name: &str) -> Result<&Chassis> {
        self.segments
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("physical segment {name} is not running")))
    }

    fn segment_healthy(&self, spec: &PhysicalSpec, want: &PhysicalState) -> bool {
        let Some(sw) = self.segments.get(&spec.name) else {
            return false;
        };
        self.state.physical.get(&spec.name) == Some(want)
            && sw.ovsdb_pid().is_some()
            && sw.vswitchd_pid().is_some()
            && sw.ovs_vsctl(&["br-exists", &spec.name]).is_ok()
    }

    /// Brings every physical segment of `topo` up (a switch that is missing, broken or of
    /// another MTU is made afresh; its uplinks and hosts follow when the chassis and hosts are
    /// ensured).
    pub(super) fn ensure_segments(
        &mut self,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for spec in &topo.physical {
            let name = spec.name.as_str();
            let what = format!("physical {name}");
            let want = PhysicalState {
                netns: host_netns(&self.name, name),
                rundir: self.dir.join(name),
                mtu: spec.mtu,
                provider_bridge: names::provider_bridge(name),
            };
            if !self.segments.contains_key(name)
                && let Ok(ns) = Netns::adopt(&want.netns)
            {
                let sw = Chassis::adopt(name, ns, want.rundir.clone());
                self.segments.insert(name.to_owned(), sw);
            }
            if self.segment_healthy(spec, &want) {
                self.say(&what, &format!("running (netns {})", want.netns));
                continue;
            }
            // Whatever is left of it goes first (daemons, namespace, run directory).
            drop(self.segments.remove(name));
            if let Ok(ns) = Netns::adopt(&want.netns) {
                drop(ns);
            }
            if want.rundir.exists() {
                std::fs::remove_dir_all(&want.rundir)
                    .map_err(io(format!("rm {}", want.rundir.display())))?;
            }
            let sw = Chassis::start_in(
                name,
                Netns::create_named(&want.netns)?,
                want.rundir.clone(),
                &ChassisOpts::default(),
            )?;
            learning_bridge(&sw, name)?;
            self.segments.insert(name.to_owned(), sw);
            let status = format!("switch started (netns {}, mtu {})", want.netns, want.mtu);
            self.state.physical.insert(name.to_owned(), want);
            self.changed(changes, &what, &status);
        }
        Ok(())
    }

    /// Deletes the segments `topo` no longer has (once the chassis have dropped their provider
    /// bridges and the hosts on them are gone).
    pub(super) fn remove_segments(&mut self, topo: &Topology, changes: &mut Vec<String>) {
        let stale: Vec<String> = self
            .state
            .physical
            .keys()
            .filter(|s| topo.physical_segment(s).is_none())
            .cloned()
            .collect();
        for name in stale {
            drop(self.segments.remove(&name));
            if let Some(p) = self.state.physical.remove(&name) {
                testbed::leftovers::destroy_netns(&p.netns);
                if let Err(e) = std::fs::remove_dir_all(&p.rundir)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    self.warn(&format!("cannot remove {}: {e}", p.rundir.display()));
                }
            }
            self.changed(changes, &format!("physical {name}"), "removed");
        }
    }

    /// Gives chassis `name` its provider bridge and uplink into every segment of `topo`, and
    /// takes away the bridges of the segments `topo` no longer has.
    pub(super) fn ensure_uplinks(
        &self,
        topo: &Topology,
        name: &str,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let what = format!("chassis {name}");
        let ch = self
            .chassis
            .get(name)
            .ok_or_else(|| Error::NotFound(format!("chassis {name} is not running")))?;
        for seg in self.state.physical.keys() {
            let bridge = names::provider_bridge(seg);
            if topo.physical_segment(seg).is_none() && ch.ovs_vsctl(&["br-exists", &bridge]).is_ok()
            {
                ch.ovs_vsctl(&["del-br", &bridge])?;
                let _ = ch.netns().ip(&["link", "del", "dev", &names::uplink(seg)]);
                self.changed(changes, &what, &format!("{bridge} removed"));
            }
        }
        for spec in &topo.physical {
            let seg = spec.name.as_str();
            let sw = self.switch(seg)?;
            let (bridge, up) = (names::provider_bridge(seg), names::uplink(seg));
            let healthy = plugged(ch, &bridge, &up)
                && plugged(sw, seg, name)
                && ch
                    .ovs_vsctl(&["get-fail-mode", &bridge])
                    .is_ok_and(|m| m.trim() == "standalone");
            if healthy {
                continue;
            }
            veth(sw.netns(), name, ch.netns(), &up, spec.mtu)?;
            add_port(sw, seg, name, spec.mtu, &[])?;
            learning_bridge(ch, &bridge)?;
            add_port(ch, &bridge, &up, spec.mtu, &[])?;
            let status = format!("uplink {up} on {bridge} into {seg}");
            self.changed(changes, &what, &status);
        }
        Ok(())
    }

    /// Takes chassis `name`'s uplinks off the segments' switches (the chassis is going).
    pub(super) fn unplug_uplinks(&self, name: &str) {
        for (seg, sw) in &self.segments {
            if let Err(e) = sw.ovs_vsctl(&["--if-exists", "del-port", seg, name]) {
                self.warn(&format!("cannot unplug {name} from {seg}: {e}"));
            }
        }
    }

    fn external_healthy(&self, spec: &ExternalSpec, want: &ExternalState) -> bool {
        let Some(ns) = self.externals.get(&spec.name) else {
            return false;
        };
        let Some(sw) = self.segments.get(&spec.physical) else {
            return false;
        };
        self.state.externals.get(&spec.name) == Some(want)
            && Netns::exists(&want.netns)
            && ns.ip(&["link", "show", "dev", HOST_IF]).is_ok()
            && plugged(sw, &spec.physical, &spec.name)
    }

    /// Brings every external host of `topo` in line with it (a host that differs is made
    /// afresh) and removes those it no longer has.
    pub(super) fn ensure_externals(
        &mut self,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        for name in self.state.externals.keys().cloned().collect::<Vec<_>>() {
            if !topo.externals.iter().any(|e| e.name == name) {
                self.remove_external(&name);
                self.changed(changes, &format!("external {name}"), "removed");
            }
        }
        for spec in &topo.externals {
            let mtu = topo
                .physical_segment(&spec.physical)
                .ok_or_else(|| Error::NotFound(format!("no physical segment {}", spec.physical)))?
                .mtu;
            let want = ExternalState {
                netns: host_netns(&self.name, &spec.name),
                physical: spec.physical.clone(),
                vlan: spec.vlan,
                address: spec.ip.to_string(),
                address6: spec.ip6.map(|a| a.to_string()),
                gateway: spec.gateway,
                gateway6: spec.gateway6,
                routes: spec.routes.clone(),
                mtu,
            };
            if !self.externals.contains_key(&spec.name)
                && let Ok(ns) = Netns::adopt(&want.netns)
            {
                self.externals.insert(spec.name.clone(), ns);
            }
            let what = format!("external {}", spec.name);
            let place = match spec.vlan {
                Some(v) => format!("{} vlan {v}", spec.physical),
                None => format!("{} untagged", spec.physical),
            };
            let addresses = want.addresses();
            if self.external_healthy(spec, &want) {
                self.say(&what, &format!("ok ({addresses} on {place})"));
                continue;
            }
            self.remove_external(&spec.name);
            let ns = Netns::create_named(&want.netns)?;
            if want.address6.is_some() {
                // Before `eth0` exists, so that it is born with them.
                let settings = [
                    "net.ipv6.conf.all.disable_ipv6=0",
                    "net.ipv6.conf.default.disable_ipv6=0",
                    "net.ipv6.conf.default.accept_ra=0",
                    "net.ipv6.conf.default.autoconf=0",
                ];
                guest::sysctl(&ns, &settings.map(String::from))?;
            }
            let sw = self.switch(&spec.physical)?;
            veth(sw.netns(), &spec.name, &ns, HOST_IF, mtu)?;
            ns.exec(&["ethtool", "-K", HOST_IF, "tx", "off"])?;
            for a in std::iter::once(&want.address).chain(&want.address6) {
                guest::add_address(&ns, HOST_IF, a)?;
            }
            let gateways = [spec.gateway.map(IpAddr::V4), spec.gateway6.map(IpAddr::V6)];
            let defaults = gateways
                .into_iter()
                .flatten()
                .map(|gw| ("default".to_owned(), gw));
            let routes = spec
                .routes
                .iter()
                .map(|r| (r.destination.to_string(), r.nexthop));
            for (dest, hop) in defaults.chain(routes) {
                let family = if hop.is_ipv4() { "-4" } else { "-6" };
                let hop = hop.to_string();
                ns.ip(&[family, "route", "add", &dest, "via", &hop, "dev", HOST_IF])?;
            }
            let tag = format!("tag={}", spec.vlan.unwrap_or(0));
            add_port(sw, &spec.physical, &spec.name, mtu, &[&tag])?;
            self.externals.insert(spec.name.clone(), ns);
            let status = format!("wired ({addresses} on {place}, {})", want.netns);
            self.state.externals.insert(spec.name.clone(), want);
            self.changed(changes, &what, &status);
        }
        Ok(())
    }

    /// Deletes external host `name`'s namespace (and with it its veth) and its switch port.
    fn remove_external(&mut self, name: &str) {
        drop(self.externals.remove(name));
        if let Some(old) = self.state.externals.remove(name) {
            testbed::leftovers::destroy_netns(&old.netns);
            if let Some(sw) = self.segments.get(&old.physical)
                && let Err(e) = sw.ovs_vsctl(&["--if-exists", "del-port", &old.physical, name])
            {
                self.warn(&format!("cannot unplug {name} from {}: {e}", old.physical));
            }
        }
    }
}
