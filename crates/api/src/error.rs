//! API errors, rendered as Neutron's `{"NeutronError": {"type", "message", "detail"}}` bodies.
//!
//! Messages quote a client's values cut to `model::validate::MAX_ECHO` characters
//! (`model::validate::echo`), and a whole message is cut to [`MAX_MESSAGE`] characters, so that no
//! answer repeats a large input back.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use model::validate::{clip, echo};
use serde_json::json;
use store::StoreError;

/// An error answer: HTTP status, Neutron's error type name, and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: String,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Most characters of an error message; longer ones are cut.
pub const MAX_MESSAGE: usize = 1024;

impl ApiError {
    pub fn new(status: StatusCode, kind: impl Into<String>, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self {
            status,
            kind: kind.into(),
            message: clip(&message, MAX_MESSAGE).into_owned(),
        }
    }
    /// 400 with the generic `HTTPBadRequest` type (malformed or invalid attribute values).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "HTTPBadRequest", message)
    }
    /// 400 `InvalidInput`: "Invalid input for operation: ...".
    pub fn invalid_input(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidInput",
            format!("Invalid input for operation: {reason}."),
        )
    }
    /// 400 with a specific Neutron type.
    pub fn bad(kind: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, message)
    }
    pub fn not_found(kind: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, kind, message)
    }
    /// 404 `HTTPNotFound`: no such path (collection, sub-resource or action), as Neutron's router
    /// answers it.
    pub fn no_such_resource() -> Self {
        Self::not_found("HTTPNotFound", "The resource could not be found.")
    }
    pub fn conflict(kind: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, message)
    }
    /// 500 `InternalError`: what the server holds is not what it wrote (a corrupt record).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }
    /// 403 `HTTPForbidden` (Wyvern's own APIs; the Neutron API answers [`ApiError::policy`]).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "HTTPForbidden", message)
    }
    /// 403 `PolicyNotAuthorized`: the caller's roles do not allow `rule` (e.g. `update_network`).
    pub fn policy(rule: &str) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "PolicyNotAuthorized",
            format!("rule:{rule} is disallowed by policy"),
        )
    }
    /// The `<Kind>NotFound` error for an unknown id.
    pub fn object_not_found(error_name: &str, singular: &str, id: &str) -> Self {
        if let Some(message) = crate::sfc::not_found_message(error_name, id) {
            return Self::not_found(&format!("{error_name}NotFound"), message);
        }
        let noun = match error_name {
            "FloatingIP" => "Floating IP",
            "AddressGroup" => "Address group",
            "SecurityGroup" => "Security group",
            "SecurityGroupRule" => "Security group rule",
            other => other,
        };
        let _ = singular;
        Self::not_found(
            &format!("{error_name}NotFound"),
            format!("{noun} {} could not be found.", echo(id)),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if let StoreError::TxnTooLarge(why) = &e {
            return Self::new(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "The request needs more writes in one transaction than the store accepts \
                     ({why}); send fewer objects per bulk request, or raise etcd's --max-txn-ops."
                ),
            );
        }
        tracing::error!("store error: {e}");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            format!("The northbound store is unavailable: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"NeutronError": {"type": self.kind, "message": self.message, "detail": ""}});
        (self.status, axum::Json(body)).into_response()
    }
}
