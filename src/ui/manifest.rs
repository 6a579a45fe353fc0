//! A manifest's page: an image's layers and config (created, entrypoint
//! and command, environment, labels, history), an index's platforms with
//! links to their own pages, annotations, and what refers to it through
//! the referrers API. Everything in a manifest or config came from a
//! pusher and is shown as text only (maud escapes every value).

use std::str::FromStr;

use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::repositories::{command_list, pull_commands, rights};
use super::{UiResult, Viewer, human_size, page, render, short_digest};
use crate::auth::scope::Actions;
use crate::core::manifest::{is_index_type, platform_string};
use crate::core::names::{Digest, Reference, RepoName};
use crate::core::{Registry, RegistryError};
use crate::meta::MetaStore;

/// A JSON value as text: strings as they are, anything else as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A string list (`Entrypoint`, `Cmd`) as one line.
fn words(v: &Value) -> String {
    match v.as_array() {
        Some(items) => items.iter().map(text).collect::<Vec<_>>().join(" "),
        None => text(v),
    }
}

fn key_values(id: &str, map: &Value) -> Markup {
    html! {
        @if let Some(map) = map.as_object().filter(|m| !m.is_empty()) {
            table id=(id) {
                tbody {
                    @for (k, v) in map {
                        tr { td.mono { (k) } td.mono { (text(v)) } }
                    }
                }
            }
        } @else {
            p.muted { "None." }
        }
    }
}

pub async fn show(
    v: &Viewer,
    meta: &MetaStore,
    registry: &Registry,
    repo: &RepoName,
    reference: &str,
) -> UiResult<Response> {
    let reference = Reference::from_str(reference)?;
    let row = registry.get_manifest(repo, &reference, None).await?;
    let digest = row.digest.to_string();
    let json: Value = serde_json::from_slice(&row.content).unwrap_or_default();
    let index = is_index_type(&row.media_type) || json["manifests"].is_array();
    let config = if index {
        None
    } else {
        match json["config"]["digest"]
            .as_str()
            .and_then(|d| Digest::from_str(d).ok())
        {
            Some(d) => registry.image_config(&d).await,
            None => None,
        }
    };
    let referrers = registry.referrers(repo, &row.digest, None).await?;
    let sizes = meta.image_sizes(repo).await?;
    let tag_ref = match &reference {
        Reference::Tag(t) => format!(":{t}"),
        Reference::Digest(_) => String::new(),
    };
    let mut commands = Vec::new();
    if !tag_ref.is_empty() {
        commands.extend(pull_commands(v, repo, &tag_ref));
    }
    let by_digest = pull_commands(v, repo, &format!("@{digest}"));
    let may_delete = rights(v, repo).contains(Actions::DELETE) && v.session.is_some();
    let title = format!(
        "{repo}{}",
        if tag_ref.is_empty() {
            format!("@{}", short_digest(&digest))
        } else {
            tag_ref.clone()
        }
    );
    let body = html! {
        p { a href={ "/ui/r/" (repo) } { "← " (repo) } }
        dl.facts {
            dt { "Digest" } dd.mono #digest { (digest) }
            dt { "Media type" } dd.mono { (row.media_type) }
            @if let Some(t) = json["artifactType"].as_str() { dt { "Artifact type" } dd.mono { (t) } }
            dt { "Manifest size" } dd { (human_size(row.content.len() as i64)) }
            dt { "Image size" } dd { (human_size(sizes.get(&digest).copied().unwrap_or(0))) }
            @if let Some(s) = json["subject"]["digest"].as_str() {
                dt { "Refers to" } dd.mono { a href={ "/ui/r/" (repo) "/-/manifests/" (s) } { (s) } }
            }
        }
        h2 { "Pull" }
        (command_list(&commands, "pull-tag"))
        (command_list(&by_digest, "pull-digest"))
        @if index {
            h2 { "Platforms" }
            table #platforms {
                thead { tr { th { "Platform" } th { "Digest" } th.num { "Size" } } }
                tbody {
                    @for m in json["manifests"].as_array().into_iter().flatten() {
                        @let d = m["digest"].as_str().unwrap_or("");
                        tr {
                            td { (platform_string(&m["platform"]).unwrap_or_else(|| "unknown".into())) }
                            td.mono { a href={ "/ui/r/" (repo) "/-/manifests/" (d) } { (d) } }
                            td.num { (human_size(sizes.get(d).copied().unwrap_or(0))) }
                        }
                    }
                }
            }
        } @else {
            @if let Some(c) = &config {
                h2 { "Image" }
                dl.facts #config {
                    dt { "Platform" } dd #platform { (platform_string(c).unwrap_or_default()) }
                    dt { "Created" } dd { (text(&c["created"])) }
                    dt { "Author" } dd { (text(&c["author"])) }
                    dt { "Entrypoint" } dd.mono #entrypoint { (words(&c["config"]["Entrypoint"])) }
                    dt { "Command" } dd.mono #cmd { (words(&c["config"]["Cmd"])) }
                    dt { "Working directory" } dd.mono { (text(&c["config"]["WorkingDir"])) }
                    dt { "User" } dd.mono { (text(&c["config"]["User"])) }
                    dt { "Exposed ports" } dd.mono { (c["config"]["ExposedPorts"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>().join(" ")).unwrap_or_default()) }
                }
                h2 { "Environment" }
                @if let Some(env) = c["config"]["Env"].as_array().filter(|e| !e.is_empty()) {
                    pre #env { @for e in env { (text(e)) "\n" } }
                } @else { p.muted { "None." } }
                h2 { "Labels" }
                (key_values("labels", &c["config"]["Labels"]))
            }
            h2 { "Layers" }
            table #layers {
                thead { tr { th { "#" } th { "Digest" } th { "Media type" } th.num { "Size" } } }
                tbody {
                    @for (i, l) in json["layers"].as_array().into_iter().flatten().enumerate() {
                        tr {
                            td { (i + 1) }
                            td.mono { (text(&l["digest"])) }
                            td.mono { (text(&l["mediaType"])) }
                            td.num { (human_size(l["size"].as_i64().unwrap_or(0))) }
                        }
                    }
                }
            }
            @if let Some(c) = &config {
                h2 { "History" }
                @if let Some(history) = c["history"].as_array().filter(|h| !h.is_empty()) {
                    table #history {
                        thead { tr { th { "Created" } th { "Created by" } th { "Comment" } } }
                        tbody {
                            @for h in history {
                                tr {
                                    td { (text(&h["created"])) }
                                    td.mono { (text(&h["created_by"])) @if h["empty_layer"].as_bool() == Some(true) { span.muted { " (no layer)" } } }
                                    td { (text(&h["comment"])) }
                                }
                            }
                        }
                    }
                } @else { p.muted { "None recorded." } }
            }
        }
        h2 { "Annotations" }
        (key_values("annotations", &json["annotations"]))
        h2 { "Referrers" }
        @if referrers.is_empty() {
            p.muted #no-referrers { "Nothing refers to this manifest." }
        } @else {
            table #referrers {
                thead { tr { th { "Artifact type" } th { "Digest" } th.num { "Size" } } }
                tbody {
                    @for r in &referrers {
                        tr {
                            td.mono { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                            td.mono { a href={ "/ui/r/" (repo) "/-/manifests/" (r.digest) } { (r.digest) } }
                            td.num { (human_size(r.size as i64)) }
                        }
                    }
                }
            }
        }
        @if may_delete {
            h2 { "Delete" }
            form method="post" action={ "/ui/r/" (repo) "/-/manifests/" (digest) "/delete" }
                data-confirm={ "Delete the manifest " (digest) " and every tag on it?" } {
                input type="hidden" name="csrf" value=(v.csrf());
                button.danger #delete-manifest type="submit" { "Delete this manifest and its tags" }
            }
        }
    };
    if json.is_null() {
        return Err(RegistryError::Internal(format!("manifest {digest} is not JSON")).into());
    }
    Ok(render(page(v, &title, body)))
}
