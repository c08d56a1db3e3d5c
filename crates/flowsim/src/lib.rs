//! `flowsim`: a packet simulator over Wyvern's own OpenFlow flows and groups, with no Open
//! vSwitch involved. The pipeline's tests use it to check what the computed flows do to a
//! packet, and `wyvern trace` shows its [`Trace`] to operators.
//!
//! * [`packet`]: the packet model ([`Packet`]) and constructors (ARP, IPv4/IPv6, ICMP, ND,
//!   TCP/UDP, VLAN, MPLS, tunnel receive context).
//! * [`tables`]: [`FlowTables`], the checked flows and groups, and the table lookup (priority,
//!   masks, conjunctive matches).
//! * [`sim`]: [`Simulator`] and [`trace()`], the OpenFlow 1.3 + Open vSwitch semantics. A
//!   [`Simulator`] keeps connections and the flows `learn` added across the packets traced
//!   with it.
//! * [`conntrack`]: the small connection tracker behind `ct`, with NAT.
//! * [`trace`](mod@trace): the [`Trace`] record and its operator-friendly rendering.
//!
//! ```
//! use flowsim::{FlowTables, Mac, Packet, trace};
//! let flows = ["table=0, priority=10,arp actions=output:2"]
//!     .iter()
//!     .map(|s| s.parse().unwrap());
//! let tables = FlowTables::new(flows, []).unwrap();
//! let p = Packet::arp_request(
//!     "00:00:00:00:00:01".parse().unwrap(),
//!     "10.0.0.1".parse().unwrap(),
//!     "10.0.0.2".parse().unwrap(),
//! );
//! let t = trace(&tables, 1, p);
//! assert_eq!(t.verdict.ports(), vec![2]);
//! println!("{t}");
//! # let _ = Mac::BROADCAST;
//! ```

pub mod conntrack;
mod learn;
pub mod packet;
pub mod sim;
pub mod tables;
pub mod trace;

pub use conntrack::{ConnKey, Connection, Conntrack, NatKind};
pub use packet::{Lse, Mac, Packet, Tunnel, VlanTag};
pub use sim::{MAX_DEPTH, MAX_RECIRCULATIONS, MAX_RESUBMITS, Simulator, trace};
pub use tables::FlowTables;
pub use trace::{ControllerPacket, DropReason, Op, Output, Pass, Step, Trace, Verdict};

/// Errors of this crate: flows or groups Open vSwitch would refuse, and bad text input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A flow Open vSwitch would reject.
    #[error("flow `{flow}`: {why}")]
    BadFlow {
        /// The flow, in `ovs-ofctl` syntax.
        flow: String,
        /// What is wrong.
        why: &'static str,
    },
    /// Two flows with the same table, priority and match.
    #[error("duplicate flow (same table, priority and match): `{0}`")]
    DuplicateFlow(String),
    /// Two groups with the same id.
    #[error("duplicate group {0}")]
    DuplicateGroup(u32),
    /// A group Open vSwitch would reject.
    #[error("group {group}: {why}")]
    BadGroup {
        /// Group id.
        group: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// A flow or group refers to a group that does not exist.
    #[error("{user} refers to missing group {group}")]
    MissingGroup {
        /// The missing group.
        group: u32,
        /// Who refers to it.
        user: String,
    },
    /// An Ethernet address that does not parse.
    #[error("bad Ethernet address `{0}`")]
    BadMac(String),
}
