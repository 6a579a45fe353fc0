//! Webhooks and deploy rules (the sinks of events), the delivery log
//! and the deploys.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{AdminCaller, ApiError, ApiResult, Body, Params, Segments, page};
use crate::core::{Registry, RegistryError};
use crate::meta::{DeliveryRow, DeployRow, MetaStore, format_ms};
use crate::sinks::{SinkCatalog, SinkEntry, SinkKind};

#[derive(Serialize, ToSchema)]
pub struct SinkInfo {
    pub name: String,
    pub kind: SinkKind,
    /// Defined in the config file: read-only here.
    pub from_config: bool,
    /// The fields of `[[events.webhooks]]` or `[[deploy.rules]]` (see
    /// config.toml); a webhook's secret shows as `(set)`.
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

impl From<SinkEntry> for SinkInfo {
    fn from(e: SinkEntry) -> Self {
        SinkInfo {
            name: e.name,
            kind: e.kind,
            from_config: e.from_config,
            spec: e.spec,
            created_at: e.created_at.map(format_ms),
            updated_at: e.updated_at.map(format_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TestResult {
    pub ok: bool,
    pub detail: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryInfo {
    pub event_seq: i64,
    pub event_id: String,
    pub sink: String,
    /// pending, delivered or gave_up.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub updated_at: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    pub sink: Option<String>,
    pub state: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct DeployInfo {
    pub id: i64,
    pub rule: String,
    /// `namespace/kind/name` of the workload.
    pub target: String,
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub tag: Option<String>,
    pub old_image: Option<String>,
    pub new_image: String,
    /// patching, rolling, succeeded, failed, timed_out, rolled_back,
    /// skipped.
    pub state: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: Option<String>,
}

impl From<DeliveryRow> for DeliveryInfo {
    fn from(d: DeliveryRow) -> Self {
        DeliveryInfo {
            event_seq: d.event_seq,
            event_id: d.event_id,
            sink: d.sink,
            state: d.state,
            attempts: d.attempts,
            last_error: d.last_error,
            updated_at: format_ms(d.updated_at),
        }
    }
}

impl From<DeployRow> for DeployInfo {
    fn from(d: DeployRow) -> Self {
        DeployInfo {
            id: d.id,
            target: format!("{}/{}/{}", d.namespace, d.kind, d.name),
            rule: d.rule,
            namespace: d.namespace,
            kind: d.kind,
            name: d.name,
            container: d.container,
            tag: d.tag,
            old_image: d.old_image,
            new_image: d.new_image,
            state: d.state,
            message: d.message,
            started_at: format_ms(d.started_at),
            finished_at: d.finished_at.map(format_ms),
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    pub rule: Option<String>,
    /// 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

pub(super) async fn list_sinks(
    sinks: &SinkCatalog,
    kind: SinkKind,
) -> ApiResult<Json<Vec<SinkInfo>>> {
    Ok(Json(
        sinks
            .list(kind)
            .await?
            .into_iter()
            .map(SinkInfo::from)
            .collect(),
    ))
}

pub(super) fn audit_name(kind: SinkKind) -> &'static str {
    match kind {
        SinkKind::Webhook => "webhook",
        SinkKind::DeployRule => "deploy_rule",
    }
}

pub(super) async fn create_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    spec: &serde_json::Value,
) -> ApiResult<(StatusCode, Json<SinkInfo>)> {
    let entry = sinks.create(kind, spec).await?;
    admin
        .audit(
            meta,
            &format!("{}.create", audit_name(kind)),
            &entry.name,
            "",
        )
        .await;
    Ok((StatusCode::CREATED, Json(entry.into())))
}

pub(super) async fn update_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    name: &str,
    spec: &serde_json::Value,
) -> ApiResult<Json<SinkInfo>> {
    let entry = sinks.update(kind, name, spec).await?;
    admin
        .audit(meta, &format!("{}.change", audit_name(kind)), name, "")
        .await;
    Ok(Json(entry.into()))
}

pub(super) async fn delete_sink(
    admin: &AdminCaller,
    meta: &MetaStore,
    sinks: &SinkCatalog,
    kind: SinkKind,
    name: &str,
) -> ApiResult<StatusCode> {
    sinks.delete(kind, name).await?;
    admin
        .audit(meta, &format!("{}.delete", audit_name(kind)), name, "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn test_sink(
    sinks: &SinkCatalog,
    kind: SinkKind,
    name: &str,
) -> ApiResult<Json<TestResult>> {
    let result = sinks.test(kind, name).await?;
    Ok(Json(match result {
        Ok(detail) => TestResult { ok: true, detail },
        Err(detail) => TestResult { ok: false, detail },
    }))
}

/// The six handlers of a kind of sink (list, create, get, change, delete,
/// test-fire), in a module of their own. The two kinds differ only in
/// paths, names and the spec their bodies carry.
macro_rules! sink_handlers {
    ($module:ident, $kind:expr, $spec:ty,
     $collection:literal, $item:literal, $test:literal,
     [$list_id:literal, $create_id:literal, $get_id:literal, $update_id:literal,
      $delete_id:literal, $test_id:literal], $test_doc:literal) => {
        pub(super) mod $module {
            use super::*;

            #[utoipa::path(get, path = $collection, tag = "events", operation_id = $list_id,
                responses((status = 200, body = Vec<SinkInfo>)))]
            pub async fn list(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
            ) -> ApiResult<Json<Vec<SinkInfo>>> {
                list_sinks(&sinks, $kind).await
            }

            /// The body has the fields of the config file's section.
            #[utoipa::path(post, path = $collection, tag = "events", operation_id = $create_id,
                request_body(content = $spec),
                responses((status = 201, body = SinkInfo), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn create(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Body(spec): Body<serde_json::Value>,
            ) -> ApiResult<(StatusCode, Json<SinkInfo>)> {
                create_sink(&admin, &meta, &sinks, $kind, &spec).await
            }

            #[utoipa::path(get, path = $item, tag = "events", operation_id = $get_id,
                params(("name" = String, Path)),
                responses((status = 200, body = SinkInfo), (status = 404, body = ApiError)))]
            pub async fn get(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<Json<SinkInfo>> {
                Ok(Json(sinks.get($kind, &name).await?.into()))
            }

            #[utoipa::path(put, path = $item, tag = "events", operation_id = $update_id,
                params(("name" = String, Path)),
                request_body(content = $spec),
                responses((status = 200, body = SinkInfo), (status = 400, body = ApiError), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn update(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
                Body(spec): Body<serde_json::Value>,
            ) -> ApiResult<Json<SinkInfo>> {
                update_sink(&admin, &meta, &sinks, $kind, &name, &spec).await
            }

            #[utoipa::path(delete, path = $item, tag = "events", operation_id = $delete_id,
                params(("name" = String, Path)),
                responses((status = 204), (status = 404, body = ApiError), (status = 409, body = ApiError)))]
            pub async fn delete(
                admin: AdminCaller,
                State(meta): State<MetaStore>,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<StatusCode> {
                delete_sink(&admin, &meta, &sinks, $kind, &name).await
            }

            #[doc = $test_doc]
            #[utoipa::path(post, path = $test, tag = "events", operation_id = $test_id,
                params(("name" = String, Path)),
                responses((status = 200, body = TestResult), (status = 404, body = ApiError)))]
            pub async fn test(
                _admin: AdminCaller,
                State(sinks): State<Arc<SinkCatalog>>,
                Segments(name): Segments<String>,
            ) -> ApiResult<Json<TestResult>> {
                test_sink(&sinks, $kind, &name).await
            }
        }
    };
}

sink_handlers!(
    webhooks,
    SinkKind::Webhook,
    crate::config::WebhookConfig,
    "/admin/v1/webhooks",
    "/admin/v1/webhooks/{name}",
    "/admin/v1/webhooks/{name}/test",
    [
        "list_webhooks",
        "create_webhook",
        "get_webhook",
        "update_webhook",
        "delete_webhook",
        "test_webhook"
    ],
    "Sends a `ping` event; the answer says whether the receiver took it."
);

sink_handlers!(
    rules,
    SinkKind::DeployRule,
    crate::config::DeployRuleConfig,
    "/admin/v1/deploy-rules",
    "/admin/v1/deploy-rules/{name}",
    "/admin/v1/deploy-rules/{name}/test",
    [
        "list_rules",
        "create_rule",
        "get_rule",
        "update_rule",
        "delete_rule",
        "test_rule"
    ],
    "A dry run: which workloads and containers a push would patch, and the images they run now. Changes nothing."
);

#[utoipa::path(get, path = "/admin/v1/deliveries", tag = "events",
    params(DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryInfo>), (status = 400, body = ApiError)))]
pub(super) async fn list_deliveries(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<DeliveryQuery>,
) -> ApiResult<Json<Vec<DeliveryInfo>>> {
    let rows = meta
        .deliveries(page(q.limit)?, q.sink.as_deref(), q.state.as_deref())
        .await?;
    Ok(Json(rows.into_iter().map(DeliveryInfo::from).collect()))
}

/// Queues a delivery again, due now, whatever became of it.
#[utoipa::path(post, path = "/admin/v1/deliveries/{event_seq}/{sink}/redeliver", tag = "events",
    params(("event_seq" = i64, Path), ("sink" = String, Path, description = "e.g. webhook:ci or deploy:web")),
    responses((status = 202, description = "Queued"), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn redeliver(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(registry): State<Arc<Registry>>,
    Segments((event_seq, sink)): Segments<(i64, String)>,
) -> ApiResult<StatusCode> {
    if !meta.redeliver(event_seq, &sink).await? {
        return Err(
            RegistryError::NotFound(format!("no delivery of event {event_seq} to {sink}")).into(),
        );
    }
    registry.events_written().notify_one();
    admin
        .audit(
            &meta,
            "delivery.redeliver",
            &format!("{event_seq} to {sink}"),
            "",
        )
        .await;
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/admin/v1/deploys", tag = "events",
    params(DeployQuery),
    responses((status = 200, body = Vec<DeployInfo>), (status = 400, body = ApiError)))]
pub(super) async fn list_deploys(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Params(q): Params<DeployQuery>,
) -> ApiResult<Json<Vec<DeployInfo>>> {
    let rows = meta.deploys(page(q.limit)?, q.rule.as_deref()).await?;
    Ok(Json(rows.into_iter().map(DeployInfo::from).collect()))
}
