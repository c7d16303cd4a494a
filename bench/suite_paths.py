"""The off-MNIST suite's corruptions two ways: as the network sees them (the 28x28 corrupted image
fed straight in) and through the product (drawn on a page, saved as JPEG and read by predict.py's
preparation, as bench/handwriting_suite.py holds them), for each weights.pt given.

    python bench/suite_paths.py A/seed1/weights.pt B/seed1/weights.pt --figure misread.png

The same held-out digits and draws as the suite (rule.md: the first 2,000 of the last 10,000
training images, seed 2). --figure draws, for the first weights, the first digits it misreads
through the product on the noise and thin rows, then a few it reads right.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from handwriting_suite import SUITE_SEED, suite  # noqa: E402 (beside this file)

import robustness  # noqa: E402
import train  # noqa: E402
from data import DataError, ensure_mnist, read_splits, to_unit_interval  # noqa: E402
from model import WeightsError, load_model, normalize  # noqa: E402
from utils import OneLineErrorParser, atomic_write, output_file  # noqa: E402

HOLDOUT, COUNT = 10000, 2000  # rule.md's suite


def held_out(weights):
    """Refuses WEIGHTS unless the history.json beside them shows a --holdout HOLDOUT run: any
    other network trained on the suite's digits."""
    history = Path(weights).with_name("history.json")
    if not history.is_file():
        raise ValueError(f"{weights}: no history.json beside it to show that it held out the suite's digits")
    holdout = train.read_history(history)["config"].get("holdout")
    if holdout != HOLDOUT:
        raise ValueError(f"{weights}: trained with --holdout {holdout}, so on the suite's digits; "
                         f"give --holdout {HOLDOUT} runs")


def rows_of_digits(model, kinds, names, wrong=16, right=8):
    """One row of 28x28 digits per kind of NAMES: the first WRONG that MODEL misreads, then RIGHT it reads."""
    rows = []
    for name in names:
        digits, labels = kinds[name]
        with torch.no_grad():
            hits = model(normalize(digits)).argmax(1) == labels
        picked = torch.cat([(~hits).nonzero().flatten()[:wrong], hits.nonzero().flatten()[:right]])
        rows.append(torch.cat(list(digits[picked, 0]), dim=1))
    return torch.cat(rows)


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("weights", nargs="+", help="weights.pt files of --holdout 10000 runs")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--figure", type=output_file, metavar="PNG", help="the first weights' misread digits")
    args = p.parse_args(argv)
    try:
        models = [load_model(path) for path in args.weights]
        for path in args.weights:
            held_out(path)
        ensure_mnist(args.data_dir)
        kinds = suite(args.data_dir, HOLDOUT, COUNT)
        _, (pixels, labels) = read_splits(args.data_dir, HOLDOUT)
        images, labels = to_unit_interval(pixels[:COUNT]), labels[:COUNT]
    except (DataError, WeightsError, ValueError, KeyError, OSError, RuntimeError) as error:
        p.error(str(error))  # RuntimeError: torch.load of a damaged suite file
    names = list(robustness.CORRUPTIONS)
    print("| weights | way | " + " | ".join(names) + " |\n|" + " --- |" * (len(names) + 2))
    for path, model in zip(args.weights, models):
        seen = [robustness.accuracy(model, robustness.corrupted(images, name, SUITE_SEED), labels)
                for name in names]
        product = [robustness.accuracy(model, *kinds[name]) for name in names]
        for way, scores in ("network sees", seen), ("through the product", product):
            print(f"| {path} | {way} | " + " | ".join(f"{score:.1f}" for score in scores) + " |")
    if args.figure:
        grid = (rows_of_digits(models[0], kinds, ["noise", "thin"]).clamp(0, 1) * 255).byte().numpy()
        image = Image.fromarray(np.kron(grid, np.ones((3, 3), np.uint8)))  # 3x, pixels kept square
        try:
            atomic_write(args.figure, lambda f: image.save(f, format="PNG"))
        except OSError as error:
            p.error(f"--figure {args.figure}: {error}")


if __name__ == "__main__":
    main()
