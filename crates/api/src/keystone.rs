//! Tokens validated by Keystone (Identity API v3), for `X-Auth-Token`s that are not static tokens.
//!
//! A token is checked with `GET {url}/auth/tokens?nocatalog`, the token itself as both
//! `X-Auth-Token` and `X-Subject-Token`: Keystone's default policy for `identity:validate_token`
//! lets a token validate itself, so Wyvern needs no service user. 200 is a valid token (its
//! project and role names); 401 or 404 an invalid one (unknown, expired, revoked). Both answers
//! are cached for at most `cache_seconds` and never past the token's `expires_at`; the cache holds
//! about `cache_size` tokens (expired entries go first, then those that expire soonest), and
//! concurrent requests with one token share one validation; tokens longer than
//! [`MAX_TOKEN_BYTES`] are invalid without asking. Anything else — no answer within
//! [`TIMEOUT`], another status, a malformed document — is a [`KeystoneError`] that is not cached
//! (the server answers it 503, as keystonemiddleware does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::context::Identity;

/// How long a validation may take before Keystone counts as unreachable.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Longer tokens are invalid without asking (Keystone's are far shorter: Fernet tokens at most its
/// `max_token_size`, 255 by default; JWS tokens under 1 KiB), which bounds the cache's memory.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// `auth.keystone` in the server's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone's v3 endpoint, `http://HOST:PORT/v3`.
    pub url: KeystoneUrl,
    /// Longest time an answer (valid or invalid) is reused; never past the token's expiry.
    #[serde(default = "default_cache_seconds")]
    pub cache_seconds: u64,
    /// About how many tokens the cache holds.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
}

fn default_cache_seconds() -> u64 {
    60
}

fn default_cache_size() -> usize {
    10_000
}

/// Keystone's v3 endpoint: an `http://` URL (this build's HTTP client has no TLS).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KeystoneUrl(String);

impl TryFrom<String> for KeystoneUrl {
    type Error = KeystoneError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        let bad = |why: &str| KeystoneError::Url(text.clone(), why.to_string());
        let url = reqwest::Url::parse(&text).map_err(|e| bad(&e.to_string()))?;
        match url.scheme() {
            "http" => Ok(Self(url.as_str().trim_end_matches('/').to_string())),
            "https" => Err(bad(
                "this build has no TLS client; reach Keystone over http:// (e.g. a local TLS proxy)",
            )),
            _ => Err(bad("not an http:// URL")),
        }
    }
}

/// A failed validation: Keystone could not say whether the token is valid.
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    #[error("Keystone URL {0:?}: {1}")]
    Url(String, String),
    #[error("Keystone did not answer: {0}")]
    Unreachable(#[from] reqwest::Error),
    #[error("Keystone answered {0} to a token validation")]
    Status(StatusCode),
    #[error("Keystone's token document: {0}")]
    Malformed(String),
}

/// What Keystone says about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and scoped to a project: the project and the role names.
    Valid(Identity),
    /// Valid, but not scoped to a project (unscoped, or scoped to a domain or the system).
    Unscoped,
    /// Unknown, expired or revoked.
    Invalid,
}

/// A token validator with its cache.
pub struct Keystone {
    /// `{url}/auth/tokens?nocatalog`.
    validate_url: String,
    cache_for: Duration,
    cache_size: usize,
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One token's cache entry; empty while its validation runs (or after it failed).
type Slot = OnceCell<Cached>;

struct Cached {
    verdict: Verdict,
    until: Instant,
}

/// The part of Keystone's token document that says who the token stands for.
#[derive(Deserialize)]
struct TokenDocument {
    token: Token,
}

#[derive(Deserialize)]
struct Token {
    expires_at: String,
    project: Option<Named>,
    #[serde(default)]
    roles: Vec<Named>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: String,
}

impl Keystone {
    pub fn new(config: &KeystoneConfig) -> Self {
        Self {
            validate_url: format!("{}/auth/tokens?nocatalog", config.url.0),
            cache_for: Duration::from_secs(config.cache_seconds),
            cache_size: config.cache_size.max(1),
            http: reqwest::Client::new(),
            cache: Mutex::default(),
        }
    }

    /// What Keystone says about `token`, from the cache when it has a current answer.
    pub async fn validate(&self, token: &str) -> Result<Verdict, KeystoneError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Ok(Verdict::Invalid);
        }
        let slot = self.slot(token);
        let cached = slot.get_or_try_init(|| self.ask(token)).await?;
        Ok(cached.verdict.clone())
    }

    /// The token's cache entry: its current one, or a new empty one.
    fn slot(&self, token: &str) -> Arc<Slot> {
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let current = cache
            .get(token)
            .filter(|s| s.get().is_none_or(|c| c.until > now));
        if let Some(slot) = current {
            return slot.clone();
        }
        if cache.len() >= self.cache_size {
            self.make_room(&mut cache, now);
        }
        let slot = Arc::new(Slot::new());
        cache.insert(token.to_string(), slot.clone());
        slot
    }

    /// Drops expired answers and failed validations; if the cache is still full, the answer that
    /// expires first.
    fn make_room(&self, cache: &mut HashMap<String, Arc<Slot>>, now: Instant) {
        // An empty slot that only the cache holds is a validation that failed.
        cache.retain(|_, slot| match slot.get() {
            Some(cached) => cached.until > now,
            None => Arc::strong_count(slot) > 1,
        });
        if cache.len() >= self.cache_size {
            let first = cache
                .iter()
                .filter_map(|(token, slot)| Some((slot.get()?.until, token)))
                .min_by_key(|(until, _)| *until)
                .map(|(_, token)| token.clone());
            if let Some(token) = first {
                cache.remove(&token);
            }
        }
    }

    /// Asks Keystone about `token`.
    async fn ask(&self, token: &str) -> Result<Cached, KeystoneError> {
        let answer = self
            .http
            .get(&self.validate_url)
            .header("X-Auth-Token", token)
            .header("X-Subject-Token", token)
            .timeout(TIMEOUT)
            .send()
            .await?;
        let until = Instant::now() + self.cache_for;
        match answer.status() {
            StatusCode::OK => {
                let document: TokenDocument = serde_json::from_slice(&answer.bytes().await?)
                    .map_err(|e| KeystoneError::Malformed(e.to_string()))?;
                let token = document.token;
                let expires = humantime::parse_rfc3339(&token.expires_at)
                    .map_err(|e| KeystoneError::Malformed(format!("expires_at: {e}")))?;
                let left = expires
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                let verdict = match token.project {
                    Some(project) if !project.id.is_empty() => Verdict::Valid(Identity {
                        project_id: project.id,
                        roles: token.roles.into_iter().map(|r| r.name).collect(),
                    }),
                    _ => Verdict::Unscoped,
                };
                Ok(Cached {
                    verdict,
                    until: until.min(Instant::now() + left),
                })
            }
            StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND => Ok(Cached {
                verdict: Verdict::Invalid,
                until,
            }),
            status => Err(KeystoneError::Status(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against a stand-in Keystone that counts its validations and answers by token: `valid`,
    //! `brief` (expires in a second), `unscoped`, `broken` (500); any other token is unknown (404).

    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use serde_json::json;

    use super::*;

    async fn keystone_stand_in(
        State(count): State<Arc<AtomicUsize>>,
        headers: HeaderMap,
    ) -> Response {
        count.fetch_add(1, Ordering::SeqCst);
        // The answer takes a while, so that concurrent validations overlap.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let token = header("x-subject-token").unwrap_or_default();
        if header("x-auth-token") != Some(token) {
            return StatusCode::FORBIDDEN.into_response();
        }
        let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
        let expires = match token {
            "brief" => SystemTime::now() + Duration::from_secs(1),
            _ => in_an_hour,
        };
        let expires_at = humantime::format_rfc3339_micros(expires).to_string();
        let roles = json!([{"id": "r1", "name": "reader"}, {"id": "r2", "name": "member"}]);
        match token {
            "valid" | "brief" => axum::Json(json!({"token": {"expires_at": expires_at,
                "project": {"id": "p1", "name": "alpha"}, "roles": roles}}))
            .into_response(),
            "unscoped" => axum::Json(json!({"token": {"expires_at": expires_at}})).into_response(),
            "broken" => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }

    /// A validator for a stand-in Keystone, and the stand-in's validation count.
    async fn start(cache_seconds: u64, cache_size: usize) -> (Keystone, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let app = axum::Router::new()
            .route("/v3/auth/tokens", axum::routing::get(keystone_stand_in))
            .with_state(count.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v3/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = KeystoneConfig {
            url: KeystoneUrl::try_from(url).unwrap(),
            cache_seconds,
            cache_size,
        };
        (Keystone::new(&config), count)
    }

    fn alpha() -> Verdict {
        Verdict::Valid(Identity {
            project_id: "p1".into(),
            roles: vec!["reader".into(), "member".into()],
        })
    }

    #[tokio::test]
    async fn answers_are_cached_and_shared_by_concurrent_requests() {
        let (keystone, count) = start(60, 100).await;
        let verdicts = futures::future::join_all((0..8).map(|_| keystone.validate("valid"))).await;
        for v in verdicts {
            assert_eq!(v.unwrap(), alpha());
        }
        assert_eq!(count.load(Ordering::SeqCst), 1);
        // Invalid and unscoped tokens are cached too.
        for _ in 0..2 {
            assert_eq!(keystone.validate("nobody").await.unwrap(), Verdict::Invalid);
            assert_eq!(
                keystone.validate("unscoped").await.unwrap(),
                Verdict::Unscoped
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 3);
        let long = "x".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(keystone.validate(&long).await.unwrap(), Verdict::Invalid);
        assert_eq!(count.load(Ordering::SeqCst), 3, "not asked");
    }

    #[tokio::test]
    async fn answers_expire_with_cache_seconds_and_with_the_token() {
        let (keystone, count) = start(0, 100).await;
        keystone.validate("valid").await.unwrap();
        keystone.validate("valid").await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2, "cache_seconds 0: no reuse");

        let (keystone, count) = start(60, 100).await;
        assert_eq!(keystone.validate("brief").await.unwrap(), alpha());
        keystone.validate("brief").await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        keystone.validate("brief").await.unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            2,
            "not reused past expires_at"
        );
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (keystone, count) = start(60, 2).await;
        for token in ["a", "b", "c", "a"] {
            keystone.validate(token).await.unwrap();
        }
        // "a" went to make room for "c": asked again.
        assert_eq!(count.load(Ordering::SeqCst), 4);
        assert!(keystone.cache.lock().unwrap().len() <= 2);
    }

    #[tokio::test]
    async fn failures_are_errors_and_not_cached() {
        let (keystone, count) = start(60, 100).await;
        for _ in 0..2 {
            let e = keystone.validate("broken").await.unwrap_err();
            assert!(matches!(e, KeystoneError::Status(s) if s == 500), "{e}");
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = KeystoneConfig {
            url: KeystoneUrl::try_from(format!("http://127.0.0.1:{port}/v3")).unwrap(),
            cache_seconds: 60,
            cache_size: 10,
        };
        let e = Keystone::new(&config).validate("valid").await.unwrap_err();
        assert!(matches!(e, KeystoneError::Unreachable(_)), "{e}");
    }

    #[test]
    fn urls_are_plain_http() {
        let url = |text: &str| KeystoneUrl::try_from(text.to_string());
        assert_eq!(url("http://k:5000/v3/").unwrap().0, "http://k:5000/v3");
        for bad in ["https://k:5000/v3", "k:5000/v3", "ftp://k/v3"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }
}
