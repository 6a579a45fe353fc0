-- The registry's metadata: what exists. A blob file in storage that no row
-- here names is invisible. Times are Unix milliseconds.

CREATE TABLE repositories (
    name       TEXT PRIMARY KEY,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE blobs (
    digest     TEXT PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A blob is readable through a repository only once it was pushed to (or
-- mounted into) that repository.
CREATE TABLE repository_blobs (
    repository TEXT NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    digest     TEXT NOT NULL REFERENCES blobs (digest),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository    TEXT NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    digest        TEXT NOT NULL,
    media_type    TEXT NOT NULL,
    artifact_type TEXT,
    subject       TEXT,
    annotations   TEXT,
    size          INTEGER NOT NULL,
    content       BLOB NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (repository, digest)
) WITHOUT ROWID;
CREATE INDEX manifests_subject ON manifests (repository, subject) WHERE subject IS NOT NULL;

-- What each manifest points at (config, layers, child manifests): the
-- edges garbage collection follows.
CREATE TABLE manifest_references (
    repository TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    target     TEXT NOT NULL,
    PRIMARY KEY (repository, manifest, target),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE tags (
    repository TEXT NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    digest     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX tags_nocase ON tags (repository, name COLLATE NOCASE, name);

-- Uploads in progress: the bytes received so far and the running hash
-- state after them, so an upload resumes after a restart.
CREATE TABLE uploads (
    id         TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    size       INTEGER NOT NULL,
    hash_state BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
