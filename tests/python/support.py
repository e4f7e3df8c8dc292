"""Helpers for the suite: the modelyard server process, its CLI, clients and request helpers."""
from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import replicate

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "cog"
READY_TIMEOUT = 60.0


def modelyard_bin() -> Path:
    if os.environ.get("MODELYARD_BIN"):
        return Path(os.environ["MODELYARD_BIN"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or "target")
    if not target.is_absolute():
        target = ROOT / target
    return target / "debug" / "modelyard"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for the binary, without any MODELYARD_* setting of the caller's, so the
    server and the CLI use exactly the data dir, database and server given here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A model name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass
class Server:
    binary: Path
    data_dir: Path
    database_url: str | None
    port: int = 0
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    tokens: dict[str, str] = field(default_factory=dict)
    versions: dict[str, list[str]] = field(default_factory=dict)
    # More `modelyard serve` flags (e.g. --allow-private-webhooks).
    extra_args: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def db_args(self) -> list[str]:
        args = ["--data-dir", str(self.data_dir)]
        if self.database_url:
            args += ["--database-url", self.database_url]
        return args

    def log_tail(self, n: int = 60) -> str:
        if not self.log_path or not self.log_path.exists():
            return "(no server log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    # --- the process ---------------------------------------------------------------------------
    def start(self) -> None:
        for _ in range(3):  # another process may take the free port between probe and bind
            self.port = free_port()
            self.log_path = self.data_dir.parent / f"server-{self.port}.log"
            log = open(self.log_path, "wb")
            env = clean_env(RUST_LOG=os.environ.get("RUST_LOG", "info"))
            self.proc = subprocess.Popen(
                [str(self.binary), "serve", "--addr", f"127.0.0.1:{self.port}", *self.db_args(),
                 *self.extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
            log.close()
            if self.wait_ready():
                return
            if "cannot listen" not in self.log_tail():
                break
        raise RuntimeError(f"modelyard serve did not become ready:\n{self.log_tail()}")

    def wait_ready(self) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                httpx.get(f"{self.base}/v1/hardware", timeout=2)
                return True  # any HTTP answer means it is serving
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        return False

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    # --- the CLI -------------------------------------------------------------------------------
    def cli(self, *args: str, token: str | None = None, check: bool = True,
            timeout: float = 180) -> subprocess.CompletedProcess:
        env = clean_env(MODELYARD_URL=self.base)
        if token:
            env["MODELYARD_TOKEN"] = token
        r = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                           env=env, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(
                f"modelyard {' '.join(args)} exited {r.returncode}\n"
                f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}\nserver log:\n{self.log_tail(20)}")
        return r

    @staticmethod
    def last_line(out: str) -> str:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        assert lines, "the command printed nothing on stdout"
        return lines[-1]

    def create_user(self, name: str) -> str:
        r = self.cli("admin", "user", "create", name, *self.db_args())
        token = self.last_line(r.stdout)
        self.tokens[name] = token
        return token

    def create_org(self, org: str, *members: str) -> None:
        args = ["admin", "org", "create", org]
        for m in members:
            args += ["--member", m]
        self.cli(*args, *self.db_args())

    def push(self, user: str, model: str, project: Path | str) -> str:
        """`modelyard push` as `user`; returns the version id it prints last."""
        r = self.cli("push", model, str(project), token=self.tokens[user])
        vid = self.last_line(r.stdout)
        assert len(vid) == 64 and all(c in "0123456789abcdef" for c in vid), r.stdout
        self.versions.setdefault(model, []).append(vid)
        return vid

    # --- clients -------------------------------------------------------------------------------
    def client(self, user: str) -> replicate.Client:
        return replicate.Client(api_token=self.tokens[user], base_url=self.base)

    def http(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def create_model(self, user: str, owner: str, name: str, visibility: str = "private"):
        return self.client(user).models.create(
            owner=owner, name=name, visibility=visibility, hardware="cpu")

    def set_visibility(self, user: str, model: str, visibility: str) -> None:
        with self.http(user) as h:
            r = h.patch(f"/v1/models/{model}", json={"visibility": visibility})
            assert r.status_code == 200, r.text
            assert r.json()["visibility"] == visibility

    def predict(self, user: str, version: str, prompt: str = "world") -> dict:
        """Records a prediction with plain HTTP (nothing runs it yet)."""
        with self.http(user) as h:
            r = h.post("/v1/predictions", json={"version": version, "input": {"prompt": prompt}})
            assert r.status_code in (201, 202), r.text
            return r.json()

    def preview_version_delete(self, user: str, model: str, vid: str) -> dict:
        with self.http(user) as h:
            r = h.delete(f"/v1/models/{model}/versions/{vid}", params={"dry_run": "true"})
            assert r.status_code == 200, r.text
            return without_frees(r.json())

    def preview_model_delete(self, user: str, model: str) -> dict:
        with self.http(user) as h:
            r = h.delete(f"/v1/models/{model}", params={"dry_run": "true"})
            assert r.status_code == 200, r.text
            return without_frees(r.json())


def without_frees(preview: dict) -> dict:
    """A deletion preview without its `frees_bytes` (checked here: a count of bytes), for the
    tests of the rules that compare the rest as a whole."""
    frees = preview.pop("frees_bytes")
    assert isinstance(frees, int) and frees >= 0, preview
    return preview


def tar_gz(files: dict[str, bytes | str], links: dict[str, str] | None = None) -> bytes:
    """A gzip'd tar built by hand, so names the CLI would never send (`..`, `/abs`) can be sent."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for name, data in files.items():
            data = data.encode() if isinstance(data, str) else data
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def fixture_files(name: str) -> dict[str, str]:
    d = FIXTURES / name
    return {p.name: p.read_text() for p in sorted(d.iterdir()) if p.is_file()}


def problem(r: httpx.Response, status: int) -> dict:
    """Asserts an application/problem+json answer with this status and returns its body."""
    assert r.status_code == status, f"expected {status}, got {r.status_code}: {r.text[:500]}"
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/problem+json"), f"content-type {ctype!r}: {r.text[:300]}"
    body = r.json()
    assert body.get("status") == status, body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body
