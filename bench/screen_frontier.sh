#!/usr/bin/env bash
# Sixth screening round (results/recipes.md): one recipe for the frontier's small widths,
# chosen at width 0.7 (3,723 parameters) on --holdout 10000 validation, seeds 1-2. Each
# candidate is a `python seeds.py` output in runs/screen/frontier/<candidate>/; a finished
# seed is skipped. From the project root:
#   bash bench/screen_frontier.sh                 # every candidate
#   bash bench/screen_frontier.sh w02-tiny-recipe # one
set -euo pipefail
cd "$(dirname "$0")/.."
declare -A FLAGS=(
  [w01-default]=""
  [w02-tiny-recipe]="--dropout 0 --weight-decay 1e-4 --rotation 0"
  [w03-default-d0]="--dropout 0"
)
for name in ${*:-w01-default w02-tiny-recipe w03-default-d0}; do
  [[ -v FLAGS[$name] ]] || { echo "unknown candidate $name" >&2; exit 1; }
  # shellcheck disable=SC2086 (the flags split into words on purpose)
  python seeds.py --seeds 1,2 --jobs 2 --threads 1 --out-dir "runs/screen/frontier/$name" \
    --width 0.7 --holdout 10000 ${FLAGS[$name]}
done
