#!/usr/bin/env python3
"""What a prediction costs modelyard, counted instead of timed: instructions and system calls.

The latency benchmark (`predict_roundtrip.py`) is at the mercy of a shared machine; these two
counts are not. For each binary given (`--bin`, repeatable; default the release build), it runs
`modelyard serve` on a fresh SQLite data directory with `fixtures/cog/echo` pushed and warm,
then `--small` and `--large` sequential `Prefer: wait` predictions, each count in a server of its
own, and reports the difference divided by the difference in predictions, so start-up and
warm-up cancel out:
  - user-space instructions of the server process, from `valgrind --tool=callgrind` (the Cog
    servers it starts are not traced);
  - system calls of the server's threads, by name, from `strace -f` (the processes it starts
    are left out).

Usage: python3 bench/predict_counts.py [--bin PATH ...] [--small 100] [--large 400]
Needs valgrind and strace (installed with apt-get when missing) and python3 with cog.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import BIN, ensure_built  # noqa: E402
from predict_roundtrip import FIXTURE, Client, free_port, sequential, wait_http  # noqa: E402


def served_predictions(binary, n, tool):
    """Runs `n` predictions on a fresh server started under `tool` (a command prefix that
    writes its report to the file `{out}`); returns that report's text."""
    tmp = tempfile.mkdtemp(prefix="modelyard-counts-")
    out = os.path.join(tmp, "report")
    server = None
    try:
        data = os.path.join(tmp, "data")
        token = subprocess.run([binary, "admin", "user", "create", "bench", "--data-dir", data],
                               check=True, capture_output=True, text=True).stdout.split()[-1]
        port = free_port()
        prefix = [a.replace("{out}", out) for a in tool]
        server = subprocess.Popen(prefix + [binary, "serve", "--addr", f"127.0.0.1:{port}",
                                            "--data-dir", data, "--max-servers", "1",
                                            "--python", sys.executable],
                                  env=dict(os.environ, RUST_LOG="warn"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(port, "/openapi.json", lambda s, b: s == 200, limit=300)
        env = dict(os.environ, MODELYARD_URL=f"http://127.0.0.1:{port}", MODELYARD_TOKEN=token)
        subprocess.run([binary, "models", "create", "bench/echo"], env=env, check=True,
                       capture_output=True)
        version = subprocess.run([binary, "push", "bench/echo", FIXTURE], env=env, check=True,
                                 capture_output=True, text=True).stdout.split()[-1]
        client = Client(port, {"Content-Type": "application/json",
                               "Authorization": f"Bearer {token}", "Prefer": "wait=60"})

        def ok(status, body):
            assert status == 201 and body["status"] == "succeeded", body

        body = lambda i: {"version": version, "input": {"prompt": f"p{i}"}}  # noqa: E731
        sequential(client, "/v1/predictions", body, 20, ok)  # the Cog server is warm
        sequential(client, "/v1/predictions", body, n, ok)
        # Under strace the server is strace's child: it is the one to stop.
        with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
            children = [int(p) for p in f.read().split()]
        for pid in children or [server.pid]:
            os.kill(pid, signal.SIGTERM)
        server.wait(timeout=120)
        server = None
        with open(out) as f:
            return f.read()
    finally:
        if server is not None:
            server.kill()
            server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


CALLGRIND = ["valgrind", "--tool=callgrind", "--callgrind-out-file={out}"]
STRACE = ["strace", "-f", "-qq", "-o", "{out}"]


def instructions(report):
    return int(re.search(r"^summary: (\d+)", report, re.M).group(1))


def syscalls(report):
    """The system calls of the server's own threads, by name: `strace -f` also follows the
    processes it starts (the sandbox, Cog), whose calls are left out. The server is the first
    process of the log and what it starts that never runs `execve`."""
    lines = []
    children, execs, root = {}, set(), None
    for line in report.splitlines():
        m = re.match(r"(\d+) +(?:<\.\.\. )?(\w+)", line)
        if not m:
            continue
        pid, name = int(m.group(1)), m.group(2)
        if name in ("clone", "clone3", "fork", "vfork"):
            child = re.search(r"= (\d+)$", line)
            if child:
                children.setdefault(pid, []).append(int(child.group(1)))
        if root is None:
            root = pid
        elif name == "execve":
            execs.add(pid)
        if "resumed>" not in line:
            lines.append((pid, name))
    server, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in server and pid not in execs:
            server.add(pid)
            todo.extend(children.get(pid, []))
    calls = {}
    for pid, name in lines:
        if pid in server:
            calls[name] = calls.get(name, 0) + 1
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", help="a modelyard binary (repeatable)")
    ap.add_argument("--small", type=int, default=100)
    ap.add_argument("--large", type=int, default=400)
    a = ap.parse_args()
    if not a.bin:
        ensure_built()
    bins = a.bin or [BIN]
    for tool in ("valgrind", "strace"):
        if not shutil.which(tool):
            subprocess.run(["apt-get", "install", "-y", "-qq", tool], check=True,
                           stdout=subprocess.DEVNULL)
    n = a.large - a.small
    rows = []
    for binary in bins:
        i = [instructions(served_predictions(binary, k, CALLGRIND)) for k in (a.small, a.large)]
        s = [syscalls(served_predictions(binary, k, STRACE)) for k in (a.small, a.large)]
        per = {c: (s[1].get(c, 0) - s[0].get(c, 0)) / n for c in set(s[0]) | set(s[1])}
        rows.append((binary, (i[1] - i[0]) / n, per))
    names = sorted({c for _, _, per in rows for c, v in per.items() if v >= 0.5},
                   key=lambda c: -max(per.get(c, 0) for _, _, per in rows))
    print(f"\n## Per prediction ({a.large} − {a.small} sequential predictions, one warm server)\n")
    print("| binary | instructions (user) | system calls | " + " | ".join(names) + " |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |")
    for binary, ins, per in rows:
        total = sum(v for v in per.values())
        print(f"| `{binary}` | {ins / 1000:.0f}k | {total:.1f} | "
              + " | ".join(f"{per.get(c, 0):.1f}" for c in names) + " |")


if __name__ == "__main__":
    main()
