//! The audit log.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AdminCaller, ApiError, ApiResult, Params, page};
use crate::core::RegistryError;
use crate::meta::{MetaStore, format_ms};

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: String,
    pub actor: Option<String>,
    pub address: Option<String>,
    /// e.g. manifest.push, manifest.delete, repository.delete,
    /// settings.change, account.create, grant.put.
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only entries before this time (RFC 3339).
    pub before: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), (status = 400, body = ApiError)))]
pub(super) async fn audit_log(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    let before = q
        .before
        .as_deref()
        .map(|b| {
            humantime::parse_rfc3339_weak(b)
                .map_err(|e| RegistryError::Invalid(format!("before {b:?}: {e}")))
                .map(|t| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
        })
        .transpose()?;
    let rows = meta.audit_rows(page(q.limit)?, before).await?;
    Ok(Json(
        rows.into_iter()
            .map(|r| AuditEntry {
                at: format_ms(r.at),
                actor: r.actor,
                address: r.address,
                action: r.action,
                target: r.target,
                detail: r.detail,
            })
            .collect(),
    ))
}
