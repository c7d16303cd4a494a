#!/bin/bash
# Whole-command wall time of the fast recipe in float32 and in bfloat16, interleaved on the
# otherwise idle CPU, seed 1, each command as typed (torch's default threads). From the repository root.
# It needs the code of commit 6f95240 (git checkout 6f95240), where --precision existed.
mkdir -p runs/timing-precision
out=runs/timing-precision/times.txt
: > $out
for i in 1 2; do
  for precision in float32 bfloat16; do
    start=$(date +%s.%N)
    python train.py --recipe fast --precision $precision --out-dir runs/timing-precision/$precision$i \
      > runs/timing-precision/$precision$i.log 2>&1
    end=$(date +%s.%N)
    acc=$(python -c "import json; print(json.load(open('runs/timing-precision/$precision$i/history.json'))['final_test_acc'])")
    echo "python train.py --recipe fast --precision $precision (run $i): $(python -c "print(f'{$end - $start:.1f}')") s, test accuracy $acc%" >> $out
  done
done
sha256sum runs/timing-precision/*/weights.pt >> $out
