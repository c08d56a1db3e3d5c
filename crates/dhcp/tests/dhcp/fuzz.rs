//! parse_request never panics: on arbitrary bytes and on valid frames with bytes changed, cut or
//! appended.

use dhcp::parse_request;
use frame_check::mutations;
use proptest::prelude::*;

use crate::builder::{CLIENT_IP, Client, SERVER_IP};

fn valid_frames() -> Vec<Vec<u8>> {
    let mut tagged = Client::new(3, 2)
        .option(50, &CLIENT_IP.octets())
        .option(54, &SERVER_IP.octets())
        .option(61, &[1, 2, 3]);
    tagged.vlan_tci = Some(100);
    tagged.ip_options = vec![1, 1, 1, 0];
    let mut overloaded = Client::new(1, 3);
    overloaded.options = vec![52, 1, 3];
    overloaded.file[..6].copy_from_slice(&[53, 1, 1, 12, 1, b'x']);
    overloaded.sname[..4].copy_from_slice(&[61, 2, 0, 1]);
    vec![
        Client::new(1, 1).option(12, b"vm").frame(),
        tagged.frame(),
        overloaded.frame(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = parse_request(&bytes);
    }

    #[test]
    fn mutated_frames_do_not_panic(
        which in 0usize..3,
        mutation in mutations(0..8, 0..16),
        past_ip_header in any::<bool>(),
    ) {
        let mut frame = valid_frames().swap_remove(which);
        // Changes after the headers keep the IPv4 checksum valid, so deeper code is reached.
        let first = if past_ip_header { 42 } else { 0 };
        mutation.apply(&mut frame, first);
        let _ = parse_request(&frame);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Extra options from users: any name and value is either used or refused, never a panic;
    /// whatever is used goes into a reply that still parses.
    #[test]
    fn extra_options_never_panic(
        name in prop_oneof![
            ".{0,20}",
            "(tag:!?ipxe,)?(option:)?[0-9]{1,3}",
            "(router|dns-server|domain-search|classless-static-route|sip-server|mtu|server-ip-address)",
        ],
        value in prop_oneof![".{0,40}", "[0-9.,/: ]{0,40}", "[a-z.,]{0,40}"],
    ) {
        if let Ok(extra) = dhcp::ExtraOption::parse(&name, &value) {
            let mut lease = crate::builder::lease();
            lease.extra = vec![extra];
            let req = parse_request(&Client::new(1, 1).frame()).unwrap();
            let frame = dhcp::build_reply(&req, dhcp::MessageType::Offer, &lease);
            crate::inspect::Reply::parse(&frame);
        }
    }
}
