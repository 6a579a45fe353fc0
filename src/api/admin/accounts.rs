//! Accounts (users and robots) and their grants.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AdminCaller, ApiError, ApiResult, Body, Segments};
use crate::auth::Auth;
use crate::auth::accounts::{Account, Grant};
use crate::auth::manage::AccountAdmin;
use crate::core::RegistryError;
use crate::meta::MetaStore;

#[derive(Serialize, ToSchema)]
pub struct GrantInfo {
    /// A repository name prefix, or `*` for every repository.
    pub namespace: String,
    pub actions: Vec<String>,
}

impl From<&Grant> for GrantInfo {
    fn from(g: &Grant) -> Self {
        GrantInfo {
            namespace: if g.namespace.is_everything() {
                "*".into()
            } else {
                g.namespace.as_str().to_owned()
            },
            actions: g
                .actions
                .to_string()
                .split(',')
                .map(str::to_owned)
                .collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountInfo {
    pub name: String,
    /// `user` or `robot`.
    pub kind: String,
    pub disabled: bool,
    pub grants: Vec<GrantInfo>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub name: String,
    /// `user` (default) or `robot`.
    #[serde(default)]
    pub kind: Option<String>,
    /// A user's password (8 characters or more); generated when absent.
    /// Robots always get a generated secret.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountSecret {
    pub name: String,
    /// Shown once; berth keeps only its hash.
    pub secret: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountChange {
    pub disabled: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSecret {
    /// A user's new password; generated when absent.
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantActions {
    /// Any of pull, push, delete, admin (`*` for all).
    pub actions: Vec<String>,
}

pub(super) async fn account_info(meta: &MetaStore, a: Account) -> ApiResult<AccountInfo> {
    let grants = meta.grants(&a.name).await?;
    Ok(AccountInfo {
        kind: a.kind.as_str().to_owned(),
        disabled: a.disabled,
        grants: grants.iter().map(GrantInfo::from).collect(),
        name: a.name,
    })
}

#[utoipa::path(get, path = "/admin/v1/accounts", tag = "accounts",
    responses((status = 200, body = Vec<AccountInfo>)))]
pub(super) async fn list_accounts(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
) -> ApiResult<Json<Vec<AccountInfo>>> {
    let mut out = Vec::new();
    for a in AccountAdmin::new(meta.clone()).list().await? {
        out.push(account_info(&meta, a).await?);
    }
    Ok(Json(out))
}

#[utoipa::path(post, path = "/admin/v1/accounts", tag = "accounts",
    request_body = NewAccount,
    responses((status = 201, body = AccountSecret), (status = 400, body = ApiError), (status = 409, body = ApiError)))]
pub(super) async fn create_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    Body(new): Body<NewAccount>,
) -> ApiResult<(StatusCode, Json<AccountSecret>)> {
    let accounts = AccountAdmin::new(meta.clone());
    let secret = match new.kind.as_deref().unwrap_or("user") {
        "user" => accounts.add_user(&new.name, new.password, false).await?,
        "robot" if new.password.is_some() => {
            return Err(RegistryError::Invalid("robot secrets are generated".into()).into());
        }
        "robot" => accounts.add_robot(&new.name).await?,
        other => {
            return Err(
                RegistryError::Invalid(format!("kind {other:?} is not user or robot")).into(),
            );
        }
    };
    admin.audit(&meta, "account.create", &new.name, "").await;
    Ok((
        StatusCode::CREATED,
        Json(AccountSecret {
            name: new.name,
            secret,
        }),
    ))
}

pub(super) async fn account(meta: &MetaStore, name: &str) -> ApiResult<Account> {
    Ok(meta
        .account(name)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("no account {name:?}")))?)
}

#[utoipa::path(get, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    responses((status = 200, body = AccountInfo), (status = 404, body = ApiError)))]
pub(super) async fn get_account(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<AccountInfo>> {
    let a = account(&meta, &name).await?;
    Ok(Json(account_info(&meta, a).await?))
}

#[utoipa::path(patch, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    request_body = AccountChange,
    responses((status = 200, body = AccountInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn change_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(change): Body<AccountChange>,
) -> ApiResult<Json<AccountInfo>> {
    AccountAdmin::new(meta.clone())
        .set_disabled(&name, change.disabled)
        .await?;
    auth.forget_cached();
    let action = if change.disabled {
        "account.disable"
    } else {
        "account.enable"
    };
    admin.audit(&meta, action, &name, "").await;
    let a = account(&meta, &name).await?;
    Ok(Json(account_info(&meta, a).await?))
}

#[utoipa::path(post, path = "/admin/v1/accounts/{name}/secret", tag = "accounts",
    params(("name" = String, Path)),
    request_body = NewSecret,
    responses((status = 200, body = AccountSecret), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn rotate_secret(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
    Body(new): Body<NewSecret>,
) -> ApiResult<Json<AccountSecret>> {
    let secret = AccountAdmin::new(meta.clone())
        .set_secret(&name, new.password)
        .await?;
    auth.forget_cached();
    admin.audit(&meta, "account.secret", &name, "").await;
    Ok(Json(AccountSecret { name, secret }))
}

#[utoipa::path(delete, path = "/admin/v1/accounts/{name}", tag = "accounts",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ApiError)))]
pub(super) async fn delete_account(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments(name): Segments<String>,
) -> ApiResult<StatusCode> {
    AccountAdmin::new(meta.clone()).delete(&name).await?;
    auth.forget_cached();
    admin.audit(&meta, "account.delete", &name, "").await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/accounts/{name}/grants", tag = "accounts",
    params(("name" = String, Path, description = "An account, or `anonymous`")),
    responses((status = 200, body = Vec<GrantInfo>), (status = 404, body = ApiError)))]
pub(super) async fn list_grants(
    _admin: AdminCaller,
    State(meta): State<MetaStore>,
    Segments(name): Segments<String>,
) -> ApiResult<Json<Vec<GrantInfo>>> {
    let grants = AccountAdmin::new(meta).grants(&name).await?;
    Ok(Json(grants.iter().map(GrantInfo::from).collect()))
}

#[utoipa::path(put, path = "/admin/v1/accounts/{name}/grants/{namespace}", tag = "accounts",
    params(("name" = String, Path, description = "An account, or `anonymous`"),
           ("namespace" = String, Path, description = "Repository name prefix, percent-encoded, or `*`")),
    request_body = GrantActions,
    responses((status = 200, body = GrantInfo), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn put_grant(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments((name, namespace)): Segments<(String, String)>,
    Body(body): Body<GrantActions>,
) -> ApiResult<Json<GrantInfo>> {
    let actions = body.actions.join(",");
    let grant = AccountAdmin::new(meta.clone())
        .grant(&name, &namespace, &actions)
        .await?;
    auth.forget_cached();
    admin
        .audit(
            &meta,
            "grant.put",
            &format!("{name} on {namespace}"),
            &actions,
        )
        .await;
    Ok(Json(GrantInfo::from(&grant)))
}

#[utoipa::path(delete, path = "/admin/v1/accounts/{name}/grants/{namespace}", tag = "accounts",
    params(("name" = String, Path), ("namespace" = String, Path, description = "Percent-encoded, or `*`")),
    responses((status = 204), (status = 400, body = ApiError), (status = 404, body = ApiError)))]
pub(super) async fn delete_grant(
    admin: AdminCaller,
    State(meta): State<MetaStore>,
    State(auth): State<Arc<Auth>>,
    Segments((name, namespace)): Segments<(String, String)>,
) -> ApiResult<StatusCode> {
    AccountAdmin::new(meta.clone())
        .revoke(&name, &namespace)
        .await?;
    auth.forget_cached();
    admin
        .audit(&meta, "grant.delete", &format!("{name} on {namespace}"), "")
        .await;
    Ok(StatusCode::NO_CONTENT)
}
