-- Pull-through mirrors. What a mirror fetched from its upstream is stored
-- like pushed content, in the repository <namespace>/<upstream name>, and
-- its rows carry the mirror's namespace: garbage collection keeps them (a
-- manifest pulled by digest has no tag, yet is no garbage) and only the
-- mirror's size cap evicts them, least recently pulled first. Times are
-- Unix milliseconds.

ALTER TABLE manifests ADD COLUMN mirror TEXT COLLATE "C";
ALTER TABLE manifests ADD COLUMN last_pull BIGINT;
ALTER TABLE repository_blobs ADD COLUMN mirror TEXT COLLATE "C";
ALTER TABLE repository_blobs ADD COLUMN last_pull BIGINT;
CREATE INDEX manifests_mirror ON manifests (mirror) WHERE mirror IS NOT NULL;
CREATE INDEX repository_blobs_mirror ON repository_blobs (mirror) WHERE mirror IS NOT NULL;

-- When a cached tag was last confirmed by the upstream (NULL for pushed
-- tags): it is trusted for the mirror's tag_ttl_seconds after.
ALTER TABLE tags ADD COLUMN checked_at BIGINT;

-- The repositories a mirror filled, with what their pulls found: hits
-- (answered from the cache) and misses (fetched from the upstream). The
-- counts are written in batches, seconds late at worst.
CREATE TABLE mirror_repositories (
    repository TEXT COLLATE "C" PRIMARY KEY REFERENCES repositories (name) ON DELETE CASCADE,
    mirror     TEXT COLLATE "C" NOT NULL,
    hits       BIGINT NOT NULL DEFAULT 0,
    misses     BIGINT NOT NULL DEFAULT 0,
    last_fetch BIGINT
);
CREATE INDEX mirror_repositories_mirror ON mirror_repositories (mirror, repository);

-- Mirrors made through the admin API (those of the config file are not
-- stored); spec: the fields of [[mirrors]], as JSON.
CREATE TABLE mirrors (
    namespace  TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
