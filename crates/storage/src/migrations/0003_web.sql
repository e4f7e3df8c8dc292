-- The web UI: signed-in sessions (only the SHA-256 of a session's cookie is kept) and names for
-- API tokens made on the account page. Passwords live in accounts.password_hash (argon2 PHC).
CREATE TABLE web_sessions (
    hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_account ON web_sessions(account_id);
ALTER TABLE tokens ADD COLUMN name TEXT
