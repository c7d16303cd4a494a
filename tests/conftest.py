"""Shared fixtures: a small synthetic dataset in MNIST's raw IDX layout, and runs that skip
MNIST acquisition (it verifies the real files' MD5s, which synthetic files fail)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from data import idx_images, idx_labels, raw_dir

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)  # one thread a test worker (pyproject.toml runs two workers)
# train.py with acquisition skipped, for tests that run it as a process (seeds.py's jobs)
TRAIN_WITHOUT_ACQUISITION = Path(__file__).resolve().parent / "train_without_acquisition.py"


def synthetic_digits(count, seed):
    """uint8 28x28 images whose class decides where a bright block sits, plus noise,
    so that a network can learn them in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels):
        row, col = 3 + 12 * (label // 5), 2 + 5 * (label % 5)
        image[row:row + 10, col:col + 4] = 255
    return images, labels


def synthetic_idx_files(train_count=256, test_count=100):
    """The four MNIST file names -> IDX bytes of a small synthetic set."""
    train_images, train_labels = synthetic_digits(train_count, seed=0)
    test_images, test_labels = synthetic_digits(test_count, seed=1)
    return {
        "train-images-idx3-ubyte": idx_images(train_images),
        "train-labels-idx1-ubyte": idx_labels(train_labels),
        "t10k-images-idx3-ubyte": idx_images(test_images),
        "t10k-labels-idx1-ubyte": idx_labels(test_labels),
    }


@pytest.fixture
def synthetic_mnist(tmp_path):
    """A data dir holding small synthetic MNIST files; returns the data dir."""
    folder = raw_dir(tmp_path / "data")
    folder.mkdir(parents=True)
    for name, content in synthetic_idx_files().items():
        (folder / name).write_bytes(content)
    return tmp_path / "data"


@pytest.fixture
def no_acquisition(monkeypatch):
    """train.py and export.py use the data dir as it is."""
    import export
    import train

    for module in (train, export):
        monkeypatch.setattr(module, "ensure_mnist", lambda data_dir: None)


@pytest.fixture(autouse=True)
def keep_thread_count():
    """--threads sets torch's thread count for the whole process: restore it after each test."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
