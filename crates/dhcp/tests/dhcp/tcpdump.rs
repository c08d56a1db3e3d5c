//! Golden check: tcpdump decodes a built OFFER (written to a pcap file) without complaints.

use dhcp::{MessageType, build_reply, parse_request};
use frame_check::{check, check_complaint, tcpdump};

use crate::builder::{Client, lease};

#[test]
fn tcpdump_decodes_the_offer() {
    let mut client = Client::new(1, 0xabcd_0001).option(61, &[1, 2, 3, 4, 5, 6, 7]);
    client.flags = 0x8000;
    let req = parse_request(&client.frame()).unwrap();
    let mut lease = lease();
    lease.routes = vec![(
        "10.1.0.0/16".parse().unwrap(),
        dhcp::Ipv4Addr::new(10, 0, 0, 254),
    )];
    let frame = build_reply(&req, MessageType::Offer, &lease);
    let text = tcpdump(&frame);
    // No complaint: neither "bad cksum" nor "[bad udp cksum".
    check(
        &text,
        &[
            "DHCP-Message (53), length 1: Offer",
            "Subnet-Mask (1), length 4: 255.255.255.0",
            "10.0.0.2.67 > 255.255.255.255.68",
            "Your-IP 10.0.0.5",
            "(10.1.0.0/16:10.0.0.254),(default:10.0.0.1)",
            "[udp sum ok]",
        ],
    );

    // The absence of complaints means something: tcpdump does notice broken checksums.
    let mut bad_udp = frame.clone();
    bad_udp[14 + 20 + 8 + 4] ^= 0xff; // a byte of the xid
    check_complaint(&bad_udp, "[bad udp cksum");
    let mut bad_ip = frame;
    bad_ip[14 + 8] ^= 0x01; // the TTL
    check_complaint(&bad_ip, "bad cksum");
}

#[test]
fn tcpdump_decodes_network_boot_extras() {
    let req = parse_request(&Client::new(1, 7).frame()).unwrap();
    let mut lease = lease();
    lease.extra = [
        ("server-ip-address", "192.0.2.9"),
        ("tftp-server", "192.0.2.9"),
        ("bootfile-name", "pxelinux.0"),
        ("domain-search", "eng.example.org,example.org"),
        ("dns-server", ""),
    ]
    .iter()
    .map(|(name, value)| dhcp::ExtraOption::parse(name, value).unwrap())
    .collect();
    let frame = build_reply(&req, MessageType::Offer, &lease);
    let text = tcpdump(&frame);
    check(
        &text,
        &[
            "Server-IP 192.0.2.9",
            "sname \"192.0.2.9\"",
            "file \"pxelinux.0\"",
            "TFTP (66), length 9: \"192.0.2.9\"",
            "BF (67), length 10: \"pxelinux.0\"",
            // This tcpdump does not decode the domain search list (3 + 1 + 7 + 1 + 3 + 1 + 1
            // bytes for the first name, 13 for the second).
            "(119), length 30",
            "[udp sum ok]",
        ],
    );
    assert!(!text.contains("Domain-Name-Server"), "{text}");
}
