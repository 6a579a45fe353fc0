-- The registry's metadata: what exists. A blob file in storage that no row
-- here names is invisible. Times are Unix milliseconds.

CREATE TABLE repositories (
    name       TEXT COLLATE "C" PRIMARY KEY,
    created_at BIGINT NOT NULL
);

CREATE TABLE blobs (
    digest     TEXT COLLATE "C" PRIMARY KEY,
    size       BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

-- A blob is readable through a repository only once it was pushed to (or
-- mounted into) that repository.
CREATE TABLE repository_blobs (
    repository TEXT COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    digest     TEXT COLLATE "C" NOT NULL REFERENCES blobs (digest),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX repository_blobs_digest ON repository_blobs (digest);

CREATE TABLE manifests (
    repository    TEXT COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    digest        TEXT COLLATE "C" NOT NULL,
    media_type    TEXT COLLATE "C" NOT NULL,
    artifact_type TEXT COLLATE "C",
    subject       TEXT COLLATE "C",
    annotations   TEXT COLLATE "C",
    size          BIGINT NOT NULL,
    content       BYTEA NOT NULL,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (repository, digest)
);
CREATE INDEX manifests_subject ON manifests (repository, subject) WHERE subject IS NOT NULL;

-- What each manifest points at (config, layers, child manifests): the
-- edges garbage collection follows.
CREATE TABLE manifest_references (
    repository TEXT COLLATE "C" NOT NULL,
    manifest   TEXT COLLATE "C" NOT NULL,
    target     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (repository, manifest, target),
    FOREIGN KEY (repository, manifest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
);

CREATE TABLE tags (
    repository TEXT COLLATE "C" NOT NULL REFERENCES repositories (name) ON DELETE CASCADE,
    name       TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repository, name),
    FOREIGN KEY (repository, digest) REFERENCES manifests (repository, digest) ON DELETE CASCADE
);
CREATE INDEX tags_nocase ON tags (repository, lower(name), name);

-- Uploads in progress: the bytes received so far and the running hash
-- state after them, so an upload resumes after a restart.
CREATE TABLE uploads (
    id         TEXT COLLATE "C" PRIMARY KEY,
    repository TEXT COLLATE "C" NOT NULL,
    size       BIGINT NOT NULL,
    hash_state BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
