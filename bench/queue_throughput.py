#!/usr/bin/env python3
"""How fast a cluster drains its queue: one API node and 1, 2 and 4 worker nodes on one
PostgreSQL database.

First the reference, in the same run: one `modelyard serve` (API and runner in one process) on a
PostgreSQL database of its own, draining the same predictions. Then, per worker count, it starts
that many workers, warms them up (a few predictions, so every worker
has a model server up), submits N predictions of a trivial predictor (fixtures/cog/echo) at
once, waits for all of them, and reads their records: jobs per second (N over the time from the
first `created_at` to the last `completed_at`) and the queue wait, `started_at - created_at`, at
p50 and p99. The workers are stopped before the next count. It prints a Markdown report.

Modes (--mode):
  cluster     (default) what a real cluster runs: `--role api` and `--role worker` nodes, each
              with its own data directory and 127.0.0.x address, the bytes in an S3-compatible
              store (a moto server started here, `pip install 'moto[server]'`, bucket made with a
              plain `PUT /bucket`; AWS_* variables point every node at it).
  shared-dir  for builds without the cluster roles: `--role all` nodes on the same PostgreSQL
              database sharing one data directory, the API node with `--no-runner`, workers
              started one after another before any job is queued (a starting runner tidies the
              data directory's running-server folders and recovers the queue).

Model code runs sandboxed, as in production (bubblewrap must work here). Each worker runs at
most --servers-per-worker model servers.

Usage: python3 bench/queue_throughput.py [--mode cluster|shared-dir] [--predictions 200]
           [--workers 1,2,4] [--servers-per-worker 1]
Builds the release binary first (a no-op when current; MODELYARD_BIN skips it). Needs
PostgreSQL at 127.0.0.1:5432 with trust auth (MODELYARD_BENCH_PG overrides); makes and drops
its own database, and stops everything it started, also on failure or a signal.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ROOT, PgDatabase, ensure_built, free_port, pct  # noqa: E402

FIXTURE = os.path.join(ROOT, "fixtures", "cog", "echo")
BUCKET = "modelyard-bench"
TERMINAL = {"succeeded", "failed", "canceled"}


def wait_port(host, port, proc, limit=60):
    """True once host:port accepts; False if the process lives on without listening."""
    end = time.time() + limit
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Nodes:
    """Every process this run starts, each with its log; all stopped by `stop_all`."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, name, argv, env):
        log = open(os.path.join(self.tmp, f"{name}.log"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        p.name, p.log = name, log.name
        self.procs.append(p)
        return p

    def fail(self, p, why):
        tail = open(p.log).read()[-3000:]
        raise SystemExit(f"{p.name}: {why}\n--- its log ---\n{tail}")

    def stop(self, procs):
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                # Its whole session: a node's model servers go with it.
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if p in self.procs:
                self.procs.remove(p)

    def stop_all(self):
        self.stop(list(reversed(self.procs)))


class Api:
    def __init__(self, url, token):
        self.url, self.token = url, token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())


def start_moto(nodes):
    try:
        import moto  # noqa: F401
    except ImportError:
        raise SystemExit("cluster mode needs moto's S3 server: pip install 'moto[server]'")
    port = free_port()
    p = nodes.start("moto", [sys.executable, "-m", "moto.server", "-p", str(port)],
                    dict(os.environ))
    if not wait_port("127.0.0.1", port, p, 60):
        nodes.fail(p, "moto did not start (pip install 'moto[server]')")
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"), timeout=30)
    return endpoint


def node_argv(addr, data, db, mode, role, a, blob_store, public):
    argv = [BIN, "serve", "--addr", addr, "--data-dir", data, "--database-url", db,
            "--python", sys.executable, "--max-servers", str(a.servers_per_worker)]
    if mode == "cluster":
        # Every node names the API's address in the URLs it makes (a load balancer's, usually).
        argv += ["--role", role, "--blob-store", blob_store, "--public-url", public]
    elif role == "api":
        argv += ["--role", "all", "--no-runner"]
    else:
        argv += ["--role", "all"]
    return argv


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def submit_and_wait(api, version, n, limit):
    """Submits n predictions at once (from 8 clients, so the queue fills faster than one client
    could fill it) and waits for all; returns their records."""
    def create(i):
        return api.call("POST", "/v1/predictions", {"version": version, "input": {"prompt": f"p{i}"}})["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, range(n)))
    done, end = {}, time.time() + limit
    while len(done) < n:
        if time.time() > end:
            raise SystemExit(f"{n - len(done)} of {n} predictions still unfinished after {limit} s")
        for i in ids:
            if i not in done:
                p = api.call("GET", f"/v1/predictions/{i}")
                if p["status"] in TERMINAL:
                    done[i] = p
        time.sleep(0.25)
    return list(done.values())


def measure(records):
    ok = [p for p in records if p["status"] == "succeeded"]
    first = min(parse_time(p["created_at"]) for p in records)
    last = max(parse_time(p["completed_at"]) for p in records)
    waits = [(parse_time(p["started_at"]) - parse_time(p["created_at"])).total_seconds() * 1000
             for p in ok]
    span = (last - first).total_seconds()
    return {"span": span, "rate": len(records) / span if span > 0 else float("inf"),
            "p50": pct(waits, 50) if waits else float("nan"),
            "p99": pct(waits, 99) if waits else float("nan"),
            "failed": len(records) - len(ok),
            "error": next((p.get("error") for p in records if p["status"] != "succeeded"), None)}


def one_machine(nodes, tmp, env, a):
    """The reference, measured in the same run: one `modelyard serve` (API and runner in one
    process, `--max-servers` as each worker's) on a PostgreSQL database of its own, its bytes on
    local disk, draining the same number of the same predictions."""
    ref_db = PgDatabase()
    data = os.path.join(tmp, "one-machine")
    port = free_port()
    proc = None
    try:
        token = subprocess.run([BIN, "admin", "user", "create", "bench", "--data-dir", data,
                                "--database-url", ref_db.url], check=True, capture_output=True,
                               text=True, env=env).stdout.strip().splitlines()[-1]
        proc = nodes.start("one-machine", [BIN, "serve", "--addr", f"127.0.0.1:{port}",
                                           "--data-dir", data, "--database-url", ref_db.url,
                                           "--python", sys.executable,
                                           "--max-servers", str(a.servers_per_worker)], env)
        if not wait_port("127.0.0.1", port, proc):
            nodes.fail(proc, "the one-machine server did not start")
        url = f"http://127.0.0.1:{port}"
        cli_env = dict(env, MODELYARD_URL=url, MODELYARD_TOKEN=token)
        subprocess.run([BIN, "models", "create", "bench/echo"], env=cli_env, check=True,
                       capture_output=True)
        version = subprocess.run([BIN, "push", "bench/echo", FIXTURE], env=cli_env, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
        api = Api(url, token)
        warm = measure(submit_and_wait(api, version, 4 * a.servers_per_worker, a.timeout))
        if warm["failed"]:
            raise SystemExit(f"warm-up predictions failed: {warm['error']}")
        return measure(submit_and_wait(api, version, a.predictions, a.timeout))
    finally:
        if proc is not None:
            nodes.stop([proc])
        ref_db.drop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["cluster", "shared-dir"], default="cluster")
    ap.add_argument("--predictions", type=int, default=200, help="predictions per worker count")
    ap.add_argument("--workers", default="1,2,4", help="worker counts to measure, in turn")
    ap.add_argument("--servers-per-worker", type=int, default=1, help="each worker's --max-servers")
    ap.add_argument("--timeout", type=int, default=900, help="seconds a round may take")
    a = ap.parse_args()
    counts = [int(w) for w in a.workers.split(",")]
    ensure_built()
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p modelyard")
    # A signal ends the run through `finally`, so nothing it started is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = tempfile.mkdtemp(prefix="modelyard-queue-")
    nodes, db = Nodes(tmp), None
    try:
        db = PgDatabase()
        env = dict(os.environ, RUST_LOG="warn")
        blob_store = f"s3://{BUCKET}/bench"
        if a.mode == "cluster":
            endpoint = start_moto(nodes)
            env.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                       AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
        shared = os.path.join(tmp, "data")
        data_of = (lambda name: os.path.join(tmp, name)) if a.mode == "cluster" else (lambda _: shared)

        token = subprocess.run([BIN, "admin", "user", "create", "bench", "--data-dir", data_of("api"),
                                "--database-url", db.url], check=True, capture_output=True,
                               text=True, env=env).stdout.strip().splitlines()[-1]
        port = free_port()
        public = f"http://127.0.0.1:{port}"
        api_node = nodes.start("api", node_argv(f"127.0.0.1:{port}", data_of("api"), db.url,
                                                a.mode, "api", a, blob_store, public), env)
        if not wait_port("127.0.0.1", port, api_node):
            nodes.fail(api_node, "the API node did not start")
        url = f"http://127.0.0.1:{port}"
        api = Api(url, token)
        cli_env = dict(env, MODELYARD_URL=url, MODELYARD_TOKEN=token)
        subprocess.run([BIN, "models", "create", "bench/echo"], env=cli_env, check=True,
                       capture_output=True)
        version = subprocess.run([BIN, "push", "bench/echo", FIXTURE], env=cli_env, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]

        reference = one_machine(nodes, tmp, env, a)
        print(f"one machine: {reference['rate']:.1f} jobs/s, queue wait p50 "
              f"{reference['p50']:.0f} ms", file=sys.stderr)
        rows = []
        for w in counts:
            workers = []
            for k in range(w):
                # Each worker on its own loopback address, as on its own machine.
                host = f"127.0.0.{k + 2}"
                wport = free_port()
                p = nodes.start(f"worker{k + 1}-of-{w}",
                                node_argv(f"{host}:{wport}", data_of(f"worker{k + 1}"), db.url,
                                          a.mode, "worker", a, blob_store, public), env)
                # A worker serves no clients and may not listen at all: it is up when it has
                # not exited by the time its port would have opened.
                if not wait_port(host, wport, p, 20) and p.poll() is not None:
                    nodes.fail(p, "the worker exited at start")
                workers.append(p)
            warm = measure(submit_and_wait(api, version, 4 * w * a.servers_per_worker, a.timeout))
            if warm["failed"]:
                raise SystemExit(f"warm-up predictions failed: {warm['error']}")
            r = measure(submit_and_wait(api, version, a.predictions, a.timeout))
            for p in workers:
                if p.poll() is not None:
                    nodes.fail(p, "the worker died during the round")
            rows.append((w, r))
            print(f"{w} worker(s): {r['rate']:.1f} jobs/s, queue wait p50 {r['p50']:.0f} ms, "
                  f"p99 {r['p99']:.0f} ms, {r['failed']} failed", file=sys.stderr)
            nodes.stop(workers)

        load = os.getloadavg()[0]
        print(f"\n## Queue throughput ({a.mode} mode, {a.predictions} predictions per row, "
              f"fixtures/cog/echo, {a.servers_per_worker} model server(s) per worker)\n")
        print(f"Machine: {os.cpu_count()} CPUs; load average (1 min) at the end {load:.2f}.\n")
        print("| nodes | jobs/s | vs one machine | first created to last completed (s) "
              "| queue wait p50 (ms) | queue wait p99 (ms) | failed |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        r = reference
        print(f"| one machine (`serve`, PostgreSQL, local disk) | {r['rate']:.1f} | 1.00 "
              f"| {r['span']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['failed']} |")
        for w, r in rows:
            print(f"| API + {w} worker(s) | {r['rate']:.1f} | {r['rate'] / reference['rate']:.2f} "
                  f"| {r['span']:.2f} | {r['p50']:.0f} | {r['p99']:.0f} | {r['failed']} |")
        failed = [r for _, r in rows if r["failed"]]
        if failed:
            print(f"\nFirst failure: {failed[0]['error']}")
    finally:
        nodes.stop_all()
        if db:
            db.drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
