"""The handwriting rule's steps 2-5 (results/handwriting/rule.md): candidates against the default
on paired seeds of --holdout runs, MNIST validation and the off-MNIST suite, and the choice.

    python bench/handwriting_pick.py STUDY/runs/DEFAULT STUDY/runs/CANDIDATE1 STUDY/runs/CANDIDATE2 ...

Each folder holds seedN/ runs of one recipe (a search.py trial's folder, or seeds.py's
--out-dir), all with the same --holdout. The seeds that every folder has are the paired ones.
Per seed: MNIST, the lowest validation accuracy of the last three epochs; suite, the mean of
handwriting_suite.suite read by the seed's weights.pt. Per candidate: d, the per-seed difference
candidate minus default in MNIST, its mean and SE = sd / sqrt(seeds).
"""

import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import handwriting_suite  # noqa: E402 (beside this file)

import train  # noqa: E402
from data import DataError  # noqa: E402
from model import WeightsError, load_model  # noqa: E402
from utils import LAST_EPOCHS, OneLineErrorParser, bounded, lowest_of_last  # noqa: E402


def histories(folders):
    """{folder: {seed: history.json}} of every finished seedN run in FOLDERS."""
    runs = {folder: {int(run.parent.name[4:]): run for run in folder.glob("seed*/history.json")
                     if re.fullmatch(r"seed\d+", run.parent.name)} for folder in folders}
    return {folder: {seed: train.read_history(path) for seed, path in by_seed.items()}
            for folder, by_seed in runs.items()}


def seed_scores(folder, seeds, history, kinds):
    """{seed: (MNIST, suite)} of FOLDER's runs of SEEDS (HISTORY: their history.json by seed)."""
    def suite_mean(seed):
        model = load_model(folder / f"seed{seed}" / "weights.pt")
        return handwriting_suite.suite_scores(model, kinds)["mean"]

    return {seed: (lowest_of_last(history[seed]["epochs"]), suite_mean(seed)) for seed in seeds}


def choose(rows):
    """The rule's steps 3-5 on ROWS ({candidate: (mean d, SE, mean suite)}): (candidate, what it becomes)."""
    within_noise = {name: row for name, row in rows.items() if row[0] >= -row[1]}
    if within_noise:
        return max(within_noise, key=lambda name: within_noise[name][2]), "the default"
    close = {name: row for name, row in rows.items() if row[0] >= -0.10}
    if close:
        return max(close, key=lambda name: close[name][2]), "--recipe robust"
    return None, "nothing: the default stays"


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("default", type=Path, help="the default recipe's folder of seedN runs")
    p.add_argument("candidates", type=Path, nargs="+", help="each candidate's folder")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--count", type=bounded(int, 1), default=2000, help="the suite's digits (rule.md's)")
    p.add_argument("--font-count", type=bounded(int, 1), default=2000, help="its font digits (rule.md's)")
    args = p.parse_args(argv)
    folders = [args.default, *args.candidates]
    try:
        runs = histories(folders)
        seeds = sorted(set.intersection(*(set(by_seed) for by_seed in runs.values())))
        if len(seeds) < 2:
            raise ValueError(f"{len(seeds)} paired seed(s) finished in every folder; need 2")
        holdouts = {runs[folder][seed]["config"].get("holdout") for folder in folders for seed in seeds}
        if len(holdouts) > 1 or not holdouts.pop():  # else the suite or MNIST's validation digits differ
            raise ValueError("every run must hold out the same training digits (--holdout N, N > 0)")
        holdout = runs[args.default][seeds[0]]["config"]["holdout"]
        kinds = handwriting_suite.suite(args.data_dir, holdout, args.count, args.font_count)
        scores = {folder: seed_scores(folder, seeds, runs[folder], kinds) for folder in folders}
    except (DataError, WeightsError, OSError, ValueError, KeyError, RuntimeError) as error:
        sys.exit(f"handwriting_pick.py: error: {error}")
    base = scores[args.default]
    print(f"Paired seeds {', '.join(map(str, seeds))}; MNIST: the lowest validation accuracy of the last "
          f"{LAST_EPOCHS} epochs; suite: the off-MNIST suite's mean (%)\n")
    print("| folder | MNIST mean | suite mean | d mean | SE | MNIST by seed | suite by seed |\n"
          + "| --- " * 7 + "|")
    rows = {}
    for folder, by_seed in scores.items():
        d = [by_seed[seed][0] - base[seed][0] for seed in seeds]
        mnist, suite = ([values[i] for values in by_seed.values()] for i in (0, 1))
        se = statistics.stdev(d) / len(d) ** 0.5
        if folder != args.default:
            rows[folder] = statistics.mean(d), se, statistics.mean(suite)
        print(f"| {folder.name} | {statistics.mean(mnist):.3f} | {statistics.mean(suite):.2f} | "
              f"{statistics.mean(d):+.3f} | {se:.3f} | {', '.join(f'{v:.2f}' for v in mnist)} | "
              f"{', '.join(f'{v:.2f}' for v in suite)} |")
    chosen, becomes = choose(rows)
    print(f"\nThe rule picks: {chosen.name if chosen else 'none'}, which becomes {becomes}.")


if __name__ == "__main__":
    main()
