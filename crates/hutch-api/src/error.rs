//! The one place that maps errors to HTTP statuses.
//!
//! Every handler returns `Result<_, ApiError>`; [`status_of`] turns the stable
//! `hutch_core::ErrorCode` into a status, and the body is always `{"code", "message"}`. A
//! platform failure's detail (host paths, errno strings, database errors) is logged here,
//! inside the request's span (which carries the request id), and never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hutch_api_types::ErrorBody;
use hutch_control::ControlError;
use hutch_core::{Error, ErrorCode};

/// Set on error responses so the request middleware can count errors by code.
#[derive(Debug, Clone, Copy)]
pub struct ErrorTag(pub ErrorCode);

/// The HTTP status of an error code. The only such mapping.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::QuotaExceeded | ErrorCode::TooManyConnections => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::CapacityExhausted | ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A failed request.
#[derive(Debug)]
pub struct ApiError(pub ControlError);

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        ApiError(e)
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(ControlError::Domain(e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let public = self.0.public();
        let code = public.code();
        let status = status_of(code);
        if let Some(detail) = self.0.detail() {
            // A refusal of the client's input (a guest's "no such user") is not the server's
            // failure: it is kept for debugging, not raised as an error.
            if status.is_server_error() {
                tracing::error!(code = code.as_str(), detail, "request failed");
            } else {
                tracing::info!(code = code.as_str(), detail, "request refused");
            }
        }
        let body = ErrorBody {
            code: code.as_str().to_owned(),
            message: public.to_string(),
        };
        let mut resp = (status, Json(body)).into_response();
        resp.extensions_mut().insert(ErrorTag(code));
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_meaningful_status() {
        let table = [
            (ErrorCode::InvalidInput, 400),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::Conflict, 409),
            (ErrorCode::PayloadTooLarge, 413),
            (ErrorCode::RequestTimeout, 408),
            (ErrorCode::TooManyConnections, 429),
            (ErrorCode::QuotaExceeded, 429),
            (ErrorCode::CapacityExhausted, 503),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 500),
        ];
        assert_eq!(table.len(), ErrorCode::ALL.len());
        for (code, status) in table {
            assert_eq!(status_of(code).as_u16(), status, "{code}");
        }
    }

    #[test]
    fn hidden_details_stay_out_of_the_body() {
        let e = ControlError::Hidden {
            public: Error::Internal,
            context: "host",
            detail: "open /var/lib/hutch/secret: EACCES".to_owned(),
        };
        let resp = ApiError(e).into_response();
        assert_eq!(resp.status(), 500);
        assert!(resp.extensions().get::<ErrorTag>().is_some());
    }
}
