"""A user's image of a digit -> the 28x28 input the model expects.

MNIST digits are light ink on a dark field, cropped to the ink, the longer side scaled to
20 px, and placed with the ink's centre of mass at the centre of 28x28: to_mnist_digit()
makes any image look like that. web/preprocess.js repeats it number for number.
Imports only numpy, Pillow and files.py: no training or data code.
"""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from files import atomic_write

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
