#!/bin/bash
cd /work/main
B="rf,svm,rf_smooth,rf_ms,rf_ms_smooth"
M="difflc,difflc_v02,difflc_best,difflc_bandsfirst"
C="difflc_gaussian,difflc_noself,difflc_weighted"
O=benchmarks/results/issue20
if [ "$1" = A ]; then
  .venv/bin/python benchmarks/accuracy.py --scenes enmap --methods $B,$M --out $O/enmap.json > $O/enmap.md 2> $O/enmap.log
  .venv/bin/python benchmarks/accuracy.py --scenes enmap --seeds 5 --methods $C --out $O/enmap_controls.json > $O/enmap_controls.md 2> $O/enmap_controls.log
else
  .venv/bin/python benchmarks/accuracy.py --scenes salinas --methods $B,$M --out $O/salinas.json > $O/salinas.md 2> $O/salinas.log
  .venv/bin/python benchmarks/accuracy.py --scenes chip --methods $B,difflc,difflc_v02 --out $O/chip.json > $O/chip.md 2> $O/chip.log
  .venv/bin/python benchmarks/accuracy.py --scenes salinas --seeds 5 --methods $C --out $O/salinas_controls.json > $O/salinas_controls.md 2> $O/salinas_controls.log
fi
echo done $1 >> $O/status
