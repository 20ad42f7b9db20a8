#!/bin/bash
cd /work/main
M="difflc,difflc_best,difflc_bandsfirst"
C="difflc_gaussian,difflc_noself,difflc_weighted"
O=benchmarks/results/issue20
S=$1
if [ "$S" = chip ]; then
  .venv/bin/python benchmarks/accuracy.py --scenes chip --methods rf,svm,rf_smooth,rf_ms,rf_ms_smooth,difflc,difflc_v02 --out $O/chip.json > $O/chip.md 2> $O/chip.log
else
  .venv/bin/python benchmarks/accuracy.py --scenes $S --methods $M --out $O/${S}_new.json > $O/${S}_new.md 2> $O/${S}_new.log
  .venv/bin/python benchmarks/accuracy.py --scenes $S --seeds 5 --methods $C --out $O/${S}_controls.json > $O/${S}_controls.md 2> $O/${S}_controls.log
fi
echo done $S >> $O/status
