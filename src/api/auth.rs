//! Bearer tokens: random secrets shown once, known to the ledger only by their blake3 hash.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use crate::domain::event::GlobalRole;
use crate::domain::state::Registry;

const PREFIX: &str = "pvn_";

/// A new token and the hash the ledger records.
pub fn new_token() -> Result<(String, String), ApiError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no_randomness",
            e.to_string(),
        )
    })?;
    let token = format!("{PREFIX}{}", hex::encode(secret));
    let hash = token_hash(&token);
    Ok((token, hash))
}

pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Principal {
    pub user_id: Uuid,
    pub admin: bool,
    pub auditor: bool,
}

impl Principal {
    /// Admins and auditors read everything.
    pub fn reads_all(&self) -> bool {
        self.admin || self.auditor
    }

    pub fn require_reads_all(&self, what: &str) -> Result<(), ApiError> {
        if self.reads_all() {
            Ok(())
        } else {
            Err(forbidden(format!("{what} needs the admin or auditor role")))
        }
    }
}

pub fn forbidden(detail: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail)
}

fn unauthorized(code: &'static str, detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, detail)
}

/// Resolves a token against the registry at `now`.
pub fn authenticate(
    registry: &Registry,
    token: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Principal, ApiError> {
    let (user_id, token_id) = registry
        .tokens
        .get(&token_hash(token))
        .copied()
        .ok_or_else(|| unauthorized("invalid_token", "the bearer token is not known"))?;
    let user = registry
        .users
        .get(&user_id)
        .ok_or_else(|| unauthorized("invalid_token", "the token's user does not exist"))?;
    let t = user
        .tokens
        .get(&token_id)
        .ok_or_else(|| unauthorized("invalid_token", "the bearer token is not known"))?;
    if t.revoked.is_some() {
        return Err(unauthorized(
            "token_revoked",
            "the bearer token was revoked",
        ));
    }
    let expired = t
        .expires_at
        .as_deref()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .is_some_and(|e| e <= now);
    if expired {
        return Err(unauthorized(
            "token_expired",
            "the bearer token has expired",
        ));
    }
    Ok(Principal {
        user_id,
        admin: user.roles.contains(&GlobalRole::Admin),
        auditor: user.roles.contains(&GlobalRole::Auditor),
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| unauthorized("unauthenticated", "send Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                unauthorized(
                    "unauthenticated",
                    "the Authorization header must be 'Bearer <token>'",
                )
            })?;
        authenticate(&s.registry.read(), token, chrono::Utc::now())
    }
}
