//! The parsers never panic: on arbitrary bytes and on valid frames with bytes changed, cut or
//! appended.

use frame_check::mutations;
use ndp::{
    parse_ipv6, parse_neighbor_advertisement, parse_neighbor_solicitation,
    parse_router_solicitation,
};
use proptest::prelude::*;

use crate::builder::{ip, ns, rs};

fn valid_frames() -> Vec<Vec<u8>> {
    let mut tagged = ns(ip("2001:db8::1"), ip("2001:db8::2"));
    tagged.eth.vlan_tci = Some(7);
    vec![
        rs().frame(),
        ns(ip("fe80::1"), ip("2001:db8::2")).frame(),
        tagged.frame(),
        ndp::unsolicited_advertisement(ip("2001:db8::2"), [2, 0, 0, 0, 0, 1], false),
    ]
}

fn parse_all(frame: &[u8]) {
    let _ = parse_ipv6(frame);
    let _ = parse_router_solicitation(frame);
    let _ = parse_neighbor_solicitation(frame);
    let _ = parse_neighbor_advertisement(frame);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        parse_all(&bytes);
    }

    #[test]
    fn mutated_frames_do_not_panic(
        which in 0usize..4,
        mutation in mutations(0..6, 0..24),
    ) {
        let mut frame = valid_frames().swap_remove(which);
        mutation.apply(&mut frame, 0);
        parse_all(&frame);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    /// Random message bodies behind a correct checksum and the right type reach the option and
    /// field checks.
    #[test]
    fn random_messages_with_good_checksums_do_not_panic(
        solicit_router in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..80),
        from_unspecified in any::<bool>(),
    ) {
        let mut client = if solicit_router { rs() } else { ns(ip("fe80::1"), ip("2001:db8::2")) };
        let kind = client.message[0];
        client.message = vec![kind, 0, 0, 0];
        client.message.extend_from_slice(&body);
        if from_unspecified {
            client.ip.src = ip("::");
        }
        parse_all(&client.frame());
    }
}
