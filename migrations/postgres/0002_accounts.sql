-- Who may use the registry. Secrets are PHC hash strings (Argon2id, or
-- bcrypt imported from htpasswd), never the secrets themselves.

CREATE TABLE accounts (
    name        TEXT COLLATE "C" PRIMARY KEY,
    kind        TEXT COLLATE "C" NOT NULL CHECK (kind IN ('user', 'robot')),
    secret_hash TEXT COLLATE "C" NOT NULL,
    disabled    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

-- Actions (comma-separated: pull, push, delete, admin) granted to a subject
-- on a namespace. The subject is an account name, or 'anonymous' for
-- requests without credentials. The empty namespace is every repository.
CREATE TABLE grants (
    subject    TEXT COLLATE "C" NOT NULL,
    namespace  TEXT COLLATE "C" NOT NULL,
    actions    TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (subject, namespace)
);
