//! The plugin's integration tests, as one test binary (`cargo test -p cni --test suite`):
//! bad input through the binary ([`errors`]), host mode against a real chassis and the real
//! API ([`host`]), nested mode against a stub of the trunk API and, tagging through the VM's
//! own Open vSwitch, against real parts ([`nested`]), and podman's CNI backend driving the
//! plugin, with the chassis' agent programming `br-int` so the container's traffic flows
//! ([`podman`]). Datapath tests need root, like the rest of the
//! workspace's; every namespace and link they make has the test bed's `wyt` prefix (or is
//! made and removed by podman) and is removed even when a test fails.

mod support;

mod errors;
mod host;
mod nested;
mod podman;
