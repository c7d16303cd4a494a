"""images.py's constants on held-out training digits: every through-the-product kind of
robustness.py read with each candidate value, by networks that never trained on the digits
(results/paper/constants/rule.md says which, and the rule).

    python bench/constants_val.py runs/constants/p0/seed*/weights.pt --json scores.json > scores.md
    python bench/constants_val.py --set PAPER_WINDOW=0.5 --set FAINT_INK=0.8 runs/.../weights.pt

Every weights file must come from a `train.py --holdout N` run, all with the same N (as
bench/paper_val.py checks); the first --count of the last N training images are drawn as
robustness.py draws them (--seed), each kind's pages made once and read by images.to_mnist_digit under each
setting: today's constants, then each value of GRID with the other constants at today's (with
--set, today's and that one setting). Prints two markdown tables: each kind's mean over the
networks a setting, with the mean over kinds (S) and its change from today's; then each
network's mean over kinds, and how many networks beat today's.
"""

import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import images  # noqa: E402
import robustness  # noqa: E402
from bench.paper_val import constant, holdout_network  # noqa: E402
from data import DataError, read_split, to_unit_interval  # noqa: E402
from utils import OneLineErrorParser, atomic_write_json, bounded  # noqa: E402

GRID = {"PAPER_WINDOW": (0.3, 0.5), "FAINT_INK": (0.5, 0.8), "HEAVY_STROKE": (2.5, 3.5)}


def settings(chosen):
    """{label: {constant: value}}: today's (no change), then CHOSEN's one setting or GRID's, one at a time."""
    if chosen:
        return {"today": {}, ", ".join(f"{name}={value:g}" for name, value in chosen): dict(chosen)}
    one_at_a_time = {f"{name}={value:g}": {name: value} for name, values in GRID.items() for value in values}
    return {"today": {}, **one_at_a_time}


def read_with(pages, changes):
    """PAGES read by images.to_mnist_digit with CHANGES to images.py's constants, then restored."""
    today = {name: getattr(images, name) for name in changes}
    try:
        for name, value in changes.items():
            setattr(images, name, value)
        return robustness.prepared(pages)
    finally:
        for name, value in today.items():
            setattr(images, name, value)


def kinds(digits, seed, font_count):
    """(kind, pages, labels) for every through-the-product kind, each kind's pages made once."""
    for name in robustness.KINDS:
        yield name, list(robustness.pages(digits, name, seed)), None
    pages, labels = zip(*robustness.font_pages(font_count, seed))
    yield "fonts", pages, torch.tensor(labels)


def score(networks, digits, labels, setups, seed, font_count):
    """{setting: {weights: {kind: accuracy %}}}."""
    scores = {label: {weights: {} for weights in networks} for label in setups}
    for kind, pages, kind_labels in kinds(digits, seed, font_count):
        for label, changes in setups.items():
            read, truth = read_with(pages, changes), labels if kind_labels is None else kind_labels
            for weights, model in networks.items():
                scores[label][weights][kind] = robustness.accuracy(model, read, truth)
            print(f"{kind} {label}", file=sys.stderr, flush=True)
    return scores


def tables(scores):
    """The two markdown tables of SCORES ({setting: {weights: {kind: accuracy %}}})."""
    today = scores["today"]
    names = list(next(iter(today.values())))
    means = {label: [statistics.mean(run[name] for run in runs.values()) for name in names]
             for label, runs in scores.items()}
    print(f"| setting | {' | '.join(names)} | S | S - today |\n" + "| --- " * (len(names) + 3) + "|")
    for label, row in means.items():
        s = statistics.mean(row)
        print(f"| {label} | " + " | ".join(f"{value:.2f}" for value in row) +
              f" | {s:.3f} | {s - statistics.mean(means['today']):+.3f} |")
    print(f"\n| setting | {' | '.join(today)} | networks above today |\n" + "| --- " * (len(today) + 2) + "|")
    for label, runs in scores.items():
        row = [statistics.mean(run.values()) for run in runs.values()]
        above = sum(value > statistics.mean(today[weights].values()) for value, weights in zip(row, runs))
        print(f"| {label} | " + " | ".join(f"{value:.3f}" for value in row) + f" | {above} |")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="weights.pt files of --holdout runs")
    p.add_argument("--set", type=constant, action="append", default=[], metavar="NAME=VALUE",
                   help="read today's and this setting only (repeatable: several constants at once)")
    p.add_argument("--count", type=bounded(int, 1), default=2000, help="the first COUNT held-out digits")
    p.add_argument("--font-count", type=bounded(int, 1), default=2000)
    p.add_argument("--seed", type=bounded(int, 0), default=1, help="robustness.py's draws")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", metavar="PATH", help="also write every score here")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    networks = {weights: holdout_network(weights) for weights in args.weights}
    if len({holdout for _, holdout, _ in networks.values()}) > 1:
        sys.exit("constants_val.py: error: the weights hold out different counts")
    holdout = next(iter(networks.values()))[1]
    try:
        pixels, labels = (part[-holdout:][:args.count] for part in read_split(args.data_dir, train=True))
    except (DataError, OSError) as error:
        sys.exit(f"constants_val.py: error: {error}")
    setups = settings(args.set)
    scores = score({weights: model for weights, (model, _, _) in networks.items()}, to_unit_interval(pixels),
                   labels, setups, args.seed, args.font_count)
    print(f"{len(labels)} held-out digits (of the last {holdout} training images), {args.font_count} font "
          f"digits, seed {args.seed}; % read right, means over {len(networks)} networks\n")
    tables(scores)
    if args.json:
        atomic_write_json(args.json, {"settings": setups, "scores": scores})


if __name__ == "__main__":
    main()
