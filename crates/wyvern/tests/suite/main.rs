//! The wyvern crate's integration tests, as one test binary (`cargo test -p wyvern --test suite`;
//! one module's tests: `cargo test -p wyvern --test suite routing::`): the end-to-end tests through
//! labs of real Open vSwitch, and those of a `wyvern server` process.
//!
//! Each module was a test binary of its own; together they are linked once instead of eighteen
//! times, which saves gigabytes of disk and minutes of CI time. They still run one at a time, as
//! separate binaries did: every test first takes [`support::alone`]. Labs are named after the
//! process and a prefix of their module's own (`rt<pid>`, `sg<pid>`, ...), so no two share a
//! name. Data the tests read stays beside the suite: `tests/fuzz/` (the fuzzer's hooks).

mod outside;
mod server;
mod support;

mod agent_supervision;
mod chaining;
mod crash_recovery;
mod data_plane;
mod dist_units;
mod floating_ips;
mod fuzz_api;
mod ha;
mod keystone;
mod kubernetes;
mod lab_cli;
mod lab_load_balancers;
mod lab_port_chains;
mod listen;
mod load_balancing;
mod nested_pods;
mod outside_ipv6;
mod provider;
mod routing;
mod security_groups;
mod slice;
mod supervise;
mod tokens;
mod trace;
mod trace_differential;
mod trunks;
