//! ICMP errors built in software: "time exceeded in transit" (ICMPv4 type 11, ICMPv6 type 3) for
//! a routed packet whose TTL or hop limit ran out, which a router sends from the interface the
//! sender used; "port unreachable" (ICMPv4 type 3 code 3, ICMPv6 type 1 code 4) for a datagram to
//! a load-balancer listener with no member available, sent from the VIP. The pipeline sends such
//! a packet to the agent of the chassis it entered on, which answers back out of the port it came
//! in on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ndp::checksum::internet_checksum as checksum;

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// RFC 1812 4.3.2.3: as much of the original datagram as fits in 576 bytes.
const ICMPV4_MAX: usize = 576;
/// RFC 4443 2.4 (c): as much as fits in the minimum IPv6 MTU.
const ICMPV6_MAX: usize = 1280;

/// The source MAC and IP the expired packet came from (what the error goes back to).
pub fn sender(frame: &[u8]) -> Option<([u8; 6], IpAddr)> {
    let mac = <[u8; 6]>::try_from(frame.get(6..12)?).ok()?;
    let ip = match frame.get(12..14)? {
        [0x08, 0x00] => IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(frame.get(ETH_HLEN + 12..ETH_HLEN + 16)?).ok()?,
        )),
        [0x86, 0xdd] => IpAddr::V6(Ipv6Addr::from(
            <[u8; 16]>::try_from(frame.get(ETH_HLEN + 8..ETH_HLEN + 24)?).ok()?,
        )),
        _ => return None,
    };
    Some((mac, ip))
}

/// The destination MAC of a frame.
pub fn destination_mac(frame: &[u8]) -> Option<[u8; 6]> {
    <[u8; 6]>::try_from(frame.get(0..6)?).ok()
}

/// Whether an IPv4 packet is itself an ICMP error (never answered with another).
fn is_icmpv4_error(ip: &[u8]) -> bool {
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[9] == 1
        && ip
            .get(ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12))
}

/// Whether an IPv6 packet is itself an ICMPv6 error (types below 128).
fn is_icmpv6_error(ip: &[u8]) -> bool {
    ip[6] == 58 && ip.get(IPV6_HLEN).is_some_and(|t| *t < 128)
}

/// An ICMP error's type and code: for ICMPv4, and for ICMPv6.
struct Kind {
    v4: [u8; 2],
    v6: [u8; 2],
}

const TIME_EXCEEDED: Kind = Kind {
    v4: [11, 0],
    v6: [3, 0],
};
const PORT_UNREACHABLE: Kind = Kind {
    v4: [3, 3],
    v6: [1, 4],
};

/// The "time exceeded in transit" answer to `frame` from a router interface with `mac` and
/// address `from` (same family as the packet). `None` for frames that get no answer: too short,
/// another family, or an ICMP error themselves.
pub fn time_exceeded(frame: &[u8], mac: [u8; 6], from: IpAddr) -> Option<Vec<u8>> {
    error(frame, mac, from, &TIME_EXCEEDED)
}

/// The "port unreachable" answer to `frame` from `mac` and address `from` (same family as the
/// packet; `None` as for [`time_exceeded`]).
pub fn port_unreachable(frame: &[u8], mac: [u8; 6], from: IpAddr) -> Option<Vec<u8>> {
    error(frame, mac, from, &PORT_UNREACHABLE)
}

/// The IP packet a frame carries, without the Ethernet padding after it (as far as its header's
/// length says; all that the frame holds if that is more).
fn packet(frame: &[u8]) -> Option<&[u8]> {
    let ip = frame.get(ETH_HLEN..)?;
    let len = match frame.get(12..14)? {
        [0x08, 0x00] => usize::from(u16::from_be_bytes(ip.get(2..4)?.try_into().ok()?)),
        [0x86, 0xdd] => IPV6_HLEN + usize::from(u16::from_be_bytes(ip.get(4..6)?.try_into().ok()?)),
        _ => return None,
    };
    Some(&ip[..len.min(ip.len())])
}

/// The ICMP error `kind` answering `frame`, from `mac` and `from`.
fn error(frame: &[u8], mac: [u8; 6], from: IpAddr, kind: &Kind) -> Option<Vec<u8>> {
    let (dst_mac, to) = sender(frame)?;
    let original = packet(frame)?;
    let mut out = Vec::with_capacity(ICMPV6_MAX + ETH_HLEN);
    out.extend_from_slice(&dst_mac);
    out.extend_from_slice(&mac);
    match (from, to) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            if original.len() < IPV4_HLEN || is_icmpv4_error(original) {
                return None;
            }
            let quoted = &original[..original.len().min(ICMPV4_MAX - IPV4_HLEN - 8)];
            let total = (IPV4_HLEN + 8 + quoted.len()) as u16;
            out.extend_from_slice(&[0x08, 0x00]);
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip.extend_from_slice(&src.octets());
            ip.extend_from_slice(&dst.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            let mut icmp = vec![kind.v4[0], kind.v4[1], 0, 0, 0, 0, 0, 0];
            let sum = checksum(&[&icmp, quoted]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
            out.extend_from_slice(&icmp);
            out.extend_from_slice(quoted);
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            if original.len() < IPV6_HLEN || is_icmpv6_error(original) {
                return None;
            }
            let quoted = &original[..original.len().min(ICMPV6_MAX - IPV6_HLEN - 8)];
            let len = (8 + quoted.len()) as u32;
            out.extend_from_slice(&[0x86, 0xdd]);
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
            out.extend_from_slice(&[58, 255]);
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
            let mut icmp = vec![kind.v6[0], kind.v6[1], 0, 0, 0, 0, 0, 0];
            let pseudo_len = len.to_be_bytes();
            let sum = checksum(&[
                &src.octets(),
                &dst.octets(),
                &pseudo_len,
                &[0, 0, 0, 58],
                &icmp,
                quoted,
            ]);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&icmp);
            out.extend_from_slice(quoted);
        }
        _ => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_v4(ttl: u8) -> Vec<u8> {
        let mut f = vec![
            0xfa, 0x16, 0x3e, 0, 1, 0x0a, 0xfa, 0x16, 0x3e, 0, 0, 0xa1, 0x08, 0x00,
        ];
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, ttl, 17, 0, 0, 10, 0, 1, 11, 10, 0, 2, 11,
        ];
        let sum = checksum(&[&ip]);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x82, 0x9a, 0x82, 0x9b, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn ipv4_time_exceeded_quotes_the_packet_with_valid_checksums() {
        let frame = udp_v4(1);
        let router_mac = [0xfa, 0x16, 0x3e, 0, 1, 0x0a];
        let reply = time_exceeded(&frame, router_mac, "10.0.1.1".parse().unwrap()).unwrap();
        assert_eq!(&reply[0..6], &frame[6..12], "back to the sender");
        assert_eq!(&reply[6..12], &router_mac);
        let ip = &reply[ETH_HLEN..];
        assert_eq!(checksum(&[&ip[..IPV4_HLEN]]), 0, "IP header checksum");
        assert_eq!(&ip[12..16], &[10, 0, 1, 1]);
        assert_eq!(&ip[16..20], &[10, 0, 1, 11]);
        let icmp = &ip[IPV4_HLEN..];
        assert_eq!((icmp[0], icmp[1]), (11, 0));
        assert_eq!(checksum(&[icmp]), 0, "ICMP checksum");
        assert_eq!(&icmp[8..], &frame[ETH_HLEN..], "the whole original quoted");
    }

    #[test]
    fn ipv6_time_exceeded_has_a_valid_checksum() {
        let mut frame = vec![
            0x33, 0x33, 0, 0, 0, 1, 0xfa, 0x16, 0x3e, 0, 0, 0xa1, 0x86, 0xdd,
        ];
        frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 1]);
        let src: Ipv6Addr = "2001:db8:1::11".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8:2::11".parse().unwrap();
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        frame.extend_from_slice(&[0x82, 0x9a, 0x82, 0x9b, 0, 8, 0, 0]);
        let from: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let reply = time_exceeded(&frame, [2, 0, 0, 0, 0, 1], IpAddr::V6(from)).unwrap();
        let ip = &reply[ETH_HLEN..];
        let icmp = &ip[IPV6_HLEN..];
        assert_eq!((icmp[0], icmp[1]), (3, 0));
        let len = (icmp.len() as u32).to_be_bytes();
        assert_eq!(
            checksum(&[&from.octets(), &src.octets(), &len, &[0, 0, 0, 58], icmp]),
            0
        );
    }

    #[test]
    fn errors_and_mismatched_families_get_no_answer() {
        let mut frame = udp_v4(1);
        assert!(time_exceeded(&frame, [0; 6], "2001:db8::1".parse().unwrap()).is_none());
        frame[ETH_HLEN + 9] = 1;
        frame[ETH_HLEN + IPV4_HLEN] = 11;
        assert!(time_exceeded(&frame, [0; 6], "10.0.1.1".parse().unwrap()).is_none());
        assert!(time_exceeded(&frame[..20], [0; 6], "10.0.1.1".parse().unwrap()).is_none());
    }
}
