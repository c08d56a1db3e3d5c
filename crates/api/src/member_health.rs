//! Members' health, as the agents' health checks find it: each member's own chassis probes it and
//! reports `ONLINE` or `ERROR`, which the server keeps in the member's internal `_health` field.
//! The Octavia API shows it as the member's `operating_status` (while its pool has a monitor), and
//! the pipeline takes a member found failing out of every chassis' group.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use model::lbaas::MEMBER;
use model::validate::echo;
use serde::Deserialize;
use serde_json::json;

use crate::Api;
use crate::chassis::{admin, reply};
use crate::error::ApiError;
use crate::limits::RequestBody;
use crate::repo::{Attempts, Plan};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Report {
    health: Health,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum Health {
    #[serde(rename = "ONLINE")]
    Online,
    #[serde(rename = "ERROR")]
    Error,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Health::Online => "ONLINE",
            Health::Error => "ERROR",
        }
    }
}

/// `PUT /wyvern/v1/members/<id>/health` with `{"health": "ONLINE" | "ERROR"}`: an agent's verdict
/// on a member. 404 if there is no such member; nothing is written when the verdict is the one
/// stored already.
pub async fn report(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            admin(&api, &headers).await?;
            let report: Report = serde_json::from_slice(&body).map_err(|e| {
                ApiError::bad_request(format!("Malformed member health report: {e}"))
            })?;
            let health = report.health.as_str();
            let mut attempts = Attempts::new();
            loop {
                attempts.begin()?;
                let stored = api
                    .db
                    .load(&MEMBER, &id)
                    .await?
                    .ok_or_else(|| not_found(&id))?;
                let answer = json!({"member": {"id": id, "health": health}});
                if stored.obj.get("_health").and_then(|h| h.as_str()) == Some(health) {
                    return Ok(answer);
                }
                let mut member = stored.obj.clone();
                member.insert("_health".into(), health.into());
                let mut plan = Plan::default();
                // Not a change of the member's attributes: written as it is (no `updated_at`).
                plan.put_raw(&MEMBER, &stored, &member);
                if api.db.commit(plan).await? {
                    return Ok(answer);
                }
            }
        }
        .await,
    )
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("MemberNotFound", format!("Member {} not found.", echo(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_online_or_error() {
        let r: Report = serde_json::from_str(r#"{"health": "ERROR"}"#).unwrap();
        assert!(matches!(r.health, Health::Error));
        for bad in [
            r#"{"health": "OFFLINE"}"#,
            r#"{"health": "online"}"#,
            r#"{}"#,
            r#"{"health": "ONLINE", "x": 1}"#,
        ] {
            assert!(serde_json::from_str::<Report>(bad).is_err(), "{bad}");
        }
    }
}
