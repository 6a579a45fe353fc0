//! `Upstream`: an HTTP client of one upstream registry, authenticating as
//! registries ask. A request goes out with what worked last time; a `401`
//! names the scheme in `WWW-Authenticate`:
//!
//! - `Bearer realm=...,service=...,scope=...` (Docker Hub, ghcr.io, berth):
//!   a token is fetched from the realm (another host, as auth.docker.io
//!   is), with the mirror's credentials if it has any, for the scope
//!   `repository:<name>:pull`, and reused for every request of that scope
//!   until it expires;
//! - `Basic realm=...` (a registry behind htpasswd): the credentials go on
//!   every request from then on.
//!
//! Failures are one of two kinds the mirror treats differently: the
//! upstream says the thing does not exist (404), or the upstream failed
//! (unreachable, timed out, 5xx, 429, refused our credentials).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

/// Tokens are dropped this long before they expire, so none expires on
/// its way.
const TOKEN_MARGIN: Duration = Duration::from_secs(10);
/// What the token spec says a token lives when its answer does not say.
const DEFAULT_TOKEN_SECONDS: u64 = 60;
/// Most bytes of an upstream's error body quoted in a message.
const QUOTED_ERROR: usize = 300;

/// Why an upstream request did not succeed.
#[derive(Clone, Debug)]
pub struct UpstreamError {
    /// The upstream answered 404: the thing does not exist there.
    pub not_found: bool,
    /// What happened, naming the upstream's answer.
    pub message: String,
}

impl UpstreamError {
    fn failed(message: String) -> UpstreamError {
        UpstreamError {
            not_found: false,
            message,
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How the upstream asked to be authenticated, as last seen.
#[derive(Clone, Debug, PartialEq)]
enum Scheme {
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

struct Token {
    value: String,
    expires: Instant,
}

pub struct Upstream {
    /// `https://host[:port]`, no trailing slash.
    base: String,
    credentials: Option<(String, String)>,
    http: reqwest::Client,
    scheme: Mutex<Scheme>,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, Token>>,
}

impl Upstream {
    pub fn new(
        base: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> anyhow::Result<Upstream> {
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION"), " (mirror)"))
            .build()?;
        Ok(Upstream {
            base: base.trim_end_matches('/').to_owned(),
            credentials: (!username.is_empty()).then(|| (username.to_owned(), password.to_owned())),
            http,
            scheme: Mutex::new(Scheme::Anonymous),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET` or `HEAD` of `/v2/<repo>/<path>` (`manifests/<ref>`,
    /// `blobs/<digest>`), authenticated as the upstream wants. Redirects
    /// are followed (Docker Hub sends blobs from a CDN), without our
    /// credentials. A non-2xx answer is an error.
    pub async fn get(
        &self,
        method: Method,
        repo: &str,
        path: &str,
        accept: Option<&str>,
    ) -> Result<Response, UpstreamError> {
        let url = format!("{}/v2/{repo}/{path}", self.base);
        let scope = format!("repository:{repo}:pull");
        let mut retried = false;
        loop {
            let mut request = self.http.request(method.clone(), &url);
            if let Some(accept) = accept {
                request = request.header(ACCEPT, accept);
            }
            if let Some(authorization) = self.authorization(&scope).await? {
                request = request.header(AUTHORIZATION, authorization);
            }
            let response = request
                .send()
                .await
                .map_err(|e| UpstreamError::failed(format!("{method} {url}: {}", chain(&e))))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                if self.learn_scheme(response.headers(), &scope) {
                    continue;
                }
            }
            if status.is_success() {
                return Ok(response);
            }
            return Err(answer_error(&method, &url, response).await);
        }
    }

    /// Records the scheme a 401 asked for; true if trying again may help.
    fn learn_scheme(&self, headers: &HeaderMap, scope: &str) -> bool {
        let Some(scheme) = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(parse_scheme)
        else {
            return false;
        };
        let mut current = self.scheme.lock().expect("upstream scheme");
        let changed = *current != scheme;
        // The token we sent was refused (expired early, revoked): fetch
        // another.
        self.tokens.lock().expect("upstream tokens").remove(scope);
        let useful = match &scheme {
            Scheme::Basic => self.credentials.is_some() && changed,
            Scheme::Bearer { .. } => true,
            Scheme::Anonymous => false,
        };
        *current = scheme;
        useful
    }

    /// The `Authorization` header for a request of `scope`, fetching a
    /// token if the upstream wants one and none is cached.
    async fn authorization(&self, scope: &str) -> Result<Option<String>, UpstreamError> {
        let scheme = self.scheme.lock().expect("upstream scheme").clone();
        match scheme {
            Scheme::Anonymous => Ok(None),
            Scheme::Basic => Ok(self.credentials.as_ref().map(|(user, password)| {
                use base64::Engine;
                let pair = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            })),
            Scheme::Bearer { realm, service } => {
                if let Some(token) = self.tokens.lock().expect("upstream tokens").get(scope)
                    && token.expires > Instant::now()
                {
                    return Ok(Some(format!("Bearer {}", token.value)));
                }
                let token = self.fetch_token(&realm, service.as_deref(), scope).await?;
                let header = format!("Bearer {}", token.value);
                let mut tokens = self.tokens.lock().expect("upstream tokens");
                // One token per repository pulled: the expired ones go.
                let now = Instant::now();
                tokens.retain(|_, t| t.expires > now);
                tokens.insert(scope.to_owned(), token);
                Ok(Some(header))
            }
        }
    }

    /// A token from the realm (the Docker token spec's GET form).
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Token, UpstreamError> {
        let mut query = vec![("scope", scope)];
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = self.http.get(realm).query(&query);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let what = format!("the token service {realm}");
        let response = request
            .send()
            .await
            .map_err(|e| UpstreamError::failed(format!("{what}: {}", chain(&e))))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = quoted_body(response).await;
            return Err(UpstreamError::failed(format!(
                "{what} answered {status}{body}"
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let answer: Answer = response
            .json()
            .await
            .map_err(|e| UpstreamError::failed(format!("{what}: unreadable answer: {e}")))?;
        let value = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| UpstreamError::failed(format!("{what} answered without a token")))?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_SECONDS));
        Ok(Token {
            value,
            expires: Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN),
        })
    }
}

/// The scheme of one `WWW-Authenticate` value berth can answer.
fn parse_scheme(value: &str) -> Option<Scheme> {
    let challenges = http_auth::parse_challenges(value).ok()?;
    challenges.iter().find_map(|c| {
        let param = |name: &str| {
            c.params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.to_unescaped())
        };
        if c.scheme.eq_ignore_ascii_case("bearer") {
            Some(Scheme::Bearer {
                realm: param("realm")?,
                service: param("service"),
            })
        } else if c.scheme.eq_ignore_ascii_case("basic") {
            Some(Scheme::Basic)
        } else {
            None
        }
    })
}

/// An error for a non-2xx answer, naming it: status, and the first OCI
/// error's code and message (or the start of the body).
async fn answer_error(method: &Method, url: &str, response: Response) -> UpstreamError {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|v| format!(" (retry after {v})"))
        .unwrap_or_default();
    let body = match *method {
        Method::HEAD => String::new(),
        _ => quoted_body(response).await,
    };
    UpstreamError {
        not_found: status == StatusCode::NOT_FOUND,
        message: format!("{method} {url} answered {status}{retry_after}{body}"),
    }
}

/// `: CODE: message` of an OCI error body, or `: <start of body>`.
async fn quoted_body(response: Response) -> String {
    let Ok(bytes) = response.bytes().await else {
        return String::new();
    };
    let bytes = &bytes[..bytes.len().min(64 * 1024)];
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(first) = json["errors"].get(0)
    {
        return format!(
            ": {} {}",
            first["code"].as_str().unwrap_or(""),
            first["message"].as_str().unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let cut: String = text.chars().take(QUOTED_ERROR).collect();
    format!(": {cut}")
}

/// An error with its causes, which reqwest keeps apart ("error sending
/// request" alone says nothing).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_scheme(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#
            ),
            Some(Scheme::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
            })
        );
        assert_eq!(
            parse_scheme(r#"Basic realm="Registry Realm""#),
            Some(Scheme::Basic)
        );
        assert_eq!(
            parse_scheme(r#"bearer realm="http://127.0.0.1:1/t""#),
            Some(Scheme::Bearer {
                realm: "http://127.0.0.1:1/t".into(),
                service: None,
            })
        );
        assert_eq!(parse_scheme("Negotiate"), None);
        assert_eq!(parse_scheme("Bearer service=\"x\""), None);
        assert_eq!(parse_scheme("garbage \"\""), None);
    }
}
