#!/usr/bin/env python3
"""Push throughput: `modelyard push` of generated 1 GiB and 4 GiB projects against a plain
`tar -c DIR | gzip -1 > /dev/null` (and `gzip` at its default level) on the same machine, in the
same run, with the peak memory of both sides.

For each size (GiB, `--sizes 1,4`) it writes a project into a temporary directory: the
`fixtures/cog/echo` predictor and one `weights.bin` of random bytes (incompressible, as real
weights nearly are). Each run then times, in turn:
  1. `tar -c DIR | gzip -1 > /dev/null` (the CLI compresses at level 1 too) and
     `tar -c DIR | gzip > /dev/null` (level 6): what packing alone costs on this machine;
  2. `modelyard push` to a `modelyard serve` (release build, SQLite, its own data directory,
     `--max-upload-mb` above the size) over loopback, until the version is stored (the server
     unpacks while it receives, then reads the schema in the sandbox and stores the tree).
Throughput is the project's size in MiB over the wall time. Peak memory: the CLI's and the
pipeline's maximum resident set (`/usr/bin/time -f %M`), and the server's peak above idle
(`/proc/<pid>/status`: `VmHWM` reset with `clear_refs` before each push, minus `VmRSS` before;
where `clear_refs` is refused, the rise of `VmHWM`). Each push goes to a new model, and each
pushed version is deleted right after, so the data directory does not fill the disk.

Usage: python3 bench/push_throughput.py [--sizes 1,4] [--runs 1] [--tmp DIR]
Needs a release build (cargo build --release -p modelyard), bubblewrap and python3 with cog.
Prints a Markdown table; removes everything it made (also on failure or Ctrl-C).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import BIN, ROOT, Served

FIXTURE = os.path.join(ROOT, "fixtures", "cog", "echo")
MIB = 1024 * 1024


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def timed(cmd, **kw):
    """Runs cmd under /usr/bin/time; returns (seconds, max RSS in KiB of it and its children).
    (`wait4` from here would count this Python's own size: the kernel keeps a process's peak
    across `exec`.)"""
    with tempfile.NamedTemporaryFile("r") as rss:
        t = time.perf_counter()
        code = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name] + cmd, **kw).returncode
        took = time.perf_counter() - t
        if code != 0:
            raise SystemExit(f"{cmd} failed with {code}")
        return took, int(rss.read().split()[-1])


def make_project(path, gib):
    shutil.copytree(FIXTURE, path)
    with open(os.path.join(path, "weights.bin"), "wb") as f:
        for _ in range(int(gib * 1024)):
            f.write(os.urandom(MIB))
    return sum(os.path.getsize(os.path.join(d, n))
               for d, _, names in os.walk(path) for n in names)


class Server(Served):
    def __init__(self, tmp, max_mb):
        super().__init__(os.path.join(tmp, "data"), ["--max-upload-mb", str(max_mb)])
        self.models = 0

    def call(self, method, path, body=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"authorization": f"Bearer {self.token}",
                                              "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status

    def push(self, project):
        """Pushes to a new model; returns (seconds, CLI max RSS KiB, server peak above idle KiB)."""
        self.models += 1
        model = f"bench/m{self.models}"
        self.call("POST", "/v1/models", {"owner": "bench", "name": f"m{self.models}",
                                        "visibility": "private", "hardware": "cpu"})
        pid = self.proc.pid
        idle = status_kib(pid, "VmRSS")
        hwm_before = status_kib(pid, "VmHWM")
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
            reset = True
        except OSError:
            reset = False
        out = tempfile.TemporaryFile()
        took, cli_rss = timed([BIN, "push", model, project],
                              env=dict(os.environ, MODELYARD_URL=self.url,
                                       MODELYARD_TOKEN=self.token),
                              stdout=out, stderr=subprocess.DEVNULL)
        hwm = status_kib(pid, "VmHWM")
        server = hwm - idle if reset else hwm - hwm_before
        out.seek(0)
        version = out.read().decode().strip().splitlines()[-1]
        self.call("DELETE", f"/v1/models/{model}/versions/{version}")
        return took, cli_rss, max(server, 0)



def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,4", help="project sizes in GiB, comma-separated")
    ap.add_argument("--runs", type=int, default=1, help="measurements of each per size")
    ap.add_argument("--tmp", default=None, help="where projects and the data directory go")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",") if s.strip()]
    if not os.path.exists(BIN):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p modelyard")
    tmp = tempfile.mkdtemp(prefix="modelyard-push-bench-", dir=args.tmp)
    server = None
    rows = []
    try:
        server = Server(tmp, max_mb=int(max(sizes) + 1) * 1024)
        for gib in sizes:
            project = os.path.join(tmp, f"project-{gib:g}g")
            size = make_project(project, gib)
            mib = size / MIB
            # Reads the project once, so the first measurement does not pay for the page cache.
            timed(["tar", "-cf", "/dev/null", "-C", project, "."])
            for run in range(1, args.runs + 1):
                r = {"gib": gib, "run": run, "mib": mib}
                for key, level in (("gzip1", "-1"), ("gzip6", "-6")):
                    r[key] = timed(["bash", "-c",
                                    f"set -o pipefail; tar -c -C '{project}' . | gzip {level} > /dev/null"])
                r["push"] = server.push(project)
                r["load"] = os.getloadavg()[0]
                rows.append(r)
                p, g1, g6 = r["push"], r["gzip1"], r["gzip6"]
                print(f"{gib:g} GiB run {run}: push {mib / p[0]:.1f} MiB/s ({p[0]:.1f} s), "
                      f"tar|gzip -1 {mib / g1[0]:.1f} MiB/s, tar|gzip {mib / g6[0]:.1f} MiB/s, "
                      f"CLI peak {p[1] / 1024:.1f} MiB, server +{p[2] / 1024:.1f} MiB, "
                      f"load {r['load']:.1f}", file=sys.stderr, flush=True)
            shutil.rmtree(project)
    finally:
        if server:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    print("| size | run | `modelyard push` | `tar \\| gzip -1` | push / gzip -1 | `tar \\| gzip` (-6) "
          "| push / gzip -6 | CLI peak RSS | `tar \\| gzip -1` peak RSS | server peak above idle "
          "| load (1 min) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        mib = r["mib"]
        push, g1, g6 = (mib / r[k][0] for k in ("push", "gzip1", "gzip6"))
        print(f"| {r['gib']:g} GiB | {r['run']} | {push:.1f} MiB/s ({r['push'][0]:.1f} s) "
              f"| {g1:.1f} MiB/s | {push / g1:.2f} | {g6:.1f} MiB/s | {push / g6:.2f} "
              f"| {r['push'][1] / 1024:.1f} MiB | {r['gzip1'][1] / 1024:.1f} MiB "
              f"| {r['push'][2] / 1024:.1f} MiB | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
