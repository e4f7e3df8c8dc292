-- The runner: which queued jobs a runner has taken, and the weights of fine-tuned versions.
ALTER TABLE jobs ADD COLUMN claimed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE versions ADD COLUMN weights TEXT;
CREATE TABLE webhook_secrets (
    account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    secret TEXT NOT NULL
);
CREATE TABLE files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
CREATE INDEX files_account ON files(account_id, seq);
CREATE INDEX jobs_queue ON jobs(status, claimed, seq);
CREATE INDEX jobs_retention ON jobs(source, data_removed, created_at)
