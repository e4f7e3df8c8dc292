"""Wrong requests get problem+json with the right status, and change nothing."""
import json

import pytest
from replicate.exceptions import ReplicateError

from support import problem, unique


def model_names(server, user: str) -> set[str]:
    with server.http(user) as h:
        out, url = set(), "/v1/models"
        while url:
            r = h.get(url)
            assert r.status_code == 200
            out |= {f"{m['owner']}/{m['name']}" for m in r.json()["results"]}
            url = r.json()["next"]
    return out


def new_model(name: str, **over) -> dict:
    body = {"owner": "alice", "name": name, "visibility": "private", "hardware": "cpu"}
    body.update(over)
    return body


def test_malformed_json_is_400(server):
    with server.http("alice") as h:
        for raw in (b'{"owner": "alice", "name": ', b"{not json}", b"\xff\xfe"):
            r = h.post("/v1/models", content=raw, headers={"Content-Type": "application/json"})
            problem(r, 400)
        r = h.post("/v1/predictions", content=b"[1, 2",
                   headers={"Content-Type": "application/json"})
        problem(r, 400)


def test_wrong_types_are_422_with_invalid_fields(server):
    name = unique("typed")
    cases = [
        (new_model(name, visibility=5), "visibility"),
        (new_model(5), "name"),
        (new_model(name, visibility="secret"), "visibility"),
        ({"owner": "alice", "visibility": "private", "hardware": "cpu"}, None),  # name missing
    ]
    with server.http("alice") as h:
        for body, field in cases:
            b = problem(h.post("/v1/models", json=body), 422)
            fields = b.get("invalid_fields")
            assert isinstance(fields, list) and fields, b
            for f in fields:
                assert {"type", "field", "description"} <= set(f), f
            if field:
                assert field in [f["field"] for f in fields], b
        b = problem(h.post("/v1/models", json=[1, 2, 3]), 422)
        assert b["invalid_fields"]
    assert f"alice/{name}" not in model_names(server, "alice")


def test_prediction_input_is_checked_against_the_schema(server):
    version = f"alice/echo:{server.versions['alice/echo'][-1]}"
    with server.http("bob") as h:
        before = h.get("/v1/predictions").json()["results"]
        for inp, field in (({"prompt": 5}, "input.prompt"),
                           ({"prompt": "x", "repeat": 99}, "input.repeat"),
                           ({"prompt": "x", "repeat": "two"}, "input.repeat"),
                           ({}, "input.prompt")):
            b = problem(h.post("/v1/predictions", json={"version": version, "input": inp}), 422)
            assert field in [f["field"] for f in b["invalid_fields"]], b
        b = problem(h.post("/v1/predictions", json={"version": version, "input": "text"}), 422)
        assert b["invalid_fields"]
        after = h.get("/v1/predictions").json()["results"]
    assert len(after) == len(before), "a refused prediction was recorded"


@pytest.mark.parametrize("bad", ["Bad", "-leading", "has space", "x" * 101, "a/b", "", "ü", ".."])
def test_invalid_model_names_are_422(server, alice, bad):
    with server.http("alice") as h:
        b = problem(h.post("/v1/models", json=new_model(bad)), 422)
    assert "name" in [f["field"] for f in b["invalid_fields"]], b
    with pytest.raises(ReplicateError) as e:
        alice.models.create(owner="alice", name=bad, visibility="private", hardware="cpu")
    assert e.value.status == 422


def test_invalid_deployment_fields_are_422(server, alice):
    version = server.versions["alice/echo"][-1]
    base = {"name": unique("dep"), "model": "alice/echo", "version": version, "hardware": "cpu",
            "min_instances": 0, "max_instances": 1}
    with server.http("alice") as h:
        for over, field in (({"name": "Not Valid"}, "name"),
                            ({"min_instances": "one"}, "min_instances"),
                            ({"min_instances": 2, "max_instances": 1}, "min_instances"),
                            ({"hardware": "gpu-a100-nonexistent"}, "hardware")):
            b = problem(h.post("/v1/deployments", json={**base, **over}), 422)
            assert field in [f["field"] for f in b["invalid_fields"]], b
        listed = [d["name"] for d in h.get("/v1/deployments").json()["results"]]
    assert base["name"] not in listed


def test_oversized_json_is_413(server):
    """A JSON body over 1 MiB is refused before it is read, whatever it holds."""
    name = unique("huge")
    body = json.dumps(new_model(name, description="x" * (1024 * 1024 + 10))).encode()
    assert len(body) > 1024 * 1024
    with server.http("alice") as h:
        r = h.post("/v1/models", content=body, headers={"Content-Type": "application/json"})
        problem(r, 413)
        r = h.post("/v1/predictions", content=b'{"input": {"prompt": "' + b"y" * (1 << 21) + b'"}}',
                   headers={"Content-Type": "application/json"})
        problem(r, 413)
    assert f"alice/{name}" not in model_names(server, "alice")


def test_unknown_paths_and_methods(server):
    with server.http("alice") as h:
        problem(h.get("/v1/no-such-endpoint"), 404)
        problem(h.put("/v1/models"), 405)
