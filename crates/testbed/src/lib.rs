//! Test bed for real Open vSwitch: the fixture behind Wyvern's integration tests and `wyvern lab`.
//!
//! Every piece of the topology is a value that removes itself when dropped, also while a test
//! unwinds from a panic:
//!
//! * [`Chassis`]: one network namespace running its own `ovsdb-server` and `ovs-vswitchd`
//!   (userspace datapath) with a private run directory, plus wrappers for `ovs-vsctl`,
//!   `ovs-ofctl`, `ovs-appctl` and `ovsdb-tool` against exactly that instance.
//! * [`Host`]: a "VM", i.e. a network namespace joined to a chassis by a veth pair (TX checksum
//!   offload off on the VM side, which TCP through the userspace datapath needs).
//! * [`Underlay`]: a Linux bridge in its own namespace that joins chassis; each attached chassis
//!   gets `br-phy` holding the underlay address with the veth as its port and a
//!   NORMAL behaviour of a standalone bridge, which is what userspace tunnels need (and which
//!   survives a vswitchd restart, unlike a flow added by hand).
//!
//! * [`Daemon`]: a background process (server, agent) recorded in a PID file.
//!
//! Fixtures that must outlive the process that made them (`wyvern lab`) choose their own
//! names ([`Netns::create_named`], [`Chassis::start_in`], [`Host::create_in`],
//! [`Underlay::attach_named`]), `detach` the values before exiting, and a later process
//! `adopt`s them again (or finds them by name and marker, see [`leftovers`]) to stop them.
//!
//! Names are unique per process and call (prefix, pid and a counter) so tests run in parallel.
//! Daemons are stopped by PID (checked against their command line), namespaces and directories
//! by name. [`leftovers::find`] and [`leftovers::cleanup`] (binary `testbed-cleanup`) find and
//! remove whatever a killed test run left behind.
//!
//! ```no_run
//! use testbed::{Chassis, ChassisOpts, Host, HostOpts, Underlay};
//!
//! # fn main() -> testbed::Result<()> {
//! let mut underlay = Underlay::create()?;
//! let c1 = Chassis::start("c1", &ChassisOpts::default())?;
//! underlay.attach(&c1, "172.31.0.1/24")?; // br-phy with the underlay address
//! c1.add_bridge("br-int")?;
//! let vm = Host::create(&c1, &HostOpts {
//!     ip: Some("10.0.0.1/24".into()),
//!     ..HostOpts::default()
//! })?;
//! c1.ovs_vsctl(&["add-port", "br-int", vm.port()])?;
//! println!("OVSDB at {}, OpenFlow at {}", c1.db_endpoint(), c1.mgmt_socket("br-int").display());
//! # Ok(())
//! # }
//! ```

mod chassis;
mod cmd;
mod daemon;
mod error;
mod host;
pub mod leftovers;
mod names;
mod netns;
mod relay;
mod underlay;

pub use chassis::{Chassis, ChassisOpts};
pub use cmd::{alive_with_marker, die_with_parent, kill_pid_now, spawn_tied};
pub use daemon::Daemon;
pub use error::{Error, Result};
pub use host::{HOST_IF, Host, HostOpts};
pub use names::{PREFIX, unique_name};
pub use netns::{Netns, list as list_netns, within as within_netns};
pub use relay::Relay;
pub use underlay::{PHY_BRIDGE, Underlay};
