-- The runner: leases on queued work, stored files, webhook secrets.
CREATE TABLE runner_placeholder (id BIGINT);
DROP TABLE runner_placeholder;
