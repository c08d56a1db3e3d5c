//! The northbound API's objects: which attributes each Neutron resource has, their defaults, which
//! may be set on create or update, and how input values are validated and normalised.
//!
//! The tables here play the role of Neutron's resource attribute maps: the API server applies them
//! generically (unknown attributes, read-only attributes, types, defaults), and resource handlers add
//! the semantics (IPAM, routers, ...). Objects travel as JSON objects in exactly the shape the API shows.
//! [`lbaas`] holds the Octavia (load balancer) resources' maps, in Octavia's terms; [`sfc`] those of
//! service function chaining (networking-sfc); [`trunks`] the trunk extension's (VLAN-aware VMs),
//! with the trunk the datapath reads from a parent port. [`quotas`] lists the resources Neutron's quotas limit, with their default limits; [`shape`]
//! describes what each validator accepts, for descriptions of the API.

pub mod lbaas;
pub mod quotas;
pub mod resources;
pub mod sfc;
pub mod shape;
pub mod trunks;
pub mod validate;

pub use resources::{Attr, Default, ResourceDef, resource_by_path};
