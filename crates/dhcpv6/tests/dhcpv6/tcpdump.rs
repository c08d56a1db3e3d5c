//! Golden check: tcpdump decodes built replies (written to a pcap file) as intended, with a UDP
//! checksum it verifies.

use dhcpv6::{answer, build_reply, parse_request};
use frame_check::{check, check_complaint, tcpdump};

use crate::builder::{Client, server};

fn frame(client: Client, stateful: bool) -> Vec<u8> {
    let req = parse_request(&client.frame()).unwrap();
    let server = server(stateful);
    build_reply(&req, &answer(&req, &server).unwrap(), &server)
}

#[test]
fn tcpdump_decodes_an_advertise() {
    let reply = frame(Client::new(1, 0xabcdef).ia_na(7, &[]), true);
    let text = tcpdump(&reply);
    check(
        &text,
        &[
            "fe80::77:79ff:fe76:1.547 > fe80::f816:3eff:fe12:3456.546",
            "[udp sum ok]",
            "dhcp6 advertise (xid=abcdef",
            "(client-ID hwaddr/time type 1 time 706427981 fa163e123456)",
            "(server-ID hwaddr type 1 027779760001)",
            "(IA_NA IAID:7 T1:43200 T2:69120 (IA_ADDR 2001:db8::5 pltime:86400 vltime:86400))",
            "(DNS-server 2001:db8::53 2001:db8::54)",
            "(DNS-search-list openstacklocal.)",
        ],
    );

    let mut broken = reply;
    let last = broken.len() - 1;
    broken[last] ^= 0xff;
    check_complaint(&broken, "bad udp cksum");
}

#[test]
fn tcpdump_decodes_a_stateless_reply() {
    let reply = frame(Client::new(11, 0x10), false);
    let text = tcpdump(&reply);
    check(
        &text,
        &[
            "[udp sum ok]",
            "dhcp6 reply (xid=10 (client-ID",
            "(server-ID hwaddr type 1 027779760001) (DNS-server 2001:db8::53 2001:db8::54) \
             (DNS-search-list openstacklocal.))",
        ],
    );
}
