//! build_reply(): reply frames read back with the independent parser in `inspect`.

use dhcpv6::{ExtraOption, Request, answer, build_reply, parse_request};

use crate::builder::{
    CLIENT_DUID, CLIENT_MAC, Client, SERVER_DUID, SERVER_MAC, bound, client_ip, ip, server,
};
use crate::inspect::{IaNa, Reply};

fn request(client: &Client) -> Request {
    parse_request(&client.frame()).unwrap()
}

fn reply_to(client: &Client, server: &dhcpv6::Server) -> Reply {
    let req = request(client);
    let answer = answer(&req, server).expect("an answer");
    Reply::parse(&build_reply(&req, &answer, server))
}

/// What every reply has.
fn check_common(reply: &Reply, transaction_id: u32) {
    assert_eq!(reply.eth.dst, CLIENT_MAC);
    assert_eq!(reply.eth.src, SERVER_MAC);
    assert_eq!(
        reply.ip.src,
        ip("fe80::77:79ff:fe76:1"),
        "the server's link-local address"
    );
    assert_eq!(reply.ip.dst, client_ip());
    assert_eq!(reply.ip.hop_limit, 64);
    assert_eq!((reply.udp_src, reply.udp_dst), (547, 546));
    assert!(reply.udp_checksum_ok, "UDP checksum");
    assert_eq!(reply.transaction_id, transaction_id);
    assert_eq!(reply.option(2), Some(&SERVER_DUID[..]));
}

const OPENSTACKLOCAL: &[u8] = b"\x0eopenstacklocal\x00";

#[test]
fn advertise_with_address_and_configuration() {
    let reply = reply_to(&Client::new(1, 0xabcdef).ia_na(7, &[]), &server(true));
    check_common(&reply, 0xabcdef);
    assert_eq!(reply.kind, 2, "Advertise");
    assert_eq!(reply.codes(), [1, 2, 3, 23, 24]);
    assert_eq!(reply.option(1), Some(&CLIENT_DUID[..]));
    assert_eq!(
        reply.ia_nas(),
        vec![IaNa {
            iaid: 7,
            t1: 43_200,
            t2: 69_120,
            addresses: vec![(bound(), 86_400, 86_400)],
            status: None,
        }]
    );
    let dns = [ip("2001:db8::53").octets(), ip("2001:db8::54").octets()].concat();
    assert_eq!(reply.option(23), Some(&dns[..]));
    assert_eq!(reply.option(24), Some(OPENSTACKLOCAL));
}

#[test]
fn rapid_commit_reply() {
    let client = Client::new(1, 5).ia_na(7, &[]).option(14, &[]);
    let reply = reply_to(&client, &server(true));
    check_common(&reply, 5);
    assert_eq!(reply.kind, 7, "Reply");
    assert_eq!(reply.codes(), [1, 2, 14, 3, 23, 24]);
    assert_eq!(reply.option(14), Some(&[][..]));
}

#[test]
fn stateless_advertise_says_no_addresses() {
    let reply = reply_to(&Client::new(1, 5).ia_na(7, &[]), &server(false));
    check_common(&reply, 5);
    assert_eq!(
        reply.ia_nas(),
        vec![IaNa {
            iaid: 7,
            t1: 0,
            t2: 0,
            addresses: Vec::new(),
            status: Some((2, "no addresses available".to_owned())),
        }]
    );
}

#[test]
fn renew_drops_foreign_addresses() {
    let client = Client::new(5, 6)
        .server_id()
        .ia_na(7, &[ip("2001:db8::99")]);
    let reply = reply_to(&client, &server(true));
    check_common(&reply, 6);
    assert_eq!(
        reply.ia_nas()[0].addresses,
        vec![(bound(), 86_400, 86_400), (ip("2001:db8::99"), 0, 0)]
    );
}

#[test]
fn confirm_reply_has_a_status_only() {
    let reply = reply_to(&Client::new(4, 9).ia_na(1, &[bound()]), &server(true));
    check_common(&reply, 9);
    assert_eq!(reply.codes(), [1, 2, 13]);
    assert_eq!(reply.status(), Some((0, "success".to_owned())));
    let reply = reply_to(
        &Client::new(4, 9).ia_na(1, &[ip("2001:db8:9::1")]),
        &server(true),
    );
    assert_eq!(reply.status(), Some((4, "not on link".to_owned())));
}

#[test]
fn anonymous_information_request_and_tagging() {
    let mut client = Client::bare(11, 3);
    client.vlan_tci = Some(0x0123);
    let reply = Reply::parse(&{
        let req = request(&client);
        let server = server(false);
        build_reply(&req, &answer(&req, &server).unwrap(), &server)
    });
    assert_eq!(reply.eth.vlan_tci, Some(0x0123));
    assert_eq!(reply.kind, 7);
    assert_eq!(reply.codes(), [2, 23, 24], "no client identifier to echo");
    assert!(reply.udp_checksum_ok);
}

#[test]
fn extra_options_override_remove_and_add() {
    let mut server = server(true);
    server.extra = vec![
        ExtraOption::parse("dns-server", "[2001:db8::1]").unwrap(),
        ExtraOption::parse("domain-search", "").unwrap(),
        ExtraOption::parse("bootfile-url", "http://[2001:db8::9]/boot.efi").unwrap(),
    ];
    let reply = reply_to(&Client::new(11, 1), &server);
    assert_eq!(reply.codes(), [1, 2, 23, 59]);
    assert_eq!(reply.option(23), Some(&ip("2001:db8::1").octets()[..]));
    assert_eq!(
        reply.option(59),
        Some(&b"http://[2001:db8::9]/boot.efi"[..])
    );
    // Not in replies without configuration.
    let reply = reply_to(&Client::new(4, 9).ia_na(1, &[bound()]), &server);
    assert_eq!(reply.codes(), [1, 2, 13]);
}

#[test]
fn nothing_to_configure() {
    let mut server = server(false);
    server.dns.clear();
    server.domain_search = vec!["bad..name".to_owned()];
    let reply = reply_to(&Client::new(11, 1), &server);
    assert_eq!(reply.codes(), [1, 2]);
}
