//! A "VM": a network namespace joined to a chassis by a veth pair.

use crate::{Chassis, Netns, Result, names};

/// How to configure a [`Host`].
#[derive(Debug, Clone, Default)]
pub struct HostOpts {
    /// Address with prefix length for the host's interface, e.g. `10.0.0.1/24`.
    pub ip: Option<String>,
    /// MAC address of the host's interface (default: kernel-chosen).
    pub mac: Option<String>,
    /// MTU of both ends of the veth pair (e.g. 1400 behind userspace tunnels).
    pub mtu: Option<u32>,
    /// Default gateway (needs an address on the same subnet).
    pub gateway: Option<String>,
}

/// A host namespace with interface `eth0`, whose veth peer ([`Host::port`]) sits in the
/// chassis namespace, ready to be added to a bridge. Dropping it deletes the namespace and so
/// both ends of the pair, unless it was [detached](Host::detach).
#[derive(Debug)]
pub struct Host {
    netns: Netns,
    port: String,
    mac: String,
}

/// Name of the host-side interface.
pub const HOST_IF: &str = "eth0";

impl Host {
    /// Creates the host and its veth pair to `chassis`. TX checksum offload is switched off
    /// on the host side: with it on, TCP through the userspace datapath carries bad checksums.
    pub fn create(chassis: &Chassis, opts: &HostOpts) -> Result<Host> {
        let netns = Netns::create('h')?;
        let port = format!("{}p", netns.name());
        Host::create_in(chassis, netns, &port, opts)
    }

    /// Like [`Host::create`], in the given (fresh) namespace, with the chassis-side veth end
    /// called `port`.
    pub fn create_in(chassis: &Chassis, netns: Netns, port: &str, opts: &HostOpts) -> Result<Host> {
        let port = port.to_owned();
        names::check_ifname(&port)?;
        crate::cmd::run(
            "ip",
            [
                "link",
                "add",
                &port,
                "netns",
                chassis.netns().name(),
                "type",
                "veth",
                "peer",
                "name",
                HOST_IF,
                "netns",
                netns.name(),
            ],
        )?;
        // The namespace guard removes the pair from here on.
        if let Some(mac) = &opts.mac {
            netns.ip(&["link", "set", HOST_IF, "address", mac])?;
        }
        if let Some(mtu) = opts.mtu {
            let mtu = mtu.to_string();
            netns.ip(&["link", "set", HOST_IF, "mtu", &mtu])?;
            chassis.netns().ip(&["link", "set", &port, "mtu", &mtu])?;
        }
        if let Some(ip) = &opts.ip {
            netns.ip(&["addr", "add", ip, "dev", HOST_IF])?;
        }
        netns.ip(&["link", "set", HOST_IF, "up"])?;
        chassis.netns().ip(&["link", "set", &port, "up"])?;
        netns.exec(&["ethtool", "-K", HOST_IF, "tx", "off"])?;
        if let Some(gw) = &opts.gateway {
            netns.ip(&["route", "add", "default", "via", gw, "dev", HOST_IF])?;
        }
        let mac = read_mac(&netns, HOST_IF)?;
        Ok(Host { netns, port, mac })
    }

    /// Takes charge of a host made earlier (possibly by another process) in `netns`, whose
    /// chassis-side veth end is `port`.
    pub fn adopt(netns: Netns, port: &str) -> Result<Host> {
        let mac = read_mac(&netns, HOST_IF)?;
        Ok(Host {
            netns,
            port: port.to_owned(),
            mac,
        })
    }

    /// Leaves the host in place when the value is dropped; [`Host::adopt`] takes charge of it
    /// again.
    pub fn detach(self) {
        self.netns.detach();
    }

    /// The host's namespace.
    pub fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Name of the veth end inside the chassis namespace (the future OVS port).
    pub fn port(&self) -> &str {
        &self.port
    }

    /// MAC address of the host's `eth0`.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// Runs a command inside the host namespace.
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        self.netns.exec(args)
    }

    /// Pings `ip` `count` times (0.2 s apart, 2 s timeout each); Ok if any reply came back.
    pub fn ping(&self, ip: &str, count: u32) -> Result<String> {
        let c = count.to_string();
        self.exec(&["ping", "-c", &c, "-i", "0.2", "-W", "2", ip])
    }
}

pub(crate) fn read_mac(netns: &Netns, ifname: &str) -> Result<String> {
    let path = format!("/sys/class/net/{ifname}/address");
    Ok(netns.exec(&["cat", &path])?.trim().to_owned())
}
