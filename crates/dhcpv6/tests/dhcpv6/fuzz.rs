//! parse_request never panics: on arbitrary bytes and on valid frames with bytes changed, cut or
//! appended; whatever parses gets an answer that builds.

use dhcpv6::{answer, build_reply, parse_request};
use frame_check::mutations;
use proptest::prelude::*;

use crate::builder::{Client, bound, server};

fn valid_frames() -> Vec<Vec<u8>> {
    let mut tagged = Client::new(3, 2)
        .server_id()
        .ia_na(1, &[bound()])
        .option(6, &[0, 23]);
    tagged.vlan_tci = Some(100);
    vec![
        Client::new(1, 1).ia_na(7, &[]).option(14, &[]).frame(),
        tagged.frame(),
        Client::bare(11, 3).frame(),
    ]
}

fn exercise(frame: &[u8]) {
    if let Ok(req) = parse_request(frame) {
        for stateful in [true, false] {
            let server = server(stateful);
            if let Some(answer) = answer(&req, &server) {
                crate::inspect::Reply::parse(&build_reply(&req, &answer, &server));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn arbitrary_bytes_do_not_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_frames_do_not_panic(
        which in 0usize..3,
        mutation in mutations(0..8, 0..16),
        past_headers in any::<bool>(),
    ) {
        let mut frame = valid_frames().swap_remove(which);
        // Changes after Ethernet, IPv6 and UDP reach the message parser.
        let first = if past_headers { 66.min(frame.len() - 1) } else { 0 };
        mutation.apply(&mut frame, first);
        exercise(&frame);
    }

    /// Random option lists behind valid headers.
    #[test]
    fn random_options_do_not_panic(
        kind in 1u8..=11,
        options in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        let mut client = Client::bare(kind, 1);
        client.options = options;
        exercise(&client.frame());
    }

    #[test]
    fn extra_options_never_panic(name in ".{0,16}|[0-9]{1,5}", value in ".{0,40}") {
        if let Ok(extra) = dhcpv6::ExtraOption::parse(&name, &value) {
            let mut server = server(true);
            server.extra = vec![extra];
            let req = parse_request(&Client::new(11, 1).frame()).unwrap();
            let answer = answer(&req, &server).unwrap();
            crate::inspect::Reply::parse(&build_reply(&req, &answer, &server));
        }
    }
}
