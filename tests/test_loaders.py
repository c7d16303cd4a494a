"""The in-memory loader, against torchvision's transforms, which it replaces."""

import pytest
import torch
from torchvision import transforms
from torchvision.transforms import functional as TF

from conftest import synthetic_digits
from data import (
    Augmentation,
    InMemoryLoader,
    make_loaders,
    normalized,
    read_split,
    to_unit_interval,
    transform,
)
from model import normalize

CPU = torch.device("cpu")
ROTATION = Augmentation(rotation=7.0)


def epoch_labels(loader):
    return torch.cat([labels for _, labels in loader]).tolist()


def numbered_loader(seed, count=300, batch_size=64):
    """A loader whose labels are the images' indices, so an epoch's order can be read off."""
    pixels = torch.zeros(count, 28, 28, dtype=torch.uint8)
    return InMemoryLoader(pixels, torch.arange(count), batch_size, CPU, shuffle=True, seed=seed)


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


def test_normalize_is_bitwise_torchvisions():
    images = to_unit_interval(torch.from_numpy(synthetic_digits(50, seed=2)[0]))
    assert torch.equal(normalize(images), TF.normalize(images, [0.1307], [0.3081]))


@pytest.mark.parametrize("augment", [Augmentation(rotation=15), Augmentation(5, 0.05, 0.1, "bilinear")])
def test_augmentation_keeps_shape_dtype_range_and_labels(augment):
    images, labels = synthetic_digits(200, seed=0)
    pixels, labels = torch.from_numpy(images), torch.from_numpy(labels)
    plain = InMemoryLoader(pixels, labels, 50, CPU, shuffle=True, seed=5)
    moved = InMemoryLoader(pixels, labels, 50, CPU, shuffle=True, augment=augment, seed=5)
    black, white = normalize(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)).flatten().tolist()
    for (plain_images, plain_labels), (images, labels) in zip(plain, moved):
        assert images.shape == plain_images.shape == (50, 1, 28, 28)
        assert images.dtype == torch.float32
        assert images.min() >= black - 1e-6 and images.max() <= white + 1e-6
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
    ours = transform(to_unit_interval(pixels), torch.full((20,), angle))
    theirs = torch.stack([transforms.ToTensor()(TF.rotate(TF.to_pil_image(p), angle)) for p in pixels])
    assert (ours == theirs).float().mean() > 0.99
    mirrored = transform(to_unit_interval(pixels), torch.full((20,), -angle))
    assert (mirrored == theirs).float().mean() < 0.95


def test_shift_and_zoom_move_the_ink_as_asked():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 12:16, 12:16] = 1.0  # a 4x4 square about the centre
    none = torch.zeros(1)
    shifted = transform(image, none, shifts=torch.tensor([[0.25, -0.25]]))  # 7 px right, 7 px up
    assert torch.equal(shifted[0, 0, 5:9, 19:23], torch.ones(4, 4)) and shifted.sum() == 16
    zoomed = transform(image, none, zooms=torch.tensor([2.0]), mode="bilinear")
    assert zoomed.sum().item() == pytest.approx(64, rel=0.05)  # twice as wide and tall


def test_augmentation_draws_from_the_generator_and_only_what_is_enabled():
    images = to_unit_interval(torch.from_numpy(synthetic_digits(30, seed=4)[0]))
    augment = Augmentation(10, 0.05, 0.1, "bilinear")
    runs = [augment(images, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
    same_digit = images[:1].expand(30, -1, -1, -1)
    assert Augmentation(10)(same_digit, torch.Generator()).unique(dim=0).shape[0] > 20  # 30 angles
    rotation_only, with_none_enabled = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    Augmentation(10)(images, rotation_only)
    Augmentation(10, 0.0, 0.0, "bilinear")(images, with_none_enabled)
    assert torch.equal(rotation_only.get_state(), with_none_enabled.get_state())


def test_test_tensors_are_torchvisions_to_tensor_and_normalize(synthetic_mnist):
    _, test_loader = make_loaders(synthetic_mnist, CPU, batch_size=32, test_batch_size=30, augment=ROTATION,
                                  seed=1)
    images, labels = (torch.cat(parts) for parts in zip(*test_loader))
    pixels, expected_labels = read_split(synthetic_mnist, train=False)
    to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    expected = torch.stack([to_tensor(TF.to_pil_image(p)) for p in pixels])
    assert images.shape == (100, 1, 28, 28)
    assert torch.equal(images, expected) and torch.equal(labels, expected_labels)
    assert torch.equal(images, normalized(pixels))


def test_holdout_trains_and_validates_on_disjoint_images(synthetic_mnist):
    train_loader, eval_loader = make_loaders(synthetic_mnist, CPU, batch_size=32, test_batch_size=50,
                                             augment=Augmentation(), seed=1, holdout=56)
    pixels, _ = read_split(synthetic_mnist, train=True)
    seen_in_training = torch.cat([images for images, _ in train_loader])
    validation = torch.cat([images for images, _ in eval_loader])
    expected = normalized(pixels)
    assert torch.equal(validation, expected[200:])  # the last 56, in order
    assert len(seen_in_training) == 200
    training_rows = {tuple(row.flatten().tolist()) for row in seen_in_training}
    assert training_rows == {tuple(row.flatten().tolist()) for row in expected[:200]}
    assert not training_rows & {tuple(row.flatten().tolist()) for row in validation}
