-- The outbox. An event row is written in the same transaction as the
-- change it describes; workers then deliver it to each sink (webhook,
-- deploy rule) that wants it, recording every attempt. Times are Unix ms.

CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    id             TEXT NOT NULL UNIQUE,
    created_at     INTEGER NOT NULL,
    action         TEXT NOT NULL,
    repository     TEXT NOT NULL,
    digest         TEXT,
    media_type     TEXT,
    size           INTEGER,
    tag            TEXT,
    actor          TEXT,
    request_id     TEXT,
    request_addr   TEXT,
    request_host   TEXT,
    request_method TEXT,
    user_agent     TEXT,
    -- Whether deliveries were created for it.
    fanned_out     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_to_fan_out ON events (seq) WHERE fanned_out = 0;

-- One event to one sink. state: pending, delivered, gave_up.
CREATE TABLE deliveries (
    event_seq       INTEGER NOT NULL REFERENCES events (seq),
    sink            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (event_seq, sink)
) WITHOUT ROWID;
CREATE INDEX deliveries_due ON deliveries (sink, next_attempt_at) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    event_seq INTEGER NOT NULL,
    sink      TEXT NOT NULL,
    attempt   INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    ok        INTEGER NOT NULL,
    detail    TEXT NOT NULL,
    PRIMARY KEY (event_seq, sink, attempt)
) WITHOUT ROWID;

-- Every attempt to roll a workload onto a pushed digest. state: patching,
-- rolling, succeeded, failed, timed_out, rolled_back, skipped.
CREATE TABLE deploys (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq   INTEGER NOT NULL,
    rule        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    kind        TEXT NOT NULL,
    name        TEXT NOT NULL,
    container   TEXT NOT NULL,
    tag         TEXT,
    old_image   TEXT,
    new_image   TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT NOT NULL DEFAULT '',
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX deploys_by_target ON deploys (namespace, kind, name);
