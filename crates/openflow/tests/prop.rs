//! Property tests: decode(encode(x)) == x for generated messages, and parse(print(flow)) ==
//! flow for generated flows.

mod common;

use common::strategies;
use openflow::flow::Flow;
use openflow::matching::Match;
use openflow::message::Message;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 10000, ..ProptestConfig::default() })]

    #[test]
    fn message_round_trip(msg in strategies::message(), xid in any::<u32>()) {
        let bytes = msg.encode(xid);
        prop_assert_eq!(bytes.len() % 8 == 0 || !matches!(msg, Message::FlowMod(_)), true);
        let (x, back) = Message::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}: {msg:?}")))?;
        prop_assert_eq!(x, xid);
        prop_assert_eq!(back, msg);
    }

    #[test]
    fn flow_text_round_trip(flow in strategies::flow(strategies::text_match())) {
        let text = flow.to_string();
        let back: Flow = text.parse().map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(back, flow, "{}", text);
    }

    #[test]
    fn match_text_round_trip(m in strategies::text_match()) {
        let text = m.to_string();
        let back: Match = text.parse().map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
        prop_assert_eq!(back, m, "{}", text);
    }
}
