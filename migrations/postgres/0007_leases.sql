-- Work that one berth process at a time may do, when several share one
-- database: delivering a sink's events (`sink:<name>`, so they go out once
-- and in order) and garbage collection (`gc`). A holder that stops renewing
-- (it died) loses the lease when it expires. Times are Unix ms.
CREATE TABLE leases (
    name       TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);
