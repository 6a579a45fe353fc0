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
    /// Whether clients may delete manifests, tags and blobs. When false,
    /// deletes answer 405 UNSUPPORTED.
    pub delete_enabled: bool,
    /// Limits on what clients may send.
    pub limits: Limits,
    /// Who may do what: accounts, tokens, anonymous access.
    pub auth: AuthConfig,
    /// HTTPS. Off unless both a certificate and a key are named.
    pub tls: TlsConfig,
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
            delete_enabled: true,
            limits: Limits::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
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
            self.limits.max_manifest_bytes >= 1024,
            "limits.max_manifest_bytes must be at least 1024"
        );
        anyhow::ensure!(
            self.tls.cert.as_os_str().is_empty() == self.tls.key.as_os_str().is_empty(),
            "tls.cert and tls.key must be set together"
        );
        anyhow::ensure!(
            self.auth.token_ttl_seconds >= 10,
            "auth.token_ttl_seconds must be at least 10"
        );
        anyhow::ensure!(
            self.auth.max_failed_logins >= 1,
            "auth.max_failed_logins must be at least 1"
        );
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
        assert_eq!(a.max_failed_logins, b.max_failed_logins);
        assert!(a.trusted_issuers.is_empty());
        assert_eq!(shipped.tls.cert, defaults.tls.cert);
        assert_eq!(shipped.tls.key, defaults.tls.key);
        assert_eq!(
            shipped.tls.reload_interval_seconds,
            defaults.tls.reload_interval_seconds
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Config>("listne = \"0.0.0.0:1\"").unwrap_err();
        assert!(err.to_string().contains("listne"));
    }
}
