//! Fixtures the pipeline's simulator tests share.

use pipeline::{Input, Pipeline};
use serde_json::json;

/// The id of a security group that admits everything, both ways, IPv4 and IPv6.
pub const OPEN_GROUP: &str = "0e000000-0000-4000-8000-00000000000e";

/// Adds [`OPEN_GROUP`] and its four rules.
pub fn add_open_group(p: &mut Pipeline) {
    p.apply(Input::Object(
        format!("/r/security_groups/{OPEN_GROUP}"),
        Some(json!({"id": OPEN_GROUP, "name": "open", "stateful": true})),
    ));
    for (i, (direction, ethertype)) in [
        ("ingress", "IPv4"),
        ("ingress", "IPv6"),
        ("egress", "IPv4"),
        ("egress", "IPv6"),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("0f00000{i}-0000-4000-8000-00000000000{i}");
        p.apply(Input::Object(
            format!("/r/security_group_rules/{id}"),
            Some(
                json!({"id": id, "security_group_id": OPEN_GROUP, "direction": direction,
                "ethertype": ethertype, "protocol": null}),
            ),
        ));
    }
}
