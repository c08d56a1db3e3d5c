//! What one client may make the server hold: the [`Limits`] of the configuration, and request bodies
//! read within them ([`RequestBody`]).
//!
//! A body larger than `max_body_bytes` is refused with 413. The rest of it is read and dropped
//! first (up to [`DRAIN_FACTOR`] times the limit), so that a client still sending it gets the answer
//! instead of a reset connection, as nginx's lingering close does; a client that declared a longer
//! body, or waits for `100 Continue`, is answered at once. A body that is not JSON (a `Content-Type`
//! other than `application/json`, parameters such as `charset` allowed) is 415 without being read;
//! a body that does not arrive within `idle_timeout` is 408. A missing `Content-Type` is taken as
//! JSON, as Neutron takes it. Each of these answers is a `NeutronError`. The connection limits are
//! applied where connections are served (`connections.rs`).

use std::time::Duration;

use axum::body::{Bytes, HttpBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use futures::StreamExt;
use serde::{Deserialize, Deserializer};

use crate::Api;
use crate::error::ApiError;

/// Limits on requests and connections (`"limits"` in the server's configuration file; durations
/// are written as `"10s"`, `"500ms"`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// The largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// How many connections are served at once; further clients wait in the listen backlog until a
    /// connection ends. `None`: the process's file descriptor limit less [`RESERVED_FDS`].
    pub max_connections: Option<usize>,
    /// How long a connection may take to send a complete request head, counted from when it opened
    /// or its previous answer was sent: so also how long an idle keep-alive connection stays open.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a request may stall: its body must arrive within this time (else 408), and an answer
    /// the client reads nothing of for this long ends the connection.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_connections: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// How much of a body over the limit is read (and dropped) before the 413, in multiples of the limit.
pub const DRAIN_FACTOR: usize = 4;

/// File descriptors left for everything but client connections (store, etcd connections, logs)
/// when the connection cap is derived from the descriptor limit.
pub const RESERVED_FDS: u64 = 64;

/// The fewest connections a derived cap allows, however low the descriptor limit.
const MIN_CONNECTIONS: u64 = 16;

impl Limits {
    /// The connection cap: the configured one, or one derived from the descriptor limit.
    pub fn connection_cap(&self) -> usize {
        self.max_connections
            .unwrap_or_else(|| cap_for_fd_limit(fd_limit()))
    }
}

/// The connections a process with `limit` file descriptors serves at once.
fn cap_for_fd_limit(limit: u64) -> usize {
    let cap = limit.saturating_sub(RESERVED_FDS).max(MIN_CONNECTIONS);
    usize::try_from(cap).unwrap_or(usize::MAX).min(1 << 20)
}

/// The process's soft limit on open file descriptors.
fn fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        1024
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A request body read within the [`Limits`]: not larger than `max_body_bytes`, JSON by its media
/// type, complete within `idle_timeout`. Empty when the request has none.
pub struct RequestBody(pub Bytes);

impl FromRequest<Api> for RequestBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, api: &Api) -> Result<Self, ApiError> {
        let limits = &api.config.limits;
        let (parts, body) = req.into_parts();
        if body.is_end_stream() {
            return Ok(Self(Bytes::new()));
        }
        check_media_type(&parts.headers)?;
        let max = limits.max_body_bytes;
        let drained_at_most = max.saturating_mul(DRAIN_FACTOR);
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let waits_to_send = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if declared.is_some_and(|n| n > drained_at_most || (n > max && waits_to_send)) {
            return Err(too_large(max));
        }
        let mut chunks = body.into_data_stream();
        let read = async {
            let mut bytes = Vec::new();
            let mut received = 0usize;
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk
                    .map_err(|_| ApiError::bad_request("The request body could not be read."))?;
                received = received.saturating_add(chunk.len());
                if received > drained_at_most {
                    break;
                }
                if received <= max {
                    bytes.extend_from_slice(&chunk);
                }
            }
            if received > max {
                return Err(too_large(max));
            }
            Ok(Self(Bytes::from(bytes)))
        };
        tokio::time::timeout(limits.idle_timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "HTTPRequestTimeout",
                    format!(
                        "The request body did not arrive within {}.",
                        humantime::format_duration(limits.idle_timeout)
                    ),
                ))
            })
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "HTTPRequestEntityTooLarge",
        format!("Request is too large. Larger than max_body_bytes ({max})."),
    )
}

/// A body must be JSON: `application/json` with any parameters, or no `Content-Type` at all.
fn check_media_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "HTTPUnsupportedMediaType",
            format!(
                "The request media type {} is not supported by this server.",
                model::validate::echo(&text)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_cap_leaves_descriptors_for_the_rest() {
        assert_eq!(cap_for_fd_limit(256), 192);
        assert_eq!(cap_for_fd_limit(1024), 960);
        assert_eq!(cap_for_fd_limit(10), 16);
        assert_eq!(cap_for_fd_limit(u64::MAX), 1 << 20);
        let configured = Limits {
            max_connections: Some(5),
            ..Limits::default()
        };
        assert_eq!(configured.connection_cap(), 5);
    }

    #[test]
    fn limits_read_from_configuration() {
        let limits: Limits = serde_json::from_str(
            r#"{"max_body_bytes": 4096, "header_read_timeout": "500ms", "idle_timeout": "2s"}"#,
        )
        .unwrap();
        assert_eq!(limits.max_body_bytes, 4096);
        assert_eq!(limits.header_read_timeout, Duration::from_millis(500));
        assert_eq!(limits.idle_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_connections, None);
        let defaults: Limits = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults.max_body_bytes, 1 << 20);
        let config: crate::ApiConfig =
            serde_json::from_str(r#"{"limits": {"max_connections": 10}}"#).unwrap();
        assert_eq!(config.limits.max_connections, Some(10));
        assert_eq!(config.limits.header_read_timeout, Duration::from_secs(10));
        assert!(serde_json::from_str::<Limits>(r#"{"idle_timeout": "soon"}"#).is_err());
    }

    #[test]
    fn json_media_types_with_parameters_pass() {
        let mut headers = HeaderMap::new();
        assert!(check_media_type(&headers).is_ok());
        for ok in ["application/json", "Application/JSON; charset=UTF-8"] {
            headers.insert(header::CONTENT_TYPE, ok.parse().unwrap());
            assert!(check_media_type(&headers).is_ok(), "{ok}");
        }
        for refused in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            headers.insert(header::CONTENT_TYPE, refused.parse().unwrap());
            let err = check_media_type(&headers).unwrap_err();
            assert_eq!(err.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused}");
        }
    }
}
