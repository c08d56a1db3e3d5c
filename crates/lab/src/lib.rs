//! `wyvern lab`: a whole Wyvern deployment on one machine, from a declarative topology file.
//!
//! `wyvern lab up FILE` starts the API server (`wyvern server`, embedded store) — or, with
//! `store = "etcd"`, real etcd members and several servers on them, each agent with every
//! server's URL, its own first (round robin over the chassis), so that it fails over — one Open
//! vSwitch per chassis (userspace datapath, each in its own network namespace, joined by one
//! underlay L2 segment), runs [`chassis::ensure`] for `br-int` with Geneve and VXLAN tunnel
//! ports, starts one `wyvern agent` per chassis (if the binary has that subcommand; otherwise
//! it warns and goes on) under a supervisor, `wyvern supervise` ([`supervise`]), that starts it
//! again when it dies (`status` shows its restarts and how it last ended), creates networks, subnets, routers (interfaces, extra routes) and one
//! port per VM through the Neutron API (with its security groups, made from the file with their
//! rules, and address groups), and gives every VM a namespace wired into its chassis'
//! `br-int` ([`chassis::plug_vif`] with the port's id, MAC, `iface-status=active`) whose `eth0`
//! has the port's MAC and addresses, the network's MTU, default routes via the subnets'
//! gateways and TX checksum offload off (IPv6 by SLAAC instead if the VM asks). Running `up`
//! again changes only what differs from the file (nothing, the second time): a router's
//! interfaces and routes become the file's; a subnet whose CIDR or IPv6 modes changed (fixed
//! once made) is replaced — the old one goes first, with its VMs' ports (the VMs get new ones)
//! and routers' interfaces — and one the file no longer has is deleted. `status` (every etcd
//! member and server up or DOWN), `exec HOST -- CMD`, `stop NAME` and `start NAME` (an etcd
//! member `etcd-N` or a server `server-N`: killed with SIGKILL like a crash, started again on
//! its ports and data) and `down` work by the lab's name; `down` works without the state file too (after a crash half way), see [`names`].
//! The lab only ever configures namespaces it created.
//!
//! `wyvern lab up FILE` checks the whole file before it starts anything ([`Topology::validate`]:
//! names and references; every address a host address of its subnet and given once on its
//! network, the subnets' gateways included, and each chassis' tunnel address once; a subnet's
//! gateway the interface of one router at most; subnets of a network apart; prefixes without
//! host bits, `10.9.0.77/24` is refused naming `10.9.0.0/24`; `[server] listen`). A lab runs
//! from one topology file: `up` records the file's canonical path in the lab's state
//! ([`State::file`]) and refuses another file with the same lab name ([`Error::OtherFile`]) —
//! the path, not the content, is what makes a file the same one, since an edited file is what
//! `up` converges to.
//! `up --replace FILE` takes the lab down first, whatever file it ran from, and brings it up
//! from FILE (also what changes that cannot converge need: the store, a network's segment). A
//! failed `up` removes a lab it was making afresh; a lab that ran before is left as it is, and
//! `up` says what of it runs and that `wyvern lab down NAME` removes it. Progress lines into a
//! closed pipe are dropped while the work goes on; `status` into one ends quietly; errors are
//! printed once, each cause once (see [`Error`]).
//!
//! The world outside: each physical segment is a switch (an Open vSwitch bridge in a namespace of
//! its own, VLAN-aware) with an uplink from every chassis' provider bridge `br-<segment>` (made
//! by the lab before the agent starts, a standalone learning switch; the agent gets
//! `--bridge-mappings <segment>:br-<segment>` and patches it to `br-int`); external hosts are
//! namespaces on a segment (an access port of the switch, in a VLAN or untagged); provider
//! networks (flat, vlan), external networks, routers' gateways and floating IPs are made through
//! the API as an admin. Gateway chassis run their agent with `--gateway`.
//!
//! Load balancers are made through the Octavia v2 API once the VMs are wired (members are VMs'
//! addresses), each listener with its own pool, members and health monitor, brought in line
//! with the file on every `up` (one whose VIP, VIP subnet or project changed is deleted with
//! `cascade=true` and made again). VMs may run a tiny server (`serve`) that answers with their
//! name, so that load balancing can be seen with `curl` alone; it is a process of the lab like
//! the others (`down` stops it).
//!
//! Service function chaining: a VM with `sf = { ... }` is a service function with two ports
//! (ingress: the VM's own; egress: `<vm>-egress`, same `device_id`), both without port security,
//! whose interfaces `eth0` and `eth1` are the ports of a Linux bridge `br0` without addresses in
//! its namespace (neither learning nor ageing, IPv6 off): a bump in the wire that passes every
//! unicast frame unchanged, MPLS-labelled ones too (not broadcast or multicast, nor frames to its
//! own MACs: two legs on one network make no loop) and sends nothing of its own: the TX
//! counters of `ip -s link` count the frames it passed on (eth1's from eth0, eth0's from eth1).
//! Port chains (`[[port_chain]]`) are made through networking-sfc's API (`/v2.0/sfc/`) as admin
//! once the VMs are wired: a port pair per service function (named after its VM), groups
//! `<chain>-<n>`, flow classifiers `<chain>-fc<n>`, then the chain. A chain is
//! kept while its entry, its service functions and its classifiers' VMs (and their ports) stay
//! as they were; otherwise it is made again, and one the file no longer has is deleted (chain,
//! then groups, then pairs and classifiers) before the VMs are brought in line.
//!
//! Trunk ports (VLAN-aware VMs): a VM with `subports = [...]` gets a port per subport
//! (`<vm>.<vlan>`, bound by the server where its parent is) and a trunk (Neutron's trunk
//! extension) on its own port with them; its port is bound once the trunk exists. The kernels
//! here have no 802.1Q support, so the VM tags with an Open vSwitch of its own (its own
//! `ovsdb-server` and `ovs-vswitchd` in the VM's namespace, run directory `<vm>.ovs` in the lab's
//! directory): bridge `br-trunk` with `eth0` as its trunk port, the VM's own addresses and routes
//! untagged on the internal port `vm0`, each subport's MAC and addresses on the internal port
//! `vlan<id>` (`tag=<id>`). `up` again adds and removes subports to match the file (not the
//! Kubernetes controller's). A VM listed in `[kubernetes] vm_nodes` is a trunk's parent too,
//! with or without subports of the file: a Kubernetes node in nested mode, whose pods the lab
//! plugs with `wyvern-cni` run inside the VM as access ports of their VLANs on `br-trunk`.
//!
//! # Topology file (TOML)
//!
//! ```toml
//! name = "demo"                  # required; 1-16 of [a-z0-9-]; part of every name
//!
//! [server]                       # optional
//! listen = "127.0.0.1"           # IP or IP:PORT ([::1]:PORT); default 127.0.0.1, a free port
//!                                # (with several servers: server-N on PORT + N - 1)
//! store = "etcd"                 # optional: embedded (default; one redb file, one server) |
//!                                # etcd (real members etcd-N, data in the state directory)
//! etcd_members = 3               # optional, etcd: 1, 3 (default) or 5
//! servers = 2                    # optional: API servers server-N on the store (default 1)
//!
//! [underlay]                     # optional
//! cidr = "172.31.0.0/24"         # tunnel addresses (inside the lab's namespaces only); like
//!                                # every prefix in the file, without host bits
//! mtu = 9000                     # underlay MTU (1280-9000)
//! encap = "geneve"               # the agents' --encap: geneve | vxlan
//!
//! [[chassis]]                    # one or more
//! name = "c1"                    # 1-12 of [a-z0-9-]; OVS system-id, binding:host_id
//! ip = "172.31.0.11"             # optional; default: the n-th host address of cidr
//! gateway = true                 # optional (default false): may host routers' centralized
//!                                # gateways (the agent's --gateway)
//!
//! [[physical]]                   # zero or more: physical segments (switches); every chassis
//!                                # gets an uplink into each, on its bridge br-<name>
//! name = "physnet1"              # 1-8 of [a-z0-9-], unique among hosts; not int or phy;
//!                                # the provider networks' physical_network
//! mtu = 1500                     # optional (default 1500): of the uplinks and external hosts
//!
//! [[external]]                   # zero or more: hosts outside the cloud, on a segment
//! name = "inet"                  # 1-12 of [a-z0-9-], unique among hosts
//! physical = "physnet1"          # its segment
//! ip = "172.24.4.100/24"         # IPv4 address with prefix length
//! ip6 = "2001:db8:ee::100/64"    # optional: IPv6 address with prefix length (added nodad,
//!                                # router advertisements ignored); without it, no IPv6
//! vlan = 101                     # optional (1-4094): in this VLAN; default untagged
//! gateway = "172.24.4.1"         # optional: default route
//! gateway6 = "2001:db8:ee::1"    # optional (needs ip6): IPv6 default route
//! routes = [{ destination = "10.0.0.0/24", nexthop = "172.24.4.10" },
//!   { destination = "fd00:1::/64", nexthop = "2001:db8:ee::10" }] # optional; next hops
//!                                # on ip's subnet (IPv4) or ip6's (IPv6)
//!
//! [[network]]                    # zero or more
//! name = "web"                   # unique; [A-Za-z0-9._-]
//! project = "alpha"              # optional; default: admin
//! mtu = 1400                     # optional; default: the server's (1450; 1500 flat, vlan)
//! network_type = "vlan"          # optional: flat | vlan | vxlan | geneve; default the
//!                                # server's (vxlan). Provider settings and `external` make
//!                                # the network as admin (for its project); they are fixed
//! physical_network = "physnet1"  # flat, vlan: a [[physical]] segment
//! segmentation_id = 101          # vlan: the VLAN id (1-4094); vxlan, geneve: optional id
//! external = true                # optional (default false): router:external
//!
//! [[network.subnet]]             # one or more per network with VMs
//! cidr = "fd00:1::/64"           # IPv4 or IPv6; apart from the network's other subnets
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
//!                                # at each gateway address (add_router_interface); a subnet
//!                                # is one router's interface at most
//! routes = [{ destination = "192.168.50.0/24", nexthop = "10.0.0.20" }]
//!                                # extra routes; each next hop inside an interface's subnet
//! gateway = "public"             # optional: its external gateway on this external network
//! gateway_ips = ["172.24.4.10", "2001:db8:ee::10"] # optional (only with a gateway): the
//!                                # gateway's addresses (external_fixed_ips), in the gateway
//!                                # network's subnets, one IPv4; default: the server's choice.
//!                                # New ones replace the gateway port (the router's floating
//!                                # IPs are associated again)
//! enable_snat = false            # optional (default true; only with a gateway)
//! snat_mode = "centralized"      # optional: SNAT on one gateway chassis (default distributed)
//!
//! [[vm]]                         # zero or more
//! name = "web1"                  # 1-32 of [a-z0-9-], unique among chassis and VMs
//! network = "web"
//! chassis = "c1"
//! ip = "10.0.0.11"               # optional fixed IP (a host address, not the gateway's or
//!                                # another's); default: allocated (on a dual-stack
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
//! security_groups = ["web", "default"] # optional: its port's groups by name, of its project
//!                                # (`default`: the project's own); default: the project's
//!                                # `default` group, as Neutron
//! port_security = false          # optional (default true): no anti-spoofing, no groups
//! serve = [{ protocol = "http", port = 8080 }, { protocol = "udp", port = 5353 }]
//!                                # optional: a tiny server in the VM (python3, PID in
//!                                # serve-<vm>.pid) answering every HTTP request (200) and every
//!                                # UDP datagram with the VM's name and a newline
//! sf = { network = "net2", mpls = true } # optional: a service function (`sf = {}`: both
//!                                # ports on `network`). Its port is the ingress, a second
//!                                # port `<vm>-egress` on sf.network (default: `network`) the
//!                                # egress; no port security on either, bridged inside the VM
//!                                # (`br0`); mpls: MPLS-aware (port pair correlation mpls,
//!                                # default none). Not with security_groups, extra_addresses,
//!                                # serve, forwarding
//! subports = [{ network = "net2", vlan = 101 }, { network = "net3", vlan = 102,
//!   ip = "10.3.0.5", security_groups = ["ssh"], port_security = true }]
//!                                # optional: the VM's port is a trunk's parent with these
//!                                # subports (VLAN 1-4094, each once; ip, security_groups,
//!                                # port_security as for the VM's own port), tagged inside the
//!                                # VM on `vlan<id>`, its own addresses on `vm0`. Not with sf,
//!                                # ipv6 = "slaac", extra_addresses
//!
//! [[port_chain]]                 # zero or more, through networking-sfc's API (/v2.0/sfc/)
//! name = "web"                   # unique; [A-Za-z0-9._-]
//! groups = [["fw"], ["ids1", "ids2"]] # port pair groups in order, each of service-function
//!                                # VMs' port pairs; a VM in one group of one chain only
//! classifiers = [                # optional: flow classifiers
//!   { source_vm = "a",           # logical_source_port: the VM's port (not a service function)
//!     destination_vm = "b",      # optional: logical_destination_port
//!     ethertype = "IPv4",        # optional: IPv4 (default) | IPv6
//!     protocol = "tcp",          # optional (any): tcp | udp | icmp
//!     destination_port = 80,     # optional (tcp, udp): 1-65535 ...
//!     destination_port_max = 80, # ... up to this one (default: destination_port)
//!     source_prefix = "10.0.0.0/24", destination_prefix = "10.0.1.0/24" }, # optional
//! ]
//! symmetric = false              # optional (default false): the reverse traffic too
//! correlation = "mpls"           # optional: mpls (default) | nsh (networking-sfc has no
//!                                # chain without one; service functions unaware of it get
//!                                # plain frames). An MPLS-aware one needs mpls
//!
//! [[floating_ip]]                # zero or more
//! vm = "web1"                    # the VM whose port it is associated with (first IPv4)
//! network = "public"             # an external network; a router must join the VM's network
//!                                # (interface on an IPv4 subnet) to it (gateway)
//! address = "172.24.4.50"        # optional; default: allocated
//!
//! [[load_balancer]]              # zero or more, through the Octavia v2 API (/v2.0/lbaas/)
//! name = "web"                   # unique; [A-Za-z0-9._-]
//! network = "web"                # the VIP's network: the subnet holding vip, else its first
//!                                # IPv4 subnet (file order) ...
//! # subnet = "web-1"             # ... or a subnet by name (one of network and subnet)
//! vip = "10.0.0.100"             # optional: the VIP address; default: allocated
//! project = "alpha"              # optional; default: the VIP network's project (admin may
//!                                # use any project's networks and VMs, a project its own)
//!
//! [[load_balancer.listener]]     # zero or more; each with its own pool
//! protocol = "HTTP"              # TCP | UDP | HTTP (TCP and HTTP share a port space)
//! port = 80                      # 1-65535
//! algorithm = "ROUND_ROBIN"      # optional: ROUND_ROBIN (default) | SOURCE_IP | LEAST_CONNECTIONS
//! persistence = "SOURCE_IP"      # optional: session persistence
//! members = [{ vm = "web1", port = 8080, weight = 2 }, { vm = "web2", port = 8080, backup = true }]
//!                                # the VM's first address (IPv4 first) on its subnet; weight
//!                                # 0-256 (default 1); backup (default false)
//! monitor = { type = "HTTP", delay = 1, timeout = 1, max_retries = 2, max_retries_down = 2,
//!   url_path = "/", expected_codes = "200" } # optional: PING | TCP | HTTP; max_retries(_down)
//!                                # 1-10 (down default 3); url_path, expected_codes: HTTP only
//!
//! [[address_group]]              # zero or more
//! name = "office"                # unique; [A-Za-z0-9._-]
//! project = "alpha"              # optional; default: admin
//! addresses = ["10.0.0.0/28", "10.0.1.5/32"] # prefixes (added and removed to match)
//!
//! [[security_group]]             # zero or more (every project has `default` already)
//! name = "web"                   # unique; [A-Za-z0-9._-]; not `default`
//! project = "alpha"              # optional; default: admin
//! stateful = true                # optional (default true); false: replies need rules too
//! default_rules = true           # optional (default true): Neutron's two egress allow-all
//!                                # rules (IPv4, IPv6); false: only the rules below
//! rules = [                      # optional; replaced (deleted and created) to match
//!   { direction = "ingress",     # ingress | egress
//!     ethertype = "IPv4",        # optional: IPv4 (default) | IPv6
//!     protocol = "tcp",          # optional (any): tcp, udp, icmp, icmpv6, ... or a number
//!     port_range_min = 80,       # optional: lowest port, or the ICMP type
//!     port_range_max = 80,       # optional: highest port, or the ICMP code
//!     remote_ip_prefix = "10.0.0.0/24" }, # optional, at most one of the three remotes
//!   { direction = "ingress", protocol = "tcp", port_range_min = 7000, port_range_max = 7000,
//!     remote_group = "app" },    # members of a group of the same project (or `default`)
//!   { direction = "ingress", protocol = "udp", port_range_min = 53, port_range_max = 53,
//!     remote_address_group = "office" }, # an address group of the same project
//! ]
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
//! lab.crash_agent("c1")?;                         // SIGKILL to the agent alone: its
//!                                                 // supervisor starts it again
//! lab.kill_agent("c1")?;                          // the agent and its supervisor: stays down
//! lab.stop("server-1")?;                          // the same for a server or etcd member
//! lab.start("server-1")?;
//! lab.restart_agent("c1")?;
//! assert!(lab.converge(&topo)?.is_empty());       // up again: nothing to change
//! lab.down()?;
//! # Ok(())
//! # }
//! ```

mod capture;
mod cli;
mod error;
mod lab;
pub mod names;
mod neutron;
mod output;
mod state;
mod status;
pub mod supervise;
mod topology;

pub use capture::Capture;
pub use cli::{LabCommand, run};
pub use error::{Error, Result};
pub use lab::{KubeState, Lab, LabOptions, PodState, Relay, cni_run, down, exec_command, sibling};
pub use state::{
    ChassisState, EtcdMemberState, ExternalState, FloatingIpState, GroupState, ListenerState,
    LoadBalancerState, NetworkState, PhysicalState, RouterGatewayState, RouterState, SegmentState,
    State, SubnetState, VmState,
};
pub use state::{ClassifierState, PortChainState, PortPairGroupState, SfState};
pub use status::{ChassisStatus, DataPlane, ServiceStatus, Status, status};
pub use topology::{
    AddressGroupSpec, ChassisSpec, DEFAULT_GROUP, Direction, Ethertype, ExternalSpec,
    FloatingIpSpec, Gateway, Ipv6Config, Ipv6Mode, LbAlgorithm, LbProtocol, ListenerSpec,
    LoadBalancerSpec, MemberSpec, MonitorSpec, MonitorType, NetworkSpec, NetworkType, Persistence,
    PhysicalSpec, Protocol, RouteSpec, RouterSpec, RuleSpec, SecurityGroupSpec, ServeProtocol,
    ServeSpec, ServerSpec, StoreKind, SubnetSpec, Topology, UnderlaySpec, VmSpec,
};
pub use topology::{ClassifierSpec, Correlation, PortChainSpec, SfSpec, egress_port_name};
pub use topology::{
    ContainerPortSpec, KubeServiceSpec, KubernetesSpec, NetworkPolicySpec, PodSpec,
    ServicePortSpec, TargetPort,
};
