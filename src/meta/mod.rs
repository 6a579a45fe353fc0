//! `MetaStore`: the metadata that decides what exists (repositories, blobs
//! and their links, manifests, tags, uploads in progress), in an embedded
//! SQLite file or PostgreSQL. Once a writing method returns, the row
//! survives a power cut (on SQLite through group commit: `durable`).
//!
//! Page sizes are bound as `LIMIT CAST($n AS BIGINT)`, never `LIMIT $n`:
//! SQLite plans a bare parameter's LIMIT from its bound value, and so
//! compiles the statement again each time it is bound, which cost more
//! than everything else in a manifest push (the event fan-out's query).

mod accounts;
mod admin;
mod batch;
mod durable;
mod events;
mod gc;
mod mirrors;
mod signatures;

pub use admin::{
    AuditRow, ManifestSummary, NewAudit, RepositorySummary, SettingsRow, SinkRow, TagRow,
};
pub use events::{AttemptOutcome, DeliveryRow, DeployRow, NewDeploy};
pub use gc::GarbageManifest;
pub use mirrors::{
    CachedItem, CachedPull, CachedTag, CountDelta, MirrorRepositoryRow, MirrorSpecRow,
};
pub use signatures::SignatureKeyRow;

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use crate::core::Result;
use crate::core::event::Event;
use crate::core::names::{Digest, RepoName, Tag};
use batch::Batch;

/// Where the metadata lives.
#[derive(Clone, Debug)]
pub enum Location {
    /// An embedded SQLite file: one berth process serves it.
    Sqlite(PathBuf),
    /// A PostgreSQL database (a `postgres://` URL) that several berth
    /// replicas may share.
    Postgres(String),
}

/// The SQL dialect of the open database, for the few statements whose
/// spelling differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct MetaStore {
    pool: AnyPool,
    dialect: Dialect,
    /// SQLite's group commit; PostgreSQL syncs each commit itself.
    wal: Option<std::sync::Arc<durable::WalSync>>,
    /// SQLite's writing transactions, one at a time, in the order they
    /// asked. SQLite admits one writer by itself, but one that finds the
    /// file locked sleeps in its busy handler (1, 2, 5 ... 100 ms) rather
    /// than being woken when the lock frees: under concurrent pushes that
    /// sleeping, not the writing, was most of a push's time.
    writer: Option<std::sync::Arc<tokio::sync::Mutex<()>>>,
}

/// A transaction that writes. [`WriteTx::commit`] returns once the change
/// is on disk; dropping it uncommitted rolls it back.
pub(crate) struct WriteTx {
    tx: Transaction<'static, Any>,
    dialect: Dialect,
    wal: Option<std::sync::Arc<durable::WalSync>>,
    /// SQLite's writer turn, held until the commit.
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<()> {
        let WriteTx {
            tx,
            wal,
            _turn: turn,
            ..
        } = self;
        tx.commit().await?;
        // The next writer goes on while this one waits for the disk: the
        // sync it waits for then covers both.
        drop(turn);
        match &wal {
            Some(wal) => wal.durable().await,
            None => Ok(()),
        }
    }

    /// Runs `batch` in this transaction: the first row of its last
    /// statement.
    pub(crate) async fn run(&mut self, batch: Batch<'_>) -> Result<Option<sqlx::any::AnyRow>> {
        let dialect = self.dialect;
        batch.run(&mut self.tx, dialect).await
    }

    /// Commits without waiting for the disk: for a change that is redone
    /// identically if a crash loses it, and that nothing acknowledges. The
    /// next durable commit covers it (the WAL is synced in order).
    pub(crate) async fn commit_unsynced(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &sqlx::AnyConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.tx
    }
}

/// An upload in progress.
pub struct UploadRow {
    pub size: u64,
    pub hash_state: Vec<u8>,
    /// The blob store's state of the upload (opaque here).
    pub storage_state: Option<String>,
}

/// A stored manifest, as served.
pub struct ManifestRow {
    pub digest: Digest,
    pub media_type: String,
    pub content: bytes::Bytes,
}

/// A manifest that names another as its subject.
pub struct ReferrerRow {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: Option<String>,
    pub size: u64,
}

/// What the store holds and what is waiting, for the metrics.
#[derive(Debug, Default)]
pub struct Usage {
    pub blobs: u64,
    pub blob_bytes: u64,
    pub uploads_in_progress: u64,
    /// Events not yet fanned out to their sinks.
    pub events_pending: u64,
    /// Deliveries waiting for an attempt, per sink that has any.
    pub deliveries_pending: Vec<(String, u64)>,
}

/// A manifest to store, with the digests it points at.
pub struct NewManifest<'a> {
    pub digest: &'a Digest,
    pub media_type: &'a str,
    pub artifact_type: Option<&'a str>,
    pub subject: Option<&'a Digest>,
    pub annotations: Option<&'a str>,
    pub content: &'a [u8],
    pub references: &'a [Digest],
}

pub use crate::core::clock::{format_ms, now_ms};

/// A manifest's references recorded by one statement (SQLite takes at
/// most 32,766 parameters to a statement).
const REFERENCES_PER_STATEMENT: usize = 500;

/// Records a repository ($1, created at $2) if it is new.
const ENSURE_REPOSITORY: &str =
    "INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// How long a lease lasts without renewal: how soon another replica takes
/// over the work of one that died.
pub const LEASE_MS: i64 = 15_000;

/// The advisory lock key of writing transactions on PostgreSQL ("berth").
const WRITE_LOCK: i64 = 0x0062_6572_7468;

fn parse_digest(s: String) -> Result<Digest> {
    // Rows are only ever written from validated digests.
    Digest::from_str(&s)
}

impl MetaStore {
    /// Opens (creating and migrating if needed) the metadata database.
    pub async fn open(location: &Location) -> Result<MetaStore> {
        sqlx::any::install_default_drivers();
        let (pool, dialect) = match location {
            Location::Sqlite(path) => (Self::open_sqlite(path).await?, Dialect::Sqlite),
            Location::Postgres(url) => (
                AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(30))
                    .connect(url)
                    .await?,
                Dialect::Postgres,
            ),
        };
        let migrated = match dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await,
            Dialect::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await,
        };
        migrated.map_err(|e| crate::core::RegistryError::Internal(format!("migrations: {e}")))?;
        let wal = match location {
            Location::Sqlite(path) => Some(std::sync::Arc::new(durable::WalSync::new(path))),
            Location::Postgres(_) => None,
        };
        let writer = (dialect == Dialect::Sqlite).then(Default::default);
        Ok(MetaStore {
            pool,
            dialect,
            wal,
            writer,
        })
    }

    /// Returns once every write this process committed is on disk: after
    /// a write that is not in a [`WriteTx`]. (PostgreSQL is durable at
    /// commit.)
    pub(crate) async fn durable(&self) -> Result<()> {
        match &self.wal {
            Some(wal) => wal.durable().await,
            None => Ok(()),
        }
    }

    /// WAL lets readers go on while one writer writes. Commits are made
    /// durable by group commit ([`durable`]), not one sync each.
    async fn open_sqlite(path: &std::path::Path) -> Result<AnyPool> {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            // An embedded file does not hang up: pinging a connection at
            // every checkout only cost a trip to its thread and back.
            .test_before_acquire(false)
            // Each connection keeps a page cache of its own, 2 MiB by
            // default: 16 MiB for the pool once a listing has walked the
            // tables. The file's pages stay in the kernel's page cache, so
            // a page this cache lacks costs one read call: 512 KiB each
            // took 3 MiB off the peak of listings, and paging through the
            // catalog or 10,000 tags ran as fast.
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA busy_timeout = 30000; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA cache_size = -512;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        // Persistent in the file; set once, as switching needs the database
        // to itself.
        sqlx::query("PRAGMA journal_mode = WAL")
            .execute(&pool)
            .await?;
        Ok(pool)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Whether other berth processes may serve from this database too
    /// (PostgreSQL), so what this one caches can change behind its back.
    pub fn is_shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    /// In a shared database, tells the other replicas to drop their cached
    /// reads, as part of `tx`: for deletes, the only changes to what they
    /// cache (manifests by digest, blob sizes).
    pub(crate) async fn announce_delete(&self, tx: &mut WriteTx) -> Result<()> {
        if self.is_shared() {
            sqlx::query("UPDATE cache_epoch SET n = n + 1 WHERE id = 1")
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Begins a transaction that writes. SQLite lets one writer in at a
    /// time by itself; on PostgreSQL every writing transaction first takes
    /// one advisory lock, so transactions that check before they write see
    /// each other's effects exactly as on SQLite, whichever replica runs
    /// them.
    pub(crate) async fn write_tx(&self) -> Result<WriteTx> {
        // The turn before the connection: waiting writers hold no pooled
        // connection from the readers.
        let turn = match &self.writer {
            Some(writer) => Some(writer.clone().lock_owned().await),
            None => None,
        };
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(WRITE_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        Ok(WriteTx {
            tx,
            dialect: self.dialect,
            wal: self.wal.clone(),
            _turn: turn,
        })
    }

    /// `sqlite` or `postgres`, whichever this store speaks.
    fn pick(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        }
    }

    /// Takes or keeps the lease `name` for `ttl_ms`; true if `holder` has
    /// it now. It is free when nobody holds it or the lease ran out.
    pub async fn hold_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Runs `work`, renewing `holder`'s lease `name` (of `ttl_ms`)
    /// meanwhile, so that it lasts however long the work takes, and no
    /// longer than `ttl_ms` after this process dies.
    pub async fn renewing<T>(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let every = Duration::from_millis(ttl_ms as u64 / 3);
        let renew = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = self.hold_lease(name, holder, ttl_ms).await {
                    tracing::warn!(lease = name, error = %e, "renewing a lease");
                }
            }
        };
        tokio::select! {
            out = work => out,
            never = renew => never,
        }
    }

    /// Whether some process holds the lease `name` now.
    pub async fn lease_taken(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM leases WHERE name = $1 AND expires_at >= $2")
            .bind(name)
            .bind(now_ms())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Forgets leases that ran out long ago (their holders died).
    pub async fn purge_expired_leases(&self) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE expires_at < $1")
            .bind(now_ms() - 3_600_000)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Gives the lease `name` up, if `holder` has it, so another process
    /// may take it at once.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Counts for the metrics. The pending counts use the partial indexes
    /// on what is pending; the blob sum reads the blobs table, a few dozen
    /// bytes a row.
    pub async fn usage(&self) -> Result<Usage> {
        let (blobs, blob_bytes, uploads, events): (i64, i64, i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT), \
             (SELECT COUNT(*) FROM uploads), \
             (SELECT COUNT(*) FROM events WHERE fanned_out = 0) FROM blobs",
        )
        .fetch_one(&self.pool)
        .await?;
        let pending: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sink, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY sink ORDER BY sink",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(Usage {
            blobs: blobs as u64,
            blob_bytes: blob_bytes as u64,
            uploads_in_progress: uploads as u64,
            events_pending: events as u64,
            deliveries_pending: pending
                .into_iter()
                .map(|(sink, n)| (sink, n as u64))
                .collect(),
        })
    }

    async fn ensure_repository(tx: &mut WriteTx, repo: &RepoName) -> Result<()> {
        sqlx::query(ENSURE_REPOSITORY)
            .bind(repo.as_str())
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub async fn repository_exists(&self, repo: &RepoName) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Records a new upload; `durable`: on disk before this returns (a
    /// session a client was told of).
    pub async fn create_upload(
        &self,
        id: &str,
        repo: &RepoName,
        hash_state: &[u8],
        durable: bool,
    ) -> Result<()> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO uploads (id, repository, size, hash_state, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, $4, $5)",
        )
        .bind(id)
        .bind(repo.as_str())
        .bind(hash_state)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if durable {
            self.durable().await?;
        }
        Ok(())
    }

    /// The upload `id` of repository `repo`, if it exists.
    pub async fn upload(&self, id: &str, repo: &RepoName) -> Result<Option<UploadRow>> {
        let row = sqlx::query(
            "SELECT size, hash_state, storage_state FROM uploads WHERE id = $1 AND repository = $2",
        )
        .bind(id)
        .bind(repo.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| UploadRow {
            size: r.get::<i64, _>(0) as u64,
            hash_state: r.get(1),
            storage_state: r.get(2),
        }))
    }

    /// Records that an upload grew from `from` to `to` bytes, with its new
    /// hash and storage states. Returns false (and changes nothing) if the
    /// upload no longer has `from` bytes.
    pub async fn advance_upload(
        &self,
        id: &str,
        from: u64,
        to: u64,
        hash_state: &[u8],
        storage_state: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE uploads SET size = $1, hash_state = $2, storage_state = $3, updated_at = $4 \
             WHERE id = $5 AND size = $6",
        )
        .bind(to as i64)
        .bind(hash_state)
        .bind(storage_state)
        .bind(now_ms())
        .bind(id)
        .bind(from as i64)
        .execute(&self.pool)
        .await?;
        self.durable().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Makes a stored blob visible in `repo`, and ends the upload that
    /// brought it, in one transaction. `bytes_present` is awaited inside
    /// the transaction: a collector that removed the bytes has removed or
    /// marked the row too, so a row is never written without its bytes.
    /// A blob being collected is refused; the client uploads it again.
    pub async fn commit_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        size: u64,
        upload: Option<&str>,
        bytes_present: impl std::future::Future<Output = Result<bool>> + Send,
    ) -> Result<()> {
        let now = now_ms();
        let mut look = Batch::default();
        look.push(ENSURE_REPOSITORY).text(repo.as_str()).int(now);
        look.push("SELECT deleting FROM blobs WHERE digest = $1")
            .text(digest.as_str());
        let mut tx = self.write_tx().await?;
        let deleting = tx.run(look).await?.map(|row| row.get::<i64, _>(0));
        if deleting == Some(1) || !bytes_present.await? {
            return Err(crate::core::RegistryError::BlobBeingCollected(
                digest.clone(),
            ));
        }
        let mut record = Batch::default();
        record
            .push(
                "INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .text(digest.as_str())
            .int(size as i64)
            .int(now);
        record
            .push(
                "INSERT INTO repository_blobs (repository, digest, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (repository, digest) DO UPDATE SET created_at = excluded.created_at",
            )
            .text(repo.as_str())
            .text(digest.as_str())
            .int(now);
        if let Some(id) = upload {
            record.push("DELETE FROM uploads WHERE id = $1").text(id);
        }
        tx.run(record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The size of a blob if it is visible in `repo`.
    pub async fn blob_in_repository(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<u64>> {
        let row = sqlx::query(
            "SELECT b.size FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest \
             WHERE rb.repository = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// The size of a blob if berth stores it, in any repository.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        let row = sqlx::query("SELECT size FROM blobs WHERE digest = $1 AND deleting = 0")
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get::<i64, _>(0) as u64))
    }

    /// Whether `repo` holds the manifest `digest`.
    pub async fn manifest_exists(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM manifests WHERE repository = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(digest.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Stores a manifest, points `tag` at it if given, and writes `event`,
    /// in one transaction. A tag of a repository with immutable tags only
    /// ever points at its first manifest. Returns the repository's
    /// retention policy (JSON), if it has one.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        m: &NewManifest<'_>,
        tag: Option<&Tag>,
        event: &Event,
    ) -> Result<Option<String>> {
        let now = now_ms();
        // One batch: on SQLite one trip to the connection's thread. The
        // checks come after the writes, which the transaction takes back
        // when a check fails.
        let mut batch = Batch::default();
        batch.push(ENSURE_REPOSITORY).text(repo.as_str()).int(now);
        batch
            .push(
                "INSERT INTO manifests (repository, digest, media_type, artifact_type, subject, annotations, size, content, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .text(repo.as_str())
            .text(m.digest.as_str())
            .text(m.media_type)
            .opt_text(m.artifact_type)
            .opt_text(m.subject.map(Digest::as_str))
            .opt_text(m.annotations)
            .int(m.content.len() as i64)
            .bytes(m.content)
            .int(now);
        // A manifest stored before has these rows already.
        for chunk in m.references.chunks(REFERENCES_PER_STATEMENT) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("($1, $2, ${})", i + 3))
                .collect();
            let insert = batch.push(format!(
                "INSERT INTO manifest_references (repository, manifest, target) VALUES {} \
                 ON CONFLICT DO NOTHING",
                rows.join(", ")
            ));
            insert.text(repo.as_str()).text(m.digest.as_str());
            for target in chunk {
                insert.text(target.as_str());
            }
        }
        if let Some(tag) = tag {
            // An immutable tag keeps its digest; the check below refuses.
            batch
                .push(
                    "INSERT INTO tags (repository, name, digest, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (repository, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at \
                     WHERE tags.digest = excluded.digest OR NOT EXISTS (SELECT 1 FROM repository_settings \
                     WHERE repository = excluded.repository AND immutable_tags <> 0)",
                )
                .text(repo.as_str())
                .text(tag.as_str())
                .text(m.digest.as_str())
                .int(now);
        }
        Self::push_event(&mut batch, event);
        // Garbage collection may have taken a blob or child manifest since
        // the caller looked: the references are checked here, in the
        // transaction that records them.
        batch
            .push(
                "SELECT (SELECT immutable_tags FROM repository_settings WHERE repository = $1), \
                 (SELECT retention FROM repository_settings WHERE repository = $1), \
                 (SELECT digest FROM tags WHERE repository = $1 AND name = $2), \
                 (SELECT r.target FROM manifest_references r WHERE r.repository = $1 AND r.manifest = $3 \
                  AND NOT EXISTS (SELECT 1 FROM blobs WHERE digest = r.target AND deleting = 0) \
                  AND NOT EXISTS (SELECT 1 FROM manifests WHERE repository = $1 AND digest = r.target) \
                  LIMIT 1)",
            )
            .text(repo.as_str())
            .opt_text(tag.map(Tag::as_str))
            .text(m.digest.as_str());
        let mut tx = self.write_tx().await?;
        let checks = tx
            .run(batch)
            .await?
            .ok_or_else(|| crate::core::RegistryError::Internal("no checks".into()))?;
        let immutable = checks.get::<Option<i64>, _>(0).unwrap_or(0) != 0;
        let retention: Option<String> = checks.get(1);
        let current: Option<String> = checks.get(2);
        if let Some(missing) = checks.get::<Option<String>, _>(3) {
            return Err(crate::core::RegistryError::ManifestBlobUnknown(
                parse_digest(missing)?,
            ));
        }
        if let (true, Some(tag), Some(current)) = (immutable, tag, current)
            && current != m.digest.as_str()
        {
            return Err(crate::core::RegistryError::TagImmutable {
                repository: repo.to_string(),
                tag: tag.to_string(),
                digest: current,
            });
        }
        tx.commit().await?;
        Ok(retention)
    }

    pub async fn manifest_by_digest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT media_type, content FROM manifests WHERE repository = $1 AND digest = $2",
        )
        .bind(repo.as_str())
        .bind(digest.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| ManifestRow {
            digest: digest.clone(),
            media_type: r.get(0),
            content: r.get::<Vec<u8>, _>(1).into(),
        }))
    }

    pub async fn manifest_by_tag(&self, repo: &RepoName, tag: &Tag) -> Result<Option<ManifestRow>> {
        let row = sqlx::query(
            "SELECT m.digest, m.media_type, m.content FROM tags t \
             JOIN manifests m ON m.repository = t.repository AND m.digest = t.digest \
             WHERE t.repository = $1 AND t.name = $2",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ManifestRow {
                digest: parse_digest(r.get(0))?,
                media_type: r.get(1),
                content: r.get::<Vec<u8>, _>(2).into(),
            })
        })
        .transpose()
    }

    /// Up to `limit` tags of `repo` after `last`, in case-insensitive
    /// lexical order (ties broken by byte order so paging is exact).
    pub async fn list_tags(
        &self,
        repo: &RepoName,
        limit: u32,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        let rows = match last {
            None => {
                sqlx::query(self.pick(
                    "SELECT name FROM tags WHERE repository = $1 \
                     ORDER BY name COLLATE NOCASE, name LIMIT CAST($2 AS BIGINT)",
                    "SELECT name FROM tags WHERE repository = $1 \
                     ORDER BY lower(name), name LIMIT CAST($2 AS BIGINT)",
                ))
                .bind(repo.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            Some(last) => {
                // PostgreSQL text cannot hold NUL, and no tag contains one:
                // every tag after `p\0…` is after `p` and differs from it
                // beyond case, so cut there and leave out `p`'s case variants.
                let (last, case_variants) = match last.find('\0') {
                    Some(nul) => (&last[..nul], false),
                    None => (last, true),
                };
                sqlx::query(self.pick(
                    "SELECT name FROM tags WHERE repository = $1 \
                     AND (name > $2 COLLATE NOCASE \
                          OR ($4 AND name = $2 COLLATE NOCASE AND name > $2)) \
                     ORDER BY name COLLATE NOCASE, name LIMIT CAST($3 AS BIGINT)",
                    "SELECT name FROM tags WHERE repository = $1 \
                     AND (lower(name) > lower($2) \
                          OR ($4 AND lower(name) = lower($2) AND name > $2)) \
                     ORDER BY lower(name), name LIMIT CAST($3 AS BIGINT)",
                ))
                .bind(repo.as_str())
                .bind(last)
                .bind(i64::from(limit))
                .bind(case_variants)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Up to `limit` repository names after `last`, in lexical order.
    pub async fn list_repositories(&self, limit: u32, last: Option<&str>) -> Result<Vec<String>> {
        // No name contains NUL, so the names after `p\0…` are those after
        // `p` (and PostgreSQL text cannot hold NUL).
        let last = last.map_or("", |last| last.split('\0').next().unwrap_or(""));
        let rows = sqlx::query(
            "SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT CAST($2 AS BIGINT)",
        )
        .bind(last)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Runs a `DELETE` keyed by repository and one more column; true if it
    /// removed a row.
    /// `event`, if given, is written with the delete when it removed a row.
    async fn delete_one(
        &self,
        sql: &'static str,
        repo: &RepoName,
        key: &str,
        event: Option<&Event>,
    ) -> Result<bool> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(key)
            .execute(&mut *tx)
            .await?;
        let deleted = done.rows_affected() == 1;
        if let (true, Some(event)) = (deleted, event) {
            Self::insert_event(&mut tx, event).await?;
        }
        if deleted {
            self.announce_delete(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Removes a tag; false if `repo` had no such tag.
    pub async fn delete_tag(&self, repo: &RepoName, tag: &Tag, event: &Event) -> Result<bool> {
        self.delete_one(
            "DELETE FROM tags WHERE repository = $1 AND name = $2",
            repo,
            tag.as_str(),
            Some(event),
        )
        .await
    }

    /// Removes a manifest and every tag on it; false if `repo` had no such
    /// manifest.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        event: &Event,
    ) -> Result<bool> {
        self.delete_one(
            "DELETE FROM manifests WHERE repository = $1 AND digest = $2",
            repo,
            digest.as_str(),
            Some(event),
        )
        .await
    }

    /// Unlinks a blob from a repository; false if it was not linked. The
    /// bytes stay until garbage collection finds nothing links them.
    pub async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool> {
        self.delete_one(
            "DELETE FROM repository_blobs WHERE repository = $1 AND digest = $2",
            repo,
            digest.as_str(),
            None,
        )
        .await
    }

    /// The manifests of `repo` whose subject is `subject`, optionally only
    /// those of one artifact type, in digest order.
    pub async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<ReferrerRow>> {
        let rows = sqlx::query(
            "SELECT digest, media_type, artifact_type, annotations, size FROM manifests \
             WHERE repository = $1 AND subject = $2 AND ($3 IS NULL OR artifact_type = $4) ORDER BY digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ReferrerRow {
                digest: r.get(0),
                media_type: r.get(1),
                artifact_type: r.get(2),
                annotations: r.get(3),
                size: r.get::<i64, _>(4) as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::RegistryError;
    use crate::core::event::{Action, Origin};

    fn digest(n: u32) -> Digest {
        format!("sha256:{n:064x}").parse().unwrap()
    }

    /// The store checks a manifest's references itself, in the manifest's
    /// transaction, however many there are: the one missing is named, and
    /// nothing is written.
    #[tokio::test]
    async fn manifests_need_every_reference_in_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&Location::Sqlite(dir.path().join("meta.db")))
            .await
            .unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        // More references than one statement takes.
        let references: Vec<Digest> = (0..REFERENCES_PER_STATEMENT as u32 + 3)
            .map(digest)
            .collect();
        for d in &references[..references.len() - 1] {
            meta.commit_blob(&repo, d, 1, None, async { Ok(true) })
                .await
                .unwrap();
        }
        let manifest = digest(99_999);
        let new = NewManifest {
            digest: &manifest,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            artifact_type: None,
            subject: None,
            annotations: None,
            content: b"{}",
            references: &references,
        };
        let event = Event::new(Action::Push, repo.as_str(), &Origin::default());
        let tag: Tag = "t".parse().unwrap();
        match meta.put_manifest(&repo, &new, Some(&tag), &event).await {
            Err(RegistryError::ManifestBlobUnknown(d)) => {
                assert_eq!(&d, references.last().unwrap())
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        assert!(!meta.manifest_exists(&repo, &manifest).await.unwrap());

        let last = references.last().unwrap();
        meta.commit_blob(&repo, last, 1, None, async { Ok(true) })
            .await
            .unwrap();
        meta.put_manifest(&repo, &new, Some(&tag), &event)
            .await
            .unwrap();
        let recorded: i64 =
            sqlx::query_scalar("SELECT count(*) FROM manifest_references WHERE manifest = $1")
                .bind(manifest.as_str())
                .fetch_one(&meta.pool)
                .await
                .unwrap();
        assert_eq!(recorded, references.len() as i64);
    }
}
