//! The API crate's integration tests, as one test binary (`cargo test -p api --test suite`; one
//! module's tests: `cargo test -p api --test suite conformance::`).
//!
//! Each module was a test binary of its own; together they are linked once instead of seventeen
//! times, which saves gigabytes of disk and minutes of CI time. The modules' tests run in parallel
//! threads of one process, so none may change process-wide state (environment variables, the
//! current directory): each starts its own servers on their own stores ([`support`]).
//!
//! Data the tests read stays beside the suite: `tests/reference/` (the reference Neutron's and
//! Octavia's recordings, compiled in by [`conformance`]) and `tests/sdk/` (the openstacksdk scripts
//! [`openstack_sdk`] runs).

mod caller;
mod cli;
mod support;

mod chassis_liveness;
mod concurrency;
mod conformance;
mod delete_races;
mod etcd_bulk;
mod etcd_two_servers;
mod etcd_txn_limit;
mod health_metrics;
mod indexes;
mod lbaas;
mod limits;
mod openstack_cli;
mod openstack_loadbalancer_cli;
mod openstack_sdk;
mod openstack_sfc_cli;
mod openstack_trunk_cli;
mod outside;
mod policy;
mod quotas;
mod revisions;
mod sync_topics;
mod trunks;
mod validation;
