//! An independent decoder of the frames the crate builds (panics on anything unexpected).

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

/// An ICMPv6 frame.
pub struct Icmp {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub message: Vec<u8>,
    pub checksum_ok: bool,
}

impl Icmp {
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
        assert_eq!(&ip[0..4], &[0x60, 0, 0, 0], "version 6, class and label 0");
        let len = usize::from(be16(ip, 4));
        assert_eq!(
            len,
            ip.len() - 40,
            "payload length covers the rest of the frame"
        );
        assert_eq!(ip[6], 58, "ICMPv6");
        let (src, dst) = (addr(&ip[8..24]), addr(&ip[24..40]));
        let message = ip[40..].to_vec();
        let mut pseudo = ip[8..40].to_vec();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        Self {
            eth_dst,
            eth_src,
            vlan_tci,
            src,
            dst,
            hop_limit: ip[7],
            checksum_ok: checksum(&[&pseudo, &message]) == 0,
            message,
        }
    }

    /// The options after the fixed part of `fixed` bytes, as (type, whole option).
    pub fn options(&self, fixed: usize) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = fixed;
        while at < self.message.len() {
            let len = usize::from(self.message[at + 1]) * 8;
            assert!(len > 0, "zero-length option");
            out.push((self.message[at], self.message[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, self.message.len(), "options fill the message");
        out
    }
}
