"""The cluster: two API nodes and two workers on one PostgreSQL database and one S3 bucket,
driven through the official Python client, alternating between the API nodes.

Tests that kill nodes come last in the file and start what they killed again.
"""
from __future__ import annotations

import concurrent.futures
import http.server
import json
import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest

from cluster import LEASE_SECS, alive, descendants, model_servers, psql, unique
from conftest import fixture

TERMINAL = ("succeeded", "failed", "canceled", "aborted")


def settle(http: httpx.Client, path: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()
        if body.get("status") in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"{path} did not end: {body}"
        time.sleep(0.2)


def until(pred, timeout: float, what: str, step: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(step)


def private_model(cluster, fixture_name: str, hardware: str = "cpu", owner: str = "alice",
                  node: int = 0) -> tuple[str, str]:
    name = unique(fixture_name)
    cluster.model("alice", owner, name, hardware=hardware, node=node)
    vid = cluster.push("alice", f"{owner}/{name}", fixture(fixture_name), node=node)
    return f"{owner}/{name}", vid


def worker_of(cluster, job_id: str):
    """The worker node holding a job, from the queue's own record."""
    held = psql(cluster.database_url, f"SELECT worker_id FROM jobs WHERE id = '{job_id}'")
    for w in cluster.workers:
        if w.proc is not None and w.proc.poll() is None and w.health().get("worker_id") == held:
            return w
    return None


# --- running across nodes ----------------------------------------------------------------------

def test_push_on_one_node_run_on_the_other(cluster):
    model, vid = private_model(cluster, "echo", node=0)
    a, b = cluster.client("alice", 0), cluster.client("alice", 1)
    assert b.run(f"{model}:{vid}", input={"prompt": "cluster"}) == "hello cluster"
    p = a.predictions.create(version=vid, input={"prompt": "again"})
    same = b.predictions.get(p.id)
    same.wait()
    assert same.status == "succeeded", (same.error, same.logs)
    assert same.output == "hello again"
    assert a.predictions.get(p.id).output == "hello again"


def test_prefer_wait_and_stream_on_the_node_that_did_not_take_the_request(cluster):
    model, vid = private_model(cluster, "iterator", node=1)
    with cluster.http("alice", 0) as h0, cluster.http("alice", 1) as h1:
        r = h1.post("/v1/predictions", headers={"Prefer": "wait=60"},
                    json={"version": vid, "input": {"text": "one two", "delay": 0.01}})
        assert r.status_code == 201, r.text
        assert r.json()["status"] == "succeeded" and r.json()["output"] == ["one", "two"], r.text
        # Created on node 1, streamed from node 0 while a worker runs it.
        r = h1.post("/v1/predictions", json={"version": vid,
                                             "input": {"text": "alpha beta gamma", "delay": 0.3}})
        pid, stream = r.json()["id"], r.json()["urls"]["stream"]
        assert stream.startswith(cluster.api[0].base), stream
        events = []
        with h0.stream("GET", stream[len(cluster.api[0].base):],
                       headers={"Accept": "text/event-stream"}) as s:
            assert s.status_code == 200
            kind = None
            for line in s.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind:
                    events.append((kind, line.split(":", 1)[1].strip()))
                    if kind == "done":
                        break
        outputs = [d for k, d in events if k == "output"]
        assert outputs == ["alpha", "beta", "gamma"], events
        assert events[-1][0] == "done", events
        assert settle(h0, f"/v1/predictions/{pid}")["status"] == "succeeded"


def test_cancel_on_one_node_stops_the_job_on_its_worker(cluster):
    model, vid = private_model(cluster, "slow")
    with cluster.http("alice", 0) as h0, cluster.http("alice", 1) as h1:
        pid = h0.post("/v1/predictions", json={"version": vid, "input": {"seconds": 120}}).json()["id"]
        until(lambda: h1.get(f"/v1/predictions/{pid}").json()["status"] == "processing", 120,
              "the slow prediction started")
        started = time.monotonic()
        assert h1.post(f"/v1/predictions/{pid}/cancel").status_code == 200
        body = settle(h0, f"/v1/predictions/{pid}", timeout=30)
        assert body["status"] == "canceled", body
        assert time.monotonic() - started < 20


def test_outputs_and_files_from_any_node(cluster, tmp_path):
    model, vid = private_model(cluster, "fileout", node=0)
    out = cluster.client("alice", 0).run(f"{model}:{vid}", input={"text": "bytes in a bucket"})
    assert isinstance(out, str) and out.startswith(cluster.api[0].base + "/files/"), out
    path = out[len(cluster.api[0].base):]
    for node in cluster.api:
        assert httpx.get(node.base + path, timeout=30).content == b"bytes in a bucket"
    # An upload through node 1 is an input of a prediction made through node 0.
    model, vid = private_model(cluster, "fileinput", node=1)
    doc = tmp_path / "note.txt"
    doc.write_text("kept in the object store")
    uploaded = cluster.client("alice", 1).files.create(doc)
    with cluster.http("alice", 0) as h0:
        url = uploaded.urls["get"]
        r = h0.post("/v1/predictions", headers={"Prefer": "wait=60"},
                    json={"version": vid, "input": {"document": url}})
        assert r.status_code == 201, r.text
        body = settle(h0, f"/v1/predictions/{r.json()['id']}")
        assert body["output"] == "kept in the object store", body


def test_fine_tune_made_on_one_worker_runs_on_the_other(cluster):
    # gpu-t4 only on worker 1, gpu-a100-large only on worker 2 (the fixtures need no GPU).
    base_model, base_vid = private_model(cluster, "trainable", hardware="gpu-t4")
    dest = unique("tuned")
    cluster.model("alice", "alice", dest, hardware="gpu-a100-large", node=1)
    t = cluster.client("alice", 1).trainings.create(
        model=base_model, version=base_vid, input={"word": "grüezi"}, destination=f"alice/{dest}")
    with cluster.http("alice", 0) as h0:
        body = settle(h0, f"/v1/trainings/{t.id}", timeout=180)
    assert body["status"] == "succeeded", body
    new_version = body["output"]["version"]
    assert cluster.client("alice", 0).run(new_version, input={"prompt": "hi"}) == "grüezi: hi"
    # The weights came to worker 2 through the bucket: it has them, worker 1 made them.
    w1, w2 = cluster.workers
    assert any(p.read_text(errors="replace") == "grüezi"
               for p in w2.data_dir.rglob("*") if p.is_file() and p.stat().st_size < 64)


def test_a_deployment_is_kept_warm_on_the_worker_that_offers_its_hardware(cluster):
    model, vid = private_model(cluster, "echo")
    name = unique("warm")
    c = cluster.client("alice", 0)
    c.deployments.create(name=name, model=model, version=vid, hardware="gpu-a100-large",
                         min_instances=1, max_instances=1)
    w1, w2 = cluster.workers
    until(lambda: w2.health().get("servers", 0) >= 1, 120, "worker 2 keeps a server warm")
    # The server is worker 2's: a Cog server below its process.
    assert model_servers() & descendants(w2.proc.pid)
    d = cluster.client("alice", 1).deployments.get(f"alice/{name}")
    p = d.predictions.create(input={"prompt": "warm"})
    p.wait()
    assert p.output == "hello warm", (p.error, p.logs)
    with cluster.http("alice", 1) as h1:
        r = h1.patch(f"/v1/deployments/alice/{name}", json={"min_instances": 0})
        assert r.status_code == 200, r.text


def test_a_gpu_version_runs_only_where_a_gpu_is_offered(cluster):
    # Worker 2 has (stand-in) GPUs 0 and 1; worker 1 has none.
    model, vid = private_model(cluster, "gpu")
    with cluster.http("alice", 1) as h1:
        r = h1.post("/v1/predictions", json={"version": vid, "input": {}})
        pid = r.json()["id"]
        body = settle(h1, f"/v1/predictions/{pid}")
        assert body["status"] == "succeeded", body
        assert body["output"][0] in ("[0]", "[1]"), body
        held = psql(cluster.database_url, f"SELECT worker_id FROM jobs WHERE id = '{pid}'")
        assert held == cluster.workers[1].health()["worker_id"]
    # On gpu-t4, which only worker 1 offers (without GPUs), it waits and says why.
    model, vid = private_model(cluster, "gpu", hardware="gpu-t4")
    with cluster.http("alice", 0) as h0:
        pid = h0.post("/v1/predictions", json={"version": vid, "input": {}}).json()["id"]
        waiting = until(lambda: "Waiting for a worker" in (h0.get(f"/v1/predictions/{pid}").json()
                                                            .get("logs") or ""), 30,
                        "the prediction says why it waits")
        body = h0.get(f"/v1/predictions/{pid}").json()
        assert waiting and body["status"] == "starting", body
        assert "gpu-t4" in body["logs"], body
        assert h0.post(f"/v1/predictions/{pid}/cancel").status_code == 200
        assert settle(h0, f"/v1/predictions/{pid}")["status"] == "canceled"


def test_webhooks_are_delivered_once_whichever_node_took_the_request(cluster):
    received: list[dict] = []
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        model, vid = private_model(cluster, "echo")
        hook = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        with cluster.http("alice", 1) as h1:
            r = h1.post("/v1/predictions", json={"version": vid, "input": {"prompt": "hook"},
                                                 "webhook": hook,
                                                 "webhook_events_filter": ["completed"]})
            pid = r.json()["id"]
            settle(h1, f"/v1/predictions/{pid}")
        until(lambda: received, 30, "the completed webhook")
        time.sleep(2)  # a second delivery from another node would come by now
        with lock:
            mine = [b for b in received if b["id"] == pid]
        assert len(mine) == 1, mine
        assert mine[0]["status"] == "succeeded" and mine[0]["output"] == "hello hook"
    finally:
        httpd.shutdown()


# --- the deletion rules across nodes -----------------------------------------------------------

def test_deletions_racing_deployments_through_different_nodes(cluster):
    """A deployment made on node 0 races the deletion of its version on node 1: never both."""
    model, vid = private_model(cluster, "echo")
    owner, name = model.split("/")
    violations, deleted_wins, deployed_wins = [], 0, 0
    with cluster.http("alice", 0) as h0, cluster.http("alice", 1) as h1, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(200):
            dep = f"race-{i}-{unique('d')}"
            f_dep = pool.submit(h0.post, "/v1/deployments", json={
                "name": dep, "model": model, "version": vid, "hardware": "cpu",
                "min_instances": 0, "max_instances": 1})
            f_del = pool.submit(h1.delete, f"/v1/models/{model}/versions/{vid}")
            r_dep, r_del = f_dep.result(), f_del.result()
            made = r_dep.status_code in (200, 201)
            gone = r_del.status_code == 204
            if made and gone:
                violations.append((i, r_dep.text, r_del.text))
            if not made and not gone:
                violations.append((i, "neither", r_dep.text, r_del.text))
            if made:
                deployed_wins += 1
                assert r_del.status_code == 409, r_del.text
                assert "deployment" in r_del.text
                r = h1.patch(f"/v1/deployments/{owner}/{dep}",
                             json={"min_instances": 0, "max_instances": 0})
                assert r.status_code == 200, r.text
                d = h0.delete(f"/v1/deployments/{owner}/{dep}")
                assert d.status_code == 204, d.text
            if gone:
                deleted_wins += 1
                assert r_dep.status_code in (404, 422), r_dep.text
                r = h0.post(f"/v1/models/{model}/versions/{vid}/restore")
                assert r.status_code == 200, r.text
    assert not violations, violations[:5]
    # Both orders happened, or the race was not a race.
    assert deleted_wins and deployed_wins, (deleted_wins, deployed_wins)


def test_deletions_racing_predictions_by_others_through_different_nodes(cluster):
    """bob (a member of acme) runs a version of acme's private model on node 0 while alice
    deletes it on node 1: either bob's prediction is refused or the deletion is."""
    model = f"acme/{unique('raced')}"
    cluster.model("alice", "acme", model.split("/")[1])
    project = fixture("echo")
    violations, outcomes = [], {"deleted": 0, "predicted": 0}
    with cluster.http("bob", 0) as b0, cluster.http("alice", 1) as a1, \
            concurrent.futures.ThreadPoolExecutor(2) as pool:
        for i in range(15):
            vid = cluster.push("alice", model, project, node=i % 2)
            f_run = pool.submit(b0.post, "/v1/predictions",
                                json={"version": vid, "input": {"prompt": str(i)}})
            f_del = pool.submit(a1.delete, f"/v1/models/{model}/versions/{vid}",
                                params={"purge": "true"})
            r_run, r_del = f_run.result(), f_del.result()
            ran = r_run.status_code in (201, 202)
            gone = r_del.status_code == 204
            if ran == gone:
                violations.append((i, r_run.status_code, r_run.text[:200], r_del.status_code,
                                   r_del.text[:200]))
            outcomes["deleted" if gone else "predicted"] += 1
            if ran:
                settle(b0, f"/v1/predictions/{r_run.json()['id']}")
    assert not violations, violations


# --- clean-up across nodes ---------------------------------------------------------------------

def test_a_deleted_version_leaves_the_bucket_and_every_worker_cache(cluster, tmp_path):
    marker = unique("only-in-this-version")
    project = tmp_path / "project"
    shutil.copytree(fixture("echo"), project)
    (project / "marker.txt").write_text(marker)
    before = cluster.store.keys()
    model, vid = private_model_from(cluster, project)
    added = cluster.store.keys() - before
    assert added, "the push stored nothing in the bucket"
    # Run it on both workers: four slow-ish runs at once spread over them.
    with cluster.http("alice", 0) as h0:
        ids = [h0.post("/v1/predictions", json={"version": vid, "input": {"prompt": str(i)}}
                       ).json()["id"] for i in range(4)]
        for pid in ids:
            assert settle(h0, f"/v1/predictions/{pid}")["status"] == "succeeded"
        r = h0.delete(f"/v1/models/{model}/versions/{vid}", params={"purge": "true"})
        assert r.status_code == 204, r.text

    def cached_anywhere() -> list[Path]:
        return [p for w in cluster.workers for p in w.data_dir.rglob("marker.txt")
                if p.is_file() and p.read_text(errors="replace") == marker]

    until(lambda: not (cluster.store.keys() & added), 30, "the version's objects leave the bucket")
    until(lambda: not cached_anywhere(), 90, "the version leaves every worker's cache", step=1)


def private_model_from(cluster, project: Path) -> tuple[str, str]:
    name = unique("marked")
    cluster.model("alice", "alice", name)
    return f"alice/{name}", cluster.push("alice", f"alice/{name}", project)


# --- nodes that vanish (last: they kill and restart nodes) -------------------------------------

def test_a_killed_worker_fails_its_running_job_within_the_lease(cluster):
    model, vid = private_model(cluster, "slow")
    echo_model, echo_vid = private_model(cluster, "echo")
    with cluster.http("alice", 0) as h0, cluster.http("alice", 1) as h1:
        pid = h0.post("/v1/predictions", json={"version": vid, "input": {"seconds": 300}}).json()["id"]
        until(lambda: h1.get(f"/v1/predictions/{pid}").json()["status"] == "processing", 120,
              "the slow prediction started")
        victim = until(lambda: worker_of(cluster, pid), 10, "the worker holding the job")
        servers = model_servers() & descendants(victim.proc.pid)
        assert servers, "the job's model server runs below its worker"
        victim.kill9()
        killed_at = time.monotonic()
        body = settle(h1, f"/v1/predictions/{pid}", timeout=LEASE_SECS * 3 + 15)
        took = time.monotonic() - killed_at
        assert body["status"] == "failed", body
        assert body["error"], body
        assert took <= LEASE_SECS * 3 + 10, took
        # Nothing of the dead worker's sandbox survives it.
        until(lambda: not any(alive(p) for p in servers), 15, "the model servers die with it")
        # The other worker carries on.
        r = h0.post("/v1/predictions", headers={"Prefer": "wait=60"},
                    json={"version": echo_vid, "input": {"prompt": "survivor"}})
        body = settle(h0, f"/v1/predictions/{r.json()['id']}")
        assert body["status"] == "succeeded" and body["output"] == "hello survivor", body
    victim.start()


def test_a_killed_api_node_leaves_the_other_serving(cluster):
    model, vid = private_model(cluster, "echo", node=0)
    gone, left = cluster.api[1], cluster.client("alice", 0)
    gone.kill9()
    try:
        assert left.run(f"{model}:{vid}", input={"prompt": "still here"}) == "hello still here"
        assert left.models.get(model).latest_version.id == vid
    finally:
        gone.start()
    assert cluster.client("alice", 1).run(f"{model}:{vid}", input={"prompt": "back"}) == "hello back"
