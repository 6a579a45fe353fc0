//! Accounts, for registry admins: users and robots with their grants;
//! creating a robot (its secret shown once, with the `kubectl` command
//! that makes an image pull secret of it); disabling and enabling; and
//! the audit log with filters.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;

use super::{Form, UiResult, Viewer, human_time, render, see_other};
use crate::auth::Auth;
use crate::auth::accounts::AccountKind;
use crate::auth::manage::AccountAdmin;
use crate::core::RegistryError;
use crate::meta::MetaStore;

/// Audit entries read for one page, before filtering.
const AUDIT_READ: u32 = 1000;
const AUDIT_SHOWN: usize = 200;

fn grant_text(g: &crate::auth::accounts::Grant) -> String {
    let namespace = if g.namespace.is_everything() {
        "*"
    } else {
        g.namespace.as_str()
    };
    format!("{namespace}: {}", g.actions)
}

async fn accounts_page(v: &Viewer, meta: &MetaStore, created: Option<Markup>) -> UiResult<Markup> {
    let admin = AccountAdmin::new(meta.clone());
    let mut rows = Vec::new();
    for a in admin.list().await? {
        let grants = admin.grants(&a.name).await?;
        rows.push((a, grants));
    }
    Ok(super::page(
        v,
        "Accounts",
        html! {
            @if let Some(c) = created { (c) }
            p { a href="/ui/audit" { "Audit log" } }
            table #accounts {
                thead { tr { th { "Account" } th { "Kind" } th { "Grants" } th { "State" } th {} } }
                tbody {
                    @for (a, grants) in &rows {
                        tr data-account=(a.name) {
                            td { (a.name) }
                            td { (match a.kind { AccountKind::User => "user", AccountKind::Robot => "robot" }) }
                            td { @for g in grants { span.mono { (grant_text(g)) } br; } }
                            td { (if a.disabled { "disabled" } else { "active" }) }
                            td {
                                @if v.session.as_ref().is_some_and(|s| s.account != a.name) {
                                    form.inline method="post" action="/ui/accounts/disable"
                                        data-confirm={ (if a.disabled { "Enable " } else { "Disable " }) (a.name) "?" } {
                                        input type="hidden" name="csrf" value=(v.csrf());
                                        input type="hidden" name="name" value=(a.name);
                                        input type="hidden" name="disabled" value=(if a.disabled { "0" } else { "1" });
                                        button.danger type="submit" { (if a.disabled { "Enable" } else { "Disable" }) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "New robot" }
            form.row method="post" action="/ui/accounts/robots" {
                input type="hidden" name="csrf" value=(v.csrf());
                input #robot-name name="name" placeholder="name" required;
                input #robot-namespace name="namespace" placeholder="namespace (e.g. team/)";
                select name="actions" {
                    option value="pull" { "pull" }
                    option value="pull,push" { "pull, push" }
                    option value="pull,push,delete" { "pull, push, delete" }
                }
                button #create-robot type="submit" { "Create robot" }
            }
        },
    ))
}

pub async fn page_get(v: &Viewer, meta: &MetaStore) -> UiResult<Response> {
    v.require_admin()?;
    Ok(render(accounts_page(v, meta, None).await?))
}

pub async fn page(v: Viewer, State(meta): State<MetaStore>) -> UiResult<Response> {
    page_get(&v, &meta).await
}

pub async fn create_robot(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    v.require_admin()?;
    let name = form.get("name").unwrap_or("").trim().to_owned();
    let admin = AccountAdmin::new(meta.clone());
    let secret = admin.add_robot(&name).await?;
    if let Some(namespace) = form
        .get("namespace")
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        let actions = form.get("actions").unwrap_or("pull");
        admin.grant(&name, namespace, actions).await?;
    }
    auth.forget_cached();
    v.audit(&meta, "account.create", &name).await;
    let server = &v.host;
    let kubectl = format!(
        "kubectl create secret docker-registry {name}-pull --docker-server={server} \
         --docker-username={name} --docker-password={secret}"
    );
    let created = html! {
        div.secret #robot-secret {
            p { "Robot " strong { (name) } " created. Its secret is shown only now:" }
            div.cmd { code #secret-value { (secret) } button type="button" hidden data-copy="secret-value" { "Copy" } }
            p { "An image pull secret for Kubernetes:" }
            div.cmd { code #kubectl-secret { (kubectl) } button type="button" hidden data-copy="kubectl-secret" { "Copy" } }
        }
    };
    let mut response = render(accounts_page(&v, &meta, Some(created)).await?);
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

pub async fn disable(
    v: Viewer,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    v.check_form(&form)?;
    v.require_admin()?;
    let name = form.get("name").unwrap_or("");
    if v.session.as_ref().is_some_and(|s| s.account == name) {
        return Err(
            RegistryError::Invalid("you cannot disable your own account here".into()).into(),
        );
    }
    let disabled = form.get("disabled") == Some("1");
    AccountAdmin::new(meta.clone())
        .set_disabled(name, disabled)
        .await?;
    auth.forget_cached();
    let action = if disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    v.audit(&meta, action, name).await;
    Ok(see_other("/ui/accounts"))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
}

pub async fn audit(
    v: Viewer,
    State(meta): State<MetaStore>,
    Query(q): Query<AuditQuery>,
) -> UiResult<Response> {
    v.require_admin()?;
    let want = |f: &Option<String>| f.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
    let (actor, action, target) = (want(&q.actor), want(&q.action), want(&q.target));
    let rows: Vec<_> = meta
        .audit_rows(AUDIT_READ, None)
        .await?
        .into_iter()
        .filter(|r| {
            actor
                .as_deref()
                .is_none_or(|a| r.actor.as_deref() == Some(a))
        })
        .filter(|r| action.as_deref().is_none_or(|a| r.action.starts_with(a)))
        .filter(|r| target.as_deref().is_none_or(|t| r.target.contains(t)))
        .take(AUDIT_SHOWN)
        .collect();
    let body = html! {
        form.row method="get" action="/ui/audit" {
            input name="actor" value=[actor.as_deref()] placeholder="actor";
            input name="action" value=[action.as_deref()] placeholder="action (e.g. manifest.)";
            input name="target" value=[target.as_deref()] placeholder="target contains";
            button type="submit" { "Filter" }
            a href="/ui/audit" { "Clear" }
        }
        table #audit {
            thead { tr { th { "When" } th { "Actor" } th { "Address" } th { "Action" } th { "Target" } th { "Detail" } } }
            tbody {
                @for r in &rows {
                    tr {
                        td { (human_time(r.at)) }
                        td { (r.actor.as_deref().unwrap_or("")) }
                        td { (r.address.as_deref().unwrap_or("")) }
                        td.mono { (r.action) }
                        td.mono { (r.target) }
                        td { (r.detail) }
                    }
                }
            }
        }
    };
    Ok(render(super::page(&v, "Audit log", body)))
}
