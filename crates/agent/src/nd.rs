//! Neighbour advertisements built in software: the pipeline sends neighbour solicitations for known
//! port addresses to the agent, which answers with the port's MAC (as the ARP responder does for IPv4
//! in flows; OpenFlow cannot turn a solicitation's option into an advertisement's).

use std::net::Ipv6Addr;

const ETH_HLEN: usize = 14;
const IPV6_HLEN: usize = 40;
const ICMPV6_NS: u8 = 135;
const ICMPV6_NA: u8 = 136;
/// Solicited and override flags.
const NA_FLAGS: u32 = 0x6000_0000;

/// The ICMPv6 checksum of `message` between `src` and `dst`.
fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The target of a neighbour solicitation frame, with the solicitor's MAC and address.
pub fn solicitation(frame: &[u8]) -> Option<(Ipv6Addr, [u8; 6], Ipv6Addr)> {
    if frame.len() < ETH_HLEN + IPV6_HLEN + 24 || frame[12..14] != [0x86, 0xdd] {
        return None;
    }
    let ip = &frame[ETH_HLEN..];
    if ip[6] != 58 || ip[IPV6_HLEN] != ICMPV6_NS {
        return None;
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[8..24]).ok()?);
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[48..64]).ok()?);
    let mac = <[u8; 6]>::try_from(&frame[6..12]).ok()?;
    Some((target, mac, src))
}

/// The neighbour advertisement answering `frame` (a solicitation for `target`) on behalf of `mac`.
/// `None` for anything else, and for duplicate address detection (solicitations from `::`).
pub fn advertisement(frame: &[u8], target_mac: [u8; 6]) -> Option<Vec<u8>> {
    let (target, asker_mac, asker) = solicitation(frame)?;
    if asker.is_unspecified() {
        return None;
    }
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[ICMPV6_NA, 0, 0, 0]);
    icmp.extend_from_slice(&NA_FLAGS.to_be_bytes());
    icmp.extend_from_slice(&target.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&target_mac);
    let sum = icmpv6_checksum(&target, &asker, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut out = Vec::with_capacity(ETH_HLEN + IPV6_HLEN + icmp.len());
    out.extend_from_slice(&asker_mac);
    out.extend_from_slice(&target_mac);
    out.extend_from_slice(&[0x86, 0xdd]);
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    out.extend_from_slice(&[58, 255]);
    out.extend_from_slice(&target.octets());
    out.extend_from_slice(&asker.octets());
    out.extend_from_slice(&icmp);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut icmp = vec![ICMPV6_NS, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        icmp.extend_from_slice(&[1, 1]);
        icmp.extend_from_slice(&src_mac);
        let dst: Ipv6Addr = "ff02::1:ff00:2".parse().unwrap();
        let sum = icmpv6_checksum(&src, &dst, &icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        let mut f = vec![0x33, 0x33, 0xff, 0, 0, 2];
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
        f.extend_from_slice(&[58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&icmp);
        f
    }

    #[test]
    fn answers_a_solicitation_with_a_valid_advertisement() {
        let asker: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 2];
        let frame = ns([0xfa, 0x16, 0x3e, 0, 0, 1], asker, target);
        let na = advertisement(&frame, mac).expect("an answer");
        assert_eq!(&na[0..6], &[0xfa, 0x16, 0x3e, 0, 0, 1], "to the asker");
        assert_eq!(&na[6..12], &mac);
        let icmp = &na[54..];
        assert_eq!(icmp[0], ICMPV6_NA);
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &mac);
        // A correct checksum makes the sum over the message, checksum included, zero.
        assert_eq!(icmpv6_checksum(&target, &asker, icmp), 0);
    }

    #[test]
    fn ignores_dad_and_other_packets() {
        let target: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let dad = ns([2, 0, 0, 0, 0, 1], Ipv6Addr::UNSPECIFIED, target);
        assert!(advertisement(&dad, [2; 6]).is_none());
        assert!(advertisement(&[0u8; 20], [2; 6]).is_none());
        let mut not_ns = ns([2, 0, 0, 0, 0, 1], "2001:db8::1".parse().unwrap(), target);
        not_ns[54] = 128;
        assert!(advertisement(&not_ns, [2; 6]).is_none());
    }
}
