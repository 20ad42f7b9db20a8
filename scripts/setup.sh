#!/usr/bin/env bash
# One-command set-up: Debian's QGIS/GDAL (apt), then .venv (Debian python3 + system site packages, so
# qgis and osgeo are visible) with the pinned pip requirements. Idempotent: a second run only verifies.
set -euo pipefail

REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
cd "$REPO"
SYSTEM_PYTHON=/usr/bin/python3
VENV="$REPO/.venv"
STAMP="$VENV/.difflc-setup-stamp"
APT_PACKAGES=(qgis python3-qgis qgis-providers gdal-bin python3-gdal python3-venv xvfb chromium)
export DEBIAN_FRONTEND=noninteractive PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1

say() { printf '[setup] %s\n' "$*"; }

# 1. system packages ------------------------------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt_line="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    if [[ "$(id -u)" == 0 ]]; then
      say "installing system packages: ${missing[*]}"
      apt-get update -q
      apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
      echo "[setup] missing system packages: ${missing[*]}" >&2
      echo "[setup] run as root, then run 'make setup' again:" >&2
      echo "    sudo sh -c '$apt_line'" >&2
      exit 1
    fi
  else
    say "system packages present (${APT_PACKAGES[*]})"
  fi
elif ! QT_QPA_PLATFORM=offscreen "$SYSTEM_PYTHON" -c 'import qgis.core, osgeo.gdal' >/dev/null 2>&1; then
  echo "[setup] not a Debian system and $SYSTEM_PYTHON cannot import qgis.core/osgeo: install QGIS >= 3.22" \
       "with its Python bindings and GDAL, then run 'make setup' again." >&2
  exit 1
fi

# 2. virtual environment ---------------------------------------------------------------------------
verify() {
  QT_QPA_PLATFORM=offscreen "$VENV/bin/python" -c \
    'import torch, sklearn, safetensors, numpy, osgeo.gdal_array, qgis.core, pytest, guided_diffusion.unet, dask, distributed' \
    >/dev/null 2>&1
}
if [[ ! -x "$VENV/bin/python" ]] || ! QT_QPA_PLATFORM=offscreen "$VENV/bin/python" -c 'import qgis.core' >/dev/null 2>&1; then
  # a venv made from another python (pyenv) cannot see Debian's qgis: rebuild it
  [[ -e "$VENV" ]] && say "rebuilding $VENV (it cannot import qgis.core)" && rm -rf "$VENV"
  say "creating $VENV from $SYSTEM_PYTHON --system-site-packages"
  "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
  rm -f "$STAMP"
fi

# 3. pinned requirements, keyed on the requirement files and the interpreter ------------------------
key="$(cat requirements/*.txt <("$VENV/bin/python" -VV) | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$key" ]] && verify; then
  say "up to date (.venv matches requirements/*.txt)"
  exit 0
fi
say "installing requirements/dev.txt (constrained by requirements/constraints.txt)"
pip_flags=(-q)
[[ -n "${CI:-}" ]] && pip_flags+=(--progress-bar off)
"$VENV/bin/python" -m pip install "${pip_flags[@]}" -r requirements/dev.txt -c requirements/constraints.txt
say "installing requirements/reference.txt (test-only oracle, without its dependencies)"
"$VENV/bin/python" -m pip install "${pip_flags[@]}" --no-deps -r requirements/reference.txt
if ! verify; then
  echo "[setup] .venv cannot import torch, sklearn, safetensors, osgeo.gdal_array, qgis.core, dask and distributed together:" >&2
  QT_QPA_PLATFORM=offscreen "$VENV/bin/python" -c \
    'import torch, sklearn, safetensors, numpy, osgeo.gdal_array, qgis.core, pytest, dask, distributed' >&2 || true
  exit 1
fi
echo "$key" > "$STAMP"
say "done: $("$VENV/bin/python" -c 'import numpy, torch, sklearn; print("numpy", numpy.__version__, "torch", torch.__version__, "scikit-learn", sklearn.__version__)')"
