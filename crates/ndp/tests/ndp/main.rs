//! Integration tests of the ND crate: hand-built solicitation frames, advertisements read back
//! with an independent decoder (and tcpdump), and robustness of the parsers.

mod builder;
mod fuzz;
mod inspect;
mod neighbor;
mod router;
mod tcpdump;
