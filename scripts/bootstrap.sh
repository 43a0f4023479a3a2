#!/usr/bin/env bash
# Set up everything aiogovernor's demo, tests and benchmarks need on a fresh machine:
# a virtual environment in .venv with the package (all extras) and the test tools,
# the system services the integration tests run against (redis-server), and the real
# servers benchmarks/real_upstreams.py measures against (nginx; gunicorn comes with --group bench).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade "pip>=25.1"
.venv/bin/python -m pip install --quiet -e ".[all]" --group test --group lint --group docs --group bench

# System packages, installed with apt-get when missing (one `apt-get update` for all of them);
# each one that cannot be installed is reported, and what needs it is skipped, never failed.
apt_updated=
apt_install() {  # apt_install PACKAGE COMMAND WHAT-IS-SKIPPED
  if command -v "$2" >/dev/null 2>&1 || [ -x "/usr/sbin/$2" ]; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    if [ -z "$apt_updated" ]; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt_updated=1
    fi
    # --no-install-recommends: the server binary only. The tests and benchmarks start their
    # own servers on free loopback ports and stop them; a service the package itself may
    # start (Debian does, where an init system runs) is not used.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null 2>&1 \
      || echo "bootstrap: could not install $1; $3 will be skipped" >&2
  else
    echo "bootstrap: $1 is missing and cannot be installed here; $3 will be skipped" >&2
  fi
}
# redis-server for the Redis store and fleet tests (a real server, started by the fixtures).
apt_install redis-server redis-server "Redis tests"
# nginx for the limit_conn / limit_req rows of benchmarks/real_upstreams.py (never run by CI).
apt_install nginx nginx "the nginx rows of benchmarks/real_upstreams.py"
