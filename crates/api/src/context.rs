//! Who is asking: the project and roles of a request, from headers, configured tokens or Keystone.
//!
//! Roles as Neutron's default policy reads them: `admin` is admin everywhere; `reader` without
//! `member` (or `admin`) may only read — its writes are 403 `PolicyNotAuthorized`; any other role
//! set is a project member.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::keystone::{Keystone, KeystoneConfig, Verdict};
use crate::repo::Obj;

/// An identity a token stands for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub project_id: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// How requests are authenticated.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthConfig {
    /// `X-Auth-Token` values and whom they stand for. Empty and no `keystone`: no authentication;
    /// every request is admin unless it names a project with `X-Project-Id` (and roles with
    /// `X-Roles`).
    #[serde(default)]
    pub tokens: HashMap<String, Identity>,
    /// The project of admin requests that name none.
    #[serde(default = "default_admin_project")]
    pub admin_project: String,
    /// Keystone, which validates the `X-Auth-Token`s that are not in `tokens`. With it, every
    /// request needs a token (as with `tokens`).
    #[serde(default)]
    pub keystone: Option<KeystoneConfig>,
}

fn default_admin_project() -> String {
    "admin".to_string()
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            admin_project: default_admin_project(),
            keystone: None,
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub project_id: String,
    pub is_admin: bool,
    /// The caller may read but not write (Keystone's `reader` role alone).
    pub read_only: bool,
}

/// 401 `HTTPUnauthorized`.
fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "HTTPUnauthorized", message)
}

impl Ctx {
    /// The caller of a request with `headers`. With neither static tokens nor Keystone configured,
    /// the `X-Project-Id` and `X-Roles` headers say who asks (no project: admin in
    /// `auth.admin_project`); otherwise `X-Auth-Token` alone does — a static token, or one that
    /// `keystone` (made from `auth.keystone`) validates.
    pub async fn authenticate(
        auth: &AuthConfig,
        keystone: Option<&Keystone>,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if keystone.is_none() && auth.tokens.is_empty() {
            return Ok(
                match header("x-project-id").or_else(|| header("x-tenant-id")) {
                    Some(project) => {
                        let roles: Vec<&str> =
                            header("x-roles").unwrap_or("admin").split(',').collect();
                        Self::with_roles(project, &roles)
                    }
                    None => Ctx {
                        project_id: auth.admin_project.clone(),
                        is_admin: true,
                        read_only: false,
                    },
                },
            );
        }
        const REQUIRED: &str = "Authentication required";
        let token = header("x-auth-token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthorized(REQUIRED))?;
        if let Some(id) = auth.tokens.get(token) {
            return Ok(Self::with_roles(&id.project_id, &id.roles));
        }
        let Some(keystone) = keystone else {
            return Err(unauthorized(REQUIRED));
        };
        match keystone.validate(token).await {
            Ok(Verdict::Valid(id)) => Ok(Self::with_roles(&id.project_id, &id.roles)),
            Ok(Verdict::Invalid) => Err(unauthorized(REQUIRED)),
            Ok(Verdict::Unscoped) => Err(unauthorized("The token is not scoped to a project")),
            Err(e) => {
                tracing::error!("unable to validate a token: {e}");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "HTTPServiceUnavailable",
                    "The Keystone service is temporarily unavailable.",
                ))
            }
        }
    }

    /// A caller in `project` with `roles` (names, any case).
    fn with_roles(project: &str, roles: &[impl AsRef<str>]) -> Self {
        let has = |name: &str| {
            roles
                .iter()
                .any(|r| r.as_ref().trim().eq_ignore_ascii_case(name))
        };
        let is_admin = has("admin");
        Ctx {
            project_id: project.to_string(),
            is_admin,
            read_only: !is_admin && !has("member") && has("reader"),
        }
    }

    /// The object belongs to the caller's project (or the caller is admin).
    pub fn owns(&self, obj: &Obj) -> bool {
        self.is_admin || obj.get("project_id").and_then(Value::as_str) == Some(&self.project_id)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, value.parse().unwrap());
        }
        headers
    }

    #[tokio::test]
    async fn roles_make_admins_members_and_readers() {
        let auth = AuthConfig::default();
        for (roles, is_admin, read_only) in [
            ("admin", true, false),
            ("Member", false, false),
            ("reader", false, true),
            ("reader, member", false, false),
            ("reader,admin", true, false),
        ] {
            let asked = headers(&[("x-project-id", "p"), ("x-roles", roles)]);
            let ctx = Ctx::authenticate(&auth, None, &asked).await.unwrap();
            assert_eq!(
                (ctx.is_admin, ctx.read_only),
                (is_admin, read_only),
                "{roles}"
            );
        }
    }

    /// Static tokens are answered without Keystone; other tokens need it (here unreachable: 503),
    /// and no token is 401.
    #[tokio::test]
    async fn static_tokens_come_before_keystone() {
        let auth: AuthConfig = serde_json::from_value(json!({
            "tokens": {"t-reader": {"project_id": "p", "roles": ["reader"]}},
            "keystone": {"url": "http://127.0.0.1:9/v3"},
        }))
        .unwrap();
        let keystone = Keystone::new(auth.keystone.as_ref().unwrap());
        let ask = |pairs| {
            let asked = headers(pairs);
            let (auth, keystone) = (&auth, &keystone);
            async move { Ctx::authenticate(auth, Some(keystone), &asked).await }
        };
        let ctx = ask(&[("x-auth-token", "t-reader")]).await.unwrap();
        assert_eq!((ctx.project_id.as_str(), ctx.read_only), ("p", true));
        let refused = ask(&[("x-project-id", "p")]).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        let refused = ask(&[("x-auth-token", "other")]).await.unwrap_err();
        assert_eq!(
            (refused.status, refused.kind.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "HTTPServiceUnavailable")
        );
    }
}
