"""Photos of held-out digits on paper, read by networks that never trained on them: how a
training change or one of images.py's constants moves the marker and the fine pen, measured
on validation, so that the choice does not look at the test set.

    python bench/paper_val.py runs/pen/p0/seed*/weights.pt runs/pen/p0.25/seed*/weights.pt
    python bench/paper_val.py --set STROKE_WIDTH=2 runs/pen/p0/seed*/weights.pt

Every weights file must come from a `train.py --holdout N` run (the history.json beside it
says so, and all must hold out the same N): the last N training images are photographed in
robustness.py's paper styles (its seeded draws, once for all the files), read by
images.to_mnist_digit (with --set, one of its constants changed for this run) and scored.
Prints a markdown table: a row per weights file with the run's validation accuracy, each
style's accuracy and (when both are read) fine pen minus marker, then each column's mean.
"""

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import images  # noqa: E402
import robustness  # noqa: E402
import train  # noqa: E402
from data import DataError, read_split, to_unit_interval  # noqa: E402
from model import WeightsError, load_model  # noqa: E402
from utils import OneLineErrorParser, bounded  # noqa: E402


def constant(text):
    """'NAME=VALUE' -> (NAME, VALUE) for a numeric constant of images.py, VALUE of its type."""
    name, _, value = text.partition("=")
    current = getattr(images, name, None)
    if type(current) not in (int, float):
        raise argparse.ArgumentTypeError(f"{name!r} is not a numeric constant of images.py")
    kind = "an integer" if type(current) is int else "a number"
    try:
        return name, type(current)(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {name} takes {kind}") from None


def holdout_network(weights):
    """(network, --holdout, final validation accuracy) of the --holdout run that wrote WEIGHTS
    (its history.json beside it); exits with one line if there is none, it held out nothing,
    or WEIGHTS is no weights file."""
    try:
        history = train.read_history(Path(weights).parent / "history.json")
        holdout, val_acc = history["config"].get("holdout"), history.get("final_val_acc")
        if not holdout or val_acc is None:
            sys.exit(f"paper_val.py: error: {weights} trained on every training image: no held-out digit")
        return load_model(weights), holdout, val_acc
    except (OSError, ValueError, WeightsError) as error:
        sys.exit(f"paper_val.py: error: {error}")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="weights.pt files of --holdout runs")
    p.add_argument("--set", type=constant, action="append", default=[], metavar="NAME=VALUE",
                   help="change one of images.py's constants for this run (repeatable)")
    p.add_argument("--styles", default="marker,fine_pen",
                   help="comma separated: robustness.py's kinds (robustness.KINDS), through the product")
    p.add_argument("--count", type=bounded(int, 1), help="the first COUNT held-out digits (default: all)")
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)
    args.styles = list(dict.fromkeys(args.styles.split(",")))  # each once, in the order given
    if unknown := set(args.styles) - set(robustness.KINDS):
        p.error(f"--styles: no such style: {', '.join(sorted(unknown))}")
    return args


def main(argv=None):
    args = parse_args(argv)
    networks = {weights: holdout_network(weights) for weights in args.weights}
    holdouts = {holdout for _, holdout, _ in networks.values()}
    if len(holdouts) > 1:
        sys.exit(f"paper_val.py: error: the weights hold out different counts: {sorted(holdouts)}")
    holdout = holdouts.pop()
    for name, value in args.set:
        setattr(images, name, value)
    torch.set_num_threads(1)
    try:
        pixels, labels = read_split(args.data_dir, train=True)
    except (OSError, DataError) as error:
        sys.exit(f"paper_val.py: error: {error}")
    pixels, labels = pixels[-holdout:][:args.count], labels[-holdout:][:args.count]
    read = dict(robustness.product_digits(to_unit_interval(pixels), names=args.styles))
    setting = ", ".join(f"{name}={value:g}" for name, value in args.set) or "none"
    print(f"{len(labels)} held-out digits; images.py's constants changed: {setting}\n")
    gap = {"fine_pen", "marker"} <= set(args.styles)  # the target: a fine pen within 1 point of a marker
    print(f"| weights | val % | {' | '.join(args.styles)} |" + (" fine pen - marker |" if gap else ""))
    print("| --- " * (len(args.styles) + 2 + gap) + "|")
    rows = []
    for weights, (model, _, val_acc) in networks.items():
        scores = {name: robustness.accuracy(model, read[name], labels) for name in args.styles}
        rows.append([val_acc, *scores.values()] + ([scores["fine_pen"] - scores["marker"]] if gap else []))
        print(f"| {weights} | " + " | ".join(f"{value:.2f}" for value in rows[-1]) + " |")
    print("| mean | " + " | ".join(f"{statistics.mean(column):.2f}" for column in zip(*rows)) + " |")


if __name__ == "__main__":
    main()
