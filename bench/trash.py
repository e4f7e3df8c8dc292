"""The trash at scale: the sweep purging 10,000 expired versions, and pruning a model of 1,000
versions (the dry run, which computes every version's blockers and what they free together).

Each case sets up its own SQLite data directory through the real binary (`admin user create`,
`modelyard serve`, `POST /v1/models`, `modelyard push fixtures/cog/echo`), stops the server, and
copies the pushed version's row with SQL into N more versions, as the server writes them:

- `sweep-shared`: N trashed versions sharing the pushed artifact, their `purge_at` a second in
  the past. The server is started again; its sweep (first tick at start) purges them in batches
  of 200, one transaction and audit event each. Measured: first to last `purge_version` audit
  event (the server's own clock), and wall time from the start until the database holds none.
- `sweep-files`: the same with a project tree of its own per version (a file hard-linked to its
  own blob, sizes recorded as a push records them), so every purge also releases a tree and its
  blob from disk. Checked: `artifacts/` holds only the live version's tree afterwards.
- `prune`: a private model of N live versions (each with an artifact and blob rows of its own),
  then `POST /v1/models/bench/m/versions/prune {"keep": 1, "dry_run": true}` timed over several
  runs, and one real prune (to the trash) of all of them.

Usage: `python3 bench/trash.py [--sweep 10000] [--files 10000] [--prune 1000] [--runs 5]`
(release build first: `cargo build --release -p modelyard`). It stops every server it started
and removes its directories; the Markdown report goes to bench/out/trash.md.
"""
import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from benchlib import BIN, ROOT, Served, free_port

ECHO = os.path.join(ROOT, "fixtures", "cog", "echo")


def call(srv, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(srv.url + path, data=data, method=method, headers={
        "Authorization": f"Bearer {srv.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        text = r.read()
        return r.status, (json.loads(text) if text else None)


def sha(s):
    return hashlib.sha256(s.encode()).hexdigest()


class Restarted(Served):
    """`modelyard serve` again on a data directory `Served` set up (its account exists)."""

    def __init__(self, data, token, extra=()):
        self.data, self.token = data, token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [BIN, "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", data, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, RUST_LOG="warn"))
        end = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(self.url + "/v1/hardware", timeout=1)
            except urllib.error.HTTPError:
                return
            except OSError:
                if time.time() > end or self.proc.poll() is not None:
                    self.stop()
                    raise SystemExit(f"the server on {data} did not start")
                time.sleep(0.05)
            else:
                return


def base_model(data):
    """A data directory with bench/m (private) and one pushed version; the server stopped."""
    srv = Served(data, extra=["--no-runner"])
    try:
        call(srv, "POST", "/v1/models",
             {"owner": "bench", "name": "m", "visibility": "private", "hardware": "cpu"})
        env = dict(os.environ, MODELYARD_URL=srv.url, MODELYARD_TOKEN=srv.token)
        subprocess.run([BIN, "push", "bench/m", ECHO], check=True, capture_output=True, env=env)
    finally:
        srv.stop()
    return srv.token


def add_versions(data, n, trashed, own_files):
    """N copies of the pushed version's row; trashed ones expired a second ago."""
    db = sqlite3.connect(os.path.join(data, "modelyard.db"))
    cols = [r[1] for r in db.execute("PRAGMA table_info(versions)") if r[1] != "seq"]
    row = dict(zip(cols, db.execute(f"SELECT {','.join(cols)} FROM versions").fetchone()))
    owner = db.execute("SELECT id FROM accounts WHERE username = 'bench'").fetchone()[0]
    now = int(time.time() * 1e6)
    blobs_dir = os.path.join(data, "blobs")
    rows, blob_rows, links = [], [], []
    for i in range(n):
        r = dict(row)
        r["id"] = sha(f"version {i}")
        r["content_digest"] = sha(f"content {i}")
        r["created_at"] = row["created_at"] - (n - i)
        if own_files or not trashed:
            r["artifact"] = sha(f"artifact {i}")
            blob = sha(f"blob {i}")
            blob_rows.append((blob, 1000, r["artifact"]))
            if own_files:
                path = os.path.join(blobs_dir, blob)
                with open(path, "wb") as f:
                    f.write(os.urandom(1000))
                tree = os.path.join(data, "artifacts", r["artifact"])
                os.makedirs(tree)
                os.link(path, os.path.join(tree, "weights.bin"))
        if trashed:
            r["trashed_at"], r["purge_at"], r["trashed_by"] = now - 3_600_000_000, now - 1_000_000, owner
        rows.append(tuple(r[c] for c in cols))
    db.executemany(f"INSERT INTO versions ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", rows)
    db.executemany("INSERT INTO blobs (blob, bytes) VALUES (?, ?)", [(b, s) for b, s, _ in blob_rows])
    db.executemany("INSERT INTO artifact_blobs (artifact, blob) VALUES (?, ?)",
                   [(a, b) for b, _, a in blob_rows])
    db.commit()
    db.close()


def trashed_left(data):
    db = sqlite3.connect(os.path.join(data, "modelyard.db"), timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM versions WHERE trashed_at IS NOT NULL").fetchone()[0]
    finally:
        db.close()


def sweep(root, n, own_files):
    data = os.path.join(root, "files" if own_files else "shared")
    token = base_model(data)
    add_versions(data, n, trashed=True, own_files=own_files)
    assert trashed_left(data) == n
    t0 = time.time()
    srv = Restarted(data, token, extra=["--no-runner"])
    try:
        while trashed_left(data):
            time.sleep(0.05)
        wall = time.time() - t0
    finally:
        srv.stop()
    db = sqlite3.connect(os.path.join(data, "modelyard.db"))
    first, last, count = db.execute(
        "SELECT MIN(at), MAX(at), COUNT(*) FROM audit_events "
        "WHERE action = 'purge_version' AND actor = 'trash sweep' AND outcome = 'purged'").fetchone()
    live = db.execute("SELECT COUNT(*) FROM versions").fetchone()[0]
    db.close()
    assert count == n and live == 1, (count, live)
    trees = len(os.listdir(os.path.join(data, "artifacts")))
    assert trees == 1, f"{trees} trees left"
    span = (last - first) / 1e6
    return {"n": n, "span_s": span, "wall_s": wall, "per_version_ms": span * 1000 / n}


def prune(root, n, runs):
    data = os.path.join(root, "prune")
    token = base_model(data)
    add_versions(data, n, trashed=False, own_files=False)
    srv = Restarted(data, token, extra=["--no-runner"])
    try:
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            status, body = call(srv, "POST", "/v1/models/bench/m/versions/prune",
                                {"keep": 1, "dry_run": True})
            times.append(time.perf_counter() - t)
            assert status == 200 and len(body["deleted"]) == n, (status, len(body["deleted"]))
            assert len(body["kept"]) == 1 and body["frees_bytes"] >= (n - 1) * 1000
        t = time.perf_counter()
        status, body = call(srv, "POST", "/v1/models/bench/m/versions/prune", {"keep": 1})
        real = time.perf_counter() - t
        assert status == 200 and len(body["deleted"]) == n
        _, trash = call(srv, "GET", "/v1/trash")
        assert len(trash["results"]) == 100  # the first page of n
    finally:
        srv.stop()
    return {"n": n + 1, "dry_median_s": statistics.median(times), "dry_max_s": max(times),
            "dry_min_s": min(times), "real_s": real}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--prune", type=int, default=1_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="modelyard-trash-bench-")
    out = []
    try:
        if a.sweep:
            r = sweep(root, a.sweep, own_files=False)
            out.append(f"| sweep, shared artifact | {r['n']:,} | {r['span_s']:.2f} s "
                       f"({r['per_version_ms']:.2f} ms/version) | wall {r['wall_s']:.2f} s |")
            print(out[-1], flush=True)
        if a.files:
            r = sweep(root, a.files, own_files=True)
            out.append(f"| sweep, a tree and blob each | {r['n']:,} | {r['span_s']:.2f} s "
                       f"({r['per_version_ms']:.2f} ms/version) | wall {r['wall_s']:.2f} s |")
            print(out[-1], flush=True)
        if a.prune:
            r = prune(root, a.prune, a.runs)
            out.append(f"| prune dry run, keep 1 | {r['n']:,} versions | median {r['dry_median_s']*1000:.0f} ms "
                       f"(min {r['dry_min_s']*1000:.0f}, max {r['dry_max_s']*1000:.0f}; {a.runs} runs) | "
                       f"real prune {r['real_s']:.2f} s |")
            print(out[-1], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "bench", "out"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "out", "trash.md"), "w") as f:
        f.write("| case | items | time | |\n| --- | --- | --- | --- |\n" + "\n".join(out) + "\n")


if __name__ == "__main__":
    main()
