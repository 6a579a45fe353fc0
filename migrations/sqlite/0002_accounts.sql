-- Who may use the registry. Secrets are PHC hash strings (Argon2id, or
-- bcrypt imported from htpasswd), never the secrets themselves.

CREATE TABLE accounts (
    name        TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('user', 'robot')),
    secret_hash TEXT NOT NULL,
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- Actions (comma-separated: pull, push, delete, admin) granted to a subject
-- on a namespace. The subject is an account name, or 'anonymous' for
-- requests without credentials. The empty namespace is every repository.
CREATE TABLE grants (
    subject    TEXT NOT NULL,
    namespace  TEXT NOT NULL,
    actions    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (subject, namespace)
) WITHOUT ROWID;
