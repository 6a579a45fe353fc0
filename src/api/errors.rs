//! The one table that turns a [`RegistryError`] into an HTTP answer: the
//! OCI error code, the status, and the JSON body
//! `{"errors":[{"code","message","detail"}]}`. No handler picks a status
//! for an error on its own.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::RegistryError;

/// The OCI code and HTTP status of each error.
fn code_and_status(e: &RegistryError) -> (&'static str, StatusCode) {
    use RegistryError::*;
    match e {
        BlobUnknown(_) => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
        BlobUploadInvalid(_) | BlobBeingCollected(_) => {
            ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST)
        }
        BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
        ChunkOutOfOrder { .. } | UploadBusy { .. } => {
            ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE)
        }
        DigestInvalid(_) => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
        ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
        ManifestInvalid(_) => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
        ManifestUnknown(_) => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
        ManifestTooLarge { .. } => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
        NameInvalid(_) => ("NAME_INVALID", StatusCode::BAD_REQUEST),
        NameUnknown(_) => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
        TagInvalid(_) => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
        SizeInvalid(_) => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
        // No code of the spec's list (the only ones a JSON error body may
        // carry) names an unsatisfiable read range, so this one answers as
        // HTTP does: no body, the blob's size in Content-Range.
        RangeNotSatisfiable { .. } => ("", StatusCode::RANGE_NOT_SATISFIABLE),
        Unsupported(_) => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
        // The spec's codes are the only ones allowed, and none names a
        // bad page size (Distribution's PAGINATION_NUMBER_INVALID is not
        // among them): a request berth cannot serve as asked.
        PaginationNumberInvalid(_) => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
        RouteUnknown => ("UNSUPPORTED", StatusCode::NOT_FOUND),
        MethodNotAllowed => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
        Unauthorized(_) | InsufficientScope(_) => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
        Denied(_) | TagImmutable { .. } | SignatureRequired { .. } => {
            ("DENIED", StatusCode::FORBIDDEN)
        }
        // Only the admin API raises these; it answers with its own codes.
        Invalid(_) => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
        NotFound(_) => ("UNSUPPORTED", StatusCode::NOT_FOUND),
        Conflict(_) => ("UNSUPPORTED", StatusCode::CONFLICT),
        // OAuth2 answers these 400 (invalid_request, invalid_scope).
        TokenRequestInvalid(_) => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
        TooManyRequests { .. } => ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS),
        BodyRead(_) => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
        // No spec code names it; the status and the message do.
        StorageFull(_) => ("UNKNOWN", StatusCode::INSUFFICIENT_STORAGE),
        Unavailable(_) => ("UNKNOWN", StatusCode::SERVICE_UNAVAILABLE),
        Internal(_) => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (code, status) = code_and_status(&self);
        let message = match &self {
            RegistryError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                "internal error; see the registry's log".to_owned()
            }
            RegistryError::StorageFull(cause) => {
                tracing::error!(%cause, "storage full");
                self.to_string()
            }
            other => other.to_string(),
        };
        let detail = match &self {
            RegistryError::BlobUnknown(d) => json!({ "digest": d }),
            RegistryError::ManifestBlobUnknown(d) => json!({ "digest": d.as_str() }),
            RegistryError::SignatureRequired { image, reason, .. } => {
                json!({ "image": image, "reason": reason })
            }
            RegistryError::ChunkOutOfOrder { offset, start } => {
                json!({ "offset": offset, "start": start })
            }
            _ => json!(null),
        };
        let mut response = match code {
            "" => status.into_response(),
            code => {
                let body =
                    json!({ "errors": [{ "code": code, "message": message, "detail": detail }] });
                (status, axum::Json(body)).into_response()
            }
        };
        match self {
            // Tell the client where the upload really ends, so it can resume.
            RegistryError::ChunkOutOfOrder { offset, .. }
            | RegistryError::UploadBusy { offset } => {
                if let Ok(v) = HeaderValue::from_str(&super::distribution::range_header(offset)) {
                    response.headers_mut().insert(header::RANGE, v);
                }
            }
            RegistryError::TooManyRequests { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            RegistryError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    response.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spec_strings() {
        let all = [
            RegistryError::BlobUploadUnknown,
            RegistryError::RouteUnknown,
            RegistryError::MethodNotAllowed,
            RegistryError::Internal("x".into()),
            RegistryError::ChunkOutOfOrder {
                offset: 1,
                start: 2,
            },
        ];
        for e in all {
            let (code, status) = code_and_status(&e);
            assert!(code.bytes().all(|c| c.is_ascii_uppercase() || c == b'_'));
            assert!(status.is_client_error() || status.is_server_error());
        }
    }
}
