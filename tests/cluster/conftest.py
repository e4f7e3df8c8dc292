"""The cluster suite's fixtures: one cluster for the whole session (see cluster.py), users alice
and bob, the organization acme (both members), and clients for each API node.

Needs PostgreSQL at `$MODELYARD_TEST_PG_URL` (default postgres://postgres@127.0.0.1:5432/postgres;
a fresh database is made and dropped) and moto (`pip install 'moto[server]'`).
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import replicate

from cluster import Node, ObjectStore, model_servers, psql, stop

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from support import FIXTURES, clean_env, free_port, modelyard_bin  # noqa: E402

PG_ADMIN = os.environ.get("MODELYARD_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@dataclass
class Cluster:
    binary: Path
    database_url: str
    store: ObjectStore
    api: list[Node]
    workers: list[Node]
    tokens: dict[str, str] = field(default_factory=dict)

    def nodes(self) -> list[Node]:
        return [*self.api, *self.workers]

    def admin(self, *args: str) -> str:
        r = subprocess.run([str(self.binary), "admin", *args, "--data-dir",
                            str(self.api[0].data_dir), "--database-url", self.database_url],
                           capture_output=True, text=True, env=clean_env(), timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def client(self, user: str, node: int) -> replicate.Client:
        return replicate.Client(api_token=self.tokens[user], base_url=self.api[node].base)

    def http(self, user: str, node: int):
        import httpx
        return httpx.Client(base_url=self.api[node].base, timeout=120,
                            headers={"Authorization": f"Bearer {self.tokens[user]}"})

    def push(self, user: str, model: str, project: Path | str, node: int = 0) -> str:
        env = clean_env(MODELYARD_URL=self.api[node].base, MODELYARD_TOKEN=self.tokens[user])
        r = subprocess.run([str(self.binary), "push", model, str(project)], capture_output=True,
                           text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"push failed:\n{r.stdout}\n{r.stderr}\n{self.api[node].log.read_text(errors='replace')[-3000:]}"
        vid = r.stdout.strip().splitlines()[-1].strip()
        assert len(vid) == 64, r.stdout
        return vid

    def model(self, user: str, owner: str, name: str, hardware: str = "cpu",
              visibility: str = "private", node: int = 0):
        return self.client(user, node).models.create(
            owner=owner, name=name, visibility=visibility, hardware=hardware)

    def logs(self) -> str:
        return "\n".join(f"--- {n.name} ---\n{n.log.read_text(errors='replace')[-4000:]}"
                         for n in self.nodes() if n.log.exists())


@pytest.fixture(scope="session")
def cluster(tmp_path_factory) -> Cluster:
    binary = modelyard_bin()
    if not binary.is_file():
        pytest.fail(f"no modelyard binary at {binary}", pytrace=False)
    root = tmp_path_factory.mktemp("cluster")
    db = f"modelyard_cluster_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    psql(PG_ADMIN, f"CREATE DATABASE {db}")
    database_url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{db}"
    store = ObjectStore(root)
    before = model_servers()
    nodes: list[Node] = []
    try:
        store.start()

        def node(name: str, role: str, host: str, *extra: str) -> Node:
            n = Node(name=name, role=role, host=host, binary=binary,
                     data_dir=root / name / "data", database_url=database_url, store=store,
                     extra=list(extra))
            n.data_dir.parent.mkdir(parents=True, exist_ok=True)
            nodes.append(n)
            return n

        api = [node("api1", "api", "127.0.0.2"), node("api2", "api", "127.0.0.3")]
        workers = [
            node("worker1", "worker", "127.0.0.4", "--hardware", "cpu,gpu-t4",
                 "--max-servers", "2", "--server-idle-secs", "30"),
            node("worker2", "worker", "127.0.0.5", "--hardware", "cpu,gpu-a100-large",
                 "--gpus", "0,1", "--max-servers", "2", "--server-idle-secs", "30"),
        ]
        # Clients reach the cluster at one address (a load balancer in production): here the
        # first API node's, which every node writes into the URLs it makes.
        api[0].port = free_port()
        for n in nodes:
            n.extra += ["--public-url", api[0].base]
        # The first node migrates the database; the others then start side by side.
        api[0].start()
        for n in [api[1], *workers]:
            n.start()
        c = Cluster(binary=binary, database_url=database_url, store=store, api=api,
                    workers=workers)
        for user in ("alice", "bob"):
            c.tokens[user] = c.admin("user", "create", user).strip().splitlines()[-1]
        c.admin("org", "create", "acme", "--member", "alice", "--member", "bob")
        yield c
    finally:
        codes = {n.name: stop(n.proc) for n in nodes}
        stop(store.proc)
        psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    left = model_servers() - before
    assert not left, f"model servers outlived the cluster: {sorted(left)}"
    bad = {k: v for k, v in codes.items() if v not in (0, None, -9)}
    assert not bad, f"nodes did not shut down cleanly: {bad}"


def fixture(name: str) -> Path:
    return FIXTURES / name
