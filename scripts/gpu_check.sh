#!/usr/bin/env bash
# The GPU check (kit.bench.gpu): on a machine with an NVIDIA GPU, sets up ./.venv when needed, then
# runs every GPU path of the kit once and prints a table; exits non-zero on any failure or NaN.
# Extra arguments go to it (e.g. `bash scripts/gpu_check.sh --steps 20`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export MPLBACKEND=Agg PYTHONUNBUFFERED=1
"$root/.venv/bin/python" -m kit.bench gpu "$@"
