//! The one error type of the registry core. It carries no HTTP: the API
//! layer maps each variant once to an OCI error code and status.

use crate::core::names::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry: {0}")]
    BlobUnknown(String),
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    /// A commit of a blob a collector is deleting: the bytes may be gone,
    /// so the client uploads them again.
    #[error("blob upload invalid: {0} is being garbage collected; upload it again")]
    BlobBeingCollected(Digest),
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    /// A chunk that does not start where the upload ends. `offset` is the
    /// size the upload has, so the client can resume from there.
    #[error("chunk out of order: the upload holds {offset} bytes, the chunk starts at {start}")]
    ChunkOutOfOrder { offset: u64, start: u64 },
    /// Another request (through another replica) is writing to the upload,
    /// which holds `offset` bytes so far.
    #[error("another request is writing to this upload, which holds {offset} bytes so far")]
    UploadBusy { offset: u64 },
    #[error("{0}")]
    DigestInvalid(String),
    #[error("manifest references a blob unknown to this repository: {0}")]
    ManifestBlobUnknown(Digest),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    #[error("manifest exceeds the limit of {limit} bytes ({size} bytes received)")]
    ManifestTooLarge { size: u64, limit: u64 },
    #[error("{0}")]
    NameInvalid(String),
    #[error("repository name not known to registry: {0}")]
    NameUnknown(String),
    #[error("invalid tag {0:?}: a tag must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    TagInvalid(String),
    #[error("{0}")]
    SizeInvalid(String),
    /// A Range header on a blob GET that selects nothing in the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Unsupported(String),
    /// A malformed `n` on a paginated listing.
    #[error("{0}")]
    PaginationNumberInvalid(String),
    /// The client's request body failed while streaming (disconnect, reset).
    #[error("request body: {0}")]
    BodyRead(String),
    /// No credentials, or wrong ones.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that lacks the scope, which its account could get.
    #[error("{0}")]
    InsufficientScope(String),
    /// An authenticated caller that may not do this.
    #[error("{0}")]
    Denied(String),
    /// A token request berth cannot serve: a malformed scope, another
    /// service, an unsupported grant type.
    #[error("{0}")]
    TokenRequestInvalid(String),
    /// Too many wrong passwords: try again after `retry_after` seconds.
    #[error("too many failed logins; retry after {retry_after} seconds")]
    TooManyRequests { retry_after: u64 },
    /// A push that would move a tag of a repository whose tags are
    /// immutable.
    #[error("tag {tag} of {repository} is immutable: it already points at {digest}")]
    TagImmutable {
        repository: String,
        tag: String,
        digest: String,
    },
    /// A pull of an image a signature pull policy protects, without a
    /// valid signature.
    #[error("{image} is refused by the {policy}: {reason}")]
    SignatureRequired {
        image: String,
        policy: String,
        reason: String,
    },
    /// Admin input that makes no sense (a bad setting, a malformed body).
    #[error("{0}")]
    Invalid(String),
    /// Something the admin API was asked about that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A create that names something that exists, or a change to something
    /// the config file owns.
    #[error("{0}")]
    Conflict(String),
    /// A path under /v2/ that names no endpoint.
    #[error("no such endpoint")]
    RouteUnknown,
    /// A method the endpoint does not serve.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The disk (or quota) that holds uploads, blobs or the metadata is
    /// full: nothing of the request was kept.
    #[error(
        "the registry's storage is full ({0}); nothing of this request was stored: \
         free space on the registry and push again"
    )]
    StorageFull(String),
    /// A store berth depends on (the metadata database, the bucket) does
    /// not answer: the request did nothing, and may be tried again.
    #[error("{0} is unavailable; nothing of this request was stored: try again shortly")]
    Unavailable(String),
    /// Something on berth's side: storage, database. Logged in full, shown
    /// to the client only as a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        if crate::storage::space::is_full(&e) {
            return RegistryError::StorageFull(e.to_string());
        }
        RegistryError::Internal(format!("storage: {e}"))
    }
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        // PostgreSQL refuses text holding a NUL byte, which SQLite stores;
        // only a client sends one (names are checked, so it matches nothing).
        if let sqlx::Error::Database(db) = &e
            && db.code().as_deref() == Some("22021")
        {
            return RegistryError::Invalid("text may not contain NUL characters".into());
        }
        // SQLite's SQLITE_FULL ("database or disk is full"), and
        // PostgreSQL's disk_full.
        if let sqlx::Error::Database(db) = &e
            && (db.message().contains("database or disk is full")
                || db.code().as_deref() == Some("53100"))
        {
            return RegistryError::StorageFull(format!("metadata store: {}", db.message()));
        }
        // The server gone (restarted, connections killed, unreachable):
        // the pool reconnects by itself; this request fails clearly.
        let gone = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => true,
            // PostgreSQL's class 57P (operator intervention: terminated,
            // shutting down) and 08 (connection exceptions).
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
            _ => false,
        };
        if gone {
            tracing::warn!(error = %e, "metadata store unavailable");
            return RegistryError::Unavailable("the metadata store".into());
        }
        RegistryError::Internal(format!("metadata store: {e}"))
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
