"""What the benchmark scripts share: the binary, free ports, percentiles, and a `modelyard
serve` on a fresh data directory with one account, `bench`, and its token."""
import os
import socket
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.environ.get("MODELYARD_BIN", os.path.join(TARGET, "release", "modelyard"))


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
    `.proc`. Stop it with `stop()`."""

    def __init__(self, data, extra=()):
        if not os.path.exists(BIN):
            raise SystemExit(f"{BIN} is missing: cargo build --release -p modelyard")
        self.data = data
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        out = subprocess.run([BIN, "admin", "user", "create", "bench", "--data-dir", data],
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
