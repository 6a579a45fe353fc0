//! Authentication over real HTTP against a real berth process that needs
//! credentials: the token challenge, the token service, bearer tokens and
//! Basic auth on `/v2/`, forged and stale tokens, external issuers, scope
//! and name injection, login throttling, and the secure defaults. Each test
//! asserts what a client sees: status, OCI error code and headers.

mod common;

use std::collections::HashMap;

use base64::Engine;
use common::{Berth, expect_error, header, sha256};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const B64URL: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

// ---- credentials and requests ---------------------------------------------

/// What a request presents in its `Authorization` header.
#[derive(Clone, Debug)]
enum Cred {
    None,
    Basic(String, String),
    Bearer(String),
}

impl Cred {
    fn basic(user: &str, password: &str) -> Cred {
        Cred::Basic(user.to_owned(), password.to_owned())
    }

    fn apply(&self, request: RequestBuilder) -> RequestBuilder {
        match self {
            Cred::None => request,
            Cred::Basic(user, password) => request.basic_auth(user, Some(password)),
            Cred::Bearer(token) => request.bearer_auth(token),
        }
    }
}

fn admin(b: &Berth) -> Cred {
    Cred::basic("admin", &b.admin_password())
}

/// Adds a user with a known password (and no grants); returns its Basic
/// credentials.
fn add_user(b: &Berth, name: &str) -> Cred {
    let password = format!("password-of-{name}");
    b.manage_with_input(
        &["user", "add", name, "--password-stdin"],
        &format!("{password}\n"),
    );
    Cred::basic(name, &password)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts a 401 whose challenge carries `error="<error>"`; returns the
/// challenge's parameters.
async fn expect_challenge(r: reqwest::Response, error: &str) -> HashMap<String, String> {
    let params = challenge(&r);
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    assert_eq!(params.get("error").map(String::as_str), Some(error));
    params
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge.
fn challenge(r: &reqwest::Response) -> HashMap<String, String> {
    let value = header(r, "www-authenticate");
    let mut rest = value
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a Bearer challenge: {value}"));
    let mut params = HashMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("key=\"value\"");
        let (val, after) = after.split_once('"').expect("closing quote");
        params.insert(key.to_owned(), val.to_owned());
        rest = after.strip_prefix(',').unwrap_or(after);
    }
    params
}

async fn get(c: &Client, b: &Berth, cred: &Cred, path: &str) -> reqwest::Response {
    cred.apply(c.get(b.url(path))).send().await.unwrap()
}

async fn post(c: &Client, b: &Berth, cred: &Cred, path: &str) -> reqwest::Response {
    cred.apply(c.post(b.url(path))).send().await.unwrap()
}

// ---- the token service ----------------------------------------------------

/// `GET /auth/token` with `service=berth` and each scope as its own
/// `scope` parameter.
async fn request_token(c: &Client, b: &Berth, cred: &Cred, scopes: &[&str]) -> reqwest::Response {
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("service", "berth");
    for scope in scopes {
        query.append_pair("scope", scope);
    }
    let url = b.url(&format!("/auth/token?{}", query.finish()));
    cred.apply(c.get(url)).send().await.unwrap()
}

/// A token for `scopes`, which the service must issue.
async fn token(c: &Client, b: &Berth, cred: &Cred, scopes: &[&str]) -> String {
    let r = request_token(c, b, cred, scopes).await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    body["token"].as_str().expect("a token").to_owned()
}

/// The claims of a JWT, read without checking its signature.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&B64URL.decode(payload).expect("base64url payload")).unwrap()
}

fn repo_access(name: &str, actions: &[&str]) -> Value {
    json!({"type": "repository", "name": name, "actions": actions})
}

// ---- pushing and pulling --------------------------------------------------

/// Pushes a blob in two steps (POST a session, PUT its bytes); returns the
/// digest.
async fn push_blob(c: &Client, b: &Berth, cred: &Cred, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let r = post(c, b, cred, &format!("/v2/{repo}/blobs/uploads/")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
    let location = header(&r, "location");
    let sep = if location.contains('?') { '&' } else { '?' };
    let r = cred
        .apply(c.put(b.url(&format!("{location}{sep}digest={digest}"))))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    digest
}

/// Pushes a small image (config, one layer, manifest) as `repo:tag`;
/// returns the manifest's bytes.
async fn push_image(c: &Client, b: &Berth, cred: &Cred, repo: &str, tag: &str) -> Vec<u8> {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","image":"{repo}:{tag}"}}"#);
    let layer = format!("the only layer of {repo}:{tag}").repeat(50);
    let config_digest = push_blob(c, b, cred, repo, config.as_bytes()).await;
    let layer_digest = push_blob(c, b, cred, repo, layer.as_bytes()).await;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    }))
    .unwrap();
    let r = cred
        .apply(c.put(b.url(&format!("/v2/{repo}/manifests/{tag}"))))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    assert_eq!(header(&r, "docker-content-digest"), sha256(&manifest));
    manifest
}

/// Pulls `repo:tag` and each blob it names, checking the bytes.
async fn pull_image(c: &Client, b: &Berth, cred: &Cred, repo: &str, tag: &str, want: &[u8]) {
    let r = cred
        .apply(c.get(b.url(&format!("/v2/{repo}/manifests/{tag}"))))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    if r.status() != StatusCode::OK {
        let head = format!("{r:?}");
        panic!("pulling {repo}:{tag}: {head} {}", r.text().await.unwrap());
    }
    let manifest = r.bytes().await.unwrap();
    assert_eq!(manifest, want);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    for descriptor in layers.iter().chain([&manifest["config"]]) {
        let digest = descriptor["digest"].as_str().unwrap();
        let r = get(c, b, cred, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{r:?}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
    }
}

// ---- keys and hand-made tokens --------------------------------------------

/// A P-256 key that signs tokens: berth's own, or one made up by a test.
struct Key(p256::SecretKey);

impl Key {
    /// A key derived from `seed`, the same on every run.
    fn from_seed(seed: &str) -> Key {
        let bytes = hex::decode(&sha256(seed.as_bytes())["sha256:".len()..]).unwrap();
        Key(p256::SecretKey::from_slice(&bytes).expect("a valid scalar"))
    }

    /// The key berth signs its tokens with, read from its data directory.
    fn berths(b: &Berth) -> Key {
        let pem = std::fs::read_to_string(b.data_dir().join("keys/token-signing-key.pem"))
            .expect("berth's signing key");
        Key(p256::SecretKey::from_pkcs8_pem(&pem).expect("a PKCS#8 P-256 key"))
    }

    fn public_pem(&self) -> String {
        self.0
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    fn public_der(&self) -> Vec<u8> {
        self.0
            .public_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    /// The public key as a JWK. A P-256 SubjectPublicKeyInfo ends with the
    /// uncompressed point `04 || x || y`.
    fn public_jwk(&self, kid: &str) -> Value {
        let der = self.public_der();
        let point = &der[der.len() - 65..];
        assert_eq!(point[0], 4, "an uncompressed point");
        json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64URL.encode(&point[1..33]),
            "y": B64URL.encode(&point[33..]),
            "kid": kid,
            "use": "sig",
            "alg": "ES256",
        })
    }

    fn sign(&self, claims: &Value) -> String {
        let pem = self.0.to_pkcs8_pem(LineEnding::LF).unwrap();
        let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &key).unwrap()
    }
}

/// Claims that would let their bearer do everything: list the catalog and
/// pull, push, delete and administer `team/app`.
fn all_powerful_claims(iss: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "sub": "admin",
        "aud": "berth",
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "jti": "test-token",
        "access": [
            {"type": "registry", "name": "catalog", "actions": ["*"]},
            {"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete", "admin"]},
        ],
    })
}

/// A JWT with the given header and claims and no signature.
fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        B64URL.encode(header.to_string()),
        B64URL.encode(claims.to_string())
    )
}

// ---- raw HTTP -------------------------------------------------------------

/// An answer to a request sent exactly as written.
struct RawResponse {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawResponse {
    fn error_code(&self) -> Option<String> {
        let body: Value = serde_json::from_slice(&self.body).ok()?;
        body["errors"][0]["code"].as_str().map(str::to_owned)
    }
}

/// Sends a request whose target is `path` byte for byte. An HTTP client
/// library would resolve `..` and `%2e%2e` segments before sending, which
/// is exactly what these tests must not let happen.
async fn raw_request(b: &Berth, method: &str, path: &str, cred: &Cred) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authorization = match cred {
        Cred::None => String::new(),
        Cred::Basic(user, password) => format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ),
        Cred::Bearer(token) => format!("Authorization: Bearer {token}\r\n"),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n",
        b.host
    );
    let mut stream = tokio::net::TcpStream::connect(&b.host).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    RawResponse {
        status,
        head,
        body: answer[split + 4..].to_vec(),
    }
}

// ===========================================================================
// 1. The challenge
// ===========================================================================

#[tokio::test]
async fn requests_without_credentials_get_a_bearer_challenge() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let realm = format!("http://{}/auth/token", b.host);

    let r = get(&c, &b, &Cred::None, "/v2/").await;
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(r#"Bearer realm="{realm}",service="berth""#)
    );
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let r = get(&c, &b, &Cred::None, "/v2/team/app/manifests/x").await;
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(r#"Bearer realm="{realm}",service="berth",scope="repository:team/app:pull""#)
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // A push asks for pull too: clients check for blobs before uploading.
    let r = post(&c, &b, &Cred::None, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(
        header(&r, "www-authenticate"),
        format!(r#"Bearer realm="{realm}",service="berth",scope="repository:team/app:pull,push""#)
    );
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let r = c
        .head(b.url("/v2/team/app/manifests/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenge(&r)["scope"], "repository:team/app:pull");
}

#[tokio::test]
async fn the_challenge_realm_serves_the_token_it_asks_for() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let admin = admin(&b);

    let r = post(&c, &b, &Cred::None, "/v2/team/app/blobs/uploads/").await;
    let params = challenge(&r);
    // Do what a client does: ask the realm for the service and scope named.
    let url = format!(
        "{}?{}",
        params["realm"],
        form_urlencoded::Serializer::new(String::new())
            .append_pair("service", &params["service"])
            .append_pair("scope", &params["scope"])
            .finish()
    );
    let r = admin.apply(c.get(url)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    let token = Cred::Bearer(body["token"].as_str().unwrap().to_owned());
    let r = post(&c, &b, &token, "/v2/team/app/blobs/uploads/").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");
}

// ===========================================================================
// 2. The token service
// ===========================================================================

#[tokio::test]
async fn token_service_answers_in_the_spec_shape() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let r = request_token(&c, &b, &admin(&b), &["repository:team/app:pull,push"]).await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    assert_eq!(header(&r, "cache-control"), "no-store");
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().expect("token");
    assert_eq!(body["access_token"], token);
    let expires_in = body["expires_in"].as_u64().expect("expires_in");
    assert!(expires_in >= 60, "{body}");
    let issued_at = humantime::parse_rfc3339(body["issued_at"].as_str().expect("issued_at"))
        .expect("issued_at is RFC 3339");
    let issued_at = issued_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();

    let claims = claims(token);
    assert_eq!(claims["iss"], "berth");
    assert_eq!(claims["aud"], "berth");
    assert_eq!(claims["sub"], "admin");
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp > now(), "{claims}");
    assert_eq!(claims["iat"].as_u64(), Some(issued_at));
    assert_eq!(exp, issued_at + expires_in);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert_eq!(
        claims["access"],
        json!([repo_access("team/app", &["pull", "push"])])
    );
    // The header names the algorithm and the key, as jwt.md asks.
    let header: Value = serde_json::from_slice(
        &B64URL
            .decode(token.split('.').next().unwrap())
            .expect("base64url header"),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
}

#[tokio::test]
async fn a_token_grants_the_intersection_of_asked_and_granted() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team", "pull"]);

    // Asking more than granted is no error: the token grants less.
    let t = token(&c, &b, &alice, &["repository:team/app:pull,push"]).await;
    let claims = claims(&t);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["access"],
        json!([repo_access("team/app", &["pull"])])
    );

    for nothing in ["repository:other/x:pull", "registry:catalog:*"] {
        let t = token(&c, &b, &alice, &[nothing]).await;
        assert_eq!(access_claim(&t), json!([]), "{nothing}");
    }

    // Several scope parameters, and several scopes in one parameter.
    let t = token(
        &c,
        &b,
        &alice,
        &[
            "repository:team/app:pull,push",
            "repository:other/x:pull",
            "registry:catalog:*",
            "repository:team/web:push repository:team/db:pull,delete",
        ],
    )
    .await;
    assert_eq!(
        access_claim(&t),
        json!([
            repo_access("team/app", &["pull"]),
            repo_access("team/db", &["pull"]),
        ])
    );

    // The admin gets all it asks, the catalog included.
    let t = token(
        &c,
        &b,
        &admin(&b),
        &[
            "repository:team/app:pull",
            "repository:other/x:*",
            "registry:catalog:*",
        ],
    )
    .await;
    assert_eq!(
        access_claim(&t),
        json!([
            repo_access("team/app", &["pull"]),
            repo_access("other/x", &["pull", "push", "delete", "admin"]),
            {"type": "registry", "name": "catalog", "actions": ["*"]},
        ])
    );

    // No scope: a token that grants nothing.
    let t = token(&c, &b, &alice, &[]).await;
    assert_eq!(access_claim(&t), json!([]));
}

/// The `access` claim, an empty list when absent.
fn access_claim(token: &str) -> Value {
    let claims = claims(token);
    match &claims["access"] {
        Value::Null => json!([]),
        access => access.clone(),
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(k, v);
    }
    form.finish()
}

async fn post_form(c: &Client, b: &Berth, pairs: &[(&str, &str)]) -> reqwest::Response {
    c.post(b.url("/auth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(pairs))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oauth2_password_grant_issues_tokens_and_other_grants_are_refused() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let password = b.admin_password();
    let r = post_form(
        &c,
        &b,
        &[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", password.as_str()),
            ("service", "berth"),
            ("client_id", "test"),
            ("scope", "repository:team/app:pull,push"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().expect("access_token");
    assert!(body["expires_in"].as_u64().is_some(), "{body}");
    assert_eq!(body["scope"], "repository:team/app:pull,push");
    assert_eq!(
        claims(token)["access"],
        json!([repo_access("team/app", &["pull", "push"])])
    );
    let r = post(
        &c,
        &b,
        &Cred::Bearer(token.to_owned()),
        "/v2/team/app/blobs/uploads/",
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{r:?}");

    let r = post_form(
        &c,
        &b,
        &[
            ("grant_type", "password"),
            ("username", "admin"),
            ("password", "not-the-password"),
            ("service", "berth"),
        ],
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // berth hands out no refresh tokens, so it takes none; nor other grants.
    for refused in [
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("service", "berth"),
            ("scope", "repository:team/app:pull"),
        ],
        vec![("grant_type", "authorization_code"), ("code", "x")],
        vec![("username", "admin"), ("password", password.as_str())],
    ] {
        let r = post_form(&c, &b, &refused).await;
        assert!(r.status().is_client_error(), "{refused:?}: {r:?}");
        let body: Value = r.json().await.unwrap();
        assert!(body.get("token").is_none() && body.get("access_token").is_none());
    }
}

#[tokio::test]
async fn oauth2_answer_names_the_scope_granted_not_the_scope_asked() {
    // oauth.md: `scope` is "the scope granted inside the access token".
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team", "pull"]);
    let Cred::Basic(_, password) = &alice else {
        unreachable!()
    };
    let r = post_form(
        &c,
        &b,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", password),
            ("service", "berth"),
            ("client_id", "test"),
            (
                "scope",
                "repository:team/app:pull,push repository:other/x:pull",
            ),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["access"],
        json!([repo_access("team/app", &["pull"])])
    );
    assert_eq!(body["scope"], "repository:team/app:pull", "{body}");
}

#[tokio::test]
async fn token_service_refuses_wrong_credentials_and_other_services() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let scope = ["repository:team/app:pull"];

    let r = request_token(&c, &b, &Cred::basic("admin", "wrong-password"), &scope).await;
    assert_eq!(header(&r, "www-authenticate"), r#"Basic realm="berth""#);
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let r = request_token(&c, &b, &Cred::basic("nobody", "wrong-password"), &scope).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // A token is no credential for getting another one.
    let t = token(&c, &b, &admin(&b), &scope).await;
    let r = request_token(&c, &b, &Cred::Bearer(t), &scope).await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let r = admin(&b)
        .apply(
            c.get(b.url("/auth/token?service=registry.example.com&scope=repository:team/app:pull")),
        )
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{r:?}");
    let body: Value = r.json().await.unwrap();
    assert!(body.get("token").is_none(), "{body}");
}

#[tokio::test]
async fn anonymous_tokens_grant_only_what_anonymous_was_granted() {
    let b = Berth::start_secure("");
    // Grants first: anonymous grants are cached for a while once read.
    b.manage(&["grant", "anonymous", "public", "pull"]);
    let c = Client::new();
    let admin = admin(&b);
    let public_image = push_image(&c, &b, &admin, "public/app", "v1").await;
    push_image(&c, &b, &admin, "team/app", "v1").await;

    let r = request_token(
        &c,
        &b,
        &Cred::None,
        &[
            "repository:public/app:pull,push",
            "repository:team/app:pull",
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let claims = claims(token);
    assert_eq!(claims["sub"], "");
    assert_eq!(
        claims["access"],
        json!([repo_access("public/app", &["pull"])])
    );

    let anonymous = Cred::Bearer(token.to_owned());
    pull_image(&c, &b, &anonymous, "public/app", "v1", &public_image).await;
    // Beyond that, an anonymous token gets 401: credentials might allow
    // it, and clients only offer them after a 401.
    let r = get(&c, &b, &anonymous, "/v2/team/app/manifests/v1").await;
    assert_eq!(challenge(&r)["error"], "insufficient_scope");
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = post(&c, &b, &anonymous, "/v2/public/app/blobs/uploads/").await;
    assert_eq!(challenge(&r)["scope"], "repository:public/app:pull,push");
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    // Without any token, the same holds.
    pull_image(&c, &b, &Cred::None, "public/app", "v1", &public_image).await;
    let r = get(&c, &b, &Cred::None, "/v2/team/app/manifests/v1").await;
    assert_eq!(challenge(&r)["scope"], "repository:team/app:pull");
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

// ===========================================================================
// 3. Using tokens and Basic credentials
// ===========================================================================

#[tokio::test]
async fn push_and_pull_with_a_token() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team", "pull,push"]);
    let t = Cred::Bearer(token(&c, &b, &alice, &["repository:team/app:pull,push"]).await);
    let manifest = push_image(&c, &b, &t, "team/app", "v1").await;
    pull_image(&c, &b, &t, "team/app", "v1", &manifest).await;
    let r = get(&c, &b, &t, "/v2/team/app/tags/list").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"name": "team/app", "tags": ["v1"]})
    );

    // A pull-only token pulls.
    let t = Cred::Bearer(token(&c, &b, &alice, &["repository:team/app:pull"]).await);
    pull_image(&c, &b, &t, "team/app", "v1", &manifest).await;
}

#[tokio::test]
async fn basic_credentials_work_directly_on_v2() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team", "pull,push"]);
    let out = b.manage(&["robot", "add", "ci"]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no secret in {out:?}"));
    b.manage(&["grant", "ci", "team/app", "pull"]);
    let robot = Cred::basic("ci", secret);

    let r = get(&c, &b, &alice, "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let manifest = push_image(&c, &b, &alice, "team/app", "v1").await;
    pull_image(&c, &b, &alice, "team/app", "v1", &manifest).await;
    pull_image(&c, &b, &robot, "team/app", "v1", &manifest).await;
    let r = post(&c, &b, &robot, "/v2/team/app/blobs/uploads/").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = get(&c, &b, &robot, "/v2/team/web/tags/list").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
}

#[tokio::test]
async fn accounts_are_confined_to_their_grants() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let reader = add_user(&b, "reader");
    let other = add_user(&b, "other-team");
    b.manage(&["grant", "reader", "team", "pull"]);
    b.manage(&["grant", "other-team", "other", "pull,push"]);
    let admin = admin(&b);
    let manifest = push_image(&c, &b, &admin, "team/app", "v1").await;
    push_image(&c, &b, &admin, "other/app", "v1").await;

    // Read-only: pulls, may not push or delete.
    pull_image(&c, &b, &reader, "team/app", "v1", &manifest).await;
    let r = post(&c, &b, &reader, "/v2/team/app/blobs/uploads/").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = reader
        .apply(c.put(b.url("/v2/team/app/manifests/v2")))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = reader
        .apply(c.delete(b.url("/v2/team/app/manifests/v1")))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;

    // Another team's namespace: not even readable.
    for path in [
        "/v2/team/app/tags/list",
        "/v2/team/app/manifests/v1",
        "/v2/teammate/app/tags/list",
    ] {
        let r = get(&c, &b, &other, path).await;
        expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let r = get(&c, &b, &reader, "/v2/other/app/manifests/v1").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
}

#[tokio::test]
async fn a_token_for_one_repository_is_not_one_for_another() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    let bob = add_user(&b, "bob");
    b.manage(&["grant", "alice", "team", "pull,push"]);
    b.manage(&["grant", "bob", "team", "pull"]);
    let t = Cred::Bearer(token(&c, &b, &alice, &["repository:team/app:pull"]).await);

    // Alice could get a token for these: the challenge says which scope.
    let r = get(&c, &b, &t, "/v2/team/web/manifests/v1").await;
    let params = expect_challenge(r, "insufficient_scope").await;
    assert_eq!(params["scope"], "repository:team/web:pull");
    assert_eq!(params["service"], "berth");
    let r = post(&c, &b, &t, "/v2/team/app/blobs/uploads/").await;
    let params = expect_challenge(r, "insufficient_scope").await;
    assert_eq!(params["scope"], "repository:team/app:pull,push");

    // She could not: no point asking for another token.
    let r = get(&c, &b, &t, "/v2/other/x/manifests/v1").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;

    // Bob asked for push, got only pull: his push is denied.
    let t = Cred::Bearer(token(&c, &b, &bob, &["repository:team/app:pull,push"]).await);
    let r = post(&c, &b, &t, "/v2/team/app/blobs/uploads/").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
}

#[tokio::test]
async fn the_catalog_needs_pull_on_everything() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team", "pull,push,delete"]);
    let admin = admin(&b);
    push_image(&c, &b, &admin, "team/app", "v1").await;

    let r = get(&c, &b, &admin, "/v2/_catalog").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"repositories": ["team/app"]})
    );
    let t = Cred::Bearer(token(&c, &b, &admin, &["registry:catalog:*"]).await);
    let r = get(&c, &b, &t, "/v2/_catalog").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");

    let r = get(&c, &b, &alice, "/v2/_catalog").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let t = Cred::Bearer(token(&c, &b, &alice, &["registry:catalog:*"]).await);
    let r = get(&c, &b, &t, "/v2/_catalog").await;
    expect_error(r, StatusCode::FORBIDDEN, "DENIED").await;

    let r = get(&c, &b, &Cred::None, "/v2/_catalog").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

// ===========================================================================
// 4. Forged, stale and misdirected tokens
// ===========================================================================

/// Each forged token, presented to the catalog (which the claims would
/// open), gets 401 `invalid_token`, while the same claims signed properly
/// are accepted, so the checks, not the claims, are what refuse them.
#[tokio::test]
async fn forged_stale_and_misdirected_tokens_are_refused() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let berth_key = Key::berths(&b);
    let valid = all_powerful_claims("berth");
    let with = |changes: Value| {
        let mut claims = valid.clone();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    };
    let now = now();

    // The control: berth's key, right claims, accepted. An array audience
    // that names berth is a valid JWT audience too.
    for claims in [valid.clone(), with(json!({"aud": ["other", "berth"]}))] {
        let t = Cred::Bearer(berth_key.sign(&claims));
        let r = get(&c, &b, &t, "/v2/_catalog").await;
        assert_eq!(r.status(), StatusCode::OK, "{claims}: {r:?}");
    }

    // A real token of a user with nothing but pull on team/app.
    let alice = add_user(&b, "alice");
    b.manage(&["grant", "alice", "team/app", "pull"]);
    let real = token(&c, &b, &alice, &["repository:team/app:pull"]).await;
    let real_parts: Vec<&str> = real.split('.').collect();
    let admin_payload = B64URL.encode(with(json!({})).to_string());

    let public_pem = berth_key.public_pem();
    let hs256 = |secret: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &valid,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    };
    let none_header = json!({"alg": "none", "typ": "JWT"});

    let cases: Vec<(&str, String)> = vec![
        ("alg none, no signature", unsigned(&none_header, &valid)),
        (
            "alg none, no signature part",
            unsigned(&none_header, &valid)
                .trim_end_matches('.')
                .to_owned(),
        ),
        (
            "alg None (capitalised)",
            unsigned(&json!({"alg": "None"}), &valid),
        ),
        (
            "alg none with the signature of a real token",
            format!("{}{}", unsigned(&none_header, &valid), real_parts[2]),
        ),
        (
            "HS256 keyed with berth's public key PEM",
            hs256(public_pem.as_bytes()),
        ),
        (
            "HS256 keyed with berth's public key DER",
            hs256(&berth_key.public_der()),
        ),
        (
            "expired beyond the leeway",
            berth_key.sign(&with(
                json!({"exp": now - 120, "iat": now - 600, "nbf": now - 600}),
            )),
        ),
        (
            "not valid for another hour",
            berth_key.sign(&with(json!({"nbf": now + 3600, "iat": now + 3600}))),
        ),
        (
            "for another audience",
            berth_key.sign(&with(json!({"aud": "registry.example.com"}))),
        ),
        (
            "for no audience",
            berth_key.sign(&with(json!({"aud": null}))),
        ),
        (
            "from another issuer",
            berth_key.sign(&with(json!({"iss": "evil"}))),
        ),
        (
            "with no issuer",
            berth_key.sign(&with(json!({"iss": null}))),
        ),
        (
            "with no expiry",
            berth_key.sign(&with(json!({"exp": null}))),
        ),
        (
            "signed by an untrusted P-256 key",
            Key::from_seed("untrusted").sign(&valid),
        ),
        (
            "a real token's payload replaced",
            format!("{}.{admin_payload}.{}", real_parts[0], real_parts[2]),
        ),
        (
            "a real token's signature altered",
            format!(
                "{}.{}.{}",
                real_parts[0],
                real_parts[1],
                flip_last_char(real_parts[2])
            ),
        ),
        ("not a JWT", "not.a.token".to_owned()),
    ];
    for (name, forged) in cases {
        let t = Cred::Bearer(forged);
        let r = get(&c, &b, &t, "/v2/_catalog").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}: {r:?}");
        let params = challenge(&r);
        let body = expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        assert_eq!(
            params.get("error").map(String::as_str),
            Some("invalid_token"),
            "{name}: {body}"
        );
        let r = post(&c, &b, &t, "/v2/team/app/blobs/uploads/").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}: {r:?}");
    }

    // The real token itself still does what it grants, and no more.
    let r = get(&c, &b, &Cred::Bearer(real), "/v2/team/app/tags/list").await;
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

fn flip_last_char(s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let last = chars.last_mut().unwrap();
    *last = if *last == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

// ===========================================================================
// 5. External issuers
// ===========================================================================

/// Claims an external token service would issue: pull on `team/app`.
fn corp_claims(iss: &str, aud: &str) -> Value {
    let now = now();
    json!({
        "iss": iss,
        "sub": "someone@corp",
        "aud": aud,
        "exp": now + 300,
        "nbf": now - 1,
        "iat": now,
        "access": [repo_access("team/app", &["pull"])],
    })
}

/// berth trusting `trusted` (a `[[auth.trusted_issuers]]` table's body),
/// with an image pushed to `team/app:v1` and `other/app:v1`. Returns the
/// manifest of `team/app:v1`.
async fn berth_trusting(c: &Client, trusted: &str) -> (Berth, Vec<u8>) {
    let b = Berth::start_secure(&format!("[auth]\n[[auth.trusted_issuers]]\n{trusted}"));
    let admin = admin(&b);
    let manifest = push_image(c, &b, &admin, "team/app", "v1").await;
    push_image(c, &b, &admin, "other/app", "v1").await;
    (b, manifest)
}

async fn check_external_tokens(c: &Client, b: &Berth, corp: &Key, manifest: &[u8]) {
    let t = Cred::Bearer(corp.sign(&corp_claims("corp-auth", "berth")));
    pull_image(c, b, &t, "team/app", "v1", manifest).await;
    let r = get(c, b, &t, "/v2/other/app/manifests/v1").await;
    let params = expect_challenge(r, "insufficient_scope").await;
    assert_eq!(params["scope"], "repository:other/app:pull");
    let r = post(c, b, &t, "/v2/team/app/blobs/uploads/").await;
    expect_challenge(r, "insufficient_scope").await;

    for (name, claims) in [
        ("another issuer", corp_claims("other", "berth")),
        ("berth's own issuer", corp_claims("berth", "berth")),
        ("another audience", corp_claims("corp-auth", "elsewhere")),
    ] {
        let t = Cred::Bearer(corp.sign(&claims));
        let r = get(c, b, &t, "/v2/team/app/manifests/v1").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}: {r:?}");
        expect_challenge(r, "invalid_token").await;
    }
    let stranger = Key::from_seed("not corp");
    let t = Cred::Bearer(stranger.sign(&corp_claims("corp-auth", "berth")));
    let r = get(c, b, &t, "/v2/team/app/manifests/v1").await;
    expect_challenge(r, "invalid_token").await;
}

#[tokio::test]
async fn tokens_of_a_trusted_issuer_with_a_pem_key() {
    let keys = tempfile::tempdir().unwrap();
    let corp = Key::from_seed("corp-auth pem");
    let path = keys.path().join("corp.pem");
    std::fs::write(&path, corp.public_pem()).unwrap();
    let c = Client::new();
    let (b, manifest) = berth_trusting(
        &c,
        &format!(
            "issuer = \"corp-auth\"\npublic_key = {:?}\n",
            path.to_str().unwrap()
        ),
    )
    .await;
    check_external_tokens(&c, &b, &corp, &manifest).await;
}

#[tokio::test]
async fn tokens_of_a_trusted_issuer_with_a_jwks_file() {
    let keys = tempfile::tempdir().unwrap();
    let corp = Key::from_seed("corp-auth jwks");
    let path = keys.path().join("jwks.json");
    let jwks = json!({"keys": [corp.public_jwk("corp-1")]});
    std::fs::write(&path, jwks.to_string()).unwrap();
    // The JWKS is right: jsonwebtoken itself verifies the issuer's token
    // with it.
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks.clone()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.set_issuer(&["corp-auth"]);
    validation.set_audience(&["berth"]);
    jsonwebtoken::decode::<Value>(
        &corp.sign(&corp_claims("corp-auth", "berth")),
        &jsonwebtoken::DecodingKey::from_jwk(&set.keys[0]).unwrap(),
        &validation,
    )
    .expect("the JWKS verifies the token");
    let c = Client::new();
    let (b, manifest) = berth_trusting(
        &c,
        &format!(
            "issuer = \"corp-auth\"\njwks = {:?}\n",
            path.to_str().unwrap()
        ),
    )
    .await;
    check_external_tokens(&c, &b, &corp, &manifest).await;
}

// ===========================================================================
// 6. Scope injection at the token service
// ===========================================================================

#[tokio::test]
async fn malformed_scopes_get_no_token() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let admin = admin(&b);
    // Query strings as sent: `%25` makes the server see a literal `%`.
    let cases = [
        (
            "an extra colon and action",
            "repository:team/app:pull,push:other",
        ),
        (
            "a second scope smuggled in",
            "repository:team/app:pull:other/x:push",
        ),
        ("a .. component", "repository:team/../admin:pull"),
        ("a leading ..", "repository:../admin:pull"),
        ("%2e%2e as sent", "repository:%252e%252e/x:pull"),
        ("a backslash", "repository:team%5capp:pull"),
        ("a backslash and ..", "repository:team%5c..%5cadmin:pull"),
        ("a NUL", "repository:team/app%00:pull"),
        ("a NUL in the middle", "repository:team%00/app:pull"),
        ("upper case", "repository:Team/App:pull"),
        ("an empty name", "repository::pull"),
        ("no actions", "repository:team/app"),
        ("a bad port", "repository:host:port/team/app:pull"),
        ("an unknown type", "repositoryx:team/app:pull"),
        ("an unknown registry resource", "registry:config:*"),
        (
            "a bad scope after a good one",
            "repository:team/app:pull%20repository:team/../x:pull",
        ),
    ];
    let mut cases: Vec<(&str, String)> = cases
        .into_iter()
        .map(|(name, scope)| (name, format!("scope={scope}")))
        .collect();
    // One bad scope among good parameters spoils the request too.
    cases.push((
        "a bad scope parameter after a good one",
        "scope=repository:team/app:pull&scope=repository:team/..:pull".to_owned(),
    ));
    let mut wrong_status = Vec::new();
    for (name, query) in &cases {
        let r = admin
            .apply(c.get(b.url(&format!("/auth/token?service=berth&{query}"))))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            body.get("token").is_none() && body.get("access_token").is_none(),
            "{name}: a token for {query}"
        );
        assert!(
            status.is_client_error(),
            "{name} ({query}): {status} {body}"
        );
        if status != StatusCode::BAD_REQUEST {
            wrong_status.push(format!("{name} ({query}): {status} {body}"));
        }
    }
    assert!(
        wrong_status.is_empty(),
        "a malformed scope is a bad request (400), not:\n{}",
        wrong_status.join("\n")
    );
}

#[tokio::test]
async fn a_scope_may_name_the_registry_host() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let admin = admin(&b);
    let t = token(
        &c,
        &b,
        &admin,
        &[
            "repository:127.0.0.1:5000/team/app:pull",
            &format!("repository:{}/team/web:push", b.host),
        ],
    )
    .await;
    assert_eq!(
        access_claim(&t),
        json!([
            repo_access("team/app", &["pull"]),
            repo_access("team/web", &["push"]),
        ])
    );
    let r = get(&c, &b, &Cred::Bearer(t), "/v2/team/app/tags/list").await;
    expect_error(r, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
}

// ===========================================================================
// 7. Repository names that try to escape
// ===========================================================================

#[tokio::test]
async fn repository_names_that_escape_are_refused_with_or_without_credentials() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let admin = admin(&b);
    push_image(&c, &b, &admin, "admin/secret", "v1").await;
    let t = Cred::Bearer(token(&c, &b, &admin, &["repository:team/app:*"]).await);

    let name_invalid = (400, "NAME_INVALID");
    let no_endpoint = (404, "UNSUPPORTED");
    let cases = [
        ("GET", "/v2/team/../admin/secret/manifests/v1", name_invalid),
        ("GET", "/v2/../admin/secret/tags/list", name_invalid),
        (
            "GET",
            "/v2/team/app/../../admin/secret/tags/list",
            name_invalid,
        ),
        ("GET", "/v2/%2e%2e/admin/secret/tags/list", name_invalid),
        (
            "GET",
            "/v2/team/%2E%2E/admin/secret/manifests/v1",
            name_invalid,
        ),
        (
            "GET",
            "/v2/team/.%2e/admin/secret/manifests/v1",
            name_invalid,
        ),
        ("GET", "/v2/..%2fadmin%2fsecret/tags/list", name_invalid),
        (
            "POST",
            "/v2/team/../admin/secret/blobs/uploads/",
            name_invalid,
        ),
        ("POST", "/v2/%2e%2e/admin/blobs/uploads/", name_invalid),
        ("PUT", "/v2/team/../admin/secret/manifests/v2", name_invalid),
        (
            "DELETE",
            "/v2/team/../admin/secret/manifests/v1",
            name_invalid,
        ),
        ("GET", "/v2/team%5capp/manifests/v1", name_invalid),
        ("GET", "/v2/team%5c..%5cadmin/tags/list", name_invalid),
        (
            "GET",
            "/v2/team%5C..%5Cadmin%5Csecret/tags/list",
            name_invalid,
        ),
        ("GET", "/v2/team%00app/manifests/v1", name_invalid),
        ("GET", "/v2/admin/secret%00/tags/list", name_invalid),
        ("POST", "/v2/team%00/blobs/uploads/", name_invalid),
        ("GET", "/v2/team/app/../../_catalog", no_endpoint),
        ("GET", "/v2/../_catalog", no_endpoint),
        ("GET", "/v2/%2e%2e/%2e%2e/_catalog", no_endpoint),
        ("GET", "/auth/../v2/_catalog", no_endpoint),
        ("GET", "/v2/team/app/blobs/uploads/..", no_endpoint),
    ];
    for cred in [Cred::None, admin.clone(), t] {
        for (method, path, (status, code)) in cases {
            let r = raw_request(&b, method, path, &cred).await;
            let who = match &cred {
                Cred::None => "no credentials",
                Cred::Basic(..) => "admin's password",
                Cred::Bearer(_) => "a token",
            };
            assert_eq!(
                (r.status, r.error_code().as_deref()),
                (status, Some(code)),
                "{method} {path} with {who}: {}\n{}",
                r.head,
                String::from_utf8_lossy(&r.body)
            );
        }
    }
}

// ===========================================================================
// 8. Password guessing
// ===========================================================================

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_for_that_client() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let victim = add_user(&b, "victim");
    let bystander = add_user(&b, "bystander");
    for account in ["victim", "bystander"] {
        b.manage(&["grant", account, "team", "pull"]);
    }
    for attempt in 1..=5 {
        let r = get(&c, &b, &Cred::basic("victim", "guess-number-x"), "/v2/").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    // Now even the right password is not checked.
    for r in [
        get(&c, &b, &victim, "/v2/").await,
        request_token(&c, &b, &victim, &["repository:team/app:pull"]).await,
    ] {
        let retry_after: u64 = header(&r, "retry-after")
            .parse()
            .expect("Retry-After in seconds");
        assert!((1..=30).contains(&retry_after), "{retry_after}");
        expect_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    }
    // Someone else's account is not affected.
    let r = get(&c, &b, &bystander, "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    token(&c, &b, &bystander, &["repository:team/app:pull"]).await;
}

#[tokio::test]
async fn a_wrong_name_and_a_wrong_password_look_the_same() {
    let b = Berth::start_secure("");
    let c = Client::new();
    add_user(&b, "alice");
    let mut messages = Vec::new();
    for cred in [
        Cred::basic("alice", "wrong-password"),
        Cred::basic("nobody", "wrong-password"),
    ] {
        let r = get(&c, &b, &cred, "/v2/").await;
        let body = expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        messages.push(body["errors"][0]["message"].clone());
        let r = request_token(&c, &b, &cred, &["repository:team/app:pull"]).await;
        let body = expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        messages.push(body["errors"][0]["message"].clone());
    }
    assert_eq!(messages[0], messages[2]);
    assert_eq!(messages[1], messages[3]);
}

// ===========================================================================
// 9. Secure defaults
// ===========================================================================

#[tokio::test]
async fn a_fresh_berth_creates_an_admin_with_a_private_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let b = Berth::start_secure("");
    let c = Client::new();
    for file in ["initial-admin-password", "keys/token-signing-key.pem"] {
        let mode = std::fs::metadata(b.data_dir().join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let password = b.admin_password();
    assert!(password.len() >= 16, "{password:?}");
    let r = get(&c, &b, &Cred::basic("admin", &password), "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
    let list = b.manage(&["user", "list"]);
    assert!(
        list.lines().any(|l| l.split('\t').next() == Some("admin")),
        "{list:?}"
    );
}

#[tokio::test]
async fn anonymous_loopback_requests_are_refused_unless_configured() {
    let c = Client::new();
    let bytes = b"pushed without credentials";
    let digest = sha256(bytes);
    let path = format!("/v2/team/app/blobs/uploads/?digest={digest}");

    let secure = Berth::start_secure("");
    let r = c
        .post(secure.url(&path))
        .body(&bytes[..])
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = post(&c, &secure, &Cred::None, "/v2/team/app/blobs/uploads/").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = get(&c, &secure, &Cred::None, "/v2/").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;

    let open = Berth::start_secure("[auth]\nanonymous_loopback = true\n");
    let r = c
        .post(open.url(&path))
        .body(&bytes[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{r:?}");
    let manifest = push_image(&c, &open, &Cred::None, "team/app", "v1").await;
    pull_image(&c, &open, &Cred::None, "team/app", "v1", &manifest).await;
}

#[tokio::test]
async fn tokens_survive_a_restart() {
    let mut b = Berth::start_secure("");
    let c = Client::new();
    let admin = admin(&b);
    let manifest = push_image(&c, &b, &admin, "team/app", "v1").await;
    let t = Cred::Bearer(token(&c, &b, &admin, &["repository:team/app:pull"]).await);
    let key_before = std::fs::read(b.data_dir().join("keys/token-signing-key.pem")).unwrap();
    b.restart();
    // A new client: the old one's pooled connections died with the process.
    let c = Client::new();
    let key_after = std::fs::read(b.data_dir().join("keys/token-signing-key.pem")).unwrap();
    assert_eq!(key_before, key_after);
    pull_image(&c, &b, &t, "team/app", "v1", &manifest).await;
    // And the admin password stays what it was.
    let r = get(&c, &b, &admin, "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
}

// ===========================================================================
// 10. Deleted accounts and changed passwords
// ===========================================================================

#[tokio::test]
async fn deleted_accounts_get_no_access_and_no_tokens() {
    let b = Berth::start_secure("");
    let c = Client::new();
    // None of these accounts authenticates before it is deleted, so no
    // cached check can answer for it.
    let bob = add_user(&b, "bob");
    b.manage(&["grant", "bob", "team", "pull"]);
    let out = b.manage(&["robot", "add", "ci"]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap()
        .to_owned();
    b.manage(&["grant", "ci", "team", "pull"]);
    b.manage(&["user", "del", "bob"]);
    b.manage(&["robot", "del", "ci"]);
    let list = b.manage(&["user", "list"]);
    assert!(!list.contains("bob") && !list.contains("ci\t"), "{list:?}");

    for cred in [bob, Cred::basic("ci", &secret)] {
        let r = get(&c, &b, &cred, "/v2/team/app/tags/list").await;
        expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        let r = request_token(&c, &b, &cred, &["repository:team/app:pull"]).await;
        expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn a_changed_password_replaces_the_old_one() {
    let b = Berth::start_secure("");
    let c = Client::new();
    let old = add_user(&b, "carol");
    b.manage_with_input(
        &["user", "passwd", "carol", "--password-stdin"],
        "a-brand-new-password\n",
    );
    let r = get(&c, &b, &old, "/v2/").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = get(
        &c,
        &b,
        &Cred::basic("carol", "a-brand-new-password"),
        "/v2/",
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "{r:?}");
}
