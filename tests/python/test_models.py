"""Models through the official Python client: get, list (with pagination), create, visibility."""
import re

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError
from replicate.version import Versions

from support import problem, unique

HEX64 = re.compile(r"^[0-9a-f]{64}$")


def all_models(client: replicate.Client) -> list:
    out = []
    for page in replicate.paginate(client.models.list):
        out.extend(page.results)
    return out


def names(models) -> set[str]:
    return {f"{m.owner}/{m.name}" for m in models}


def test_get_model_has_the_fields_the_client_needs(server, alice):
    m = alice.models.get("alice", "echo")
    assert m.url == f"{server.base}/alice/echo"
    assert (m.owner, m.name) == ("alice", "echo")
    assert m.visibility == "public"
    assert isinstance(m.run_count, int) and m.run_count >= 0
    assert m.id == "alice/echo"
    v = m.latest_version
    assert v is not None
    assert v.id == server.versions["alice/echo"][-1]
    assert HEX64.match(v.id)
    assert isinstance(v.cog_version, str) and v.cog_version
    schema = v.openapi_schema
    assert isinstance(schema, dict)
    inputs = schema["components"]["schemas"]["Input"]["properties"]
    assert set(inputs) >= {"prompt", "repeat"}
    assert inputs["prompt"]["type"] == "string"
    assert schema["components"]["schemas"]["Output"]["type"] == "string"
    # The "owner/name" shorthand reaches the same model.
    assert alice.models.get("alice/echo").latest_version.id == v.id


def test_model_json_has_the_documented_keys(server):
    with server.http("bob") as h:
        r = h.get("/v1/models/alice/echo")
    assert r.status_code == 200
    body = r.json()
    for key in ("url", "owner", "name", "visibility", "run_count", "description", "github_url",
                "paper_url", "license_url", "cover_image_url", "default_example",
                "latest_version", "created_at", "is_official"):
        assert key in body, key
    assert body["is_official"] is False


def test_public_model_is_visible_to_others_and_anonymously(server, bob):
    assert bob.models.get("alice", "echo").latest_version is not None
    assert bob.models.get("acme", "shared").owner == "acme"
    with server.http() as h:
        assert h.get("/v1/models/alice/echo").status_code == 200


def test_private_model_of_another_account_is_404(server, alice, bob):
    assert alice.models.get("alice", "secret").visibility == "private"
    vid = server.versions["alice/secret"][0]
    versions = Versions(bob, ("alice", "secret"))
    for call in (
        lambda: bob.models.get("alice", "secret"),
        lambda: bob.models.get("alice/secret"),
        lambda: versions.list(),
        lambda: versions.get(vid),
        lambda: versions.delete(vid),
        lambda: bob.models.delete("alice", "secret"),
        lambda: bob.models.get("acme", "internal"),
        lambda: bob.models.delete("acme", "internal"),
    ):
        with pytest.raises(ReplicateError) as e:
            call()
        assert e.value.status == 404, e.value
    # The same answer as for a model that does not exist at all.
    with pytest.raises(ReplicateError) as e:
        bob.models.get("alice", "no-such-model")
    assert e.value.status == 404
    with server.http("bob") as h:
        problem(h.get("/v1/models/alice/secret"), 404)
    with server.http() as h:
        problem(h.get("/v1/models/alice/secret"), 404)


def test_org_member_sees_the_org_private_model(alice):
    assert alice.models.get("acme", "internal").visibility == "private"


def test_list_holds_what_each_caller_may_see(alice, bob):
    seen_by_alice = names(all_models(alice))
    assert {"alice/echo", "alice/secret", "acme/shared", "acme/internal"} <= seen_by_alice
    seen_by_bob = names(all_models(bob))
    assert {"alice/echo", "acme/shared"} <= seen_by_bob
    assert "alice/secret" not in seen_by_bob
    assert "acme/internal" not in seen_by_bob
    listed = {f"{m.owner}/{m.name}": m for m in all_models(bob)}
    assert listed["alice/echo"].latest_version.id == alice.models.get("alice/echo").latest_version.id


def test_list_is_paginated_through_absolute_next_links(server):
    """Over 100 models: every page but the last is full, `next` is an absolute URL on this
    server, and following it with the client yields each model once."""
    server.create_user("pager")
    client = server.client("pager")
    created = {f"pager/page-{i:03d}" for i in range(105)}
    with server.http("pager") as h:
        for full in sorted(created):
            r = h.post("/v1/models", json={"owner": "pager", "name": full.split("/")[1],
                                           "visibility": "private", "hardware": "cpu"})
            assert r.status_code == 201, r.text
    first = client.models.list()
    assert len(first.results) == 100
    assert first.next is not None
    assert first.next.startswith(f"{server.base}/v1/models"), first.next
    assert first.previous is None or first.previous.startswith(server.base)
    pages = list(replicate.paginate(client.models.list))
    assert len(pages) >= 2
    listed = [f"{m.owner}/{m.name}" for p in pages for m in p.results]
    assert len(listed) == len(set(listed)), "a model was listed twice"
    assert created <= set(listed)
    assert pages[-1].next is None
    # bob sees none of pager's private models.
    bob_names = names(all_models(server.client("bob")))
    assert not (created & bob_names)
    # A cursor this server never gave is refused, not ignored.
    with server.http("pager") as h:
        r = h.get("/v1/models", params={"cursor": "not-a-cursor"})
    assert 400 <= r.status_code < 500


def test_create_model(server, alice):
    name = unique("created")
    m = alice.models.create(owner="alice", name=name, visibility="private", hardware="cpu",
                            description="made by a test")
    assert (m.owner, m.name, m.visibility) == ("alice", name, "private")
    assert m.description == "made by a test"
    assert m.latest_version is None
    assert m.run_count == 0
    assert m.url == f"{server.base}/alice/{name}"
    got = alice.models.get("alice", name)
    assert got.description == "made by a test"
    with server.http("alice") as h:
        r = h.get(f"/v1/models/alice/{name}/versions")
    assert r.status_code == 200 and r.json()["results"] == []


def test_create_duplicate_is_409(alice):
    name = unique("dup")
    alice.models.create(owner="alice", name=name, visibility="private", hardware="cpu")
    with pytest.raises(ReplicateError) as e:
        alice.models.create(owner="alice", name=name, visibility="public", hardware="cpu")
    assert e.value.status == 409


def test_create_for_an_org_needs_membership(alice, bob):
    name = unique("orgmodel")
    m = alice.models.create(owner="acme", name=name, visibility="private", hardware="cpu")
    assert m.owner == "acme"
    with pytest.raises(ReplicateError) as e:
        bob.models.create(owner="acme", name=unique("intruder"), visibility="public",
                          hardware="cpu")
    assert e.value.status == 403
    with pytest.raises(ReplicateError) as e:
        bob.models.create(owner="alice", name=unique("intruder"), visibility="public",
                          hardware="cpu")
    assert e.value.status == 403


def test_create_needs_a_token(server):
    with httpx.Client(base_url=server.base) as h:
        r = h.post("/v1/models", json={"owner": "alice", "name": unique("anon"),
                                       "visibility": "public", "hardware": "cpu"})
    problem(r, 401)
    bad = replicate.Client(api_token="r8_not-a-real-token", base_url=server.base)
    with pytest.raises(ReplicateError) as e:
        bad.models.get("alice", "echo")
    assert e.value.status == 401


def test_token_scheme_is_also_accepted(server):
    with httpx.Client(base_url=server.base,
                      headers={"Authorization": f"Token {server.tokens['alice']}"}) as h:
        r = h.get("/v1/models/alice/secret")
    assert r.status_code == 200, r.text
