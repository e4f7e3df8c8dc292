-- Only jobs that have not ended are looked up by status, claim, worker or lease, and they are
-- few. One partial index holds just those: a job enters it when recorded and leaves it when it
-- ends, so a prediction's start and end each touch one small index page instead of two pages
-- of each of four indexes that kept every job ever run. Every query of unfinished jobs names
-- the index's condition word for word (SQLite uses a partial index only then).
-- result_version_id was indexed but never looked up by.
DROP INDEX jobs_status;
DROP INDEX jobs_queue;
DROP INDEX jobs_lease;
DROP INDEX jobs_deployment_live;
DROP INDEX jobs_result_version;
CREATE INDEX jobs_unfinished ON jobs(status, claimed, seq) WHERE status IN ('starting', 'processing');
-- A deployment's jobs: for its deletion (the foreign key sets them to NULL) and its live count.
CREATE INDEX jobs_deployment ON jobs(deployment_id) WHERE deployment_id IS NOT NULL
