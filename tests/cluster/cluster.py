"""A modelyard cluster on one machine, for the cluster suite: PostgreSQL (a fresh database), a
real S3-compatible server (moto), two API nodes and two worker nodes, each a separate
`modelyard serve` process with its own data directory on its own loopback address.

Worker 1 offers `cpu` and `gpu-t4`, worker 2 `cpu` and `gpu-a100-large` with two stand-in GPU
ids: a model's hardware decides which worker may run it, which is how the tests place work.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from support import clean_env, free_port  # noqa: E402

READY_TIMEOUT = 90.0
# Short, so a vanished worker's jobs end within a test's patience.
LEASE_SECS = 4
BUCKET = "modelyard-cluster"


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited {proc.returncode}:\n{tail(log)}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s:\n{tail(log)}")


def tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen | None, timeout: float = 20) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class ObjectStore:
    """moto's S3 server, started by the suite."""
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self.port = free_port()
        log = self.root / "moto.log"
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_http(self.endpoint, self.proc, log)
        r = httpx.put(f"{self.endpoint}/{BUCKET}")
        assert r.status_code == 200, r.text

    def keys(self, prefix: str = "") -> set[str]:
        """Every key in the bucket under `prefix`."""
        out, token = set(), None
        while True:
            params = {"list-type": "2", "prefix": prefix}
            if token:
                params["continuation-token"] = token
            r = httpx.get(f"{self.endpoint}/{BUCKET}", params=params)
            assert r.status_code == 200, r.text
            doc = ET.fromstring(r.content)
            ns = re.match(r"\{.*\}", doc.tag)
            ns = ns.group(0) if ns else ""
            out |= {k.text for k in doc.iter(f"{ns}Key")}
            more = doc.find(f"{ns}IsTruncated")
            token_el = doc.find(f"{ns}NextContinuationToken")
            if more is None or more.text != "true" or token_el is None:
                return out
            token = token_el.text

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }


@dataclass
class Node:
    """One `modelyard serve` process of the cluster."""
    name: str
    role: str
    host: str
    binary: Path
    data_dir: Path
    database_url: str
    store: ObjectStore
    extra: list[str] = field(default_factory=list)
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    def args(self) -> list[str]:
        return ["serve", "--role", self.role, "--addr", f"{self.host}:{self.port}",
                "--data-dir", str(self.data_dir), "--database-url", self.database_url,
                "--blob-store", f"s3://{BUCKET}/cluster", "--lease-secs", str(LEASE_SECS),
                "--deployment-idle-secs", "0", "--allow-private-webhooks", *self.extra]

    def start(self) -> None:
        if not self.port:
            self.port = free_port()
        env = clean_env(RUST_LOG=os.environ.get("RUST_LOG", "info"), **self.store.env())
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(self.binary), *self.args()], stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env)
        probe = "/health" if self.role == "worker" else "/v1/hardware"
        wait_http(self.base + probe, self.proc, self.log)

    def kill9(self) -> None:
        assert self.proc is not None and self.proc.poll() is None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int | None:
        return stop(self.proc)

    def health(self) -> dict:
        r = httpx.get(self.base + "/health", timeout=5)
        assert r.status_code == 200, r.text
        return r.json()


def psql(database_url: str, sql: str) -> str:
    r = subprocess.run(["psql", database_url, "-AtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def descendants(pid: int) -> set[int]:
    """Every living process below `pid` (by parent links in /proc)."""
    parents: dict[int, int] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(p.name)] = int(fields[1])
    out, frontier = set(), {pid}
    while frontier:
        kids = {c for c, par in parents.items() if par in frontier and c not in out}
        out |= kids
        frontier = kids
    return out


def model_servers() -> set[int]:
    """Cog model servers running on this machine."""
    found = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if b"cog.server.http" in (p / "cmdline").read_bytes():
                    found.add(int(p.name))
            except OSError:
                pass
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:].split()[0] != "Z"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def quote(s: str) -> str:
    return urllib.parse.quote(s, safe="")
