#!/usr/bin/env bash
# Creates ./.venv and installs requirements.txt into it when missing or when
# requirements.txt changed since the last install. Safe to run repeatedly.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KIT_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"

installed() {  # kit importable from anywhere, and from this checkout (pip install -e)
  (cd / && "$venv/bin/python" -c "import kit, sys; sys.exit(kit.__file__ != '$root/kit/__init__.py')" 2>/dev/null)
}
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  installed && exit 0
  echo "[setup] installing kit itself into $venv (editable)" >&2
  "$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
  exit 0
fi
echo "[setup] installing requirements into $venv (first run: several minutes, ~6 GB)" >&2
start=$(date +%s)
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --upgrade --quiet pip
"$venv/bin/python" -m pip install --progress-bar off -r "$root/requirements.txt"
# kit itself, editable: importable wherever a kernel starts (Jupyter starts it in notebooks/)
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e "$root"
# timm imports torchvision; a torch/torchvision mismatch only shows up on import.
"$venv/bin/python" -c "import torch, torchvision, timm; print('[setup] torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)" >&2
echo "$want" > "$stamp"
echo "[setup] done in $(( $(date +%s) - start )) s" >&2
