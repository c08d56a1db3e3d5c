//! A port's extra DHCP options in replies: overrides, additions, removals, `siaddr` and the boot
//! fields, the `ipxe` tag.

use dhcp::{ExtraOption, Ipv4Addr, MessageType, build_reply, parse_request};

use crate::builder::{Client, lease};
use crate::inspect::Reply;

fn extra(list: &[(&str, &str)]) -> Vec<ExtraOption> {
    list.iter()
        .map(|(name, value)| ExtraOption::parse(name, value).unwrap())
        .collect()
}

fn offer(client: &Client, extras: &[(&str, &str)]) -> Reply {
    let mut lease = lease();
    lease.extra = extra(extras);
    let req = parse_request(&client.frame()).unwrap();
    Reply::parse(&build_reply(&req, MessageType::Offer, &lease))
}

/// A NUL-terminated field's text.
fn field(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.iter().position(|b| *b == 0).unwrap()]
}

#[test]
fn extras_replace_remove_and_add_options() {
    let reply = offer(
        &Client::new(1, 1),
        &[
            ("router", "10.0.0.254"),
            ("dns-server", ""),
            ("ntp-server", "192.0.2.123"),
            ("mtu", "1400"),
        ],
    );
    assert_eq!(
        reply.codes(),
        [53, 54, 51, 58, 59, 1, 28, 3, 15, 12, 26, 42],
        "in place, removed, added at the end"
    );
    assert_eq!(reply.option(3), Some(&[10, 0, 0, 254][..]));
    assert_eq!(reply.option(26), Some(&1400u16.to_be_bytes()[..]));
    assert_eq!(reply.option(42), Some(&[192, 0, 2, 123][..]));
    assert!(reply.udp_checksum_ok && reply.ip_checksum_ok());
}

#[test]
fn later_extras_win() {
    let reply = offer(
        &Client::new(1, 1),
        &[
            ("mtu", "1400"),
            ("26", "1300"),
            ("ntp-server", ""),
            ("ntp-server", "192.0.2.1"),
        ],
    );
    assert_eq!(reply.option(26), Some(&1300u16.to_be_bytes()[..]));
    assert_eq!(reply.option(42), Some(&[192, 0, 2, 1][..]));
}

#[test]
fn network_boot_sets_siaddr_file_and_sname() {
    let reply = offer(
        &Client::new(1, 1),
        &[
            ("server-ip-address", "192.0.2.9"),
            ("tftp-server", "192.0.2.9"),
            ("bootfile-name", "pxelinux.0"),
            ("150", "192.0.2.9"),
        ],
    );
    assert_eq!(&reply.bootp[20..24], &[192, 0, 2, 9], "siaddr");
    assert_eq!(field(&reply.bootp[44..108]), b"192.0.2.9", "sname");
    assert_eq!(field(&reply.bootp[108..236]), b"pxelinux.0", "file");
    assert_eq!(reply.option(66), Some(&b"192.0.2.9"[..]));
    assert_eq!(reply.option(67), Some(&b"pxelinux.0"[..]));
    assert_eq!(reply.option(150), Some(&[192, 0, 2, 9][..]));

    // A name too long for the field goes in the option only.
    let long = "x".repeat(128);
    let reply = offer(&Client::new(1, 1), &[("bootfile-name", &long)]);
    assert_eq!(&reply.bootp[108..236], &[0; 128][..]);
    assert_eq!(reply.option(67), Some(long.as_bytes()));
    // Without extras, the fields stay empty.
    let plain = offer(&Client::new(1, 1), &[]);
    assert_eq!(&plain.bootp[20..24], &[0; 4]);
    assert_eq!(&plain.bootp[44..236], &[0; 192][..]);
}

#[test]
fn ipxe_tag_follows_option_175() {
    let extras = [
        ("tag:!ipxe,bootfile-name", "undionly.kpxe"),
        ("tag:ipxe,bootfile-name", "http://192.0.2.9/boot.ipxe"),
        ("bootfile-name", "fallback"),
    ];
    let pxe_rom = Client::new(1, 1);
    assert!(!parse_request(&pxe_rom.frame()).unwrap().ipxe);
    let reply = offer(&pxe_rom, &extras);
    assert_eq!(reply.option(67), Some(&b"undionly.kpxe"[..]));

    let ipxe = Client::new(1, 1).option(175, &[0xb1, 1, 1]);
    assert!(parse_request(&ipxe.frame()).unwrap().ipxe);
    let reply = offer(&ipxe, &extras);
    assert_eq!(reply.option(67), Some(&b"http://192.0.2.9/boot.ipxe"[..]));
}

#[test]
fn nak_and_inform_ignore_what_they_must() {
    let mut lease = lease();
    lease.extra = extra(&[
        ("lease-time", "600"),
        ("T1", "300"),
        ("server-ip-address", "192.0.2.9"),
        ("ntp-server", "192.0.2.1"),
    ]);
    let req = parse_request(&Client::new(3, 5).option(50, &[10, 0, 0, 99]).frame()).unwrap();
    let nak = Reply::parse(&build_reply(&req, MessageType::Nak, &lease));
    assert_eq!(nak.codes(), [53, 54]);
    assert_eq!(&nak.bootp[20..24], &[0; 4]);

    let mut inform = Client::new(8, 6);
    inform.ciaddr = Ipv4Addr::new(10, 0, 0, 77);
    let req = parse_request(&inform.frame()).unwrap();
    let ack = Reply::parse(&build_reply(&req, MessageType::Ack, &lease));
    assert_eq!(ack.codes(), [53, 54, 1, 28, 3, 6, 15, 12, 26, 42]);

    let req = parse_request(&Client::new(1, 1).frame()).unwrap();
    let offer = Reply::parse(&build_reply(&req, MessageType::Offer, &lease));
    assert_eq!(offer.option(51), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(offer.option(58), Some(&300u32.to_be_bytes()[..]));
}
