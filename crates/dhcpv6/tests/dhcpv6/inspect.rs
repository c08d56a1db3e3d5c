//! An independent parser of reply frames for the tests (panics on anything unexpected).

use std::net::Ipv6Addr;

/// The Internet checksum of the concatenated parts.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = (u32::from(pair[0]) << 8) | u32::from(*pair.get(1).unwrap_or(&0));
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

pub fn addr(b: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap())
}

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
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
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
        let eth_dst = frame[0..6].try_into().unwrap();
        let eth_src = frame[6..12].try_into().unwrap();
        let (vlan_tci, rest) = if be16(frame, 12) == 0x8100 {
            (Some(be16(frame, 14)), &frame[16..])
        } else {
            (None, &frame[12..])
        };
        assert_eq!(be16(rest, 0), 0x86dd, "ethertype");
        let ip = &rest[2..];
        assert_eq!(&ip[0..4], &[0x60, 0, 0, 0]);
        let len = usize::from(be16(ip, 4));
        assert_eq!(
            len,
            ip.len() - 40,
            "payload length covers the rest of the frame"
        );
        assert_eq!(ip[6], 17, "UDP");
        let udp = &ip[40..];
        assert_eq!(usize::from(be16(udp, 4)), udp.len(), "UDP length");
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(udp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        let msg = &udp[8..];
        Self {
            eth_dst,
            eth_src,
            vlan_tci,
            src: addr(&ip[8..24]),
            dst: addr(&ip[24..40]),
            hop_limit: ip[7],
            udp_src: be16(udp, 0),
            udp_dst: be16(udp, 2),
            udp_checksum_ok: be16(udp, 6) != 0 && checksum(&[&pseudo, udp]) == 0,
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
        let mut found = self.options.iter().filter(|(c, _)| *c == code);
        let value = found.next().map(|(_, v)| v.as_slice());
        assert!(
            found.next().is_none(),
            "option {code} appears more than once"
        );
        value
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
                        5 => ia
                            .addresses
                            .push((addr(&value), be32(&value, 16), be32(&value, 20))),
                        13 => ia.status = Some(status(&value)),
                        other => panic!("option {other} in an IA_NA"),
                    }
                }
                ia
            })
            .collect()
    }
}
