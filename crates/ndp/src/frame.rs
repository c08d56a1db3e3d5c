//! Ethernet II (with at most one 802.1Q tag) and IPv6 framing: reading a frame's IPv6 header and
//! payload, and wrapping a message in them. Extension headers are not followed: the payload is
//! whatever follows the fixed header, and `next_header` says what it is.

use std::net::Ipv6Addr;

use crate::checksum::upper_layer_checksum;

pub const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
/// IPv6 next-header value of ICMPv6.
pub const NEXT_HEADER_ICMPV6: u8 = 58;
/// IPv6 next-header value of UDP.
pub const NEXT_HEADER_UDP: u8 = 17;
const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV6_HEADER_LEN: usize = 40;

/// Why a frame is not an IPv6 packet.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame too short for the {0}")]
    TooShort(&'static str),
    #[error("not IPv6 (ethertype {0:#06x})")]
    NotIpv6(u16),
    #[error("IP version {0} in an IPv6 frame")]
    BadVersion(u8),
    #[error("IPv6 payload length {declared} but {available} bytes follow the header")]
    BadPayloadLength { declared: usize, available: usize },
}

/// An IPv6 packet read from an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Packet<'a> {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// The 802.1Q tag control information, if the frame carried one tag.
    pub vlan_tci: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub next_header: u8,
    /// The payload as long as the header says (Ethernet padding left out).
    pub payload: &'a [u8],
}

/// The addresses and hop limit of a frame to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Framing {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    /// Tag the frame with this 802.1Q tag control information.
    pub vlan_tci: Option<u16>,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// Reads the Ethernet and IPv6 headers of `frame`. Never panics.
pub fn parse_ipv6(frame: &[u8]) -> Result<Ipv6Packet<'_>, FrameError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(FrameError::TooShort("Ethernet header"));
    }
    let mut ethertype = be16(frame, 12);
    let mut ip = &frame[ETH_HEADER_LEN..];
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_VLAN {
        if ip.len() < VLAN_TAG_LEN {
            return Err(FrameError::TooShort("802.1Q tag"));
        }
        vlan_tci = Some(be16(ip, 0));
        ethertype = be16(ip, 2);
        ip = &ip[VLAN_TAG_LEN..];
    }
    if ethertype != ETHERTYPE_IPV6 {
        return Err(FrameError::NotIpv6(ethertype));
    }
    if ip.len() < IPV6_HEADER_LEN {
        return Err(FrameError::TooShort("IPv6 header"));
    }
    if ip[0] >> 4 != 6 {
        return Err(FrameError::BadVersion(ip[0] >> 4));
    }
    let declared = usize::from(be16(ip, 4));
    let rest = &ip[IPV6_HEADER_LEN..];
    let payload = rest.get(..declared).ok_or(FrameError::BadPayloadLength {
        declared,
        available: rest.len(),
    })?;
    Ok(Ipv6Packet {
        eth_dst: array(&frame[0..6]),
        eth_src: array(&frame[6..12]),
        vlan_tci,
        src: Ipv6Addr::from(array::<16>(&ip[8..24])),
        dst: Ipv6Addr::from(array::<16>(&ip[24..40])),
        hop_limit: ip[7],
        next_header: ip[6],
        payload,
    })
}

/// Wraps `payload` (whose own checksum, if any, is already in place) in an IPv6 header (traffic
/// class and flow label 0) and Ethernet II. A payload beyond 65535 bytes cannot be expressed;
/// its length field saturates instead of panicking.
pub fn build_ipv6(framing: &Ipv6Framing, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame =
        Vec::with_capacity(ETH_HEADER_LEN + VLAN_TAG_LEN + IPV6_HEADER_LEN + payload.len());
    frame.extend_from_slice(&framing.eth_dst);
    frame.extend_from_slice(&framing.eth_src);
    if let Some(tci) = framing.vlan_tci {
        frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]);
    frame.extend_from_slice(
        &u16::try_from(payload.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    frame.push(next_header);
    frame.push(framing.hop_limit);
    frame.extend_from_slice(&framing.src.octets());
    frame.extend_from_slice(&framing.dst.octets());
    frame.extend_from_slice(payload);
    frame
}

/// Sets the checksum of ICMPv6 `message` (bytes 2 and 3) and frames it.
pub fn build_icmpv6(framing: &Ipv6Framing, mut message: Vec<u8>) -> Vec<u8> {
    if message.len() >= 4 {
        message[2..4].fill(0);
        let sum = upper_layer_checksum(&framing.src, &framing.dst, NEXT_HEADER_ICMPV6, &message);
        message[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    build_ipv6(framing, NEXT_HEADER_ICMPV6, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(vlan_tci: Option<u16>) -> Ipv6Framing {
        Ipv6Framing {
            eth_dst: [0x33, 0x33, 0, 0, 0, 1],
            eth_src: [2, 0, 0, 0, 0, 1],
            vlan_tci,
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            hop_limit: 255,
        }
    }

    #[test]
    fn built_frames_parse_back() {
        for tci in [None, Some(0x2064)] {
            let mut frame = build_ipv6(&framing(tci), 59, b"hello");
            frame.extend_from_slice(&[0; 7]); // Ethernet padding
            let packet = parse_ipv6(&frame).unwrap();
            let f = framing(tci);
            assert_eq!(
                packet,
                Ipv6Packet {
                    eth_dst: f.eth_dst,
                    eth_src: f.eth_src,
                    vlan_tci: tci,
                    src: f.src,
                    dst: f.dst,
                    hop_limit: 255,
                    next_header: 59,
                    payload: b"hello",
                }
            );
        }
    }

    #[test]
    fn icmpv6_messages_carry_a_verifying_checksum() {
        let f = framing(None);
        let frame = build_icmpv6(&f, vec![134, 0, 0xaa, 0xbb, 1, 2, 3]);
        let packet = parse_ipv6(&frame).unwrap();
        assert_eq!(
            upper_layer_checksum(&f.src, &f.dst, NEXT_HEADER_ICMPV6, packet.payload),
            0
        );
    }

    #[test]
    fn refusals() {
        let good = build_ipv6(&framing(None), 58, &[1, 2, 3, 4]);
        assert_eq!(
            parse_ipv6(&good[..13]),
            Err(FrameError::TooShort("Ethernet header"))
        );
        assert_eq!(
            parse_ipv6(&good[..50]),
            Err(FrameError::TooShort("IPv6 header"))
        );
        assert_eq!(
            parse_ipv6(&good[..good.len() - 1]),
            Err(FrameError::BadPayloadLength {
                declared: 4,
                available: 3
            })
        );
        let mut v4 = good.clone();
        v4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse_ipv6(&v4), Err(FrameError::NotIpv6(0x0800)));
        let mut version = good.clone();
        version[14] = 0x45;
        assert_eq!(parse_ipv6(&version), Err(FrameError::BadVersion(4)));
        let tagged = build_ipv6(&framing(Some(1)), 58, &[]);
        assert_eq!(
            parse_ipv6(&tagged[..16]),
            Err(FrameError::TooShort("802.1Q tag"))
        );
    }
}
