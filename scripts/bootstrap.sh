#!/usr/bin/env bash
# Set up everything aiogovernor's demo, tests and benchmarks need on a fresh machine:
# a virtual environment in .venv with the package (all extras) and the test tools,
# and the system services the integration tests run against (redis-server).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
.venv/bin/python -m pip install --quiet -e ".[all]" --group test --group lint --group docs --group bench

# redis-server for the Redis store and fleet tests (a real server, started by the fixtures).
if ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null \
      || echo "bootstrap: could not install redis-server; Redis tests will be skipped" >&2
  else
    echo "bootstrap: redis-server is missing and cannot be installed here; Redis tests will be skipped" >&2
  fi
fi
