"""Running models through the official Python client (replicate 1.0.7) on real Cog servers:
`replicate.run` with a version, deployments, trainings, streaming, file outputs, file inputs
through the Files API, and signed webhooks checked with `replicate.webhooks.validate`.

Webhooks to this machine need `--allow-private-webhooks`: those tests start a second server
with it (always on SQLite; the session's server keeps the default and refuses such targets).
"""
from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import pytest
import replicate
from replicate.helpers import FileOutput

from support import FIXTURES, Server, modelyard_bin, problem, unique


def push_model(server: Server, user: str, fixture: str, prefix: str | None = None) -> str:
    """A new private model of `user` with the fixture pushed; returns "owner/name:version"."""
    name = unique(prefix or fixture)
    server.create_model(user, user, name, "private")
    vid = server.push(user, f"{user}/{name}", FIXTURES / fixture)
    return f"{user}/{name}:{vid}"


@pytest.fixture(scope="module")
def iterator_ref(server) -> str:
    return push_model(server, "alice", "iterator")


# --- running ----------------------------------------------------------------------------------

def test_run_with_a_version_returns_the_text_output(server, alice):
    vid = server.versions["alice/echo"][0]
    out = alice.run(f"alice/echo:{vid}", input={"prompt": "world", "repeat": 2})
    assert out == "hello world hello world"


def test_a_failing_model_raises_model_error_with_its_message(server, alice):
    ref = push_model(server, "alice", "failing")
    with pytest.raises(replicate.exceptions.ModelError) as e:
        alice.run(ref, input={"reason": "for the test"})
    p = e.value.prediction
    assert p.status == "failed"
    assert "this model fails for the test" in (p.error or "")
    assert "about to fail" in (p.logs or "")


def test_deployment_predictions_run_the_release_version(server, alice):
    vid = server.versions["alice/echo"][0]
    name = unique("dep")
    alice.deployments.create(name=name, model="alice/echo", version=vid, hardware="cpu",
                             min_instances=0, max_instances=1)
    dep = alice.deployments.get(f"alice/{name}")
    p = dep.predictions.create(input={"prompt": "deployed"})
    p.wait()
    assert p.status == "succeeded", p.error
    assert p.output == "hello deployed"
    assert p.version == vid
    # The module-level namespace too.
    p2 = alice.deployments.predictions.create(deployment=f"alice/{name}",
                                              input={"prompt": "again"}, wait=True)
    if p2.status != "succeeded":
        p2.wait()
    assert p2.output == "hello again"


def test_training_makes_a_version_that_says_the_trained_word(server, alice):
    base = push_model(server, "alice", "trainable")
    dest = unique("tuned")
    server.create_model("alice", "alice", dest, "private")
    owner_name, vid = base.split(":")
    owner, name = owner_name.split("/")
    t = alice.trainings.create(model=f"{owner}/{name}", version=vid,
                               input={"word": "bonjour"}, destination=f"alice/{dest}")
    deadline = time.monotonic() + 120
    while t.status not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, "the training did not finish in 2 minutes"
        time.sleep(0.5)
        t.reload()
    assert t.status == "succeeded", (t.error, t.logs)
    new_version = t.output["version"]
    assert new_version.startswith(f"alice/{dest}:")
    assert t.output["weights"].startswith(server.base)
    assert alice.run(new_version, input={"prompt": "hi"}) == "bonjour: hi"
    # The base still says its own word.
    assert alice.run(base, input={"prompt": "hi"}) == "base: hi"


def test_run_on_an_iterator_model_returns_every_item(alice, iterator_ref):
    out = alice.run(iterator_ref, input={"text": "one two three", "delay": 0.01})
    assert list(out) == ["one", "two", "three"]


def test_stream_yields_output_events_then_done(alice, iterator_ref):
    events = list(alice.stream(iterator_ref, input={"text": "alpha beta gamma delta", "delay": 0.2}))
    kinds = [e.event.value for e in events]
    outputs = [str(e) for e in events if e.event.value == "output"]
    assert outputs == ["alpha", "beta", "gamma", "delta"], kinds
    assert "error" not in kinds, kinds


def test_file_output_is_a_file_output_whose_bytes_read_back(server, alice):
    ref = push_model(server, "alice", "fileout")
    out = alice.run(ref, input={"text": "bytes from the model"})
    # The client makes a FileOutput only of https: and data: URLs; this test server is plain
    # http, so the output is the URL itself (behind https, `--public-url https://...`, it is a
    # FileOutput). The client's FileOutput reads it all the same.
    assert isinstance(out, str) and out.startswith(f"{server.base}/files/"), out
    assert FileOutput(out, alice).read() == b"bytes from the model"
    # Its URL is a capability: no token needed.
    assert httpx.get(out, timeout=30).content == b"bytes from the model"


# --- files ------------------------------------------------------------------------------------

def test_a_local_file_as_input_goes_through_the_files_api(server, alice, tmp_path):
    ref = push_model(server, "alice", "fileinput")
    doc = tmp_path / "note.txt"
    doc.write_text("read me back, please")
    with open(doc, "rb") as f:
        out = alice.run(ref, input={"document": f})
    assert out == "read me back, please"
    # The client uploaded it: the file is in alice's list.
    assert any(x.name == "note.txt" for x in alice.files.list())


def test_files_api_create_get_list_download_delete(server, alice, bob, tmp_path):
    path = tmp_path / "data.json"
    path.write_text('{"a": 1}')
    f = alice.files.create(path, metadata={"purpose": "test"})
    assert f.name == "data.json"
    assert f.content_type == "application/json"
    assert f.size == 8
    assert f.metadata == {"purpose": "test"}
    assert len(f.checksums["sha256"]) == 64
    assert f.expires_at and f.created_at
    assert alice.files.get(f.id).id == f.id
    assert f.id in [x.id for x in alice.files.list()]
    # The signed URL needs no token; a changed signature is refused.
    r = httpx.get(f.urls["get"], timeout=30)
    assert r.status_code == 200 and r.content == b'{"a": 1}'
    assert r.headers["content-type"].startswith("application/json")
    problem(httpx.get(f.urls["get"].replace("signature=", "signature=0"), timeout=30), 404)
    # Files are private to their uploader.
    with server.http("bob") as h:
        problem(h.get(f"/v1/files/{f.id}"), 404)
        problem(h.delete(f"/v1/files/{f.id}"), 404)
    assert alice.files.delete(f.id) is True
    problem(httpx.get(f.urls["get"], timeout=30), 404)
    with server.http("alice") as h:
        problem(h.get(f"/v1/files/{f.id}"), 404)


def test_files_upload_without_content_part_is_refused(server):
    with server.http("alice") as h:
        problem(h.post("/v1/files", files={"other": ("x.txt", b"x")}), 422)
        problem(h.post("/v1/files", content=b"raw", headers={"content-type": "text/plain"}), 415)


def test_another_accounts_file_url_is_refused_as_input(server, alice, bob, tmp_path):
    ref = push_model(server, "bob", "fileinput")
    path = tmp_path / "private.txt"
    path.write_text("alice's")
    f = alice.files.create(path)
    with server.http("bob") as h:
        r = h.post("/v1/predictions", json={"version": ref.split(":")[1],
                                            "input": {"document": f"{server.base}/v1/files/{f.id}"}})
        problem(r, 422)


# --- webhooks ---------------------------------------------------------------------------------

def test_private_webhook_targets_are_refused_without_the_flag(server):
    vid = server.versions["alice/echo"][0]
    with server.http("alice") as h:
        for target in ("http://127.0.0.1:9/hook", "https://127.0.0.1/hook", "https://localhost/hook",
                       "https://10.1.2.3/hook", "https://[::1]/hook", "https://169.254.169.254/"):
            r = h.post("/v1/predictions", json={"version": vid, "input": {"prompt": "x"},
                                                "webhook": target})
            body = problem(r, 422)
            assert "--allow-private-webhooks" in body["detail"], body
        r = h.post("/v1/predictions", json={"version": vid, "input": {"prompt": "x"},
                                            "webhook": "https://example.invalid/x",
                                            "webhook_events_filter": ["bogus"]})
        problem(r, 422)


class Receiver:
    """A local HTTP server that records webhooks; `fail_first` answers 500 to the first N."""

    def __init__(self, fail_first: int = 0):
        self.requests: list[tuple[dict, str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
                with outer.lock:
                    outer.requests.append(({k: v for k, v in self.headers.items()}, body))
                    fail = len(outer.requests) <= outer.fail_first
                self.send_response(500 if fail else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(b) for _, b in self.requests]

    def wait_for(self, pred, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred(self.bodies()):
                return
            time.sleep(0.1)
        raise AssertionError(f"webhooks never matched: {self.bodies()}")

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture(scope="module")
def hooks_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("modelyard-webhooks")
    srv = Server(binary=modelyard_bin(), data_dir=root / "data", database_url=None,
                 extra_args=["--allow-private-webhooks"])
    srv.start()
    try:
        srv.create_user("alice")
        srv.create_user("bob")
        yield srv
    finally:
        code = srv.stop()
    assert code == 0, srv.log_tail(40)


def test_webhook_secret_is_per_account_and_stable(hooks_server):
    a = hooks_server.client("alice").webhooks.default.secret()
    assert a.key.startswith("whsec_")
    assert hooks_server.client("alice").webhooks.default.secret().key == a.key
    assert hooks_server.client("bob").webhooks.default.secret().key != a.key


def test_webhooks_are_signed_throttled_and_end_with_completed(hooks_server):
    client = hooks_server.client("alice")
    ref = push_model(hooks_server, "alice", "iterator")
    secret = client.webhooks.default.secret()
    rx = Receiver()
    try:
        words = " ".join(f"w{i}" for i in range(20))
        p = client.predictions.create(version=ref.split(":")[1],
                                      input={"text": words, "delay": 0.1},
                                      webhook=rx.url)
        rx.wait_for(lambda bs: any(b["status"] == "succeeded" for b in bs))
        time.sleep(1)  # nothing may follow the terminal one
        with rx.lock:
            requests = list(rx.requests)
        for headers, body in requests:
            # Raises when the signature, timestamp or headers are wrong.
            replicate.webhooks.validate(headers=headers, body=body, secret=secret)
            assert json.loads(body)["id"] == p.id
        bodies = [json.loads(b) for _, b in requests]
        assert bodies[-1]["status"] == "succeeded"
        assert bodies[-1]["output"] == words.split()
        assert bodies[0]["status"] == "processing"  # the start event
        # 20 words over ~2 s: output and logs coalesced to at most one delivery per 500 ms.
        assert 3 <= len(bodies) <= 10, [len(b.get("output") or []) for b in bodies]
        partial = [b for b in bodies[1:-1] if b["output"]]
        assert partial, "no output webhook while it ran"
        lengths = [len(b["output"]) for b in partial]
        assert lengths == sorted(lengths) and lengths[0] < 20, lengths
        ids = [h["webhook-id"] for h, _ in requests]
        assert len(set(ids)) == len(ids)
        # A tampered body fails the same check.
        headers, body = requests[-1]
        with pytest.raises(replicate.webhook.InvalidSignatureError):
            replicate.webhooks.validate(headers=headers, body=body.replace("succeeded", "failed"),
                                        secret=secret)
    finally:
        rx.close()


def test_webhook_events_filter_completed_only_and_retry(hooks_server):
    client = hooks_server.client("alice")
    vid = push_model(hooks_server, "alice", "echo").split(":")[1]
    secret = client.webhooks.default.secret()
    rx = Receiver(fail_first=1)
    try:
        p = client.predictions.create(version=vid, input={"prompt": "hook"},
                                      webhook=rx.url, webhook_events_filter=["completed"])
        # The first try answers 500; the retry comes a few seconds later with the same id.
        rx.wait_for(lambda bs: len(bs) >= 2, timeout=30)
        with rx.lock:
            requests = list(rx.requests)
        assert len(requests) == 2
        (h1, b1), (h2, b2) = requests
        assert h1["webhook-id"] == h2["webhook-id"]
        for h, b in requests:
            replicate.webhooks.validate(headers=h, body=b, secret=secret)
            body = json.loads(b)
            assert body["id"] == p.id and body["status"] == "succeeded"
            assert body["output"] == "hello hook"
    finally:
        rx.close()


def test_a_dead_webhook_target_does_not_block_predictions(hooks_server):
    client = hooks_server.client("alice")
    vid = push_model(hooks_server, "alice", "echo").split(":")[1]
    # Nothing listens there.
    rx = Receiver()
    dead = rx.url
    rx.close()
    rx.httpd.server_close()
    start = time.monotonic()
    for i in range(3):
        p = client.predictions.create(version=vid, input={"prompt": f"n{i}"}, webhook=dead)
        p.wait()
        assert p.status == "succeeded" and p.output == f"hello n{i}"
    assert time.monotonic() - start < 30
