"""search.py: its search spaces, and studies on small synthetic data that are stopped and
resumed, shared by two workers, kept in SQLite, pruned, and kept under a parameter budget."""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import search
import seeds
from conftest import TRAIN_WITHOUT_ACQUISITION
from model import Net

SEARCH = Path(__file__).resolve().parent / "search_without_acquisition.py"  # its runs skip acquisition


def test_a_parameter_is_a_range_a_log_range_or_choices():
    assert search.parameter("conv1=3:20") == ("conv1", ("int", 3, 20, False))
    assert search.parameter("max-lr=0.01:0.3:log") == ("max-lr", ("float", 0.01, 0.3, True))
    assert search.parameter("batch-size=64,128") == ("batch-size", ("choice", ["64", "128"]))
    for bad in ("conv1", "conv1=5:3", "max-lr=a:b", "max-lr=0.1:0.2:cube", "=1:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            search.parameter(bad)


def test_channel_slots_become_one_channels_flag_and_the_rest_keep_the_reference_counts():
    trial = optuna.trial.FixedTrial({"conv1": 4, "conv6": 12, "max-lr": 0.0512345})
    space = {"conv1": ("int", 3, 20, False), "conv6": ("int", 3, 20, False),
             "max-lr": ("float", 0.01, 0.3, True)}
    flags = search.suggest(trial, space)
    assert flags == {"--max-lr": "0.0512", "--channels": "4,10,10,10,10,16,12"}
    assert search.run_name(flags) == "channels=4-10-10-10-10-16-12_max-lr=0.0512"


def test_flags_that_search_sets_are_refused_in_one_line():
    result = subprocess.run([sys.executable, "search.py", "--out-dir", "x", "--space", "channels", "--width",
                             "0.5"], capture_output=True, text=True, cwd=Path(search.__file__).parent)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "search.py: error: --width is set by search.py for each run")


def test_a_bad_train_flag_is_one_line_before_any_study(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        search.parse_args(["--out-dir", str(tmp_path / "study"), "--space", "optimizer", "--max-lr", "-1"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--max-lr: -1 is outside" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("argv, said", [
    (["--param", "no-such-flag=1:2"], "unrecognized arguments: --no-such-flag 1"),
    (["--param", "dropout=1.5:2"], "--dropout: 1.5 is outside"),
    (["--space", "channels", "--max-params", "50"], "--max-params 50 is below the smallest network"),
])
def test_a_param_that_train_py_refuses_is_one_line_before_any_study(tmp_path, capsys, argv, said):
    with pytest.raises(SystemExit) as exit_info:
        search.parse_args(["--out-dir", str(tmp_path / "study"), *argv])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and said in error and len(error.splitlines()) == 1
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("url", ["not-a-url", "sqlite:////no/such/folder/study.db"])
def test_a_storage_that_cannot_be_opened_is_one_line(tmp_path, url):
    done = subprocess.run([sys.executable, "search.py", "--out-dir", str(tmp_path / "study"), "--space",
                           "optimizer", "--storage", url], capture_output=True, text=True,
                          cwd=Path(search.__file__).parent)
    assert done.returncode == 1 and done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"search.py: error: --storage {url}: ")


def test_two_searches_on_one_storage_keep_their_own_studies(tmp_path):
    storage = ["--storage", f"sqlite:///{tmp_path / 'shared.db'}"]

    def study_name(out_dir):
        args = search.parse_args(["--out-dir", str(tmp_path / out_dir), "--space", "optimizer", *storage])
        return search.open_study(args).study_name

    assert [study_name("first"), study_name("second")] == ["first", "second"]


def test_opening_a_study_again_to_continue_or_report_leaves_its_journal_alone(tmp_path):
    def open_study(*extra):
        return search.open_study(search.parse_args(["--out-dir", str(tmp_path / "study"), *extra]))

    open_study("--space", "optimizer").ask()
    journal = (tmp_path / "study" / "journal.log").read_bytes()
    open_study("--space", "optimizer")
    open_study("--report")
    assert (tmp_path / "study" / "journal.log").read_bytes() == journal


def test_a_trial_left_running_by_a_worker_that_is_gone_is_failed(tmp_path):
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal.log")))
    study = optuna.create_study(storage=storage, direction="maximize")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True)
    for pid in (int(gone.stdout), os.getpid()):  # a finished process; this one, alive
        study.ask().set_user_attr("worker", f"{socket.gethostname()}:{pid}")
    search.fail_orphans(study)
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.FAIL,
                                                     optuna.trial.TrialState.RUNNING]


def test_channel_counts_given_as_choices_are_numbers():
    def channels(choice, max_params):
        trial = optuna.trial.FixedTrial({"conv1": choice})
        return search.suggest(trial, {"conv1": ("choice", ["4", "8"])}, max_params)["--channels"]

    assert channels("4", 10000) == "4,10,10,10,10,16,16"
    assert channels("8", 3000).count(",") == 6  # scaled down to the budget, in whole numbers


def test_a_report_on_a_folder_without_a_study_is_one_line_and_makes_nothing(tmp_path):
    done = subprocess.run([sys.executable, "search.py", "--out-dir", str(tmp_path / "typo"), "--report"],
                          capture_output=True, text=True, cwd=Path(search.__file__).parent)
    assert done.returncode == 1 and not (tmp_path / "typo").exists()
    said = f"search.py: error: {tmp_path / 'typo'} holds no study (no journal.log) to report on\n"
    assert done.stderr == said


def study_command(data_dir, study, *extra):
    return [sys.executable, str(SEARCH), "--out-dir", str(study), "--data-dir", str(data_dir),
            "--holdout", "56", "--threads", "1", *extra]


def load(study):
    storage = JournalStorage(JournalFileBackend(str(study / "journal.log")))
    return optuna.load_study(study_name=study.name, storage=storage)


def wait_for(path, process, seconds=300):
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "search.py ended before it was stopped"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_a_study_stopped_with_ctrl_c_resumes_its_trial_from_the_finished_seed(synthetic_mnist, tmp_path):
    study = tmp_path / "study"
    command = study_command(synthetic_mnist, study, "--param", "max-lr=0.01:0.1:log", "--seeds", "1-2",
                            "--trials", "2", "--epochs", "2", "--sampler-seed", "3")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(study / "runs", process)
    first_seed = next((study / "runs").iterdir()) / "seed1" / "history.json"
    wait_for(first_seed, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1 and "run the same command again" in stderr
    finished_before = first_seed.read_bytes()
    stopped = load(study).trials[0]
    assert stopped.state == optuna.trial.TrialState.FAIL and stopped.user_attrs["interrupted"]

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    trials = load(study).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 2
    again = next(t for t in complete if t.user_attrs.get("resumes") == 0)
    assert again.params == stopped.params
    assert first_seed.read_bytes() == finished_before  # the finished seed was not trained again
    assert (study / "trials.md").exists() and (study / "history.png").exists()


def test_two_workers_share_one_journal(synthetic_mnist, tmp_path):
    study = tmp_path / "study"
    command = study_command(synthetic_mnist, study, "--space", "optimizer", "--seeds", "1", "--trials", "4",
                            "--epochs", "1", "--jobs", "2", "--sampler-seed", "1")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = load(study).trials
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) >= 4
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # two processes, one study
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)


def test_channel_counts_over_the_budget_are_scaled_down_to_it_in_proportion(synthetic_mnist, tmp_path):
    assert search.within_budget([4, 8, 8, 8, 8, 12, 12], 4000) == [4, 8, 8, 8, 8, 12, 12]  # 3,924: fits
    assert search.within_budget(list(Net.CHANNELS), 3723) == [11, 7, 7, 7, 7, 11, 11]  # width 0.7's
    study = tmp_path / "study"
    command = study_command(synthetic_mnist, study, "--space", "channels", "--max-params", "1500",
                            "--seeds", "1", "--trials", "3", "--epochs", "1", "--dropout", "0",
                            "--sampler-seed", "2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = load(study).trials
    assert len(trials) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(t.user_attrs["parameters"] <= 1500 for t in trials)
    history = json.loads(next((study / "runs").iterdir()).joinpath("seed1", "history.json").read_text())
    assert history["config"]["holdout"] == 56 and history["config"]["dropout"] == 0
    assert history["config"]["parameters"] <= 1500


def test_sqlite_storage_keeps_the_study_and_the_same_command_continues_it(synthetic_mnist, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = study_command(synthetic_mnist, tmp_path / "study", "--storage", storage, "--param",
                            "max-lr=0.01:0.1", "--seeds", "1", "--epochs", "1", "--sampler-seed", "1")
    for trials, expected in ((1, 1), (1, 1), (2, 2)):  # the same command again trains nothing more
        result = subprocess.run([*command, "--trials", str(trials)], capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        study = optuna.load_study(study_name="study", storage=storage)
        assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * expected
    assert not (tmp_path / "study" / "journal.log").exists() and (tmp_path / "study" / "trials.md").exists()


def search_args(synthetic_mnist, tmp_path, *extra):
    return search.parse_args(["--out-dir", str(tmp_path / "study"), "--param", "max-lr=0.01:0.1",
                              "--data-dir", str(synthetic_mnist), "--holdout", "56", "--threads", "1",
                              "--seeds", "1", "--epochs", "1", *extra])


def test_a_finished_run_is_reused_only_with_the_same_fixed_flags(synthetic_mnist, tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.setattr(seeds, "TRAIN_PY", TRAIN_WITHOUT_ACQUISITION)
    trial = optuna.trial.FixedTrial({"max-lr": 0.05})
    value = search.objective(search_args(synthetic_mnist, tmp_path), trial)
    history = tmp_path / "study" / "runs" / "max-lr=0.05" / "seed1" / "history.json"
    before = history.read_bytes()
    assert value == min(row["val_acc"] for row in json.loads(before)["epochs"])
    assert search.objective(search_args(synthetic_mnist, tmp_path), trial) == value  # reused, not trained
    with pytest.raises(RuntimeError, match="not every seed finished"):
        search.objective(search_args(synthetic_mnist, tmp_path, "--dropout", "0.2"), trial)
    assert "holds a finished run with other settings (dropout 0.01 (now 0.2))" in capsys.readouterr().out
    assert history.read_bytes() == before


class PrunedAfterItsFirstEpoch(optuna.trial.FixedTrial):
    """A trial whose pruner says stop as soon as an epoch is reported."""

    def __init__(self, params):
        super().__init__(params)
        self.reports = []

    def report(self, value, step):
        self.reports.append((step, value))

    def should_prune(self):
        return bool(self.reports)


def test_prune_reads_each_epoch_from_epochs_json_and_stops_the_run_with_its_checkpoint(
        synthetic_mnist, tmp_path, monkeypatch):
    monkeypatch.setattr(seeds, "TRAIN_PY", TRAIN_WITHOUT_ACQUISITION)
    trial = PrunedAfterItsFirstEpoch({"max-lr": 0.05})
    with pytest.raises(optuna.TrialPruned):
        search.objective(search_args(synthetic_mnist, tmp_path, "--epochs", "30", "--prune"), trial)
    folder = tmp_path / "study" / "runs" / "max-lr=0.05" / "seed1"
    epochs = json.loads((folder / "epochs.json").read_text())
    assert trial.reports[0] == (0, epochs[0]["val_acc"])  # read from epochs.json, at step 0
    assert trial.user_attrs["pruned_at"] == "seed 1, epoch 1"
    assert len(epochs) < 30 and not (folder / "history.json").exists()  # stopped, after its batch
    assert "stopped by SIGINT" in (folder / "train.log").read_text() and (folder / "checkpoint.pt").exists()


def test_a_two_objective_study_is_refused_in_one_line(tmp_path):
    (tmp_path / "study").mkdir()
    optuna.create_study(study_name="study", directions=["maximize", "maximize"],
                        storage=JournalStorage(JournalFileBackend(str(tmp_path / "study" / "journal.log"))))
    with pytest.raises(SystemExit) as refused:
        search.main(["--out-dir", str(tmp_path / "study"), "--report"])
    assert str(refused.value.code) == (f"search.py: error: {tmp_path / 'study'} holds a two-objective study, "
                                       "which this search.py does not run")
