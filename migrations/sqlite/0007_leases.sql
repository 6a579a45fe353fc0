-- Work that one berth process at a time may do, when several share one
-- database: delivering a sink's events (`sink:<name>`, so they go out once
-- and in order) and garbage collection (`gc`). A holder that stops renewing
-- (it died) loses the lease when it expires. Times are Unix ms.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
