//! parse_request on hand-built client frames: every field, and each reason for refusal.

use dhcpv6::{Dhcpv6Error, Ia, IaKind, MessageType, Request, parse_request};

use crate::builder::{CLIENT_DUID, CLIENT_MAC, Client, SERVER_DUID, bound, client_ip, ip};

#[test]
fn a_solicit_is_parsed() {
    let client = Client::new(1, 0x00ab_cdef)
        .ia_na(0x0102_0304, &[])
        .option(6, &[0, 23, 0, 24])
        .option(14, &[]);
    assert_eq!(
        parse_request(&client.frame()),
        Ok(Request {
            kind: MessageType::Solicit,
            transaction_id: 0x00ab_cdef,
            eth_src: CLIENT_MAC,
            vlan_tci: None,
            src: client_ip(),
            client_id: Some(CLIENT_DUID.to_vec()),
            server_id: None,
            ias: vec![Ia {
                kind: IaKind::Na,
                iaid: 0x0102_0304,
                addresses: Vec::new(),
            }],
            rapid_commit: true,
            requested_options: vec![23, 24],
        })
    );
}

#[test]
fn a_tagged_request_with_every_kind_of_ia_is_parsed() {
    let mut ia_ta = 9u32.to_be_bytes().to_vec();
    ia_ta.extend(crate::builder::iaaddr(ip("2001:db8::99")));
    let mut ia_pd = 10u32.to_be_bytes().to_vec();
    ia_pd.extend_from_slice(&[0; 8]);
    let mut client = Client::new(3, 7)
        .server_id()
        .ia_na(8, &[bound(), ip("2001:db8::6")])
        .option(4, &ia_ta)
        .option(25, &ia_pd)
        .option(1, &[0, 2, 0, 0, 0, 9, 1]); // a second client id: the first counts
    client.vlan_tci = Some(0x6064);
    let req = parse_request(&client.frame()).unwrap();
    assert_eq!(req.kind, MessageType::Request);
    assert_eq!(req.vlan_tci, Some(0x6064));
    assert_eq!(req.client_id.as_deref(), Some(&CLIENT_DUID[..]));
    assert_eq!(req.server_id.as_deref(), Some(&SERVER_DUID[..]));
    assert_eq!(
        req.ias,
        vec![
            Ia {
                kind: IaKind::Na,
                iaid: 8,
                addresses: vec![bound(), ip("2001:db8::6")],
            },
            Ia {
                kind: IaKind::Ta,
                iaid: 9,
                addresses: vec![ip("2001:db8::99")],
            },
            Ia {
                kind: IaKind::Pd,
                iaid: 10,
                addresses: Vec::new(),
            },
        ]
    );
    assert!(!req.rapid_commit);
}

#[test]
fn every_message_type() {
    for code in 1..=11 {
        let req = parse_request(&Client::new(code, 1).frame()).unwrap();
        assert_eq!(req.kind.code(), code);
        assert_eq!(MessageType::from_code(code), Some(req.kind));
    }
}

#[test]
fn refusals() {
    let check = |client: Client, want: Dhcpv6Error| {
        assert_eq!(parse_request(&client.frame()), Err(want));
    };
    check(Client::new(12, 1), Dhcpv6Error::Relayed(12));
    check(Client::new(13, 1), Dhcpv6Error::Relayed(13));
    check(Client::new(0, 1), Dhcpv6Error::UnknownMessageType(0));
    check(Client::new(36, 1), Dhcpv6Error::UnknownMessageType(36));
    let mut c = Client::new(1, 1);
    c.src_port = 547;
    check(c, Dhcpv6Error::WrongPorts { src: 547, dst: 547 });
    let mut c = Client::new(1, 1);
    c.next_header = 58;
    check(c, Dhcpv6Error::NotUdp(58));
    let mut c = Client::new(1, 1);
    c.src = ip("::");
    check(c, Dhcpv6Error::BadSource(ip("::")));
    let mut c = Client::new(1, 1);
    c.src = ip("ff02::1");
    check(c, Dhcpv6Error::BadSource(ip("ff02::1")));
    check(
        Client::bare(1, 1).option(1, &[0, 3]),
        Dhcpv6Error::BadOptionLength { code: 1, len: 2 },
    );
    check(
        Client::new(3, 1).option(2, &[0; 131]),
        Dhcpv6Error::BadOptionLength { code: 2, len: 131 },
    );
    check(
        Client::new(1, 1).option(3, &[0; 11]),
        Dhcpv6Error::BadOptionLength { code: 3, len: 11 },
    );
    check(
        Client::new(1, 1).option(4, &[0; 3]),
        Dhcpv6Error::BadOptionLength { code: 4, len: 3 },
    );
    let mut short_addr = vec![0; 12];
    short_addr.extend(crate::builder::option(5, &[0; 20]));
    check(
        Client::new(1, 1).option(3, &short_addr),
        Dhcpv6Error::BadOptionLength { code: 5, len: 20 },
    );
    check(
        Client::new(1, 1).option(6, &[0, 23, 0]),
        Dhcpv6Error::BadOptionLength { code: 6, len: 3 },
    );
    let mut truncated = Client::new(1, 1);
    truncated.options.extend_from_slice(&[0, 23, 0, 16, 1]);
    check(truncated, Dhcpv6Error::TruncatedOption(Some(23)));

    let good = Client::new(1, 1).frame();
    assert_eq!(
        parse_request(&good[..14 + 40 + 8 + 3]),
        Err(Dhcpv6Error::Frame(dhcpv6::FrameError::BadPayloadLength {
            declared: good.len() - 54,
            available: 11
        }))
    );
    let mut udp_len = good.clone();
    udp_len[54 + 4..54 + 6].copy_from_slice(&7u16.to_be_bytes());
    assert_eq!(parse_request(&udp_len), Err(Dhcpv6Error::BadUdpLength(7)));
    let mut short = good.clone();
    short[54 + 4..54 + 6].copy_from_slice(&11u16.to_be_bytes());
    assert_eq!(
        parse_request(&short),
        Err(Dhcpv6Error::TooShort("DHCPv6 message"))
    );
    let mut v4 = good;
    v4[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(
        parse_request(&v4),
        Err(Dhcpv6Error::Frame(dhcpv6::FrameError::NotIpv6(0x0800)))
    );
}
