"""Read the digit in your own images with the trained model.

    python predict.py my_digit.png
    python predict.py photo.jpg scan.bmp --top-k 3
    python predict.py drawing.png --json --show-input seen.png

Any size, grayscale, RGB or RGBA (alpha composited on white), 8- or 16-bit;
PNG, JPEG, BMP, GIF (first frame). An image is turned into what MNIST digits
look like, because that is all the model has seen: light ink on a dark
background, cropped to the ink, the longer side scaled to 20 px, and placed in
28x28 with the ink's centre of mass at the centre. images.py finds the ink as a
document scanner does (paper grain, uneven light and a fine or heavy pen are
allowed for). --show-input writes that 28x28 image. A file that cannot be read
gets a one-line error; the others are still read, and the exit code is 1 if any
file failed.
"""

import json
import sys
from pathlib import Path

import torch

from images import InputError, load_grayscale, save_digit_png, to_mnist_digit
from model import COMMITTED_WEIGHTS, WeightsError, load_model, normalize
from utils import OneLineErrorParser, bounded


def show_input_path(base, index, count):
    """--show-input PATH for one image; PATH-1.png, PATH-2.png, ... for several."""
    base = Path(base)
    return base if count == 1 else base.with_name(f"{base.stem}-{index}{base.suffix or '.png'}")


@torch.inference_mode()
def predict(model, digit, top_k):
    values, digits = model(normalize(torch.from_numpy(digit).float().view(1, 1, 28, 28))).exp()[0].topk(top_k)
    return [{"digit": int(d), "probability": round(float(p), 6)} for d, p in zip(digits, values)]


def summary_line(path, top):
    """'x.png: 7 (probability 0.990); next: 1 (0.004), ...'"""
    alternatives = ", ".join(f"{t['digit']} ({t['probability']:.3f})" for t in top[1:])
    line = f"{path}: {top[0]['digit']} (probability {top[0]['probability']:.3f})"
    return line + (f"; next: {alternatives}" if alternatives else "")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--weights", default=str(COMMITTED_WEIGHTS),
                   help="weights.pt from train.py, of either network (default: the committed trained model)")
    p.add_argument("--top-k", type=bounded(int, 1, 10), default=1)
    p.add_argument("--json", action="store_true", help="one JSON list on stdout")
    p.add_argument("--show-input", metavar="PATH", help="write the 28x28 image the model saw")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        model = load_model(args.weights)
    except WeightsError as error:
        sys.exit(f"predict.py: error: {error}")
    results = []  # a JSON object an image, printed as one list with --json
    for index, path in enumerate(args.images, start=1):
        try:
            digit = to_mnist_digit(load_grayscale(path))
        except (InputError, OSError) as error:
            print(f"predict.py: error: {path}: {error}", file=sys.stderr)
            results.append({"file": str(path), "error": str(error)})
            continue
        top = predict(model, digit, args.top_k)
        results.append({"file": str(path), **top[0], "top_k": top})  # top[0]: "digit" and "probability"
        if not args.json:
            print(summary_line(path, top))
        if args.show_input:
            shown = show_input_path(args.show_input, index, len(args.images))
            try:
                save_digit_png(digit, shown)
            except OSError as error:  # the image was read; only its picture could not be written
                results[-1]["error"] = f"--show-input {shown}: {error.strerror or error}"
                print(f"predict.py: error: {results[-1]['error']}", file=sys.stderr)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
