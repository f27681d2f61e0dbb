#!/usr/bin/env bash
# The main job on the embedded default: sets up ./.venv when needed, makes the synthetic demo
# dataset when missing, runs notebooks 01 → 04 (03_train's cpu_demo preset: uda warm-started by source_only) into outputs/demo/.
# Extra arguments go to `python -m kit.bench.demo` (e.g. `--overwrite`, `--out outputs/demo2`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
cd "$root"
export MPLBACKEND=Agg
exec "$root/.venv/bin/python" -m kit.bench.demo "$@"
