//! Integration tests of the DHCPv6 crate: hand-built client frames, the answer table, reply
//! frames checked with an independent parser (and tcpdump), and robustness of the parser.

mod answer;
mod builder;
mod fuzz;
mod inspect;
mod parse;
mod reply;
mod tcpdump;
