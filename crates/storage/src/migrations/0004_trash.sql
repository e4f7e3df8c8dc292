-- The trash: a deleted model or version keeps its row, hidden from every read, until purge_at
-- (microseconds, like every time), when the sweep deletes it. A trashed model keeps its name.
-- trashed_by is the account that deleted it: purging removes that account's predictions.
ALTER TABLE models ADD COLUMN trashed_at BIGINT;
ALTER TABLE models ADD COLUMN purge_at BIGINT;
ALTER TABLE models ADD COLUMN trashed_by BIGINT REFERENCES accounts(id);
ALTER TABLE versions ADD COLUMN trashed_at BIGINT;
ALTER TABLE versions ADD COLUMN purge_at BIGINT;
ALTER TABLE versions ADD COLUMN trashed_by BIGINT REFERENCES accounts(id);
CREATE INDEX models_purge ON models(purge_at);
CREATE INDEX versions_purge ON versions(purge_at);
CREATE INDEX versions_weights ON versions(weights);
-- What a deletion frees: stored files by content. blobs names each file under blobs/ (its
-- sha256, with -x for an executable) and its size, artifact_blobs which blobs each artifact
-- tree links, weights_sizes the size of each stored weights file. Reached only through the
-- versions that use them.
CREATE TABLE blobs (
    blob TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
);
CREATE TABLE artifact_blobs (
    artifact TEXT NOT NULL,
    blob TEXT NOT NULL REFERENCES blobs(blob),
    PRIMARY KEY (artifact, blob)
);
CREATE INDEX artifact_blobs_blob ON artifact_blobs(blob);
CREATE TABLE weights_sizes (
    weights TEXT PRIMARY KEY,
    bytes BIGINT NOT NULL
)
;
-- Listings and a model's latest version read only what is not in the trash.
CREATE INDEX versions_live ON versions(model_id, seq) WHERE trashed_at IS NULL
