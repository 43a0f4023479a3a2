#!/usr/bin/env bash
# Build the sdist and the wheel as a release would, install the wheel into a fresh virtual
# environment (no repository on the path, no extras), and use it as a new user would:
# import it, run the command line, run the quickstart. Then install the sdist the same way.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m build --sdist --wheel --outdir "$work/dist" . >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  exit 1
}
for kind in whl tar.gz; do
  "$PYTHON" -m venv "$work/venv-$kind"
  "$work/venv-$kind/bin/python" -m pip install --quiet "$work"/dist/*."$kind"
  # Run from an empty folder so that nothing of the checkout can be imported by accident.
  (
    cd "$work"
    "$work/venv-$kind/bin/python" -c "import aiogovernor, sys; assert 'httpx' not in sys.modules; print('import', aiogovernor.__version__)"
    "$work/venv-$kind/bin/python" -m aiogovernor --help >/dev/null
    "$work/venv-$kind/bin/aiogovernor" demo --duration-s 2 --capacity 4 >/dev/null
    "$work/venv-$kind/bin/python" "$OLDPWD/examples/quickstart.py" >/dev/null
  )
  echo "check_wheel: the $kind installs into a fresh venv and runs"
done
