# From the project root: bash bench/fast-vs-default.sh
# Whole-command wall time, interleaved on the otherwise idle CPU: default, fast, default, fast.
mkdir -p runs/timing
out=runs/timing/times.txt
: > $out
for i in 1 2; do
  for recipe in default fast; do
    start=$(date +%s.%N)
    python train.py --recipe $recipe --out-dir runs/timing/$recipe$i > runs/timing/$recipe$i.log 2>&1
    end=$(date +%s.%N)
    acc=$(python -c "import json; print(json.load(open('runs/timing/$recipe$i/history.json'))['final_test_acc'])")
    echo "python train.py --recipe $recipe (run $i): $(python -c "print(f'{$end - $start:.1f}')") s, test accuracy $acc%" >> $out
  done
done
