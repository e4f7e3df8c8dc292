-- The web UI: passwords, sessions.
CREATE TABLE web_placeholder (id BIGINT);
DROP TABLE web_placeholder;
