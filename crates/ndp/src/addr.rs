//! IPv6 addresses derived from MAC addresses: modified EUI-64 interface identifiers (RFC 4291
//! appendix A), link-local and SLAAC addresses, solicited-node multicast groups and the Ethernet
//! addresses of multicast groups (RFC 2464 section 7).

use std::net::Ipv6Addr;

use ipnet::Ipv6Net;

/// All-nodes multicast (link-local scope).
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// All-routers multicast (link-local scope).
pub const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// The modified EUI-64 interface identifier of `mac`: `ff:fe` inserted in the middle and the
/// universal/local bit inverted.
pub fn interface_id(mac: [u8; 6]) -> [u8; 8] {
    [
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ]
}

/// The address made of the first 64 bits of `prefix` and the modified EUI-64 interface
/// identifier of `mac` (stateless address autoconfiguration, RFC 4862 section 5.5.3; Neutron
/// gives ports on SLAAC and DHCPv6-stateless subnets this address). Prefix bits past the
/// 64th, if any, are replaced by the identifier.
pub fn eui64(prefix: Ipv6Net, mac: [u8; 6]) -> Ipv6Addr {
    let high = u128::from(prefix.network()) & !u128::from(u64::MAX);
    Ipv6Addr::from(high | u128::from(u64::from_be_bytes(interface_id(mac))))
}

/// The link-local address of an interface with `mac`: `fe80::/64` and its EUI-64 identifier.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    eui64(
        Ipv6Net::new_assert(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 64),
        mac,
    )
}

/// The solicited-node multicast group of `ip` (`ff02::1:ff00:0/104` and its low 24 bits), where
/// neighbour solicitations for `ip` are sent.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address of IPv6 multicast group `group`: `33:33` and its low 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_addresses_as_linux_derives_them() {
        // What `ip -6 addr` shows on an interface with these MACs.
        assert_eq!(
            link_local([0xfa, 0x16, 0x3e, 0x12, 0x34, 0x56]),
            "fe80::f816:3eff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            link_local([0x02, 0x77, 0x79, 0x76, 0x00, 0x01]),
            "fe80::77:79ff:fe76:1".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn eui64_keeps_the_first_64_bits_of_the_prefix() {
        let mac = [0xfa, 0x16, 0x3e, 0x00, 0x00, 0x05];
        let want: Ipv6Addr = "2001:db8:0:1:f816:3eff:fe00:5".parse().unwrap();
        assert_eq!(eui64("2001:db8:0:1::/64".parse().unwrap(), mac), want);
        // Host bits in the prefix do not matter.
        assert_eq!(eui64("2001:db8:0:1::77/64".parse().unwrap(), mac), want);
        assert_eq!(
            eui64("2001:db8::/48".parse().unwrap(), mac),
            "2001:db8::f816:3eff:fe00:5".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            eui64("2001:db8:0:1:ffff::/80".parse().unwrap(), mac),
            want,
            "bits past the 64th are the identifier's"
        );
    }

    #[test]
    fn multicast_groups_and_their_macs() {
        let ip: Ipv6Addr = "2001:db8::f816:3eff:fe12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
        assert_eq!(multicast_mac(ALL_NODES), [0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(multicast_mac(ALL_ROUTERS), [0x33, 0x33, 0, 0, 0, 2]);
    }
}
