-- One row holding the config revision. Every committed change bumps it in the same
-- transaction, so the revision orders all changes and names every snapshot.
CREATE TABLE config_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision INTEGER NOT NULL
);
INSERT INTO config_revision (id, revision) VALUES (1, 0);

CREATE TABLE pools (
    name TEXT PRIMARY KEY,
    strategy TEXT NOT NULL,
    retry TEXT NOT NULL,                -- JSON RetryPolicy
    updated_revision INTEGER NOT NULL    -- revision of the last change to the pool or a backend (ETag)
);

CREATE TABLE backends (
    pool TEXT NOT NULL REFERENCES pools (name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,           -- keeps the order operators gave
    spec TEXT NOT NULL,                 -- JSON Backend: secret references only, never values
    updated_revision INTEGER NOT NULL,
    PRIMARY KEY (pool, name)
);

CREATE TABLE client_keys (
    id TEXT PRIMARY KEY,
    pools TEXT NOT NULL,                -- JSON array of pool names; empty means all pools
    salt BLOB NOT NULL,
    digest BLOB NOT NULL,              -- SHA-256(salt || key); the key itself is never stored
    hint TEXT NOT NULL,                 -- last four characters, to tell keys apart
    created_at INTEGER NOT NULL,         -- unix milliseconds
    created_revision INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    at INTEGER NOT NULL,                 -- unix milliseconds
    actor TEXT NOT NULL,                -- admin token id, never the token
    action TEXT NOT NULL,
    resource TEXT NOT NULL
);
