//! Who is calling and what they may do. [`Auth`] turns credentials (none,
//! Basic, or a Bearer token) into a [`Caller`], decides whether a caller may
//! do what a request needs, and issues tokens for the token service. It
//! knows nothing of HTTP: the API layer reads headers and writes challenges.

pub mod accounts;
pub mod manage;
pub mod scope;
pub mod throttle;
pub mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::auth::accounts::{ANONYMOUS, AccountKind, Grant, Namespace, Permissions};
use crate::auth::scope::{Actions, Resource, ResourceScope};
use crate::auth::throttle::LoginThrottle;
use crate::auth::token::{ExternalIssuer, IssuedToken, TokenIssuer, TokenVerifier, VerifiedToken};
use crate::config::Config;
use crate::core::{RegistryError, Result};
use crate::meta::MetaStore;

/// How long a checked password, or anonymous grants, are trusted before the
/// store is asked again. Bounds how long a revoked grant keeps working.
const CREDENTIAL_CACHE_TTL: Duration = Duration::from_secs(10);
const CREDENTIAL_CACHE_CAPACITY: usize = 10_000;

/// Credentials as a request presents them.
pub enum Credentials<'a> {
    None,
    Basic { user: String, password: String },
    Bearer(&'a str),
}

impl<'a> Credentials<'a> {
    /// Reads an `Authorization` header value. A header berth cannot read is
    /// an error, never silently anonymous.
    pub fn parse(header: Option<&'a str>) -> Result<Credentials<'a>> {
        let Some(value) = header else {
            return Ok(Credentials::None);
        };
        let bad = || RegistryError::Unauthorized("malformed Authorization header".into());
        let (scheme, rest) = value.trim().split_once(' ').ok_or_else(bad)?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            return Ok(Credentials::Bearer(rest));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .map_err(|_| bad())?;
            let text = String::from_utf8(decoded).map_err(|_| bad())?;
            let (user, password) = text.split_once(':').ok_or_else(bad)?;
            return Ok(Credentials::Basic {
                user: user.to_owned(),
                password: password.to_owned(),
            });
        }
        Err(RegistryError::Unauthorized(format!(
            "unsupported authorization scheme {scheme:?}"
        )))
    }
}

/// What a caller may do, and where that knowledge comes from.
#[derive(Clone, Debug)]
enum Access {
    /// An account's (or anonymous) grants, read from the store.
    Grants(Arc<Permissions>),
    /// The `access` claim of a verified token.
    Token(Arc<VerifiedToken>),
}

/// An authenticated (or anonymous) caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The account, if the caller proved one.
    pub account: Option<String>,
    /// Whether the caller proved anything, or was let in as anonymous
    /// loopback. Plain anonymous callers may not even open `/v2/`.
    pub authenticated: bool,
    access: Access,
}

impl Caller {
    pub fn allowed(&self, resource: &Resource) -> Actions {
        match &self.access {
            Access::Grants(perms) => perms.allowed(resource),
            Access::Token(token) => token
                .access
                .iter()
                .filter(|s| &s.resource == resource)
                .map(|s| s.actions)
                .fold(Actions::NONE, Actions::union),
        }
    }

    pub fn may(&self, need: &ResourceScope) -> bool {
        self.allowed(&need.resource).contains(need.actions)
    }

    /// Whether the caller may pull from every repository, as a mount that
    /// names no source repository needs: the same right as listing them all.
    pub fn may_pull_everything(&self) -> bool {
        self.allowed(&Resource::Catalog).contains(Actions::PULL)
    }
}

/// Settings read once from the config.
/// Password checks at once (see [`Auth`]'s `hashing`).
const MAX_CONCURRENT_HASHING: usize = 2;

pub struct AuthSettings {
    pub anonymous_loopback: bool,
    pub service: String,
    pub realm: String,
    /// `https` when serving TLS, for the default realm.
    pub scheme: &'static str,
}

/// The cached result of checking one Basic credential.
struct CheckedCredential {
    caller: Caller,
    at: Instant,
}

pub struct Auth {
    meta: MetaStore,
    issuer: TokenIssuer,
    verifier: TokenVerifier,
    throttle: LoginThrottle,
    pub settings: AuthSettings,
    /// Keyed by SHA-256 of `user:password`, so no secret stays in memory.
    checked: Mutex<HashMap<[u8; 32], CheckedCredential>>,
    anonymous: Mutex<Option<(Arc<Permissions>, Instant)>>,
    /// Checked when the account does not exist, so that a wrong name costs
    /// as long as a wrong password.
    /// Checked against when the account does not exist, so that a wrong
    /// name takes as long as a wrong password; made on first use.
    decoy_hash: std::sync::OnceLock<String>,
    /// Password checks running at once: each takes Argon2's 19 MiB and a
    /// core for a while, so a burst of logins cannot take all of either.
    hashing: tokio::sync::Semaphore,
}

impl Auth {
    pub fn new(config: &Config, meta: MetaStore) -> anyhow::Result<Auth> {
        let a = &config.auth;
        let key_path = if a.signing_key.as_os_str().is_empty() {
            config.data_dir.join("keys").join("token-signing-key.pem")
        } else {
            a.signing_key.clone()
        };
        let (issuer, public_pem) =
            TokenIssuer::load_or_create(&key_path, &a.issuer, &a.service, a.token_ttl_seconds)?;
        let external: Vec<ExternalIssuer<'_>> = a
            .trusted_issuers
            .iter()
            .map(|t| ExternalIssuer {
                issuer: &t.issuer,
                audience: if t.audience.is_empty() {
                    &a.service
                } else {
                    &t.audience
                },
                public_key: Some(t.public_key.as_path()).filter(|p| !p.as_os_str().is_empty()),
                jwks: Some(t.jwks.as_path()).filter(|p| !p.as_os_str().is_empty()),
            })
            .collect();
        let verifier = TokenVerifier::new(&public_pem, &a.issuer, &a.service, &external)?;
        Ok(Auth {
            meta,
            issuer,
            verifier,
            throttle: LoginThrottle::new(a.max_failed_logins),
            settings: AuthSettings {
                anonymous_loopback: a.anonymous_loopback,
                service: a.service.clone(),
                realm: a.realm.clone(),
                scheme: if config.tls.enabled() {
                    "https"
                } else {
                    "http"
                },
            },
            checked: Mutex::new(HashMap::new()),
            anonymous: Mutex::new(None),
            decoy_hash: std::sync::OnceLock::new(),
            hashing: tokio::sync::Semaphore::new(MAX_CONCURRENT_HASHING),
        })
    }

    /// On a store with no accounts, creates `admin`, able to do everything,
    /// with the password in `password_file` or, when that is empty, a
    /// random one written to `<data_dir>/initial-admin-password` (mode
    /// 0600). Returns the password when it generated one.
    pub async fn create_initial_admin(
        &self,
        data_dir: &Path,
        password_file: &Path,
    ) -> anyhow::Result<Option<String>> {
        if self.meta.account_count().await? > 0 {
            return Ok(None);
        }
        let given = !password_file.as_os_str().is_empty();
        let password = if given {
            let text = std::fs::read_to_string(password_file).map_err(|e| {
                anyhow::anyhow!(
                    "auth.initial_admin_password_file {}: {e}",
                    password_file.display()
                )
            })?;
            let password = text.trim_end_matches(['\r', '\n']).to_owned();
            anyhow::ensure!(
                !password.is_empty(),
                "auth.initial_admin_password_file {} is empty",
                password_file.display()
            );
            password
        } else {
            let password = accounts::random_secret();
            let file = data_dir.join("initial-admin-password");
            // The file first: an admin whose password nobody can read is
            // worse than none. A file left from an earlier attempt is replaced.
            let _ = std::fs::remove_file(&file);
            token::write_private_file(&file, format!("{password}\n").as_bytes())?;
            password
        };
        self.meta
            .insert_account(
                "admin",
                AccountKind::User,
                &accounts::hash_secret(&password),
            )
            .await?;
        let everything = Grant {
            namespace: Namespace::parse("").map_err(|e| anyhow::anyhow!(e))?,
            actions: Actions::ALL,
        };
        self.meta.put_grant("admin", &everything).await?;
        if given {
            tracing::info!(
                file = %password_file.display(),
                "created the account \"admin\" with the password in the file"
            );
            return Ok(None);
        }
        Ok(Some(password))
    }

    /// Who is calling. Wrong credentials are an error; no credentials are
    /// an anonymous caller.
    pub async fn caller(
        &self,
        credentials: Credentials<'_>,
        peer: Option<IpAddr>,
    ) -> Result<Caller> {
        match credentials {
            Credentials::None => {
                if self.settings.anonymous_loopback && peer.is_some_and(|p| p.is_loopback()) {
                    static LOOPBACK: std::sync::LazyLock<Arc<Permissions>> =
                        std::sync::LazyLock::new(|| Arc::new(Permissions::everything_but_admin()));
                    return Ok(Caller {
                        account: None,
                        authenticated: true,
                        access: Access::Grants(LOOPBACK.clone()),
                    });
                }
                Ok(Caller {
                    account: None,
                    authenticated: false,
                    access: Access::Grants(self.anonymous_permissions().await?),
                })
            }
            Credentials::Basic { user, password } => {
                self.check_password(&user, &password, peer).await
            }
            Credentials::Bearer(token) => {
                let verified = self
                    .verifier
                    .verify(token)
                    .map_err(|e| RegistryError::Unauthorized(e.to_string()))?;
                Ok(Caller {
                    account: verified.subject.clone(),
                    authenticated: true,
                    access: Access::Token(verified),
                })
            }
        }
    }

    /// An anonymous caller with only what anonymous grants allow: never
    /// the loopback trust, which a browser page on this host must not get.
    pub async fn anonymous_caller(&self) -> Result<Caller> {
        Ok(Caller {
            account: None,
            authenticated: false,
            access: Access::Grants(self.anonymous_permissions().await?),
        })
    }

    /// The caller of a session that signed in as `name` earlier: the
    /// account's grants as they are now, plus anonymous ones. An account
    /// deleted or disabled since is refused.
    pub async fn session_caller(&self, name: &str) -> Result<Caller> {
        match self.meta.account(name).await? {
            Some(account) if !account.disabled => Ok(Caller {
                account: Some(account.name.clone()),
                authenticated: true,
                access: Access::Grants(Arc::new(Permissions(
                    self.meta
                        .grants(&account.name)
                        .await?
                        .into_iter()
                        .chain(self.anonymous_permissions().await?.0.iter().cloned())
                        .collect(),
                ))),
            }),
            _ => Err(RegistryError::Unauthorized(
                "the account no longer exists or is disabled".into(),
            )),
        }
    }

    async fn anonymous_permissions(&self) -> Result<Arc<Permissions>> {
        if let Some((perms, at)) = &*self.anonymous.lock().expect("anonymous cache")
            && at.elapsed() < CREDENTIAL_CACHE_TTL
        {
            return Ok(perms.clone());
        }
        let perms = Arc::new(Permissions(self.meta.grants(ANONYMOUS).await?));
        *self.anonymous.lock().expect("anonymous cache") = Some((perms.clone(), Instant::now()));
        Ok(perms)
    }

    async fn check_password(
        &self,
        user: &str,
        password: &str,
        peer: Option<IpAddr>,
    ) -> Result<Caller> {
        let key: [u8; 32] = sha2::Sha256::digest(format!("{user}:{password}")).into();
        if let Some(hit) = self.checked.lock().expect("credential cache").get(&key)
            && hit.at.elapsed() < CREDENTIAL_CACHE_TTL
        {
            return Ok(hit.caller.clone());
        }
        let ip = peer.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Err(wait) = self.throttle.check(ip, user) {
            return Err(RegistryError::TooManyRequests {
                retry_after: wait.as_secs().max(1),
            });
        }
        let account = self.meta.account(user).await?;
        let password_owned = password.to_owned();
        let _hashing = self
            .hashing
            .acquire()
            .await
            .map_err(|e| RegistryError::Internal(format!("password check: {e}")))?;
        let hash = match &account {
            Some(a) => a.secret_hash.clone(),
            None => self
                .decoy_hash
                .get_or_init(|| accounts::hash_secret(&accounts::random_secret()))
                .clone(),
        };
        // Hashing is deliberately slow: keep it off the async workers.
        let matches =
            tokio::task::spawn_blocking(move || accounts::verify_secret(&hash, &password_owned))
                .await
                .map_err(|e| RegistryError::Internal(format!("password check: {e}")))?;
        let account = match account {
            Some(a) if matches && !a.disabled => a,
            _ => {
                self.throttle.failed(ip, user);
                return Err(RegistryError::Unauthorized(
                    "wrong user name or password".into(),
                ));
            }
        };
        self.throttle.succeeded(ip, user);
        let caller = Caller {
            account: Some(account.name.clone()),
            authenticated: true,
            // What anonymous callers may do (public namespaces), so may
            // everyone who logged in.
            access: Access::Grants(Arc::new(Permissions(
                self.meta
                    .grants(&account.name)
                    .await?
                    .into_iter()
                    .chain(self.anonymous_permissions().await?.0.iter().cloned())
                    .collect(),
            ))),
        };
        let mut checked = self.checked.lock().expect("credential cache");
        if checked.len() >= CREDENTIAL_CACHE_CAPACITY {
            checked.retain(|_, c| c.at.elapsed() < CREDENTIAL_CACHE_TTL);
            if checked.len() >= CREDENTIAL_CACHE_CAPACITY {
                checked.clear();
            }
        }
        checked.insert(
            key,
            CheckedCredential {
                caller: caller.clone(),
                at: Instant::now(),
            },
        );
        Ok(caller)
    }

    /// Whether `caller` may do everything in `needs`. When not, the error
    /// tells the client what to do: authenticate (401), fetch a token with
    /// the scope (401 `insufficient_scope`), or give up (403 DENIED).
    pub async fn authorize(&self, caller: &Caller, needs: &[ResourceScope]) -> Result<()> {
        let Some(missing) = needs.iter().find(|n| !caller.may(n)) else {
            return Ok(());
        };
        let what = describe(missing);
        if !caller.authenticated {
            return Err(RegistryError::Unauthorized(format!(
                "authentication required for {what}"
            )));
        }
        if let Access::Token(token) = &caller.access {
            // The token may just be for another scope: if the account could
            // get one that allows this, tell the client to fetch it.
            let could = match (&token.subject, token.issued_here) {
                (Some(account), true) => Permissions(self.meta.grants(account).await?)
                    .allowed(&missing.resource)
                    .contains(missing.actions),
                (None, true) => {
                    let anonymous_may = self
                        .anonymous_permissions()
                        .await?
                        .allowed(&missing.resource)
                        .contains(missing.actions);
                    if !anonymous_may {
                        // An anonymous token: credentials might allow it,
                        // and a client only offers them after a 401.
                        return Err(RegistryError::InsufficientScope(format!(
                            "authentication required for {what}"
                        )));
                    }
                    true
                }
                (_, false) => true,
            };
            if could {
                return Err(RegistryError::InsufficientScope(format!(
                    "the token does not grant {what}"
                )));
            }
        }
        Err(RegistryError::Denied(format!(
            "{} is not allowed {what}",
            caller.account.as_deref().unwrap_or("an anonymous caller")
        )))
    }

    /// Whether the caller administers the whole registry (admin on every
    /// repository), as the admin API requires.
    pub async fn is_admin(&self, caller: &Caller) -> Result<bool> {
        let everything = |grants: &[Grant]| {
            grants
                .iter()
                .any(|g| g.namespace.is_everything() && g.actions.contains(Actions::ADMIN))
        };
        Ok(match (&caller.access, &caller.account) {
            (Access::Grants(perms), Some(_)) => everything(&perms.0),
            // A token says what it grants on repositories, not who may
            // administer: ask the account's grants, for tokens issued here.
            (Access::Token(token), Some(account)) if token.issued_here => {
                everything(&self.meta.grants(account).await?)
            }
            _ => false,
        })
    }

    /// Drops cached credentials and grants, after an account or grant
    /// changed, so the change applies to the next request.
    pub fn forget_cached(&self) {
        self.checked.lock().expect("credential cache").clear();
        *self.anonymous.lock().expect("anonymous cache") = None;
    }

    /// The token service: a token for the caller granting what it asked
    /// for and may have. Asking for more than allowed is not an error: the
    /// token simply grants less.
    pub async fn issue_token(&self, caller: &Caller, wanted: &[ResourceScope]) -> IssuedToken {
        let granted: Vec<ResourceScope> = wanted
            .iter()
            .map(|w| ResourceScope {
                resource: w.resource.clone(),
                actions: caller.allowed(&w.resource).intersect(w.actions),
            })
            .filter(|s| !s.actions.is_empty())
            .collect();
        self.issuer.issue(caller.account.as_deref(), &granted)
    }
}

fn describe(need: &ResourceScope) -> String {
    match &need.resource {
        Resource::Repository(repo) => format!("{} on {repo}", need.actions),
        Resource::Catalog => "to list all repositories".to_owned(),
    }
}
