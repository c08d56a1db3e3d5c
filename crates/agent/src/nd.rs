//! Neighbour advertisements built in software: the pipeline sends neighbour solicitations for known
//! port addresses to the agent, which answers with the port's MAC (as the ARP responder does for IPv4
//! in flows; OpenFlow cannot turn a solicitation's option into an advertisement's). The protocol
//! (validation as RFC 4861 section 7.1.1 requires, the advertisement) is the `ndp` crate's.

use std::net::Ipv6Addr;

/// The target of a valid neighbour solicitation frame, with the solicitor's MAC (the frame's
/// Ethernet source) and address.
pub fn solicitation(frame: &[u8]) -> Option<(Ipv6Addr, [u8; 6], Ipv6Addr)> {
    let ns = ndp::parse_neighbor_solicitation(frame).ok()?;
    Some((ns.target, ns.eth_src, ns.src))
}

/// The neighbour advertisement answering `frame` (a solicitation for `target`) on behalf of `mac`,
/// with the router flag for a router's interface. `None` for anything else, and for duplicate
/// address detection (solicitations from `::`).
pub fn advertisement(frame: &[u8], target_mac: [u8; 6], router: bool) -> Option<Vec<u8>> {
    let ns = ndp::parse_neighbor_solicitation(frame).ok()?;
    ndp::neighbor_advertisement(&ns, target_mac, router)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A neighbour solicitation as a host sends it (hop limit 255, correct checksum, source
    /// link-layer address option).
    fn ns(src_mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let mut icmp = vec![135, 0, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&target.octets());
        if !src.is_unspecified() {
            icmp.extend_from_slice(&[1, 1]);
            icmp.extend_from_slice(&src_mac);
        }
        let framing = ndp::Ipv6Framing {
            eth_dst: ndp::multicast_mac(ndp::solicited_node(target)),
            eth_src: src_mac,
            vlan_tci: None,
            src,
            dst: ndp::solicited_node(target),
            hop_limit: 255,
        };
        ndp::build_icmpv6(&framing, icmp)
    }

    fn icmp_ok(na: &[u8]) -> bool {
        let packet = ndp::parse_ipv6(na).unwrap();
        ndp::checksum::upper_layer_checksum(&packet.src, &packet.dst, 58, packet.payload) == 0
    }

    #[test]
    fn answers_a_solicitation_with_a_valid_advertisement() {
        let asker: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let mac = [0xfa, 0x16, 0x3e, 0, 0, 2];
        let frame = ns([0xfa, 0x16, 0x3e, 0, 0, 1], asker, target);
        assert_eq!(
            solicitation(&frame),
            Some((target, [0xfa, 0x16, 0x3e, 0, 0, 1], asker))
        );
        let na = advertisement(&frame, mac, false).expect("an answer");
        assert_eq!(&na[0..6], &[0xfa, 0x16, 0x3e, 0, 0, 1], "to the asker");
        assert_eq!(&na[6..12], &mac);
        let icmp = &na[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[4], 0x60, "solicited and override");
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &mac);
        assert!(icmp_ok(&na));
        let na = advertisement(&frame, mac, true).expect("an answer");
        assert_eq!(na[54 + 4], 0xe0, "router, solicited and override");
        assert!(icmp_ok(&na));
    }

    #[test]
    fn ignores_dad_and_other_packets() {
        let target: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let dad = ns([2, 0, 0, 0, 0, 1], Ipv6Addr::UNSPECIFIED, target);
        assert!(solicitation(&dad).is_some());
        assert!(advertisement(&dad, [2; 6], false).is_none());
        assert!(advertisement(&[0u8; 20], [2; 6], false).is_none());
        let mut not_ns = ns([2, 0, 0, 0, 0, 1], "2001:db8::1".parse().unwrap(), target);
        not_ns[54] = 128;
        assert!(advertisement(&not_ns, [2; 6], false).is_none());
        let mut forwarded = ns([2, 0, 0, 0, 0, 1], "2001:db8::1".parse().unwrap(), target);
        forwarded[21] = 64;
        assert!(solicitation(&forwarded).is_none(), "hop limit below 255");
    }
}
