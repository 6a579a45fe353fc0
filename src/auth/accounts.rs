//! Accounts and what they may do: users and robot accounts, their hashed
//! secrets, and grants of actions on namespaces.
//!
//! Secrets are stored as PHC strings. New ones are Argon2id; bcrypt entries
//! imported from an htpasswd file keep working as they are.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;

use crate::auth::scope::{Actions, Resource};
use crate::core::names::RepoName;

/// The subject whose grants apply to requests without credentials.
pub const ANONYMOUS: &str = "anonymous";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountKind {
    /// A person, with a password they chose.
    User,
    /// A machine (CI, a kubelet's pull secret), with a long random secret.
    Robot,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::User => "user",
            AccountKind::Robot => "robot",
        }
    }

    pub fn parse(s: &str) -> Option<AccountKind> {
        match s {
            "user" => Some(AccountKind::User),
            "robot" => Some(AccountKind::Robot),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Account {
    pub name: String,
    pub kind: AccountKind,
    pub secret_hash: String,
    pub disabled: bool,
}

/// Account names: what docker login accepts and a shell does not mangle.
pub fn validate_account_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if !ok {
        return Err(format!(
            "invalid account name {name:?}: use 1 to 64 of a-z, 0-9, '.', '_', '-', \
             starting with a letter or digit"
        ));
    }
    if name == ANONYMOUS {
        return Err(format!(
            "{ANONYMOUS:?} is reserved for requests without credentials"
        ));
    }
    Ok(())
}

/// A repository name prefix that grants apply to. The empty namespace is
/// every repository; `team` covers `team` and everything under `team/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// `*` or `/` (or nothing) is every repository; `team/` and `team` are
    /// the same namespace.
    pub fn parse(s: &str) -> Result<Namespace, String> {
        let trimmed = s.trim().trim_end_matches('/');
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(Namespace(String::new()));
        }
        trimmed
            .parse::<RepoName>()
            .map_err(|e| format!("invalid namespace {s:?}: {e}"))?;
        Ok(Namespace(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn covers(&self, repo: &RepoName) -> bool {
        let repo = repo.as_str();
        self.0.is_empty()
            || repo
                .strip_prefix(&self.0)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    pub fn is_everything(&self) -> bool {
        self.0.is_empty()
    }
}

/// Actions granted on a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub namespace: Namespace,
    pub actions: Actions,
}

/// Everything an account (or anonymous) has been granted.
#[derive(Clone, Debug, Default)]
pub struct Permissions(pub Vec<Grant>);

impl Permissions {
    /// Pull, push and delete everywhere: what loopback gets when anonymous
    /// loopback access is configured.
    pub fn everything_but_admin() -> Permissions {
        Permissions(vec![Grant {
            namespace: Namespace(String::new()),
            actions: Actions::PULL.union(Actions::PUSH).union(Actions::DELETE),
        }])
    }

    /// The actions allowed on a resource. Admin of a namespace implies
    /// every action in it; the catalog lists every repository, so only who
    /// may pull everything may read it.
    pub fn allowed(&self, resource: &Resource) -> Actions {
        match resource {
            Resource::Repository(repo) => self
                .0
                .iter()
                .filter(|g| g.namespace.covers(repo))
                .map(|g| {
                    if g.actions.contains(Actions::ADMIN) {
                        Actions::ALL
                    } else {
                        g.actions
                    }
                })
                .fold(Actions::NONE, Actions::union),
            Resource::Catalog => {
                let reads_all = self.0.iter().any(|g| {
                    g.namespace.is_everything()
                        && (g.actions.contains(Actions::PULL) || g.actions.contains(Actions::ADMIN))
                });
                if reads_all {
                    Actions::ALL
                } else {
                    Actions::NONE
                }
            }
        }
    }
}

/// Hashes a new secret with Argon2id and a random salt.
pub fn hash_secret(secret: &str) -> String {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the OS random source");
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
    argon2::Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .expect("argon2 with default parameters")
        .to_string()
}

/// Checks a secret against a stored hash, Argon2 or bcrypt. Both compare in
/// constant time.
pub fn verify_secret(hash: &str, secret: &str) -> bool {
    if hash.starts_with("$2") {
        return bcrypt::verify(secret, hash).unwrap_or(false);
    }
    match PasswordHash::new(hash) {
        Ok(parsed) => argon2::Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A long random secret (256 bits), for robots and generated passwords.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Reads an htpasswd file (`name:hash` lines). Only bcrypt entries are
/// taken: the older MD5, SHA-1 and crypt formats are too weak to keep.
pub fn parse_htpasswd(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: expected name:hash", n + 1))?;
        validate_account_name(name).map_err(|e| format!("line {}: {e}", n + 1))?;
        if !(hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$")) {
            return Err(format!(
                "line {}: {name} is not a bcrypt entry; create it with htpasswd -B",
                n + 1
            ));
        }
        entries.push((name.to_owned(), hash.to_owned()));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    #[test]
    fn namespaces_cover_whole_components() {
        let team = Namespace::parse("team/").unwrap();
        assert_eq!(team, Namespace::parse("team").unwrap());
        assert!(team.covers(&repo("team")));
        assert!(team.covers(&repo("team/app")));
        assert!(team.covers(&repo("team/a/b")));
        assert!(!team.covers(&repo("teammate/app")));
        assert!(!team.covers(&repo("other/team")));
        assert!(Namespace::parse("*").unwrap().covers(&repo("x")));
        assert!(Namespace::parse("../x").is_err());
    }

    #[test]
    fn permissions_union_grants_and_admin_implies_all() {
        let perms = Permissions(vec![
            Grant {
                namespace: Namespace::parse("team").unwrap(),
                actions: Actions::PULL,
            },
            Grant {
                namespace: Namespace::parse("team/app").unwrap(),
                actions: Actions::PUSH,
            },
            Grant {
                namespace: Namespace::parse("ops").unwrap(),
                actions: Actions::ADMIN,
            },
        ]);
        let on = |r: &str| perms.allowed(&Resource::Repository(repo(r)));
        assert_eq!(on("team/app"), Actions::PULL.union(Actions::PUSH));
        assert_eq!(on("team/web"), Actions::PULL);
        assert_eq!(on("ops/x"), Actions::ALL);
        assert_eq!(on("other"), Actions::NONE);
        assert_eq!(perms.allowed(&Resource::Catalog), Actions::NONE);
    }

    #[test]
    fn secrets_hash_and_verify() {
        let hash = hash_secret("s3cret");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_secret(&hash, "s3cret"));
        assert!(!verify_secret(&hash, "s3cret "));
        assert!(!verify_secret("garbage", "s3cret"));
        let bcrypt = bcrypt::hash("pw", 4).unwrap();
        assert!(verify_secret(&bcrypt, "pw"));
        assert!(!verify_secret(&bcrypt, "pW"));
        assert_ne!(random_secret(), random_secret());
        assert_eq!(random_secret().len(), 43);
    }

    #[test]
    fn htpasswd_takes_bcrypt_only() {
        let text =
            "# users\nalice:$2y$05$abcdefghijklmnopqrstuu5l5Qe0vQ6iJb0yIqgkf5t8R7aCq.K2a\n\n";
        let entries = parse_htpasswd(text).unwrap();
        assert_eq!(entries[0].0, "alice");
        assert!(parse_htpasswd("bob:{SHA}abc").is_err());
        assert!(parse_htpasswd("bob:$apr1$x$y").is_err());
        assert!(parse_htpasswd("no colon").is_err());
    }
}
