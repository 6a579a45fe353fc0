-- Public keys trusted to sign images, added through the admin API (those
-- of the config file are not stored). Times are Unix milliseconds.
CREATE TABLE signature_keys (
    name       TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
