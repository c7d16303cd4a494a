"""The in-memory loader against the torchvision pipeline it replaces."""

import pytest
import torch
from torchvision import datasets, transforms
from torchvision.transforms import functional as TF

from conftest import synthetic_digits
from loaders import InMemoryLoader, make_loaders, normalize, random_rotation, rotate, to_unit_interval

CPU = torch.device("cpu")


def epoch_labels(loader):
    return torch.cat([labels for _, labels in loader]).tolist()


def numbered_loader(seed, count=300, batch_size=64, rotation=0.0):
    """A loader whose labels are the images' indices, so an epoch's order can be read off."""
    pixels = torch.zeros(count, 28, 28, dtype=torch.uint8)
    return InMemoryLoader(pixels, torch.arange(count), batch_size, CPU, shuffle=True,
                          rotation=rotation, seed=seed)


def test_every_training_image_once_per_epoch_in_a_fresh_seeded_order():
    loader = numbered_loader(seed=1)
    first, second = epoch_labels(loader), epoch_labels(loader)
    assert len(loader) == 5 and [len(labels) for _, labels in loader] == [64, 64, 64, 64, 44]
    assert sorted(first) == sorted(second) == list(range(300))
    assert first != list(range(300)) and second != first
    assert epoch_labels(numbered_loader(seed=1)) == first
    assert epoch_labels(numbered_loader(seed=2)) != first


def test_test_split_is_served_in_order():
    loader = InMemoryLoader(torch.zeros(100, 28, 28, dtype=torch.uint8), torch.arange(100), 30, CPU)
    assert epoch_labels(loader) == epoch_labels(loader) == list(range(100))


def test_augmentation_keeps_shape_dtype_range_and_labels():
    images, labels = synthetic_digits(200, seed=0)
    pixels, labels = torch.from_numpy(images), torch.from_numpy(labels)
    plain = InMemoryLoader(pixels, labels, 50, CPU, shuffle=True, seed=5)
    rotated = InMemoryLoader(pixels, labels, 50, CPU, shuffle=True, rotation=15, seed=5)
    black, white = normalize(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)).flatten().tolist()
    for (plain_images, plain_labels), (images, labels) in zip(plain, rotated):
        assert images.shape == plain_images.shape == (50, 1, 28, 28)
        assert images.dtype == torch.float32
        assert images.min() >= black and images.max() <= white
        assert torch.equal(labels, plain_labels)  # the same images, in the same order
        changed = (images != plain_images).flatten(1).any(1)
        # Most images moved; nearest-neighbour rotation by under ~2 degrees leaves 28x28 pixels in place.
        assert changed.float().mean() > 0.6


@pytest.mark.parametrize("angle", [7.0, -7.0, 3.5, -20.0])
def test_rotation_matches_torchvisions_rotate(angle):
    """Same direction, centre, nearest sampling and black fill as transforms.RandomRotation
    on PIL images; pixels may differ only where nearest-neighbour rounding ties."""
    images, _ = synthetic_digits(20, seed=3)
    pixels = torch.from_numpy(images)
    ours = rotate(to_unit_interval(pixels), torch.full((20,), angle))
    theirs = torch.stack([transforms.ToTensor()(TF.rotate(TF.to_pil_image(p), angle)) for p in pixels])
    assert (ours == theirs).float().mean() > 0.99
    mirrored = rotate(to_unit_interval(pixels), torch.full((20,), -angle))
    assert (mirrored == theirs).float().mean() < 0.95


def test_random_rotation_draws_each_angle_from_the_generator():
    images = to_unit_interval(torch.from_numpy(synthetic_digits(30, seed=4)[0]))
    runs = [random_rotation(images, 10, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    same_digit = images[:1].expand(30, -1, -1, -1)
    assert random_rotation(same_digit, 10, torch.Generator()).unique(dim=0).shape[0] > 20  # 30 angles


def test_both_loaders_give_the_same_normalized_test_tensors(synthetic_mnist):
    test_loaders = [make_loaders(kind, synthetic_mnist, 32, 30, 7.0, 1, CPU)[1]
                    for kind in ("in-memory", "torchvision")]
    (memory_images, memory_labels), (pil_images, pil_labels) = (
        [torch.cat(parts) for parts in zip(*loader)] for loader in test_loaders)
    assert memory_images.shape == (100, 1, 28, 28)
    assert torch.equal(memory_images, pil_images) and torch.equal(memory_labels, pil_labels)


@pytest.mark.parametrize("kind", ["in-memory", "torchvision"])
def test_train_limit_keeps_the_first_images(synthetic_mnist, kind):
    train_loader, _ = make_loaders(kind, synthetic_mnist, 32, 50, 0.0, 1, CPU, train_limit=64)
    first_64 = datasets.MNIST(synthetic_mnist, train=True).targets[:64]
    assert len(train_loader) == 2
    assert sorted(epoch_labels(train_loader)) == sorted(first_64.tolist())
