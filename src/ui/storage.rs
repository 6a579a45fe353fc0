//! Storage, for registry admins: what each namespace holds, as a chart
//! drawn here (SVG, no script), the last garbage collection's report, and
//! a button to start one.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::{Form, UiResult, Viewer, human_size, render, see_other};
use crate::gc::GarbageCollector;
use crate::meta::MetaStore;

/// Bars drawn; the rest are summed into one.
const BARS: usize = 20;

/// The namespace of a repository: its first path component.
fn namespace(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

/// Sizes per namespace, largest first, the tail summed as `(others)`.
pub fn by_namespace(sizes: &[(String, i64)]) -> Vec<(String, i64)> {
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for (repo, size) in sizes {
        *totals.entry(namespace(repo)).or_default() += size;
    }
    let mut rows: Vec<(String, i64)> = totals.into_iter().map(|(n, s)| (n.to_owned(), s)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    if rows.len() > BARS {
        let rest: i64 = rows[BARS - 1..].iter().map(|r| r.1).sum();
        rows.truncate(BARS - 1);
        rows.push(("(others)".to_owned(), rest));
    }
    rows
}

/// A horizontal bar chart.
fn chart(rows: &[(String, i64)]) -> Markup {
    const ROW: usize = 24;
    const LABEL: usize = 220;
    const WIDTH: usize = 760;
    const BAR: usize = WIDTH - LABEL - 110;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let height = rows.len() * ROW + 10;
    html! {
        svg.chart #usage-chart xmlns="http://www.w3.org/2000/svg" width=(WIDTH) height=(height)
            viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label="Storage by namespace" {
            @for (i, (name, size)) in rows.iter().enumerate() {
                @let y = 5 + i * ROW;
                @let w = ((*size as f64 / max as f64) * BAR as f64).round().max(1.0) as usize;
                text x="5" y=(y + 16) { (name) }
                rect x=(LABEL) y=(y + 4) width=(w) height=(ROW - 8) {}
                text x=(LABEL + w + 6) y=(y + 16) { (human_size(*size)) }
            }
        }
    }
}

pub async fn page(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(gc): State<Arc<GarbageCollector>>,
) -> UiResult<Response> {
    v.require_admin()?;
    let sizes = meta.repository_sizes().await?;
    let rows = by_namespace(&sizes);
    let total: i64 = sizes.iter().map(|r| r.1).sum();
    let running = gc.is_running().await?;
    let last = gc.last_report().await?;
    let body = html! {
        h2 { "Usage by namespace" }
        p.muted { (sizes.len()) " repositories, " (human_size(total))
            " (a blob shared by several repositories counts in each)." }
        @if rows.is_empty() { p.muted { "Nothing stored yet." } } @else { (chart(&rows)) }
        h2 { "Garbage collection" }
        @if running { p.notice #gc-running { "A collection is running now." } }
        @if let Some(r) = &last {
            dl.facts #gc-report {
                dt { "Started" } dd { (r.started_at) }
                dt { "Kind" } dd { (if r.dry_run { "dry run" } else { "collection" }) }
                dt { "Took" } dd { (r.duration_ms) " ms" }
                dt { "Manifests deleted" } dd { (r.manifests_deleted) }
                dt { "Blobs examined" } dd { (r.blobs_examined) }
                dt { "Blobs deleted" } dd { (r.blobs_deleted) }
                dt { "Freed" } dd { (human_size(r.bytes_freed as i64)) }
                dt { "Uploads purged" } dd { (r.uploads_purged) }
                dt { "Orphan files deleted" } dd { (r.orphan_files_deleted) }
            }
        } @else {
            p.muted #gc-none { "No collection has run yet." }
        }
        form.row method="post" action="/ui/storage/gc" data-confirm="Start a garbage collection now?" {
            input type="hidden" name="csrf" value=(v.csrf());
            label { input type="checkbox" name="dry_run" value="1"; " dry run" }
            button #start-gc type="submit" disabled[running] { "Start" }
        }
    };
    Ok(render(super::page(&v, "Storage", body)))
}

pub async fn start_gc(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(gc): State<Arc<GarbageCollector>>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    v.require_admin()?;
    let dry_run = form.get("dry_run").is_some();
    gc.start(dry_run).await?;
    v.audit(&meta, "gc.start", "registry").await;
    Ok(see_other("/ui/storage"))
}

#[cfg(test)]
mod tests {
    use super::by_namespace;

    #[test]
    fn sizes_add_up_per_namespace() {
        let sizes = vec![
            ("team/a".to_owned(), 10),
            ("team/b".to_owned(), 5),
            ("solo".to_owned(), 7),
        ];
        assert_eq!(
            by_namespace(&sizes),
            vec![("team".to_owned(), 15), ("solo".to_owned(), 7)]
        );
    }
}
