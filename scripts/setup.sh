#!/usr/bin/env bash
# Brings up what the tests need on a fresh machine (run as root, as CI and the dev machines do):
# PostgreSQL running, bubblewrap (the model sandbox), Cog and the official Python client, moto
# (an S3-compatible store), the JavaScript packages, Chromium.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! pg_isready -h 127.0.0.1 -q; then
  echo "PostgreSQL is down; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
for _ in $(seq 1 60); do
  pg_isready -h 127.0.0.1 -q && break
  sleep 1
done
pg_isready -h 127.0.0.1

# The sandbox model code runs in: bubblewrap, with setpriv and prlimit (util-linux).
if ! command -v bwrap >/dev/null || ! command -v setpriv >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap util-linux >/dev/null
fi

if ! python3 -c 'import cog, replicate, pytest, httpx' 2>/dev/null \
  || [ "$(python3 -c 'import replicate.__about__ as a; print(a.__version__)' 2>/dev/null)" != "1.0.7" ]; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    'cog==0.23.*' 'replicate==1.0.7' pytest httpx
fi

# A real S3-compatible store for the object-store tests (they start moto's server themselves).
if ! python3 -c 'import moto.server, flask, flask_cors' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'moto[server]'
fi

for dir in tests/js tests/web; do
  if [ -f "$dir/package-lock.json" ] && [ ! -d "$dir/node_modules" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
done

if [ -d tests/web ] && ! command -v chromium >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
