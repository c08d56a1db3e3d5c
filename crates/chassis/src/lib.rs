//! Chassis plumbing for the Wyvern agent: the Open vSwitch side of one compute node.
//!
//! * [`ensure`]: converges the node's OVS configuration in one OVSDB transaction: the
//!   integration bridge (`br-int`) with a configurable datapath type (`netdev` for the
//!   userspace datapath), `fail_mode=secure` (so OVS never installs a NORMAL flow by itself),
//!   the OpenFlow versions the agent speaks and in-band control disabled; one flow-based
//!   tunnel port per enabled encapsulation (`remote_ip=flow`, `key=flow`); and a patch-port
//!   pair to each provider bridge named in the bridge mappings (`physnet:br-ex`), which it
//!   records in `Open_vSwitch.external_ids:wyvern-bridge-mappings`. Ports the
//!   agent no longer wants are removed; ports it does not own are never touched.
//! * [`VifWatcher`]: a stream of local VIF events (iface-id, ofport, MAC, admin and link
//!   state; added, changed, removed) from an OVSDB monitor that survives reconnects.
//! * [`plug_vif`] / [`unplug_vif`]: what the compute service does when a VM port is plugged
//!   (used by tests and the lab).

mod config;
mod ensure;
mod error;
mod vif;

pub use config::{BridgeMapping, ChassisConfig, Encap};
pub use ensure::{BRIDGE_MAPPINGS_KEY, EnsureReport, ensure, plug_vif, unplug_vif, wait_applied};
pub use error::{Error, Result};
pub use vif::{RowsEvent, Vif, VifEvent, VifWatcher};
