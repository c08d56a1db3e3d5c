//! `wyvern lab`: a whole Wyvern deployment on one machine, from a declarative topology file.
//!
//! `wyvern lab up FILE` starts the API server (`wyvern server`, embedded store), one Open
//! vSwitch per chassis (userspace datapath, each in its own network namespace, joined by one
//! underlay L2 segment), runs [`chassis::ensure`] for `br-int` with Geneve and VXLAN tunnel
//! ports, starts one `wyvern agent` per chassis (if the binary has that subcommand; otherwise
//! it warns and goes on), creates networks, subnets, routers (interfaces, extra routes) and one
//! port per VM through the Neutron API, and gives every VM a namespace wired into its chassis'
//! `br-int` ([`chassis::plug_vif`] with the port's id, MAC, `iface-status=active`) whose `eth0`
//! has the port's MAC and addresses, the network's MTU, default routes via the subnets'
//! gateways and TX checksum offload off (IPv6 by SLAAC instead if the VM asks). Running `up`
//! again changes only what differs from the file (nothing, the second time): a router's
//! interfaces and routes become the file's. `status`, `exec HOST -- CMD` and `down` work by the
//! lab's name; `down` works without the state file too (after a crash half way), see [`names`].
//! The lab only ever configures namespaces it created.
//!
//! # Topology file (TOML)
//!
//! ```toml
//! name = "demo"                  # required; 1-16 of [a-z0-9-]; part of every name
//!
//! [server]                       # optional
//! listen = "127.0.0.1"           # ADDR or ADDR:PORT; default 127.0.0.1, a free port
//!
//! [underlay]                     # optional
//! cidr = "172.31.0.0/24"         # tunnel addresses (inside the lab's namespaces only)
//! mtu = 9000                     # underlay MTU (1280-9000)
//! encap = "geneve"               # the agents' --encap: geneve | vxlan
//!
//! [[chassis]]                    # one or more
//! name = "c1"                    # 1-12 of [a-z0-9-]; OVS system-id, binding:host_id
//! ip = "172.31.0.11"             # optional; default: the n-th host address of cidr
//!
//! [[network]]                    # zero or more
//! name = "web"                   # unique; [A-Za-z0-9._-]
//! project = "alpha"              # optional; default: admin
//! mtu = 1400                     # optional; default: the server's (1450)
//!
//! [[network.subnet]]             # one or more per network with VMs
//! cidr = "fd00:1::/64"           # IPv4 or IPv6
//! gateway = "fd00:1::1"          # optional: an address, or "none"; default: the server's
//! name = "web-v6"                # optional; default <network>-<n>; unique in the file
//! ip_version = 6                 # optional; default (and it must agree): the cidr's
//! ipv6_ra_mode = "slaac"         # optional, IPv6: slaac | dhcpv6-stateless | dhcpv6-stateful
//! ipv6_address_mode = "slaac"    # optional, IPv6: the same values (equal if both are set)
//! dns_nameservers = ["fd00:1::53"] # optional; absent: left as they are
//!
//! [[router]]                     # zero or more
//! name = "r1"                    # unique; [A-Za-z0-9._-]
//! project = "alpha"              # optional; default: admin (which may join any project's
//!                                # subnets; another project only its own)
//! interfaces = ["web-v4", "web-v6"] # subnets by name (each needs a gateway): an interface
//!                                # at each gateway address (add_router_interface)
//! routes = [{ destination = "192.168.50.0/24", nexthop = "10.0.0.20" }]
//!                                # extra routes; each next hop inside an interface's subnet
//!
//! [[vm]]                         # zero or more
//! name = "web1"                  # 1-32 of [a-z0-9-], unique among chassis and VMs
//! network = "web"
//! chassis = "c1"
//! ip = "10.0.0.11"               # optional fixed IP; default: allocated (on a dual-stack
//!                                # network the other IP version's address is allocated)
//! project = "alpha"              # optional; default: the network's project
//! ipv6 = "static"                # optional: static (default; the port's IPv6 addresses and a
//!                                # default route via the gateway, router advertisements
//!                                # ignored) | slaac (the lab configures no IPv6: accept_ra=2,
//!                                # autoconf=1, addresses and routes from router advertisements)
//! forwarding = true              # optional: IPv4 and IPv6 forwarding on (default false)
//! extra_addresses = ["192.168.50.1/24"] # optional: on a dummy interface in the VM
//!                                # (`behind0`), a prefix "behind" it; its port allows
//!                                # them as sources
//! ```
//!
//! # Library
//!
//! ```no_run
//! use lab::{Lab, LabOptions, Topology};
//!
//! # fn main() -> lab::Result<()> {
//! let topo = Topology::from_file("examples/demo.toml".as_ref())?;
//! let opts = LabOptions { wyvern: "target/debug/wyvern".into(), ..LabOptions::default() };
//! let mut lab = Lab::up(&topo, &opts)?;           // Drop tears it down again
//! let out = lab.exec("web1", &["ping", "-c1", "10.0.0.12"])?;
//! println!("{} {:?}", lab.port_id("web1").unwrap(), out.status);
//! lab.kill_agent("c1")?;                          // SIGKILL, like a crash
//! lab.restart_agent("c1")?;
//! assert!(lab.converge(&topo)?.is_empty());       // up again: nothing to change
//! lab.down()?;
//! # Ok(())
//! # }
//! ```

mod cli;
mod error;
mod lab;
pub mod names;
mod neutron;
mod state;
mod status;
mod topology;

pub use cli::{LabCommand, run};
pub use error::{Error, Result};
pub use lab::{Lab, LabOptions, down, exec_command};
pub use state::{ChassisState, NetworkState, RouterState, State, SubnetState, VmState};
pub use status::{ChassisStatus, Status, status};
pub use topology::{
    ChassisSpec, Gateway, Ipv6Config, Ipv6Mode, NetworkSpec, RouteSpec, RouterSpec, ServerSpec,
    SubnetSpec, Topology, UnderlaySpec, VmSpec,
};
