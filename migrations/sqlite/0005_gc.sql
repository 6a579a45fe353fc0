-- Garbage collection runs and what each found or freed. Times are Unix ms.
CREATE TABLE gc_runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    dry_run     INTEGER NOT NULL,
    -- The GcReport, as JSON.
    report      TEXT NOT NULL
);

-- Garbage collection first marks a blob, then removes its bytes, then its
-- row. A marked blob is gone for every reader and writer: a push of the same
-- bytes waits for the row to go, so it never keeps a row whose bytes a
-- collector is deleting.
ALTER TABLE blobs ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;

-- Bumped by every change that in-memory caches of other processes (a
-- `berth gc` next to a serving berth) must not miss.
CREATE TABLE cache_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO cache_epoch (id, n) VALUES (1, 0);

-- What garbage collection asks for every manifest and blob: does anything
-- point at it?
CREATE INDEX manifest_references_target ON manifest_references (target);
CREATE INDEX tags_digest ON tags (repository, digest);
