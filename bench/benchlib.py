"""What the benchmark scripts share: the binary, free ports, percentiles, and a `modelyard
serve` on a fresh data directory with one account, `bench`, and its token."""
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("MODELYARD_BIN", os.path.join(TARGET, "release", "modelyard"))


def ensure_built(*extra):
    """Builds the release `modelyard` (and `extra`, e.g. an example) unless MODELYARD_BIN names a
    binary: a no-op when the build is current, so every script runs from a fresh clone."""
    if "MODELYARD_BIN" in os.environ:
        return
    for what in (["-p", "modelyard"], *extra):
        subprocess.run(["cargo", "build", "--release", *what], cwd=ROOT, check=True,
                       env=dict(os.environ, CARGO_TARGET_DIR=TARGET))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


class Served:
    """`modelyard serve` on `data` (made here) with `extra` options; `.port`, `.url`, `.token`,
    `.proc`. Stop it with `stop()`. With `database_url`, on that database instead of SQLite."""

    def __init__(self, data, extra=(), database_url=None):
        if not os.path.exists(BIN):
            raise SystemExit(f"{BIN} is missing: cargo build --release -p modelyard")
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        db = ["--database-url", database_url] if database_url else []
        extra = [*db, *extra]
        out = subprocess.run([BIN, "admin", "user", "create", "bench", "--data-dir", data, *db],
                             check=True, capture_output=True, text=True)
        self.token = out.stdout.strip().splitlines()[-1]
        self.proc = subprocess.Popen(
            [BIN, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", data, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))
        end = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.time() > end or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit(f"the server on {data} did not start")
                time.sleep(0.1)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


PG_URL = os.environ.get("MODELYARD_BENCH_PG", "postgres://postgres@127.0.0.1:5432")


class PgDatabase:
    """A throwaway PostgreSQL database (trust auth, as the tests use); `.url`; `drop()`."""

    def __init__(self):
        # Unique even for two made in the same second by one run.
        self.name = f"modelyard_bench_{os.getpid()}_{int(time.time())}_{os.urandom(3).hex()}"
        self.url = f"{PG_URL}/{self.name}"
        self._psql(f'CREATE DATABASE "{self.name}"')

    def _psql(self, sql):
        subprocess.run(["psql", f"{PG_URL}/postgres", "-qAtc", sql], check=True,
                       capture_output=True, text=True)

    def drop(self):
        self._psql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads, so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid):
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in open(f"/proc/{pid}/task/{tid}/children").read().split()]
        except OSError:
            pass
    return out


def _role(pid):
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    if "wrapper.py" in cmd:
        return "sandbox bridge (wrapper.py)"
    if "cog.server.http" in cmd:
        return "Cog server"
    if cmd.startswith("bwrap") or "/bwrap " in cmd:
        return "bubblewrap"
    if "cog" in cmd or "coglet" in cmd:
        return "Cog worker"
    return "other: " + cmd[:40]


def tree_cpu(pid, name="modelyard", out=None):
    """CPU seconds of `pid` (as `name`) and of each kind of process under it, so far, added to
    `out`: where a prediction's CPU goes. Processes that ended in between are not counted."""
    out = {} if out is None else out
    out[name] = out.get(name, 0.0) + cpu_seconds(pid)
    todo = _children(pid)
    while todo:
        c = todo.pop()
        role = _role(c)
        try:
            out[role] = out.get(role, 0.0) + cpu_seconds(c)
            todo += _children(c)
        except OSError:
            pass
    return out


def cpu_delta(before, after, n):
    """µs per item of each role between two `tree_cpu` readings."""
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1e6 / n for k in after}


def proc_mem(pid):
    """VmRSS and VmHWM of a process, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                out[k] = int(v.split()[0]) / 1024
    return out


def wrk(url, token=None, seconds=5, threads=2, connections=16, method="GET", pid=None):
    """One wrk run with bench/wrk_report.lua: its RESULT fields (rps, p50_us, p99_us, ...) and,
    given the server's pid, its CPU time per request (`cpu_us`). Any error is fatal."""
    import re
    cpu0 = cpu_seconds(pid) if pid else None
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
         "-s", os.path.join(ROOT, "bench", "wrk_report.lua"), url],
        capture_output=True, text=True, timeout=seconds + 60,
        env=dict(os.environ, BENCH_METHOD=method, BENCH_TOKEN=token or "")).stdout
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if not m:
        raise SystemExit(f"wrk failed on {url}:\n{out}")
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    if any(v for k, v in r.items() if k.startswith("err_")):
        raise SystemExit(f"wrk saw errors (non-2xx or socket) on {method} {url}:\n{out}")
    if pid:
        r["cpu_us"] = (cpu_seconds(pid) - cpu0) * 1e6 / max(r["requests"], 1)
    return r
