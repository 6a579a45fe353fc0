//! An OCI distribution-spec (v1.1) conformance suite.
//!
//! It drives a registry over plain HTTP only, with fresh random blobs and new
//! repository names on every run, and reports one [`Check`] per spec
//! requirement: what was expected, what was observed, and whether the
//! requirement is a MUST ([`Level::Required`]) or a SHOULD/MAY
//! ([`Level::Recommended`] / [`Level::Optional`]).

use std::fmt;
use std::sync::Mutex;

use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Url};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};

mod raw;
mod suite;

/// The error codes the spec allows in a JSON error body.
pub const ERROR_CODES: &[&str] = &[
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// How a run is configured.
#[derive(Debug, Clone)]
pub struct Options {
    /// Prefix of every repository the run creates, e.g. `conformance/1a2b3c4d`.
    pub namespace: String,
}

impl Options {
    /// A namespace of the form `conformance/<random>`.
    pub fn random_namespace() -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        format!("conformance/{}", &id[..12])
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            namespace: Options::random_namespace(),
        }
    }
}

/// The workflow category of a check, as the spec groups them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Pull,
    Push,
    ContentDiscovery,
    ContentManagement,
    Errors,
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Category::Pull => "pull",
            Category::Push => "push",
            Category::ContentDiscovery => "content-discovery",
            Category::ContentManagement => "content-management",
            Category::Errors => "errors",
        })
    }
}

/// How strongly the spec asks for the behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// MUST / MUST NOT.
    Required,
    /// SHOULD / SHOULD NOT.
    Recommended,
    /// MAY: a feature the registry can leave out.
    Optional,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Required => "REQUIRED",
            Level::Recommended => "RECOMMENDED",
            Level::Optional => "OPTIONAL",
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pass,
    Fail,
    /// Not a pass and not a departure: an optional feature is absent (or a
    /// check could not apply because of it). Never counted as passed.
    Info,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Info => "INFO",
        })
    }
}

/// One checked requirement.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub id: String,
    pub category: Category,
    pub level: Level,
    pub requirement: String,
    pub status: Status,
    pub expected: String,
    pub observed: String,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base_url: String,
    pub namespace: String,
    pub passed: usize,
    pub failed: usize,
    pub info: usize,
    pub checks: Vec<Check>,
}

impl Report {
    fn new(base_url: &str, namespace: &str, checks: Vec<Check>) -> Report {
        let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
        Report {
            base_url: base_url.to_string(),
            namespace: namespace.to_string(),
            passed: count(Status::Pass),
            failed: count(Status::Fail),
            info: count(Status::Info),
            checks,
        }
    }

    /// Whether no check failed.
    pub fn ok(&self) -> bool {
        self.failed == 0
    }

    /// The report as human-readable text, ending with `N passed, M failed`.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "OCI distribution-spec conformance: {} (namespace {})\n\n",
            self.base_url, self.namespace
        );
        let mut last = None;
        for c in &self.checks {
            if last != Some(c.category) {
                out.push_str(&format!("== {} ==\n", c.category));
                last = Some(c.category);
            }
            out.push_str(&format!(
                "[{}] {:<11} {} - {}\n",
                c.status, c.level, c.id, c.requirement
            ));
            if c.status != Status::Pass {
                out.push_str(&format!("       expected: {}\n", c.expected));
            }
            out.push_str(&format!("       observed: {}\n", c.observed));
        }
        let fails: Vec<&Check> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .collect();
        if !fails.is_empty() {
            out.push_str("\nFailed checks:\n");
            for c in fails {
                out.push_str(&format!("  {} ({})\n", c.id, c.level));
            }
        }
        out.push_str(&format!(
            "\n{} informational (optional feature absent, not counted)\n",
            self.info
        ));
        out.push_str(&format!("{} passed, {} failed\n", self.passed, self.failed));
        out
    }
}

/// Runs the whole suite against the registry at `base_url`
/// (e.g. `http://127.0.0.1:5000`).
pub async fn run(base_url: &str, options: &Options) -> Report {
    let checks = suite::Suite::run(base_url, options).await;
    Report::new(base_url, &options.namespace, checks)
}

// ---------------------------------------------------------------------------
// HTTP plumbing shared by the suite.

/// One observed response (status 0 when the request itself failed).
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub method: String,
    pub target: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn h(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `code`s of a JSON error body.
    pub fn codes(&self) -> Vec<String> {
        self.json()
            .and_then(|v| v.get("errors").and_then(|e| e.as_array()).cloned())
            .map(|errs| {
                errs.iter()
                    .filter_map(|e| e.get("code").and_then(|c| c.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `METHOD target -> status [headers] body...` for reports.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {} -> ", self.method, self.target);
        if self.status == 0 {
            s.push_str(&format!(
                "request error: {}",
                String::from_utf8_lossy(&self.body)
            ));
            return s;
        }
        s.push_str(&self.status.to_string());
        let mut hs = Vec::new();
        for name in [
            "content-type",
            "content-length",
            "location",
            "range",
            "content-range",
            "docker-content-digest",
            "oci-subject",
            "oci-filters-applied",
            "link",
        ] {
            if let Some(v) = self.h(name) {
                let v = if v.len() > 120 {
                    format!("{}...", &v[..120])
                } else {
                    v
                };
                hs.push(format!("{name}: {v}"));
            }
        }
        if !hs.is_empty() {
            s.push_str(&format!(" [{}]", hs.join("; ")));
        }
        if !(200..300).contains(&self.status) && !self.body.is_empty() {
            let b = String::from_utf8_lossy(&self.body);
            let b = b.trim();
            let b: String = b.chars().take(200).collect();
            s.push_str(&format!(" body: {b}"));
        }
        s
    }
}

/// Validates a 4xx JSON body against the spec's error envelope.
pub(crate) fn envelope_problem(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let errs = match v.get("errors").and_then(|e| e.as_array()) {
        Some(e) if !e.is_empty() => e,
        _ => return Some("no non-empty \"errors\" array".into()),
    };
    for e in errs {
        match e.get("code").and_then(|c| c.as_str()) {
            Some(code) if ERROR_CODES.contains(&code) => {}
            Some(code) => return Some(format!("code {code:?} is not in the spec's list")),
            None => return Some("an error without a string \"code\"".into()),
        }
        if let Some(m) = e.get("message")
            && !m.is_string()
        {
            return Some("\"message\" is not a string".into());
        }
    }
    None
}

pub(crate) struct Http {
    client: Client,
    pub base: Url,
    /// 4xx responses whose JSON body breaks the error envelope.
    pub envelope_violations: Mutex<Vec<String>>,
    /// 4xx responses with a JSON body that were checked.
    pub envelope_checked: Mutex<usize>,
    /// Every 5xx seen.
    pub server_errors: Mutex<Vec<String>>,
}

impl Http {
    pub fn new(base_url: &str) -> Result<Http, String> {
        let base = Url::parse(base_url.trim_end_matches('/'))
            .map_err(|e| format!("bad base URL {base_url}: {e}"))?;
        let client = Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Http {
            client,
            base,
            envelope_violations: Mutex::new(Vec::new()),
            envelope_checked: Mutex::new(0),
            server_errors: Mutex::new(Vec::new()),
        })
    }

    /// Resolves a path (`/v2/...`), relative or absolute URL against the base.
    pub fn url(&self, target: &str) -> Result<Url, String> {
        self.base.join(target).map_err(|e| e.to_string())
    }

    pub async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        match self.url(target) {
            Ok(url) => self.send_url(method, url, headers, body).await,
            Err(e) => Resp {
                method: method.to_string(),
                target: target.to_string(),
                status: 0,
                headers: HeaderMap::new(),
                body: e.into_bytes(),
            },
        }
    }

    pub async fn send_url(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let shown = match url.query() {
            Some(q) => format!("{}?{}", url.path(), q),
            None => url.path().to_string(),
        };
        let mut rb = self.client.request(method.clone(), url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        if let Some(b) = body {
            rb = rb.body(b);
        }
        let mut resp = Resp {
            method: method.to_string(),
            target: shown,
            status: 0,
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        match rb.send().await {
            Ok(r) => {
                resp.status = r.status().as_u16();
                resp.headers = r.headers().clone();
                match r.bytes().await {
                    Ok(b) => resp.body = b.to_vec(),
                    Err(e) => {
                        resp.status = 0;
                        resp.body = format!("reading body: {e}").into_bytes();
                    }
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(inner) = src {
                    msg.push_str(&format!(": {inner}"));
                    src = inner.source();
                }
                resp.body = msg.into_bytes();
            }
        }
        self.observe(&resp);
        resp
    }

    pub fn observe(&self, resp: &Resp) {
        if (400..500).contains(&resp.status) && resp.method != "HEAD" && !resp.body.is_empty() {
            let is_json = serde_json::from_slice::<Value>(&resp.body).is_ok();
            let says_json = resp
                .h("content-type")
                .map(|c| c.contains("json"))
                .unwrap_or(false);
            if is_json {
                *self.envelope_checked.lock().unwrap() += 1;
                if let Some(p) = envelope_problem(&resp.body) {
                    self.envelope_violations
                        .lock()
                        .unwrap()
                        .push(format!("{}: {p}", resp.summary()));
                }
            } else if says_json {
                *self.envelope_checked.lock().unwrap() += 1;
                self.envelope_violations.lock().unwrap().push(format!(
                    "{}: Content-Type says JSON but the body is not",
                    resp.summary()
                ));
            }
        }
        if resp.status >= 500 {
            self.server_errors.lock().unwrap().push(resp.summary());
        }
    }
}

// ---------------------------------------------------------------------------
// Content helpers.

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub(crate) fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

/// `len` fresh random bytes.
pub(crate) fn random_bytes(len: usize) -> Vec<u8> {
    let seed = uuid::Uuid::new_v4();
    let mut out = Vec::with_capacity(len + 32);
    let mut counter: u64 = 0;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(seed.as_bytes());
        h.update(counter.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

pub(crate) fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({"mediaType": media_type, "digest": sha256(data), "size": data.len()})
}

/// Serialises a manifest with a layout of our own (pretty, two spaces, a
/// trailing newline) so that byte-identity of what comes back is meaningful.
pub(crate) fn to_bytes(v: &Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).expect("serialise JSON");
    b.push(b'\n');
    b
}
