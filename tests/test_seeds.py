"""seeds.py on the synthetic set: the summary, skipping, resuming, a failing seed, and
processes that share one folder."""

import hashlib
import json
import signal
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import seeds
import train
from conftest import ROOT, TRAIN_WITHOUT_ACQUISITION
from model import Net
from train import save_weights

FLAGS = ["--batch-size", "32", "--test-batch-size", "50", "--threads", "1"]


@pytest.fixture
def quick_robustness(monkeypatch):
    """robustness.py with its data as it is and, for its minutes of benchmark, fixed scores."""
    import robustness

    monkeypatch.setattr(robustness, "ensure_mnist", lambda data_dir: None)
    scores = {"fonts": 10.0, "overall": 50.0}
    monkeypatch.setattr(robustness, "benchmark", lambda *args, **kwargs: (dict(scores), {}))


@pytest.fixture
def seeds_main(synthetic_mnist, tmp_path, monkeypatch):
    """seeds.main over the synthetic set, writing to tmp_path/out."""
    monkeypatch.setattr(seeds, "TRAIN_PY", TRAIN_WITHOUT_ACQUISITION)

    def run(*argv, epochs=1, data_dir=synthetic_mnist):
        return seeds.main([*argv, "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "out"),
                           "--epochs", str(epochs), *FLAGS])
    return run


def test_two_seeds_give_a_summary_that_matches_their_runs(seeds_main, tmp_path, capsys, monkeypatch,
                                                          quick_robustness):
    assert seeds_main("--seeds", "1-2", "--jobs", "2", epochs=3) == 0
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    finals = [run["final_test_acc"] for run in result["runs"]]
    assert [run["seed"] for run in result["runs"]] == [1, 2] and result["split"] == "test"
    for run in result["runs"]:
        folder = tmp_path / "out" / f"seed{run['seed']}"
        history = json.loads((folder / "history.json").read_text())
        assert run["final_test_acc"] == history["final_test_acc"] == history["epochs"][-1]["test_acc"]
        curve = [row["test_acc"] for row in history["epochs"]]
        assert run["curve"] == curve and run["last_3_min"] == min(curve[-3:])
        assert run["weights_sha256"] == hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()
        assert run["cpu"] == history["config"]["cpu"] and run["cpu_capability"]
        assert history["config"]["seed"] == run["seed"] and history["config"]["threads"] == 1
        assert (folder / "train.log").read_text().count("Test set:") == 3
    summary = result["summary"]
    assert summary["n"] == 2 and summary["mean"] == pytest.approx(statistics.mean(finals))
    assert summary["sd"] == pytest.approx(statistics.stdev(finals))
    assert (summary["min"], summary["max"]) == (min(finals), max(finals))
    assert summary["at_least_99_40"] == sum(f >= 99.4 for f in finals)
    held = sum(min(run["curve"][-3:]) >= 99.4 for run in result["runs"])
    assert summary["at_least_99_40_in_last_3"] == held and summary["cpus"] == [result["runs"][0]["cpu"]]
    walls = [run["wall_seconds"] for run in result["runs"]]  # whole processes: more than their epochs
    assert all(wall > run["seconds"] for wall, run in zip(walls, result["runs"]))
    assert summary["median_wall_seconds"] == pytest.approx(statistics.median(walls))
    assert result["config"]["epochs"] == 3 and not {"seed", "cpu"} & set(result["config"])
    assert (tmp_path / "out" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "seed 1: " in printed and "test accuracy over 2 seeds: mean" in printed

    history_file = tmp_path / "out" / "seed1" / "history.json"
    before = history_file.stat().st_mtime_ns
    assert seeds_main("--seeds", "1", epochs=3) == 0  # a second call trains nothing
    assert "1 seed(s) already finished with these settings: skipped" in capsys.readouterr().out
    assert history_file.stat().st_mtime_ns == before
    again = json.loads((tmp_path / "out" / "seeds.json").read_text())  # every finished seed, not only seed 1
    assert again["runs"] == result["runs"] and again["summary"] == summary
    check_robustness_is_scored_once_and_summarized(seeds_main, tmp_path, monkeypatch, capsys)


def check_robustness_is_scored_once_and_summarized(seeds_main, tmp_path, monkeypatch, capsys):
    """--robustness: every finished seed's weights scored once, kept, and summarized, whatever
    --seeds says."""
    import robustness

    assert seeds_main("--seeds", "2", "--robustness", epochs=3) == 0
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    for run in result["runs"]:
        saved = json.loads((tmp_path / "out" / f"seed{run['seed']}" / "robustness.json").read_text())
        assert run["robustness"] == saved["scores"] and saved["weights_sha256"] == run["weights_sha256"]
        assert run["robustness"]["fonts"] == 10.0 and run["fonts_sha256"] == saved["fonts_sha256"]
    assert result["summary"]["robust_seed"] == 1  # a tie on fonts: the lower seed
    assert result["summary"]["robustness"]["overall"] == {"mean": 50.0, "sd": 0.0}
    assert "fonts %" in capsys.readouterr().out
    monkeypatch.setattr(robustness, "main", None)  # scored weights are not scored again
    assert seeds_main("--seeds", "1-2", "--robustness", epochs=3) == 0


def test_a_finished_seed_is_reused_whatever_its_data_dir_is_called(seeds_main, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the synthetic set is tmp_path/data
    assert seeds_main("--seeds", "1", data_dir="data") == 0
    history = tmp_path / "out" / "seed1" / "history.json"
    before = history.read_bytes()
    capsys.readouterr()
    assert seeds_main("--seeds", "1", data_dir="./data") == 0
    assert "1 seed(s) already finished with these settings: skipped" in capsys.readouterr().out
    assert history.read_bytes() == before
    summary = json.loads((tmp_path / "out" / "seeds.json").read_text())
    config = json.loads(before)["config"]
    assert summary["config"] == {k: v for k, v in train.deciding_settings(config).items() if k != "seed"}

    assert seeds_main("--seeds", "1", "--max-lr", "0.1", data_dir="./data") == 1  # another run: refused
    printed = capsys.readouterr().out
    assert f"{tmp_path / 'out' / 'seed1'} holds a finished run with other settings (max_lr 0.05 (now 0.1))" \
        in printed
    assert history.read_bytes() == before


def test_a_recipe_reuses_a_seed_finished_with_its_values_given_as_flags(seeds_main, tmp_path, capsys):
    # fast's values as flags; seeds_main gives --epochs and --batch-size, which win over a recipe
    values = {k: v for k, v in train.RECIPES["fast"].items() if k not in ("epochs", "batch_size")}
    assert seeds_main("--seeds", "1", *train.as_flags(values).split()) == 0
    capsys.readouterr()
    assert seeds_main("--seeds", "1", "--recipe", "fast") == 0
    assert "1 seed(s) already finished with these settings: skipped" in capsys.readouterr().out
    history = json.loads((tmp_path / "out" / "seed1" / "history.json").read_text())
    assert history["config"]["recipe"] == "default"  # the run of the explicit flags, kept


def robustness_run(seed, curve, fonts, fonts_sha256="a1"):
    """A line of seeds.json as far as robust_seed reads it; FONTS None: not scored."""
    scores = None if fonts is None else {"fonts": fonts}
    return {"seed": seed, "curve": curve, "robustness": scores, "fonts_sha256": scores and fonts_sha256}


def test_the_robust_seed_is_the_best_on_fonts_of_all_the_seeds_whatever_their_test_accuracy():
    run = robustness_run
    held, dipped = [99.5, 99.4, 99.45, 99.41], [99.5, 99.6, 99.39, 99.6]  # dipped: under 99.40 at epoch 3
    runs = [run(1, held, 90.0), run(2, dipped, 92.0), run(3, held, 91.0), run(4, dipped, 92.0)]
    assert seeds.robust_seed(runs) == (2, None)  # 2 and 4 read fonts best (tie: the lower seed), dips or not
    low = [run(1, [90.0, 90.0, 90.0], 95.0), run(2, held, 94.0)]
    assert seeds.robust_seed(low) == (1, None)  # the test accuracy is not read at all
    seed, why = seeds.robust_seed([*runs, run(5, held, None)])  # an unscored seed might be the best
    assert seed is None and why.startswith("seed(s) 5 have no fonts score")
    assert seeds.robust_seed([]) == seeds.robust_seed([run(1, held, None)]) == (None, None)  # nothing to say


@pytest.mark.parametrize("other_fonts", ["b2", None])  # another font set, or none recorded (older files)
def test_scores_made_with_different_font_sets_give_no_robust_seed_and_say_why(
        synthetic_mnist, tmp_path, capsys, other_fonts):
    runs = [robustness_run(1, [99.5], 90.0), robustness_run(2, [99.5], 95.0, fonts_sha256=other_fonts)]
    assert seeds.robust_seed(runs)[0] is None
    assert seeds.robust_seed([runs[0], robustness_run(2, [99.5], 95.0)]) == (2, None)  # one font set

    argv = ["--seeds", "1-2", "--data-dir", str(synthetic_mnist), "--out-dir", str(tmp_path / "out"),
            "--epochs", "1", *FLAGS]
    args = seeds.parse_args(argv)
    for seed, fonts, fonts_sha256 in ((1, 90.0, "a1"), (2, 95.0, other_fonts)):
        folder = hand_made_run(args, seed, 98.0)
        save_weights(folder / "weights.pt", Net())
        (folder / "robustness.json").write_text(json.dumps({
            "weights_sha256": hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest(),
            "fonts_sha256": fonts_sha256, "scores": {"fonts": fonts, "overall": fonts}}))
    assert seeds.main(argv) == 0  # nothing to train
    summary = json.loads((tmp_path / "out" / "seeds.json").read_text())["summary"]
    assert summary["robust_seed"] is None and "different font sets" in summary["no_robust_seed"]
    assert f"no robust seed: {summary['no_robust_seed']}" in capsys.readouterr().out.splitlines()


def test_an_interrupted_seed_resumes_from_its_checkpoint(seeds_main, synthetic_mnist, tmp_path, monkeypatch):
    seed_dir = tmp_path / "out" / "seed1"
    argv = [*FLAGS, "--epochs", "2", "--data-dir", str(synthetic_mnist), "--seed", "1",
            "--out-dir", str(seed_dir)]
    real_train_epoch = train.train_epoch

    def stop_in_epoch_2(state, loader, stop):
        if state.epoch == 1:
            signal.raise_signal(signal.SIGINT)
        return real_train_epoch(state, loader, stop)

    monkeypatch.setattr(train, "ensure_mnist", lambda data_dir: None)
    monkeypatch.setattr(train, "train_epoch", stop_in_epoch_2)
    with pytest.raises(SystemExit):
        train.main(argv)
    assert not (seed_dir / "history.json").exists()
    monkeypatch.setattr(train, "train_epoch", real_train_epoch)
    train.main([*argv[:-1], str(tmp_path / "whole")])  # the same seed, uninterrupted

    assert seeds_main("--seeds", "1", "--jobs", "1", epochs=2) == 0
    assert "Resuming after epoch 1 of 2" in (seed_dir / "train.log").read_text()
    resumed, whole = (torch.load(d / "weights.pt", weights_only=True)["state_dict"]
                      for d in (seed_dir, tmp_path / "whole"))
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)
    (run,) = json.loads((tmp_path / "out" / "seeds.json").read_text())["runs"]
    assert run["wall_seconds"] is None  # a resumed run's time is not a run's time


def test_a_failing_seed_is_reported_and_the_others_finish(seeds_main, tmp_path, capsys):
    broken = tmp_path / "out" / "seed2"
    broken.mkdir(parents=True)
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")  # its resume fails in one line
    assert seeds_main("--seeds", "1-2", "--jobs", "2") == 1
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [run["seed"] for run in result["runs"]] == [1]
    captured = capsys.readouterr()
    assert "seed 2: stopped or failed (exit code 1)" in captured.out
    assert "seed(s) 2 did not finish with these settings" in captured.err
    assert "not a PyTorch weights file" in (broken / "train.log").read_text()


def hand_made_run(args, seed, accuracy):
    """A finished one-epoch run of SEED with ARGS' settings, as train.py would leave it (no weights)."""
    folder = Path(args.out_dir) / f"seed{seed}"
    folder.mkdir(parents=True)
    config = train.run_config(train.parse_args(seeds.seed_flags(args, seed)))
    epoch = {"epoch": 1, "test_acc": accuracy, "test_loss": 0.3, "seconds": 2.0}
    (folder / "history.json").write_text(json.dumps({
        "config": config, "final_test_acc": accuracy, "best_test_acc": accuracy, "best_test_acc_epoch": 1,
        "best_test_loss": 0.3, "epochs": [epoch]}))
    return folder


def test_a_seed_robustness_cannot_score_is_recorded_and_the_table_still_written(
        synthetic_mnist, tmp_path, capsys, quick_robustness):
    argv = ["--seeds", "1-2", "--robustness", "--data-dir", str(synthetic_mnist), "--out-dir",
            str(tmp_path / "out"), "--epochs", "1", *FLAGS]
    args = seeds.parse_args(argv)
    save_weights(hand_made_run(args, 1, 98.0) / "weights.pt", Net())
    (hand_made_run(args, 2, 97.0) / "weights.pt").write_bytes(b"not weights")  # robustness.py fails on it
    assert seeds.main(argv) == 1
    one, two = json.loads((tmp_path / "out" / "seeds.json").read_text())["runs"]
    assert one["robustness"]["fonts"] == 10.0 and one["robustness_error"] is None
    assert two["robustness"] is None and two["robustness_error"].startswith("robustness.py: error: ")
    assert "\n" not in two["robustness_error"]
    assert (tmp_path / "out" / "seeds.png").read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "2 seed(s) already finished with these settings: skipped" in captured.out  # nothing trained
    errors = captured.err.splitlines()  # and tqdm's bar
    assert f"seed 2: {two['robustness_error']}" in errors
    assert "seeds.py: error: robustness.py could not score seed(s) 2" in errors


def test_an_out_dir_that_is_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        seeds.main(["--out-dir", str(tmp_path / "taken"), "--seeds", "1"])
    assert str(exit_info.value.code) == f"seeds.py: error: --out-dir {tmp_path / 'taken'}: File exists"


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "5-1"], "is not a range of seeds"),
    (["--seeds", "x"], "is not a list of seeds"),
    (["--seeds", "1-"], "is not a list of seeds"),  # a typo, not seed 1
    (["--seed", "3"], "--seed is set by seeds.py"),
    (["--resu", "x.pt"], "unrecognized arguments: --resu"),  # train.py takes no abbreviation either
    (["--max-lr", "-1"], "--max-lr: -1 is outside"),
])
def test_bad_arguments_give_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        seeds.parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["{not json", '{"epochs": []}', '{"config": {}, "epochs": []}', "[]"])
def test_a_damaged_history_is_one_line_before_any_training(seeds_main, tmp_path, text, monkeypatch):
    folder = tmp_path / "out" / "seed2"  # read before seed 1, the first to train, starts
    folder.mkdir(parents=True)
    (folder / "history.json").write_text(text)
    monkeypatch.setattr(seeds.Jobs, "start", lambda *args: pytest.fail("a seed was started"))
    with pytest.raises(SystemExit) as exit_info:
        seeds_main("--seeds", "1-2")
    assert exit_info.value.code == f"seeds.py: error: {folder / 'history.json'} is not a history.json " \
                                   "that train.py wrote; move it away or use another --out-dir"


def test_the_summary_holds_every_seed_finished_with_these_settings(seeds_main, tmp_path, capsys):
    assert seeds_main("--seeds", "1-2") == 0
    assert seeds_main("--seeds", "3", "--max-lr", "0.1") == 0  # seed 3 with other settings: alone
    assert [run["seed"] for run in json.loads((tmp_path / "out" / "seeds.json").read_text())["runs"]] == [3]
    capsys.readouterr()
    assert seeds_main("--seeds", "1") == 0  # trains nothing; seed 2 is summarized too, seed 3 is not
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [run["seed"] for run in result["runs"]] == [1, 2] and result["summary"]["n"] == 2
    assert "test accuracy over 2 seeds" in capsys.readouterr().out


def test_two_processes_sharing_a_folder_train_each_seed_once_and_the_last_summary_holds_all(
        synthetic_mnist, tmp_path):
    code = (f"import sys, seeds; seeds.TRAIN_PY = {str(TRAIN_WITHOUT_ACQUISITION)!r}; "
            "sys.exit(seeds.main(sys.argv[1:]))")
    common = ["--jobs", "1", "--data-dir", str(synthetic_mnist), "--out-dir", str(tmp_path / "out"),
              "--epochs", "1", *FLAGS]
    processes = [subprocess.Popen([sys.executable, "-c", code, "--seeds", seeds_given, *common], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for seeds_given in ("1-3", "2-4")]  # seeds 2 and 3 given to both
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    for seed in range(1, 5):
        log = (tmp_path / "out" / f"seed{seed}" / "train.log").read_text()
        assert log.count("Config:") == 1 and log.count("Test set:") == 1  # one run, trained once
    result = json.loads((tmp_path / "out" / "seeds.json").read_text())
    assert [run["seed"] for run in result["runs"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("argv, folder", [
    ([], "runs/seeds/default"), (["--recipe", "fast"], "runs/seeds/fast"),
    (["--holdout", "10000", "--jobs", "1"], "runs/seeds/holdout=10000"), (["--out-dir", "mine"], "mine")])
def test_the_default_out_dir_is_named_after_the_settings_as_train_py_names_a_run(argv, folder):
    assert seeds.parse_args(argv).out_dir == str(Path(folder))
