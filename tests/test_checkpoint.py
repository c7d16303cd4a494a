"""Checkpoints, exact resume, signals, non-finite losses and concurrent data acquisition."""

import hashlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

import data
import train
from checkpoint import load_checkpoint, save_checkpoint
from conftest import ROOT, synthetic_idx_files
from model import CheckpointError, Net

FLAGS = ["--batch-size", "32", "--test-batch-size", "50", "--epochs", "3"]


@pytest.fixture
def no_acquisition(monkeypatch):
    monkeypatch.setattr(train, "ensure_mnist", lambda data_dir: None)


def run(data_dir, out_dir, *extra):
    return train.main(["--data-dir", str(data_dir), "--out-dir", str(out_dir), *FLAGS, *extra])


def stop_at_epoch(monkeypatch, epoch, signum=signal.SIGINT):
    """Deliver SIGNUM to this process as epoch EPOCH starts, as Ctrl-C or kill would."""
    real_train_epoch = train.train_epoch

    def train_epoch(*args):
        if args[5] == epoch:
            signal.raise_signal(signum)
        return real_train_epoch(*args)

    monkeypatch.setattr(train, "train_epoch", train_epoch)


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


@pytest.mark.parametrize("signum, loader", [(signal.SIGINT, "in-memory"), (signal.SIGTERM, "torchvision")])
def test_resume_after_a_signal_is_bitwise_the_uninterrupted_run(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys, signum, loader):
    whole = run(synthetic_mnist, tmp_path / "whole", "--loader", loader)
    stop_at_epoch(monkeypatch, 3, signum)
    with pytest.raises(SystemExit) as stopped:
        run(synthetic_mnist, tmp_path / "cut", "--loader", loader)
    assert stopped.value.code == 128 + signum
    err = capsys.readouterr().err
    checkpoint = tmp_path / "cut" / "checkpoint.pt"
    assert f"stopped by {signal.Signals(signum).name} in epoch 3, batch 0" in err
    assert f"The last complete checkpoint is epoch 2: {checkpoint}" in err
    assert err.strip().endswith(f"--resume {checkpoint}")
    assert load_checkpoint(checkpoint)["epoch"] == 2
    monkeypatch.undo()
    monkeypatch.setattr(train, "ensure_mnist", lambda data_dir: None)
    resumed = run(synthetic_mnist, tmp_path / "cut", "--loader", loader, "--resume", str(checkpoint))
    assert without_seconds(resumed) == without_seconds(whole)
    final = [torch.load(tmp_path / d / "weights.pt", weights_only=True) for d in ("whole", "cut")]
    assert final[0].keys() == final[1].keys()
    assert all(torch.equal(final[0][k], final[1][k]) for k in final[0])


def test_resume_refuses_other_settings(synthetic_mnist, tmp_path, no_acquisition, monkeypatch):
    stop_at_epoch(monkeypatch, 2)
    with pytest.raises(SystemExit):
        run(synthetic_mnist, tmp_path)
    with pytest.raises(SystemExit) as refused:
        run(synthetic_mnist, tmp_path, "--resume", str(tmp_path / "checkpoint.pt"), "--max-lr", "0.05")
    message = str(refused.value.code)
    assert "other settings: max_lr 0.02 (now 0.05)" in message and "\n" not in message
    with pytest.raises(SystemExit) as refused:
        run(synthetic_mnist, tmp_path, "--resume", str(tmp_path / "checkpoint.pt"), "--loader", "torchvision")
    assert "loader 'in-memory' (now 'torchvision')" in str(refused.value.code)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys):
    real_nll_loss, calls = train.F.nll_loss, []

    def nll_loss(output, target, **kwargs):
        loss = real_nll_loss(output, target, **kwargs)
        if not kwargs:  # a training batch, not the test set's summed loss
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
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def checkpoint_contents():
    """What save_checkpoint takes after the epoch number, for an untrained model."""
    model = Net()
    optimizer, scheduler = train.make_optimizer(model, train.parse_args(["--epochs", "1"]), 10)
    loader = torch.utils.data.DataLoader([0], generator=torch.Generator())
    config = dict(vars(train.parse_args([])), batch_size=64, parameters=7544)
    return [], config, model, optimizer, scheduler, loader


def write_checkpoints_forever(path, marker, ready):
    contents = checkpoint_contents()
    ready.set()
    while True:
        save_checkpoint(path, marker, *contents)


def test_sigkill_at_random_moments_never_corrupts_the_checkpoint(tmp_path):
    """Kill a process that rewrites the checkpoint in a loop, 25 times at random moments:
    the file on disk must load every time (the old one, or the new one whole)."""
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, -1, *checkpoint_contents())  # the good checkpoint that must survive
    fork = multiprocessing.get_context("fork")
    rng, mid_write, last_seen = random.Random(0), 0, -1
    for attempt in range(25):
        ready = fork.Event()
        writer = fork.Process(target=write_checkpoints_forever, args=(path, attempt, ready))
        writer.start()
        assert ready.wait(30)
        time.sleep(rng.uniform(0, 0.02))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        epoch = load_checkpoint(path)["epoch"]  # the last whole write, never a torn one
        assert last_seen <= epoch <= attempt
        last_seen = epoch
        leftovers = list(tmp_path.glob(".checkpoint.pt.*.tmp"))  # a write the kill cut short
        mid_write += bool(leftovers)
        for leftover in leftovers:
            leftover.unlink()
    print(f"{mid_write} of 25 kills landed in the middle of a write")
    assert mid_write >= 5, "too few kills landed in the middle of a write to prove anything"


def test_sigint_from_outside_exits_cleanly_with_the_resume_hint(synthetic_mnist, tmp_path):
    code = ("import sys, train; train.ensure_mnist = lambda d: None; "
            "train.main(sys.argv[1:])")
    argv = ["--data-dir", str(synthetic_mnist), "--out-dir", str(tmp_path), "--batch-size", "8",
            "--epochs", "50", "--rotation", "0"]
    process = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=ROOT, text=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while not (tmp_path / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    err = process.communicate(timeout=120)[1]
    assert process.returncode == 130
    assert "Traceback" not in err and "stopped by SIGINT in epoch" in err
    assert f"--resume {tmp_path / 'checkpoint.pt'}" in err
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] >= 1


def acquire(data_dir, md5s, calls_file):
    data.MNIST_MD5 = md5s

    def slow_source(folder, log):
        with open(calls_file, "a") as calls:
            calls.write("call\n")
        time.sleep(0.5)  # long enough for the other process to arrive meanwhile
        return synthetic_idx_files()

    data.ensure_mnist(data_dir, sources=[slow_source], log=lambda m: None)


def test_two_runs_on_an_empty_data_dir_both_end_with_verified_files(tmp_path):
    md5s = {n: hashlib.md5(c).hexdigest() for n, c in synthetic_idx_files().items()}
    fork = multiprocessing.get_context("fork")
    runs = [fork.Process(target=acquire, args=(tmp_path, md5s, tmp_path / "calls")) for _ in range(2)]
    for process in runs:
        process.start()
    for process in runs:
        process.join(60)
    assert [p.exitcode for p in runs] == [0, 0]
    assert (tmp_path / "calls").read_text() == "call\n"  # the second waited, then found the files
    for name, digest in md5s.items():
        assert data.md5_of_file(data.raw_dir(tmp_path) / name) == digest
