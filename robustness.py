"""How well a trained model reads digits that are not quite MNIST's: a fixed, seeded benchmark.

    python robustness.py                                    # the committed weights, on test images
    python robustness.py --weights runs/default/seed2/weights.pt --split val --output robust.json

In the style of MNIST-C, every corruption is applied to the same COUNT images of the
split (the test set, or with --split val the last --holdout training images, which a
--holdout run never trained on), each with its own seeded random draws:

  shift       moved 3-5 px on each axis, not re-centred
  rotate      rotated 15-35 degrees either way
  scale       shrunk to 0.55-0.75 or grown to 1.2-1.4 of its size
  thin        strokes eroded (grey-level minimum over a 3x3 cross)
  thick       strokes dilated (grey-level maximum over a 3x3 square)
  blur        Gaussian blur, sigma 0.8-1.3 px
  noise       Gaussian noise, sd 0.2-0.35 of full scale, clipped
  canvas      dark ink on white paper, scaled 1-3x and placed off-centre in a larger
              image, then read by contrast_digit()
  fonts       no MNIST image: digits 0-9 rendered from the fonts installed on the machine
              (and matplotlib's), at random sizes, slants and stroke widths, dark on
              white, read by contrast_digit()

contrast_digit() is the preparation predict.py had before images.py found ink as a
document scanner does; these scores keep it, so that they compare with earlier ones.

Each is also reported through the product, as a user gets it: the corrupted digit drawn
dark on a light page 112 px per digit, placed off-centre, saved as JPEG and read by
images.to_mnist_digit() as predict.py reads a file (canvas and fonts: read by it); and
photos of the clean digits on paper, each with its own seeded draws:

  marker      MNIST's own strokes, light paper grain (Gaussian, sd 6 grey levels of 255)
  fine_pen    a continuous 2-3 px line along the strokes' skeleton, light grain
  grain_25    a dim photo's grain: sd 25 grey levels
  grain_45    heavier grain: sd 45
  shadow      light falling from one side: the page from 235 to 120 across, light grain

--preparation contrast reads them by contrast_digit() instead (before images.py's steps).

Prints every score through the product (through_product in the JSON), then as the network
sees it: accuracy per corruption, the mean over the MNIST-based ones (corrupted_mean), the
font score, and overall: the mean of the eight corruptions and the fonts (scores in the JSON;
--json prints the JSON, --output writes it). The same flags, fonts and weights give the same figures.
"""

import functools
import hashlib
import io
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from data import DataError, ensure_mnist, read_split, skeleton, to_unit_interval, transform
from images import (
    INK_THRESHOLD,
    MIN_CONTRAST,
    InputError,
    border,
    fit_in_field,
    resize,
    to_gray_array,
    to_mnist_digit,
)
from model import COMMITTED_WEIGHTS, WeightsError, load_model, normalize
from utils import OneLineErrorParser, atomic_write_json, bounded

FONT_FOLDERS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")


def uniform(generator, count, low, high, either_sign=False):
    """COUNT draws from [low, high], each negated with probability 1/2 if EITHER_SIGN."""
    values = torch.empty(count).uniform_(low, high, generator=generator)
    if either_sign:
        values *= torch.randint(0, 2, (count,), generator=generator) * 2 - 1
    return values


def shift(images, generator):
    """Each image moved by 3-5 px on both axes (either way), zeros coming in."""
    steps = uniform(generator, len(images) * 2, 3, 5, either_sign=True).round().view(-1, 2) / 28
    return transform(images, torch.zeros(len(images)), shifts=steps)


def rotate(images, generator):
    return transform(images, uniform(generator, len(images), 15, 35, either_sign=True), mode="bilinear")


def scale(images, generator):
    grow = torch.rand(len(images), generator=generator) < 0.5
    larger, smaller = uniform(generator, len(images), 1.2, 1.4), uniform(generator, len(images), 0.55, 0.75)
    zooms = torch.where(grow, larger, smaller)
    return transform(images, torch.zeros(len(images)), zooms=zooms, mode="bilinear")


def thin(images, generator):
    """Grey-level erosion over a 3x3 cross: each pixel the minimum of itself and its 4 neighbours."""
    padded = F.pad(images, (1, 1, 1, 1))
    cross = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))
    neighbours = [padded[..., 1 + dy:29 + dy, 1 + dx:29 + dx] for dy, dx in cross]
    return torch.stack(neighbours).amin(0)


def thick(images, generator):
    return F.max_pool2d(images, 3, stride=1, padding=1)


def blur(images, generator):
    sigmas = uniform(generator, len(images), 0.8, 1.3)
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    kernels = torch.exp(-offsets ** 2 / (2 * sigmas.view(-1, 1) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (N, 9), one 1-D Gaussian an image
    rows = F.conv2d(F.pad(images, (4, 4, 0, 0), mode="replicate").transpose(0, 1),
                    kernels.view(-1, 1, 1, 9), groups=len(images))
    columns = F.conv2d(F.pad(rows, (0, 0, 4, 4), mode="replicate"), kernels.view(-1, 1, 9, 1),
                       groups=len(images))
    return columns.transpose(0, 1)


def noise(images, generator):
    sds = uniform(generator, len(images), 0.2, 0.35).view(-1, 1, 1, 1)
    return (images + sds * torch.randn(images.shape, generator=generator)).clamp(0, 1)


def as_mnist(gray, prepare):
    """PREPARE(GRAY); an image in which it finds no ink becomes a blank digit."""
    try:
        return prepare(gray)
    except InputError:
        return np.zeros((28, 28))


def contrast_digit(gray):
    """predict.py's preparation before images.py found ink as a scanner does: the ink is what
    differs from the border's median, stretched to [0, 1] by the brightest pixel. The network
    column's canvas and fonts scores keep it, so that committed tables stay valid."""
    edge = border(gray)
    if np.median(edge) > 0.5:  # dark ink on light paper
        gray, edge = 1 - gray, 1 - edge
    background, brightest = np.median(edge), gray.max()
    if brightest - background < MIN_CONTRAST:
        raise InputError("no ink found (blank image)")
    ink = np.clip((gray - background) / (brightest - background), 0, 1)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    return fit_in_field(ink[rows.min():rows.max() + 1, cols.min():cols.max() + 1])


def canvas(images, generator, prepare=contrast_digit):
    """Dark ink on white paper, scaled 1-3x, somewhere in a larger image; then PREPARE."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=generator)))
    read = []
    for image in images[:, 0].numpy():
        factor = int(rng.integers(1, 4))
        ink = np.kron(image, np.ones((factor, factor)))
        size = ink.shape[0] + int(rng.integers(20, 80))
        paper = np.ones((size, size + int(rng.integers(0, 40))))
        top, left = (int(rng.integers(0, paper.shape[i] - ink.shape[i] + 1)) for i in (0, 1))
        paper[top:top + ink.shape[0], left:left + ink.shape[1]] = 1 - ink
        read.append(as_mnist(paper, prepare))
    return torch.from_numpy(np.stack(read)).float().unsqueeze(1)


CORRUPTIONS = {"clean": lambda images, generator: images, "shift": shift, "rotate": rotate, "scale": scale,
               "thin": thin, "thick": thick, "blur": blur, "noise": noise, "canvas": canvas}


@functools.lru_cache
def installed_fonts(folders=FONT_FOLDERS):
    """Font files that draw ten distinct digits, once each by file name: the machine's, and
    matplotlib's text fonts (its Computer Modern and other STIX files map digits to symbols)."""
    import matplotlib

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    candidates = [path for folder in folders if folder.is_dir() for path in sorted(folder.rglob("*"))]
    candidates += [path for path in sorted(bundled.glob("*")) if path.name.startswith(("DejaVu", "STIXGen"))]
    found = {}
    for path in candidates:
        if path.suffix.lower() in (".ttf", ".otf") and path.name not in found and draws_digits(path):
            found[path.name] = path
    return [found[name] for name in sorted(found)]


def draws_digits(path):
    try:
        font = ImageFont.truetype(str(path), 40)
    except OSError:
        return False
    glyphs = [render(font, str(digit), 0.0, 0).tobytes() for digit in range(10)]
    return len(set(glyphs)) == 10 and all(any(glyph) for glyph in glyphs)


def render(font, text, slant, stroke):
    """TEXT in FONT, ink 255 on 0, sheared by SLANT (x shifts by SLANT per row)."""
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    size = (right - left + 20, bottom - top + 20)
    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).text((10 - left, 10 - top), text, fill=255, font=font, stroke_width=stroke,
                               stroke_fill=255)
    width, offset = size[0] + int(abs(slant) * size[1]), -slant * size[1] if slant > 0 else 0
    return image.transform((width, size[1]), Image.AFFINE, (1, slant, offset, 0, 1, 0), Image.BILINEAR)


def font_digits(count, seed, fonts, prepare=contrast_digit):
    """COUNT (digit image, label) pairs from FONTS, read by PREPARE: no MNIST image."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(count):
        label, path = i % 10, fonts[int(rng.integers(len(fonts)))]
        font = ImageFont.truetype(str(path), int(rng.integers(18, 72)))
        stroke = int(rng.integers(0, 3)) * max(1, font.size // 24)
        ink = np.asarray(render(font, str(label), float(rng.uniform(-0.35, 0.35)), stroke), dtype=np.float64)
        images.append(as_mnist(1 - ink / 255, prepare))  # dark on white paper, as a user's scan
        labels.append(label)
    return torch.from_numpy(np.stack(images)).float().unsqueeze(1), torch.tensor(labels)


@torch.inference_mode()
def accuracy(model, images, labels, batch_size=1000):
    """% of IMAGES ([0, 1], N x 1 x 28 x 28) that MODEL reads as LABELS."""
    correct = 0
    for i in range(0, len(labels), batch_size):
        predictions = model(normalize(images[i:i + batch_size])).argmax(1)
        correct += int((predictions == labels[i:i + batch_size]).sum())
    return 100 * correct / len(labels)


def benchmark(model, pixels, labels, fonts, seed=0, font_count=2000):
    """{corruption: accuracy %} over PIXELS (uint8, N x 28 x 28) and the font digits."""
    images, scores = to_unit_interval(pixels), {}
    for index, (name, corrupt) in enumerate(CORRUPTIONS.items()):
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        scores[name] = accuracy(model, corrupt(images, generator).clamp(0, 1), labels)
    corrupted = [scores[name] for name in CORRUPTIONS if name != "clean"]
    scores["corrupted_mean"] = sum(corrupted) / len(corrupted)
    scores["fonts"] = accuracy(model, *font_digits(font_count, seed, fonts)) if fonts else None
    parts = [*corrupted, scores["fonts"]] if fonts else corrupted
    scores["overall"] = sum(parts) / len(parts)  # the eight corruptions and the fonts, equally
    return scores


PAGE_FIELD = 112  # px: the 28-px MNIST field drawn 4x on the page, a written digit in a phone photo
PAPER_GREY, SHADOW_GREY, INK_GREY = 235, 120, 30  # grey levels of 255: lit paper, the shadow's end, ink
LIGHT_GRAIN = 6  # sd of the page's Gaussian grain in grey levels: a well-lit photo
JPEG_QUALITY = 85
# Photos of the same digits on paper, by pen, light and grain (every other style: a marker,
# MNIST's own strokes, with light grain).
PAPER = {"marker": {}, "fine_pen": {"pen": True}, "grain_25": {"grain": 25}, "grain_45": {"grain": 45},
         "shadow": {"shadow": True}}


def photographed(images, rng, grain=LIGHT_GRAIN, shadow=False, pen=False):
    """Each of IMAGES (N x 1 x 28 x 28, light ink) as a user's JPEG photo: drawn dark on a light
    page at PAGE_FIELD px, off-centre, with Gaussian GRAIN (grey levels); with SHADOW the light falls
    from one side (the page from PAPER_GREY to SHADOW_GREY across); with PEN a 2-3 px line traces
    the strokes. Yields [0, 1] grayscale arrays, as load_grayscale() reads the files."""
    for image in images[:, 0].numpy():
        field = np.clip(resize(image, (PAGE_FIELD, PAGE_FIELD)), 0, 1)
        if pen:
            field = pen_line(field > 0.5, int(rng.integers(2, 4))).astype(np.float64)
        height, width = (PAGE_FIELD + int(rng.integers(30, 130)) for _ in range(2))
        top, left = (int(rng.integers(0, size - PAGE_FIELD + 1)) for size in (height, width))
        ink = np.zeros((height, width))
        ink[top:top + PAGE_FIELD, left:left + PAGE_FIELD] = field
        light = np.full(ink.shape, float(PAPER_GREY))
        if shadow:
            angle = rng.uniform(0, 2 * np.pi)
            rows, cols = np.mgrid[:height, :width]
            along = rows * np.sin(angle) + cols * np.cos(angle)
            light -= (PAPER_GREY - SHADOW_GREY) * (along - along.min()) / np.ptp(along)
        page = light * (1 - (1 - INK_GREY / PAPER_GREY) * ink) + rng.normal(0, grain, ink.shape)
        yield jpeg_round_trip(page)


def jpeg_round_trip(page):
    """PAGE (grey levels) saved as a JPEG and read back as [0, 1] grayscale."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.clip(np.round(page), 0, 255).astype(np.uint8))
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    with Image.open(buffer) as image:
        return to_gray_array(image)


def pen_line(mask, width):
    """MASK's strokes as a continuous line WIDTH px wide: its skeleton (data.skeleton), each pixel a
    WIDTH x WIDTH square."""
    line = skeleton(torch.from_numpy(mask)).numpy()
    grown = np.zeros_like(line)
    for dy, dx in itertools.product(range(width), repeat=2):
        grown[dy:, dx:] |= line[:line.shape[0] - dy, :line.shape[1] - dx]
    return grown


def prepared(grays, prepare):
    """GRAYS read by PREPARE as an N x 1 x 28 x 28 batch."""
    return torch.from_numpy(np.stack([as_mnist(gray, prepare) for gray in grays])).float().unsqueeze(1)


def through_product(model, pixels, labels, fonts, seed=0, font_count=2000, prepare=to_mnist_digit):
    """{name: accuracy %} as users get it: every corruption of benchmark() (its same draws) drawn
    on a page and photographed, the canvas and the font digits, and the PAPER styles of the clean
    digits, each read through PREPARE as predict.py reads a file."""
    digits = product_digits(to_unit_interval(pixels), seed, prepare)
    scores = {name: accuracy(model, read, labels) for name, read in digits}
    scores["fonts"] = accuracy(model, *font_digits(font_count, seed, fonts, prepare)) if fonts else None
    return {name: scores[name] for name in (*CORRUPTIONS, "fonts", *PAPER)}


def product_digits(images, seed=0, prepare=to_mnist_digit, names=(*CORRUPTIONS, *PAPER)):
    """(name, N x 1 x 28 x 28 batch) for each of NAMES, as predict.py reads it through PREPARE:
    a corruption of IMAGES ([0, 1], N x 1 x 28 x 28; benchmark()'s draws) drawn on a page and
    photographed (canvas: placed on paper as it is), or the clean IMAGES photographed in a
    PAPER style. Each name has its own seeded draws, so any subset reads the same digits."""
    for index, (name, corrupt) in enumerate(CORRUPTIONS.items()):
        if name in names:
            generator = torch.Generator().manual_seed(seed * 1000 + index)
            if name == "canvas":
                yield name, canvas(images, generator, prepare)
            else:  # the corruption alone: no grain on top
                rng = np.random.default_rng([seed, index])
                yield name, prepared(photographed(corrupt(images, generator).clamp(0, 1), rng, 0), prepare)
    for index, (name, style) in enumerate(PAPER.items(), start=len(CORRUPTIONS)):
        if name in names:
            yield name, prepared(photographed(images, np.random.default_rng([seed, index]), **style), prepare)


PREPARATIONS = {"scanner": to_mnist_digit, "contrast": contrast_digit}


def split_images(data_dir, split, holdout, count):
    pixels, labels = read_split(data_dir, train=split == "val")
    if split == "val":
        pixels, labels = pixels[-holdout:], labels[-holdout:]
    return pixels[:count], labels[:count]


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(COMMITTED_WEIGHTS), help="weights.pt of either network")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="val: the last --holdout training images, for choosing a recipe")
    p.add_argument("--holdout", type=bounded(int, 1, 59000), default=10000)
    p.add_argument("--count", type=bounded(int, 1, 10000), default=1000, help="images per corruption")
    p.add_argument("--preparation", choices=sorted(PREPARATIONS), default="scanner",
                   help="how the product column reads a photo: images.py's (scanner) or the earlier one")
    p.add_argument("--font-count", type=bounded(int, 0), default=2000, help="font-rendered digits")
    p.add_argument("--seed", type=bounded(int, 0), default=0, help="the benchmark's draws, not the model's")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--output", metavar="PATH", help="also write them here, as JSON")
    args = p.parse_args(argv)
    if args.output and not Path(args.output).resolve().parent.is_dir():
        p.error(f"--output {args.output}: its folder does not exist")
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        model = load_model(args.weights)
        ensure_mnist(args.data_dir)
        pixels, labels = split_images(args.data_dir, args.split, args.holdout, args.count)
        fonts = installed_fonts()
        scores = benchmark(model, pixels, labels, fonts, args.seed, args.font_count)
        product = through_product(model, pixels, labels, fonts, args.seed, args.font_count,
                                  PREPARATIONS[args.preparation])
    except (WeightsError, DataError, OSError) as error:
        sys.exit(f"robustness.py: error: {error}")
    seconds = time.perf_counter() - start
    weights_sha256 = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
    result = {"weights": str(args.weights), "weights_sha256": weights_sha256, "split": args.split,
              "count": len(labels), "seed": args.seed, "font_count": args.font_count, "fonts": len(fonts),
              "fonts_sha256": fonts_digest(fonts), "scores": scores, "preparation": args.preparation,
              "through_product": product, "seconds": seconds}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"through the product: each digit photographed, read as predict.py reads it "
              f"({args.preparation})")
        for name, score in product.items():
            print(f"{name:15} {percent(score)}")
        print("as the network sees it: the 28x28 image fed straight in (canvas and fonts: contrast)")
        for name, score in scores.items():
            print(f"{name:15} {percent(score)}")
        print(f"{args.weights}: {len(labels)} {args.split} images per corruption, {args.font_count} font "
              f"digits from {len(fonts)} fonts, {seconds:.1f} s")
    if args.output:
        try:
            atomic_write_json(args.output, result)
        except OSError as error:
            sys.exit(f"robustness.py: error: {error}")
    return scores


def percent(score):
    return "n/a (no font found)" if score is None else f"{score:6.2f}%"


def fonts_digest(fonts):
    """One SHA-256 over the font files' names and bytes: the same digest, the same font digits."""
    digest = hashlib.sha256()
    for path in fonts:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


if __name__ == "__main__":
    main()
