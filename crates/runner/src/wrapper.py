"""Runs a Cog server as a child that cannot outlive modelyard.

modelyard holds this process's stdin open. However modelyard ends, even by SIGKILL, the kernel
closes that pipe; this process then stops the server's whole process group and exits.
"""
import os
import signal
import subprocess
import sys
import threading

child = subprocess.Popen(sys.argv[1:], start_new_session=True)


def stop(*_):
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os._exit(0)


def watch_parent():
    sys.stdin.buffer.read()
    stop()


threading.Thread(target=watch_parent, daemon=True).start()
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
code = child.wait()
os._exit(code if code >= 0 else 1)
