//! Ethernet II (with at most one 802.1Q tag), IPv4 and UDP framing: stripping it from a client's
//! frame, wrapping a reply in it, and the Internet checksum (RFC 1071).

use crate::{DhcpError, Ipv4Addr};

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const IPV4_MIN_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
/// TTL of reply datagrams.
const TTL: u8 = 64;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// A UDP datagram from a client frame with its framing stripped.
pub struct Datagram<'a> {
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    /// The UDP payload (the BOOTP message), without any Ethernet padding.
    pub payload: &'a [u8],
}

/// Addresses of a reply frame.
pub struct Framing {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlan_tci: Option<u16>,
    pub ip_src: Ipv4Addr,
    pub ip_dst: Ipv4Addr,
}

fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

fn mac(bytes: &[u8]) -> [u8; 6] {
    let mut out = [0; 6];
    out.copy_from_slice(&bytes[..6]);
    out
}

/// Strips Ethernet, IPv4 and UDP from a client frame; the UDP checksum is not checked.
pub fn parse_frame(frame: &[u8]) -> Result<Datagram<'_>, DhcpError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(DhcpError::TooShort("Ethernet header"));
    }
    let eth_src = mac(&frame[6..12]);
    let mut ethertype = be16(frame, 12);
    let mut ip = &frame[ETH_HEADER_LEN..];
    let mut vlan_tci = None;
    if ethertype == ETHERTYPE_VLAN {
        if ip.len() < VLAN_TAG_LEN {
            return Err(DhcpError::TooShort("802.1Q tag"));
        }
        vlan_tci = Some(be16(ip, 0));
        ethertype = be16(ip, 2);
        ip = &ip[VLAN_TAG_LEN..];
    }
    if ethertype != ETHERTYPE_IPV4 {
        return Err(DhcpError::NotIpv4(ethertype));
    }

    if ip.len() < IPV4_MIN_HEADER_LEN {
        return Err(DhcpError::TooShort("IPv4 header"));
    }
    if ip[0] >> 4 != 4 {
        return Err(DhcpError::BadIpHeader("version is not 4"));
    }
    let header_len = usize::from(ip[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(DhcpError::BadIpHeader("IHL below 5"));
    }
    let total_len = usize::from(be16(ip, 2));
    if total_len < header_len {
        return Err(DhcpError::BadIpHeader("total length below header length"));
    }
    if ip.len() < total_len {
        return Err(DhcpError::TooShort("IPv4 datagram"));
    }
    if checksum(&[&ip[..header_len]]) != 0 {
        return Err(DhcpError::BadIpChecksum);
    }
    // More-fragments flag or a nonzero fragment offset.
    if be16(ip, 6) & 0x3fff != 0 {
        return Err(DhcpError::Fragmented);
    }
    if ip[9] != IPPROTO_UDP {
        return Err(DhcpError::NotUdp(ip[9]));
    }

    let udp = &ip[header_len..total_len];
    if udp.len() < UDP_HEADER_LEN {
        return Err(DhcpError::TooShort("UDP header"));
    }
    let (src, dst) = (be16(udp, 0), be16(udp, 2));
    if (src, dst) != (CLIENT_PORT, SERVER_PORT) {
        return Err(DhcpError::WrongPorts { src, dst });
    }
    let udp_len = usize::from(be16(udp, 4));
    if udp_len < UDP_HEADER_LEN || udp_len > udp.len() {
        return Err(DhcpError::BadUdpLength(udp_len));
    }
    Ok(Datagram {
        eth_src,
        vlan_tci,
        payload: &udp[UDP_HEADER_LEN..udp_len],
    })
}

/// A length field; a message beyond 64 KiB cannot be expressed and saturates instead of panicking.
fn len16(len: usize) -> [u8; 2] {
    u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes()
}

/// Wraps `payload` in UDP 67 -> 68, IPv4 (no options, header checksum set) and Ethernet II,
/// with a correct UDP checksum.
pub fn build_frame(framing: &Framing, payload: &[u8]) -> Vec<u8> {
    let udp_len = len16(UDP_HEADER_LEN + payload.len());
    let mut udp = Vec::with_capacity(UDP_HEADER_LEN);
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len);
    let (src, dst) = (framing.ip_src.octets(), framing.ip_dst.octets());
    let pseudo = [
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        0,
        IPPROTO_UDP,
        udp_len[0],
        udp_len[1],
    ];
    // 0 would mean "no checksum" (RFC 768); its ones' complement twin 0xffff is sent instead.
    let udp_sum = match checksum(&[&pseudo, &udp, &[0, 0], payload]) {
        0 => 0xffff,
        sum => sum,
    };
    udp.extend_from_slice(&udp_sum.to_be_bytes());

    let total_len = len16(IPV4_MIN_HEADER_LEN + UDP_HEADER_LEN + payload.len());
    let mut ip = [0u8; IPV4_MIN_HEADER_LEN];
    ip[0] = 0x45; // version 4, IHL 5
    ip[2..4].copy_from_slice(&total_len);
    ip[8] = TTL;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let ip_sum = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let mut frame =
        Vec::with_capacity(ETH_HEADER_LEN + VLAN_TAG_LEN + ip.len() + udp.len() + payload.len());
    frame.extend_from_slice(&framing.eth_dst);
    frame.extend_from_slice(&framing.eth_src);
    if let Some(tci) = framing.vlan_tci {
        frame.extend_from_slice(&ETHERTYPE_VLAN.to_be_bytes());
        frame.extend_from_slice(&tci.to_be_bytes());
    }
    frame.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&udp);
    frame.extend_from_slice(payload);
    frame
}

/// The Internet checksum of the concatenation of `parts`; every part but the last must have an
/// even length. Over data that contains its own correct checksum, the result is 0.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u64 = 0;
    for part in parts {
        let mut words = part.chunks_exact(2);
        for word in &mut words {
            sum += u64::from(u16::from_be_bytes([word[0], word[1]]));
        }
        if let [last] = words.remainder() {
            sum += u64::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above leaves at most 16 bits.
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the ones' complement sum of these bytes is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        // Split at an even boundary and with an odd tail.
        assert_eq!(checksum(&[&data[..2], &data[2..]]), !0xddf2);
        assert_eq!(checksum(&[&[0xab]]), !0xab00);
    }

    #[test]
    fn built_frame_parses_back_when_ports_are_swapped() {
        let framing = Framing {
            eth_dst: [2, 0, 0, 0, 0, 1],
            eth_src: [2, 0, 0, 0, 0, 2],
            vlan_tci: Some(0x2064),
            ip_src: Ipv4Addr::new(10, 0, 0, 1),
            ip_dst: Ipv4Addr::BROADCAST,
        };
        let mut frame = build_frame(&framing, b"hello");
        // Turn the reply into a client datagram: swap the UDP ports (18 = Ethernet + tag, 20 = IPv4).
        frame[38..42].copy_from_slice(&[0, 68, 0, 67]);
        let dgram = parse_frame(&frame).unwrap();
        assert_eq!(dgram.eth_src, framing.eth_src);
        assert_eq!(dgram.vlan_tci, Some(0x2064));
        assert_eq!(dgram.payload, b"hello");
    }
}
