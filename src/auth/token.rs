//! Bearer tokens as the Docker token spec defines them: a JWT whose
//! `access` claim lists what it grants. [`TokenIssuer`] signs berth's own
//! (ES256, with a key that persists in the data directory);
//! [`TokenVerifier`] checks berth's and those of configured external
//! issuers: signature, algorithm, issuer, audience, expiry, not-before.
//!
//! Verifying a signature costs far more than serving a manifest, so a
//! verified token is cached (by its exact text) until it expires.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::auth::scope::{Actions, Resource, ResourceScope};

/// Verified tokens kept at most; past this, expired ones are dropped and,
/// if that is not enough, the cache starts over.
const CACHE_CAPACITY: usize = 10_000;
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY_SECONDS: u64 = 30;

/// One entry of the `access` claim.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub actions: Vec<String>,
}

/// The claims of a registry token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    /// A string or an array of strings, as JWT allows; the verifier checks it.
    pub aud: serde_json::Value,
    pub exp: u64,
    #[serde(default)]
    pub nbf: Option<u64>,
    #[serde(default)]
    pub iat: Option<u64>,
    #[serde(default)]
    pub jti: Option<String>,
    #[serde(default)]
    pub access: Vec<AccessEntry>,
}

impl Claims {
    /// The access entries berth understands; others grant nothing.
    fn scopes(&self) -> Vec<ResourceScope> {
        self.access
            .iter()
            .filter_map(|entry| {
                let resource = match entry.kind.as_str() {
                    "repository" => Resource::Repository(entry.name.parse().ok()?),
                    "registry" if entry.name == "catalog" => Resource::Catalog,
                    _ => return None,
                };
                let actions = entry
                    .actions
                    .iter()
                    .filter_map(|a| Actions::from_name(a))
                    .fold(Actions::NONE, Actions::union);
                Some(ResourceScope { resource, actions })
            })
            .collect()
    }
}

/// A token that passed every check.
#[derive(Debug)]
pub struct VerifiedToken {
    /// The account it was issued to; `None` for an anonymous token.
    pub subject: Option<String>,
    /// Whether berth issued it (and so knows the subject's grants).
    pub issued_here: bool,
    pub access: Vec<ResourceScope>,
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A token as the token endpoint hands it out.
pub struct IssuedToken {
    pub token: String,
    /// What the token grants.
    pub access: Vec<ResourceScope>,
    pub expires_in: u64,
    pub issued_at: u64,
}

/// Signs berth's tokens.
pub struct TokenIssuer {
    key: EncodingKey,
    key_id: String,
    issuer: String,
    service: String,
    ttl_seconds: u64,
}

impl TokenIssuer {
    /// Loads the PKCS#8 PEM key at `path`, or creates one (mode 0600) if
    /// the file does not exist, so tokens outlive restarts. Returns the
    /// issuer and the PEM public key that verifies its tokens.
    pub fn load_or_create(
        path: &Path,
        issuer: &str,
        service: &str,
        ttl_seconds: u64,
    ) -> anyhow::Result<(TokenIssuer, String)> {
        let secret = match std::fs::read_to_string(path) {
            Ok(pem) => {
                use p256::pkcs8::DecodePrivateKey;
                p256::SecretKey::from_pkcs8_pem(&pem).map_err(|e| {
                    anyhow::anyhow!("{}: not a P-256 PKCS#8 PEM key: {e}", path.display())
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret = generate_p256_key();
                let pem = secret
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
                write_private_file(path, pem.as_bytes())?;
                tracing::info!(path = %path.display(), "created a token signing key");
                secret
            }
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let private_pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
        let public_der = secret
            .public_key()
            .to_public_key_der()
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        let public_pem = secret
            .public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow::anyhow!("encoding the public key: {e}"))?;
        let key = EncodingKey::from_ec_pem(private_pem.as_bytes())?;
        let key_id = hex::encode(&sha2::Sha256::digest(public_der.as_bytes())[..16]);
        let issuer = TokenIssuer {
            key,
            key_id,
            issuer: issuer.to_owned(),
            service: service.to_owned(),
            ttl_seconds,
        };
        Ok((issuer, public_pem))
    }

    /// Signs a token for `subject` (empty for anonymous) granting `access`.
    pub fn issue(&self, subject: Option<&str>, access: &[ResourceScope]) -> IssuedToken {
        let now = now_seconds();
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti).expect("the OS random source");
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.unwrap_or("").to_owned(),
            aud: serde_json::Value::String(self.service.clone()),
            exp: now + self.ttl_seconds,
            nbf: Some(now.saturating_sub(1)),
            iat: Some(now),
            jti: Some(hex::encode(jti)),
            access: access
                .iter()
                .map(|scope| {
                    let (kind, name) = scope.type_and_name();
                    let actions = match scope.resource {
                        Resource::Catalog => vec!["*".to_owned()],
                        Resource::Repository(_) => scope
                            .actions
                            .names()
                            .into_iter()
                            .map(String::from)
                            .collect(),
                    };
                    AccessEntry {
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        actions,
                    }
                })
                .collect(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.key)
            .expect("signing with a valid P-256 key");
        IssuedToken {
            token,
            access: access.to_vec(),
            expires_in: self.ttl_seconds,
            issued_at: now,
        }
    }
}

fn generate_p256_key() -> p256::SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("the OS random source");
        // Fails only for the rare value outside the curve order: try again.
        if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
            return key;
        }
    }
}

/// Writes a file only its owner can read, creating its directory.
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// A key that signs tokens berth accepts, and what it may claim.
struct TrustedKey {
    key: DecodingKey,
    validation: Validation,
    issued_here: bool,
}

impl TrustedKey {
    fn new(
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
        issuer: &str,
        audience: &str,
        here: bool,
    ) -> Self {
        // The algorithm list is the key's own family only: a token that
        // says `none`, or HS256 with the public key as its secret, fails.
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECONDS;
        TrustedKey {
            key,
            validation,
            issued_here: here,
        }
    }
}

/// An external token service berth trusts.
pub struct ExternalIssuer<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub public_key: Option<&'a Path>,
    pub jwks: Option<&'a Path>,
}

/// Checks bearer tokens, and remembers the ones that passed.
pub struct TokenVerifier {
    keys: Vec<TrustedKey>,
    cache: Mutex<HashMap<String, Arc<VerifiedToken>>>,
}

impl TokenVerifier {
    /// Trusts berth's own key (`own_public_pem`) and each external issuer.
    pub fn new(
        own_public_pem: &str,
        own_issuer: &str,
        service: &str,
        external: &[ExternalIssuer<'_>],
    ) -> anyhow::Result<TokenVerifier> {
        let own = DecodingKey::from_ec_pem(own_public_pem.as_bytes())?;
        let mut keys = vec![TrustedKey::new(
            own,
            vec![Algorithm::ES256],
            own_issuer,
            service,
            true,
        )];
        for ext in external {
            let mut trust = |key, algorithms| {
                keys.push(TrustedKey::new(
                    key,
                    algorithms,
                    ext.issuer,
                    ext.audience,
                    false,
                ));
            };
            if let Some(path) = ext.public_key {
                let pem = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let (key, algorithms) = pem_key(&pem).ok_or_else(|| {
                    anyhow::anyhow!("{}: not an EC or RSA public key", path.display())
                })?;
                trust(key, algorithms);
            }
            if let Some(path) = ext.jwks {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let set: JwkSet = serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{}: not a JWKS: {e}", path.display()))?;
                for jwk in &set.keys {
                    // Only public-key families: a symmetric JWK would let
                    // anyone who can read the file mint tokens.
                    let algorithms = family_algorithms(jwk);
                    if algorithms.is_empty() {
                        continue;
                    }
                    trust(DecodingKey::from_jwk(jwk)?, algorithms);
                }
            }
        }
        Ok(TokenVerifier {
            keys,
            cache: Mutex::new(HashMap::new()),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Arc<VerifiedToken>, TokenError> {
        let now = now_seconds();
        if let Some(hit) = self.cache.lock().expect("token cache").get(token)
            && hit.expires_at + LEEWAY_SECONDS > now
        {
            return Ok(hit.clone());
        }
        let mut last_error = String::from("no trusted key");
        for trusted in &self.keys {
            match jsonwebtoken::decode::<Claims>(token, &trusted.key, &trusted.validation) {
                Ok(data) => {
                    let claims = data.claims;
                    let verified = Arc::new(VerifiedToken {
                        subject: Some(claims.sub.clone()).filter(|s| !s.is_empty()),
                        issued_here: trusted.issued_here,
                        access: claims.scopes(),
                        expires_at: claims.exp,
                    });
                    self.remember(token, verified.clone(), now);
                    return Ok(verified);
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        Err(TokenError::Invalid(last_error))
    }

    fn remember(&self, token: &str, verified: Arc<VerifiedToken>, now: u64) {
        let mut cache = self.cache.lock().expect("token cache");
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, v| v.expires_at + LEEWAY_SECONDS > now);
            if cache.len() >= CACHE_CAPACITY {
                cache.clear();
            }
        }
        cache.insert(token.to_owned(), verified);
    }
}

/// The algorithms a key of each public-key family may sign with.
const EC_ALGORITHMS: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
const RSA_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// An EC or RSA public key in PEM, with the algorithms of its family.
fn pem_key(pem: &[u8]) -> Option<(DecodingKey, Vec<Algorithm>)> {
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, EC_ALGORITHMS.to_vec()));
    }
    DecodingKey::from_rsa_pem(pem)
        .ok()
        .map(|key| (key, RSA_ALGORITHMS.to_vec()))
}

fn family_algorithms(jwk: &jsonwebtoken::jwk::Jwk) -> Vec<Algorithm> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    match &jwk.algorithm {
        P::EllipticCurve(_) => EC_ALGORITHMS.to_vec(),
        P::RSA(_) => RSA_ALGORITHMS.to_vec(),
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(dir: &Path) -> (TokenIssuer, TokenVerifier) {
        let (issuer, public) =
            TokenIssuer::load_or_create(&dir.join("key.pem"), "berth", "svc", 300).unwrap();
        let verifier = TokenVerifier::new(&public, "berth", "svc", &[]).unwrap();
        (issuer, verifier)
    }

    #[test]
    fn issued_tokens_verify_and_keys_persist() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, verifier) = setup(dir.path());
        let scope = ResourceScope::parse("repository:team/app:pull,push").unwrap();
        let token = issuer.issue(Some("alice"), std::slice::from_ref(&scope));
        let verified = verifier.verify(&token.token).unwrap();
        assert_eq!(verified.subject.as_deref(), Some("alice"));
        assert_eq!(verified.access, vec![scope]);
        // A restart loads the same key, so the old token still verifies.
        let (_, verifier_after_restart) = setup(dir.path());
        assert!(verifier_after_restart.verify(&token.token).is_ok());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("key.pem"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tampered_tokens_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (issuer, verifier) = setup(dir.path());
        let token = issuer.issue(Some("alice"), &[]).token;
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value =
            serde_json::from_slice(&b64.decode(&parts[1]).unwrap()).unwrap();
        claims["sub"] = "admin".into();
        parts[1] = b64.encode(claims.to_string());
        assert!(verifier.verify(&parts.join(".")).is_err());
        assert!(verifier.verify("not.a.token").is_err());
    }
}
