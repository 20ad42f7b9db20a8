#!/usr/bin/env bash
# Link this checkout into a QGIS profile's plugin folder (edits in the checkout are live after a restart).
# Usage: scripts/install.sh [PLUGINS_FOLDER]   default: the default profile of QGIS 3 for this user.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
DIR="${1:-${QGIS_PLUGIN_DIR:-$HOME/.local/share/QGIS/QGIS3/profiles/default/python/plugins}}"
TARGET="$DIR/diffusion_landcover"
mkdir -p "$DIR"
if [[ -e "$TARGET" && ! -L "$TARGET" ]]; then
  echo "install: $TARGET exists and is not a link (an installed ZIP?). Remove it first, or uninstall the" \
       "plugin in the Plugin Manager." >&2
  exit 1
fi
ln -sfn "$REPO" "$TARGET"
echo "linked $TARGET -> $REPO"
echo "now start QGIS, open Plugins > Manage and Install Plugins > Installed, and tick 'Diffusion Land Cover'."
echo "PyTorch must be importable by QGIS's Python: see 'Check environment' in the Processing Toolbox."
