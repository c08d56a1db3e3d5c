//! Hand-built client frames (Ethernet, optional 802.1Q tag, IPv6, UDP 546 -> 547 with its
//! checksum, a DHCPv6 message) and the servers the tests answer from.

use std::net::Ipv6Addr;

use dhcpv6::{Binding, Server};
use frame_check::{Ethernet, Ipv6};

pub const CLIENT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56];
pub const SERVER_MAC: [u8; 6] = [0x02, 0x77, 0x79, 0x76, 0x00, 0x01];
/// A DUID-LLT as ISC and systemd clients make them.
pub const CLIENT_DUID: [u8; 14] = [
    0, 1, 0, 1, 0x2a, 0x1b, 0x3c, 0x4d, 0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56,
];
/// The server's DUID-LL.
pub const SERVER_DUID: [u8; 10] = [0, 3, 0, 1, 0x02, 0x77, 0x79, 0x76, 0x00, 0x01];

pub fn ip(text: &str) -> Ipv6Addr {
    text.parse().unwrap()
}

pub fn client_ip() -> Ipv6Addr {
    ip("fe80::f816:3eff:fe12:3456")
}

pub fn bound() -> Ipv6Addr {
    ip("2001:db8::5")
}

/// A client message under construction.
#[derive(Clone)]
pub struct Client {
    pub kind: u8,
    pub transaction_id: u32,
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    pub src: Ipv6Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub next_header: u8,
    /// Raw options.
    pub options: Vec<u8>,
}

pub fn option(code: u16, value: &[u8]) -> Vec<u8> {
    let mut out = code.to_be_bytes().to_vec();
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// An IAADDR option with lifetimes 0.
pub fn iaaddr(address: Ipv6Addr) -> Vec<u8> {
    let mut value = address.octets().to_vec();
    value.extend_from_slice(&[0; 8]);
    option(5, &value)
}

impl Client {
    /// A message of type `kind` with the client's identifier and an elapsed time option.
    pub fn new(kind: u8, transaction_id: u32) -> Self {
        let mut options = option(1, &CLIENT_DUID);
        options.extend(option(8, &[0, 0]));
        Self {
            kind,
            transaction_id,
            eth_src: CLIENT_MAC,
            vlan_tci: None,
            src: client_ip(),
            src_port: 546,
            dst_port: 547,
            next_header: 17,
            options,
        }
    }

    /// The same without any option.
    pub fn bare(kind: u8, transaction_id: u32) -> Self {
        let mut client = Self::new(kind, transaction_id);
        client.options.clear();
        client
    }

    pub fn option(mut self, code: u16, value: &[u8]) -> Self {
        self.options.extend(option(code, value));
        self
    }

    pub fn server_id(self) -> Self {
        self.option(2, &SERVER_DUID)
    }

    /// An IA_NA with T1 and T2 0 and these addresses.
    pub fn ia_na(self, iaid: u32, addresses: &[Ipv6Addr]) -> Self {
        let mut value = iaid.to_be_bytes().to_vec();
        value.extend_from_slice(&[0; 8]);
        for a in addresses {
            value.extend(iaaddr(*a));
        }
        self.option(3, &value)
    }

    pub fn message(&self) -> Vec<u8> {
        let mut msg = vec![self.kind];
        msg.extend_from_slice(&self.transaction_id.to_be_bytes()[1..]);
        msg.extend_from_slice(&self.options);
        msg
    }

    pub fn frame(&self) -> Vec<u8> {
        let msg = self.message();
        let ip = Ipv6 {
            src: self.src,
            dst: ip("ff02::1:2"),
            hop_limit: 1,
        };
        let mut udp = self.src_port.to_be_bytes().to_vec();
        udp.extend_from_slice(&self.dst_port.to_be_bytes());
        udp.extend_from_slice(&((8 + msg.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&msg);
        let sum = ip.checksum(17, &udp);
        udp[6..8].copy_from_slice(&sum.to_be_bytes());
        let eth = Ethernet {
            dst: [0x33, 0x33, 0, 1, 0, 2],
            src: self.eth_src,
            vlan_tci: self.vlan_tci,
        };
        ip.frame(&eth, self.next_header, &udp)
    }
}

/// A server on 2001:db8::/64; stateful (binding 2001:db8::5 for a day) or stateless.
pub fn server(stateful: bool) -> Server {
    Server {
        mac: SERVER_MAC,
        binding: stateful.then(|| Binding {
            address: bound(),
            prefix: "2001:db8::/64".parse().unwrap(),
            preferred_lifetime: 86_400,
            valid_lifetime: 86_400,
        }),
        dns: vec![ip("2001:db8::53"), ip("2001:db8::54")],
        domain_search: vec!["openstacklocal.".to_owned()],
        extra: Vec::new(),
    }
}
