-- What the admin API manages beyond the registry's content: per-repository
-- settings, the audit log of administrative changes, and the webhooks and
-- deploy rules created through the API (those in the config file are not
-- stored). Times are Unix milliseconds.

-- Settings may be made before a repository's first push, so no foreign key.
CREATE TABLE repository_settings (
    repository     TEXT PRIMARY KEY,
    immutable_tags INTEGER NOT NULL DEFAULT 0,
    -- JSON RetentionPolicy, or NULL to keep everything.
    retention      TEXT,
    updated_at     INTEGER NOT NULL
) WITHOUT ROWID;

-- Written in batches, not on every pull: a hint, seconds late at worst.
ALTER TABLE repositories ADD COLUMN last_pull INTEGER;

-- Pushes and deletes are in the events table already (with actor and
-- address); this holds everything else an admin changes.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    actor   TEXT,
    address TEXT,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);

-- kind: webhook or deploy_rule; spec: the same fields as the config file's
-- [[events.webhooks]] / [[deploy.rules]], as JSON.
CREATE TABLE sinks (
    name       TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('webhook', 'deploy_rule')),
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
