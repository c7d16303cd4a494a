"""bench/step.py on a tiny configuration: it runs, and its table adds up. No timing is asserted.
bench/frontier.py, bench/screening_table.py, bench/paper_val.py and bench/handwriting_pick.py on
hand-made outputs; bench/suite_paths.py's refusal. Each runs as a process: the tests import
nothing from bench/ but handwriting_suite, whose cache they check. bench/readme.py: README's
results table agrees with results/."""

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import images
import robustness
import train
from conftest import ROOT
from data import read_split, to_unit_interval
from model import Net, load_model
from train import save_weights

WITHOUT_ACQUISITION = ROOT / "tests" / "bench_without_acquisition.py"


def run_step(data_dir, *argv):
    """bench/step.py on DATA_DIR as it is (no MNIST acquisition); the finished process."""
    command = [sys.executable, str(WITHOUT_ACQUISITION), "bench/step.py", "--data-dir", str(data_dir),
               "--batch-size", "32", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # one thread a test worker


def run_frontier(*argv):
    command = [sys.executable, "bench/frontier.py", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_tiny_bench_writes_every_candidate_with_consistent_ratios(synthetic_mnist, tmp_path):
    out = tmp_path / "bench.json"
    done = run_step(synthetic_mnist, "--steps", "2", "--repeats", "2", "--test-batch-size", "50",
                    "--output", str(out), "--profile", "--candidates",
                    "torchvision,in-memory,floor,floor-native-dropout,floor-no-dropout,floor-channels-last")
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    rows = result["candidates"]
    assert list(rows) == ["torchvision", "in-memory", "floor", "floor-native-dropout", "floor-no-dropout",
                          "floor-channels-last"]
    assert (result["steps"], result["repeats"], result["batch_size"]) == (2, 2, 32)
    for row in rows.values():
        assert len(row["runs"]) == 2 and row["train_s"] > 0 and row["test_s"] > 0
        # 256 synthetic training images in batches of 32: an epoch is 8 steps, 4x the 2 timed.
        assert row["epoch_s"] == pytest.approx(4 * row["train_s"] + row["test_s"])
        assert row["images_per_s"] == pytest.approx(64 / row["train_s"])
        assert row["x_floor"] == pytest.approx(row["epoch_s"] / rows["floor"]["epoch_s"])
        speedup = rows["torchvision"]["epoch_s"] / row["epoch_s"]
        assert row["speedup_over_torchvision"] == pytest.approx(speedup)
    assert rows["floor"]["x_floor"] == 1.0
    printed = done.stdout
    table = printed.split("candidate")[-1].split("Top operators")[0].splitlines()[1:]
    assert [line.split()[0] for line in table if line] == list(rows)
    assert list(result["profiles"]) == list(rows)
    for ops in result["profiles"].values():
        assert 0 < len(ops) <= 12 and sum(op["share"] for op in ops) <= 100.001
    convolution = [op for op in result["profiles"]["floor"] if "convolution" in op["op"]]
    assert convolution and "Top operators by self time, floor:" in printed


@pytest.mark.parametrize("argv, message", [
    (["--candidates", "floor,warp-drive"], "unknown candidate warp-drive"),
    (["--steps", "0"], "--steps: 0 is outside"),
    (["--steps", "9"], "--steps 9 x batch 32 is more than the 256 training images"),
    (["--output", "."], "is a folder, not a file"),
])
def test_bad_arguments_give_one_line(synthetic_mnist, tmp_path, argv, message):
    done = run_step(synthetic_mnist, "--output", str(tmp_path / "b.json"), *argv)
    assert done.returncode != 0 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()


def test_screening_table_writes_the_command_that_repeats_each_run(tmp_path):
    flags = ["--seed", "2", "--holdout", "100", "--channels", "4,8,8,8,8,12,12", "--recipe", "fast",
             "--data-dir", "elsewhere", "--no-nesterov"]
    # recorded while --pen and --noise existed, both off: the command leaves them out
    config = {**train.run_config(train.parse_args(flags)), "pen": 0.0, "noise": 0.0}
    epochs = [{"val_acc": 98.0, "seconds": 1.0}, {"val_acc": 99.0, "seconds": 1.0}]
    run = tmp_path / "screen" / "c01" / "seed2"
    run.mkdir(parents=True)
    (run / "history.json").write_text(json.dumps({"config": config, "epochs": epochs}))
    command = [sys.executable, "bench/screening_table.py", str(tmp_path / "screen"), str(tmp_path / "t.csv")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (row,) = csv.DictReader(io.StringIO((tmp_path / "t.csv").read_text()))
    assert (row["candidate"], row["seed"], row["best_epoch"]) == ("c01", "2", "2")
    assert row["final_val_acc"] == row["best_val_acc"] == "99.0" and row["last_3_min"] == "98.0"
    words = row["command"].split()
    assert words[:2] == ["python", "train.py"] and "--channels" in words and "--no-nesterov" in words
    assert not {"--recipe", "--data-dir", "--parameters", "--device"} & set(words)
    again = train.run_config(train.parse_args(words[2:]))  # the command repeats what decides the run
    assert train.changed_settings(config, again) == []


def write_table(folder, parameters, finals, width=1.0):
    folder.mkdir()
    runs = [{"seed": seed, "final_test_acc": acc} for seed, acc in enumerate(finals, start=1)]
    config = {"model": "reference", "width": width, "parameters": parameters}
    (folder / "seeds.json").write_text(json.dumps({"config": config, "split": "test", "runs": runs}))
    return str(folder)


def test_frontier_keeps_the_seeds_asked_for_and_sorts_by_size(tmp_path):
    big = write_table(tmp_path / "w1", 7544, [99.40, 99.50, 99.30, 99.90])
    small = write_table(tmp_path / "w0.7", 3723, [99.30, 99.40, 99.50], width=0.7)
    done = run_frontier(big, small, "--seeds", "1-3", "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "out" / "frontier.md").read_text()
    rows = markdown.splitlines()[2:]  # by size: the smaller first; seed 4 of the bigger left out
    assert rows == ["| reference, width 0.7 | 3,723 | 1-3 | 99.40 ± 0.10% | 99.30% | 2 of 3 |",
                    "| reference, width 1 | 7,544 | 1-3 | 99.40 ± 0.10% | 99.30% | 2 of 3 |"]
    assert markdown in done.stdout and (tmp_path / "out" / "frontier.png").stat().st_size > 0


def test_frontier_refuses_a_table_without_a_seed_asked_for(tmp_path):
    small = write_table(tmp_path / "w0.7", 3723, [99.30, 99.40, 99.50], width=0.7)
    done = run_frontier(small, "--seeds", "1-4", "--out-dir", str(tmp_path / "out"))
    assert done.returncode == 1 and "does not have every seed" in done.stderr




README = (ROOT / "README.md").read_text()


def readme_py(*argv):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "readme.py"), *argv],
                          capture_output=True, text=True, cwd=ROOT)


def test_readme_agrees_with_the_committed_results():
    done = readme_py("--check")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("typed, wrong", [
    ("| 18 of 20 | 15 of 20 |", "| 19 of 20 | 15 of 20 |"),  # a count of the default's row
    ("99.42 ± 0.05%", "99.43 ± 0.05%"),  # the reference recipe's mean
    ("parameters: 99.46% over 20 seeds", "parameters: 99.50% over 20 seeds"),  # the headline
])
def test_a_number_that_differs_from_the_data_fails_the_check_and_is_rewritten(tmp_path, typed, wrong):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert readme_py("--readme", str(readme)).returncode == 0  # without --check it writes the data's numbers
    agreed = readme.read_text()
    assert agreed.count(typed) == 1
    readme.write_text(agreed.replace(typed, wrong))
    done = readme_py("--check", "--readme", str(readme))
    assert done.returncode == 1 and "differs from results/*/seeds.json" in done.stderr
    assert wrong in done.stdout  # the diff shows the line
    assert readme_py("--readme", str(readme)).returncode == 0
    assert readme.read_text() == agreed


def paper_val(*argv):
    command = [sys.executable, "bench/paper_val.py", *argv]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def holdout_run(folder, seed, holdout, val_acc):
    """An untrained network's weights and a history.json that says it held out HOLDOUT."""
    folder.mkdir(parents=True)
    torch.manual_seed(seed)
    save_weights(folder / "weights.pt", Net())
    history = {"config": {"holdout": holdout}, "epochs": [{"val_acc": val_acc}], "final_val_acc": val_acc}
    (folder / "history.json").write_text(json.dumps(history))
    return str(folder / "weights.pt")


def test_paper_val_scores_held_out_photos_per_weights_file(synthetic_mnist, tmp_path, monkeypatch):
    # Untrained networks read the synthetic digits nearly at random; these two read the marker and
    # the fine pen differently, and differently again with the constant set (checked below).
    runs = [holdout_run(tmp_path / "seed23", 23, 56, 91.0), holdout_run(tmp_path / "seed1", 1, 56, 92.0)]
    done = paper_val(*runs, "--count", "20", "--data-dir", str(synthetic_mnist), "--set", "STROKE_WIDTH=8")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "20 held-out digits; images.py's constants changed: STROKE_WIDTH=8"
    rows = [[float(cell) for cell in line.strip("| ").split(" | ")[1:]] for line in lines[4:]]
    # The same scores here: the first 20 of the last 56 training digits, the pen grown to 8 px.
    pixels, labels = read_split(synthetic_mnist, train=True)
    digits, labels = to_unit_interval(pixels[-56:][:20]), labels[-56:][:20]

    def scores(model):
        return [robustness.accuracy(model, read, labels)
                for _, read in robustness.product_digits(digits, names=("marker", "fine_pen"))]
    models = [load_model(run) for run in runs]
    unset = [scores(model) for model in models]
    monkeypatch.setattr(images, "STROKE_WIDTH", 8.0)
    expected = [[val_acc, *scores(model)] for val_acc, model in zip((91.0, 92.0), models)]
    assert [row[1:] for row in expected] != unset  # so the table shows that --set took effect
    assert expected[0][1] != expected[0][2]  # and which column is which
    for row in expected:
        row.append(row[2] - row[1])
    expected.append([sum(column) / 2 for column in zip(*expected)])
    assert [cell for row in rows for cell in row] == pytest.approx([cell for row in expected for cell in row],
                                                                   abs=0.006)
    everything = holdout_run(tmp_path / "all", 3, 0, 99.0)
    refused = paper_val(everything)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"paper_val.py: error: {everything} trained on every training image: " \
                                     "no held-out digit"


def recipe_runs(folder, val_accs, first_seed=1):
    """seed1/, seed2/, ... of untrained networks whose last three epochs read VAL_ACCS[i] at lowest."""
    for seed, val_acc in enumerate(val_accs, 1):
        run = folder / f"seed{seed}"
        run.mkdir(parents=True)
        torch.manual_seed(first_seed + seed)
        save_weights(run / "weights.pt", Net())
        epochs = [{"val_acc": val_acc + 0.1}, {"val_acc": val_acc}, {"val_acc": val_acc + 0.2}]
        (run / "history.json").write_text(json.dumps({"config": {"holdout": 56}, "epochs": epochs}))
    return str(folder)


def handwriting_pick(data_dir, *folders):
    command = [sys.executable, "bench/handwriting_pick.py", *folders, "--data-dir", str(data_dir),
               "--count", "20", "--font-count", "10"]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_the_handwriting_rule_prefers_the_suite_within_the_noise_then_a_close_one(synthetic_mnist, tmp_path):
    default = recipe_runs(tmp_path / "default", [99.0, 99.1, 99.2])
    same = recipe_runs(tmp_path / "same", [99.0, 99.1, 99.2], first_seed=4)  # d = 0: within the noise
    twin = recipe_runs(tmp_path / "twin", [99.0, 99.1, 99.2], first_seed=7)  # so too, other networks
    close = recipe_runs(tmp_path / "close", [98.95, 99.05, 99.15])  # d = -0.05, SE 0: not within, but close
    far = recipe_runs(tmp_path / "far", [98.8, 98.9, 99.0])
    done = handwriting_pick(synthetic_mnist, default, same, twin, close, far)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in done.stdout.splitlines()
            if line.startswith("| ")}
    assert rows["same"][1:5] == ["99.100", rows["same"][2], "+0.000", "0.000"]
    suites = {name: float(rows[name][2]) for name in ("same", "twin")}
    assert suites["same"] != suites["twin"]  # the suite decides between the two
    best = max(suites, key=suites.get)
    assert done.stdout.strip().endswith(f"The rule picks: {best}, which becomes the default.")
    assert handwriting_pick(synthetic_mnist, default, close, far).stdout.strip().endswith(
        "The rule picks: close, which becomes --recipe robust.")
    assert handwriting_pick(synthetic_mnist, default, far).stdout.strip().endswith(
        "The rule picks: none, which becomes nothing: the default stays.")
    (tmp_path / "far" / "seed3" / "history.json").unlink()
    (tmp_path / "far" / "seed2" / "history.json").unlink()
    refused = handwriting_pick(synthetic_mnist, default, far)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "handwriting_pick.py: error: 1 paired seed(s) finished in every folder; need 2")
    history = json.loads((tmp_path / "close" / "seed2" / "history.json").read_text())
    history["config"]["holdout"] = 0  # trained on every training digit, the suite's too
    (tmp_path / "close" / "seed2" / "history.json").write_text(json.dumps(history))
    refused = handwriting_pick(synthetic_mnist, default, close)
    assert refused.returncode == 1 and "every run must hold out the same training digits" in refused.stderr


def test_suite_paths_refuses_missing_weights_and_a_network_that_trained_on_the_suite(tmp_path):
    def suite_paths(weights):
        command = [sys.executable, "bench/suite_paths.py", str(weights), "--figure", str(tmp_path / "m.png")]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)

    done = suite_paths(tmp_path / "none.pt")
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "m.png").exists()
    said = f"suite_paths.py: error: {tmp_path / 'none.pt'}: no such file (see --help)"
    assert done.stderr.splitlines() == [said]
    shutil.copy(ROOT / "weights.pt", tmp_path / "weights.pt")
    history = {"config": {"holdout": 0}, "epochs": [{"val_acc": 99.0}]}
    (tmp_path / "history.json").write_text(json.dumps(history))
    done = suite_paths(tmp_path / "weights.pt")
    assert done.returncode == 2 and not (tmp_path / "m.png").exists()
    assert "trained with --holdout 0, so on the suite's digits" in done.stderr


def test_the_handwriting_suite_reads_held_out_digits_once_and_keeps_them(synthetic_mnist, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))  # imported, not run: its cache is the point
    import handwriting_suite

    kinds = handwriting_suite.suite(synthetic_mnist, 56, count=20, font_count=10)
    pixels, labels = read_split(synthetic_mnist, train=True)
    assert list(kinds) == [*robustness.KINDS, "fonts"]
    assert all(torch.equal(kinds[name][1], labels[-56:][:20]) for name in robustness.KINDS)
    pages = robustness.pages(to_unit_interval(pixels[-56:][:20]), "clean", handwriting_suite.SUITE_SEED)
    assert torch.equal(kinds["clean"][0], robustness.prepared(pages))  # the first 20 of the last 56
    assert len(kinds["fonts"][1]) == 10 and len(list(synthetic_mnist.glob("suite-holdout56-20-*.pt"))) == 1
    all_held_out = handwriting_suite.suite(synthetic_mnist, 8, count=20, font_count=1)
    assert len(all_held_out["clean"][1]) == 8
    with pytest.raises(ValueError, match="give a --holdout"):
        handwriting_suite.suite(synthetic_mnist, 0)
    monkeypatch.setattr(robustness, "product_digits", lambda *args: pytest.fail("prepared again"))
    again = handwriting_suite.suite(synthetic_mnist, 56, count=20, font_count=10)
    assert all(torch.equal(again[name][0], kinds[name][0]) for name in kinds)
