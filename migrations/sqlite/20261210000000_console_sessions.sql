-- Admin console sessions. They live in the database so every control-plane replica behind one
-- address accepts them. The session id itself is only ever in the browser's cookie.
CREATE TABLE console_sessions (
    id_hash BLOB PRIMARY KEY,           -- SHA-256 of the session id
    token_id TEXT NOT NULL,             -- admin token id that opened the session, never the token
    csrf_token TEXT NOT NULL,           -- synchronizer token every state-changing request carries
    created_at INTEGER NOT NULL,        -- unix milliseconds
    expires_at INTEGER NOT NULL         -- unix milliseconds
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
