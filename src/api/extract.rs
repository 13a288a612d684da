//! Extractors whose rejections are our JSON errors, not axum's plain text.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body; an empty body reads as `{}`, so optional-only bodies may be left out.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), "body_unreadable", e.body_text()))?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        // One check of the whole body lets every string in it be read without checking it
        // again (a 1000-row request has 13,000); a body that fails it is read as bytes, so
        // the error still says where.
        let read = match std::str::from_utf8(text) {
            Ok(text) => serde_json::from_str(text),
            Err(_) => serde_json::from_slice(text),
        };
        read.map(ApiJson).map_err(|e| {
            if e.is_data() {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.to_string(),
                )
            } else {
                ApiError::bad_request("malformed_json", e.to_string())
            }
        })
    }
}

/// Path parameters; a malformed id is a 400 with code `invalid_path`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query parameters; bad ones are a 400 with code `invalid_query`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Splits an action route's `<uuid>:<verb>` segment, the verb one of `verbs`; `what` names
/// the id for the error.
pub fn uuid_action<'a>(
    target: &str,
    what: &str,
    verbs: &[&'a str],
) -> Result<(uuid::Uuid, &'a str), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_action",
            format!("{target:?}: expected {what}:{}", verbs.join(" or :")),
        )
    };
    let (id, verb) = target.rsplit_once(':').ok_or_else(bad)?;
    let verb = verbs.iter().find(|v| **v == verb).ok_or_else(bad)?;
    Ok((uuid::Uuid::parse_str(id).map_err(|_| bad())?, verb))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(body: &'static [u8]) -> Result<serde_json::Value, ApiError> {
        let request = Request::new(axum::body::Body::from(body));
        ApiJson::<serde_json::Value>::from_request(request, &())
            .await
            .map(|j| j.0)
    }

    #[tokio::test]
    async fn bodies_are_read_whole_and_bad_bytes_are_placed() {
        let v = read("{\"a\":[\"é\\\"\",1]}".as_bytes()).await.unwrap();
        assert_eq!(v, serde_json::json!({"a": ["é\"", 1]}));
        assert_eq!(read(b" \n").await.unwrap(), serde_json::json!({}));
        let e = read(b"{\"a\":\n[\"\xff\"]}").await.err().unwrap();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "malformed_json")
        );
        assert!(e.detail.contains("line 2 column"), "{}", e.detail);
        let e = read(b"{\"a\":[1,]}").await.err().unwrap();
        assert_eq!(e.code, "malformed_json");
        assert!(e.detail.contains("line 1 column 9"), "{}", e.detail);
    }
}
