#!/usr/bin/env python3
"""Benchmark: GET /v1/models/{owner}/{name} and the version deletion preview
(DELETE /v1/models/{owner}/{name}/versions/{id}?dry_run=true) on SQLite, at 10,000 and at
1,000,000 predictions, each against GET /v1/hardware (the token lookup only) in the same phase.

One command, from the repository root:

    python3 bench/deletion_preview.py [--bin target/release/modelyard] [--case measured]

What it does, all in a fresh temporary data directory that it removes at the end:
  1. installs wrk (apt-get) if missing and builds `modelyard` in release mode;
  2. makes the users bench, ada and ben and the organization benchorg with
     `modelyard admin`, starts `modelyard serve` on a free loopback port, creates the private
     models benchorg/measured and benchorg/other-00..NN with POST /v1/models, pushes
     fixtures/cog/echo to benchorg/measured (`modelyard push`), and runs one real prediction per
     user through POST /v1/predictions;
  3. with the server stopped, fills the SQLite file directly (one transaction): the other
     versions (copies of the pushed version's row under new ids), and predictions copied from
     the server-written one, upserting version_runs and models.run_count exactly as
     crates/storage/src/sql/jobs.rs does, then checks those counters against the jobs table;
  4. phase A (10,000 predictions, all on the measured version; its database is copied aside)
     and phase B (990,000 more over the other versions): starts one server on each, side by side,
     checks each endpoint answers 200 (and the preview the same on both), then runs wrk for each
     endpoint on each phase in alternating rounds and records each server's peak RSS (VmHWM);
  5. restarts the server with sqlx's statement log, makes one request per endpoint, and runs
     EXPLAIN QUERY PLAN on exactly the statements the server ran, with the SQLite the server is
     linked with (its bundled libsqlite3.a), failing if any of the preview's scans the jobs table;
  6. prints a Markdown report (also written to --out).

Everything it starts (server, wrk) is stopped on exit, failure or signal included.
"""
import argparse
import base64
import collections
import datetime
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import sqlite3
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

OWNER = "benchorg"
MEASURED = "measured"
USERS = ["bench", "ada", "ben"]  # bench is the caller; all three are members of benchorg
# How the predictions on the measured version are split (the rest goes to bench, the caller):
# the other two make the preview answer two "predictions by others" blockers.
MEASURED_SPLIT = {"ada": 1000, "ben": 500}

STARTED = []  # every child process still to stop
DEADLINE = [0.0]


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def remaining(cap=None):
    left = DEADLINE[0] - time.monotonic()
    if left <= 0:
        raise SystemExit("bench: over the time limit (--max-minutes)")
    return min(left, cap) if cap else left


def child_env(**extra):
    # A clean environment: no MODELYARD_* from the caller (a MODELYARD_DATABASE_URL would point
    # the server elsewhere).
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd, timeout=600, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, timeout=remaining(timeout), **kw)


def stop(p, grace=10):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in STARTED:
        STARTED.remove(p)


def stop_all():
    for p in list(STARTED):
        try:
            stop(p, grace=5)
        except Exception as e:  # keep stopping the others
            log(f"could not stop pid {p.pid}: {e}")


def on_signal(signum, _frame):
    raise SystemExit(f"bench: stopped by signal {signum}")


# --- setup -------------------------------------------------------------------------------------


def ensure_wrk():
    if shutil.which("wrk"):
        return
    if os.geteuid() != 0:
        raise SystemExit("bench: wrk is missing; install it (Debian: apt-get install -y wrk)")
    log("installing wrk with apt-get")
    run(["apt-get", "update", "-qq"], timeout=300, stdout=subprocess.DEVNULL)
    run(["apt-get", "install", "-y", "-qq", "wrk"], timeout=300, stdout=subprocess.DEVNULL,
        env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")


def build(args):
    if args.bin:
        return Path(args.bin).resolve()
    log(f"cargo build --release -p modelyard (target dir {target_dir()})")
    run(["cargo", "build", "--release", "-p", "modelyard"], timeout=1800, cwd=ROOT,
        env=dict(os.environ, CARGO_TARGET_DIR=str(target_dir())))
    return target_dir() / "release" / "modelyard"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary, data, work, name, rust_log="info", extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = work / f"server-{name}.log"
        self.log_file = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--addr", f"127.0.0.1:{self.port}", "--data-dir", str(data),
             *extra],
            stdout=self.log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(RUST_LOG=rust_log))
        STARTED.append(self.proc)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: the server exited at start; see {self.log_path}:\n"
                                 + self.log_path.read_text()[-2000:])
            try:
                urllib.request.urlopen(self.url + "/v1/hardware", timeout=1)
            except urllib.error.HTTPError:
                break  # 401 without a token: it is serving
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the server did not answer within 30 s")
                time.sleep(0.1)
                continue
            break

    def status(self):
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # kB
        return out

    def stop(self):
        stop(self.proc)
        self.log_file.close()


def http(method, url, token, body=None, ctype="application/json"):
    data = None
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = ctype
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def expect(status, body, want, what):
    if status not in want:
        raise SystemExit(f"bench: {what} answered {status}: {body[:500]!r}")
    return json.loads(body) if body else None


def admin(binary, data, *argv):
    out = run([str(binary), "admin", *argv, "--data-dir", str(data)], timeout=60,
              capture_output=True, text=True, env=child_env()).stdout
    return out.strip().splitlines()[-1]


def push(binary, url, token, model, project):
    """`modelyard push`, or the same upload with urllib if this build's CLI has no push."""
    p = subprocess.run([str(binary), "push", model, str(project)], capture_output=True, text=True,
                       timeout=remaining(300),
                       env=child_env(MODELYARD_URL=url, MODELYARD_TOKEN=token))
    if p.returncode == 0:
        vid = p.stdout.strip().splitlines()[-1]
        if re.fullmatch(r"[0-9a-f]{64}", vid):
            return vid, "modelyard push"
        raise SystemExit(f"bench: modelyard push printed no version id:\n{p.stdout}\n{p.stderr}")
    if "unrecognized subcommand" not in p.stderr:
        raise SystemExit(f"bench: modelyard push failed:\n{p.stdout}\n{p.stderr}")
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(Path(project).iterdir()):
            tar.add(f, arcname=f.name)
    status, body = http("POST", f"{url}/v1/models/{model}/versions", token, buf.getvalue(),
                        ctype="application/gzip")
    return expect(status, body, (200, 201), "the push")["id"], "POST .../versions (curl-style)"


def setup(binary, data, work, args):
    tokens = {u: admin(binary, data, "user", "create", u) for u in USERS}
    admin(binary, data, "org", "create", OWNER, *sum((["--member", u] for u in USERS), []))
    # No runner during setup: the three real predictions are recorded and canceled, not run
    # (running them would start a Cog server that outlives the setup).
    help_text = run([str(binary), "serve", "--help"], timeout=30, capture_output=True,
                    text=True, env=child_env()).stdout
    srv = Server(binary, data, work, "setup",
                 extra=["--no-runner"] if "--no-runner" in help_text else [])
    try:
        tok = tokens["bench"]
        names = [MEASURED] + [f"other-{i:02}" for i in range(args.other_models)]
        for n in names:
            st, body = http("POST", srv.url + "/v1/models", tok,
                            {"owner": OWNER, "name": n, "visibility": "private", "hardware": "cpu"})
            expect(st, body, (201,), f"POST /v1/models ({n})")
        vid, how = push(binary, srv.url, tok, f"{OWNER}/{MEASURED}", ROOT / "fixtures/cog/echo")
        log(f"pushed {OWNER}/{MEASURED}:{vid[:12]} with {how}")
        # One real prediction per user: the rows the fill copies are the server's own.
        for u in USERS:
            st, body = http("POST", srv.url + "/v1/predictions", tokens[u],
                            {"version": vid, "input": {"prompt": "world"}})
            pid = expect(st, body, (201,), f"POST /v1/predictions ({u})")["id"]
            st, body = http("POST", f"{srv.url}/v1/predictions/{pid}/cancel", tokens[u], b"")
            expect(st, body, (200,), f"POST /v1/predictions/{pid}/cancel")
    finally:
        srv.stop()
    return tokens, vid, how


# --- filling the database ----------------------------------------------------------------------


def connect(db):
    con = sqlite3.connect(db, isolation_level=None)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA busy_timeout = 10000")
    con.execute("PRAGMA cache_size = -400000")  # 400 MB for the index inserts
    return con


def columns(con, table):
    return [r["name"] for r in con.execute(f"PRAGMA table_info({table})")]


def version_id(model_id, digest):
    # crates/domain/src/ids.rs: sha256("modelyard-version\0" || model_id as i64 BE || digest)
    h = hashlib.sha256(b"modelyard-version\0")
    h.update(model_id.to_bytes(8, "big", signed=True))
    h.update(digest.encode())
    return h.hexdigest()


def object_id():
    # crates/domain/src/ids.rs: 26 characters of lowercase base32 from 17 random bytes.
    return base64.b32encode(os.urandom(17)).decode().lower()[:26]


def add_other_versions(con, measured_vid, per_model, extra_on_measured):
    """Copies of the pushed version's row under new ids: `extra_on_measured` newer versions of the
    measured model and `per_model` on every other model of the owner."""
    cols = [c for c in columns(con, "versions") if c != "seq"]
    src = dict(con.execute("SELECT * FROM versions WHERE id = ?", (measured_vid,)).fetchone())
    models = con.execute(
        "SELECT m.id, m.name FROM models m JOIN accounts a ON a.id = m.owner_id "
        "WHERE a.username = ? ORDER BY m.id", (OWNER,)).fetchall()
    now = int(time.time() * 1e6)
    made = []
    for m in models:
        n = extra_on_measured if m["name"] == MEASURED else per_model
        for i in range(n):
            row = dict(src, id=version_id(m["id"], f"bench-{m['name']}-{i}"), model_id=m["id"],
                       created_at=now + len(made))
            con.execute(f"INSERT INTO versions ({', '.join(cols)}) VALUES "
                        f"({', '.join('?' * len(cols))})", [row[c] for c in cols])
            made.append(row["id"])
    return made


def add_accounts(con, n):
    """`n` more users (copies of ada's row under new names); their ids."""
    cols = [c for c in columns(con, "accounts") if c != "id"]
    src = dict(con.execute("SELECT * FROM accounts WHERE username = 'ada'").fetchone())
    ids = []
    for i in range(n):
        row = dict(src, username=f"user{i:04}", name=f"user{i:04}")
        ids.append(con.execute(f"INSERT INTO accounts ({', '.join(cols)}) VALUES "
                               f"({', '.join('?' * len(cols))}) RETURNING id",
                               [row[c] for c in cols]).fetchone()[0])
    return ids


def add_predictions(con, plan, ts_start):
    """plan: list of (version_id, account_id, count). Rows are copies of the server-written
    prediction, completed as the runner's finish_job would leave them and, being older than the
    API retention (an hour by default), with their data removed as remove_job_data does.
    Counters are upserted as create_job does (one +1 per prediction; here summed per version and
    account)."""
    cols = [c for c in columns(con, "jobs") if c != "seq"]
    tmpl = dict(con.execute(
        "SELECT * FROM jobs WHERE kind = 'prediction' ORDER BY seq LIMIT 1").fetchone())
    model_of = {r["id"]: r["model_id"] for r in con.execute("SELECT id, model_id FROM versions")}
    total = sum(n for _, _, n in plan)
    metrics = json.dumps({"predict_time": 0.012})

    def rows():
        t = ts_start
        # Interleave the plan so sequence numbers mix versions and accounts as real traffic does.
        left = [[v, a, n] for v, a, n in plan]
        while left:
            for item in left:
                v, a, _ = item
                t += 1000
                row = dict(tmpl, id=object_id(), account_id=a, version_id=v, status="succeeded",
                           input="{}", output=None, logs="", error=None, metrics=metrics,
                           created_at=t, started_at=t + 100, completed_at=t + 12_100)
                if "data_removed" in row:
                    row["data_removed"] = 1
                if "claimed" in row:
                    row["claimed"] = 1
                if "deadline" in row:
                    row["deadline"] = None
                item[2] -= 1
                yield [row[c] for c in cols]
            left = [i for i in left if i[2] > 0]

    con.execute("BEGIN IMMEDIATE")
    try:
        con.executemany(f"INSERT INTO jobs ({', '.join(cols)}) VALUES "
                        f"({', '.join('?' * len(cols))})", rows())
        per_model = collections.Counter()
        for v, a, n in plan:
            con.execute(
                "INSERT INTO version_runs (version_id, account_id, count) VALUES (?, ?, ?) "
                "ON CONFLICT (version_id, account_id) DO UPDATE SET count = version_runs.count + ?",
                (v, a, n, n))
            per_model[model_of[v]] += n
        for m, n in per_model.items():
            con.execute("UPDATE models SET run_count = run_count + ? WHERE id = ?", (n, m))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return total


def check_counters(con):
    """version_runs and models.run_count agree with the predictions actually stored."""
    runs = {(r[0], r[1]): r[2] for r in con.execute("SELECT version_id, account_id, count FROM version_runs")}
    real = {(r[0], r[1]): r[2] for r in con.execute(
        "SELECT version_id, account_id, COUNT(*) FROM jobs WHERE kind = 'prediction' GROUP BY 1, 2")}
    if runs != real:
        raise SystemExit("bench: version_runs disagrees with the jobs table")
    bad = con.execute(
        "SELECT m.id, m.run_count, (SELECT COUNT(*) FROM jobs j JOIN versions v ON v.id = j.version_id "
        "WHERE v.model_id = m.id AND j.kind = 'prediction') AS n FROM models m "
        "WHERE m.run_count <> n").fetchall()
    if bad:
        raise SystemExit(f"bench: models.run_count disagrees with the jobs table: {[tuple(b) for b in bad]}")
    return sum(real.values())


# --- measuring ---------------------------------------------------------------------------------


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads, so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(args, url, method, token, duration, pid=None):
    """One wrk run; with the server's pid, also the server's CPU time per request, which the
    machine's other load disturbs far less than throughput or latency."""
    cpu0 = cpu_seconds(pid) if pid else None
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{duration}s", "--timeout", "5s",
           "-s", str(BENCH / "wrk_report.lua"), url]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=dict(os.environ, BENCH_METHOD=method, BENCH_TOKEN=token))
    STARTED.append(p)
    try:
        out, _ = p.communicate(timeout=remaining(duration + 60))
    finally:
        stop(p)
    m = re.search(r"^RESULT (.*)$", out, re.M)
    if p.returncode != 0 or not m:
        raise SystemExit(f"bench: wrk failed:\n{out}")
    r = {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    if pid:
        r["cpu_us"] = (cpu_seconds(pid) - cpu0) * 1e6 / max(r["requests"], 1)
    errors = sum(v for k, v in r.items() if k.startswith("err_"))
    if errors:
        raise SystemExit(f"bench: wrk saw errors (non-2xx or socket) on {method} {url}:\n{out}")
    return r


def measure(binary, dirs, work, args, endpoints, token):
    """Both phases' servers run side by side ({"A": data dir, "B": data dir}), each idle while the
    other is measured; each round measures every endpoint on A then on B (B then A in odd rounds),
    so both phases see the same machine load over time."""
    extra = ["--no-runner"] if args.no_runner else []
    servers = {}
    samples = {n: {ep["key"]: [] for ep in endpoints} for n in dirs}
    load = [os.getloadavg()[0]]
    try:
        for n, d in dirs.items():
            servers[n] = Server(binary, d, work, n, extra=extra)
        for n, srv in servers.items():
            for ep in endpoints:
                st, body = http(ep["method"], srv.url + ep["path"], token)
                expect(st, body, (200,), f"{ep['method']} {ep['path']} ({n})")
                ep.setdefault("bodies", {})[n] = body.decode()
        names = list(dirs)
        for rnd in range(args.rounds):
            for n in (names if rnd % 2 == 0 else names[::-1]):
                srv = servers[n]
                for ep in endpoints:
                    if args.warmup:
                        wrk(args, srv.url + ep["path"], ep["method"], token, args.warmup)
                    r = wrk(args, srv.url + ep["path"], ep["method"], token, args.duration,
                            pid=srv.proc.pid)
                    samples[n][ep["key"]].append(r)
                    log(f"{n} round {rnd + 1}/{args.rounds} {ep['label']}: {r['rps']:.0f} req/s, "
                        f"p50 {r['p50_us'] / 1000:.2f} ms, p99 {r['p99_us'] / 1000:.2f} ms, "
                        f"server CPU {r['cpu_us']:.0f} µs/request")
        mem = {n: srv.status() for n, srv in servers.items()}
        load.append(os.getloadavg()[0])
    finally:
        for srv in servers.values():
            srv.stop()
    return samples, mem, load


def blocking(body):
    """What a preview names, without the counts (which grow from phase A to B in the
    "measured" case)."""
    d = json.loads(body)
    return d["deletable"], [(b["kind"], b.get("account")) for b in d["blockers"]]


def med(samples, key):
    return statistics.median(s[key] for s in samples)


# --- the statements the server runs, and their plans ----------------------------------------


STMT_RE = re.compile(r'(request\{[^}]*\}: )?sqlx::query: summary="((?:[^"\\]|\\.)*)" db\.statement="((?:[^"\\]|\\.)*)"'
                     r' rows_affected=(\d+) rows_returned=(\d+) elapsed=\S+ elapsed_secs=(\S+)')


def unescape(s):
    return json.loads('"' + s + '"')


def parse_statements(text, in_request):
    """(sql, rows_affected, rows_returned, seconds) for each statement in sqlx's log run inside
    an HTTP request's span (in_request) or outside any (the server's own work)."""
    out = []
    for m in STMT_RE.finditer(text):
        if bool(m.group(1)) != in_request:
            continue
        sql = unescape(m.group(3)).strip() or unescape(m.group(2)).strip()
        sql = " ".join(sql.split())
        if not sql.upper().startswith("PRAGMA"):  # a new pool connection's setup
            out.append((sql, int(m.group(4)), int(m.group(5)), float(m.group(6))))
    return out


def traced_statements(binary, data, work, endpoints, token, extra):
    """The statements of one request per endpoint, and those the server ran on its own (the
    runner's queue poll and housekeeping, which runs once at start and then every 30 s)."""
    # tower_http's request span tells a request's statements from the server's own.
    srv = Server(binary, data, work, "trace", rust_log="tower_http=debug,sqlx::query=debug",
                 extra=extra)
    per = {}
    try:
        background = []
        if not extra:  # with a runner: wait for its first housekeeping sweep
            deadline = time.monotonic() + 120
            while time.monotonic() < min(deadline, DEADLINE[0]):
                background = parse_statements(srv.log_path.read_text(), False)
                if any(s.startswith("UPDATE jobs SET input = '{}'") for s, *_ in background):
                    break
                time.sleep(0.5)
        for ep in endpoints:
            http(ep["method"], srv.url + ep["path"], token)  # warm: connection setup PRAGMAs
            time.sleep(0.3)
            start = srv.log_path.stat().st_size
            st, body = http(ep["method"], srv.url + ep["path"], token)
            expect(st, body, (200,), f"{ep['method']} {ep['path']}")
            time.sleep(0.3)
            with open(srv.log_path) as f:
                f.seek(start)
                text = f.read()
            per[ep["key"]] = [s for s, *_ in parse_statements(text, True)]
    finally:
        srv.stop()
    seen = {}
    for sql, affected, returned, secs in background:
        if not re.match(r"(SELECT|UPDATE|DELETE|INSERT) ", sql) or "schema_migrations" in sql:
            continue  # the migration check at start
        prev = seen.get(sql)
        if prev is None or secs > prev[2]:
            seen[sql] = (affected, returned, secs)
    return per, [(sql, *v) for sql, v in seen.items()]


def find_libsqlite(binary):
    """The libsqlite3.a that cargo built for this binary (bundled SQLite), newest first."""
    build_dir = Path(binary).parent / "build"
    libs = sorted(glob.glob(str(build_dir / "libsqlite3-sys-*/out/libsqlite3.a")),
                  key=os.path.getmtime, reverse=True)
    headers = sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/libsqlite3-sys-*/sqlite3/sqlite3.h")))
    return (libs[0], headers) if libs and headers else (None, headers)


def explain(binary, db, work, stmts):
    """EXPLAIN QUERY PLAN each statement: with the server's own SQLite when it can be linked,
    else with Python's."""
    lib, headers = find_libsqlite(binary)
    plans = None
    engine = None
    if lib and shutil.which("cc"):
        # Pick the header of the same SQLite version as the library.
        exe = work / "eqp"
        for h in ([] if exe.exists() else reversed(headers)):
            p = subprocess.run(["cc", "-O1", "-o", str(exe), str(BENCH / "eqp.c"), "-I",
                                str(Path(h).parent), lib, "-lpthread", "-ldl", "-lm"],
                               capture_output=True, text=True, timeout=remaining(120))
            if p.returncode == 0:
                break
        if exe.exists():
            out = subprocess.run([str(exe), str(db)], input="\0".join(stmts).encode(),
                                 capture_output=True, timeout=remaining(60), check=True).stdout.decode()
            plans, cur = [], None
            for line in out.splitlines():
                if line.startswith("#VERSION "):
                    engine = f"SQLite {line.split()[1]} (the server's bundled libsqlite3-sys build)"
                elif line.startswith("#STMT"):
                    cur = []
                    plans.append(cur)
                elif line.startswith("#ERROR"):
                    cur.append((0, 0, line))
                else:
                    i, parent, detail = line.split("|", 2)
                    cur.append((int(i), int(parent), detail))
    if plans is None:
        engine = f"SQLite {sqlite3.sqlite_version} (Python's sqlite3 module)"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        plans = []
        for s in stmts:
            # $1-style parameters are bound to NULL (Python's sqlite3 names them "1", "2", ...;
            # left unbound it refuses to run): the plan does not depend on their values.
            params = {n: None for n in re.findall(r"\$(\d+)", s)}
            try:
                plans.append([(r[0], r[1], r[3]) for r in con.execute("EXPLAIN QUERY PLAN " + s, params)])
            except sqlite3.Error as e:
                plans.append([(0, 0, f"#ERROR {e}")])
        con.close()
    return engine, plans


def render_plan(rows):
    depth = {0: -1}
    lines = []
    for i, parent, detail in rows:
        d = depth.get(parent, -1) + 1
        depth[i] = d
        lines.append("|  " * d + "|--" + detail)
    return lines


def scans_jobs(rows):
    return [d for _, _, d in rows if re.match(r"SCAN (jobs|j)\b", d)]


# --- report ------------------------------------------------------------------------------------


def fmt_ms(us):
    return f"{us / 1000:.2f} ms"


def machine():
    mem = next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    mem_gib = int(mem.split()[1]) / 1024 / 1024
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()
    return {"nproc": os.cpu_count(), "mem": f"{mem_gib:.1f} GiB", "cpu": cpu,
            "kernel": platform.release(), "wrk": wrk_v[0] if wrk_v else "wrk"}


def git_state():
    def g(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.rstrip("\n")
    head = g("rev-parse", "--short", "HEAD") or os.environ.get("MODELYARD_BENCH_REV", "unknown")
    dirty = [l[3:] for l in g("status", "--porcelain", "--", "crates", "Cargo.lock", "Cargo.toml").splitlines()]
    return head, dirty


def report(ctx):
    a, b = ctx["phases"]
    eps = ctx["endpoints"]
    ref = eps[0]["key"]
    lines = []
    w = lines.append
    w(f"Run {ctx['when']} — {ctx['machine']['nproc']} CPUs ({ctx['machine']['cpu']}), "
      f"{ctx['machine']['mem']} RAM, Linux {ctx['machine']['kernel']}; {ctx['machine']['wrk']}; "
      f"modelyard at {ctx['git'][0]}" + (f" plus uncommitted changes in {', '.join(ctx['git'][1])}"
                                          if ctx["git"][1] else "") + ".")
    w("")
    w(f"wrk -t{ctx['args'].threads} -c{ctx['args'].connections} -d{ctx['args'].duration}s on loopback, "
      f"each run after a {ctx['args'].warmup} s warm-up; medians of {ctx['args'].rounds} rounds. Phase A's "
      f"and phase B's servers run side by side, each idle while the other is measured, and each round "
      f"runs every endpoint on A then on B (B then A in odd rounds). Servers and wrk share the "
      f"machine's CPUs; the 1-minute load average was {ctx['load'][0]:.1f} at the start and "
      f"{ctx['load'][1]:.1f} at the end. "
      f"Server: `modelyard serve` with its defaults" + (" and `--no-runner`" if ctx["args"].no_runner
      else " (runner on: queue poll every second, housekeeping every 30 s)") + "; versions pushed with "
      f"{ctx['push']}; the {b['total'] - a['total']:,} extra predictions were written in {ctx['fill_s']:.0f} s.")
    w("")
    w("| endpoint | predictions | req/s | p50 | p99 | server CPU / req | req/s vs A | p50 vs A | p99 vs A | CPU / req vs A | req/s vs ref | p50 vs ref | CPU / req vs ref |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for ph in (a, b):
        for ep in eps:
            s = ph["samples"][ep["key"]]
            sa = a["samples"][ep["key"]]
            sr = ph["samples"][ref]
            rps, p50, p99, cpu = med(s, "rps"), med(s, "p50_us"), med(s, "p99_us"), med(s, "cpu_us")
            w(f"| {ep['label']} | {ph['total']:,} | {rps:,.0f} | {fmt_ms(p50)} | {fmt_ms(p99)} | {cpu:.0f} µs | "
              f"{rps / med(sa, 'rps'):.2f} | {p50 / med(sa, 'p50_us'):.2f} | {p99 / med(sa, 'p99_us'):.2f} | "
              f"{cpu / med(sa, 'cpu_us'):.2f} | "
              f"{rps / med(sr, 'rps'):.2f} | {p50 / med(sr, 'p50_us'):.2f} | {cpu / med(sr, 'cpu_us'):.2f} |")
    w("")
    w(f"\"vs A\": the same endpoint in phase A ({a['total']:,} predictions); \"vs ref\": GET /v1/hardware "
      f"in the same phase (the token lookup and nothing else). \"Server CPU / req\": the server process's "
      f"user + system CPU time over the run divided by the requests it answered.")
    w("")
    w("Each round (req/s; p50 / p99 in ms; server CPU µs per request):")
    w("")
    for ph in (a, b):
        for ep in eps:
            s = ph["samples"][ep["key"]]
            w(f"- {ep['label']} at {ph['total']:,}: " + ", ".join(
                f"{r['rps']:,.0f} ({r['p50_us'] / 1000:.2f} / {r['p99_us'] / 1000:.2f}; {r['cpu_us']:.0f})"
                for r in s))
    w("")
    pv = eps[2]["key"]
    norm = (med(b["samples"][pv], "rps") / med(b["samples"][ref], "rps")) / \
           (med(a["samples"][pv], "rps") / med(a["samples"][ref], "rps"))
    cpu = med(b["samples"][pv], "cpu_us") / med(a["samples"][pv], "cpu_us")
    w(f"Preview at {b['total']:,} vs {a['total']:,} predictions: {cpu:.2f}× the server CPU per request, "
      f"and {norm:.2f}× the throughput relative to the reference in its phase "
      f"({'flat' if cpu <= 1.2 else 'NOT flat'} by CPU per request: at most 1.2× counts as flat).")
    w("")
    w("| phase | predictions (total / on the measured version) | server peak RSS (VmHWM) | database file |")
    w("| --- | --- | ---: | ---: |")
    for ph in (a, b):
        w(f"| {ph['name']} | {ph['total']:,} / {ph['on_measured']:,} | {ph['mem']['VmHWM'] / 1024:.1f} MiB "
          f"| {ph['db_mib']:.0f} MiB |")
    w("")
    answer = json.loads(eps[2]["bodies"][b["name"]])
    n = len(answer["blockers"])
    if ctx["args"].case == "measured":
        w(f"The preview's answer in phase B (caller bench; {n} accounts have run the version; "
          f"the first 3 of its {n} blockers shown):")
        answer["blockers"] = answer["blockers"][:3] + ([f"... {n - 3} more"] if n > 3 else [])
    else:
        w(f"The preview's answer in phase B (caller bench; ada and ben have run the version):")
    w("")
    w("```json")
    w(json.dumps(answer, indent=2))
    w("```")
    w("")
    w(f"Statements the server ran for one request (sqlx's log), and their plans at {b['total']:,} "
      f"predictions, by {ctx['engine']}:")
    for ep in eps:
        w("")
        w(f"#### {ep['method']} {ep['path_shown']} — {len(ctx['stmts'][ep['key']])} statements")
        w("")
        w("```")
        for sql, plan in zip(ctx["stmts"][ep["key"]], ctx["plans"][ep["key"]]):
            w(sql)
            if plan:
                w("  QUERY PLAN")
                for l in render_plan(plan):
                    w("  " + l)
            w("")
        w("```")
    if ctx["background"]:
        w("")
        w(f"#### Statements the server ran on its own (the runner's queue poll every second; "
          f"housekeeping at start and every 30 s), longest run seen at {b['total']:,} predictions")
        w("")
        w("```")
        for (sql, affected, returned, secs), plan in ctx["background"]:
            w(f"{sql}")
            w(f"  -- {secs * 1000:.1f} ms, {returned} rows returned, {affected} affected")
            if plan:
                w("  QUERY PLAN")
                for l in render_plan(plan):
                    w("  " + l)
            w("")
        w("```")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--predictions", type=int, default=1_000_000, help="total in phase B")
    ap.add_argument("--on-measured", type=int, default=10_000, help="on the measured version")
    ap.add_argument("--other-models", type=int, default=20)
    ap.add_argument("--versions-per-model", type=int, default=5)
    ap.add_argument("--extra-versions-on-measured", type=int, default=4)
    ap.add_argument("--case", choices=["spread", "measured"], default="spread",
                    help="spread: phase B's extra predictions go to other versions (3 accounts); "
                         "measured: all predictions are on the measured version, from --accounts "
                         "accounts")
    ap.add_argument("--accounts", type=int, default=1000, help="with --case measured")
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=2, help="seconds of wrk before each run")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--no-runner", action="store_true",
                    help="measure with `serve --no-runner` (no queue poll, no housekeeping)")
    ap.add_argument("--bin", help="a built modelyard binary (skips cargo build)")
    ap.add_argument("--out", default=str(BENCH / "out" / "deletion_preview.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    ap.add_argument("--max-minutes", type=float, default=45)
    args = ap.parse_args()
    DEADLINE[0] = time.monotonic() + args.max_minutes * 60
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    work = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    data = work / "data"
    db = data / "modelyard.db"
    t0 = time.monotonic()
    try:
        ensure_wrk()
        binary = build(args)
        tokens, vid, push_how = setup(binary, data, work, args)
        con = connect(db)
        acct = {r["username"]: r["id"] for r in con.execute("SELECT id, username FROM accounts")}
        others = add_other_versions(con, vid, args.versions_per_model, args.extra_versions_on_measured)
        if args.case == "measured":
            # Phase A: the measured version's predictions spread over --accounts more users.
            crowd = add_accounts(con, args.accounts)
            plan = [(vid, a, args.on_measured // len(crowd)) for a in crowd]
        else:
            # Phase A: the measured version's predictions, less the three real ones already there.
            split = dict(MEASURED_SPLIT)
            split["bench"] = args.on_measured - sum(split.values())
            plan = [(vid, acct[u], n - 1) for u, n in split.items()]
        t = time.monotonic()
        add_predictions(con, plan, int((time.time() - 30 * 86400) * 1e6))
        total_a = check_counters(con)
        on_measured_a = con.execute("SELECT COUNT(*) FROM jobs WHERE version_id = ?", (vid,)).fetchone()[0]
        log(f"phase A fill: {total_a:,} predictions, {len(others)} other versions "
            f"({time.monotonic() - t:.1f} s)")
        con.close()

        key = f"/v1/models/{OWNER}/{MEASURED}"
        endpoints = [
            {"key": "ref", "label": "GET /v1/hardware (reference)", "method": "GET",
             "path": "/v1/hardware"},
            {"key": "model", "label": "GET /v1/models/{owner}/{name}", "method": "GET", "path": key},
            {"key": "preview", "label": "DELETE …/versions/{id}?dry_run=true", "method": "DELETE",
             "path": f"{key}/versions/{vid}?dry_run=true"},
        ]
        for ep in endpoints:
            ep["path_shown"] = ep["path"].replace(vid, "{id}")
        token = tokens["bench"]
        # Phase A's database is kept as it is now, for its own server beside phase B's.
        data_a = work / "data-A"
        shutil.copytree(data, data_a)
        db_a_mib = (data_a / db.name).stat().st_size / 2**20

        # Phase B: the rest over the other versions, every account; or, in the "measured" case,
        # on the measured version itself, from the same crowd of accounts.
        con = connect(db)
        rest = args.predictions - total_a
        users = [acct[u] for u in USERS]
        slots = ([(vid, a) for a in crowd] if args.case == "measured"
                 else [(v, a) for v in others for a in users])
        plan = [(v, a, rest // len(slots) + (1 if i < rest % len(slots) else 0))
                for i, (v, a) in enumerate(slots)]
        t = time.monotonic()
        add_predictions(con, plan, int((time.time() - 29 * 86400) * 1e6))
        fill_s = time.monotonic() - t
        total_b = check_counters(con)
        on_measured = con.execute("SELECT COUNT(*) FROM jobs WHERE version_id = ?", (vid,)).fetchone()[0]
        log(f"phase B fill: {rest:,} more ({fill_s:.1f} s), {total_b:,} in all")
        con.close()
        samples, mem, load = measure(binary, {"A": data_a, "B": data}, work, args, endpoints, token)
        if blocking(endpoints[2]["bodies"]["A"]) != blocking(endpoints[2]["bodies"]["B"]):
            raise SystemExit("bench: the preview named different blockers in phase B")
        phases = [
            {"name": "A", "total": total_a, "on_measured": on_measured_a,
             "samples": samples["A"], "mem": mem["A"], "db_mib": db_a_mib},
            {"name": "B", "total": total_b, "on_measured": on_measured,
             "samples": samples["B"], "mem": mem["B"], "db_mib": db.stat().st_size / 2**20},
        ]

        stmts, background = traced_statements(binary, data, work, endpoints, token,
                                              ["--no-runner"] if args.no_runner else [])
        plans = {}
        engine = None
        for ep in endpoints:
            engine, plans[ep["key"]] = explain(binary, db, work, stmts[ep["key"]])
        _, bg_plans = explain(binary, db, work, [b[0] for b in background])
        scanned = [(s, scans_jobs(p)) for s, p in zip(stmts["preview"], plans["preview"]) if scans_jobs(p)]

        ctx = {"when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": machine(), "git": git_state(), "args": args, "phases": phases,
               "endpoints": endpoints, "stmts": stmts, "plans": plans, "engine": engine,
               "push": push_how, "fill_s": fill_s, "load": load, "background": list(zip(background, bg_plans))}
        text = report(ctx)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(text)
        log(f"done in {time.monotonic() - t0:.0f} s; report in {out}")
        if scanned:
            raise SystemExit(f"bench: the preview scans the jobs table: {scanned}")
    finally:
        stop_all()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
