#!/usr/bin/env bash
# Runs the server on embedded SQLite (data in ./modelyard-data) at http://127.0.0.1:5080,
# after installing Cog, which reads pushed predictors and runs them. Extra arguments go to
# `modelyard serve` (see `cargo run -p modelyard -- serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import cog' 2>/dev/null \
  || python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'cog==0.23.*'
exec cargo run --release -p modelyard -- serve "$@"
