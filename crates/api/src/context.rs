//! Who is asking: the project and roles of a request, from headers or configured tokens.

use std::collections::HashMap;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;
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
    /// `X-Auth-Token` values and whom they stand for. Empty: no authentication; every request is
    /// admin unless it names a project with `X-Project-Id` (and roles with `X-Roles`).
    #[serde(default)]
    pub tokens: HashMap<String, Identity>,
    /// The project of admin requests that name none.
    #[serde(default = "default_admin_project")]
    pub admin_project: String,
}

fn default_admin_project() -> String {
    "admin".to_string()
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            tokens: HashMap::new(),
            admin_project: default_admin_project(),
        }
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctx {
    pub project_id: String,
    pub is_admin: bool,
}

impl Ctx {
    pub fn from_headers(auth: &AuthConfig, headers: &HeaderMap) -> Result<Self, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let from_roles = |project: &str, roles: &[&str]| Ctx {
            project_id: project.to_string(),
            is_admin: roles.iter().any(|r| r.trim().eq_ignore_ascii_case("admin")),
        };
        if !auth.tokens.is_empty() {
            let token = header("x-auth-token").unwrap_or_default();
            return match auth.tokens.get(token) {
                Some(id) => Ok(from_roles(
                    &id.project_id,
                    &id.roles.iter().map(String::as_str).collect::<Vec<_>>(),
                )),
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "HTTPUnauthorized",
                    "Authentication required",
                )),
            };
        }
        match header("x-project-id").or_else(|| header("x-tenant-id")) {
            Some(project) => {
                let roles = header("x-roles").unwrap_or("admin");
                Ok(from_roles(project, &roles.split(',').collect::<Vec<_>>()))
            }
            None => Ok(Ctx {
                project_id: auth.admin_project.clone(),
                is_admin: true,
            }),
        }
    }

    /// The object belongs to the caller's project (or the caller is admin).
    pub fn owns(&self, obj: &Obj) -> bool {
        self.is_admin || obj.get("project_id").and_then(Value::as_str) == Some(&self.project_id)
    }
}
