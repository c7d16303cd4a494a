"""The two ways train.py can feed it MNIST (--loader), with the same normalized tensors.

in-memory (the default): each split is held once as a uint8 tensor on the
training device (47 MB for the training set). Every batch is sliced from it,
rotated and normalized there as one tensor, so the device spends its time on
the network, not on 64 PIL images per batch.

torchvision: the classic datasets.MNIST -> PIL transforms -> DataLoader pipeline,
one image at a time; kept so that the two can be compared (see bench.py).

Both read the files that data.py verified, through torchvision.datasets.MNIST.
Their augmentation is the same: each training image is rotated by its own angle,
uniform in [-rotation, rotation] degrees, about its centre, nearest-neighbour,
the corners filled black, which is what transforms.RandomRotation does by default.
"""

import math

import torch
import torch.nn.functional as F
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
LOADERS = ("in-memory", "torchvision")


def to_unit_interval(pixels):
    """uint8 (N, 28, 28) -> float (N, 1, 28, 28) in [0, 1], as transforms.ToTensor does."""
    return pixels.unsqueeze(1).float().div(255)


def normalize(images):
    """[0, 1] images -> zero mean, unit variance over MNIST, as transforms.Normalize does."""
    return TF.normalize(images, [MNIST_MEAN], [MNIST_STD])


def random_rotation(images, degrees, generator):
    """Rotate each image of an (N, 1, H, W) batch by its own angle drawn from GENERATOR."""
    angles = torch.empty(len(images), device=images.device).uniform_(-degrees, degrees, generator=generator)
    return rotate(images, angles)


def rotate(images, angles):
    """Rotate image i counter-clockwise by angles[i] degrees about its centre, as
    torchvision.transforms.functional.rotate does; what comes in from outside is 0."""
    radians = torch.deg2rad(angles)
    cos, sin, zero = radians.cos(), radians.sin(), torch.zeros_like(radians)
    # affine_grid maps each output pixel to where it samples the input: the inverse rotation.
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class InMemoryLoader:
    """Batches of (images, labels) from one split held on DEVICE.

    With shuffle, every pass is a fresh permutation drawn from `self.generator`
    (seeded, on DEVICE), which also draws the rotation angles: its state alone
    decides an epoch's data, so checkpoint.py saves it to resume bit for bit.
    """

    def __init__(self, pixels, labels, batch_size, device, shuffle=False, rotation=0.0, seed=0):
        self.pixels, self.labels = pixels.to(device), labels.to(device)
        self.batch_size, self.shuffle, self.rotation = batch_size, shuffle, rotation
        self.generator = torch.Generator(device).manual_seed(seed)

    def __len__(self):
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self):
        count, device = len(self.labels), self.labels.device
        order = (torch.randperm(count, generator=self.generator, device=device) if self.shuffle
                 else torch.arange(count, device=device))
        for start in range(0, count, self.batch_size):
            index = order[start:start + self.batch_size]
            images = to_unit_interval(self.pixels[index])
            if self.rotation:
                images = random_rotation(images, self.rotation, self.generator)
            yield normalize(images), self.labels[index]


def make_loaders(kind, data_dir, batch_size, test_batch_size, rotation, seed, device,
                 num_workers=0, train_limit=None):
    """(train loader, test loader) of the KIND in LOADERS. The training set is
    shuffled every epoch on every device, in an order fixed by SEED; TRAIN_LIMIT
    keeps only the first images of the training set (bench.py's short runs)."""
    train_set, test_set = (datasets.MNIST(data_dir, train=train) for train in (True, False))
    if kind == "in-memory":
        train_loader = InMemoryLoader(train_set.data[:train_limit], train_set.targets[:train_limit],
                                      batch_size, device, shuffle=True, rotation=rotation, seed=seed)
        return train_loader, InMemoryLoader(test_set.data, test_set.targets, test_batch_size, device)
    to_tensor = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    augment = [transforms.RandomRotation((-rotation, rotation), fill=0)] if rotation else []
    train_set.transform = transforms.Compose(augment + to_tensor)
    test_set.transform = transforms.Compose(to_tensor)
    if train_limit is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(train_limit, len(train_set))))
    common = dict(num_workers=num_workers, pin_memory=device.type == "cuda")
    shuffle_order = torch.Generator().manual_seed(seed)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=shuffle_order, **common)
    return train_loader, torch.utils.data.DataLoader(test_set, batch_size=test_batch_size, **common)
