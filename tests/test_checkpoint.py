"""Checkpoints, exact resume, signals, non-finite losses, kills mid-write and concurrent data acquisition."""

import hashlib
import multiprocessing
import os
import signal
import subprocess
import sys

import pytest
import torch

import data
import train
from conftest import ROOT, synthetic_idx_files
from data import InMemoryLoader
from model import ARCHITECTURES, Net, TinyNet, WeightsError, load_model, save_weights
from train import TrainingState, load_checkpoint
from utils import atomic_write

FLAGS = ["--batch-size", "32", "--test-batch-size", "50", "--epochs", "3"]


def run(data_dir, out_dir, *extra):
    return train.main(["--data-dir", str(data_dir), "--out-dir", str(out_dir), *FLAGS, *extra])


def stop_at_epoch(monkeypatch, epoch, signum=signal.SIGINT):
    """Deliver SIGNUM to this process as epoch EPOCH starts, as Ctrl-C or kill would."""
    real_train_epoch = train.train_epoch

    def train_epoch(state, loader, stop):
        if state.epoch + 1 == epoch:
            signal.raise_signal(signum)
        return real_train_epoch(state, loader, stop)

    monkeypatch.setattr(train, "train_epoch", train_epoch)


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def same_weights(a, b):
    a, b = (torch.load(path, weights_only=True)["state_dict"] for path in (a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("signum, ema", [(signal.SIGINT, "0.999"), (signal.SIGTERM, "0")])
def test_resume_after_a_signal_is_bitwise_the_uninterrupted_run(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys, signum, ema):
    flags = ["--ema", ema]
    whole = run(synthetic_mnist, tmp_path / "whole", *flags)
    stop_at_epoch(monkeypatch, 3, signum)
    with pytest.raises(SystemExit) as stopped:
        run(synthetic_mnist, tmp_path / "cut", *flags)
    assert stopped.value.code == 128 + signum
    err = capsys.readouterr().err
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    assert f"stopped by {signal.Signals(signum).name} in epoch 3, batch 0" in err
    assert f"The last complete checkpoint is epoch 2: {checkpoint}" in err
    assert err.strip().endswith(f"--resume {checkpoint}")
    assert load_checkpoint(checkpoint)["epoch"] == 2
    monkeypatch.undo()
    monkeypatch.setattr(train, "ensure_mnist", lambda data_dir: None)
    resumed = run(synthetic_mnist, tmp_path / "cut", *flags, "--resume", str(checkpoint))
    assert without_seconds(resumed) == without_seconds(whole)
    assert same_weights(tmp_path / "whole" / "weights.pt", tmp_path / "cut" / "weights.pt")


def test_resume_refuses_other_settings(synthetic_mnist, tmp_path, no_acquisition, monkeypatch):
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(SystemExit):
        run(synthetic_mnist, tmp_path)
    for flags, message in [(["--max-lr", "0.1"], "other settings: max_lr 0.05 (now 0.1)"),
                           (["--rotation", "5"], "rotation 7.0 (now 5.0)"),
                           (["--batch-size", "64"], "batch_size 32 (now 64)")]:  # a CUDA default, say
        with pytest.raises(SystemExit) as refused:
            run(synthetic_mnist, tmp_path, "--resume", str(tmp_path / "checkpoint.pt"), *flags)
        assert message in str(refused.value.code) and "\n" not in str(refused.value.code)


def test_loader_state_is_a_cpu_generator_whatever_the_device():
    """Order and augmentation come from a CPU generator, so a checkpoint's loader state has the
    same size and meaning on every device (a CUDA generator's state would not load on the CPU)."""
    pixels, labels = torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10)
    loader = InMemoryLoader(pixels, labels, 4, torch.device("meta"), shuffle=True, seed=1)
    assert loader.generator.device.type == "cpu"
    assert loader.generator.get_state().shape == torch.Generator().get_state().shape


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys):
    real_nll_loss, calls = train.F.nll_loss, []

    def nll_loss(output, target, **kwargs):
        loss = real_nll_loss(output, target, **kwargs)
        if not kwargs:  # a training batch, not evaluate()'s summed loss
            calls.append(1)
            if len(calls) == 8 + 4:  # the 4th batch (batch 3) of epoch 2; 8 batches of 32 an epoch
                return loss * float("nan")
        return loss

    monkeypatch.setattr(train.F, "nll_loss", nll_loss)
    with pytest.raises(SystemExit) as stopped:
        run(synthetic_mnist, tmp_path)
    assert stopped.value.code == 1
    assert "the loss is nan in epoch 2, batch 3" in capsys.readouterr().err
    kept = load_checkpoint(tmp_path / "checkpoint.pt")
    assert kept["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in kept["model"].values() if t.is_floating_point())


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, "truncated", "weights"])
def test_bad_checkpoint_files_give_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "weights":  # a real file, but a state_dict, not a checkpoint
        torch.save(Net().state_dict(), path)
    elif content == "truncated":
        torch.save({"model": Net().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_weights_are_saved_with_the_architecture_as_cpu_tensors_and_load_into_it(tmp_path, architecture):
    model = ARCHITECTURES[architecture]()
    save_weights(tmp_path / "weights.pt", model)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved["architecture"] == architecture
    weights = saved["state_dict"]
    assert type(weights) is type(model.state_dict()) and list(weights) == list(model.state_dict())
    assert all(tensor.device.type == "cpu" for tensor in weights.values())
    loaded = load_model(tmp_path / "weights.pt")
    assert type(loaded) is type(model) and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_bare_state_dict_of_the_earlier_format_loads_as_the_reference_network(tmp_path):
    torch.save(Net().state_dict(), tmp_path / "weights.pt")
    assert type(load_model(tmp_path / "weights.pt")) is Net


def one_line_error(path):
    with pytest.raises(WeightsError) as error:
        load_model(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    return message


def test_one_networks_weights_are_refused_by_the_other_in_one_line(tmp_path):
    torch.save(TinyNet().state_dict(), tmp_path / "bare-tiny.pt")  # read as the reference net's
    assert "not weights for the reference network" in one_line_error(tmp_path / "bare-tiny.pt")
    torch.save({"architecture": "tiny", "state_dict": Net().state_dict()}, tmp_path / "mislabelled.pt")
    assert "not weights for the tiny network" in one_line_error(tmp_path / "mislabelled.pt")
    torch.save({"architecture": "huge", "state_dict": Net().state_dict()}, tmp_path / "unknown.pt")
    assert "unknown network 'huge'" in one_line_error(tmp_path / "unknown.pt")


def a_checkpoint(path, epoch):
    """Write a real training checkpoint of an untrained model at PATH, marked EPOCH."""
    model = Net()
    args = train.parse_args(["--epochs", "1"])
    optimizer, scheduler = train.make_optimizer(model, args, 10)
    state = TrainingState(model, optimizer, scheduler, torch.Generator(), torch.device("cpu"), epoch=epoch)
    state.save(path, train.run_config(args))


def write_half_then_wait(path, mid_write):
    """Start rewriting PATH with a checkpoint for epoch 2; stop halfway and wait to be killed."""
    a_checkpoint(path.with_name("new.pt"), 2)
    content = path.with_name("new.pt").read_bytes()

    def write(f):
        f.write(content[:len(content) // 2])
        f.flush()
        mid_write.set()
        signal.pause()

    atomic_write(path, write)


def test_sigkill_in_the_middle_of_a_write_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    a_checkpoint(path, 1)  # the good checkpoint that must survive
    fork = multiprocessing.get_context("fork")
    mid_write = fork.Event()
    writer = fork.Process(target=write_half_then_wait, args=(path, mid_write))
    writer.start()
    assert mid_write.wait(120), "the writer never started writing"
    os.kill(writer.pid, signal.SIGKILL)
    writer.join()
    assert load_checkpoint(path)["epoch"] == 1  # the old checkpoint, whole
    assert len(list(tmp_path.glob(".checkpoint.pt.*.tmp"))) == 1  # the half-written temp file
    a_checkpoint(path, 3)  # a write that completes replaces it whole
    assert load_checkpoint(path)["epoch"] == 3


def test_sigint_from_outside_exits_cleanly_with_the_resume_hint(synthetic_mnist, tmp_path):
    """Ctrl-C once epoch 2 has started: the run ends after its batch, with exit code 130."""
    argv = ["--data-dir", str(synthetic_mnist), "--out-dir", str(tmp_path), "--batch-size", "8",
            "--epochs", "50", "--rotation", "0", "--threads", "1"]
    script = str(ROOT / "tests" / "train_without_acquisition.py")
    process = subprocess.Popen([sys.executable, script, *argv], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in process.stdout:  # epoch 1's checkpoint is written before this line
        if line.startswith("EPOCH: 2/50"):
            break
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=300)[1]
    assert process.returncode == 130
    assert "Traceback" not in err and "stopped by SIGINT in epoch" in err
    assert f"--resume {tmp_path / 'checkpoint.pt'}" in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] >= 1


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
        assert data.md5_of_file(data.raw_dir(tmp_path) / name) == digest


def test_a_filesystem_without_locks_goes_on_without_the_lock(tmp_path, monkeypatch):
    import fcntl

    def no_locks(handle, operation):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    messages = []
    with data.exclusive_lock(tmp_path / ".mnist.lock", log=messages.append):
        inside = True
    assert inside and len(messages) == 1 and "going on without the lock" in messages[0]


def test_a_width_is_saved_with_the_weights_and_a_mismatch_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    narrow = Net(width=0.7)
    save_weights(tmp_path / "narrow.pt", narrow)
    save_weights(tmp_path / "reference.pt", Net())
    assert torch.load(tmp_path / "narrow.pt", weights_only=True)["width"] == 0.7
    assert "width" not in torch.load(tmp_path / "reference.pt", weights_only=True)  # as before --width
    loaded = load_model(tmp_path / "narrow.pt")
    assert loaded.width == 0.7
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in narrow.state_dict().items())
    relabelled = torch.load(tmp_path / "narrow.pt", weights_only=True)
    relabelled["width"] = 0.5
    torch.save(relabelled, tmp_path / "relabelled.pt")
    assert "not weights for the reference network of width 0.5" in one_line_error(tmp_path / "relabelled.pt")


def test_channel_counts_are_saved_with_the_weights_and_load_back(tmp_path):
    torch.manual_seed(0)
    custom = Net(channels=(4, 8, 8, 8, 8, 12, 12))
    save_weights(tmp_path / "custom.pt", custom)
    saved = torch.load(tmp_path / "custom.pt", weights_only=True)
    assert saved["channels"] == [4, 8, 8, 8, 8, 12, 12] and "width" not in saved
    loaded = load_model(tmp_path / "custom.pt")
    assert loaded.channels == (4, 8, 8, 8, 8, 12, 12)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in custom.state_dict().items())
    save_weights(tmp_path / "same.pt", Net(channels=Net.CHANNELS))  # the default records nothing
    assert set(torch.load(tmp_path / "same.pt", weights_only=True)) == {"architecture", "state_dict"}
    saved["channels"] = [4, 8, 8, 8, 8, 12, 13]
    torch.save(saved, tmp_path / "relabelled.pt")
    message = one_line_error(tmp_path / "relabelled.pt")
    assert "reference network of channels [4, 8, 8, 8, 8, 12, 13]" in message
    saved["channels"] = [4, 8]
    torch.save(saved, tmp_path / "broken.pt")
    assert "not weights for the reference network" in one_line_error(tmp_path / "broken.pt")
