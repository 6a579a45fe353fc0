//! Garbage collection: its status and starting a run.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::{AdminCaller, ApiError, ApiResult, DryRunQuery, Params};
use crate::gc::GarbageCollector;
use crate::meta::MetaStore;

#[derive(Serialize, ToSchema)]
pub struct GcStatus {
    pub running: bool,
    /// The newest finished run (of any kind, dry or not).
    pub last: Option<crate::core::gc::GcReport>,
}

#[utoipa::path(get, path = "/admin/v1/gc", tag = "gc",
    responses((status = 200, body = GcStatus)))]
pub(super) async fn gc_status(
    _admin: AdminCaller,
    State(gc): State<Arc<GarbageCollector>>,
) -> ApiResult<Json<GcStatus>> {
    Ok(Json(GcStatus {
        running: gc.is_running().await?,
        last: gc.last_report().await?,
    }))
}

/// Starts a run in the background; `GET /admin/v1/gc` shows when it is
/// done and what it found.
#[utoipa::path(post, path = "/admin/v1/gc", tag = "gc",
    params(DryRunQuery),
    responses((status = 202, description = "Started"), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn start_gc(
    admin: AdminCaller,
    State(gc): State<Arc<GarbageCollector>>,
    State(meta): State<MetaStore>,
    Params(q): Params<DryRunQuery>,
) -> ApiResult<StatusCode> {
    gc.start(q.dry_run).await?;
    let what = if q.dry_run { "dry run" } else { "" };
    admin.audit(&meta, "gc.start", "registry", what).await;
    Ok(StatusCode::ACCEPTED)
}
