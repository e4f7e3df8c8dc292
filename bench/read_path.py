#!/usr/bin/env python3
"""The read path against its limit: authenticated GETs of a model, a version and a prediction,
on SQLite and on PostgreSQL, against a bare axum server answering the same model JSON as static
bytes (crates/server/examples/limit.rs), all in one run.

One command, from the repository root (it builds `modelyard` and the limit example in release
mode into $CARGO_TARGET_DIR or ./target first, unless MODELYARD_BIN names a binary):

    python3 bench/read_path.py [--rounds 3] [--seconds 5] [--no-postgres]

For each backend it starts `modelyard serve` on a fresh data directory (and, for PostgreSQL, a
fresh database at 127.0.0.1:5432 as user postgres, dropped at the end), creates bench/echo,
pushes fixtures/cog/echo and runs one real prediction (`Prefer: wait`), so every GET reads what
the server itself wrote. Then, in each round, wrk (2 threads, 16 connections, a 1 s warm-up
first) measures the limit server and then every endpoint on every backend; each ratio is to the
limit measured in the same round, and the report gives medians over the rounds with each
server's CPU time per request and peak memory (VmHWM). Everything started is stopped, and the
temporary directory removed, on exit.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ROOT, TARGET, PgDatabase, Served, ensure_built, proc_mem, wrk  # noqa: E402

LIMIT = os.path.join(TARGET, "release", "examples", "limit")
FIXTURE = os.path.join(ROOT, "fixtures", "cog", "echo")


def get(url, token, method="GET", body=None, headers=()):
    req = urllib.request.Request(url, method=method, data=body,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json", **dict(headers)})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.status, r.read()


def prepare(srv):
    """bench/echo with one pushed version and one finished prediction; the three GET paths."""
    env = dict(os.environ, MODELYARD_URL=srv.url, MODELYARD_TOKEN=srv.token)
    subprocess.run([BIN, "models", "create", "bench/echo"], env=env, check=True, capture_output=True)
    vid = subprocess.run([BIN, "push", "bench/echo", FIXTURE], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    body = json.dumps({"version": vid, "input": {"prompt": "world"}}).encode()
    _, out = get(srv.url + "/v1/predictions", srv.token, "POST", body, {"Prefer": "wait=60"})
    pred = json.loads(out)
    if pred["status"] != "succeeded":
        raise SystemExit(f"the prediction did not succeed: {pred}")
    return {"model": "/v1/models/bench/echo",
            "version": f"/v1/models/bench/echo/versions/{vid}",
            "prediction": f"/v1/predictions/{pred['id']}"}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="per wrk run, after a 1 s warm-up")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-postgres", action="store_true")
    a = ap.parse_args()
    ensure_built(["-p", "modelyard-server", "--example", "limit"])
    for path, how in ((BIN, "cargo build --release -p modelyard"),
                      (LIMIT, "cargo build --release -p modelyard-server --example limit")):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: {how}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing (Debian: apt-get install wrk)")
    tmp = tempfile.mkdtemp(prefix="modelyard-read-")
    servers, procs, pg = {}, [], None
    try:
        backends = [("SQLite", None)]
        if not a.no_postgres:
            pg = PgDatabase()
            backends.append(("PostgreSQL", pg.url))
        paths = {}
        for name, url in backends:
            srv = Served(os.path.join(tmp, name), ["--python", sys.executable], database_url=url)
            servers[name] = srv
            paths[name] = prepare(srv)
        _, model_json = get(servers["SQLite"].url + paths["SQLite"]["model"], servers["SQLite"].token)
        body_file = os.path.join(tmp, "model.json")
        with open(body_file, "wb") as f:
            f.write(model_json)
        limit = subprocess.Popen([LIMIT, "127.0.0.1:0", body_file], stdout=subprocess.PIPE, text=True)
        procs.append(limit)
        limit_url = f"http://{limit.stdout.readline().strip()}/v1/models/bench/echo"

        run = lambda url, token=None, pid=None: (
            wrk(url, token, 1, a.threads, a.connections),
            wrk(url, token, a.seconds, a.threads, a.connections, pid=pid))[1]
        samples = {}
        load = [os.getloadavg()[0]]
        for rnd in range(a.rounds):
            ref = run(limit_url, pid=limit.pid)
            samples.setdefault(("limit", "static JSON"), []).append((ref, 1.0))
            print(f"round {rnd + 1}: limit {ref['rps']:.0f} req/s", file=sys.stderr)
            for name, srv in servers.items():
                for what, path in paths[name].items():
                    r = run(srv.url + path, srv.token, srv.proc.pid)
                    samples.setdefault((name, what), []).append((r, r["rps"] / ref["rps"]))
                    print(f"round {rnd + 1}: {name} {what} {r['rps']:.0f} req/s "
                          f"({r['rps'] / ref['rps']:.2f} of the limit)", file=sys.stderr)
        load.append(os.getloadavg()[0])

        med = lambda xs, k: statistics.median(x[0][k] for x in xs)
        print(f"\n## Read path: authenticated GETs vs. the static-JSON limit ({a.rounds} rounds, "
              f"wrk -t{a.threads} -c{a.connections} -d{a.seconds}s; {os.cpu_count()} CPUs, "
              f"load {load[0]:.1f} at the start, {load[1]:.1f} at the end)\n")
        print(f"The limit answers the model's JSON ({len(model_json)} bytes) from memory.\n")
        print("| backend | GET | req/s | ratio to the limit (median; each round) | p50 ms | p99 ms "
              "| server CPU µs / req |")
        print("| --- | --- | ---: | --- | ---: | ---: | ---: |")
        for (name, what), xs in samples.items():
            ratios = [x[1] for x in xs]
            print(f"| {name} | {what} | {med(xs, 'rps'):,.0f} | **{statistics.median(ratios):.2f}** "
                  f"({', '.join(f'{r:.2f}' for r in ratios)}) | {med(xs, 'p50_us') / 1000:.2f} | "
                  f"{med(xs, 'p99_us') / 1000:.2f} | {med(xs, 'cpu_us'):.0f} |")
        print()
        for name, srv in servers.items():
            m = proc_mem(srv.proc.pid)
            print(f"- {name} server memory: VmRSS {m['VmRSS']:.1f} MiB, peak (VmHWM) {m['VmHWM']:.1f} MiB")
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)
        for srv in servers.values():
            srv.stop()
        if pg:
            pg.drop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
