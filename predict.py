"""Read the digit in your own images with the trained model.

    python predict.py my_digit.png
    python predict.py photo.jpg scan.bmp --top-k 3
    python predict.py drawing.png --json --show-input seen.png

Any size, grayscale, RGB or RGBA (alpha composited on white), 8- or 16-bit;
PNG, JPEG, BMP, GIF (first frame). An image is turned into what MNIST digits
look like, because that is all the model has seen: light ink on a dark
background, cropped to the ink, the longer side scaled to 20 px, and placed in
28x28 with the ink's centre of mass at the centre. --show-input writes that
28x28 image. A file that cannot be read gets a one-line error; the others are
still read, and the exit code is 1 if any file failed.
"""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from model import COMMITTED_WEIGHTS, WeightsError, load_model, normalize
from utils import OneLineErrorParser, atomic_write, bounded

MNIST_CENTRE = 13.5  # the centre of the 28x28 field, in pixel indices (row and column)
INK_THRESHOLD = 0.2  # after stretching contrast to [0, 1]: fainter pixels are paper, not ink
MIN_CONTRAST = 0.1  # ink must differ from the background by 10% of the full range


class InputError(Exception):
    """An image that cannot be read as a digit; the message says why."""


def load_grayscale(path):
    """Any supported file -> float array in [0, 1], alpha composited on white."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)  # a GIF's first frame
                image.load()
                return to_gray_array(image)
    except FileNotFoundError:
        raise InputError("no such file") from None
    except IsADirectoryError:
        raise InputError("is a directory, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"refused as a decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise InputError("not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"truncated or corrupt image ({error})") from None


def to_gray_array(image):
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale PNG or TIFF
        return np.clip(np.asarray(image, dtype=np.float64) / 65535, 0, 1)
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("L"), dtype=np.float64) / 255


def to_mnist_digit(gray):
    """A [0, 1] grayscale array of any size -> 28x28 float array in MNIST's layout."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    if np.median(border) > 0.5:  # dark ink on light paper: MNIST is the other way round
        gray, border = 1 - gray, 1 - border
    background, brightest = np.median(border), gray.max()
    if brightest - background < MIN_CONTRAST:
        raise InputError("no ink found (blank image)")
    ink = np.clip((gray - background) / (brightest - background), 0, 1)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    ink = ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    scale = 20 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.BILINEAR))
    # Shrinking greys out thin strokes; MNIST strokes peak at full white, so stretch back.
    return place_by_centre_of_mass(np.clip(digit / digit.max(), 0, 1))


def place_by_centre_of_mass(digit):
    """Paste DIGIT (at most 20x20) into 28x28 so that its centre of mass lands at MNIST's."""
    canvas = np.zeros((28, 28))
    offsets = []
    for axis in (0, 1):
        mass = digit.sum(axis=1 - axis)
        centre = (mass * np.arange(len(mass))).sum() / mass.sum()
        offsets.append(int(np.clip(round(MNIST_CENTRE - centre), 0, 28 - len(mass))))
    top, left = offsets
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return canvas


def save_digit_png(digit, path):
    image = Image.fromarray(np.round(digit * 255).astype(np.uint8))
    atomic_write(path, lambda f: image.save(f, format="PNG"))


def show_input_path(base, index, count):
    """--show-input PATH for one image; PATH-1.png, PATH-2.png, ... for several."""
    base = Path(base)
    return base if count == 1 else base.with_name(f"{base.stem}-{index}{base.suffix or '.png'}")


@torch.inference_mode()
def predict(model, digit, top_k):
    probabilities = model(normalize(torch.from_numpy(digit).float().view(1, 1, 28, 28))).exp().squeeze(0)
    values, digits = probabilities.topk(top_k)
    return [{"digit": int(d), "probability": round(float(p), 6)} for d, p in zip(digits, values)]


def report(path, top, as_json):
    if as_json:
        return {"file": str(path), "digit": top[0]["digit"], "probability": top[0]["probability"],
                "top_k": top}
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
    json_results, failed = [], 0
    for index, path in enumerate(args.images, start=1):
        try:
            digit = to_mnist_digit(load_grayscale(path))
            if args.show_input:
                save_digit_png(digit, show_input_path(args.show_input, index, len(args.images)))
        except (InputError, OSError) as error:
            failed += 1
            print(f"predict.py: error: {path}: {error}", file=sys.stderr)
            json_results.append({"file": str(path), "error": str(error)})
            continue
        result = report(path, predict(model, digit, args.top_k), args.json)
        if args.json:
            json_results.append(result)
        else:
            print(result)
    if args.json:
        print(json.dumps(json_results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
