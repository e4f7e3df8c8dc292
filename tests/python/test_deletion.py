"""Versions and the deletion rules, through the official Python client.

Model DELETE: only by the owner, only private, only with no versions. Version DELETE: only by the
owner of a private model, not while other accounts ran predictions with it, not while it is a
fine-tune base, not while a deployment's current release uses it. A refusal is 409
problem+json with every blocker and `x-should-retry: false`; 404 if invisible, 403 if visible
but not owned; `?dry_run=true` answers 200 {deletable, blockers}.
"""
import re

import pytest
from replicate.exceptions import ReplicateError

from support import FIXTURES, problem, unique

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def refused(call, status: int = 409) -> ReplicateError:
    with pytest.raises(ReplicateError) as e:
        call()
    assert e.value.status == status, f"expected {status}, got {e.value.status}: {e.value.detail}"
    return e.value


def kinds(preview: dict) -> list[str]:
    return [b["kind"] for b in preview["blockers"]]


def version_ids(client, model: str) -> list[str]:
    return [v.id for v in client.models.get(model).versions.list().results]


def private_model_with(server, fixtures=("echo",), owner="alice", user="alice",
                       prefix="m") -> tuple[str, list[str]]:
    name = f"{owner}/{unique(prefix)}"
    server.create_model(user, owner, name.split("/")[1], "private")
    return name, [server.push(user, name, FIXTURES / f) for f in fixtures]


# --- reading versions -------------------------------------------------------------------------

def test_versions_list_and_get(server, alice, bob):
    pushed = server.versions["alice/echo"]
    assert len(pushed) == 2 and pushed[0] != pushed[1]
    for client in (alice, bob):
        versions = client.models.get("alice", "echo").versions
        page = versions.list()
        assert sorted(v.id for v in page.results) == sorted(pushed)
        assert page.results[0].id == pushed[-1], "the newest version comes first"
        for vid in pushed:
            v = versions.get(vid)
            assert v.id == vid and HEX64.match(v.id)
            assert isinstance(v.cog_version, str) and v.cog_version
            assert v.created_at is not None
            assert "Input" in v.openapi_schema["components"]["schemas"]
    refused(lambda: alice.models.get("alice", "echo").versions.get("0" * 64), 404)


# --- successful deletions ---------------------------------------------------------------------

def test_delete_version_then_model(server, alice):
    model, (v1, v2) = private_model_with(server, ("echo", "echo2"))
    versions = alice.models.get(model).versions
    assert server.preview_version_delete("alice", model, v1) == {"deletable": True, "blockers": []}
    assert versions.delete(v1) is True
    assert version_ids(alice, model) == [v2]
    refused(lambda: versions.get(v1), 404)
    assert alice.models.get(model).latest_version.id == v2
    # A model with versions cannot go yet.
    preview = server.preview_model_delete("alice", model)
    assert preview["deletable"] is False and kinds(preview) == ["has_versions"]
    assert versions.delete(v2) is True
    assert alice.models.get(model).latest_version is None
    assert server.preview_model_delete("alice", model) == {"deletable": True, "blockers": []}
    owner, name = model.split("/")
    assert alice.models.delete(owner, name) is True
    refused(lambda: alice.models.get(model), 404)


def test_delete_of_an_org_model_by_a_member(server, alice):
    model, (vid,) = private_model_with(server, owner="acme", prefix="orgdel")
    assert alice.models.get(model).versions.delete(vid) is True
    assert alice.models.delete(model) is True
    refused(lambda: alice.models.get(model), 404)


# --- refusals: model ------------------------------------------------------------------------

def test_public_model_with_versions_names_both_blockers(server, alice):
    model = f"alice/{unique('pub')}"
    server.create_model("alice", "alice", model.split("/")[1], "public")
    vid = server.push("alice", model, FIXTURES / "echo")
    err = refused(lambda: alice.models.delete(model))
    assert "public" in err.detail and "version" in err.detail
    with server.http("alice") as h:
        r = h.delete(f"/v1/models/{model}")
        body = problem(r, 409)
        assert r.headers.get("x-should-retry") == "false"
        assert [b["kind"] for b in body["blockers"]] == ["public", "has_versions"]
        has_versions = body["blockers"][1]
        assert has_versions["version_count"] == 1 and has_versions["versions"] == [vid]
        assert all(b["detail"] for b in body["blockers"])
    preview = server.preview_model_delete("alice", model)
    assert preview["deletable"] is False
    assert kinds(preview) == ["public", "has_versions"]
    # A version of a public model cannot be deleted either.
    err = refused(lambda: alice.models.get(model).versions.delete(vid))
    assert "public" in err.detail
    assert kinds(server.preview_version_delete("alice", model, vid)) == ["public"]
    # Private, and still the versions.
    server.set_visibility("alice", model, "private")
    err = refused(lambda: alice.models.delete(model))
    assert "version" in err.detail and "public" not in err.detail.split(".")[0]
    assert kinds(server.preview_model_delete("alice", model)) == ["has_versions"]
    assert version_ids(alice, model) == [vid], "a refused deletion changed nothing"


def test_public_empty_model_cannot_be_deleted(server, alice):
    name = unique("pubempty")
    alice.models.create(owner="alice", name=name, visibility="public", hardware="cpu")
    err = refused(lambda: alice.models.delete("alice", name))
    assert "public" in err.detail
    server.set_visibility("alice", f"alice/{name}", "private")
    assert alice.models.delete("alice", name) is True


def test_visible_but_not_owned_is_403(server, alice, bob):
    # acme/shared is public: bob, no member of acme, sees it but may not delete it.
    vid = server.versions["acme/shared"][0]
    err = refused(lambda: bob.models.delete("acme", "shared"), 403)
    assert err.detail
    refused(lambda: bob.models.get("acme/shared").versions.delete(vid), 403)
    refused(lambda: bob.models.delete("alice", "echo"), 403)
    refused(lambda: bob.models.get("alice/echo").versions.delete(server.versions["alice/echo"][0]),
            403)
    with server.http("bob") as h:
        problem(h.delete("/v1/models/acme/shared"), 403)
        problem(h.delete("/v1/models/acme/shared", params={"dry_run": "true"}), 403)
    # Nothing was removed.
    assert version_ids(alice, "acme/shared") == [vid]
    # A member of acme is its owner: refused only by the rules (public, has versions).
    err = refused(lambda: alice.models.delete("acme", "shared"), 409)
    assert "public" in err.detail


def test_dry_run_changes_nothing(server, alice):
    model, (vid,) = private_model_with(server, prefix="dry")
    assert server.preview_version_delete("alice", model, vid)["deletable"] is True
    assert version_ids(alice, model) == [vid]
    with server.http("alice") as h:
        r = h.delete(f"/v1/models/{model}/versions/{vid}", params={"dry_run": "maybe"})
        assert r.status_code == 422
    assert version_ids(alice, model) == [vid]


# --- refusals: version ------------------------------------------------------------------------

def test_predictions_by_others_block_a_version(server, alice, bob):
    # bob can run a model only while it is public; alice makes it private afterwards.
    model = f"alice/{unique('popular')}"
    server.create_model("alice", "alice", model.split("/")[1], "public")
    v_used, v_own = (server.push("alice", model, FIXTURES / f) for f in ("echo", "echo2"))
    pred = server.predict("bob", f"{model}:{v_used}")
    assert pred["status"] == "starting"
    assert pred["version"] == v_used and pred["model"] == model
    server.predict("bob", f"{model}:{v_used}", "again")
    server.predict("alice", f"{model}:{v_own}")  # the owner's own runs never block
    server.set_visibility("alice", model, "private")

    preview = server.preview_version_delete("alice", model, v_used)
    assert preview["deletable"] is False
    assert kinds(preview) == ["predictions_by_others"]
    blocker = preview["blockers"][0]
    assert blocker["account"] == "bob" and blocker["prediction_count"] == 2
    versions = alice.models.get(model).versions
    err = refused(lambda: versions.delete(v_used))
    assert "bob" in err.detail
    with server.http("alice") as h:
        r = h.delete(f"/v1/models/{model}/versions/{v_used}")
        assert problem(r, 409)["blockers"][0]["kind"] == "predictions_by_others"
        assert r.headers.get("x-should-retry") == "false"
    assert versions.delete(v_own) is True
    assert version_ids(alice, model) == [v_used]


def test_deployment_blocks_its_current_version_only(server, alice):
    model, (v1, v2) = private_model_with(server, ("echo", "echo2"), prefix="deployed")
    dep_name = unique("dep")
    dep = alice.deployments.create(name=dep_name, model=model, version=v1, hardware="cpu",
                                   min_instances=0, max_instances=1)
    assert (dep.owner, dep.name) == ("alice", dep_name)
    assert dep.current_release.number == 1
    assert dep.current_release.version == v1
    assert dep.current_release.model == model

    versions = alice.models.get(model).versions
    err = refused(lambda: versions.delete(v1))
    assert f"alice/{dep_name}" in err.detail
    preview = server.preview_version_delete("alice", model, v1)
    assert kinds(preview) == ["deployment"]
    assert preview["blockers"][0]["deployment"] == f"alice/{dep_name}"
    assert server.preview_version_delete("alice", model, v2)["deletable"] is True

    dep = alice.deployments.update("alice", dep_name, version=v2)
    assert dep.current_release.number == 2
    assert dep.current_release.version == v2
    assert server.preview_version_delete("alice", model, v1) == {"deletable": True, "blockers": []}
    assert versions.delete(v1) is True
    err = refused(lambda: versions.delete(v2))
    assert f"alice/{dep_name}" in err.detail
    assert version_ids(alice, model) == [v2]


def test_live_training_blocks_its_base_version_until_canceled(server, alice):
    model, (base,) = private_model_with(server, ("trainable",), prefix="ftbase")
    dest = f"alice/{unique('ftdest')}"
    server.create_model("alice", "alice", dest.split("/")[1], "private")
    training = alice.trainings.create(version=f"{model}:{base}", input={"word": "hey"},
                                      destination=dest)
    assert training.status == "starting"
    preview = server.preview_version_delete("alice", model, base)
    assert kinds(preview) == ["fine_tune_base"]
    assert preview["blockers"][0]["training"] == training.id
    err = refused(lambda: alice.models.get(model).versions.delete(base))
    assert training.id in err.detail
    canceled = alice.trainings.cancel(training.id)
    assert canceled.status == "canceled"
    assert alice.models.get(model).versions.delete(base) is True


def test_every_blocker_is_reported_at_once(server, alice):
    model = f"alice/{unique('many')}"
    server.create_model("alice", "alice", model.split("/")[1], "public")
    vid = server.push("alice", model, FIXTURES / "echo")
    server.predict("bob", f"{model}:{vid}")
    dep = unique("dep")
    alice.deployments.create(name=dep, model=model, version=vid, hardware="cpu",
                             min_instances=0, max_instances=1)
    preview = server.preview_version_delete("alice", model, vid)
    assert kinds(preview) == ["public", "predictions_by_others", "deployment"]
    err = refused(lambda: alice.models.get(model).versions.delete(vid))
    for word in ("public", "bob", f"alice/{dep}"):
        assert word in err.detail
