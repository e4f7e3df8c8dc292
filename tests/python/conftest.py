"""A real modelyard server for the whole session, driven through the official `replicate` client.

The session starts the already-built binary (`$MODELYARD_BIN`, default
`${CARGO_TARGET_DIR:-target}/debug/modelyard`; nothing is built here) on a free port with a temp
data dir: SQLite by default, or the database in `$MODELYARD_TEST_DATABASE_URL` (it must be fresh:
the users are created anew). Users alice and bob and the organization acme (alice a member) are
made with `modelyard admin`, fixture Cog projects are pushed with `modelyard push`, and the server
is stopped (terminate, wait) at the end.
"""
from __future__ import annotations

import os

import pytest
import replicate

from support import FIXTURES, Server, modelyard_bin


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = modelyard_bin()
    if not binary.is_file():
        pytest.fail(f"no modelyard binary at {binary}: run `cargo build -p modelyard` first "
                    "(or set MODELYARD_BIN)", pytrace=False)
    root = tmp_path_factory.mktemp("modelyard")
    srv = Server(binary=binary, data_dir=root / "data",
                 database_url=os.environ.get("MODELYARD_TEST_DATABASE_URL") or None)
    srv.start()
    try:
        for user in ("alice", "bob"):
            srv.create_user(user)
        srv.create_org("acme", "alice")
        # Models every test may read but none changes.
        srv.create_model("alice", "alice", "echo", "public")
        srv.push("alice", "alice/echo", FIXTURES / "echo")
        srv.push("alice", "alice/echo", FIXTURES / "echo2")
        srv.create_model("alice", "alice", "secret", "private")
        srv.push("alice", "alice/secret", FIXTURES / "echo")
        srv.create_model("alice", "acme", "shared", "public")
        srv.push("alice", "acme/shared", FIXTURES / "echo")
        srv.create_model("alice", "acme", "internal", "private")
        if srv.database_url:
            # The suite must really run on the database it was given.
            assert not (srv.data_dir / "modelyard.db").exists(), "a SQLite file was made anyway"
        yield srv
    finally:
        code = srv.stop()
        log = srv.log_path.read_text(errors="replace") if srv.log_path else ""
        print(f"\nmodelyard serve exited with {code}; log at {srv.log_path}")
    assert "panicked" not in log, f"the server panicked during the run:\n{srv.log_tail(80)}"
    assert code == 0, f"modelyard serve did not shut down cleanly on SIGTERM:\n{srv.log_tail(40)}"


@pytest.fixture(scope="session")
def alice(server) -> replicate.Client:
    return server.client("alice")


@pytest.fixture(scope="session")
def bob(server) -> replicate.Client:
    return server.client("bob")
