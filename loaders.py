"""The two ways train.py can feed it MNIST (--loader), with the same normalized tensors.

in-memory (the default): each split is held once as a uint8 tensor on the
training device (47 MB for the training set). Every batch is sliced from it,
augmented and normalized there as one tensor, so the device spends its time on
the network, not on 64 PIL images per batch.

torchvision: the classic datasets.MNIST -> PIL transforms -> DataLoader pipeline,
one image at a time; kept so that the two can be compared (see bench.py).

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

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LOADERS = ("in-memory", "torchvision")


def to_unit_interval(pixels):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], as transforms.ToTensor does."""
    return pixels.unsqueeze(1).float().div(255)


def normalize(images):
    """[0, 1] images -> zero mean, unit variance over MNIST, as transforms.Normalize does
    (bit for bit), without its per-batch copies of mean and std to the device."""
    return (images - MNIST_MEAN) / MNIST_STD


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


def make_loaders(kind, data_dir, device, *, batch_size, test_batch_size, augment, seed,
                 holdout=0, num_workers=0, train_limit=None):
    """(train loader, evaluation loader) of the KIND in LOADERS.

    The training set is shuffled every epoch in an order fixed by SEED. With
    HOLDOUT = N, the last N training images are held out and evaluated instead of
    the test set, so that a recipe can be chosen without looking at the test set.
    TRAIN_LIMIT keeps only the first training images (bench.py's short runs).
    """
    train_pixels, train_labels = read_split(data_dir, train=True)
    kept = len(train_labels) - holdout
    if holdout:
        eval_pixels, eval_labels = train_pixels[kept:], train_labels[kept:]
    else:
        eval_pixels, eval_labels = read_split(data_dir, train=False)
    train_pixels, train_labels = train_pixels[:kept][:train_limit], train_labels[:kept][:train_limit]
    if kind == "in-memory":
        return (InMemoryLoader(train_pixels, train_labels, batch_size, device, shuffle=True,
                               augment=augment, seed=seed),
                InMemoryLoader(eval_pixels, eval_labels, test_batch_size, device))
    return torchvision_loaders((train_pixels, train_labels), (eval_pixels, eval_labels), device,
                               batch_size, test_batch_size, augment, seed, num_workers)


def torchvision_loaders(train_split, eval_split, device, batch_size, test_batch_size, augment, seed,
                        num_workers):
    """The classic pipeline over the same images: PIL transforms, one image at a time."""
    from torchvision import transforms

    to_tensor = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    mode = transforms.InterpolationMode(augment.interpolation)
    if augment.translate or augment.scale:
        moves = [transforms.RandomAffine(
            augment.rotation, translate=(augment.translate,) * 2 if augment.translate else None,
            scale=(1 - augment.scale, 1 + augment.scale) if augment.scale else None, interpolation=mode)]
    else:
        moves = [transforms.RandomRotation((-augment.rotation, augment.rotation), mode, fill=0)]
    common = dict(num_workers=num_workers, pin_memory=device.type == "cuda")
    shuffle_order = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        PilDigits(*train_split, transforms.Compose((moves if augment else []) + to_tensor)),
        batch_size=batch_size, shuffle=True, generator=shuffle_order, **common)
    return train_loader, torch.utils.data.DataLoader(
        PilDigits(*eval_split, transforms.Compose(to_tensor)), batch_size=test_batch_size, **common)


class PilDigits(torch.utils.data.Dataset):
    """(transform(PIL image), label) pairs, as torchvision.datasets.MNIST serves them."""

    def __init__(self, pixels, labels, transform):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.pixels[i].numpy(), mode="L")), int(self.labels[i])
