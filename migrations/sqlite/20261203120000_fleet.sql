-- The fleet as every replica sees it: the latest state of each proxy (whichever replica its
-- config stream is on), hourly usage per client key and pool, and per-minute traffic per
-- backend. Written from proxy reports; none of it is config, so no write bumps the revision.
CREATE TABLE fleet_proxies (
    node_id TEXT PRIMARY KEY,
    replica TEXT NOT NULL,              -- control-plane replica holding the stream
    connection TEXT NOT NULL,           -- that stream's id: a stale replica cannot undo a newer stream
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    connected INTEGER NOT NULL,        -- 1 while the stream is open
    connected_since INTEGER NOT NULL,    -- unix milliseconds
    last_seen INTEGER NOT NULL,          -- unix milliseconds; refreshed while the stream is open
    acked_revision INTEGER,
    nack_revision INTEGER,
    nack_error TEXT,
    nack_at INTEGER,
    served_revision INTEGER,             -- from the latest report
    last_report_at INTEGER,
    backends TEXT NOT NULL              -- JSON: each backend's state in the latest report
);

CREATE TABLE usage_hourly (
    hour INTEGER NOT NULL,               -- unix milliseconds at the start of the UTC hour
    client_key TEXT NOT NULL,
    pool TEXT NOT NULL,
    requests INTEGER NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_micro_usd INTEGER NOT NULL,
    rate_limited INTEGER NOT NULL,
    PRIMARY KEY (hour, client_key, pool)
);

CREATE TABLE backend_traffic (
    minute INTEGER NOT NULL,             -- unix milliseconds at the start of the minute
    pool TEXT NOT NULL,
    backend TEXT NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    PRIMARY KEY (minute, pool, backend)
);
