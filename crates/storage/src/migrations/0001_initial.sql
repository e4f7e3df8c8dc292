CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'organization')),
    username TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    password_hash TEXT,
    created_at BIGINT NOT NULL
);
CREATE TABLE memberships (
    org_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    PRIMARY KEY (org_id, user_id)
);
CREATE INDEX memberships_user ON memberships(user_id);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id BIGINT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    description TEXT,
    visibility TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    hardware TEXT NOT NULL,
    github_url TEXT,
    paper_url TEXT,
    license_url TEXT,
    cover_image_url TEXT,
    run_count BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE TABLE versions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    model_id BIGINT NOT NULL REFERENCES models(id),
    cog_version TEXT NOT NULL,
    openapi_schema TEXT NOT NULL,
    artifact TEXT NOT NULL,
    base_version_id TEXT REFERENCES versions(id),
    training_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX versions_model ON versions(model_id, seq);
CREATE INDEX versions_base ON versions(base_version_id);
CREATE INDEX versions_artifact ON versions(artifact);
CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id BIGINT NOT NULL REFERENCES accounts(id),
    name TEXT NOT NULL,
    release_number BIGINT NOT NULL,
    version_id TEXT NOT NULL REFERENCES versions(id),
    last_used_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);
CREATE INDEX deployments_version ON deployments(version_id);
CREATE TABLE deployment_releases (
    deployment_id BIGINT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    model TEXT NOT NULL,
    version_id TEXT NOT NULL,
    hardware TEXT NOT NULL,
    min_instances BIGINT NOT NULL,
    max_instances BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, number)
);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('prediction', 'training')),
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    version_id TEXT NOT NULL REFERENCES versions(id),
    deployment_id BIGINT REFERENCES deployments(id) ON DELETE SET NULL,
    destination_model_id BIGINT REFERENCES models(id) ON DELETE SET NULL,
    result_version_id TEXT,
    input TEXT NOT NULL,
    output TEXT,
    logs TEXT NOT NULL DEFAULT '',
    error TEXT,
    status TEXT NOT NULL,
    source TEXT NOT NULL,
    webhook TEXT,
    webhook_events_filter TEXT NOT NULL,
    data_removed BIGINT NOT NULL DEFAULT 0,
    metrics TEXT NOT NULL DEFAULT '{}',
    deadline BIGINT,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    completed_at BIGINT
);
CREATE INDEX jobs_account ON jobs(account_id, kind, seq);
CREATE INDEX jobs_version ON jobs(version_id, kind);
CREATE INDEX jobs_status ON jobs(status, seq);
CREATE INDEX jobs_result_version ON jobs(result_version_id);
CREATE TABLE version_runs (
    version_id TEXT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    account_id BIGINT NOT NULL REFERENCES accounts(id),
    count BIGINT NOT NULL,
    PRIMARY KEY (version_id, account_id)
);
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor_id BIGINT,
    actor TEXT NOT NULL,
    owner_id BIGINT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    blockers TEXT NOT NULL
);
CREATE INDEX audit_owner ON audit_events(owner_id, id);
