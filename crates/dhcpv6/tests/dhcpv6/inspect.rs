//! An independent parser of reply frames for the tests (panics on anything unexpected).

use std::net::Ipv6Addr;

use frame_check::{Ethernet, Ipv6, be16, be32, ipv6_addr, only};

/// A TLV list with 2-byte codes and lengths.
pub fn options(mut b: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = usize::from(be16(b, 2));
        out.push((be16(b, 0), b[4..4 + len].to_vec()));
        b = &b[4 + len..];
    }
    out
}

pub struct Reply {
    pub eth: Ethernet,
    pub ip: Ipv6,
    pub udp_src: u16,
    pub udp_dst: u16,
    pub udp_checksum_ok: bool,
    pub kind: u8,
    pub transaction_id: u32,
    pub options: Vec<(u16, Vec<u8>)>,
}

/// An IA_NA of a reply.
#[derive(Debug, PartialEq, Eq)]
pub struct IaNa {
    pub iaid: u32,
    pub t1: u32,
    pub t2: u32,
    /// Address, preferred and valid lifetimes.
    pub addresses: Vec<(Ipv6Addr, u32, u32)>,
    /// Status code and message.
    pub status: Option<(u16, String)>,
}

pub fn status(value: &[u8]) -> (u16, String) {
    (
        be16(value, 0),
        String::from_utf8(value[2..].to_vec()).unwrap(),
    )
}

impl Reply {
    pub fn parse(frame: &[u8]) -> Self {
        let (eth, ip, udp) = Ipv6::parse(frame, 17);
        assert_eq!(usize::from(be16(udp, 4)), udp.len(), "UDP length");
        let msg = &udp[8..];
        Self {
            eth,
            ip,
            udp_src: be16(udp, 0),
            udp_dst: be16(udp, 2),
            udp_checksum_ok: be16(udp, 6) != 0 && ip.checksum(17, udp) == 0,
            kind: msg[0],
            transaction_id: u32::from_be_bytes([0, msg[1], msg[2], msg[3]]),
            options: options(&msg[4..]),
        }
    }

    pub fn codes(&self) -> Vec<u16> {
        self.options.iter().map(|(c, _)| *c).collect()
    }

    /// The value of the only instance of option `code`.
    pub fn option(&self, code: u16) -> Option<&[u8]> {
        only(&self.options, code)
    }

    pub fn status(&self) -> Option<(u16, String)> {
        self.option(13).map(status)
    }

    /// The IA_NA options.
    pub fn ia_nas(&self) -> Vec<IaNa> {
        self.options
            .iter()
            .filter(|(c, _)| *c == 3)
            .map(|(_, v)| {
                let mut ia = IaNa {
                    iaid: be32(v, 0),
                    t1: be32(v, 4),
                    t2: be32(v, 8),
                    addresses: Vec::new(),
                    status: None,
                };
                for (code, value) in options(&v[12..]) {
                    match code {
                        5 => ia.addresses.push((
                            ipv6_addr(&value),
                            be32(&value, 16),
                            be32(&value, 20),
                        )),
                        13 => ia.status = Some(status(&value)),
                        other => panic!("option {other} in an IA_NA"),
                    }
                }
                ia
            })
            .collect()
    }
}
