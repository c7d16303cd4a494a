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
  canvas      dark ink on white paper, scaled 1-3x and placed off-centre in a larger image
  fonts       no MNIST image: digits 0-9 rendered at random sizes, slants and stroke widths,
              dark on white, from FONT_SET: the 16 text fonts that ship inside matplotlib
              (DejaVu Sans, Sans Mono and Serif, STIX General, four styles each), the same
              on every machine with the same matplotlib; the machine's own fonts are never read

Canvas and fonts are pages: both columns read them by images.to_mnist_digit(), as predict.py
reads a file. Through the product, as a user gets it, each corruption is drawn dark on a light
page 112 px per digit, placed off-centre, saved as JPEG and read so too; so are photos of the
clean digits on paper, each with its own seeded draws:

  marker      MNIST's own strokes, light paper grain (Gaussian, sd 6 grey levels of 255)
  fine_pen    a continuous 2-3 px line along the strokes' skeleton, light grain
  grain_25    a dim photo's grain: sd 25 grey levels
  grain_45    heavier grain: sd 45
  shadow      light falling from one side: the page from 235 to 120 across, light grain

Prints each score as the network sees it (the 28x28 image fed straight in; scores in the JSON)
and through the product (through_product), with the mean of the eight corruptions but clean
(corrupted_mean) and overall: their mean with the fonts. The JSON also holds the font set, its
count and fonts_sha256 (the files' names and bytes); --json prints it, --output writes it. The
same flags, fonts and weights give the same figures.
"""

import hashlib
import io
import itertools
import json
import sys
import time
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from data import DataError, ensure_mnist, read_splits, to_unit_interval, transform
from images import InputError, resize, to_gray_array, to_mnist_digit
from model import COMMITTED_WEIGHTS, WeightsError, load_model, normalize
from utils import OneLineErrorParser, atomic_write_json, bounded, output_file

# The font digits' fonts, pinned by name: files inside matplotlib (a requirement), read from its data
# folder only, so that the font score is the same on every machine; fonts_sha256 records their bytes.
FONT_SET = "matplotlib's DejaVu Sans, Sans Mono, Serif and STIX General, four styles each"
FONT_FILES = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
              "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
              "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
              "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta"]


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
    cross = (0, 0), (0, 1), (0, -1), (1, 0), (-1, 0)
    return torch.stack([padded[..., 1 + dy:29 + dy, 1 + dx:29 + dx] for dy, dx in cross]).amin(0)


def thick(images, generator):
    return F.max_pool2d(images, 3, stride=1, padding=1)


def blur(images, generator):
    sigmas = uniform(generator, len(images), 0.8, 1.3)
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    kernels = torch.exp(-offsets ** 2 / (2 * sigmas.view(-1, 1) ** 2))
    kernels = kernels / kernels.sum(1, keepdim=True)  # (N, 9), one 1-D Gaussian an image
    squares = (kernels[:, :, None] * kernels[:, None, :]).unsqueeze(1)  # (N, 1, 9, 9): both axes at once
    padded = F.pad(images, (4, 4, 4, 4), mode="replicate").transpose(0, 1)  # images as channels
    return F.conv2d(padded, squares, groups=len(images)).transpose(0, 1)


def noise(images, generator):
    sds = uniform(generator, len(images), 0.2, 0.35).view(-1, 1, 1, 1)
    return (images + sds * torch.randn(images.shape, generator=generator)).clamp(0, 1)


CORRUPTIONS = {"clean": lambda images, generator: images, "shift": shift, "rotate": rotate, "scale": scale,
               "thin": thin, "thick": thick, "blur": blur, "noise": noise}
PAGE_FIELD = 112  # px: the 28-px MNIST field drawn 4x on the page, a written digit in a phone photo
PAPER_GREY, SHADOW_GREY, INK_GREY = 235, 120, 30  # grey levels of 255: lit paper, the shadow's end, ink
LIGHT_GRAIN = 6  # sd of the page's Gaussian grain in grey levels: a well-lit photo
JPEG_QUALITY = 85
# Photos of the clean digits on paper (a marker, MNIST's own strokes, unless a pen is named)
PAPER = {"marker": {}, "fine_pen": {"pen": True}, "grain_25": {"grain": 25}, "grain_45": {"grain": 45},
         "shadow": {"shadow": True}}
KINDS = [*CORRUPTIONS, "canvas", *PAPER]  # a kind's index here seeds its draws


def corrupted(images, name, seed=0):
    """IMAGES ([0, 1], N x 1 x 28 x 28) corrupted by CORRUPTIONS[NAME], with its seeded draws."""
    generator = torch.Generator().manual_seed(seed * 1000 + KINDS.index(name))
    return CORRUPTIONS[name](images, generator).clamp(0, 1)


def pages(images, name, seed=0):
    """Kind NAME of IMAGES as pages, [0, 1] grey arrays as predict.py loads a file: a corruption
    photographed without grain, the canvas, or the clean IMAGES photographed in a PAPER style."""
    rng = np.random.default_rng([seed, KINDS.index(name)])
    if name == "canvas":
        return canvas(images, rng)
    if name in PAPER:
        return photographed(images, rng, **PAPER[name])
    return photographed(corrupted(images, name, seed), rng, grain=0)


def canvas(images, rng):
    """Dark ink on white paper, scaled 1-3x, somewhere in a larger image."""
    for image in images[:, 0].numpy():
        factor = int(rng.integers(1, 4))
        ink = np.kron(image, np.ones((factor, factor)))
        size = ink.shape[0] + int(rng.integers(20, 80))
        paper = np.ones((size, size + int(rng.integers(0, 40))))
        top, left = (int(rng.integers(0, paper.shape[i] - ink.shape[i] + 1)) for i in (0, 1))
        paper[top:top + ink.shape[0], left:left + ink.shape[1]] = 1 - ink
        yield paper


def photographed(images, rng, grain=LIGHT_GRAIN, shadow=False, pen=False):
    """Each of IMAGES (N x 1 x 28 x 28, light ink) as a user's JPEG photo: drawn dark on a light
    page at PAGE_FIELD px, off-centre, with Gaussian GRAIN (grey levels); with SHADOW the light falls
    from one side (the page from PAPER_GREY to SHADOW_GREY across); with PEN a 2-3 px line traces
    the strokes."""
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
    Image.fromarray(page.round().clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return to_gray_array(Image.open(buffer))


# A pixel's 8 neighbours, clockwise from north: bit i of its neighbourhood's byte is NEIGHBOURS[i].
NEIGHBOURS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))


def thinning_tables():
    """Zhang and Suen's (1984) two sub-iterations as tables over the 256 neighbourhoods: an ink
    pixel is peeled off if it has 2-6 ink neighbours, they form one run around it, and (first)
    north-east-south and east-south-west or (second) north-east-west and north-south-west are
    not all ink."""
    codes = torch.arange(256)
    n = [(codes >> bit) & 1 for bit in range(8)]
    count = sum(n)
    runs = sum((1 - n[i]) * n[(i + 1) % 8] for i in range(8))
    peelable = (count >= 2) & (count <= 6) & (runs == 1)
    first = peelable & (n[0] * n[2] * n[4] == 0) & (n[2] * n[4] * n[6] == 0)
    second = peelable & (n[0] * n[2] * n[6] == 0) & (n[0] * n[4] * n[6] == 0)
    return first, second


THINNING = thinning_tables()


def skeleton(masks):
    """Boolean masks (..., H, W) thinned to 8-connected lines 1 px wide, their connectivity
    kept (Zhang and Suen, 1984): each sub-iteration reads every pixel's neighbourhood as a
    byte and peels off what its table says, until neither peels any more. All masks at
    once, on their device; a mask that is done is left out of the next rounds."""
    shape, (height, width) = masks.shape, masks.shape[-2:]
    mask = masks.reshape(-1, height, width).to(torch.uint8)
    tables = [table.to(mask.device) for table in THINNING]
    active = torch.arange(len(mask), device=mask.device)
    while len(active):
        peeled = torch.zeros(len(active), dtype=torch.bool, device=mask.device)
        for table in tables:
            part = mask[active]
            padded = F.pad(part, (1, 1, 1, 1))
            codes = torch.zeros_like(part)
            for bit, (dy, dx) in enumerate(NEIGHBOURS):
                codes += padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width] << bit
            peel = part.bool() & table[codes.long()]
            mask[active] = part.masked_fill(peel, 0)
            peeled |= peel.flatten(1).any(1)
        active = active[peeled]
    return mask.bool().reshape(shape)


def pen_line(mask, width):
    """MASK's strokes as a continuous line WIDTH px wide: its skeleton, each pixel a WIDTH x WIDTH square."""
    line = skeleton(torch.from_numpy(mask)).numpy()
    grown = np.zeros_like(line)
    for dy, dx in itertools.product(range(width), repeat=2):
        grown[dy:, dx:] |= line[:line.shape[0] - dy, :line.shape[1] - dx]
    return grown


def font_files():
    return [Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf" for name in sorted(FONT_FILES)]


def font_pages(count, seed):
    """COUNT (page, label) pairs: the digits 0-9 in turn, dark on white, each in a font of FONT_SET
    at a random size, slant and stroke width."""
    rng, fonts = np.random.default_rng(seed), font_files()
    for i in range(count):
        font = ImageFont.truetype(str(fonts[int(rng.integers(len(fonts)))]), int(rng.integers(18, 72)))
        stroke = int(rng.integers(0, 3)) * max(1, font.size // 24)
        yield 1 - np.asarray(render(font, str(i % 10), float(rng.uniform(-0.35, 0.35)), stroke)) / 255, i % 10


def render(font, text, slant, stroke):
    """TEXT in FONT, ink 255 on 0, sheared by SLANT (x shifts by SLANT per row)."""
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    size = (right - left + 20, bottom - top + 20)
    image = Image.new("L", size, 0)
    ImageDraw.Draw(image).text((10 - left, 10 - top), text, fill=255, font=font, stroke_width=stroke,
                               stroke_fill=255)
    width, offset = size[0] + int(abs(slant) * size[1]), -slant * size[1] if slant > 0 else 0
    return image.transform((width, size[1]), Image.AFFINE, (1, slant, offset, 0, 1, 0), Image.BILINEAR)


def prepared(grays):
    """GRAYS read by images.to_mnist_digit() as an N x 1 x 28 x 28 batch; no ink: a blank digit."""
    return torch.from_numpy(np.stack([read_page(gray) for gray in grays])).float().unsqueeze(1)


def read_page(gray):
    try:
        return to_mnist_digit(gray)
    except InputError:
        return np.zeros((28, 28))


def product_digits(images, seed=0, names=KINDS):
    """(name, N x 1 x 28 x 28 batch) for each of NAMES: IMAGES' pages() as predict.py reads them.
    Each name has its own seeded draws, so any subset reads the same digits."""
    for name in names:
        yield name, prepared(pages(images, name, seed))


@torch.inference_mode()
def accuracy(model, images, labels, batch_size=1000):
    """% of IMAGES ([0, 1], N x 1 x 28 x 28) that MODEL reads as LABELS."""
    predictions = torch.cat([model(normalize(batch)).argmax(1) for batch in images.split(batch_size)])
    return 100 * int((predictions == labels).sum()) / len(labels)


def benchmark(model, pixels, labels, seed=0, font_count=2000):
    """({kind: accuracy %} as the network sees it, the same through the product) on PIXELS (uint8,
    N x 28 x 28) and LABELS, and on FONT_COUNT font digits; canvas and fonts are read once for both."""
    images = to_unit_interval(pixels)
    product = {name: accuracy(model, digits, labels) for name, digits in product_digits(images, seed)}
    grays, font_labels = zip(*font_pages(font_count, seed))
    product["fonts"] = accuracy(model, prepared(grays), torch.tensor(font_labels))
    seen = {name: accuracy(model, corrupted(images, name, seed), labels) for name in CORRUPTIONS}
    seen.update(canvas=product["canvas"], fonts=product["fonts"])
    parts = [score for name, score in seen.items() if name not in ("clean", "fonts")]  # the 8 corruptions
    seen["corrupted_mean"] = sum(parts) / len(parts)
    seen["overall"] = (sum(parts) + seen["fonts"]) / (len(parts) + 1)
    return seen, product


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(COMMITTED_WEIGHTS), help="weights.pt of either network")
    p.add_argument("--split", choices=["test", "val"], default="test",
                   help="val: the last --holdout training images, for choosing a recipe")
    p.add_argument("--holdout", type=bounded(int, 1, 59000),
                   help="with --split val: the run's --holdout (default 10000)")
    p.add_argument("--count", type=bounded(int, 1, 10000), default=1000, help="images per corruption")
    p.add_argument("--font-count", type=bounded(int, 1), default=2000, help="font-rendered digits")
    p.add_argument("--seed", type=bounded(int, 0), default=0, help="the benchmark's draws, not the model's")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--output", type=output_file, metavar="PATH", help="also write them here, as JSON")
    args = p.parse_args(argv)
    if args.holdout and args.split != "val":
        p.error("--holdout applies to --split val only")
    args.holdout = args.holdout or 10000
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        model = load_model(args.weights)
        ensure_mnist(args.data_dir)
        _, (pixels, labels) = read_splits(args.data_dir, args.holdout if args.split == "val" else 0)
        pixels, labels = pixels[:args.count], labels[:args.count]
        scores, product = benchmark(model, pixels, labels, args.seed, args.font_count)
        weights_sha256 = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
        result = {"weights": str(args.weights), "weights_sha256": weights_sha256, "split": args.split,
                  "count": len(labels), "seed": args.seed, "font_count": args.font_count,
                  "font_set": f"{FONT_SET}, matplotlib {matplotlib.__version__}", "fonts": len(FONT_FILES),
                  "fonts_sha256": files_digest(font_files()), "scores": scores, "through_product": product,
                  "seconds": time.perf_counter() - start}
        print(json.dumps(result, indent=2) if args.json else table(result))
        if args.output:
            atomic_write_json(args.output, result)
    except (WeightsError, DataError, OSError) as error:
        sys.exit(f"robustness.py: error: {error}")
    return scores


def table(result):
    """RESULT's scores as text: a row per kind, as the network sees it and through the product."""
    seen, product, r = result["scores"], result["through_product"], result
    rows = [f"{'% read right':15} {'network':>8} {'product':>8}"]
    for name in [*product, "corrupted_mean", "overall"]:
        rows.append(f"{name:15} " + " ".join(f"{column[name]:8.2f}" if name in column else f"{'-':>8}"
                                             for column in (seen, product)))
    rows.append(f"{r['weights']}: {r['count']} {r['split']} images per kind, {r['font_count']} font digits "
                f"from {r['font_set']}, {r['seconds']:.1f} s")
    return "\n".join(rows)


def files_digest(paths):
    """One SHA-256 over the files' names and bytes: the same font files, the same digest (fonts_sha256)."""
    return hashlib.sha256(b"".join(path.name.encode() + path.read_bytes() for path in paths)).hexdigest()


if __name__ == "__main__":
    main()
