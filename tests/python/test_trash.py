"""The trash through the official Python client (replicate 1.0.7): a deleted version answers 404
everywhere, as a final deletion does, and once restored by its owner it runs again under the
same id, with the predictions its deletion hid. A trashed model keeps its name.
"""
import pytest
from replicate.exceptions import ReplicateError

from support import FIXTURES, unique


def refused(call, status: int) -> ReplicateError:
    with pytest.raises(ReplicateError) as e:
        call()
    assert e.value.status == status, f"expected {status}, got {e.value.status}: {e.value.detail}"
    return e.value


def test_a_deleted_then_restored_version_runs_again_with_the_same_id(server, alice, bob):
    model = f"alice/{unique('undo')}"
    server.create_model("alice", "alice", model.split("/")[1], "private")
    vid = server.push("alice", model, FIXTURES / "echo")
    ref = f"{model}:{vid}"
    assert alice.run(ref, input={"prompt": "before"}) == "hello before"
    kept = alice.predictions.create(version=vid, input={"prompt": "kept"})
    kept.wait()
    assert kept.status == "succeeded" and kept.output == "hello kept"

    versions = alice.models.get(model).versions
    assert versions.delete(vid) is True
    refused(lambda: versions.get(vid), 404)
    refused(lambda: alice.predictions.get(kept.id), 404)
    refused(lambda: alice.run(ref, input={"prompt": "during"}), 404)
    assert vid not in [v.id for v in versions.list().results]

    with server.http("bob") as h:
        assert h.post(f"/v1/models/{model}/versions/{vid}/restore").status_code == 404
    with server.http("alice") as h:
        trash = h.get("/v1/trash").json()["results"]
        assert [i["version_id"] for i in trash if i["name"] == model.split("/")[1]] == [vid]
        r = h.post(f"/v1/models/{model}/versions/{vid}/restore")
        assert r.status_code == 200, r.text
        assert r.json()["id"] == vid

    assert versions.get(vid).id == vid
    back = alice.predictions.get(kept.id)
    assert back.status == "succeeded" and back.output == "hello kept"
    assert alice.run(ref, input={"prompt": "after"}) == "hello after"


def test_a_trashed_model_keeps_its_name_until_purged(server, alice):
    name = unique("kept")
    server.create_model("alice", "alice", name, "private")
    assert alice.models.delete("alice", name) is True
    refused(lambda: alice.models.get("alice", name), 404)
    err = refused(lambda: server.create_model("alice", "alice", name), 409)
    assert "in the trash until" in err.detail and f"/v1/models/alice/{name}/restore" in err.detail
    with server.http("alice") as h:
        assert h.delete(f"/v1/models/alice/{name}", params={"purge": "true"}).status_code == 204
    assert server.create_model("alice", "alice", name).name == name
