#!/usr/bin/env python3
"""What the sandbox costs: model server cold starts and warm predictions, sandboxed (the default)
against `--unsafe-no-sandbox`, in one run on one machine.

Two `modelyard serve` processes (release build, SQLite), one per mode, each with --max-servers 1.
  1. cold start: the first prediction (Prefer: wait) of a freshly pushed version, which starts a
     new Cog server (and evicts the previous one); versions differ by one file, and the two
     modes take turns, so machine noise falls on both alike;
  2. warm: sequential predictions with Prefer: wait on the warm server: p50 and p99.

Usage: python3 bench/sandbox_overhead.py [--cold 8] [--requests 300]
Needs a release build (cargo build --release -p modelyard), bubblewrap and python3 with cog.
"""
import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, Served, pct

FIXTURE = os.path.join(ROOT, "fixtures", "cog", "echo")


class Server(Served):
    def __init__(self, name, extra, tmp):
        self.name = name
        super().__init__(os.path.join(tmp, name), ["--max-servers", "1", *extra])
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        self.call("POST", "/v1/models", {"owner": "bench", "name": "echo",
                                         "visibility": "private", "hardware": "cpu"})

    def call(self, method, path, body=None, headers=None, raw=None):
        h = {"authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h["content-type"] = "application/json"
        self.conn.request(method, path, body=data, headers=h)
        r = self.conn.getresponse()
        return r.status, json.loads(r.read() or b"null")

    def push(self, project):
        tarball = shutil.make_archive(project, "gztar", project)
        with open(tarball, "rb") as f:
            status, v = self.call("POST", "/v1/models/bench/echo/versions", raw=f.read(),
                                  headers={"content-type": "application/gzip"})
        if status not in (200, 201):
            raise SystemExit(f"{self.name}: push failed: {status} {v}")
        return v["id"]

    def predict(self, version):
        t = time.perf_counter()
        status, p = self.call("POST", "/v1/predictions",
                              {"version": version, "input": {"prompt": "bench"}},
                              {"prefer": "wait=60"})
        took = time.perf_counter() - t
        if status != 201 or p.get("status") != "succeeded":
            raise SystemExit(f"{self.name}: prediction failed: {status} {p}")
        return took * 1000



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=int, default=8)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="modelyard-bench-")
    servers = []
    try:
        servers = [Server("sandboxed", [], tmp),
                   Server("unsafe-no-sandbox", ["--unsafe-no-sandbox"], tmp)]
        cold = {s.name: [] for s in servers}
        last = {}
        for i in range(args.cold):
            project = os.path.join(tmp, f"echo-{i}")
            shutil.copytree(FIXTURE, project)
            with open(os.path.join(project, "variant.txt"), "w") as f:
                f.write(str(i))
            order = servers if i % 2 == 0 else servers[::-1]
            for s in order:
                v = s.push(project)
                cold[s.name].append(s.predict(v))
                last[s.name] = v
        warm = {s.name: [] for s in servers}
        for s in servers:
            for _ in range(20):
                s.predict(last[s.name])
        for _ in range(args.requests):
            for s in servers:
                warm[s.name].append(s.predict(last[s.name]))
        a, b = servers[0].name, servers[1].name
        print(f"cold starts: {args.cold} per mode; warm predictions: {args.requests} per mode\n")
        print(f"| | {a} | {b} | added by the sandbox |")
        print("| --- | ---: | ---: | ---: |")
        for label, data, p in (("cold start p50 (ms)", cold, 50), ("cold start max (ms)", cold, 100),
                               ("warm prediction p50 (ms)", warm, 50),
                               ("warm prediction p99 (ms)", warm, 99)):
            x, y = pct(data[a], p), pct(data[b], p)
            print(f"| {label} | {x:.2f} | {y:.2f} | {x - y:+.2f} |")
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
