"""Runs a Cog server as a child that cannot outlive modelyard.

modelyard starts this process as the leader of a new process group and holds its stdin open.
However modelyard ends, even by SIGKILL, the kernel closes that pipe; this process then stops
its whole process group (the server and its worker) and exits. If even this process is stuck,
modelyard kills the group itself.
"""
import os
import signal
import subprocess
import sys
import threading

child = subprocess.Popen(sys.argv[1:])


stopping = threading.Event()


def stop(*_):
    # Our own SIGTERM to the group comes back to us: once stopping, it is ignored. (Handlers
    # can only be changed from the main thread, and this may run in the watcher thread.)
    if stopping.is_set():
        return
    stopping.set()
    try:
        os.killpg(os.getpgrp(), signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        child.wait(timeout=4)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def watch_parent():
    sys.stdin.buffer.read()
    stop()


threading.Thread(target=watch_parent, daemon=True).start()
signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
code = child.wait()
os._exit(code if code >= 0 else 1)
