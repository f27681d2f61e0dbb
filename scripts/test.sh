#!/usr/bin/env bash
# The test command: sets up ./.venv when needed, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k rle`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export MPLBACKEND=Agg
# The suite is single-threaded Python for the most part (its user time ≈ its wall time): on a machine
# with 2+ cores it runs in that many pytest-xdist workers (up to 4; KIT_TEST_WORKERS sets another
# number, `-n 0` after the command turns them off), each file on one worker, so that a file's
# module-wide fixtures are built once. Every process of the suite then runs torch on one thread, as
# the kit's CPU default does beside a second busy process.
py="$root/.venv/bin/python"
workers="${KIT_TEST_WORKERS:-$("$py" -c 'import os; print(min(4, len(os.sched_getaffinity(0))))')}"
if [[ "$workers" -gt 1 ]]; then
  export OMP_NUM_THREADS=1
  parallel=(-n "$workers" --dist loadfile)
else
  parallel=()
fi
set +e
"$py" -m pytest "${parallel[@]}" "$@"
rc=$?
set -e
if [[ $rc -eq 5 ]]; then
  echo "[test] pytest collected no tests: that is a failure" >&2
fi
exit $rc
