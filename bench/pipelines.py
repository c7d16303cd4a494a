"""The classic input pipeline, kept to compare train.py's in-memory loader against (step.py).

torchvision's way: each digit a PIL image, rotated (or moved) by transforms, turned into
a tensor and normalized one at a time, and batched by a DataLoader. It serves the same
images as loaders.make_loaders, with the same normalization, in another random order.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import read_splits  # noqa: E402 (the project's modules are one folder up)
from model import MNIST_MEAN, MNIST_STD  # noqa: E402


def torchvision_loaders(data_dir, device, *, batch_size, test_batch_size, augment, seed, holdout=0,
                        train_limit=None):
    """(train loader, evaluation loader) as loaders.make_loaders's, through PIL and a DataLoader.
    Workers pay off where they overlap a GPU; on a 2-core CPU they measured no gain."""
    from torchvision import transforms

    (train_pixels, train_labels), evaluation = read_splits(data_dir, holdout)
    to_tensor = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    common = dict(num_workers=2 if device.type == "cuda" else 0, pin_memory=device.type == "cuda")
    train_set = PilDigits(train_pixels[:train_limit], train_labels[:train_limit],
                          transforms.Compose((moves(augment) if augment else []) + to_tensor))
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True,
                                               generator=torch.Generator().manual_seed(seed), **common)
    eval_loader = torch.utils.data.DataLoader(PilDigits(*evaluation, transforms.Compose(to_tensor)),
                                              batch_size=test_batch_size, **common)
    return train_loader, eval_loader


def moves(augment):
    """torchvision's transforms for an Augmentation: RandomRotation, or RandomAffine to shift or zoom."""
    from torchvision import transforms

    mode = transforms.InterpolationMode(augment.interpolation)
    if augment.translate or augment.scale:
        return [transforms.RandomAffine(
            augment.rotation, translate=(augment.translate,) * 2 if augment.translate else None,
            scale=(1 - augment.scale, 1 + augment.scale) if augment.scale else None, interpolation=mode)]
    return [transforms.RandomRotation((-augment.rotation, augment.rotation), mode, fill=0)]


class PilDigits(torch.utils.data.Dataset):
    """(transform(PIL image), label) pairs, as torchvision.datasets.MNIST serves them."""

    def __init__(self, pixels, labels, transform):
        self.pixels, self.labels, self.transform = pixels, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image

        return self.transform(Image.fromarray(self.pixels[i].numpy(), mode="L")), int(self.labels[i])
