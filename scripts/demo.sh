#!/usr/bin/env bash
# Demo placeholder: checks the environment through qgis_process until the pipeline algorithms exist.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
"$REPO/scripts/qgis_process" run difflc:checkenvironment
echo
echo "demo: the land-cover pipeline (difflc:trainandclassify) is not there yet; only the environment check ran."
