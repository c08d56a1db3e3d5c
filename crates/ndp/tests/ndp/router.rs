//! Router solicitations parsed; advertisements built per Neutron RA mode and decoded.

use ndp::neutron::{self, RaMode, RaSubnet};
use ndp::{
    NdpError, PrefixInformation, RecursiveDnsServers, RouterAdvertisement, RouterSolicitation,
    link_local, parse_router_solicitation,
};

use frame_check::{be32, ipv6_addr};

use crate::builder::{HOST_MAC, ROUTER_MAC, ip, rs};
use crate::inspect::Icmp;

#[test]
fn a_solicitation_is_parsed() {
    assert_eq!(
        parse_router_solicitation(&rs().frame()),
        Ok(RouterSolicitation {
            eth_src: HOST_MAC,
            vlan_tci: None,
            src: ip("fe80::f816:3eff:fe12:3456"),
            dst: ip("ff02::2"),
            source_mac: Some(HOST_MAC),
        })
    );
    // A host without an address yet sends no link-layer address.
    let mut early = rs();
    early.ip.src = ip("::");
    early.message.truncate(8);
    let parsed = parse_router_solicitation(&early.frame()).unwrap();
    assert_eq!((parsed.src, parsed.source_mac), (ip("::"), None));
}

#[test]
fn invalid_solicitations_are_refused() {
    let check = |client: crate::builder::Icmp, want: NdpError| {
        assert_eq!(parse_router_solicitation(&client.frame()), Err(want));
    };
    let mut c = rs();
    c.ip.hop_limit = 1;
    check(c, NdpError::HopLimit(1));
    let mut c = rs();
    c.good_checksum = false;
    check(c, NdpError::BadChecksum);
    let mut c = rs();
    c.message[1] = 9;
    check(c, NdpError::BadCode(9));
    let mut c = rs();
    c.message.truncate(4);
    check(c, NdpError::TooShort("router solicitation"));
    let mut c = rs();
    c.message[9] = 0;
    check(c, NdpError::ZeroLengthOption(1));
    let mut c = rs();
    c.message.extend_from_slice(&[5, 2, 0, 0]);
    check(c, NdpError::TruncatedOption(5));
    let mut c = rs();
    c.ip.src = ip("::");
    check(c, NdpError::LinkLayerFromUnspecified);
    let mut c = rs();
    c.message[0] = 134;
    check(
        c,
        NdpError::WrongType {
            expected: 133,
            got: 134,
        },
    );
}

fn full_advertisement() -> RouterAdvertisement {
    RouterAdvertisement {
        cur_hop_limit: 64,
        managed: true,
        other_config: true,
        router_lifetime: 300,
        reachable_time: 30_000,
        retrans_timer: 1_000,
        mtu: Some(1442),
        prefixes: vec![
            PrefixInformation {
                prefix: "2001:db8:1::/64".parse().unwrap(),
                on_link: true,
                autonomous: true,
                valid_lifetime: 86_400,
                preferred_lifetime: 14_400,
            },
            PrefixInformation {
                prefix: "2001:db8:2::/64".parse().unwrap(),
                on_link: true,
                autonomous: false,
                valid_lifetime: 7_200,
                preferred_lifetime: 3_600,
            },
        ],
        dns: Some(RecursiveDnsServers {
            lifetime: 200,
            servers: vec![ip("2001:db8::53"), ip("2001:db8::54")],
        }),
    }
}

#[test]
fn an_unsolicited_advertisement_goes_to_all_nodes_with_every_option() {
    let ra = Icmp::parse(&full_advertisement().frame(ROUTER_MAC, None));
    assert_eq!(ra.eth.dst, [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(ra.eth.src, ROUTER_MAC);
    assert_eq!(ra.eth.vlan_tci, None);
    assert_eq!(ra.ip.src, ip("fe80::f816:3eff:feaa:bbcc"));
    assert_eq!(ra.ip.src, link_local(ROUTER_MAC));
    assert_eq!(ra.ip.dst, ip("ff02::1"));
    assert_eq!(ra.ip.hop_limit, 255);
    assert!(ra.checksum_ok, "ICMPv6 checksum");
    let m = &ra.message;
    assert_eq!(&m[0..2], &[134, 0]);
    assert_eq!(m[4], 64, "cur hop limit");
    assert_eq!(m[5], 0xc0, "managed and other");
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 300);
    assert_eq!(be32(m, 8), 30_000);
    assert_eq!(be32(m, 12), 1_000);

    let options = ra.options(16);
    let kinds: Vec<u8> = options.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, [1, 5, 3, 3, 25]);
    assert_eq!(&options[0].1[2..], &ROUTER_MAC, "source link-layer address");
    assert_eq!(options[1].1, [5, 1, 0, 0, 0, 0, 0x05, 0xa2], "MTU 1442");
    let p = &options[2].1;
    assert_eq!(p.len(), 32);
    assert_eq!(
        (p[2], p[3]),
        (64, 0xc0),
        "length 64, on-link and autonomous"
    );
    assert_eq!((be32(p, 4), be32(p, 8), be32(p, 12)), (86_400, 14_400, 0));
    assert_eq!(ipv6_addr(&p[16..]), ip("2001:db8:1::"));
    let p = &options[3].1;
    assert_eq!((p[2], p[3]), (64, 0x80), "on-link only");
    assert_eq!((be32(p, 4), be32(p, 8)), (7_200, 3_600));
    assert_eq!(ipv6_addr(&p[16..]), ip("2001:db8:2::"));
    let d = &options[4].1;
    assert_eq!(d.len(), 40, "8 bytes and two addresses");
    assert_eq!(be32(d, 4), 200);
    assert_eq!(
        (ipv6_addr(&d[8..24]), ipv6_addr(&d[24..40])),
        (ip("2001:db8::53"), ip("2001:db8::54"))
    );
}

#[test]
fn an_answer_goes_to_the_solicitor_tagged_like_it() {
    let mut client = rs();
    client.eth.vlan_tci = Some(0x2005);
    let solicitation = parse_router_solicitation(&client.frame()).unwrap();
    let ra = Icmp::parse(&full_advertisement().frame(ROUTER_MAC, Some(&solicitation)));
    assert_eq!(ra.eth.dst, HOST_MAC);
    assert_eq!(ra.ip.dst, ip("fe80::f816:3eff:fe12:3456"));
    assert_eq!(ra.eth.vlan_tci, Some(0x2005));
    assert!(ra.checksum_ok);

    // From the unspecified address: to all-nodes (RFC 4861 section 6.2.6).
    let mut early = client;
    early.ip.src = ip("::");
    early.message.truncate(8);
    let solicitation = parse_router_solicitation(&early.frame()).unwrap();
    let ra = Icmp::parse(&full_advertisement().frame(ROUTER_MAC, Some(&solicitation)));
    assert_eq!(ra.eth.dst, [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(ra.ip.dst, ip("ff02::1"));
    assert_eq!(ra.eth.vlan_tci, Some(0x2005));
    assert!(ra.checksum_ok);
}

#[test]
fn neutron_modes_on_the_wire() {
    // (mode, M/O flags byte, prefix flags byte)
    let cases = [
        (RaMode::Slaac, 0x00, 0xc0),
        (RaMode::Dhcpv6Stateless, 0x40, 0xc0),
        (RaMode::Dhcpv6Stateful, 0x80, 0x80),
    ];
    for (mode, flags, prefix_flags) in cases {
        let subnets = [RaSubnet {
            prefix: "2001:db8::/64".parse().unwrap(),
            mode,
            dns: vec![ip("2001:db8::53")],
        }];
        let ra = neutron::advertisement(&subnets, Some(1500), true);
        let frame = Icmp::parse(&ra.frame(ROUTER_MAC, None));
        assert!(frame.checksum_ok);
        assert_eq!(frame.message[5], flags, "{mode:?}");
        assert_eq!(
            u16::from_be_bytes([frame.message[6], frame.message[7]]),
            300
        );
        let options = frame.options(16);
        let prefix = &options.iter().find(|(k, _)| *k == 3).unwrap().1;
        assert_eq!(prefix[3], prefix_flags, "{mode:?}");
        assert_eq!((be32(prefix, 4), be32(prefix, 8)), (86_400, 14_400));
        assert_eq!(
            options.iter().any(|(k, _)| *k == 25),
            mode == RaMode::Slaac,
            "DNS servers only for slaac ({mode:?})"
        );
    }
}

#[test]
fn without_options_only_the_source_address_is_sent() {
    let ra = RouterAdvertisement {
        cur_hop_limit: 0,
        managed: false,
        other_config: false,
        router_lifetime: 0,
        reachable_time: 0,
        retrans_timer: 0,
        mtu: None,
        prefixes: Vec::new(),
        dns: Some(RecursiveDnsServers {
            lifetime: 1,
            servers: Vec::new(),
        }),
    };
    let frame = Icmp::parse(&ra.frame(ROUTER_MAC, None));
    assert_eq!(frame.message.len(), 24);
    assert!(frame.checksum_ok);
    assert_eq!(&frame.message[4..16], &[0; 12]);
}
