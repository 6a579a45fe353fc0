//! Deploys, for registry admins: per deploy rule, the timeline of the
//! rollouts its pushes caused (state, times, the image before and after),
//! what each target runs now, and Roll back; then the delivery log of
//! every webhook and rule, with Redeliver.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Form, UiResult, Viewer, human_time, render, see_other};
use crate::core::{Registry, RegistryError};
use crate::meta::{DeployRow, MetaStore};
use crate::sinks::SinkCatalog;

/// Deploys shown, newest first.
const DEPLOYS_SHOWN: u32 = 200;
const DELIVERIES_SHOWN: u32 = 100;

/// The digest of an image reference (`host/repo@sha256:...`), if pinned.
fn digest_of(image: &str) -> Option<&str> {
    image.split_once('@').map(|(_, d)| d)
}

/// Per target (`namespace/kind/name`), the image it runs and since when,
/// from the newest deploy that went through or was rolled back. A rollout
/// rolled back on failure runs its old image; a rollback by hand (no tag)
/// runs its new one.
fn running_now(rows: &[DeployRow]) -> BTreeMap<String, (String, i64)> {
    let mut now = BTreeMap::new();
    for row in rows.iter().rev() {
        let image = match (row.state.as_str(), &row.tag) {
            ("succeeded" | "rolling", _) | ("rolled_back", None) => Some(row.new_image.clone()),
            ("rolled_back", Some(_)) => row.old_image.clone(),
            _ => None,
        };
        if let Some(image) = image {
            let target = format!("{}/{}/{}", row.namespace, row.kind, row.name);
            now.insert(target, (image, row.finished_at.unwrap_or(row.started_at)));
        }
    }
    now
}

pub async fn page(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(sinks): State<Arc<SinkCatalog>>,
) -> UiResult<Response> {
    v.require_admin()?;
    let rules = sinks.list(crate::sinks::SinkKind::DeployRule).await?;
    let mut by_rule: BTreeMap<String, Vec<DeployRow>> = BTreeMap::new();
    for r in &rules {
        by_rule.entry(r.name.clone()).or_default();
    }
    for row in meta.deploys(DEPLOYS_SHOWN, None).await? {
        by_rule.entry(row.rule.clone()).or_default().push(row);
    }
    let deliveries = meta.deliveries(DELIVERIES_SHOWN, None, None).await?;
    let body = html! {
        @if by_rule.is_empty() {
            p.muted { "No deploy rules. Add one under " code { "[[deploy.rules]]" } " in the config or through the admin API." }
        }
        @for (rule, rows) in &by_rule {
            section.rule data-rule=(rule) {
                h2 { "Rule " (rule) }
                @let now = running_now(rows);
                @if !now.is_empty() {
                    table.targets {
                        thead { tr { th { "Target" } th { "Runs now" } th { "Since" } } }
                        tbody {
                            @for (target, (image, since)) in &now {
                                tr { td { (target) } td.mono.runs-now { (image) } td { (human_time(*since)) } }
                            }
                        }
                    }
                }
                @if v.admin && !rows.is_empty() {
                    form.row method="post" action="/ui/deploys/rollback"
                        data-confirm={ "Roll back every target of " (rule) "?" } {
                        input type="hidden" name="csrf" value=(v.csrf());
                        input type="hidden" name="rule" value=(rule);
                        label { "Roll back to "
                            select name="to" {
                                option value="" { "the image before the last deploy" }
                                @for row in rows.iter().filter(|r| r.state == "succeeded") {
                                    @if let Some(d) = digest_of(&row.new_image) {
                                        option value=(d) { (row.tag.as_deref().unwrap_or("")) " " (d) }
                                    }
                                }
                            }
                        }
                        button.danger.rollback type="submit" { "Roll back" }
                    }
                }
                @if rows.is_empty() {
                    p.muted { "Nothing deployed yet." }
                } @else {
                    ol.timeline {
                        @for row in rows {
                            li.deploy data-state=(row.state) {
                                span class={ "state state-" (row.state) } { (row.state) }
                                " " (row.namespace) "/" (row.kind) "/" (row.name)
                                @if let Some(t) = &row.tag { " · tag " code { (t) } }
                                br;
                                span.muted { "started " (human_time(row.started_at))
                                    @if let Some(f) = row.finished_at { ", finished " (human_time(f)) } }
                                br;
                                span.mono { (row.old_image.as_deref().unwrap_or("(nothing)")) " → " (row.new_image) }
                                @if !row.message.is_empty() { br; span.muted { (row.message) } }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Deliveries" }
        @if deliveries.is_empty() {
            p.muted { "No deliveries yet." }
        } @else {
            table #deliveries {
                thead { tr { th { "Event" } th { "Sink" } th { "State" } th.num { "Attempts" } th { "Last error" } th { "Updated" } th {} } }
                tbody {
                    @for d in &deliveries {
                        tr {
                            td.mono { (d.event_seq) }
                            td { (d.sink) }
                            td { span class={ "state state-" (d.state) } { (d.state) } }
                            td.num { (d.attempts) }
                            td { (d.last_error.as_deref().unwrap_or("")) }
                            td { (human_time(d.updated_at)) }
                            td {
                                form.inline method="post" action="/ui/deliveries/redeliver" {
                                    input type="hidden" name="csrf" value=(v.csrf());
                                    input type="hidden" name="event_seq" value=(d.event_seq);
                                    input type="hidden" name="sink" value=(d.sink);
                                    button type="submit" { "Redeliver" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(render(super::page(&v, "Deploys", body)))
}

pub async fn rollback(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(sinks): State<Arc<SinkCatalog>>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    v.require_admin()?;
    let rule = form.get("rule").unwrap_or("");
    let to = form.get("to").filter(|t| !t.is_empty());
    let lines = sinks.rollback(rule, to).await?;
    v.audit(&meta, "deploy.rollback", rule).await;
    tracing::info!(rule, ?to, ?lines, "rolled back through the web UI");
    Ok(see_other("/ui/deploys"))
}

pub async fn redeliver(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(registry): State<Arc<Registry>>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    v.require_admin()?;
    let seq: i64 = form
        .get("event_seq")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| RegistryError::Invalid("event_seq must be a number".into()))?;
    let sink = form.get("sink").unwrap_or("");
    if !meta.redeliver(seq, sink).await? {
        return Err(
            RegistryError::NotFound(format!("no delivery of event {seq} to {sink}")).into(),
        );
    }
    registry.events_written().notify_one();
    v.audit(&meta, "delivery.redeliver", &format!("{seq} to {sink}"))
        .await;
    Ok(see_other("/ui/deploys"))
}
