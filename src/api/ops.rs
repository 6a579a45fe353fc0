//! Endpoints for the machines that run berth: `/healthz` (the process
//! answers) and `/readyz` (the metadata store answers and blob storage
//! takes writes), shaped for Kubernetes probes. Neither needs credentials.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::core::Registry;

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(registry): State<Arc<Registry>>) -> Response {
    let parts = registry.readiness().await;
    let ready = parts.iter().all(|(_, failure)| failure.is_none());
    let body: serde_json::Map<String, serde_json::Value> = parts
        .into_iter()
        .map(|(name, failure)| {
            let state = match failure {
                None => "ok".to_owned(),
                Some(why) => {
                    tracing::warn!(part = name, %why, "not ready");
                    why
                }
            };
            (name.to_owned(), json!(state))
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "checks": body })),
    )
        .into_response()
}
