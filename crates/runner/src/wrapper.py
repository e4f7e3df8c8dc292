"""Runs a program that cannot outlive modelyard, and the bridges between it and the platform.

    wrapper.py [--farm SRC DST] [--forward LISTEN=CONNECT]... [--hand LISTEN=CONNECT]...
               -- PROGRAM ARGS...

modelyard holds this process's standard input open. However modelyard ends, even by SIGKILL,
the kernel closes that pipe; this process then stops its whole process group and exits. In the
sandbox it is the main process of a PID namespace, so its exit also ends everything the program
started, even what left the process group.

Each --forward listens on LISTEN and connects every accepted connection to CONNECT; each side is
tcp:HOST:PORT or unix:PATH. In the sandbox, which has no network, they carry the platform's
requests to the Cog server (unix -> its loopback port), the Cog server's webhooks and uploads
back (loopback -> unix), and, when egress is on, the proxy for the internet.

Each --hand listens on the Unix socket LISTEN and, for every accepted connection, connects to
CONNECT and hands that connected socket over (SCM_RIGHTS) instead of copying bytes: modelyard then
talks to the Cog server directly. Without a connection to give (the server not listening yet),
the accepted one is closed with nothing.
"""
import os
import signal
import socket
import subprocess
import sys
import threading


def parse_end(spec):
    kind, _, rest = spec.partition(":")
    if kind == "unix":
        return socket.AF_UNIX, rest
    host, _, port = rest.rpartition(":")
    return socket.AF_INET, (host, int(port))


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass


def listening(spec):
    family, address = parse_end(spec)
    server = socket.socket(family, socket.SOCK_STREAM)
    if family == socket.AF_INET:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    else:
        try:
            os.unlink(address)
        except FileNotFoundError:
            pass
    server.bind(address)
    server.listen(128)
    return server


def serve_forward(listen, connect):
    server = listening(listen)
    to_family, to_address = parse_end(connect)

    def handle(client):
        upstream = socket.socket(to_family, socket.SOCK_STREAM)
        try:
            upstream.connect(to_address)
        except OSError:
            client.close()
            upstream.close()
            return
        for s in (client, upstream):
            if s.family == socket.AF_INET:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()
        client.close()
        upstream.close()

    def accept():
        while True:
            client, _ = server.accept()
            threading.Thread(target=handle, args=(client,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def serve_hand(listen, connect):
    server = listening(listen)
    to_family, to_address = parse_end(connect)

    def accept():
        while True:
            client, _ = server.accept()
            upstream = socket.socket(to_family, socket.SOCK_STREAM)
            try:
                upstream.connect(to_address)
                if to_family == socket.AF_INET:
                    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                socket.send_fds(client, [b"c"], [upstream.fileno()])
            except OSError:
                pass
            finally:
                upstream.close()
                client.close()

    threading.Thread(target=accept, daemon=True).start()


def farm(src, dst):
    """Fills dst with links to src's files: the project reads as before and new files can be
    written beside them, but its own files stay read-only (src is a read-only mount)."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(target, exist_ok=True)
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            link = os.readlink(path) if os.path.islink(path) else path
            os.symlink(link, os.path.join(target, name))


args = sys.argv[1:]
while args and args[0] in ("--forward", "--hand", "--farm"):
    if args[0] == "--farm":
        farm(args[1], args[2])
        args = args[3:]
        continue
    listen, _, connect = args[1].partition("=")
    (serve_hand if args[0] == "--hand" else serve_forward)(listen, connect)
    args = args[2:]
if args and args[0] == "--":
    args = args[1:]

child = subprocess.Popen(args)
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
