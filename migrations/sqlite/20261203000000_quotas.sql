-- Quotas: what a pool's tokens cost and what a client key may consume. Rows made before this
-- migration keep working: a pool without a price, a key without limits, whose ETag is the
-- revision that created it.
ALTER TABLE pools ADD COLUMN price TEXT;                                 -- JSON Price; NULL: no price
ALTER TABLE client_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';    -- JSON Limits
ALTER TABLE client_keys ADD COLUMN updated_revision INTEGER NOT NULL DEFAULT 0; -- revision of the last change (ETag)
UPDATE client_keys SET updated_revision = created_revision;
