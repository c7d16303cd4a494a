#!/usr/bin/env bash
# Fifth screening round (results/recipes.md): the optimizer's values (peak learning rate,
# weight decay, batch size, with dropout) at 15 epochs on --holdout 10000 validation. One
# thread per run, two runs at a time. Runs go to runs/screen/<candidate>/seed<N>/
# (train.log, history.json, weights.pt); a finished run is skipped. From the project root:
#   bash bench/screen_optimizer.sh 1                        # every candidate, seed 1
#   bash bench/screen_optimizer.sh 2,3,4 o01-default o04-b64-lr10-wd5   # some, seeds 2-4
set -euo pipefail
cd "$(dirname "$0")/.."
seeds=${1:-1}
shift || true
# The defaults when this round ran; each candidate's flags change them (the winner, o03,
# is today's default).
BASE="--max-lr 0.02 --weight-decay 1e-4"
declare -A FLAGS=(
  [o00-reference]="--recipe reference --batch-size 64"
  [o01-default]=""
  [o02-b64-lr05]="--max-lr 0.05"
  [o03-b64-lr05-wd5]="--max-lr 0.05 --weight-decay 5e-4"
  [o04-b64-lr10-wd5]="--max-lr 0.1 --weight-decay 5e-4"
  [o05-b64-lr10-wd5-d0]="--max-lr 0.1 --weight-decay 5e-4 --dropout 0"
  [o06-b64-lr05-wd1e3]="--max-lr 0.05 --weight-decay 1e-3"
  [o07-b64-lr20-wd5]="--max-lr 0.2 --weight-decay 5e-4"
  [o08-b64-lr10-wd1e3]="--max-lr 0.1 --weight-decay 1e-3"
  [o09-b64-wd5]="--weight-decay 5e-4"
  [o10-b128-default]="--batch-size 128"
  [o11-b128-lr10-wd5-d0]="--batch-size 128 --max-lr 0.1 --weight-decay 5e-4 --dropout 0"
  [o12-b128-lr10-wd5]="--batch-size 128 --max-lr 0.1 --weight-decay 5e-4"
  [o13-b128-lr05-wd5]="--batch-size 128 --max-lr 0.05 --weight-decay 5e-4"
  [o14-b128-lr20-wd5]="--batch-size 128 --max-lr 0.2 --weight-decay 5e-4"
  [o15-b128-lr10-wd1e3]="--batch-size 128 --max-lr 0.1 --weight-decay 1e-3"
)
ORDER="o01-default o11-b128-lr10-wd5-d0 o04-b64-lr10-wd5 o03-b64-lr05-wd5 o02-b64-lr05 o05-b64-lr10-wd5-d0
o12-b128-lr10-wd5 o10-b128-default o13-b128-lr05-wd5 o06-b64-lr05-wd1e3 o07-b64-lr20-wd5 o08-b64-lr10-wd1e3
o14-b128-lr20-wd5 o15-b128-lr10-wd1e3 o09-b64-wd5 o00-reference"
candidates=${*:-$ORDER}
for seed in ${seeds//,/ }; do
  for name in $candidates; do
    out=runs/screen/$name/seed$seed
    [[ -f $out/history.json ]] && continue
    [[ -v FLAGS[$name] ]] || { echo "unknown candidate $name" >&2; exit 1; }
    echo "mkdir -p $out && python train.py --holdout 10000 --batch-size 64 --epochs 15 --threads 1 --seed $seed --out-dir $out $BASE ${FLAGS[$name]} > $out/train.log 2>&1"
  done
done | xargs -P 2 -I{} bash -c {}
