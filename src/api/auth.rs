//! The HTTP side of authentication: what each `/v2/` endpoint needs, the
//! `WWW-Authenticate` challenge that tells a client where to get a token,
//! and the token service at `/auth/token` (GET as in the Docker token spec,
//! POST as in its OAuth2 form, which containerd tries first).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::endpoint::Endpoint;
use crate::auth::scope::{Actions, ResourceScope};
use crate::auth::{Auth, Caller, Credentials};
use crate::core::{RegistryError, Result};

/// Largest token request body read (an OAuth2 form).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// What a request on `endpoint` needs. `None`: only that the caller is
/// authenticated (the `/v2/` version check).
pub fn needs(endpoint: &Endpoint, method: &Method) -> Option<ResourceScope> {
    use Endpoint as E;
    let on = |repo: &crate::core::names::RepoName, actions| {
        Some(ResourceScope::repository(repo.clone(), actions))
    };
    match endpoint {
        E::Base => None,
        E::Catalog => Some(ResourceScope::catalog()),
        E::Tags(repo) | E::Referrers(repo, _) => on(repo, Actions::PULL),
        E::Manifest(repo, _)
        | E::Blob(repo, _)
        | E::UnnamedManifest(repo, _)
        | E::UnnamedBlob(repo, _) => match *method {
            Method::PUT | Method::POST | Method::PATCH => on(repo, Actions::PUSH),
            Method::DELETE => on(repo, Actions::DELETE),
            _ => on(repo, Actions::PULL),
        },
        E::Uploads(repo) | E::Upload(repo, _) => on(repo, Actions::PUSH),
    }
}

/// The client's address, when the server recorded it.
pub fn peer(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Who made the request and how, for the events and audit lines it causes.
pub fn origin(
    caller: &Caller,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    method: &axum::http::Method,
) -> crate::core::event::Origin {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    crate::core::event::Origin {
        actor: caller.account.clone(),
        request_id: header("x-request-id"),
        addr: peer.map(|p| p.to_string()),
        host: header("host"),
        method: Some(method.to_string()),
        user_agent: header("user-agent"),
    }
}

/// Authenticates the request and checks it may do what `need` says.
pub async fn admit(
    auth: &Auth,
    headers: &HeaderMap,
    peer: Option<IpAddr>,
    need: Option<&ResourceScope>,
) -> Result<Caller> {
    let header = headers
        .get(header::AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| RegistryError::Unauthorized("malformed Authorization header".into()))
        })
        .transpose()?;
    let caller = auth.caller(Credentials::parse(header)?, peer).await?;
    match need {
        Some(need) => auth.authorize(&caller, std::slice::from_ref(need)).await?,
        None if !caller.authenticated => {
            return Err(RegistryError::Unauthorized(
                "authentication required".into(),
            ));
        }
        None => {}
    }
    Ok(caller)
}

/// For a cross-repository mount (`POST .../blobs/uploads/?mount=&from=`),
/// pull on the repository it mounts from.
pub fn mount_source(
    endpoint: &Endpoint,
    method: &Method,
    query: Option<&str>,
) -> Option<ResourceScope> {
    if !matches!((endpoint, method), (Endpoint::Uploads(_), &Method::POST)) {
        return None;
    }
    let params = pairs(query.unwrap_or("").as_bytes());
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    get("mount")?;
    let from = get("from")?.parse().ok()?;
    Some(ResourceScope::repository(from, Actions::PULL))
}

/// What a 401 to a request on `endpoint` asks the client to get a token
/// for: what the request needs and, for a mount, pull on its source (as
/// Distribution's challenge does), so that a client asking for exactly
/// the challenged scopes can mount.
pub fn challenge_scopes(
    endpoint: &Endpoint,
    method: &Method,
    query: Option<&str>,
) -> Vec<ResourceScope> {
    needs(endpoint, method)
        .into_iter()
        .chain(mount_source(endpoint, method, query))
        .collect()
}

/// The answer to a refused request. A 401 carries the `WWW-Authenticate`
/// challenge, naming the scopes the request needs (`challenge`) so the
/// client can ask the token service for them.
pub fn refusal(
    auth: &Auth,
    headers: &HeaderMap,
    challenge: &[ResourceScope],
    error: RegistryError,
) -> Response {
    let error_param = match error {
        RegistryError::Unauthorized(_) if has_bearer(headers) => ",error=\"invalid_token\"",
        RegistryError::InsufficientScope(_) => ",error=\"insufficient_scope\"",
        RegistryError::Unauthorized(_) => "",
        _ => return error.into_response(),
    };
    let mut response = error.into_response();
    let scope = challenge
        .iter()
        .map(|n| {
            // Clients that push also read (HEAD before upload), so a push
            // challenge asks for both, as Distribution's does.
            let mut n = n.clone();
            if n.actions.contains(Actions::PUSH) {
                n.actions = n.actions.union(Actions::PULL);
            }
            n.to_string()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let scope = match scope.is_empty() {
        true => String::new(),
        false => format!(",scope=\"{scope}\""),
    };
    let value = format!(
        "Bearer realm=\"{}\",service=\"{}\"{scope}{error_param}",
        realm(auth, headers),
        auth.settings.service
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

fn has_bearer(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() > 7 && v[..7].eq_ignore_ascii_case("bearer "))
}

/// The token service's URL: configured, or this server as the client
/// reached it.
fn realm(auth: &Auth, headers: &HeaderMap) -> String {
    if !auth.settings.realm.is_empty() {
        return auth.settings.realm.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
        .unwrap_or("localhost");
    format!("{}://{host}/auth/token", auth.settings.scheme)
}

/// `GET|POST /auth/token`.
pub async fn token(
    State(auth): State<Arc<Auth>>,
    State(mirrors): State<Arc<crate::mirror::Mirrors>>,
    request: Request,
) -> Response {
    match issue(&auth, &mirrors, request).await {
        Ok(response) => response,
        Err(e) => {
            let basic = matches!(e, RegistryError::Unauthorized(_));
            let mut response = e.into_response();
            if basic {
                let v = format!("Basic realm=\"{}\"", auth.settings.service);
                if let Ok(v) = HeaderValue::from_str(&v) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            response
        }
    }
}

async fn issue(
    auth: &Auth,
    mirrors: &crate::mirror::Mirrors,
    request: Request,
) -> Result<Response> {
    let peer = peer(&request);
    let (parts, body) = request.into_parts();
    let (params, credentials, oauth) = match parts.method {
        Method::GET => {
            let params = pairs(parts.uri.query().unwrap_or("").as_bytes());
            let header = parts
                .headers
                .get(header::AUTHORIZATION)
                .map(|v| v.to_str().unwrap_or(""));
            let credentials = match Credentials::parse(header)? {
                Credentials::Bearer(_) => {
                    return Err(RegistryError::Unauthorized(
                        "the token service takes a user name and password".into(),
                    ));
                }
                other => other,
            };
            (params, credentials, false)
        }
        Method::POST => {
            let form = axum::body::to_bytes(body, MAX_FORM_BYTES)
                .await
                .map_err(|e| {
                    RegistryError::TokenRequestInvalid(format!("reading the form: {e}"))
                })?;
            let params = pairs(&form);
            let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            match get("grant_type").as_deref() {
                Some("password") => {
                    let credentials = Credentials::Basic {
                        user: get("username").unwrap_or_default(),
                        password: get("password").unwrap_or_default(),
                    };
                    (params, credentials, true)
                }
                other => {
                    return Err(RegistryError::TokenRequestInvalid(format!(
                        "unsupported grant_type {:?}; use password, or GET with Basic auth",
                        other.unwrap_or("")
                    )));
                }
            }
        }
        _ => return Err(RegistryError::MethodNotAllowed),
    };
    if let Some((_, service)) = params.iter().find(|(k, _)| k == "service")
        && service != &auth.settings.service
    {
        return Err(RegistryError::TokenRequestInvalid(format!(
            "this token service serves {:?}, not {service:?}",
            auth.settings.service
        )));
    }
    let mut wanted = Vec::new();
    for (_, scope) in params.iter().filter(|(k, _)| k == "scope") {
        wanted
            .extend(ResourceScope::parse_list(scope).map_err(RegistryError::TokenRequestInvalid)?);
    }
    // Pulls through a mirror are authorized on the names it keeps them
    // under, which a client asking for its own name does not know.
    let aliases = mirrors.pull_aliases(&wanted).await;
    wanted.extend(aliases);
    let caller = auth.caller(credentials, peer).await?;
    let issued = auth.issue_token(&caller, &wanted).await;
    let issued_at = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(issued.issued_at),
    )
    .to_string();
    let mut body = json!({
        "token": issued.token,
        "access_token": issued.token,
        "expires_in": issued.expires_in,
        "issued_at": issued_at,
    });
    if oauth {
        // OAuth2 names the scope granted, which may be less than asked.
        let scopes: Vec<String> = issued.access.iter().map(|s| s.to_string()).collect();
        body["scope"] = json!(scopes.join(" "));
    }
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

fn pairs(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
