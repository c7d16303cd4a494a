"""bench/step.py on a tiny configuration: it runs, and its table adds up. No timing is asserted."""

import json

import pytest

from bench import step


def test_tiny_bench_writes_every_candidate_with_consistent_ratios(synthetic_mnist, tmp_path, no_acquisition,
                                                                    capsys):
    out = tmp_path / "bench.json"
    step.main(["--data-dir", str(synthetic_mnist), "--steps", "2", "--repeats", "2", "--batch-size", "32",
                "--test-batch-size", "50", "--json", str(out),
                "--profile", "--candidates",
                "torchvision,in-memory,floor,floor-native-dropout,floor-no-dropout,floor-channels-last"])
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
    printed = capsys.readouterr().out
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
    (["--json", "no/such/folder/b.json"], "its folder does not exist"),
])
def test_bad_arguments_give_one_line(synthetic_mnist, tmp_path, no_acquisition, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        step.main(["--data-dir", str(synthetic_mnist), "--batch-size", "32",
                    "--json", str(tmp_path / "b.json"), *argv])
    text = str(exit_info.value.code) + capsys.readouterr().err
    assert message in text and len(text.strip().splitlines()) == 1
    assert not (tmp_path / "b.json").exists()
