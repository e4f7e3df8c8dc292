-- A cluster: several workers take jobs from one queue. A taken job names its worker and holds
-- a lease (microseconds) the worker renews while it lives. Once the lease passes, any node
-- fails the job (it had started) or queues it again (it had not). waiting_noted is set once
-- the job's logs said that no live worker offers what it needs.
ALTER TABLE jobs ADD COLUMN worker_id TEXT;
ALTER TABLE jobs ADD COLUMN lease_until BIGINT;
ALTER TABLE jobs ADD COLUMN waiting_noted BIGINT NOT NULL DEFAULT 0;
-- A worker keeps its id on the jobs it ran: renewals look at its unfinished ones only.
CREATE INDEX jobs_lease ON jobs(worker_id, status);
CREATE INDEX jobs_deployment_live ON jobs(deployment_id, status);
-- cog.yaml's build.gpu: such a version runs only on a worker with a GPU.
ALTER TABLE versions ADD COLUMN gpu BIGINT NOT NULL DEFAULT 0;
-- Every live worker: what it offers (hardware: a JSON list of names, empty for every kind),
-- its capacity, and its heartbeat. servers is how many Cog servers it ran at its heartbeat.
CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    hardware TEXT NOT NULL,
    gpus BIGINT NOT NULL,
    max_servers BIGINT NOT NULL,
    servers BIGINT NOT NULL DEFAULT 0,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
-- A deployment's min_instances are numbered slots, each held by one worker under a lease:
-- the holder keeps one server of the deployment warm, so the cluster keeps min_instances.
CREATE TABLE warm_slots (
    deployment_id BIGINT NOT NULL REFERENCES deployments(id) ON DELETE CASCADE,
    slot BIGINT NOT NULL,
    worker_id TEXT NOT NULL,
    lease_until BIGINT NOT NULL,
    PRIMARY KEY (deployment_id, slot)
);
CREATE INDEX warm_slots_worker ON warm_slots(worker_id)
