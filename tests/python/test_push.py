"""Pushing Cog projects: `modelyard push`, and uploads the CLI would never send."""
import shutil
from pathlib import Path

import pytest

from support import FIXTURES, fixture_files, problem, tar_gz, unique


@pytest.fixture(scope="module")
def pushbox(server):
    """A private model of alice's with one version, for refused pushes to leave unchanged."""
    model = f"alice/{unique('pushbox')}"
    server.create_model("alice", "alice", model.split("/")[1], "private")
    server.push("alice", model, FIXTURES / "echo")
    return model


def versions(server, model: str) -> list[str]:
    with server.http("alice") as h:
        r = h.get(f"/v1/models/{model}/versions")
    assert r.status_code == 200, r.text
    return [v["id"] for v in r.json()["results"]]


def upload(server, model: str, archive: bytes, user: str = "alice",
           content_type: str = "application/gzip"):
    with server.http(user) as h:
        return h.post(f"/v1/models/{model}/versions", content=archive,
                      headers={"Content-Type": content_type})


def leftovers(server) -> list[str]:
    tmp = server.data_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


def test_push_records_a_version_with_the_predictor_schema(server, alice):
    model = f"alice/{unique('pushed')}"
    server.create_model("alice", "alice", model.split("/")[1], "private")
    vid = server.push("alice", model, FIXTURES / "echo2")
    v = alice.models.get(model).versions.get(vid)
    props = v.openapi_schema["components"]["schemas"]["Input"]["properties"]
    assert props["repeat"]["type"] == "integer"
    assert props["repeat"].get("maximum") == 5 and props["repeat"].get("minimum") == 1
    assert alice.models.get(model).latest_version.id == vid


def test_pushing_the_same_content_again_adds_no_version(server, pushbox):
    before = versions(server, pushbox)
    again = server.push("alice", pushbox, FIXTURES / "echo")
    assert again == before[0]
    assert versions(server, pushbox) == before


def test_trainable_project_has_a_training_schema(server, alice):
    model = f"alice/{unique('trainable')}"
    server.create_model("alice", "alice", model.split("/")[1], "private")
    vid = server.push("alice", model, FIXTURES / "trainable")
    schemas = alice.models.get(model).versions.get(vid).openapi_schema["components"]["schemas"]
    assert "word" in schemas["TrainingInput"]["properties"]


def test_project_without_cog_yaml_is_refused(server, pushbox):
    before = versions(server, pushbox)
    files = fixture_files("echo")
    del files["cog.yaml"]
    body = problem(upload(server, pushbox, tar_gz(files)), 422)
    assert "cog.yaml" in body["detail"]
    assert versions(server, pushbox) == before
    assert leftovers(server) == []


def test_cli_refuses_a_directory_without_cog_yaml(server, pushbox, tmp_path):
    before = versions(server, pushbox)
    shutil.copy(FIXTURES / "echo" / "predict.py", tmp_path / "predict.py")
    r = server.cli("push", pushbox, str(tmp_path), token=server.tokens["alice"], check=False)
    assert r.returncode != 0
    assert "cog.yaml" in (r.stdout + r.stderr)
    assert versions(server, pushbox) == before


def test_broken_predictor_is_refused(server, pushbox):
    before = versions(server, pushbox)
    body = problem(upload(server, pushbox, tar_gz(fixture_files("broken"))), 422)
    assert "this_module_does_not_exist" in body["detail"]
    assert "predict" in [f["field"] for f in body["invalid_fields"]]
    r = server.cli("push", pushbox, str(FIXTURES / "broken"), token=server.tokens["alice"],
                   check=False)
    assert r.returncode != 0
    assert "this_module_does_not_exist" in (r.stdout + r.stderr)
    assert versions(server, pushbox) == before
    assert leftovers(server) == []


def test_cog_yaml_naming_a_missing_file_is_refused(server, pushbox):
    before = versions(server, pushbox)
    files = fixture_files("echo")
    files["cog.yaml"] = 'predict: "elsewhere.py:Predictor"\n'
    problem(upload(server, pushbox, tar_gz(files)), 422)
    files["cog.yaml"] = 'predict: "../echo/predict.py:Predictor"\n'
    problem(upload(server, pushbox, tar_gz(files)), 422)
    assert versions(server, pushbox) == before


@pytest.mark.parametrize("evil", ["../escape.txt", "../../escape.txt", "/tmp/modelyard-escape.txt",
                                  "sub/../../escape.txt"])
def test_path_traversal_is_refused(server, pushbox, evil):
    before = versions(server, pushbox)
    files = fixture_files("echo")
    files[evil] = "escaped"
    body = problem(upload(server, pushbox, tar_gz(files)), 422)
    assert "outside" in body["detail"] or "path" in body["detail"]
    assert versions(server, pushbox) == before
    assert leftovers(server) == []
    assert list(server.data_dir.parent.rglob("*escape.txt")) == []
    assert not (server.data_dir.parent.parent / "escape.txt").exists()
    assert not Path("/tmp/modelyard-escape.txt").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../outside", "a/../../outside"])
def test_links_out_of_the_project_are_refused(server, pushbox, target):
    before = versions(server, pushbox)
    body = problem(upload(server, pushbox, tar_gz(fixture_files("echo"), {"link": target})), 422)
    assert "link" in body["detail"]
    assert versions(server, pushbox) == before
    assert leftovers(server) == []


def test_not_a_tarball_and_wrong_content_type(server, pushbox):
    before = versions(server, pushbox)
    problem(upload(server, pushbox, b"this is not gzip"), 422)
    r = upload(server, pushbox, tar_gz(fixture_files("echo2")), content_type="application/json")
    problem(r, 415)
    assert versions(server, pushbox) == before


def test_push_needs_ownership(server, pushbox):
    archive = tar_gz(fixture_files("echo2"))
    problem(upload(server, pushbox, archive, user="bob"), 404)   # private: invisible to bob
    problem(upload(server, "acme/shared", archive, user="bob"), 403)  # public, not bob's
    problem(upload(server, "alice/no-such-model", archive), 404)
    with server.http() as h:
        r = h.post(f"/v1/models/{pushbox}/versions", content=archive,
                   headers={"Content-Type": "application/gzip"})
    problem(r, 401)
    assert len(versions(server, "acme/shared")) == 1
