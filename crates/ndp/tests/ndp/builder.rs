//! Hand-built client frames (Ethernet, optional 802.1Q tag, IPv6, ICMPv6 with its checksum),
//! written without the crate's helpers.

use std::net::Ipv6Addr;

use frame_check::{Ethernet, Ipv6};

pub const HOST_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
pub const ROUTER_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0xaa, 0xbb, 0xcc];

pub fn ip(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

/// An ICMPv6 message in a frame as a host sends it.
#[derive(Clone)]
pub struct Icmp {
    pub eth: Ethernet,
    pub ip: Ipv6,
    /// The message; bytes 2 and 3 (the checksum) are filled in by `frame`.
    pub message: Vec<u8>,
    /// Whether `frame` writes a correct checksum.
    pub good_checksum: bool,
}

impl Icmp {
    pub fn frame(&self) -> Vec<u8> {
        let mut message = self.message.clone();
        message[2..4].fill(0);
        let mut sum = self.ip.checksum(58, &message);
        if !self.good_checksum {
            sum ^= 0x0101;
        }
        message[2..4].copy_from_slice(&sum.to_be_bytes());
        self.ip.frame(&self.eth, 58, &message)
    }
}

/// A router solicitation from the host's link-local address to all-routers, with the source
/// link-layer address option.
pub fn rs() -> Icmp {
    let mut message = vec![133, 0, 0, 0, 0, 0, 0, 0, 1, 1];
    message.extend_from_slice(&HOST_MAC);
    Icmp {
        eth: Ethernet {
            dst: [0x33, 0x33, 0, 0, 0, 2],
            src: HOST_MAC,
            vlan_tci: None,
        },
        ip: Ipv6 {
            src: ip("fe80::f816:3eff:fe12:3456"),
            dst: ip("ff02::2"),
            hop_limit: 255,
        },
        message,
        good_checksum: true,
    }
}

/// A neighbour solicitation for `target` from `src` to the target's solicited-node group, with
/// the source link-layer address option.
pub fn ns(src: Ipv6Addr, target: Ipv6Addr) -> Icmp {
    let mut message = vec![135, 0, 0, 0, 0, 0, 0, 0];
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[1, 1]);
    message.extend_from_slice(&HOST_MAC);
    let t = target.octets();
    Icmp {
        eth: Ethernet {
            dst: [0x33, 0x33, 0xff, t[13], t[14], t[15]],
            src: HOST_MAC,
            vlan_tci: None,
        },
        ip: Ipv6 {
            src,
            dst: Ipv6Addr::from([
                0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
            ]),
            hop_limit: 255,
        },
        message,
        good_checksum: true,
    }
}
