//! The one place where errors become HTTP answers: Vault's `{"errors":[...]}` bodies and status codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::engines::{ApplyError, Error};

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The status code.
    pub status: StatusCode,
    /// The messages of the `errors` array (may be empty, as Vault's 404 for a missing secret is).
    pub errors: Vec<String>,
}

impl ApiError {
    /// An error with one message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, errors: vec![message.into()] }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 403 `permission denied`, Vault's answer for a missing, unknown or insufficient token.
    pub fn permission_denied() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "permission denied")
    }

    /// 503 with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedOperation(_) => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotFound => return ApiError { status: StatusCode::NOT_FOUND, errors: Vec::new() },
            Error::NoRoute(_) => StatusCode::NOT_FOUND,
            Error::PermissionDenied => StatusCode::FORBIDDEN,
            Error::Apply(ApplyError::NoRoute(_)) => StatusCode::NOT_FOUND,
            Error::Apply(ApplyError::NotFound) => {
                return ApiError { status: StatusCode::NOT_FOUND, errors: Vec::new() }
            }
            Error::Apply(ApplyError::Invalid(_)) => StatusCode::BAD_REQUEST,
            Error::Apply(ApplyError::AlreadyInitialized | ApplyError::MountConflict(_)) => StatusCode::BAD_REQUEST,
            Error::NotLeader | Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) | Error::Apply(ApplyError::Undecodable(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %e, "internal error");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": self.errors }))).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_vault_statuses() {
        let cases = [
            (Error::BadRequest("x".into()), 400, vec!["x"]),
            (Error::NotFound, 404, vec![]),
            (Error::NoRoute("foo/bar".into()), 404, vec!["no handler for route \"foo/bar\". route entry not found."]),
            (Error::PermissionDenied, 403, vec!["permission denied"]),
            (
                Error::Apply(ApplyError::MountConflict("path is already in use at kv/".into())),
                400,
                vec!["path is already in use at kv/"],
            ),
            (Error::UnsupportedOperation("unsupported operation".into()), 405, vec!["unsupported operation"]),
            (Error::Unavailable("later".into()), 503, vec!["later"]),
        ];
        for (error, status, errors) in cases {
            let api = ApiError::from(error);
            assert_eq!(api.status.as_u16(), status);
            assert_eq!(api.errors, errors);
        }
    }
}
