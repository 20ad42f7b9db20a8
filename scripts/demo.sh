#!/usr/bin/env bash
# The demo: train on 0.5 % of the Sen1Floods11 chip's labelled pixels and classify the whole chip through
# qgis_process (S2 in the HSI slot, S1 VV/VH as SAR, the default network: BACKBONE_SOURCE=auto), then assess the map on
# every other labelled pixel. Outputs go to demo_output/ (or $DEMO_OUT), with copies of the inputs in inputs/.
set -euo pipefail
REPO="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
DATA="${DEMO_DATA:-$REPO/../shared/data/sen1floods11_spain_7370579}"
OUT="${DEMO_OUT:-$REPO/demo_output}"
QP="$REPO/scripts/qgis_process"
for f in Spain_7370579_S2Hand.tif Spain_7370579_S1Hand.tif Spain_7370579_LabelHand.tif; do
    [ -f "$DATA/$f" ] || { echo "demo: $DATA/$f not found (set DEMO_DATA to the Sen1Floods11 chip folder)" >&2; exit 1; }
done
mkdir -p "$OUT/inputs"
start=$(date +%s)
# QGIS writes <raster>.aux.xml statistics beside every raster it loads as a layer: work on copies (4 MB), so the
# bundled data is never written to
for f in Spain_7370579_S2Hand.tif Spain_7370579_S1Hand.tif Spain_7370579_LabelHand.tif; do
    cp "$DATA/$f" "$OUT/inputs/$f"
    chmod u+w "$OUT/inputs/$f"
done
IN="$OUT/inputs"
echo "== 1/3 training points: stratified 0.5 % of the labelled pixels, seed 0"
"$REPO/.venv/bin/python" "$REPO/scripts/make_demo_points.py" --labels "$IN/Spain_7370579_LabelHand.tif" \
    --fraction 0.005 --seed 0 --ignore -1 --names "0=not water #d8c48a,1=water #1f78b4" --out "$OUT/train_points.gpkg"
echo "== 2/3 difflc:trainandclassify"
"$QP" run difflc:trainandclassify -- \
    HSI="$IN/Spain_7370579_S2Hand.tif" SAR="$IN/Spain_7370579_S1Hand.tif" \
    LABELS="$OUT/train_points.gpkg" CLASS_FIELD=class_id SEED=0 DEVICE=0 \
    OUTPUT="$OUT/landcover.tif" CONFIDENCE="$OUT/confidence.tif" MODEL="$OUT/model.difflc" \
    REPORT="$OUT/training_report.html"
echo "== 3/3 difflc:accuracy on every other labelled pixel"
"$QP" run difflc:accuracy -- \
    CLASSIFIED="$OUT/landcover.tif" REFERENCE="$IN/Spain_7370579_LabelHand.tif" IGNORE=-1 \
    EXCLUDE="$OUT/train_points.gpkg" HTML="$OUT/accuracy.html" JSON="$OUT/accuracy.json"
"$REPO/.venv/bin/python" - "$OUT/accuracy.json" "$start" <<'PY'
import json, sys, time
m = json.load(open(sys.argv[1]))
print(f"\ndemo result on {m['n_samples']} evaluation pixels: OA {100*m['overall_accuracy']:.2f} %  "
      f"kappa {m['kappa']:.4f}  mIoU {100*m['mean_iou']:.2f} %   ({time.time()-int(sys.argv[2]):.0f} s in all)")
PY
echo "outputs: $OUT (landcover.tif + .qml, confidence.tif, model.difflc, training_report.html, accuracy.html)"
