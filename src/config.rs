//! Typed configuration. Precedence, lowest first: built-in defaults, the
//! config file, environment variables, command-line flags. Unknown keys in
//! the file are an error, so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the registry listens on.
    pub listen: SocketAddr,
    /// Directory for blobs, uploads in progress and the metadata database.
    pub data_dir: PathBuf,
    /// Where blob bytes live: under `data_dir`, or in an S3 bucket.
    pub storage: StorageConfig,
    /// Whether clients may delete manifests, tags and blobs. When false,
    /// deletes answer 405 UNSUPPORTED.
    pub delete_enabled: bool,
    /// Log lines as `text` (for people) or `json` (one object per line,
    /// for log collectors).
    pub log_format: String,
    /// Limits on what clients may send.
    pub limits: Limits,
    /// Who may do what: accounts, tokens, anonymous access.
    pub auth: AuthConfig,
    /// HTTPS. Off unless both a certificate and a key are named.
    pub tls: TlsConfig,
    /// Timeouts and the connection cap that bound slow and idle clients.
    pub server: ServerConfig,
    /// Events and their delivery to webhooks.
    pub events: EventsConfig,
    /// Online garbage collection.
    pub gc: GcConfig,
    /// Rolling Kubernetes workloads onto pushed digests.
    pub deploy: DeployConfig,
    /// Prometheus metrics at `/metrics`.
    pub metrics: MetricsConfig,
    /// Where the metadata lives.
    pub database: DatabaseConfig,
    /// Pull-through caches of other registries, each under a namespace of
    /// its own (`[[mirrors]]`).
    pub mirrors: Vec<MirrorConfig>,
    /// cosign signatures: trusted keys, and namespaces whose pulls need a
    /// valid signature.
    pub signatures: SignaturesConfig,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturesConfig {
    /// Public keys trusted to sign images (`[[signatures.keys]]`); more
    /// are added through the admin API.
    pub keys: Vec<SignatureKeyConfig>,
    /// Namespaces whose manifest pulls need a valid signature
    /// (`[[signatures.pull_policies]]`).
    pub pull_policies: Vec<PullPolicyConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureKeyConfig {
    /// What policies and deploy rules call it: letters, digits, `.`, `_`,
    /// `-`.
    pub name: String,
    /// A PEM `PUBLIC KEY` file: ECDSA P-256 (as `cosign generate-key-pair`
    /// makes), RSA or Ed25519.
    pub public_key_file: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullPolicyConfig {
    /// Pulls of `<namespace>/...` (and of `<namespace>` itself) need a
    /// valid signature.
    pub namespace: String,
    /// By one of these keys; empty: by any trusted key.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// A pull-through cache of another registry: pulls of
/// `<namespace>/<name>` (or of `<name>` with `?ns=<namespace>`, as
/// containerd's hosts.toml mirrors send them) are answered from what berth
/// cached, fetching from `upstream` what it lacks.
#[derive(Clone, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The local path prefix, and the `ns` value it answers, e.g.
    /// `docker.io`. Unique; pushes under it are refused.
    pub namespace: String,
    /// The registry's URL, e.g. `https://registry-1.docker.io`
    /// (`http://` for one on a trusted network).
    pub upstream: String,
    /// Credentials for the upstream (Basic, or for its token service);
    /// empty: anonymous.
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// How long a cached tag is trusted before a HEAD asks the upstream
    /// whether it moved.
    #[serde(default = "default_tag_ttl")]
    #[schema(maximum = 31536000)]
    pub tag_ttl_seconds: u64,
    /// Cache size cap in bytes; past it the least recently pulled cached
    /// content goes first. 0: no cap.
    #[serde(default)]
    pub max_bytes: u64,
    /// How long the upstream may take to connect, and to send each next
    /// piece of an answer, before it counts as down.
    #[serde(default = "default_upstream_timeout")]
    #[schema(minimum = 1, maximum = 3600)]
    pub timeout_seconds: u64,
    /// Also answer pulls of names outside every mirror namespace that no
    /// local repository has (`/v2/library/nginx/...`), as docker's
    /// `registry-mirrors` sends them. At most one mirror may.
    #[serde(default)]
    pub unprefixed: bool,
}

/// Longest a cached tag may be trusted unconfirmed, in seconds.
const MAX_TAG_TTL: u64 = 31_536_000;

fn default_tag_ttl() -> u64 {
    300
}

fn default_upstream_timeout() -> u64 {
    30
}

impl std::fmt::Debug for MirrorConfig {
    /// Leaves the password out, so a logged config never carries it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MirrorConfig")
            .field("namespace", &self.namespace)
            .field("upstream", &self.upstream)
            .field("username", &self.username)
            .field("tag_ttl_seconds", &self.tag_ttl_seconds)
            .field("max_bytes", &self.max_bytes)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("unprefixed", &self.unprefixed)
            .finish_non_exhaustive()
    }
}

impl MirrorConfig {
    /// Whether this one mirror makes sense; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("mirror {:?}", self.namespace);
        if self
            .namespace
            .parse::<crate::core::names::RepoName>()
            .is_err()
        {
            return Err(format!(
                "{what}: the namespace must be a repository name such as docker.io or ghcr.io"
            ));
        }
        let url = self.upstream.trim_end_matches('/');
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| format!("{what}: upstream must be an http:// or https:// URL"))?;
        if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
            return Err(format!(
                "{what}: upstream must name a host (and port) only, e.g. https://registry-1.docker.io"
            ));
        }
        if self.username.is_empty() != self.password.is_empty() {
            return Err(format!(
                "{what}: username and password must be set together"
            ));
        }
        if self.tag_ttl_seconds > MAX_TAG_TTL {
            return Err(format!(
                "{what}: tag_ttl_seconds may be at most {MAX_TAG_TTL} (a year)"
            ));
        }
        if !(1..=3600).contains(&self.timeout_seconds) {
            return Err(format!(
                "{what}: timeout_seconds must be between 1 and 3600"
            ));
        }
        Ok(())
    }
}

/// Whether a set of mirrors can serve together: each valid, no namespace
/// inside another, at most one answering unprefixed names.
pub fn validate_mirrors(mirrors: &[MirrorConfig]) -> Result<(), String> {
    for (i, m) in mirrors.iter().enumerate() {
        m.validate()?;
        for other in &mirrors[..i] {
            let (a, b) = (m.namespace.as_str(), other.namespace.as_str());
            let nested = |outer: &str, inner: &str| {
                inner == outer || inner.starts_with(&format!("{outer}/"))
            };
            if nested(a, b) || nested(b, a) {
                return Err(format!(
                    "mirrors {b:?} and {a:?} overlap: one namespace each"
                ));
            }
        }
    }
    if mirrors.iter().filter(|m| m.unprefixed).count() > 1 {
        return Err("only one mirror may set unprefixed = true".into());
    }
    Ok(())
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://user:password@host:port/database` to keep the metadata in
    /// PostgreSQL, which several berth replicas can share; empty: an embedded
    /// SQLite file, `meta.db` in the data directory.
    pub url: String,
}

impl DatabaseConfig {
    /// The database to open for a data directory.
    pub fn location(&self, data_dir: &Path) -> crate::meta::Location {
        if self.url.is_empty() {
            crate::meta::Location::Sqlite(data_dir.join("meta.db"))
        } else {
            crate::meta::Location::Postgres(self.url.clone())
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `filesystem` (blobs under `data_dir`) or `s3`.
    pub backend: String,
    /// The bucket, when `backend` is `s3`.
    pub s3: S3Config,
    /// Below this many free bytes on the data directory's filesystem,
    /// `/readyz` reports the disk full, and a push whose declared length
    /// would leave less is refused (507) before any byte is written.
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: "filesystem".into(),
            s3: S3Config::default(),
            min_free_bytes: 16 * 1024 * 1024,
        }
    }
}

/// An S3-compatible bucket. Several berth processes may share one bucket
/// (with one metadata database).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The server's URL, e.g. `http://127.0.0.1:9000`; empty: AWS (or
    /// `AWS_ENDPOINT`).
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Empty: from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN`) or the instance's role.
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Address the bucket in the path (`endpoint/bucket/key`), as MinIO
    /// and most self-hosted servers want, rather than in the host name.
    pub path_style: bool,
    /// Put every key under this prefix (e.g. `registry/`).
    pub prefix: String,
    /// Answer blob GETs with a 307 to a presigned URL, so the bytes flow
    /// from the bucket straight to the client. HEADs and ranged GETs are
    /// still answered by berth.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub redirect_expiry_seconds: u64,
    /// Bytes of each multipart part (for parts 1-1000; later parts double
    /// per thousand, so large layers stay under 10,000 parts). Each upload
    /// holds at most one part in memory.
    pub part_size: u64,
    /// The server's smallest part other than the last: 5 MiB on S3 and
    /// MinIO. `part_size` may not be below it.
    pub min_part_size: u64,
    /// Largest object copied server side (CopyObject, which S3 limits to
    /// 5 GiB); larger blobs are streamed through berth.
    pub max_copy_bytes: u64,
    /// Times a failed request to the bucket (a 5xx, SlowDown, a reset or
    /// refused connection) is tried again, with backoff, before the client
    /// gets 503.
    pub max_retries: usize,
    /// No retry starts later than this many seconds after the first try:
    /// how long a request waits for an unreachable bucket at most.
    pub retry_timeout_seconds: u64,
}

const MIB: u64 = 1 << 20;

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: String::new(),
            path_style: true,
            prefix: String::new(),
            redirect: false,
            redirect_expiry_seconds: 600,
            part_size: 16 * MIB,
            min_part_size: 5 * MIB,
            max_copy_bytes: 5 << 30,
            max_retries: 3,
            retry_timeout_seconds: 10,
        }
    }
}

impl std::fmt::Debug for S3Config {
    /// Leaves the secrets out, so a logged config never carries them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("access_key_id", &self.access_key_id)
            .field("path_style", &self.path_style)
            .field("prefix", &self.prefix)
            .field("redirect", &self.redirect)
            .field("redirect_expiry_seconds", &self.redirect_expiry_seconds)
            .field("part_size", &self.part_size)
            .field("min_part_size", &self.min_part_size)
            .field("max_copy_bytes", &self.max_copy_bytes)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_seconds", &self.retry_timeout_seconds)
            .finish_non_exhaustive()
    }
}

impl StorageConfig {
    fn validate(&self) -> anyhow::Result<()> {
        match self.backend.as_str() {
            "filesystem" => return Ok(()),
            "s3" => {}
            other => {
                anyhow::bail!("storage.backend must be \"filesystem\" or \"s3\", not {other:?}")
            }
        }
        let s3 = &self.s3;
        anyhow::ensure!(!s3.bucket.is_empty(), "storage.s3.bucket must be set");
        anyhow::ensure!(!s3.region.is_empty(), "storage.s3.region must be set");
        anyhow::ensure!(
            s3.endpoint.is_empty()
                || s3.endpoint.starts_with("http://")
                || s3.endpoint.starts_with("https://"),
            "storage.s3.endpoint must be an http:// or https:// URL, not {:?}",
            s3.endpoint
        );
        anyhow::ensure!(
            s3.access_key_id.is_empty() == s3.secret_access_key.is_empty(),
            "storage.s3.access_key_id and secret_access_key must be set together"
        );
        anyhow::ensure!(
            s3.prefix
                .trim_matches('/')
                .split('/')
                .all(|p| !matches!(p, "." | ".."))
                && !s3.prefix.trim_matches('/').contains("//"),
            "storage.s3.prefix {:?} has an empty, '.' or '..' segment",
            s3.prefix
        );
        anyhow::ensure!(
            s3.min_part_size >= 1,
            "storage.s3.min_part_size must be at least 1"
        );
        anyhow::ensure!(
            s3.part_size >= s3.min_part_size && s3.part_size <= 5 << 30,
            "storage.s3.part_size must be between min_part_size ({}) and 5 GiB, not {}",
            s3.min_part_size,
            s3.part_size
        );
        anyhow::ensure!(
            (1..=5 << 30).contains(&s3.max_copy_bytes),
            "storage.s3.max_copy_bytes must be between 1 and 5 GiB (S3's CopyObject limit)"
        );
        anyhow::ensure!(
            (1..=604_800).contains(&s3.redirect_expiry_seconds),
            "storage.s3.redirect_expiry_seconds must be between 1 and 604800 (7 days)"
        );
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` on this address instead (plain HTTP, no
    /// credentials); empty: on the main listener, where it needs pull on
    /// `*`.
    pub listen: String,
}

impl MetricsConfig {
    /// The separate address, if one is set.
    pub fn listen_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.listen.is_empty() {
            return Ok(None);
        }
        let addr = self.listen.parse().map_err(|e| {
            anyhow::anyhow!("metrics.listen {:?} is not an address: {e}", self.listen)
        })?;
        Ok(Some(addr))
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Seconds between runs; 0: only when asked (API, `berth gc`).
    pub interval_seconds: u64,
    /// What is younger is kept.
    pub grace_period_seconds: u64,
    /// Uploads untouched for longer are purged.
    pub upload_max_age_seconds: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval_seconds: 86400,
            grace_period_seconds: 3600,
            upload_max_age_seconds: 86400,
        }
    }
}

impl GcConfig {
    pub fn options(&self, dry_run: bool) -> crate::core::gc::GcOptions {
        crate::core::gc::GcOptions {
            grace: std::time::Duration::from_secs(self.grace_period_seconds),
            upload_max_age: std::time::Duration::from_secs(self.upload_max_age_seconds),
            dry_run,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Record a pull event for every manifest GET (one write per pull).
    pub pulls: bool,
    /// A failed delivery is first retried after this many seconds, then
    /// after twice as long each time, up to `max_backoff_seconds`.
    pub first_backoff_seconds: u64,
    pub max_backoff_seconds: u64,
    /// Deliveries of an event older than this are given up.
    pub give_up_after_seconds: u64,
    pub webhooks: Vec<WebhookConfig>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Unique; deliveries are recorded under it.
    pub name: String,
    pub url: String,
    /// `distribution` (registry:2's envelope) or `cloudevents`.
    #[serde(default = "default_format")]
    pub format: String,
    /// Only these actions (push, pull, delete); empty: all.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Only repositories matching one of these globs; empty: all.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// HMAC-SHA256 key: the body's signature goes in `X-Signature`.
    #[serde(default)]
    pub secret: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// Seconds one delivery may take, at most an hour.
    #[serde(default = "default_webhook_timeout")]
    #[schema(maximum = 3600)]
    pub timeout_seconds: u64,
}

fn default_format() -> String {
    "distribution".into()
}

/// Longest a webhook delivery may take, in seconds.
pub const MAX_WEBHOOK_TIMEOUT: u64 = 3600;
/// Longest a rollout may take, in seconds.
pub const MAX_ROLLOUT_TIMEOUT: u64 = 604_800;

fn default_webhook_timeout() -> u64 {
    10
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeployConfig {
    /// Kubeconfig file; empty: the in-cluster service account (or
    /// `$KUBECONFIG`).
    pub kubeconfig: PathBuf,
    /// The registry host:port kubelets pull from, as patched into pod
    /// templates; empty: the host the pushing client used.
    pub registry_host: String,
    pub rules: Vec<DeployRuleConfig>,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRuleConfig {
    /// Unique; deploys are recorded under it.
    pub name: String,
    /// Repository glob, e.g. `team/app` or `team/*`.
    pub repository: String,
    /// Tag glob: exact (`stable`) or a pattern (`release-*`).
    #[serde(default = "default_tag")]
    pub tag: String,
    /// Also require the tag to be a semantic version in this range, e.g.
    /// `^1.2` (a leading `v` in tags is allowed).
    #[serde(default)]
    pub semver: String,
    /// Roll onto a tag semver-older than the one deployed.
    #[serde(default)]
    pub allow_downgrade: bool,
    /// Put the previous image back when the rollout fails or times out.
    #[serde(default)]
    pub rollback_on_failure: bool,
    /// How long a rollout (and the smoke-test Job) may take, at most a week.
    #[serde(default = "default_rollout_timeout")]
    #[schema(maximum = 604800)]
    pub timeout_seconds: u64,
    /// A Job manifest (YAML) run before rolling out; only if it succeeds
    /// does the rollout go ahead. Containers whose image is `$IMAGE` run
    /// the pushed image.
    #[serde(default)]
    #[schema(value_type = String)]
    pub smoke_job: PathBuf,
    /// Roll out only images with a valid cosign signature by one of these
    /// trusted keys; empty: no signature needed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_signature: Vec<String>,
    /// How long a push waits for its signature before it is recorded as
    /// `unsigned` and never rolled out (the signature_wait), at most a day.
    #[serde(default = "default_signature_wait")]
    #[schema(maximum = 86400)]
    pub signature_wait_seconds: u64,
    pub targets: Vec<DeployTargetConfig>,
}

/// Longest a push may wait for its signature, in seconds.
pub const MAX_SIGNATURE_WAIT: u64 = 86_400;

fn default_signature_wait() -> u64 {
    600
}

fn default_tag() -> String {
    "*".into()
}

fn default_rollout_timeout() -> u64 {
    600
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployTargetConfig {
    pub namespace: String,
    /// Deployment, StatefulSet or DaemonSet.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// The workload's name; or `selector`, a label selector.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub selector: String,
    /// Only this container; empty: every container running the repository.
    #[serde(default)]
    pub container: String,
}

fn default_kind() -> String {
    "Deployment".into()
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            pulls: false,
            first_backoff_seconds: 1,
            max_backoff_seconds: 300,
            give_up_after_seconds: 24 * 60 * 60,
            webhooks: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Requests from loopback (127.0.0.0/8, ::1) without credentials may
    /// pull, push and delete everything. For local development only: behind
    /// a reverse proxy on the same host every request comes from loopback.
    pub anonymous_loopback: bool,
    /// The `service` of the token challenge and the audience of tokens.
    pub service: String,
    /// The `iss` of tokens berth issues.
    pub issuer: String,
    /// Where clients fetch tokens. Empty: `<scheme>://<Host header>/auth/token`.
    pub realm: String,
    /// Lifetime of issued tokens, in seconds.
    pub token_ttl_seconds: u64,
    /// PKCS#8 PEM P-256 key that signs tokens. Empty:
    /// `<data_dir>/keys/token-signing-key.pem`, created on first start.
    pub signing_key: PathBuf,
    /// A file holding the password of the `admin` account created on the
    /// first start (a mounted Kubernetes Secret, say). Empty: a random one,
    /// written to `<data_dir>/initial-admin-password`.
    pub initial_admin_password_file: PathBuf,
    /// Wrong passwords in a row (per address and account) before further
    /// attempts are refused for a while, doubling with each new failure.
    pub max_failed_logins: u32,
    /// External token services whose tokens berth accepts.
    pub trusted_issuers: Vec<TrustedIssuer>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// The `aud` its tokens must carry; empty means `auth.service`.
    #[serde(default)]
    pub audience: String,
    /// PEM public key (EC or RSA) that verifies its tokens.
    #[serde(default)]
    pub public_key: PathBuf,
    /// Or a JWKS file with its keys.
    #[serde(default)]
    pub jwks: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// How often to look for a renewed certificate and key, in seconds.
    pub reload_interval_seconds: u64,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            anonymous_loopback: false,
            service: "berth".into(),
            issuer: "berth".into(),
            realm: String::new(),
            token_ttl_seconds: 300,
            signing_key: PathBuf::new(),
            initial_admin_password_file: PathBuf::new(),
            max_failed_logins: 5,
            trusted_issuers: Vec::new(),
        }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            reload_interval_seconds: 10,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest manifest accepted, in bytes.
    pub max_manifest_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "0.0.0.0:8888".parse().expect("valid default address"),
            data_dir: PathBuf::from("./data"),
            storage: StorageConfig::default(),
            delete_enabled: true,
            log_format: "text".into(),
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            server: ServerConfig::default(),
            events: EventsConfig::default(),
            gc: GcConfig::default(),
            deploy: DeployConfig::default(),
            metrics: MetricsConfig::default(),
            database: DatabaseConfig::default(),
            mirrors: Vec::new(),
            signatures: SignaturesConfig::default(),
        }
    }
}

/// What one connection may hold: the answers to slow and hostile clients.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Seconds to send a request's complete headers, from when the
    /// connection opens or its previous answer ends (so also the idle
    /// keep-alive timeout).
    pub header_read_timeout_seconds: u64,
    /// Seconds a request body may send nothing before it is cut off.
    pub body_read_timeout_seconds: u64,
    /// Seconds a client may read nothing of an answer before it is
    /// disconnected.
    pub write_timeout_seconds: u64,
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout_seconds: 30,
            body_read_timeout_seconds: 60,
            write_timeout_seconds: 60,
            max_connections: 8192,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Config {
    /// Reads a config file. A missing file is an error only if it was named
    /// explicitly (`required`).
    pub fn load(path: &Path, required: bool) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default());
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let config: Config =
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.database.url.is_empty()
                || self.database.url.starts_with("postgres://")
                || self.database.url.starts_with("postgresql://"),
            "database.url must be a postgres:// URL (or empty for the embedded SQLite file)"
        );
        anyhow::ensure!(
            self.log_format == "text" || self.log_format == "json",
            "log_format must be \"text\" or \"json\", not {:?}",
            self.log_format
        );
        anyhow::ensure!(
            self.limits.max_manifest_bytes >= 1024,
            "limits.max_manifest_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.tls.cert.as_os_str().is_empty() == self.tls.key.as_os_str().is_empty(),
            "tls.cert and tls.key must be set together"
        );
        let server = &self.server;
        anyhow::ensure!(
            server.header_read_timeout_seconds >= 1
                && server.body_read_timeout_seconds >= 1
                && server.write_timeout_seconds >= 1,
            "server: the timeouts must be at least 1 second"
        );
        anyhow::ensure!(
            server.max_connections >= 1,
            "server.max_connections must be at least 1"
        );
        anyhow::ensure!(
            self.auth.token_ttl_seconds >= 10,
            "auth.token_ttl_seconds must be at least 10"
        );
        anyhow::ensure!(
            self.auth.max_failed_logins >= 1,
            "auth.max_failed_logins must be at least 1"
        );
        anyhow::ensure!(
            self.events.first_backoff_seconds >= 1
                && self.events.max_backoff_seconds >= self.events.first_backoff_seconds,
            "events: first_backoff_seconds must be at least 1 and at most max_backoff_seconds"
        );
        let mut names = std::collections::HashSet::new();
        for w in &self.events.webhooks {
            anyhow::ensure!(names.insert(&w.name), "two webhooks are named {:?}", w.name);
        }
        let mut names = std::collections::HashSet::new();
        for r in &self.deploy.rules {
            anyhow::ensure!(
                names.insert(&r.name),
                "two deploy rules are named {:?}",
                r.name
            );
            anyhow::ensure!(
                !r.targets.is_empty(),
                "deploy rule {:?} has no targets",
                r.name
            );
            for t in &r.targets {
                anyhow::ensure!(
                    t.name.is_empty() != t.selector.is_empty(),
                    "deploy rule {:?}: each target needs exactly one of name and selector",
                    r.name
                );
            }
        }
        self.metrics.listen_addr()?;
        self.storage.validate()?;
        validate_mirrors(&self.mirrors).map_err(|e| anyhow::anyhow!(e))?;
        let mut names = std::collections::HashSet::new();
        for k in &self.signatures.keys {
            crate::signature::keys::check_name(&k.name).map_err(|e| anyhow::anyhow!(e))?;
            anyhow::ensure!(
                names.insert(&k.name),
                "two signature keys are named {:?}",
                k.name
            );
        }
        for p in &self.signatures.pull_policies {
            anyhow::ensure!(
                p.namespace
                    .trim_end_matches('/')
                    .parse::<crate::core::names::RepoName>()
                    .is_ok(),
                "signature pull policy: namespace {:?} is not a repository name or prefix",
                p.namespace
            );
        }
        for t in &self.auth.trusted_issuers {
            anyhow::ensure!(
                t.public_key.as_os_str().is_empty() != t.jwks.as_os_str().is_empty(),
                "trusted issuer {:?}: set exactly one of public_key and jwks",
                t.issuer
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
        let shipped = Config::load(&path, true).unwrap();
        let defaults = Config::default();
        assert_eq!(shipped.listen, defaults.listen);
        assert_eq!(shipped.data_dir, defaults.data_dir);
        assert_eq!(shipped.delete_enabled, defaults.delete_enabled);
        assert_eq!(shipped.log_format, defaults.log_format);
        assert_eq!(format!("{:?}", shipped.gc), format!("{:?}", defaults.gc));
        assert_eq!(
            shipped.limits.max_manifest_bytes,
            defaults.limits.max_manifest_bytes
        );
        let (a, b) = (&shipped.auth, &defaults.auth);
        assert_eq!(a.anonymous_loopback, b.anonymous_loopback);
        assert_eq!(
            (&a.service, &a.issuer, &a.realm),
            (&b.service, &b.issuer, &b.realm)
        );
        assert_eq!(a.token_ttl_seconds, b.token_ttl_seconds);
        assert_eq!(a.signing_key, b.signing_key);
        assert_eq!(a.initial_admin_password_file, b.initial_admin_password_file);
        assert_eq!(a.max_failed_logins, b.max_failed_logins);
        assert!(a.trusted_issuers.is_empty());
        assert_eq!(shipped.tls.cert, defaults.tls.cert);
        assert_eq!(shipped.tls.key, defaults.tls.key);
        assert_eq!(
            shipped.tls.reload_interval_seconds,
            defaults.tls.reload_interval_seconds
        );
        let (e, d) = (&shipped.events, &defaults.events);
        assert_eq!(e.pulls, d.pulls);
        assert_eq!(e.first_backoff_seconds, d.first_backoff_seconds);
        assert_eq!(e.max_backoff_seconds, d.max_backoff_seconds);
        assert_eq!(e.give_up_after_seconds, d.give_up_after_seconds);
        assert!(e.webhooks.is_empty());
        assert_eq!(shipped.deploy.kubeconfig, defaults.deploy.kubeconfig);
        assert_eq!(shipped.deploy.registry_host, defaults.deploy.registry_host);
        assert!(shipped.deploy.rules.is_empty());
        assert_eq!(shipped.metrics.listen, defaults.metrics.listen);
        assert_eq!(shipped.storage.backend, defaults.storage.backend);
        assert_eq!(
            shipped.storage.min_free_bytes,
            defaults.storage.min_free_bytes
        );
        assert_eq!(
            format!("{:?}", shipped.server),
            format!("{:?}", defaults.server)
        );
        assert_eq!(
            format!("{:?}", shipped.storage.s3),
            format!("{:?}", defaults.storage.s3)
        );
        assert!(shipped.mirrors.is_empty());
    }

    #[test]
    fn signatures_are_validated() {
        let parsed: Config = toml::from_str(
            "[[signatures.keys]]\nname = \"ci\"\npublic_key_file = \"ci.pub\"\n\
             [[signatures.pull_policies]]\nnamespace = \"prod\"\nkeys = [\"ci\"]\n",
        )
        .unwrap();
        parsed.validate().unwrap();
        assert_eq!(parsed.signatures.pull_policies[0].keys, ["ci"]);
        for bad in [
            "[[signatures.keys]]\nname = \"c i\"\npublic_key_file = \"k\"",
            "[[signatures.keys]]\nname = \"a\"\npublic_key_file = \"k\"\n\
             [[signatures.keys]]\nname = \"a\"\npublic_key_file = \"l\"",
            "[[signatures.pull_policies]]\nnamespace = \"Prod\"",
        ] {
            let c: Config = toml::from_str(bad).unwrap();
            assert!(c.validate().is_err(), "{bad}");
        }
        assert!(toml::from_str::<Config>("[[signatures.keys]]\nname = \"a\"").is_err());
    }

    #[test]
    fn mirrors_are_validated() {
        let mirror = |extra: &str| {
            format!(
                "[[mirrors]]\nnamespace = \"docker.io\"\nupstream = \"https://registry-1.docker.io\"\n{extra}"
            )
        };
        let parsed: Config = toml::from_str(&mirror("")).unwrap();
        parsed.validate().unwrap();
        let m = &parsed.mirrors[0];
        assert_eq!(
            (m.tag_ttl_seconds, m.max_bytes, m.timeout_seconds),
            (300, 0, 30)
        );
        assert!(!m.unprefixed);
        assert!(!format!("{m:?}").contains("password:"));
        for (text, says) in [
            (mirror("username = \"u\""), "together"),
            (mirror("timeout_seconds = 0"), "timeout_seconds"),
            (
                "[[mirrors]]\nnamespace = \"Docker.io\"\nupstream = \"https://x\"".into(),
                "namespace",
            ),
            (
                "[[mirrors]]\nnamespace = \"a\"\nupstream = \"ftp://x\"".into(),
                "http",
            ),
            (
                "[[mirrors]]\nnamespace = \"a\"\nupstream = \"https://x/v2\"".into(),
                "host",
            ),
            (
                format!(
                    "{}\n[[mirrors]]\nnamespace = \"docker.io/library\"\nupstream = \"https://x\"",
                    mirror("")
                ),
                "overlap",
            ),
            (
                format!(
                    "{}\n[[mirrors]]\nnamespace = \"quay.io\"\nupstream = \"https://quay.io\"\nunprefixed = true",
                    mirror("unprefixed = true")
                ),
                "unprefixed",
            ),
        ] {
            let err = toml::from_str::<Config>(&text)
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    fn s3_config(extra: &str) -> anyhow::Result<()> {
        let text = format!("[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"b\"\n{extra}");
        toml::from_str::<Config>(&text)?.validate()
    }

    #[test]
    fn s3_storage_is_validated() {
        s3_config("").unwrap();
        s3_config("endpoint = \"http://127.0.0.1:9000\"\nprefix = \"a/b/\"").unwrap();
        s3_config("part_size = 1024\nmin_part_size = 1024").unwrap();
        for (extra, says) in [
            ("bucket = \"\"", "bucket"),
            ("endpoint = \"127.0.0.1:9000\"", "endpoint"),
            ("access_key_id = \"k\"", "together"),
            ("part_size = 1024", "part_size"),
            ("max_copy_bytes = 0", "max_copy_bytes"),
            ("prefix = \"a//b\"", "prefix"),
            ("prefix = \"../b\"", "prefix"),
            ("redirect_expiry_seconds = 0", "redirect_expiry_seconds"),
        ] {
            let err = s3_config(extra).unwrap_err().to_string();
            assert!(err.contains(says), "{extra}: {err}");
        }
        let mut config = Config::default();
        config.storage.backend = "disk".into();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("storage.backend")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("listne = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"));
    }
}
