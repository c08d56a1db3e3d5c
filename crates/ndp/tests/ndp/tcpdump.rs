//! Golden check: tcpdump decodes built advertisements (written to a pcap file) as intended, with
//! checksums it verifies.

use frame_check::{check, check_complaint, tcpdump};
use ndp::neutron::{self, RaMode, RaSubnet};
use ndp::{neighbor_advertisement, parse_neighbor_solicitation, parse_router_solicitation};

use crate::builder::{ROUTER_MAC, ip, ns, rs};

#[test]
fn tcpdump_decodes_router_advertisements() {
    let subnets = [
        RaSubnet {
            prefix: "2001:db8:1::/64".parse().unwrap(),
            mode: RaMode::Dhcpv6Stateless,
            dns: Vec::new(),
        },
        RaSubnet {
            prefix: "2001:db8:2::/64".parse().unwrap(),
            mode: RaMode::Dhcpv6Stateful,
            dns: Vec::new(),
        },
        RaSubnet {
            prefix: "2001:db8:3::/64".parse().unwrap(),
            mode: RaMode::Slaac,
            dns: vec![ip("2001:db8::53")],
        },
    ];
    let ra = neutron::advertisement(&subnets, Some(1442), true);
    let solicitation = parse_router_solicitation(&rs().frame()).unwrap();
    let frame = ra.frame(ROUTER_MAC, Some(&solicitation));
    let text = tcpdump(&frame);
    check(
        &text,
        &[
            "fa:16:3e:aa:bb:cc > fa:16:3e:12:34:56",
            "hlim 255",
            "[icmp6 sum ok]",
            "fe80::f816:3eff:feaa:bbcc > fe80::f816:3eff:fe12:3456",
            "router advertisement",
            "hop limit 64, Flags [managed, other stateful]",
            "router lifetime 300s",
            "source link-address option (1), length 8 (1): fa:16:3e:aa:bb:cc",
            "mtu option (5), length 8 (1):  1442",
            "2001:db8:1::/64, Flags [onlink, auto], valid time 86400s, pref. time 14400s",
            "2001:db8:2::/64, Flags [onlink], valid time 86400s, pref. time 14400s",
            "rdnss option (25), length 24 (3):  lifetime 200s, addr: 2001:db8::53",
        ],
    );

    // tcpdump does notice a broken checksum.
    let mut broken = frame;
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    check_complaint(&broken, "bad icmp6 cksum");
}

#[test]
fn tcpdump_decodes_a_neighbor_advertisement() {
    let frame = ns(ip("2001:db8::1"), ip("2001:db8::2")).frame();
    let solicitation = parse_neighbor_solicitation(&frame).unwrap();
    let na = neighbor_advertisement(&solicitation, ROUTER_MAC, true).unwrap();
    let text = tcpdump(&na);
    check(
        &text,
        &[
            "2001:db8::2 > 2001:db8::1: [icmp6 sum ok]",
            "neighbor advertisement",
            "tgt is 2001:db8::2",
            "Flags [router, solicited, override]",
            "destination link-address option (2), length 8 (1): fa:16:3e:aa:bb:cc",
        ],
    );
}
