//! parse_request on hand-built client frames: every field, and each reason for refusal.

use dhcp::{DhcpError, Ipv4Addr, MessageType, Request, parse_request};

use crate::builder::{CLIENT_IP, CLIENT_MAC, Client, SERVER_IP};

/// A DISCOVER as a typical Linux client sends it: client id, parameter request list, max size,
/// hostname, broadcast flag.
fn discover() -> Client {
    let mut client = Client::new(1, 0x3903_f326)
        .option(61, &[1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56])
        .option(55, &[1, 3, 6, 12, 15, 26, 28, 121])
        .option(57, &[0x05, 0xc0])
        .option(12, b"vm-5");
    client.flags = 0x8000;
    client
}

#[test]
fn discover_is_parsed() {
    let req = parse_request(&discover().frame()).unwrap();
    assert_eq!(
        req,
        Request {
            kind: MessageType::Discover,
            xid: 0x3903_f326,
            flags: 0x8000,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: CLIENT_MAC,
            eth_src: CLIENT_MAC,
            vlan_tci: None,
            requested_ip: None,
            server_id: None,
            client_id: Some(vec![1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
            ipxe: false,
        }
    );
}

#[test]
fn request_with_vlan_tag_and_ip_options_is_parsed() {
    let mut client = Client::new(3, 0xdead_beef)
        .option(50, &CLIENT_IP.octets())
        .option(54, &SERVER_IP.octets())
        .option(61, &[0, b'h', b'o', b's', b't']);
    client.vlan_tci = Some(0x6064); // PCP 3, VLAN 100
    client.ip_options = vec![0x94, 0x04, 0x00, 0x00]; // Router Alert, IHL 6
    client.giaddr = Ipv4Addr::new(192, 0, 2, 1);
    client.eth_src = [0x02, 0, 0, 0, 0, 0x99];
    let req = parse_request(&client.frame()).unwrap();
    assert_eq!(
        req,
        Request {
            kind: MessageType::Request,
            xid: 0xdead_beef,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::new(192, 0, 2, 1),
            chaddr: CLIENT_MAC,
            eth_src: [0x02, 0, 0, 0, 0, 0x99],
            vlan_tci: Some(0x6064),
            requested_ip: Some(CLIENT_IP),
            server_id: Some(SERVER_IP),
            client_id: Some(b"\0host".to_vec()),
            ipxe: false,
        }
    );
}

#[test]
fn renewal_and_every_message_type() {
    let mut client = Client::new(3, 7);
    client.ciaddr = CLIENT_IP;
    let req = parse_request(&client.frame()).unwrap();
    assert_eq!(req.ciaddr, CLIENT_IP);
    assert_eq!(
        (req.requested_ip, req.server_id, req.client_id),
        (None, None, None)
    );
    for code in 1..=8 {
        let req = parse_request(&Client::new(code, 7).frame()).unwrap();
        assert_eq!(req.kind, MessageType::from_code(code).unwrap());
        assert_eq!(req.kind.code(), code);
    }
}

#[test]
fn ethernet_padding_after_the_datagram_is_ignored() {
    let mut frame = discover().frame();
    frame.extend_from_slice(&[0xee; 20]);
    assert_eq!(parse_request(&frame).unwrap().kind, MessageType::Discover);
}

#[test]
fn overloaded_file_and_sname_are_read() {
    let mut client = Client::new(3, 1);
    client.options = vec![52, 1, 3]; // no message type in the options field itself
    client.file[..3].copy_from_slice(&[53, 1, 3]);
    client.sname[..7].copy_from_slice(&[54, 4, 10, 0, 0, 2, 255]);
    let req = parse_request(&client.frame()).unwrap();
    assert_eq!(req.kind, MessageType::Request);
    assert_eq!(req.server_id, Some(SERVER_IP));
}

#[test]
fn split_client_id_is_concatenated() {
    let req = parse_request(
        &Client::new(1, 1)
            .option(61, &[1, 2])
            .option(61, &[3])
            .frame(),
    );
    assert_eq!(req.unwrap().client_id, Some(vec![1, 2, 3]));
}

#[test]
fn options_after_end_are_ignored() {
    let mut client = Client::new(1, 1);
    client.options.extend_from_slice(&[255, 50, 4, 1, 2, 3, 4]);
    assert_eq!(parse_request(&client.frame()).unwrap().requested_ip, None);
}

/// Replaces the UDP payload of a frame built from `client` with `payload`, fixing the lengths.
fn with_payload(client: &Client, payload: &[u8]) -> Vec<u8> {
    let mut frame = client.frame();
    frame.truncate(14 + 20 + 8);
    frame.extend_from_slice(payload);
    let ip_len = (20 + 8 + payload.len()) as u16;
    frame[16..18].copy_from_slice(&ip_len.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let sum = frame_check::checksum(&[&frame[14..34]]);
    frame[24..26].copy_from_slice(&sum.to_be_bytes());
    frame[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    frame
}

#[test]
fn malformed_frames_are_refused() {
    let good = discover();
    let frame = good.frame();
    let err = |frame: &[u8]| parse_request(frame).unwrap_err();

    assert_eq!(err(&frame[..10]), DhcpError::TooShort("Ethernet header"));
    assert_eq!(err(&frame[..30]), DhcpError::TooShort("IPv4 header"));
    assert_eq!(err(&frame[..200]), DhcpError::TooShort("IPv4 datagram"));

    let mut arp = frame.clone();
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(err(&arp), DhcpError::NotIpv4(0x0806));

    let mut ipv6_version = frame.clone();
    ipv6_version[14] = 0x65;
    assert_eq!(
        err(&ipv6_version),
        DhcpError::BadIpHeader("version is not 4")
    );

    let mut bad_sum = frame.clone();
    bad_sum[14 + 8] = 1; // TTL changed, checksum not
    assert_eq!(err(&bad_sum), DhcpError::BadIpChecksum);

    let mut relay = good.clone();
    relay.src_port = 67;
    assert_eq!(
        err(&relay.frame()),
        DhcpError::WrongPorts { src: 67, dst: 67 }
    );

    let mut reply = good.clone();
    reply.op = 2;
    assert_eq!(err(&reply.frame()), DhcpError::NotBootRequest(2));

    let mut bad_cookie = good.bootp();
    bad_cookie[239] = 0;
    assert_eq!(
        err(&with_payload(&good, &bad_cookie)),
        DhcpError::BadMagicCookie([99, 130, 83, 0])
    );

    let mut long_hw = good.bootp();
    long_hw[2] = 16;
    assert_eq!(
        err(&with_payload(&good, &long_hw)),
        DhcpError::UnsupportedHardware { htype: 1, hlen: 16 }
    );

    assert_eq!(
        err(&with_payload(&good, &good.bootp()[..239])),
        DhcpError::TooShort("BOOTP message")
    );

    let mut no_type = good.clone();
    no_type.options = vec![12, 1, b'x'];
    assert_eq!(err(&no_type.frame()), DhcpError::NoMessageType);

    let mut unknown_type = good.clone();
    unknown_type.options = vec![53, 1, 13];
    assert_eq!(
        err(&unknown_type.frame()),
        DhcpError::UnknownMessageType(13)
    );

    let bad_requested = Client::new(3, 1).option(50, &[10, 0, 0]);
    assert_eq!(
        err(&bad_requested.frame()),
        DhcpError::BadOptionLength { code: 50, len: 3 }
    );

    let short_client_id = Client::new(1, 1).option(61, &[1]);
    assert_eq!(
        err(&short_client_id.frame()),
        DhcpError::BadOptionLength { code: 61, len: 1 }
    );

    // An option whose length runs past the end of the message.
    let mut msg = good.bootp();
    msg.truncate(240);
    msg.extend_from_slice(&[53, 1, 1, 12, 10, b'a', b'b']);
    assert_eq!(
        err(&with_payload(&good, &msg)),
        DhcpError::TruncatedOption(12)
    );
    // And one whose length byte is missing.
    msg.truncate(243);
    msg.push(12);
    assert_eq!(
        err(&with_payload(&good, &msg)),
        DhcpError::TruncatedOption(12)
    );
}

#[test]
fn errors_say_what_is_wrong() {
    assert_eq!(
        DhcpError::WrongPorts { src: 67, dst: 67 }.to_string(),
        "not UDP 68 -> 67 (ports 67 -> 67)"
    );
    assert_eq!(
        DhcpError::BadMagicCookie([1, 2, 3, 4]).to_string(),
        "bad magic cookie [01, 02, 03, 04]"
    );
}
