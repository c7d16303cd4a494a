"""A user's image of a digit -> the 28x28 input the model expects, as a document scanner finds ink.

MNIST digits are light ink on a dark field, cropped to the ink, the longer side scaled to
20 px, and placed with the ink's centre of mass at the centre of 28x28. A photo of a
digit on paper is not: the paper is grey and grainy, lit unevenly, and the pen may be
finer or heavier than MNIST's. to_mnist_digit() takes it there in these steps:

  1. at most WORK_SIZE px on the longer side (a large photo is shrunk first), ink made light;
  2. the paper's light, uneven or not, estimated and subtracted: a grey-level opening (a
     minimum, then a maximum filter) with a window wider than any stroke keeps the paper
     and its shadows, linear ones exactly, and drops the ink;
  3. the ink decided on a smoothed copy, so that grain is not ink: a threshold chosen from
     the image (Otsu's), fainter ink kept where it joins clear ink (hysteresis), and specks
     (pieces much smaller than the largest) dropped;
  4. the ink's grey values kept near those pieces only, cropped to them;
  5. the stroke brought to MNIST's width at the 20-px scale when it is far from it (a
     fine pen thickened, a heavy marker thinned), then scaled and placed as MNIST's.

Where the constants come from: STROKE_WIDTH, PAPER_WINDOW, FAINT_INK and HEAVY_STROKE were
chosen on held-out training digits, never test digits, read through this preparation by
networks that never trained on them: STROKE_WIDTH in results/paper/stroke-width-val.md, the
other three by the rule in results/paper/constants/rule.md, written before their scores
(scores.md there: each kept the value first set on test digits). The others were set with
the steps and have not been chosen on held-out digits.

web/preprocess.js repeats every step number for number; a test compares the two.
Imports only numpy, Pillow and utils.py: no training or data code.
"""

import warnings
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, UnidentifiedImageError

from utils import atomic_write

MNIST_CENTRE = 13.5  # the centre of the 28x28 field, in pixel indices (row and column)
INK_THRESHOLD = 0.2  # ink scaled to [0, 1]: the crop holds every pixel above this
MIN_CONTRAST = 0.1  # ink must differ from the paper by 10% of the full range
WORK_SIZE = 256  # px, the longer side: larger images are shrunk first
PAPER_SIZE = 64  # px, the longer side of the copy on which the paper's light is estimated
PAPER_WINDOW = 0.4  # the opening's window, a fraction of the longer side: wider than any stroke
SPECK = 0.05  # a piece of ink smaller than this fraction of the largest piece is a speck
FAINT_INK = 2 / 3  # of the threshold: fainter ink is kept where it joins clear ink (hysteresis)
NEAR_INK = 2  # px around the ink pieces whose grey values are kept
INK_LEVEL = 0.95  # the quantile of the clear ink (above Otsu's threshold) taken as full ink
# Stroke widths at the 20-px scale, as 2 * area / perimeter of the clear ink (MNIST's digits measure
# about 2, rarely under 1 or over 3): a stroke under half of STROKE_WIDTH is grown to it, one over
# HEAVY_STROKE thinned to that.
STROKE_WIDTH = 2.5
HEAVY_STROKE = 3.0


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
            with Image.open(path) as image:  # a GIF's first frame; decoding errors are raised here
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
    gray = shrink(gray, WORK_SIZE)
    if np.median(border(gray)) > 0.5:  # dark ink on light paper: MNIST is the other way round
        gray = 1 - gray
    ink = gray - paper(gray)
    ink -= np.median(border(ink))  # the opening sits under the grain: the paper to 0
    levels = np.minimum((np.clip(smooth(ink), 0, 1) * 256).astype(int), 255)
    if levels.max() < MIN_CONTRAST * 256:
        raise InputError("no ink found (blank image)")
    threshold = otsu_threshold(levels)
    pieces = ink_pieces(levels, threshold)
    clear = pieces & (levels > threshold)
    full = np.sort(ink[clear])[int(INK_LEVEL * (clear.sum() - 1))]
    if full <= 0:  # only where smoothing spread the ink of single pixels: noise, not a digit
        raise InputError("no ink found (blank image)")
    ink = np.clip(ink / full, 0, 1) * max_filter(pieces, 2 * NEAR_INK + 1)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    box = np.s_[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    return fit_in_field(normal_stroke(ink[box], clear[box]))


def shrink(gray, size):
    """GRAY with its longer side at most SIZE px (Pillow's antialiased bilinear)."""
    scale = size / max(gray.shape)
    if scale >= 1:
        return gray
    return resize(gray, (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))))


def resize(array, size):
    """ARRAY resized to SIZE (width, height) by Pillow's bilinear filter, as float32 ("F") image."""
    resized = Image.fromarray(array.astype(np.float32)).resize(size, Image.BILINEAR)
    return np.asarray(resized, dtype=np.float64)


def border(array):
    return np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])


def paper(gray):
    """The paper's light under light ink: a grey-level opening, on a copy at most PAPER_SIZE px."""
    small = shrink(gray, PAPER_SIZE)
    window = 2 * round(PAPER_WINDOW * max(small.shape) / 2) + 1
    light = max_filter(min_filter(small, window), window)
    return light if small.shape == gray.shape else resize(light, gray.shape[::-1])


def sliding(array, size, reduce):
    """REDUCE (np.min, np.max) over SIZE x SIZE windows, separably; edges repeated outward."""
    for axis in (0, 1):
        pad = [(size // 2, size // 2) if a == axis else (0, 0) for a in (0, 1)]
        array = reduce(sliding_window_view(np.pad(array, pad, mode="edge"), size, axis=axis), axis=-1)
    return array


def min_filter(array, size):
    return sliding(array, size, np.min)


def max_filter(array, size):
    return sliding(array, size, np.max)


def smooth(array):
    """A [1, 2, 1] / 4 blur down the columns, then along the rows, edges repeated: grain averaged out."""
    padded = np.pad(array, 1, mode="edge")
    down = (padded[:-2] + 2 * padded[1:-1] + padded[2:]) / 4
    return (down[:, :-2] + 2 * down[:, 1:-1] + down[:, 2:]) / 4


def otsu_threshold(levels):
    """The level (0-255) that best splits LEVELS into paper (at or below it) and ink (Otsu, 1979)."""
    counts = np.bincount(levels.ravel(), minlength=256)
    below = np.cumsum(counts)[:-1]
    mass_below = np.cumsum(counts * np.arange(256))[:-1]
    total, mass = int(counts.sum()), int((counts * np.arange(256)).sum())
    spread = (mass * below - mass_below * total).astype(np.float64)
    split = below * (total - below)
    between = np.where(split > 0, spread * spread / np.maximum(split, 1), 0)
    return int(np.argmax(between))


def ink_pieces(levels, threshold):
    """The 8-connected pieces of LEVELS above FAINT_INK * THRESHOLD that reach above it (hysteresis,
    as Canny's: faint ink joined to clear ink is ink, faint grain alone is not), less specks: pieces
    smaller than SPECK times the largest."""
    labels, sizes = pieces_of(levels > int(threshold * FAINT_INK))
    clear = np.zeros(len(sizes), dtype=bool)
    clear[labels[levels > threshold]] = True
    return (clear & (sizes >= SPECK * sizes[clear].max()))[labels]


def pieces_of(mask):
    """8-connected pieces of MASK: a label per pixel (0 off the mask) and each label's pixel count.
    Each row's runs are joined to the runs they touch in the row above (union-find)."""
    steps = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(steps == 1)
    stops = np.nonzero(steps == -1)[1]  # exclusive, in the same order
    parent = list(range(len(rows) + 1))  # run i is label i + 1

    def root(label):
        while parent[label] != label:
            parent[label] = parent[parent[label]]
            label = parent[label]
        return label

    first = 0  # the first run of the row above that may touch the current run
    for run, (row, start, stop) in enumerate(zip(rows.tolist(), starts.tolist(), stops.tolist())):
        while first < run and (rows[first] < row - 1 or (rows[first] == row - 1 and stops[first] < start)):
            first += 1
        above = first
        while above < run and rows[above] == row - 1 and starts[above] <= stop:
            parent[root(above + 1)] = root(run + 1)
            above += 1
    roots = np.array([root(label) for label in range(len(parent))])
    runs = np.cumsum(steps[:, :-1] == 1).reshape(mask.shape)  # each pixel's run (row-major), from 1
    labels = np.where(mask, roots[runs], 0)
    return labels, np.bincount(labels.ravel(), minlength=len(parent))


def stroke_width(mask):
    """Mean stroke width of MASK in px: 2 * area / perimeter (pixel edges between ink and not)."""
    padded = np.pad(mask, 1).astype(np.int8)
    perimeter = np.abs(np.diff(padded, axis=0)).sum() + np.abs(np.diff(padded, axis=1)).sum()
    return 2 * mask.sum() / perimeter if perimeter else 0.0


def normal_stroke(ink, clear):
    """INK (cropped) with a fine pen's stroke grown to STROKE_WIDTH at the 20-px scale, a heavy
    marker's thinned to HEAVY_STROKE (grey-level dilation or erosion); others as they are."""
    scale, width = max(ink.shape) / 20, stroke_width(clear)
    if 0 < width < STROKE_WIDTH * scale / 2:
        steps = round((STROKE_WIDTH * scale - width) / 2)
        return max_filter(np.pad(ink, steps), 2 * steps + 1)
    steps = round((width - HEAVY_STROKE * scale) / 2)
    if steps > 0 and (thinned := min_filter(ink, 2 * steps + 1)).max() > INK_THRESHOLD:
        return thinned
    return ink


def fit_in_field(ink):
    """Cropped ink in [0, 1] -> 28x28: the longer side scaled to 20 px, placed by its centre of mass."""
    scale = 20 / max(ink.shape)
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(ink.astype(np.float32)).resize(size, Image.BILINEAR))
    # Shrinking greys out thin strokes; MNIST strokes peak at full white, so stretch back.
    return place_by_centre_of_mass(np.clip(digit / digit.max(), 0, 1))


def place_by_centre_of_mass(digit):
    """Paste DIGIT (at most 20x20) into 28x28 so that its centre of mass lands at MNIST's."""
    canvas = np.zeros((28, 28))
    top, left = (offset(digit.sum(axis=1 - axis)) for axis in (0, 1))
    canvas[top:top + digit.shape[0], left:left + digit.shape[1]] = digit
    return canvas


def offset(mass):
    """Where a row or column profile MASS starts in 28 px so that its centre of mass lands at MNIST's."""
    centre = (mass * np.arange(len(mass))).sum() / mass.sum()
    return int(np.clip(round(MNIST_CENTRE - centre), 0, 28 - len(mass)))


def save_digit_png(digit, path):
    image = Image.fromarray(np.round(digit * 255).astype(np.uint8))
    atomic_write(path, lambda f: image.save(f, format="PNG"))
