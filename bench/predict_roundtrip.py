#!/usr/bin/env python3
"""What the platform adds to a prediction: modelyard vs. a direct call to the same kind of Cog server.

One run, same machine, same trivial predictor (fixtures/cog/echo):
  1. direct:    POST /predictions to a Cog server we start ourselves (sync), sequentially;
  2. modelyard: POST /v1/predictions with `Prefer: wait` (recorded, queued, run on a warm Cog
                server, recorded again), sequentially; the latencies compared are then taken
                with the two paths alternating request by request, so both meet the same noise;
  3. throughput with 4 concurrent clients: modelyard with 2 warm servers vs. 2 direct Cog
     servers (clients retry Cog's 409 "busy");
  4. modelyard's memory (VmRSS, VmHWM) under that load, its own CPU time per prediction, and
     CPU time per prediction by process (this script's clients, modelyard, the sandbox's bridge,
     Cog's server and its worker) in each phase: where a prediction's CPU goes;
  5. 16 concurrent clients on the same 2 servers: throughput, p50/p99/max and errors.

Usage: python3 bench/predict_roundtrip.py [--requests 300] [--seconds 10] [--serve-arg=OPTION]
Builds the release binary first (a no-op when current; MODELYARD_BIN skips it); needs python3
with cog installed.
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ROOT, cpu_delta, cpu_seconds, ensure_built, proc_mem, tree_cpu  # noqa: E402

FIXTURE = os.path.join(ROOT, "fixtures", "cog", "echo")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, path, ok, limit=60):
    end = time.time() + limit
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            if ok(r.status, body):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"127.0.0.1:{port}{path} never became ready")


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def start_cog(port):
    env = {"PATH": os.environ["PATH"], "HOME": FIXTURE, "PORT": str(port),
           "COG_PREDICT_TYPE_STUB": "predict.py:Predictor"}
    p = subprocess.Popen([sys.executable, "-m", "cog.server.http", "--host", "127.0.0.1"],
                         cwd=FIXTURE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(port, "/health-check", lambda s, b: s == 200 and json.loads(b).get("status") == "READY")
    return p


class Client:
    """One keep-alive connection, as a real client would hold."""

    def __init__(self, port, headers):
        self.port, self.headers = port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def post(self, path, body):
        data = json.dumps(body)
        while True:
            try:
                self.conn.request("POST", path, body=data, headers=self.headers)
                r = self.conn.getresponse()
                out = r.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                continue
            if r.status == 409:  # Cog's one slot is busy: try again, as the runner does
                time.sleep(0.0005)
                continue
            return r.status, json.loads(out)


def sequential(client, path, body_fn, n, check):
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        status, body = client.post(path, body_fn(i))
        times.append((time.perf_counter() - t0) * 1000)
        check(status, body)
    return times


def interleaved(a, b, n):
    """`n` requests of each of two (client, path, body_fn, check), alternating (a b, b a, ...),
    so that both see the same moments of a shared, noisy machine: each one's times (ms)."""
    times = ([], [])
    for i in range(n):
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for k in order:
            client, path, body_fn, check = (a, b)[k]
            t0 = time.perf_counter()
            status, body = client.post(path, body_fn(i))
            times[k].append((time.perf_counter() - t0) * 1000)
            check(status, body)
    return times


def own_cpu():
    """This process's CPU seconds (the clients' threads)."""
    t = os.times()
    return t.user + t.system


def concurrent(make_client, path, body_fn, seconds, check, clients=4, times=None, errors=None,
               counted=None):
    """Predictions per second over `clients` threads; each request's time (ms) is appended to
    `times` and each failed check to `errors` when given, and the number done to `counted`."""
    counts = [0] * clients
    stop = time.time() + seconds

    def worker(k):
        c = make_client(k)
        while time.time() < stop:
            t0 = time.perf_counter()
            status, body = c.post(path, body_fn(k))
            if times is not None:
                times.append((time.perf_counter() - t0) * 1000)
            try:
                check(status, body)
            except AssertionError as e:
                if errors is None:
                    raise
                errors.append(str(e)[:200])
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if counted is not None:
        counted.append(sum(counts))
    return sum(counts) / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="one more option for `modelyard serve` (repeatable), e.g. "
                         "--serve-arg=--unsafe-no-sandbox to measure without the sandbox")
    a = ap.parse_args()
    ensure_built()
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p modelyard")
    procs = []
    tmp = tempfile.mkdtemp(prefix="modelyard-bench-")
    try:
        def ok_direct(status, body):
            assert status == 200 and body["status"] == "succeeded", body

        def ok_platform(status, body):
            assert status == 201 and body["status"] == "succeeded", body

        # 1. Direct calls to a Cog server.
        ports = [free_port(), free_port()]
        for p in ports:
            procs.append(start_cog(p))
        direct = Client(ports[0], {"Content-Type": "application/json"})
        inp = lambda i: {"input": {"prompt": f"p{i}"}}
        sequential(direct, "/predictions", inp, 30, ok_direct)  # warm-up
        def cog_cpu():
            out = {"client (this script)": own_cpu()}
            for p in procs:
                tree_cpu(p.pid, "Cog server", out)
            return out
        c0 = cog_cpu()
        sequential(direct, "/predictions", inp, a.requests, ok_direct)
        cpu_rows = {"direct, sequential": cpu_delta(c0, cog_cpu(), a.requests)}

        # 2. The same through modelyard.
        data = os.path.join(tmp, "data")
        token = subprocess.run([BIN, "admin", "user", "create", "bench", "--data-dir", data],
                               check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        port = free_port()
        env = dict(os.environ, RUST_LOG="warn")
        server = subprocess.Popen([BIN, "serve", "--addr", f"127.0.0.1:{port}", "--data-dir", data,
                                   "--max-servers", "2", "--python", sys.executable, *a.serve_arg],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(server)
        wait_http(port, "/openapi.json", lambda s, b: s == 200)
        cli_env = dict(os.environ, MODELYARD_URL=f"http://127.0.0.1:{port}", MODELYARD_TOKEN=token)
        subprocess.run([BIN, "models", "create", "bench/echo"], env=cli_env, check=True, capture_output=True)
        version = subprocess.run([BIN, "push", "bench/echo", FIXTURE], env=cli_env, check=True,
                                 capture_output=True, text=True).stdout.strip().splitlines()[-1]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                   "Prefer": "wait=60"}
        body = lambda i: {"version": version, "input": {"prompt": f"p{i}"}}
        platform = Client(port, headers)
        sequential(platform, "/v1/predictions", body, 30, ok_platform)  # warm-up: starts a server
        cpu0 = cpu_seconds(server.pid)
        my_cpu = lambda: dict(tree_cpu(server.pid), **{"client (this script)": own_cpu()})
        c0 = my_cpu()
        sequential(platform, "/v1/predictions", body, a.requests, ok_platform)
        cpu_per = (cpu_seconds(server.pid) - cpu0) * 1e6 / a.requests
        cpu_rows["modelyard, sequential"] = cpu_delta(c0, my_cpu(), a.requests)
        # The latencies compared: the two paths alternately, request by request.
        d_times, p_times = interleaved((direct, "/predictions", inp, ok_direct),
                                       (platform, "/v1/predictions", body, ok_platform), a.requests)

        # 3. Throughput, 4 clients: modelyard (2 warm servers) vs. 2 direct Cog servers.
        n = []
        c0 = cog_cpu()
        d_tput = concurrent(lambda k: Client(ports[k % 2], {"Content-Type": "application/json"}),
                            "/predictions", inp, a.seconds, ok_direct, counted=n)
        cpu_rows["direct, 4 clients"] = cpu_delta(c0, cog_cpu(), n[-1])
        mem_before = proc_mem(server.pid)
        c0 = my_cpu()
        p_tput = concurrent(lambda k: Client(port, headers), "/v1/predictions", body, a.seconds, ok_platform,
                            counted=n)
        cpu_rows["modelyard, 4 clients"] = cpu_delta(c0, my_cpu(), n[-1])
        mem = proc_mem(server.pid)
        # 16 clients on the same 2 servers: every request must succeed, and none take long.
        t16, e16 = [], []
        p16 = concurrent(lambda k: Client(port, headers), "/v1/predictions", body, a.seconds,
                         ok_platform, clients=16, times=t16, errors=e16)
        mem16 = proc_mem(server.pid)

        d50, d99 = pct(d_times, 50), pct(d_times, 99)
        p50, p99 = pct(p_times, 50), pct(p_times, 99)
        rows = [
            ("direct Cog `POST /predictions`", d50, d99, statistics.mean(d_times)),
            ("modelyard `POST /v1/predictions` + `Prefer: wait`", p50, p99, statistics.mean(p_times)),
        ]
        print(f"\n## Prediction round trip ({a.requests} sequential requests each, after warm-up, "
              f"the two paths alternating)\n")
        print("| path | p50 ms | p99 ms | mean ms |")
        print("| --- | ---: | ---: | ---: |")
        for name, x50, x99, mean in rows:
            print(f"| {name} | {x50:.2f} | {x99:.2f} | {mean:.2f} |")
        print(f"\nAdded by modelyard at p50: **{p50 - d50:.2f} ms** ({p50 / d50:.1f}x the direct call); "
              f"at p99: {p99 - d99:.2f} ms.\n")
        print(f"## Throughput, 4 concurrent clients, {a.seconds:.0f} s each\n")
        print("| path | predictions/s | ratio |")
        print("| --- | ---: | ---: |")
        print(f"| 2 direct Cog servers | {d_tput:.0f} | 1.00 |")
        print(f"| modelyard, `--max-servers 2` | {p_tput:.0f} | {p_tput / d_tput:.2f} |")
        print(f"\nmodelyard's memory: VmRSS {mem_before['VmRSS']:.1f} MiB before the load, "
              f"{mem['VmRSS']:.1f} MiB after; peak (VmHWM) {mem['VmHWM']:.1f} MiB.")
        print(f"\nmodelyard's own CPU time per sequential prediction: {cpu_per:.0f} µs "
              f"(the Cog server's is not counted).")
        roles = ["client (this script)", "modelyard", "sandbox bridge (wrapper.py)", "bubblewrap",
                 "Cog server", "Cog worker"]
        roles += sorted({r for row in cpu_rows.values() for r in row if r not in roles})
        roles = [r for r in roles if any(abs(row.get(r, 0)) >= 0.5 for row in cpu_rows.values())]
        print("\n## CPU time per prediction, by process (µs)\n")
        print("| phase | " + " | ".join(roles) + " | total |")
        print("| --- | " + " | ".join("---:" for _ in roles) + " | ---: |")
        for name, row in cpu_rows.items():
            print(f"| {name} | " + " | ".join(f"{row.get(r, 0):.0f}" for r in roles)
                  + f" | {sum(row.get(r, 0) for r in roles):.0f} |")
        print(f"\n## 16 concurrent clients, 2 warm servers, {a.seconds:.0f} s\n")
        print(f"{p16:.0f} predictions/s; p50 {pct(t16, 50):.2f} ms, p99 {pct(t16, 99):.2f} ms, "
              f"max {max(t16):.2f} ms; {len(e16)} errors of {len(t16)} requests"
              + (f" (first: {e16[0]})" if e16 else "") + f"; peak memory (VmHWM) {mem16['VmHWM']:.1f} MiB.")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
