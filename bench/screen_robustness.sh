#!/usr/bin/env bash
# Score every finished screening run's weights with robustness.py on the validation images
# its --holdout run never trained on (the rule in results/recipes.md uses `overall`).
# From the project root: bash bench/screen_robustness.sh [runs/screen]
set -euo pipefail
cd "$(dirname "$0")/.."
for run in "${1:-runs/screen}"/*/seed*; do
  if [[ -f $run/weights.pt && ! -f $run/robustness.json ]]; then
    OMP_NUM_THREADS=1 python robustness.py --split val --holdout 10000 --weights "$run/weights.pt" \
      --output "$run/robustness.json" > "$run/robustness.log"
  fi
done
