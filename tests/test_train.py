"""train.py: flags and recipes, runs on synthetic data, the run folders, exact resume after a
signal, non-finite losses, kills mid-write, and what using a model imports."""

import ast
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys

import pytest
import torch

import data
import train
from conftest import ROOT
from model import Net
from train import TrainingState, load_checkpoint, resume_command
from utils import atomic_write


def run_main(data_dir, out_dir, *extra):
    """train.main on the synthetic set (use with the no_acquisition fixture)."""
    argv = ["--data-dir", str(data_dir), "--out-dir", str(out_dir), "--batch-size", "32",
            "--test-batch-size", "50", *extra]
    return train.main(argv)


@pytest.mark.parametrize("argv", [
    ["--epochs", "0"], ["--batch-size", "-1"], ["--no-such-flag"], ["--max-lr", "abc"],
    ["--pct-start", "1.5"], ["--dropout", "1"], ["--device", "tpu"], ["--lr", "0.01"],
    ["--base-momentum", "0.99", "--max-momentum", "0.9"], ["--holdout", "60000"], ["--width", "0"],
    ["--model", "tiny", "--width", "0.5"], ["--max-lr", "inf"], ["--weight-decay", "nan"],
    ["--resu", "x.pt"],  # no abbreviations: seeds.py and search.py refuse --resume by its name
    ["--resume", "no/such/checkpoint.pt"],
])
def test_bad_arguments_give_one_line_and_exit_code_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_defaults_are_the_reference_schedule_with_the_chosen_peak_and_weight_decay():
    args = train.parse_args([])
    optimizer, scheduler = train.make_optimizer(Net(), args, steps_per_epoch=938)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.95, 5e-4, True)
    assert group["lr"] == pytest.approx(0.05 / 25) and group["initial_lr"] == pytest.approx(0.05 / 25)
    assert (args.max_lr, args.pct_start, args.div_factor) == (0.05, 0.2, 25.0)
    assert scheduler.total_steps == 15 * 938
    assert (args.epochs, args.seed, args.batch_size, args.out_dir) == (15, 1, None, "runs/default/seed1")


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
    assert history["config"]["threads"] == torch.get_num_threads()
    assert history["config"]["cpu"] and history["config"]["cpu_capability"] in ("AVX512", "AVX2", "DEFAULT",
                                                                               "NO AVX", "ZVECTOR", "SVE256")
    saved = torch.load(out / "weights.pt", weights_only=True)
    assert saved["architecture"] == "reference"
    Net().load_state_dict(saved["state_dict"])
    assert list(out.glob(".*.tmp")) == []


def test_a_run_without_out_dir_writes_to_runs_name_seed_n_not_beside_the_committed_weights(
        synthetic_mnist, no_acquisition, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train, "save_results", lambda out_dir, *rest: print(f"to {out_dir}"))
    train.main(["--data-dir", str(synthetic_mnist), "--epochs", "1", "--batch-size", "64",
                "--seed", "987654"])
    assert "to runs/epochs=1_batch-size=64/seed987654" in capsys.readouterr().out
    assert (tmp_path / "runs" / "epochs=1_batch-size=64" / "seed987654" / "checkpoint.pt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "runs"]


@pytest.mark.parametrize("argv, name", [
    ([], "default"), (["--recipe", "fast"], "fast"), (["--recipe", "reference"], "reference"),
    (["--model", "tiny"], "tiny"), (["--width", "0.9", "--dropout", "0"], "width=0.9_dropout=0"),
    (["--channels", "4,8,8,8,8,12,12"], "channels=4-8-8-8-8-12-12"),
    (["--recipe", "fast", "--model", "tiny"], "fast_tiny"), (["--scale", "0.1"], "scale=0.1"),
    (["--holdout", "10000"], "holdout=10000"), (["--batch-size", "128"], "batch-size=128"),
    (["--recipe", "fast", "--batch-size", "128"], "fast"),  # the recipe's own value
    (["--max-lr", "0.05", "--data-dir", "elsewhere", "--test-batch-size", "99"], "default"),  # none decides
    (["--epochs", "3", "--no-nesterov", "--threads", "1"], "threads=1_epochs=3_nesterov=False"),
])
def test_the_default_out_dir_is_named_after_what_sets_the_run_apart(argv, name):
    assert train.parse_args([*argv, "--seed", "3"]).out_dir == f"runs/{name}/seed3"
    assert train.parse_args([*argv, "--out-dir", "mine"]).out_dir == "mine"


def test_runs_with_default_flags_keep_each_others_files_and_another_run_is_refused(
        synthetic_mnist, no_acquisition, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--data-dir", "data", "--epochs", "1"]
    train.main(flags)
    default = tmp_path / "runs" / "epochs=1" / "seed1"
    files = {name: (default / name).read_bytes() for name in ("weights.pt", "history.json", "checkpoint.pt")}
    for other, folder in ((["--recipe", "fast"], "fast_epochs=1"),
                          (["--holdout", "56"], "holdout=56_epochs=1"),
                          (["--batch-size", "128"], "epochs=1_batch-size=128")):
        train.main([*flags, *other])  # README's and train.py's examples, after a plain run
        assert (tmp_path / "runs" / folder / "seed1" / "weights.pt").is_file()
    fast = tmp_path / "runs" / "fast_epochs=1" / "seed1" / "history.json"
    assert json.loads(fast.read_text())["config"]["batch_size"] == 128
    assert {name: (default / name).read_bytes() for name in files} == files

    with pytest.raises(SystemExit) as refused:
        train.main([*flags, "--max-lr", "0.1", "--out-dir", str(default)])
    (line,) = str(refused.value.code).splitlines()
    assert line == (f"train.py: error: {default} holds a finished run with other settings "
                    "(max_lr 0.05 (now 0.1)); give another --out-dir, or --overwrite to replace it")
    assert {name: (default / name).read_bytes() for name in files} == files
    train.main([*flags, "--data-dir", "./data", "--test-batch-size", "50"])  # the same run: no refusal
    train.main([*flags, "--max-lr", "0.1", "--overwrite", "--out-dir", str(default)])
    assert json.loads((default / "history.json").read_text())["config"]["max_lr"] == 0.1


def test_a_stopped_run_is_never_overwritten_silently(synthetic_mnist, no_acquisition, tmp_path):
    flags = ["--data-dir", str(synthetic_mnist), "--out-dir", str(tmp_path / "run"), "--epochs", "2"]
    train.main(flags)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    (tmp_path / "run" / "history.json").unlink()  # as a run stopped after its last checkpoint leaves it
    kept = checkpoint.read_bytes()
    for other in ([], ["--max-lr", "0.1"]):
        with pytest.raises(SystemExit) as refused:
            train.main([*flags, *other])
        assert str(refused.value.code) == (
            f"train.py: error: {tmp_path / 'run'} holds a stopped run; resume it with "
            f"{resume_command([*flags, *other], checkpoint)}, or give --overwrite to start again")
        assert checkpoint.read_bytes() == kept
    train.main([*flags, "--resume", str(checkpoint)])  # what the error says: it resumes
    assert (tmp_path / "run" / "history.json").is_file()
    (tmp_path / "run" / "history.json").unlink()
    train.main([*flags, "--overwrite", "--max-lr", "0.1"])
    assert json.loads((tmp_path / "run" / "history.json").read_text())["config"]["max_lr"] == 0.1


def test_holdout_validates_on_the_last_training_images(synthetic_mnist, tmp_path, no_acquisition, capsys):
    history = run_main(synthetic_mnist, tmp_path, "--epochs", "1", "--holdout", "56")
    assert "Validation set: Average loss" in capsys.readouterr().out
    assert set(history[0]) >= {"val_loss", "val_acc"} and "test_acc" not in history[0]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["config"]["eval_split"] == "val" and "final_val_acc" in saved


def test_learning_rate_follows_one_cycle_per_batch(synthetic_mnist, tmp_path, no_acquisition):
    """Stepped every batch, the last batch runs at max_lr / div_factor / final_div_factor;
    stepped once an epoch, it would still be near max_lr / div_factor."""
    history = run_main(synthetic_mnist, tmp_path, "--epochs", "2", "--rotation", "0")
    assert history[-1]["lr"] == pytest.approx(0.05 / 25 / 1e4, rel=1e-9)


def test_same_seed_gives_bitwise_same_weights(synthetic_mnist, tmp_path, no_acquisition):
    weights = []
    for run_dir, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        run_main(synthetic_mnist, tmp_path / run_dir, "--epochs", "1", "--seed", seed)
        weights.append(torch.load(tmp_path / run_dir / "weights.pt", weights_only=True)["state_dict"])
    same, other = weights[1], weights[2]
    assert all(torch.equal(weights[0][k], same[k]) for k in same)
    assert not all(torch.equal(weights[0][k], other[k]) for k in other)


def test_ema_warms_up_and_then_uses_the_decay():
    average, value = [torch.zeros(3), torch.tensor([0])], [torch.ones(3), torch.tensor([5])]
    update = train.ema_update(0.999)
    update(average, value, torch.tensor(0))  # after 0 updates the decay is 1/10
    assert torch.allclose(average[0], torch.full((3,), 0.9)) and average[1].item() == 5
    average[0].zero_()
    update(average, value, torch.tensor(100_000))
    assert torch.allclose(average[0], torch.full((3,), 0.001))


@pytest.mark.parametrize("windows, expected", [
    (False, "python train.py --out-dir 'my runs/a' --resume 'my runs/a/checkpoint.pt'"),
    (True, 'python train.py --out-dir "my runs/a" --resume "my runs/a/checkpoint.pt"'),
])
def test_resume_command_is_quoted_for_the_platform(windows, expected):
    argv = ["--out-dir", "my runs/a", "--resume", "old.pt"]
    assert resume_command(argv, "my runs/a/checkpoint.pt", windows=windows) == expected


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
    assert not (tmp_path / "out").exists()  # no empty run folder either


def test_command_line_error_has_no_traceback():
    done = subprocess.run([sys.executable, "train.py", "--epochs", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "train.py: error: argument --epochs: 0 is outside [1, inf] (see --help)"]


def top_level_modules(code):
    """The top-level modules that CODE loads in a fresh interpreter."""
    probe = f"import json, sys; {code}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


@pytest.fixture(scope="module")
def loaded_by_torch():
    return top_level_modules("import torch")


@pytest.mark.parametrize("script, allowed", [("predict", set()), ("export", {"data"})])
def test_using_a_model_imports_no_training_code_and_no_plotting(script, allowed, loaded_by_torch):
    """predict.py needs only the model layer; export.py may also read MNIST for its parity check.
    torch itself imports tqdm where it is installed (torch.hub), so only what SCRIPT adds counts."""
    loaded, by_torch = top_level_modules(f"import {script}"), loaded_by_torch
    assert {script, "model", "utils"} <= loaded
    unwanted = {"train", "data", "seeds", "search", "tqdm", "torchsummary", "matplotlib", "optuna",
                "torchvision", "bench"} - allowed
    assert not (loaded - by_torch) & unwanted


def test_recipe_fast_and_model_tiny_change_defaults_and_explicit_flags_still_win():
    fast = train.parse_args(["--recipe", "fast"])
    assert {key: getattr(fast, key) for key in train.RECIPES["fast"]} == train.RECIPES["fast"]
    assert fast.model == "reference" and fast.rotation == 7.0  # what fast does not set stays
    assert train.parse_args(["--recipe", "fast", "--epochs", "9"]).epochs == 9
    assert train.parse_args(["--epochs", "9", "--recipe=fast"]).epochs == 9  # order does not matter
    tiny = train.parse_args(["--model", "tiny"])
    assert {key: getattr(tiny, key) for key in train.MODEL_RECIPES["tiny"]} == train.MODEL_RECIPES["tiny"]
    both = train.parse_args(["--model", "tiny", "--recipe", "fast"])  # the recipe wins where both set
    assert both.model == "tiny"
    assert {key: getattr(both, key) for key in train.RECIPES["fast"]} == train.RECIPES["fast"]
    default = train.parse_args([])
    assert (default.model, default.recipe, default.epochs) == ("reference", "default", 15)


def test_recipe_reference_is_the_documents_recipe_with_its_open_choices_and_flags_still_win():
    ref = train.parse_args(["--recipe", "reference"])
    assert {key: getattr(ref, key) for key in train.REFERENCE_RECIPE} == train.REFERENCE_RECIPE
    assert (ref.max_lr, ref.weight_decay, ref.epochs, ref.pct_start) == (0.02, 1e-4, 15, 0.2)
    assert (ref.rotation, ref.interpolation, ref.dropout, ref.ema) == (7.0, "nearest", 0.05, 0)
    assert ref.batch_size is None  # 128 on CUDA, 64 otherwise, as the document says
    assert train.parse_args(["--recipe", "reference", "--dropout", "0.1"]).dropout == 0.1
    optimizer, scheduler = train.make_optimizer(Net(), ref, steps_per_epoch=938)
    assert optimizer.param_groups[0]["nesterov"] and scheduler.total_steps == 15 * 938


def test_a_narrower_reference_network_trains_and_records_its_width(synthetic_mnist, tmp_path, no_acquisition):
    run_main(synthetic_mnist, tmp_path, "--epochs", "1", "--width", "0.5")
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["config"]["width"] == 0.5 and history["config"]["parameters"] == 2001
    assert torch.load(tmp_path / "weights.pt", weights_only=True)["width"] == 0.5


def test_tiny_run_saves_its_architecture_and_resume_refuses_another_network(
        synthetic_mnist, tmp_path, no_acquisition, capsys):
    run_main(synthetic_mnist, tmp_path, "--epochs", "1", "--model", "tiny")
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved["architecture"] == "tiny"
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["config"]["model"] == "tiny" and history["config"]["parameters"] == 2962
    with pytest.raises(SystemExit) as exit_info:
        run_main(synthetic_mnist, tmp_path / "b", "--epochs", "1",
                 "--resume", str(tmp_path / "checkpoint.pt"))
    message = str(exit_info.value.code)
    assert "model 'tiny' (now 'reference')" in message and "\n" not in message


def test_channels_set_every_count_and_are_refused_with_width_or_tiny(synthetic_mnist, tmp_path,
                                                                    no_acquisition):
    run_main(synthetic_mnist, tmp_path, "--epochs", "1", "--channels", "4,8,8,8,8,12,12")
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["config"]["channels"] == [4, 8, 8, 8, 8, 12, 12]
    assert history["config"]["parameters"] == 3924
    assert torch.load(tmp_path / "weights.pt", weights_only=True)["channels"] == [4, 8, 8, 8, 8, 12, 12]
    for flags in (["--channels", "4,8,8"], ["--channels", "4,8,8,8,8,12,0"], ["--model", "tiny", "--channels",
                  "4,8,8,8,8,12,12"], ["--width", "0.5", "--channels", "4,8,8,8,8,12,12"]):
        with pytest.raises(SystemExit):
            train.parse_args(flags)


@pytest.mark.parametrize("script", ["train", "model", "data", "seeds", "search", "predict", "export",
                                    "robustness"])
def test_a_command_runs_main_after_everything_it_defines(script):
    """`python SCRIPT.py` runs the `if __name__ == "__main__"` block where it stands: it must
    come last, or what is defined below it does not exist yet when main runs."""
    tree = ast.parse((ROOT / f"{script}.py").read_text())
    last = tree.body[-1]
    assert isinstance(last, ast.If) and ast.unparse(last.test) == "__name__ == '__main__'"


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


@pytest.mark.parametrize("signum, flags", [
    (signal.SIGINT, ["--ema", "0.999"]), (signal.SIGTERM, ["--ema", "0"]),
    (signal.SIGINT, ["--translate", "0.1", "--scale", "0.1"]),
])
def test_resume_after_a_signal_is_bitwise_the_uninterrupted_run(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys, signum, flags):
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


def test_a_run_recorded_with_a_flag_since_removed_is_this_codes_only_if_it_had_it_off():
    config = train.run_config(train.parse_args([]))
    assert train.changed_settings({**config, "pen": 0.0, "noise": 0.0}, config) == []
    assert train.changed_settings({**config, "pen": 0.25}, config) == [
        "pen 0.25 (now 0.0; a flag since removed, see CHANGELOG)"]


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


@pytest.mark.parametrize("argv, shown", [([], {"epochs": "15", "dropout": "0.01"}),
                                         (["--recipe", "fast"], {"epochs": "10", "dropout": "0.0"}),
                                         (["--model", "tiny"], {"epochs": "15", "dropout": "0.0"})])
def test_help_shows_the_defaults_of_the_recipe_and_model_given(argv, shown, capsys):
    with pytest.raises(SystemExit):
        train.parse_args([*argv, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for flag, default in shown.items():
        assert re.search(rf"--{flag} {flag.upper()} [^-]*\(default: {re.escape(default)}\)", text)


def test_ctrl_c_while_the_results_are_written_says_how_to_finish_from_the_checkpoint(
        synthetic_mnist, tmp_path, no_acquisition, monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_results", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_main(synthetic_mnist, tmp_path, "--epochs", "1")
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and err.startswith("train.py: interrupted\n")
    assert f"The last complete checkpoint is epoch 1: {tmp_path / 'checkpoint.pt'}" in err


def test_ctrl_c_before_the_checkpoint_is_read_says_it_is_unchanged(synthetic_mnist, tmp_path, no_acquisition,
                                                                   monkeypatch, capsys):
    def interrupted(*args):
        raise KeyboardInterrupt

    (tmp_path / "given.pt").write_bytes(b"not read")
    monkeypatch.setattr(TrainingState, "restore", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_main(synthetic_mnist, tmp_path / "out", "--epochs", "1", "--resume", str(tmp_path / "given.pt"))
    err = capsys.readouterr().err
    assert exit_info.value.code == 130 and f"{tmp_path / 'given.pt'} is unchanged. Resume with:" in err
