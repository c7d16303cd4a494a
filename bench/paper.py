"""Digits photographed on paper, read by images.py's scanner steps: the pictures and the table
in results/paper/. From the project root, after the robustness.py run that
results/paper/README.md names (robustness.json):

    python bench/paper.py

Writes three photos (MNIST test digits drawn on paper by robustness.photographed(): heavy
grain, a shadow, a fine pen) as JPEG, reads each as predict.py does (images.to_mnist_digit),
and saves the 28x28 images the model saw as a montage: the photos on top, what the model saw
below. Prints what the shipped weights read, robustness.json's scores as a markdown table
(a column per kind; as the network sees it, then through predict.py), and how far any
preparation could take the fine pen: its skeleton grown straight back to a marker's width
(8, 10, 12 px at 112 px per digit, no photo) and read on clean paper. Saves
fine-pen-misread.png: the first 1000 test digits that are read right as a marker's photo and
wrong as a fine pen's: as MNIST has them (top), then both photos as the model saw them.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import robustness  # noqa: E402 (after the path is set)
from data import read_split  # noqa: E402
from images import load_grayscale, resize, to_mnist_digit  # noqa: E402
from model import COMMITTED_WEIGHTS, load_model, normalize  # noqa: E402
from predict import predict  # noqa: E402
from utils import OneLineErrorParser  # noqa: E402

OUT = ROOT / "results" / "paper"
# name: (MNIST test index, the photo's style); robustness.PAPER's styles, each with its own seed
PHOTOS = {"grainy": (0, {"grain": 45}), "shadow": (1, {"shadow": True}), "fine-pen": (3, {"pen": True})}
TILE, GAP = 112, 4


def tile(gray):
    """GRAY in [0, 1] scaled to fit TILE x TILE (a 28x28 digit by whole pixels), on black."""
    image = Image.fromarray(np.round(gray * 255).astype(np.uint8))
    scale = TILE / max(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    image = image.resize(size, Image.NEAREST if scale > 1 else Image.BILINEAR)
    canvas = Image.new("L", (TILE, TILE), 0)
    canvas.paste(image, ((TILE - image.width) // 2, (TILE - image.height) // 2))
    return canvas


def pictures(model):
    pixels, labels = read_split(ROOT / "data", train=False)
    rows = [[], []]
    for seed, (name, (index, style)) in enumerate(PHOTOS.items()):
        images = robustness.to_unit_interval(pixels[index:index + 1])
        (gray,) = robustness.photographed(images, np.random.default_rng(seed), **style)
        path = OUT / f"{name}.jpg"
        Image.fromarray(np.round(gray * 255).astype(np.uint8)).save(path, quality=95)
        gray = load_grayscale(path)
        seen = to_mnist_digit(gray)
        read = predict(model, seen, 1)[0]["digit"]
        print(f"{path.relative_to(ROOT)}: a {int(labels[index])}, read as {read}")
        rows[0].append(tile(gray))
        rows[1].append(tile(seen))
    save_montage(rows, OUT / "show-input.png")


def save_montage(rows, path):
    """ROWS of equal length, each a list of TILE x TILE pictures, on grey, as one PNG."""
    montage = Image.new("L", (len(rows[0]) * (TILE + GAP) - GAP, len(rows) * (TILE + GAP) - GAP), 128)
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            montage.paste(picture, (c * (TILE + GAP), r * (TILE + GAP)))
    montage.save(path, optimize=True)


def table():
    """results/paper/robustness.json's scores as a markdown table: a column per kind."""
    run = json.loads((OUT / "robustness.json").read_text())
    kinds = list(run["through_product"])
    print("| % | " + " | ".join(kind.replace("_", " ") for kind in kinds) + " |")
    print("| --- " * (len(kinds) + 1) + "|")
    for row, scores in (("network", run["scores"]), ("predict.py", run["through_product"])):
        cells = (f"{scores[kind]:.1f}" if kind in scores else "" for kind in kinds)
        print(f"| {row} | " + " | ".join(cells) + " |")


def pen_ceiling(model, count=1000):
    pixels, labels = read_split(ROOT / "data", train=False)
    fields = [resize(image, (robustness.PAGE_FIELD,) * 2) > 0.5 for image in pixels[:count].numpy() / 255]
    for width in (8, 10, 12):
        lines = (1 - robustness.pen_line(field, width).astype(np.float64) for field in fields)
        read = robustness.prepared(lines)
        score = robustness.accuracy(model, read, labels[:count])
        print(f"fine pen's line grown to {width} px, no photo: {score:.1f}%")


def pen_misreads(model, count=1000):
    pixels, labels = read_split(ROOT / "data", train=False)
    images, labels = robustness.to_unit_interval(pixels[:count]), labels[:count]
    read = dict(robustness.product_digits(images, names=("marker", "fine_pen")))
    with torch.inference_mode():
        marker, pen = (model(normalize(read[name])).argmax(1) for name in ("marker", "fine_pen"))
    misread = ((marker == labels) & (pen != labels)).nonzero().flatten().tolist()
    print(f"read right as a marker, wrong as a fine pen: {len(misread)} of {count}: " + ", ".join(
        f"{int(labels[i])} as {int(pen[i])}" for i in misread))
    (OUT / "fine-pen-misread.png").unlink(missing_ok=True)  # none misread: no picture
    if misread:
        batches = (images, read["marker"], read["fine_pen"])
        save_montage([[tile(batch[i, 0].numpy()) for i in misread] for batch in batches],
                     OUT / "fine-pen-misread.png")


if __name__ == "__main__":
    OneLineErrorParser(description=__doc__.split("\n")[0]).parse_args()  # no flags; --help says what it does
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    model = load_model(COMMITTED_WEIGHTS)
    pictures(model)
    table()
    pen_ceiling(model)
    pen_misreads(model)
