-- Values every node of one database shares, made once by whichever node starts first: the key
-- that signs capability URLs (file downloads, streams), so any API node honours any other's.
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
