//! Neighbour solicitations parsed and answered; each reason for refusal.

use ndp::{
    FrameError, NdpError, NeighborAdvertisement, NeighborSolicitation, neighbor_advertisement,
    neighbor_solicitation, parse_neighbor_advertisement, parse_neighbor_solicitation,
    unsolicited_advertisement,
};

use frame_check::{be32, ipv6_addr};

use crate::builder::{HOST_MAC, ROUTER_MAC, ip, ns};
use crate::inspect::Icmp;

const PORT_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 2];

#[test]
fn a_solicitation_is_parsed() {
    let frame = ns(ip("2001:db8::1"), ip("2001:db8::2")).frame();
    assert_eq!(
        parse_neighbor_solicitation(&frame),
        Ok(NeighborSolicitation {
            eth_src: HOST_MAC,
            vlan_tci: None,
            src: ip("2001:db8::1"),
            dst: ip("ff02::1:ff00:2"),
            target: ip("2001:db8::2"),
            source_mac: Some(HOST_MAC),
        })
    );
}

#[test]
fn the_advertisement_answers_the_solicitor() {
    let frame = ns(ip("2001:db8::1"), ip("2001:db8::2")).frame();
    let ns = parse_neighbor_solicitation(&frame).unwrap();
    let na = Icmp::parse(&neighbor_advertisement(&ns, PORT_MAC, false).unwrap());
    assert_eq!(na.eth.dst, HOST_MAC);
    assert_eq!(na.eth.src, PORT_MAC);
    assert_eq!(na.eth.vlan_tci, None);
    assert_eq!(
        (na.ip.src, na.ip.dst),
        (ip("2001:db8::2"), ip("2001:db8::1"))
    );
    assert_eq!(na.ip.hop_limit, 255);
    assert!(na.checksum_ok, "ICMPv6 checksum");
    assert_eq!(&na.message[0..2], &[136, 0], "type and code");
    assert_eq!(be32(&na.message, 4), 0x6000_0000, "solicited and override");
    assert_eq!(ipv6_addr(&na.message[8..24]), ip("2001:db8::2"));
    let mut tlla = vec![2, 1];
    tlla.extend_from_slice(&PORT_MAC);
    assert_eq!(na.options(24), vec![(2, tlla)]);
}

#[test]
fn the_router_flag_is_set_on_request() {
    let frame = ns(ip("fe80::1"), ip("2001:db8::1")).frame();
    let ns = parse_neighbor_solicitation(&frame).unwrap();
    let na = Icmp::parse(&neighbor_advertisement(&ns, ROUTER_MAC, true).unwrap());
    assert_eq!(
        be32(&na.message, 4),
        0xe000_0000,
        "router, solicited, override"
    );
    assert!(na.checksum_ok);
}

#[test]
fn a_tagged_solicitation_gets_a_tagged_answer() {
    let mut client = ns(ip("2001:db8::1"), ip("2001:db8::2"));
    client.eth.vlan_tci = Some(0x0064);
    let ns = parse_neighbor_solicitation(&client.frame()).unwrap();
    assert_eq!(ns.vlan_tci, Some(0x0064));
    let na = Icmp::parse(&neighbor_advertisement(&ns, PORT_MAC, false).unwrap());
    assert_eq!(na.eth.vlan_tci, Some(0x0064));
    assert!(na.checksum_ok);
}

#[test]
fn duplicate_address_detection_is_not_answered() {
    let mut dad = ns(ip("::"), ip("2001:db8::2"));
    dad.message.truncate(24); // no source link-layer address from ::
    let ns = parse_neighbor_solicitation(&dad.frame()).unwrap();
    assert_eq!(ns.source_mac, None);
    assert_eq!(neighbor_advertisement(&ns, PORT_MAC, false), None);
}

#[test]
fn invalid_solicitations_are_refused() {
    let good = || ns(ip("2001:db8::1"), ip("2001:db8::2"));
    let check = |client: crate::builder::Icmp, want: NdpError| {
        assert_eq!(parse_neighbor_solicitation(&client.frame()), Err(want));
    };

    let mut c = good();
    c.ip.hop_limit = 64;
    check(c, NdpError::HopLimit(64));
    let mut c = good();
    c.good_checksum = false;
    check(c, NdpError::BadChecksum);
    let mut c = good();
    c.message[1] = 1;
    check(c, NdpError::BadCode(1));
    let mut c = good();
    c.message[0] = 133;
    check(
        c,
        NdpError::WrongType {
            expected: 135,
            got: 133,
        },
    );
    let mut c = good();
    c.message.truncate(20);
    check(c, NdpError::TooShort("neighbour solicitation"));
    let mut c = good();
    c.message[8..24].copy_from_slice(&ip("ff02::1").octets());
    check(c, NdpError::MulticastTarget(ip("ff02::1")));
    let mut c = good();
    c.message[25] = 0;
    check(c, NdpError::ZeroLengthOption(1));
    let mut c = good();
    c.message.truncate(30);
    check(c, NdpError::TruncatedOption(1));
    let mut c = good();
    c.ip.src = ip("::");
    check(c, NdpError::LinkLayerFromUnspecified);
    let mut c = good();
    c.ip.src = ip("::");
    c.ip.dst = ip("ff02::1");
    c.message.truncate(24);
    check(c, NdpError::UnspecifiedNotToSolicitedNode(ip("ff02::1")));

    let mut udp = good().frame();
    udp[20] = 17;
    assert_eq!(
        parse_neighbor_solicitation(&udp),
        Err(NdpError::NotIcmpv6(17))
    );
    let mut v4 = good().frame();
    v4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        parse_neighbor_solicitation(&v4),
        Err(NdpError::Frame(FrameError::NotIpv6(0x0800)))
    );
}

#[test]
fn an_unsolicited_advertisement_goes_to_all_nodes_and_overrides() {
    let na = Icmp::parse(&unsolicited_advertisement(
        ip("2001:db8::1"),
        ROUTER_MAC,
        true,
    ));
    assert_eq!(na.eth.dst, [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(na.eth.src, ROUTER_MAC);
    assert_eq!((na.ip.src, na.ip.dst), (ip("2001:db8::1"), ip("ff02::1")));
    assert_eq!(na.ip.hop_limit, 255);
    assert!(na.checksum_ok, "ICMPv6 checksum");
    assert_eq!(
        be32(&na.message, 4),
        0xa000_0000,
        "router and override, not solicited"
    );
    let mut tlla = vec![2, 1];
    tlla.extend_from_slice(&ROUTER_MAC);
    assert_eq!(na.options(24), vec![(2, tlla)]);
}

#[test]
fn a_solicitation_asks_the_solicited_node_group_and_its_answer_is_read() {
    let frame = neighbor_solicitation(ROUTER_MAC, ip("fe80::1"), ip("2001:db8::77"));
    let asked = Icmp::parse(&frame);
    assert_eq!(asked.eth.dst, [0x33, 0x33, 0xff, 0, 0, 0x77]);
    assert_eq!(asked.ip.dst, ip("ff02::1:ff00:77"));
    assert!(asked.checksum_ok, "ICMPv6 checksum");
    // What a host parses of it, and its answer, which the asker reads.
    let ns = parse_neighbor_solicitation(&frame).expect("a valid solicitation");
    assert_eq!(ns.target, ip("2001:db8::77"));
    assert_eq!(ns.source_mac, Some(ROUTER_MAC));
    let na = neighbor_advertisement(&ns, PORT_MAC, false).expect("an answer");
    assert_eq!(
        parse_neighbor_advertisement(&na),
        Ok(NeighborAdvertisement {
            target: ip("2001:db8::77"),
            target_mac: Some(PORT_MAC),
            dst: ip("fe80::1"),
        })
    );
    // An unsolicited one too; a solicitation is not an advertisement.
    let told = unsolicited_advertisement(ip("2001:db8::5"), HOST_MAC, false);
    let read = parse_neighbor_advertisement(&told).expect("valid");
    assert_eq!(
        (read.target, read.target_mac),
        (ip("2001:db8::5"), Some(HOST_MAC))
    );
    assert_eq!(
        parse_neighbor_advertisement(&frame),
        Err(NdpError::WrongType {
            expected: 136,
            got: 135
        })
    );
    let mut broken = na.clone();
    let last = broken.len() - 1;
    broken[last] ^= 1;
    assert_eq!(
        parse_neighbor_advertisement(&broken),
        Err(NdpError::BadChecksum)
    );
}
