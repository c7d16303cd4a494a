#!/bin/bash
# Re-run tiny seeds 2-5 and fast seeds 2-5 from their recorded flags (seed 1 of each was
# checked before: reproduce-sha256.txt) and compare the weights by SHA-256. From the repository root.
out=results/bench/reproduce-seeds-sha256.txt; mkdir -p runs/repro2
for pair in "2 3" "4 5"; do
  for s in $pair; do
    python train.py --model tiny --seed $s --threads 1 --out-dir runs/repro2/tiny$s > runs/repro2/tiny$s.log 2>&1 &
  done
  wait
done
for s in 2 3 4 5; do
  python train.py --recipe fast --seed $s --threads 2 --out-dir runs/repro2/fast$s > runs/repro2/fast$s.log 2>&1
done
: > $out
for s in 2 3 4 5; do
  sha256sum results/tiny/seed$s/weights.pt runs/repro2/tiny$s/weights.pt >> $out
done
for s in 2 3 4 5; do
  grep " seed$s/weights.pt" results/fast/sha256.txt | sed "s|weights.pt$|weights.pt (as listed in results/fast/sha256.txt)|" >> $out
  sha256sum runs/repro2/fast$s/weights.pt >> $out
done
