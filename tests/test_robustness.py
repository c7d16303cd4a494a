"""robustness.py on small data: every corruption changes the digits, draws are fixed by the
seed, font digits hold no MNIST image, and the command's figures add up."""

import json

import pytest
import torch

import robustness
from model import Net, normalize, save_weights


def digits(count=20):
    """A blank-free batch: a bright bar at a place that depends on the index."""
    images = torch.zeros(count, 1, 28, 28)
    for i in range(count):
        images[i, 0, 5 + i % 10:15 + i % 10, 10:14] = 1.0
    return images


@pytest.mark.parametrize("name", [n for n in robustness.CORRUPTIONS if n != "clean"])
def test_each_corruption_changes_the_digits_within_range_and_repeats_with_its_seed(name):
    corrupt, images = robustness.CORRUPTIONS[name], digits()
    first = corrupt(images.clone(), torch.Generator().manual_seed(5))
    again = corrupt(images.clone(), torch.Generator().manual_seed(5))
    other = corrupt(images.clone(), torch.Generator().manual_seed(6))
    assert first.shape == images.shape and torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1 + 1e-6
    assert not torch.allclose(first, images)
    # thin and thick draw nothing; canvas's draws (size, place) are what predict.py's steps undo
    if name not in ("thin", "thick", "canvas"):
        assert not torch.equal(first, other)


def test_font_digits_are_balanced_readable_and_fixed_by_the_seed():
    fonts = robustness.installed_fonts()
    assert fonts, "matplotlib's DejaVu fonts at least"
    assert all(robustness.draws_digits(path) for path in fonts)
    images, labels = robustness.font_digits(30, seed=1, fonts=fonts)
    again, _ = robustness.font_digits(30, seed=1, fonts=fonts)
    assert images.shape == (30, 1, 28, 28) and torch.equal(images, again)
    assert labels.tolist() == [i % 10 for i in range(30)]
    assert all(image.max() == 1.0 for image in images)  # every digit found ink, as predict.py reads it


def test_a_folder_without_fonts_falls_back_to_matplotlibs(tmp_path):
    (tmp_path / "not-a-font.ttf").write_bytes(b"garbage")
    fonts = robustness.installed_fonts((tmp_path,))
    assert fonts and all(path.name.startswith(("DejaVu", "STIXGen")) for path in fonts)


def test_command_prints_and_writes_every_score_and_repeats(synthetic_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robustness, "ensure_mnist", lambda data_dir: None)
    torch.manual_seed(0)
    save_weights(tmp_path / "weights.pt", Net().eval())
    argv = ["--weights", str(tmp_path / "weights.pt"), "--data-dir", str(synthetic_mnist), "--count", "40",
            "--font-count", "20", "--output", str(tmp_path / "robust.json")]
    scores = robustness.main(argv)
    printed = capsys.readouterr().out
    assert set(scores) == {*robustness.CORRUPTIONS, "corrupted_mean", "fonts", "overall"}
    for name, score in scores.items():
        assert f"{name} " in printed and 0 <= score <= 100
    corrupted = [scores[n] for n in robustness.CORRUPTIONS if n != "clean"]
    assert scores["corrupted_mean"] == pytest.approx(sum(corrupted) / len(corrupted))
    assert scores["overall"] == pytest.approx((sum(corrupted) + scores["fonts"]) / (len(corrupted) + 1))
    saved = json.loads((tmp_path / "robust.json").read_text())
    assert saved["scores"] == scores and saved["count"] == 40 and saved["fonts"] > 0
    pixels, labels = robustness.split_images(synthetic_mnist, "test", 10000, 40)
    with torch.inference_mode():
        clean = Net().eval()
        clean.load_state_dict(torch.load(tmp_path / "weights.pt", weights_only=True)["state_dict"])
        expected = (clean(normalize(pixels.unsqueeze(1).float() / 255)).argmax(1) == labels).float().mean()
    assert scores["clean"] == pytest.approx(100 * float(expected))
    assert robustness.main(argv) == scores  # the same set, the same figures
    capsys.readouterr()
    assert robustness.main([*argv, "--json"]) == scores
    printed = json.loads(capsys.readouterr().out)  # JSON alone on stdout: what --output writes
    assert printed["scores"] == scores and printed.keys() == saved.keys()
    assert printed["weights"] == str(tmp_path / "weights.pt")


def test_validation_images_are_the_last_holdout_training_images(synthetic_mnist):
    pixels, labels = robustness.split_images(synthetic_mnist, "val", 56, 100)
    train_pixels, train_labels = robustness.read_split(synthetic_mnist, train=True)
    assert torch.equal(pixels, train_pixels[-56:]) and torch.equal(labels, train_labels[-56:])


def test_unreadable_weights_are_one_line(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        robustness.main(["--weights", str(tmp_path / "bad.pt")])
    message = str(exit_info.value.code)
    assert message.startswith("robustness.py: error:") and "\n" not in message


def test_an_output_in_a_missing_folder_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        robustness.parse_args(["--output", str(tmp_path / "no" / "r.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "its folder does not exist" in err
    assert len(err.strip().splitlines()) == 1
