//! The underlay network between chassis, set up the way userspace tunnels need it.

use crate::{Chassis, Netns, Result, names};

/// Name of the OVS bridge that holds a chassis' underlay address.
pub const PHY_BRIDGE: &str = "br-phy";
const LINUX_BRIDGE: &str = "br0";

/// A Linux bridge in its own namespace; every attached chassis is connected to it by a veth.
/// Dropping it deletes the namespace and with it every underlay link, unless it was
/// [detached](Underlay::detach).
#[derive(Debug)]
pub struct Underlay {
    netns: Netns,
    links: u32,
}

impl Underlay {
    /// Creates the underlay namespace and its bridge.
    pub fn create() -> Result<Underlay> {
        Underlay::create_in(Netns::create('u')?)
    }

    /// Creates the underlay's bridge in the given (fresh) namespace.
    pub fn create_in(netns: Netns) -> Result<Underlay> {
        netns.ip(&["link", "add", LINUX_BRIDGE, "type", "bridge"])?;
        netns.ip(&["link", "set", LINUX_BRIDGE, "up"])?;
        Ok(Underlay { netns, links: 0 })
    }

    /// Takes charge of an underlay made earlier (possibly by another process) in `netns`.
    /// Attach further chassis with [`Underlay::attach_named`].
    pub fn adopt(netns: Netns) -> Underlay {
        Underlay { netns, links: 0 }
    }

    /// Leaves the underlay in place when the value is dropped.
    pub fn detach(self) {
        self.netns.detach();
    }

    /// The underlay namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Connects `chassis` with address `ip_cidr` (e.g. `172.31.0.1/24`): a veth from the
    /// bridge to the chassis, where it becomes a port of `br-phy`; `br-phy`'s internal port
    /// gets the address; `br-phy` is a standalone learning switch (NORMAL). vswitchd learns the route from
    /// the namespace's kernel table and resolves tunnel next hops itself.
    pub fn attach(&mut self, chassis: &Chassis, ip_cidr: &str) -> Result<()> {
        self.links += 1;
        let ul_end = format!("{}u{}", self.netns.name(), self.links);
        let ch_end = format!("{}u", chassis.netns().name());
        self.connect(chassis, ip_cidr, &ul_end, &ch_end, None)
    }

    /// Like [`Underlay::attach`], with both ends of the veth called `link` (each lives in its
    /// own namespace, so `link` only has to be unique among this underlay's links) and,
    /// if given, `mtu` on the veth, the bridge and `br-phy` (e.g. 9000, so that tunnels
    /// carry full-size overlay frames).
    pub fn attach_named(
        &self,
        chassis: &Chassis,
        ip_cidr: &str,
        link: &str,
        mtu: Option<u32>,
    ) -> Result<()> {
        self.connect(chassis, ip_cidr, link, link, mtu)
    }

    fn connect(
        &self,
        chassis: &Chassis,
        ip_cidr: &str,
        ul_end: &str,
        ch_end: &str,
        mtu: Option<u32>,
    ) -> Result<()> {
        names::check_ifname(ul_end)?;
        names::check_ifname(ch_end)?;
        crate::cmd::run(
            "ip",
            [
                "link",
                "add",
                ul_end,
                "netns",
                self.netns.name(),
                "type",
                "veth",
                "peer",
                "name",
                ch_end,
                "netns",
                chassis.netns().name(),
            ],
        )?;
        if let Some(mtu) = mtu {
            let m = mtu.to_string();
            self.netns.ip(&["link", "set", ul_end, "mtu", &m])?;
            self.netns.ip(&["link", "set", LINUX_BRIDGE, "mtu", &m])?;
            chassis.netns().ip(&["link", "set", ch_end, "mtu", &m])?;
        }
        self.netns
            .ip(&["link", "set", ul_end, "master", LINUX_BRIDGE, "up"])?;
        chassis.netns().ip(&["link", "set", ch_end, "up"])?;
        chassis.add_bridge(PHY_BRIDGE)?;
        chassis.ovs_vsctl(&["add-port", PHY_BRIDGE, ch_end])?;
        if let Some(mtu) = mtu {
            let req = format!("mtu_request={mtu}");
            for iface in [ch_end, PHY_BRIDGE] {
                chassis.ovs_vsctl(&["set", "Interface", iface, &req])?;
            }
        }
        chassis
            .netns()
            .ip(&["addr", "add", ip_cidr, "dev", PHY_BRIDGE])?;
        chassis.netns().ip(&["link", "set", PHY_BRIDGE, "up"])?;
        // A standalone bridge without a controller is a learning switch by itself (Open vSwitch
        // gives it its `priority=0,actions=NORMAL` flow), also after vswitchd restarts, when flows
        // added by hand are gone.
        chassis.ovs_vsctl(&["set-fail-mode", PHY_BRIDGE, "standalone"])?;
        chassis.wait_until(std::time::Duration::from_secs(10), || {
            chassis
                .ovs_ofctl(&["dump-flows", PHY_BRIDGE])
                .is_ok_and(|f| f.contains("actions=NORMAL"))
        })?;
        Ok(())
    }
}
