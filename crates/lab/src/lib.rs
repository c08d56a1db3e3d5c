//! `wyvern lab`: a whole Wyvern deployment on one machine, from a declarative topology file.
//!
//! `wyvern lab up FILE` starts the API server (`wyvern server`, embedded store), one Open
//! vSwitch per chassis (userspace datapath, each in its own network namespace, joined by one
//! underlay L2 segment), runs [`chassis::ensure`] for `br-int` with Geneve and VXLAN tunnel
//! ports, starts one `wyvern agent` per chassis (if the binary has that subcommand; otherwise
//! it warns and goes on), creates networks, subnets and one port per VM through the Neutron
//! API, and gives every VM a namespace wired into its chassis' `br-int` ([`chassis::plug_vif`]
//! with the port's id, MAC, `iface-status=active`) whose `eth0` has the port's MAC and
//! addresses, the network's MTU, a default route via the subnet's gateway and TX checksum
//! offload off. Running `up` again changes only what differs from the file (nothing, the
//! second time). `status`, `exec HOST -- CMD` and `down` work by the lab's name; `down`
//! works without the state file too (after a crash half way), see [`names`].
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
//! cidr = "10.0.0.0/24"           # IPv4 or IPv6
//! gateway = "10.0.0.1"           # optional: an address, or "none"; default: the server's
//! name = "web-1"                 # optional; default <network>-<n>
//!
//! [[vm]]                         # zero or more
//! name = "web1"                  # 1-32 of [a-z0-9-], unique among chassis and VMs
//! network = "web"
//! chassis = "c1"
//! ip = "10.0.0.11"               # optional fixed IP; default: allocated
//! project = "alpha"              # optional; default: the network's project
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
pub use state::{ChassisState, NetworkState, State, SubnetState, VmState};
pub use status::{ChassisStatus, Status, status};
pub use topology::{
    ChassisSpec, Gateway, NetworkSpec, ServerSpec, SubnetSpec, Topology, UnderlaySpec, VmSpec,
};
