#!/usr/bin/env bash
# The whole test run: formatting, lints, the Rust tests, then the official Python and JavaScript
# clients against a real `modelyard serve` (the Python suite on SQLite and again on PostgreSQL).
#
# scripts/setup.sh first brings up what it needs: PostgreSQL at 127.0.0.1:5432 (user postgres,
# trust auth); python3 with cog==0.23.*, replicate==1.0.7, pytest, httpx and moto[server]; the npm
# packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PG_ADMIN_URL="${MODELYARD_TEST_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "no import circles in the server crate"
python3 scripts/module-cycles.py crates/server/src

# Model servers are found by their Cog command line; any still running after a suite is a leak.
left_behind() {
  local found
  # Servers stop within seconds of their owner's end: give them that long.
  for _ in $(seq 1 30); do
    found=$(grep -las 'cog[.]server[.]http' /proc/[0-9]*/cmdline || true)
    [ -z "$found" ] && return 0
    sleep 0.5
  done
  if [ -n "$found" ]; then
    echo "model server processes outlived the $1:" >&2
    for f in $found; do tr '\0' ' ' <"$f" | cut -c1-200 >&2; echo >&2; done
    return 1
  fi
}

# Test databases are dropped by the tests that make them; any still there after a suite leaked.
test_databases() {
  psql "$PG_ADMIN_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'modelyard\_test\_%'"
}

step "cargo test"
left_behind "start" || { echo "(already running before the tests: not ours)" >&2; }
before_dbs=$(test_databases)
cargo test --workspace
left_behind "Rust tests"
leaked=$(comm -13 <(echo "$before_dbs" | sort) <(test_databases | sort))
if [ -n "$leaked" ]; then
  echo "test databases outlived the Rust tests: $leaked" >&2
  exit 1
fi

step "cargo build -p modelyard"
cargo build -p modelyard
export MODELYARD_BIN="$CARGO_TARGET_DIR/debug/modelyard"

# pytest exits 5 when it collected no test: here that is a failure, like any other non-zero.
run_pytest() {
  local rc=0
  python3 -m pytest tests/python -p no:cacheprovider -q -rfE --durations=5 "$@" || rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: tests/python must have some" >&2
  fi
  return "$rc"
}

step "Python client suite (SQLite)"
start=$SECONDS
run_pytest
echo "Python suite on SQLite took $((SECONDS - start)) s"

step "Python client suite (PostgreSQL)"
db="modelyard_pytest_$$_$(date +%s)"
drop_db() { psql "$PG_ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true; }
trap drop_db EXIT
psql "$PG_ADMIN_URL" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
start=$SECONDS
MODELYARD_TEST_DATABASE_URL="${PG_ADMIN_URL%/*}/$db" run_pytest
echo "Python suite on PostgreSQL took $((SECONDS - start)) s"
left_behind "Python suites"

step "Cluster suite (PostgreSQL, S3, two API nodes and two workers)"
start=$SECONDS
python3 -m pytest tests/cluster -p no:cacheprovider -q -rfE --durations=5
echo "Cluster suite took $((SECONDS - start)) s"
left_behind "cluster suite"

step "JavaScript client suite"
if [ ! -d tests/js/node_modules ]; then
  (cd tests/js && npm ci --no-audit --no-fund)
fi
start=$SECONDS
(cd tests/js && node --test)
echo "JavaScript suite took $((SECONDS - start)) s"

step "Web UI in headless Chromium"
start=$SECONDS
(cd tests/web && node --test)
echo "Web UI suite took $((SECONDS - start)) s"
