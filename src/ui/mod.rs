//! The web UI under `/ui/`: server-rendered pages (maud templates compiled
//! into the binary) over the same queries as the admin API, for people
//! with a browser.
//!
//! This file holds what every page shares: the routes, sessions (sign-in
//! with berth's accounts, a cookie, a CSRF token per session), who is
//! looking ([`Viewer`]), the page layout, errors and form bodies. Each page
//! family has a file: [`repositories`] (the list and one repository),
//! [`manifest`], [`deploys`], [`storage`], [`accounts`]; [`assets`] serves
//! the stylesheet and the script.
//!
//! Every page shows only what the viewer may pull, and every action is
//! checked on the server whatever the page showed. Anonymous visitors get
//! what anonymous grants allow, never the loopback trust the registry may
//! give: a page in a browser on this host is not a trusted client.

mod accounts;
mod assets;
mod deploys;
mod manifest;
mod repositories;
mod storage;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRef, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use sha2::Digest as _;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::Shared;
use crate::auth::{Auth, Caller, Credentials};
use crate::core::RegistryError;
use crate::core::event::Origin;

/// How long a session lasts after sign-in.
const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;
/// Largest form body read.
const MAX_FORM_BYTES: usize = 64 * 1024;
const SESSION_COOKIE: &str = "berth_session";
/// The token the sign-in form carries before there is a session.
const LOGIN_COOKIE: &str = "berth_login";

/// No inline scripts or styles, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

struct Session {
    account: String,
    csrf: String,
    expires: Instant,
}

/// Signed-in browsers, by the SHA-256 of their cookie (no cookie value is
/// kept). In memory: a restart signs everyone out.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("system randomness");
    hex::encode(bytes)
}

fn key_of(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    /// A new session for `account`; returns the cookie value.
    fn open(&self, account: &str) -> String {
        let token = random_token();
        let mut map = self.map.lock().expect("sessions");
        if map.len() >= SWEEP_AT {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
        }
        map.insert(
            key_of(&token),
            Session {
                account: account.to_owned(),
                csrf: random_token(),
                expires: Instant::now() + SESSION_TTL,
            },
        );
        token
    }

    /// The account and CSRF token of a live session.
    fn find(&self, token: &str) -> Option<(String, String)> {
        let map = self.map.lock().expect("sessions");
        map.get(&key_of(token))
            .filter(|s| s.expires > Instant::now())
            .map(|s| (s.account.clone(), s.csrf.clone()))
    }

    fn close(&self, token: &str) {
        self.map.lock().expect("sessions").remove(&key_of(token));
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
}

fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie header")
}

/// Compares secrets in time independent of where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------------------
// Who is looking
// ---------------------------------------------------------------------------

/// The signed-in account's name and its session's CSRF token.
pub struct SignedIn {
    pub account: String,
    pub csrf: String,
}

/// Who is looking at a page: the caller (for what it may pull and do),
/// the session if signed in, and how the browser reached the registry.
pub struct Viewer {
    pub caller: Caller,
    pub session: Option<SignedIn>,
    /// A registry admin: may see deploys, storage and accounts.
    pub admin: bool,
    /// The `Host` the browser used, for pull commands.
    pub host: String,
    pub tls: bool,
    origin: Origin,
}

impl<S> FromRequestParts<S> for Viewer
where
    S: Send + Sync,
    Arc<Auth>: FromRef<S>,
    Arc<Sessions>: FromRef<S>,
{
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, UiError> {
        let auth = Arc::<Auth>::from_ref(state);
        let sessions = Arc::<Sessions>::from_ref(state);
        let session = cookie(&parts.headers, SESSION_COOKIE).and_then(|t| sessions.find(t));
        let (caller, session) = match session {
            Some((account, csrf)) => match auth.session_caller(&account).await {
                Ok(caller) => (caller, Some(SignedIn { account, csrf })),
                // Disabled or deleted since: signed out.
                Err(RegistryError::Unauthorized(_)) => (auth.anonymous_caller().await?, None),
                Err(e) => return Err(e.into()),
            },
            None => (auth.anonymous_caller().await?, None),
        };
        let admin = session.is_some() && auth.is_admin(&caller).await?;
        let peer = peer(parts);
        let origin = crate::api::auth::origin(&caller, peer, &parts.headers, &parts.method);
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        Ok(Viewer {
            caller,
            session,
            admin,
            host,
            tls: auth.settings.scheme == "https",
            origin,
        })
    }
}

fn peer(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

impl Viewer {
    /// The CSRF token of the session, for forms.
    pub fn csrf(&self) -> &str {
        self.session.as_ref().map_or("", |s| s.csrf.as_str())
    }

    /// Refuses a state-changing form unless it comes from a signed-in
    /// session and carries that session's token.
    pub fn check_form(&self, form: &Form) -> Result<(), UiError> {
        let Some(session) = &self.session else {
            return Err(UiError::Refused(
                "sign in first: this action needs an account".into(),
            ));
        };
        match form.get("csrf") {
            Some(token) if same_secret(token, &session.csrf) => Ok(()),
            _ => Err(UiError::Refused(
                "the form's security token is missing or stale; reload the page and try again"
                    .into(),
            )),
        }
    }

    /// Refuses unless the viewer is a registry admin.
    pub fn require_admin(&self) -> Result<(), UiError> {
        if self.admin {
            Ok(())
        } else {
            Err(UiError::Refused("this page is for registry admins".into()))
        }
    }

    /// The audit entry of a change made through the UI.
    pub async fn audit(&self, meta: &crate::meta::MetaStore, action: &str, target: &str) {
        let entry = crate::meta::NewAudit {
            actor: self.origin.actor.as_deref(),
            address: self.origin.addr.as_deref(),
            action,
            target,
            detail: "web UI",
        };
        if let Err(e) = meta.append_audit(&entry).await {
            tracing::error!(error = %e, action, target, "writing the audit log");
        }
    }
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What a page could not do, answered as a page.
#[derive(Debug)]
pub enum UiError {
    Registry(RegistryError),
    /// The viewer may not see or do this.
    Refused(String),
}

impl From<RegistryError> for UiError {
    fn from(e: RegistryError) -> Self {
        UiError::Registry(e)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        use RegistryError::*;
        let (status, title, message) = match self {
            UiError::Refused(message) => (StatusCode::FORBIDDEN, "Not allowed", message),
            UiError::Registry(e) => {
                let status = match &e {
                    Unauthorized(_) | InsufficientScope(_) | Denied(_) => StatusCode::FORBIDDEN,
                    NotFound(_) | NameUnknown(_) | ManifestUnknown(_) | BlobUnknown(_)
                    | RouteUnknown => StatusCode::NOT_FOUND,
                    Conflict(_) | TagImmutable { .. } => StatusCode::CONFLICT,
                    TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
                    Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    _ => StatusCode::BAD_REQUEST,
                };
                let message = match e {
                    Internal(cause) => {
                        tracing::error!(%cause, "internal error");
                        "internal error; see the registry's log".to_owned()
                    }
                    other => other.to_string(),
                };
                let title = match status {
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::NOT_FOUND => "Not found",
                    _ => "Something went wrong",
                };
                (status, title, message)
            }
        };
        let body = html! {
            p.error { (message) }
            p { a href="/ui/" { "Back to the repositories" } " · " a href="/ui/login" { "Sign in" } }
        };
        (status, Html(bare_page(title, body).into_string())).into_response()
    }
}

pub type UiResult<T> = Result<T, UiError>;

// ---------------------------------------------------------------------------
// Forms
// ---------------------------------------------------------------------------

/// A URL-encoded form body.
pub struct Form(HashMap<String, String>);

impl Form {
    pub async fn read(body: Body) -> UiResult<Form> {
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| RegistryError::Invalid("form too large".into()))?;
        Ok(Form(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// A 303 to `to`, the answer to a form that did what it asked.
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · berth" }
            link rel="icon" href="data:,";
            link rel="stylesheet" href=(assets::CSS_PATH);
            script src=(assets::JS_PATH) defer {}
        }
    }
}

/// A page with the navigation for `v`.
pub fn page(v: &Viewer, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    nav {
                        a.brand href="/ui/" { "berth" }
                        a href="/ui/" { "Repositories" }
                        @if v.admin {
                            a href="/ui/deploys" { "Deploys" }
                            a href="/ui/storage" { "Storage" }
                            a href="/ui/accounts" { "Accounts" }
                        }
                        span.who {
                            @if let Some(s) = &v.session {
                                span #account { (s.account) }
                                form.inline method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(s.csrf);
                                    button #sign-out type="submit" { "Sign out" }
                                }
                            } @else {
                                span { "anonymous" }
                                a #sign-in href="/ui/login" { "Sign in" }
                            }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// A page without navigation: errors and sign-in.
fn bare_page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header { nav { a.brand href="/ui/" { "berth" } } }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn render(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

/// Bytes for people: 1.5 MB.
pub fn human_size(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut size = bytes.max(0) as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// A time for people: `2026-01-02 15:04 UTC`.
pub fn human_time(ms: i64) -> String {
    let text = crate::meta::format_ms(ms);
    // RFC 3339 with milliseconds: keep the date and minutes.
    match (text.get(..10), text.get(11..16)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => text,
    }
}

/// A digest shortened for tables: `sha256:0123456789ab`.
pub fn short_digest(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

// ---------------------------------------------------------------------------
// Sign-in
// ---------------------------------------------------------------------------

/// Where to go after signing in: a UI page, never another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/ui/",
    }
}

fn login_form(token: &str, next: &str, message: Option<&str>) -> Markup {
    bare_page(
        "Sign in",
        html! {
            @if let Some(m) = message { p.error #login-error { (m) } }
            form.stack method="post" action="/ui/login" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="next" value=(next);
                label { "User name" input #user name="user" autocomplete="username" required; }
                label { "Password" input #password type="password" name="password" autocomplete="current-password" required; }
                button #login type="submit" { "Sign in" }
            }
            p.muted { "Robots and users sign in with the same name and secret as "
                code { "docker login" } "." }
        },
    )
}

#[derive(serde::Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn login_page(
    State(auth): State<Arc<Auth>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Response {
    let token = match cookie(&headers, LOGIN_COOKIE) {
        Some(t) if t.len() == 64 => t.to_owned(),
        _ => random_token(),
    };
    let secure = auth.settings.scheme == "https";
    let mut response = render(login_form(&token, safe_next(q.next.as_deref()), None));
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, &token, 3600, secure),
    );
    response
}

async fn login(
    State(auth): State<Arc<Auth>>,
    State(sessions): State<Arc<Sessions>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    let token = cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    let given = form.get("csrf").unwrap_or("");
    if token.is_empty() || !same_secret(token, given) {
        return Err(UiError::Refused(
            "the sign-in form's security token is missing or stale; reload the page".into(),
        ));
    }
    let next = safe_next(form.get("next")).to_owned();
    let user = form.get("user").unwrap_or("").to_owned();
    let password = form.get("password").unwrap_or("").to_owned();
    let secure = auth.settings.scheme == "https";
    let refused = |status: StatusCode, message: &str| {
        let mut r = render(login_form(token, &next, Some(message)));
        *r.status_mut() = status;
        r
    };
    if user.is_empty() {
        return Ok(refused(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        ));
    }
    let caller = auth
        .caller(Credentials::Basic { user, password }, Some(peer.ip()))
        .await;
    match caller {
        Ok(Caller {
            account: Some(account),
            ..
        }) => {
            let session = sessions.open(&account);
            let mut response = see_other(&next);
            let h = response.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION_COOKIE, &session, SESSION_TTL.as_secs(), secure),
            );
            h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", 0, secure));
            Ok(response)
        }
        Ok(_) | Err(RegistryError::Unauthorized(_)) => Ok(refused(
            StatusCode::UNAUTHORIZED,
            "wrong user name or password",
        )),
        Err(RegistryError::TooManyRequests { retry_after }) => Ok(refused(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed sign-ins; try again in {retry_after} s"),
        )),
        Err(e) => Err(e.into()),
    }
}

async fn logout(
    viewer: Viewer,
    State(auth): State<Arc<Auth>>,
    State(sessions): State<Arc<Sessions>>,
    headers: HeaderMap,
    body: Body,
) -> UiResult<Response> {
    let form = Form::read(body).await?;
    viewer.check_form(&form)?;
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        sessions.close(token);
    }
    let mut response = see_other("/ui/");
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, auth.settings.scheme == "https"),
    );
    Ok(response)
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// The UI's routes, `/` included (it leads to `/ui/`).
pub fn router() -> Router<Shared> {
    let set = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value))
    };
    let ui = Router::new()
        .route("/ui/", get(repositories::list))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route(
            "/ui/r/{*path}",
            get(repositories::get_path).post(repositories::post_path),
        )
        .route("/ui/deploys", get(deploys::page))
        .route("/ui/deploys/rollback", post(deploys::rollback))
        .route("/ui/deliveries/redeliver", post(deploys::redeliver))
        .route("/ui/storage", get(storage::page))
        .route("/ui/storage/gc", post(storage::start_gc))
        .route("/ui/accounts", get(accounts::page))
        .route("/ui/accounts/robots", post(accounts::create_robot))
        .route("/ui/accounts/disable", post(accounts::disable))
        .route("/ui/audit", get(accounts::audit))
        .route("/ui/assets/{file}", get(assets::serve))
        .layer(set(header::CONTENT_SECURITY_POLICY, CSP))
        .layer(set(header::X_FRAME_OPTIONS, "DENY"))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .merge(ui)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_pages_stay_in_the_ui() {
        assert_eq!(safe_next(Some("/ui/r/team/app")), "/ui/r/team/app");
        for bad in [
            "//evil.example/ui/",
            "https://evil.example/",
            "/v2/",
            "/ui\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; berth_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
    }

    #[test]
    fn sizes_and_secrets() {
        assert_eq!(human_size(999), "999 B");
        assert_eq!(human_size(1_500_000), "1.5 MB");
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
