//! build_reply(): reply frames read back with the independent parser in `inspect`.

use dhcp::{Ipv4Addr, MessageType, Request, build_reply, parse_request};

use crate::builder::{CLIENT_IP, CLIENT_MAC, Client, SERVER_IP, SERVER_MAC, lease, net};
use crate::inspect::Reply;

const CLIENT_ID: [u8; 7] = [1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn request(client: &Client) -> Request {
    parse_request(&client.frame()).unwrap()
}

/// Headers every reply has, whatever its addressing.
fn check_common(reply: &Reply, req: &Request, kind: MessageType) {
    assert_eq!(reply.eth.src, SERVER_MAC);
    assert_eq!(reply.ip_src, SERVER_IP);
    assert!(reply.ip_checksum_ok(), "IPv4 header checksum");
    assert_eq!(reply.ip_header[8], 64, "TTL");
    assert_eq!((reply.udp_src, reply.udp_dst), (67, 68));
    assert!(reply.udp_checksum_ok, "UDP checksum");
    assert_eq!(reply.op(), 2, "BOOTREPLY");
    assert_eq!(&reply.bootp[1..4], &[1, 6, 0]);
    assert_eq!(reply.xid(), req.xid);
    assert_eq!(reply.flags(), req.flags);
    assert_eq!(reply.giaddr(), req.giaddr);
    assert_eq!(&reply.chaddr()[..6], &CLIENT_MAC);
    assert_eq!(&reply.chaddr()[6..], &[0; 10]);
    assert!(reply.bootp.len() >= 300, "BOOTP padded to 300 bytes");
    assert!(reply.has_end, "end option");
    assert_eq!(reply.option(53), Some(&[kind.code()][..]));
    assert_eq!(reply.option(54), Some(&SERVER_IP.octets()[..]));
}

#[test]
fn offer_to_a_broadcast_discover() {
    let mut client = Client::new(1, 0x1122_3344).option(61, &CLIENT_ID);
    client.flags = 0x8000;
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease()));
    check_common(&reply, &req, MessageType::Offer);
    assert_eq!(reply.eth.dst, [0xff; 6]);
    assert_eq!(reply.ip_dst, Ipv4Addr::BROADCAST);
    assert_eq!(reply.eth.vlan_tci, None);
    assert_eq!(reply.yiaddr(), CLIENT_IP);
    assert_eq!(reply.ciaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        reply.codes(),
        [53, 54, 51, 58, 59, 1, 28, 3, 6, 15, 12, 26, 61]
    );
    assert_eq!(reply.option(51), Some(&86_400u32.to_be_bytes()[..]));
    assert_eq!(reply.option(58), Some(&43_200u32.to_be_bytes()[..]));
    assert_eq!(reply.option(59), Some(&75_600u32.to_be_bytes()[..]));
    assert_eq!(reply.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(reply.option(28), Some(&[10, 0, 0, 255][..]));
    assert_eq!(reply.option(3), Some(&[10, 0, 0, 1][..]));
    assert_eq!(reply.option(6), Some(&[10, 0, 0, 53, 8, 8, 8, 8][..]));
    assert_eq!(reply.option(15), Some(&b"example.org"[..]));
    assert_eq!(reply.option(12), Some(&b"vm-5"[..]));
    assert_eq!(reply.option(26), Some(&1442u16.to_be_bytes()[..]));
    assert_eq!(reply.option(61), Some(&CLIENT_ID[..]));
}

#[test]
fn ack_unicast_to_the_new_address() {
    let client = Client::new(3, 9)
        .option(50, &CLIENT_IP.octets())
        .option(54, &SERVER_IP.octets());
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Ack, &lease()));
    check_common(&reply, &req, MessageType::Ack);
    assert_eq!(reply.eth.dst, CLIENT_MAC);
    assert_eq!(reply.ip_dst, CLIENT_IP);
    assert_eq!(reply.yiaddr(), CLIENT_IP);
    assert_eq!(reply.codes(), [53, 54, 51, 58, 59, 1, 28, 3, 6, 15, 12, 26]);
}

#[test]
fn renewal_ack_goes_to_ciaddr_and_echoes_it() {
    let mut client = Client::new(3, 9);
    client.ciaddr = CLIENT_IP;
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Ack, &lease()));
    check_common(&reply, &req, MessageType::Ack);
    assert_eq!((reply.eth.dst, reply.ip_dst), (CLIENT_MAC, CLIENT_IP));
    assert_eq!(reply.ciaddr(), CLIENT_IP);
    // A client with an address gets unicast there even with the broadcast flag (RFC 2131 4.1).
    client.flags = dhcp::BROADCAST_FLAG;
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Ack, &lease()));
    assert_eq!((reply.eth.dst, reply.ip_dst), (CLIENT_MAC, CLIENT_IP));
}

#[test]
fn nak_is_broadcast_and_minimal() {
    let client = Client::new(3, 5)
        .option(50, &[10, 0, 0, 99])
        .option(61, &CLIENT_ID);
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Nak, &lease()));
    check_common(&reply, &req, MessageType::Nak);
    assert_eq!(reply.eth.dst, [0xff; 6]);
    assert_eq!(reply.ip_dst, Ipv4Addr::BROADCAST);
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.codes(), [53, 54, 61]);
}

#[test]
fn inform_ack_has_no_address_nor_lease_times() {
    let informing = Ipv4Addr::new(10, 0, 0, 77);
    let mut client = Client::new(8, 6);
    client.ciaddr = informing;
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Ack, &lease()));
    check_common(&reply, &req, MessageType::Ack);
    assert_eq!((reply.eth.dst, reply.ip_dst), (CLIENT_MAC, informing));
    assert_eq!(reply.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(reply.ciaddr(), informing);
    assert_eq!(reply.codes(), [53, 54, 1, 28, 3, 6, 15, 12, 26]);
}

#[test]
fn classless_routes_follow_rfc3442() {
    let mut lease = lease();
    lease.routes = vec![
        (net("10.1.0.0/16"), Ipv4Addr::new(10, 0, 0, 254)),
        (net("0.0.0.0/0"), Ipv4Addr::new(10, 0, 0, 1)),
        (net("192.168.1.128/25"), Ipv4Addr::new(10, 0, 0, 253)),
    ];
    let req = request(&Client::new(1, 1));
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    check_common(&reply, &req, MessageType::Offer);
    #[rustfmt::skip]
    let expected = [
        16, 10, 1, 10, 0, 0, 254,
        0, 10, 0, 0, 1,
        25, 192, 168, 1, 128, 10, 0, 0, 253,
    ];
    assert_eq!(reply.option(121), Some(&expected[..]));
    assert_eq!(reply.codes().last(), Some(&121));
}

#[test]
fn default_route_is_added_to_classless_routes() {
    let mut lease = lease();
    lease.routes = vec![(net("172.16.0.0/12"), Ipv4Addr::new(10, 0, 0, 254))];
    lease.subnet = net("10.0.0.0/8");
    let req = request(&Client::new(1, 1));
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    assert_eq!(
        reply.option(121),
        Some(&[12, 172, 16, 10, 0, 0, 254, 0, 10, 0, 0, 1][..])
    );
    assert_eq!(reply.option(1), Some(&[255, 0, 0, 0][..]));
    assert_eq!(reply.option(28), Some(&[10, 255, 255, 255][..]));
}

#[test]
fn optional_options_are_left_out() {
    let mut lease = lease();
    lease.router = None;
    lease.dns.clear();
    lease.mtu = None;
    lease.hostname = None;
    lease.domain = Some(String::new());
    let req = request(&Client::new(1, 1));
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    assert_eq!(reply.codes(), [53, 54, 51, 58, 59, 1, 28]);
}

#[test]
fn long_names_are_truncated_and_long_client_ids_split() {
    let mut lease = lease();
    lease.hostname = Some("h".repeat(300));
    lease.domain = Some("é".repeat(200)); // 400 bytes; cut inside a character is fine for bytes
    let mut req = request(&Client::new(1, 1));
    req.client_id = Some(vec![7; 300]);
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    assert!(reply.udp_checksum_ok && reply.ip_checksum_ok());
    assert_eq!(reply.option(12), Some(&[b'h'; 255][..]));
    assert_eq!(reply.option(15), Some(&"é".repeat(200).as_bytes()[..255]));
    let ids: Vec<&Vec<u8>> = reply
        .options
        .iter()
        .filter(|(code, _)| *code == 61)
        .map(|(_, value)| value)
        .collect();
    assert_eq!(ids, [&vec![7; 255], &vec![7; 45]]);
}

#[test]
fn tagged_requests_get_tagged_replies() {
    let mut client = Client::new(1, 1);
    client.vlan_tci = Some(0x0064);
    let req = request(&client);
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease()));
    check_common(&reply, &req, MessageType::Offer);
    assert_eq!(reply.eth.vlan_tci, Some(0x0064));
}

#[test]
fn odd_lease_times() {
    let mut lease = lease();
    lease.lease_secs = u32::MAX;
    let req = request(&Client::new(1, 1));
    let reply = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    assert_eq!(reply.option(51), Some(&[0xff; 4][..]));
    assert_eq!(reply.option(58), Some(&0x7fff_ffffu32.to_be_bytes()[..]));
    assert_eq!(reply.option(59), Some(&0xdfff_ffffu32.to_be_bytes()[..]));
}
