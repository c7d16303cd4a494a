"""Apply the fifth screening round's rule (results/recipes.md) to its table and print the choice.

    python bench/pick_recipe.py results/screening/round-5-optimizer.csv
    python bench/pick_recipe.py results/screening/round-5-optimizer.csv o10-b128-default o13-b128-lr05-wd5

Per finalist, over seeds 1-4: the minimum and mean of `last_3_min` (the lowest validation
accuracy over epochs 13-15), the mean final accuracy, and the mean and sd of robustness's
`overall`. A finalist whose mean `overall` is below the better baseline's by more than two
standard errors of the difference is rejected; of the rest, the highest minimum of
`last_3_min` wins (within 0.01: the higher mean, then the higher mean final accuracy).
Given names, the first is the only baseline and all of them are the finalists (the
rule's batch-128 half: today's default at batch 128 against the winner's values there).
"""

import csv
import math
import statistics
import sys

BASELINES = ("o01-default", "o00-reference")
FINALISTS = ("o01-default", "o00-reference", "o04-b64-lr10-wd5", "o03-b64-lr05-wd5", "o14-b128-lr20-wd5")
SEEDS = {"1", "2", "3", "4"}


def summary(rows):
    lows = [float(r["last_3_min"]) for r in rows]
    finals = [float(r["final_val_acc"]) for r in rows]
    robust = [float(r["robust_overall"]) for r in rows]
    return {"n": len(rows), "min_low": min(lows), "mean_low": statistics.mean(lows),
            "mean_final": statistics.mean(finals), "robust_mean": statistics.mean(robust),
            "robust_sd": statistics.stdev(robust) if len(robust) > 1 else 0.0}


def main(path, finalists=FINALISTS, baselines=BASELINES):
    with open(path) as table:
        rows = [r for r in csv.DictReader(table) if r["seed"] in SEEDS and r["candidate"] in finalists]
    stats = {name: summary([r for r in rows if r["candidate"] == name]) for name in finalists}
    baseline = max(baselines, key=lambda name: stats[name]["robust_mean"])
    b = stats[baseline]
    print(f"{'finalist':20} {'seeds':>5} {'min low':>8} {'mean low':>9} {'mean final':>11} {'robust':>14} "
          "verdict")
    kept = []
    for name, s in stats.items():
        se = math.sqrt(s["robust_sd"] ** 2 / s["n"] + b["robust_sd"] ** 2 / b["n"])
        rejected = s["robust_mean"] < b["robust_mean"] - 2 * se
        if not rejected:
            kept.append(name)
        print(f"{name:20} {s['n']:>5} {s['min_low']:8.2f} {s['mean_low']:9.3f} {s['mean_final']:11.3f} "
              f"{s['robust_mean']:7.2f} ± {s['robust_sd']:4.2f} "
              f"{'rejected' if rejected else 'kept'} (threshold {b['robust_mean'] - 2 * se:.2f})")
    best = max(stats[name]["min_low"] for name in kept)
    tied = [name for name in kept if stats[name]["min_low"] >= best - 0.01 - 1e-9]
    winner = max(tied, key=lambda name: (stats[name]["mean_low"], stats[name]["mean_final"]))
    print(f"better baseline for robustness: {baseline}; highest minimum {best:.2f}, held within 0.01 by "
          f"{', '.join(tied)}; winner: {winner}")
    return winner


if __name__ == "__main__":
    if len(sys.argv) == 2:
        main(sys.argv[1])
    elif len(sys.argv) > 3:
        main(sys.argv[1], sys.argv[2:], sys.argv[2:3])
    else:
        sys.exit("usage: python bench/pick_recipe.py ROUND.csv [BASELINE FINALIST...]")
