#!/usr/bin/env bash
# The test command: sets up ./.venv when needed, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k rle`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export MPLBACKEND=Agg
set +e
"$root/.venv/bin/python" -m pytest "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
fi
exit $rc
