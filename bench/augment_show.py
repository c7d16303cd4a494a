"""A picture of what each augmentation of data.Augmentation does to the same training digits.

    python bench/augment_show.py --output results/handwriting/augmentations.png

One row a flag at the top of the range the study searches (results/handwriting/rule.md), the
first row the digits as they are; each row its own draws, the same seed.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from data import Augmentation, DataError, pen_lines, read_split, skeleton, to_unit_interval  # noqa: E402
from utils import OneLineErrorParser, bounded, output_file, pyplot, save_figure  # noqa: E402

ROWS = {"as they are": {}, "--rotation 30": dict(rotation=30), "--shear 30": dict(shear=30),
        "--aspect 0.4": dict(aspect=0.4), "--elastic 3": dict(elastic=3), "--stroke 1": dict(stroke=1),
        "--noise 0.5": dict(noise=0.5), "--pen 0.5": dict(pen=0.5)}


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=bounded(int, 1, 40), default=12, help="digits a row")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--output", type=output_file, default="augmentations.png")
    args = p.parse_args(argv)
    try:
        pixels = read_split(args.data_dir, train=True)[0][:args.count]
    except (DataError, OSError) as error:
        sys.exit(f"augment_show.py: error: {error}")
    images, lines = to_unit_interval(pixels), pen_lines(skeleton(pixels > 127).unsqueeze(1))
    plt = pyplot()
    fig, axes = plt.subplots(len(ROWS), 1, figsize=(args.count * 0.6, len(ROWS) * 0.75))
    for axis, (name, settings) in zip(axes, ROWS.items()):
        augment = Augmentation(interpolation="bilinear", **settings)
        moved = augment(images, torch.Generator().manual_seed(args.seed), lines)
        axis.imshow(torch.cat(list(moved[:, 0]), 1), cmap="gray", vmin=0, vmax=1)
        axis.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        axis.set_xticks([]), axis.set_yticks([])
    save_figure(fig, args.output)
    print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
