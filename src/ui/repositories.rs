//! The repository list (search, paging, filtered by what the viewer may
//! pull) and one repository's page (tags, pull commands, deletes), plus
//! the dispatch of every `/ui/r/<name>/...` path.
//!
//! Repository names have any number of `/`; `/-/` (never part of a name)
//! separates the name from what follows: `/ui/r/team/app/-/manifests/<ref>`.

use std::str::FromStr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    Form, UiError, UiResult, Viewer, human_size, human_time, page, render, see_other, short_digest,
};
use crate::auth::scope::{Actions, Resource};
use crate::core::names::{Digest, RepoName, Tag};
use crate::core::{Registry, RegistryError};
use crate::meta::MetaStore;

/// Rows per page of the repository list and of a repository's tags.
pub const PAGE: usize = 50;
/// Names read at once while looking for ones the viewer may see.
const NAME_BATCH: u32 = 500;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    after: Option<String>,
}

/// What the viewer may do on `repo`.
pub fn rights(v: &Viewer, repo: &RepoName) -> Actions {
    v.caller.allowed(&Resource::Repository(repo.clone()))
}

/// Refuses a repository the viewer may not pull, whether it exists or not.
pub fn may_pull(v: &Viewer, repo: &RepoName) -> UiResult<()> {
    if rights(v, repo).contains(Actions::PULL) {
        return Ok(());
    }
    Err(UiError::Refused(match &v.session {
        Some(s) => format!("{} may not pull from {repo}", s.account),
        None => format!("anonymous visitors may not pull from {repo}; sign in"),
    }))
}

pub async fn list(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(registry): State<Arc<Registry>>,
    Query(q): Query<ListQuery>,
) -> UiResult<Response> {
    let filter = q.q.as_deref().filter(|s| !s.is_empty());
    let (rows, next) = visible_page(&v, &meta, &registry, filter, q.after.as_deref()).await?;
    let keep = |after: &str| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        if let Some(f) = filter {
            query.append_pair("q", f);
        }
        query.append_pair("after", after);
        format!("/ui/?{}", query.finish())
    };
    let first = match filter {
        Some(f) => format!(
            "/ui/?q={}",
            form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
        ),
        None => "/ui/".to_owned(),
    };
    let body = html! {
        form.row method="get" action="/ui/" {
            input #search type="search" name="q" value=[filter] placeholder="Search repositories";
            button type="submit" { "Search" }
            @if filter.is_some() { a href="/ui/" { "Clear" } }
        }
        @if rows.is_empty() {
            p.muted #no-repositories { "No repositories to show." }
        } @else {
            table #repositories {
                thead { tr {
                    th { "Repository" } th.num { "Tags" } th.num { "Size" } th.num { "Unique" }
                    th { "Last push" } th { "Last pull" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a.repo href={ "/ui/r/" (r.name) } { (r.name) } }
                            td.num { (r.tag_count) }
                            td.num { (human_size(r.total_size)) }
                            td.num { (human_size(r.unique_size)) }
                            td { (r.last_push.map(human_time).unwrap_or_default()) }
                            td { (r.last_pull.map(human_time).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
        div.pager {
            @if q.after.is_some() { a href=(first) { "First page" } }
            @if let Some(n) = &next { a #next-page href=(keep(n)) { "Next page" } }
        }
    };
    Ok(render(page(&v, "Repositories", body)))
}

/// One page of the repositories `v` may pull, after `after`, and the name
/// to continue after when there are more.
pub async fn visible_page(
    v: &Viewer,
    meta: &MetaStore,
    registry: &Registry,
    filter: Option<&str>,
    after: Option<&str>,
) -> UiResult<(Vec<crate::meta::RepositorySummary>, Option<String>)> {
    let mut names = Vec::new();
    let mut cursor = after.map(str::to_owned);
    // Names first (cheap), filtered by what the viewer may pull; then
    // summaries of the page's names only.
    loop {
        let batch = meta
            .repository_names(NAME_BATCH, cursor.as_deref(), filter)
            .await?;
        let done = batch.len() < NAME_BATCH as usize;
        cursor = batch.last().cloned();
        for name in batch {
            let Ok(repo) = RepoName::from_str(&name) else {
                continue;
            };
            if rights(v, &repo).contains(Actions::PULL) {
                names.push(repo);
                if names.len() > PAGE {
                    break;
                }
            }
        }
        if done || names.len() > PAGE {
            break;
        }
    }
    let more = names.len() > PAGE;
    names.truncate(PAGE);
    let mut rows = Vec::with_capacity(names.len());
    for repo in &names {
        if let Some(mut s) = meta.repository_summary(repo).await? {
            s.last_pull = match (s.last_pull, registry.unflushed_pull(&s.name)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            rows.push(s);
        }
    }
    let next = more.then(|| names.last().map(|n| n.to_string())).flatten();
    Ok((rows, next))
}

#[derive(Deserialize, Default)]
pub struct RepoQuery {
    sort: Option<String>,
    page: Option<usize>,
}

/// `GET /ui/r/<name>[/-/...]`.
pub async fn get_path(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(registry): State<Arc<Registry>>,
    Path(path): Path<String>,
    Query(q): Query<RepoQuery>,
) -> UiResult<Response> {
    let (name, rest) = split(&path);
    let repo = RepoName::from_str(name)?;
    may_pull(&v, &repo)?;
    match rest.split_once('/') {
        None if rest.is_empty() => repository(&v, &meta, &registry, &repo, &q).await,
        Some(("manifests", reference)) => {
            super::manifest::show(&v, &meta, &registry, &repo, reference).await
        }
        _ => Err(RegistryError::NotFound("no such page".into()).into()),
    }
}

/// `POST /ui/r/<name>/-/tags/<tag>/delete` and
/// `POST /ui/r/<name>/-/manifests/<digest>/delete`.
pub async fn post_path(
    v: Viewer,
    State(registry): State<Arc<Registry>>,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<crate::auth::Auth>>,
    Path(path): Path<String>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    let (name, rest) = split(&path);
    let repo = RepoName::from_str(name)?;
    if rest == "settings" {
        return change_settings(&v, &registry, &meta, &auth, &repo, &form).await;
    }
    if !rights(&v, &repo).contains(Actions::DELETE) {
        return Err(UiError::Refused(format!(
            "{} may not delete in {repo}",
            v.session.as_ref().map_or("", |s| s.account.as_str())
        )));
    }
    let admin = v.admin;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["tags", tag, "delete"] => {
            let tag = Tag::from_str(tag)?;
            if admin {
                // As the admin API: not subject to `delete_enabled`.
                let n = registry
                    .delete_tags(&repo, &[tag.as_str().to_owned()], &v.origin)
                    .await?;
                if n == 0 {
                    return Err(RegistryError::ManifestUnknown(format!("{repo}:{tag}")).into());
                }
            } else {
                registry
                    .delete_manifest(&repo, &crate::core::names::Reference::Tag(tag), &v.origin)
                    .await?;
            }
            Ok(see_other(&format!("/ui/r/{repo}")))
        }
        ["manifests", digest, "delete"] => {
            let digest = Digest::from_str(digest)?;
            if admin {
                registry
                    .delete_manifest_as_admin(&repo, &digest, &v.origin)
                    .await?;
            } else {
                registry
                    .delete_manifest(
                        &repo,
                        &crate::core::names::Reference::Digest(digest),
                        &v.origin,
                    )
                    .await?;
            }
            Ok(see_other(&format!("/ui/r/{repo}")))
        }
        _ => Err(RegistryError::NotFound("no such action".into()).into()),
    }
}

/// `POST /ui/r/<name>/-/settings`, for the repository's admins: immutable
/// tags and public read (retention stays as it is; the admin API sets it).
async fn change_settings(
    v: &Viewer,
    registry: &Registry,
    meta: &MetaStore,
    auth: &crate::auth::Auth,
    repo: &RepoName,
    form: &Form,
) -> UiResult<Response> {
    if !rights(v, repo).contains(Actions::ADMIN) {
        return Err(UiError::Refused(format!(
            "{} may not change the settings of {repo}",
            v.session.as_ref().map_or("", |s| s.account.as_str())
        )));
    }
    let mut settings = crate::settings::read(meta, repo).await?;
    settings.immutable_tags = form.get("immutable_tags").is_some();
    settings.public_read = form.get("public_read").is_some();
    crate::settings::write(registry, meta, auth, repo, &settings).await?;
    v.audit(meta, "settings.change", repo.as_str()).await;
    Ok(see_other(&format!("/ui/r/{repo}")))
}

/// `team/app/-/manifests/x` into `team/app` and `manifests/x`.
fn split(path: &str) -> (&str, &str) {
    let path = path.trim_end_matches('/');
    match path.split_once("/-/") {
        Some((name, rest)) => (name, rest),
        None => (path, ""),
    }
}

/// The pull commands for `reference` (`:tag` or `@digest`) of `repo`.
pub fn pull_commands(v: &Viewer, repo: &RepoName, reference: &str) -> Vec<(&'static str, String)> {
    let image = format!("{}/{repo}{reference}", v.host);
    let plain = if v.tls { "" } else { "--plain-http " };
    let container = repo.as_str().rsplit('/').next().unwrap_or(repo.as_str());
    let mut commands = vec![
        ("docker", format!("docker pull {image}")),
        ("podman", format!("podman pull {image}")),
        ("ctr", format!("ctr images pull {plain}{image}")),
    ];
    if reference.starts_with('@') {
        commands.push((
            "kubectl",
            format!("kubectl set image deployment/{container} {container}={image}"),
        ));
    }
    commands
}

/// Commands with copy buttons; `id` prefixes the elements' ids.
pub fn command_list(commands: &[(&'static str, String)], id: &str) -> Markup {
    html! {
        @for (tool, command) in commands {
            div.cmd {
                span.muted { (tool) }
                code id={ (id) "-" (tool) } { (command) }
                button type="button" hidden data-copy={ (id) "-" (tool) } { "Copy" }
            }
        }
    }
}

async fn repository(
    v: &Viewer,
    meta: &MetaStore,
    registry: &Registry,
    repo: &RepoName,
    q: &RepoQuery,
) -> UiResult<Response> {
    let summary = meta
        .repository_summary(repo)
        .await?
        .ok_or_else(|| RegistryError::NameUnknown(repo.to_string()))?;
    let by_name = q.sort.as_deref() == Some("name");
    let count = usize::try_from(summary.tag_count).unwrap_or(0);
    let pages = count.div_ceil(PAGE).max(1);
    let page_no = q.page.unwrap_or(1).clamp(1, pages);
    let shown = meta
        .tag_rows_page(repo, by_name, PAGE as u32, ((page_no - 1) * PAGE) as u64)
        .await?;
    let newest = match (by_name, page_no) {
        (false, 1) => shown.first().cloned(),
        _ => meta.tag_rows_page(repo, false, 1, 0).await?.pop(),
    };
    let sizes = meta.image_sizes(repo).await?;
    let names: Vec<&str> = shown.iter().map(|t| t.name.as_str()).collect();
    let pushers = meta.tag_pushers(repo, &names).await?;
    let mut platforms = Vec::with_capacity(shown.len());
    for t in &shown {
        let p = match Digest::from_str(&t.digest) {
            Ok(d) => match meta.manifest_by_digest(repo, &d).await? {
                Some(row) => registry.platforms(&t.media_type, &row.content).await,
                None => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        platforms.push(p);
    }
    let rights = rights(v, repo);
    let may_delete = rights.contains(Actions::DELETE) && v.session.is_some();
    let sort = if by_name { "name" } else { "pushed" };
    let link = |sort: &str, page: usize| format!("/ui/r/{repo}?sort={sort}&page={page}");
    let settings = if rights.contains(Actions::ADMIN) && v.session.is_some() {
        Some(crate::settings::read(meta, repo).await?)
    } else {
        None
    };
    let body = html! {
        dl.facts {
            dt { "Tags" } dd #tag-count { (summary.tag_count) }
            dt { "Manifests" } dd { (summary.manifest_count) }
            dt { "Size" } dd { (human_size(summary.total_size)) " (" (human_size(summary.unique_size)) " unique)" }
            dt { "Last push" } dd { (summary.last_push.map(human_time).unwrap_or_else(|| "never".into())) }
            dt { "Last pull" } dd { (summary.last_pull.or(registry.unflushed_pull(repo.as_str())).map(human_time).unwrap_or_else(|| "never".into())) }
            dt { "You may" } dd { (rights) }
        }
        @if let Some(t) = newest {
            h2 { "Pull the newest tag" }
            (command_list(&pull_commands(v, repo, &format!(":{}", t.name)), "pull"))
        }
        h2 { "Tags" }
        @if shown.is_empty() {
            p.muted { "No tags." }
        } @else {
            table #tags {
                thead { tr {
                    th { a href=(link("name", 1)) { "Tag" } @if by_name { " ▲" } }
                    th { "Digest" }
                    th.num { "Size" }
                    th { "Platforms" }
                    th { "Pushed by" }
                    th { a href=(link("pushed", 1)) { "Pushed" } @if !by_name { " ▼" } }
                    th { "Pull" }
                    @if may_delete { th {} }
                } }
                tbody {
                    @for (i, t) in shown.iter().enumerate() {
                        tr data-tag=(t.name) {
                            td.tag { a href={ "/ui/r/" (repo) "/-/manifests/" (t.name) } { (t.name) } }
                            td.mono { a href={ "/ui/r/" (repo) "/-/manifests/" (t.digest) } title=(t.digest) { (short_digest(&t.digest)) } }
                            td.num { (human_size(sizes.get(&t.digest).copied().unwrap_or(t.size))) }
                            td { (platforms[i].join(", ")) }
                            td { (pushers.get(&t.name).map(String::as_str).unwrap_or("")) }
                            td { (human_time(t.pushed_at)) }
                            td {
                                div.cmd {
                                    code id={ "tag-" (i) } { "docker pull " (v.host) "/" (repo) ":" (t.name) }
                                    button type="button" hidden data-copy={ "tag-" (i) } { "Copy" }
                                }
                            }
                            @if may_delete {
                                td {
                                    form.inline method="post" action={ "/ui/r/" (repo) "/-/tags/" (t.name) "/delete" }
                                        data-confirm={ "Delete the tag " (t.name) " of " (repo) "?" } {
                                        input type="hidden" name="csrf" value=(v.csrf());
                                        button.danger.delete-tag type="submit" { "Delete" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if pages > 1 {
                div.pager {
                    @if page_no > 1 { a #prev-page href=(link(sort, page_no - 1)) { "Previous" } }
                    span.muted { "Page " (page_no) " of " (pages) }
                    @if page_no < pages { a #next-page href=(link(sort, page_no + 1)) { "Next" } }
                }
            }
        }
        @if let Some(s) = settings {
            h2 { "Settings" }
            form.stack #settings method="post" action={ "/ui/r/" (repo) "/-/settings" } {
                input type="hidden" name="csrf" value=(v.csrf());
                label { input #immutable-tags type="checkbox" name="immutable_tags" value="1" checked[s.immutable_tags]; " Immutable tags: a pushed tag never moves" }
                label { input #public-read type="checkbox" name="public_read" value="1" checked[s.public_read]; " Public read: anyone may pull, without signing in" }
                p.muted { "Retention: "
                    @match &s.retention {
                        Some(p) => code { (serde_json::to_string(p).unwrap_or_default()) },
                        None => "keep every tag",
                    }
                    " (set it through the admin API)." }
                button #save-settings type="submit" { "Save settings" }
            }
        }
    };
    Ok(render(page(v, repo.as_str(), body)))
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn paths_split_at_the_dash_segment() {
        assert_eq!(split("team/app"), ("team/app", ""));
        assert_eq!(split("team/app/"), ("team/app", ""));
        assert_eq!(
            split("team/app/-/manifests/v1"),
            ("team/app", "manifests/v1")
        );
        assert_eq!(split("a/-/tags/v1/delete"), ("a", "tags/v1/delete"));
    }
}
