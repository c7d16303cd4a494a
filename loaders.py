"""MNIST for train.py: each split held once as a uint8 tensor on the training device.

The training set is 47 MB. Every batch is sliced from it, augmented and
normalized there as one tensor, so the device spends its time on the network,
not on 64 PIL images per batch (bench/pipelines.py keeps the classic PIL and
DataLoader pipeline, for comparison).

The augmentation draws, for each training image, an angle uniform in
[-rotation, rotation] degrees and, where asked, a shift of up to `translate`
of the image size on each axis and a zoom in [1 - scale, 1 + scale]; the
image is resampled about its centre (nearest or bilinear), and what comes in
from outside is black. Nearest rotation alone is transforms.RandomRotation's
default. All draws come from one seeded CPU generator, so a run's data is the
same on every device and its state alone decides an epoch (checkpoint.py).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from data import read_split
from model import normalize


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
        Only the enabled parts draw, so adding one leaves the others' draws unchanged."""
        count = len(images)
        angles = torch.empty(count).uniform_(-self.rotation, self.rotation, generator=generator)
        shifts = (torch.empty(count, 2).uniform_(-self.translate, self.translate, generator=generator)
                  if self.translate else None)
        zooms = (torch.empty(count).uniform_(1 - self.scale, 1 + self.scale, generator=generator)
                 if self.scale else None)
        to = images.device
        return transform(images, angles.to(to), None if shifts is None else shifts.to(to),
                         None if zooms is None else zooms.to(to), self.interpolation)


def transform(images, angles, shifts=None, zooms=None, mode="nearest"):
    """Rotate image i counter-clockwise by angles[i] degrees about its centre (as
    torchvision's rotate does), zoom it by zooms[i] and shift it by shifts[i]
    (fractions of its width and height); what comes in from outside is 0."""
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
    decides an epoch's data, so checkpoint.py saves it to resume bit for bit.
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
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = to_unit_interval(self.pixels[index])
            if self.augment:
                images = self.augment(images, self.generator)
            yield normalize(images), self.labels[index]


def read_splits(data_dir, holdout=0):
    """((train pixels, labels), (evaluation pixels, labels)): with HOLDOUT = N, the last N
    training images are held out and evaluated instead of the test set, so that a recipe
    can be chosen without looking at the test set."""
    train_pixels, train_labels = read_split(data_dir, train=True)
    kept = len(train_labels) - holdout
    if holdout:
        return (train_pixels[:kept], train_labels[:kept]), (train_pixels[kept:], train_labels[kept:])
    return (train_pixels, train_labels), read_split(data_dir, train=False)


def make_loaders(data_dir, device, *, batch_size, test_batch_size, augment, seed, holdout=0):
    """(train loader, evaluation loader), both in memory on DEVICE.

    The training set is shuffled every epoch in an order fixed by SEED, and augmented
    by AUGMENT.
    """
    (train_pixels, train_labels), (eval_pixels, eval_labels) = read_splits(data_dir, holdout)
    return (InMemoryLoader(train_pixels, train_labels, batch_size, device, shuffle=True, augment=augment,
                           seed=seed),
            InMemoryLoader(eval_pixels, eval_labels, test_batch_size, device))
