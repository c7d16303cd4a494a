"""robustness.py on small data: every corruption changes the digits, draws are fixed by the
seed, font digits hold no MNIST image and come from matplotlib's fonts alone, the fine pen's
skeletons are a plain thinning's, and the command's figures add up."""

import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import ImageFont

import robustness
from conftest import synthetic_digits
from data import read_split
from images import pieces_of
from model import Net, normalize
from train import save_weights


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
    if name not in ("thin", "thick"):  # they draw nothing
        assert not torch.equal(first, other)


@pytest.mark.parametrize("name", robustness.KINDS)
def test_each_kinds_pages_repeat_with_their_seed_and_are_read_as_digits(name):
    images = digits(4)
    first, again, other = (list(robustness.pages(images, name, seed)) for seed in (2, 2, 3))
    assert len(first) == 4 and all(np.array_equal(a, b) for a, b in zip(first, again))
    assert all(page.min() >= 0 and page.max() <= 1 and min(page.shape) > 28 for page in first)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(first, other))
    read = robustness.prepared(first)
    assert read.shape == (4, 1, 28, 28) and (read.amax((1, 2, 3)) == 1).all()  # ink found in every page


def font_digits(count, seed):
    pages, labels = zip(*robustness.font_pages(count, seed))
    return robustness.prepared(pages), list(labels)


def test_font_digits_are_balanced_readable_and_fixed_by_the_seed():
    images, labels = font_digits(30, seed=1)
    again, _ = font_digits(30, seed=1)
    assert images.shape == (30, 1, 28, 28) and torch.equal(images, again)
    assert labels == [i % 10 for i in range(30)]
    assert all(image.max() == 1.0 for image in images)  # every digit found ink, as predict.py reads it


def test_every_font_of_the_set_ships_with_matplotlib_and_draws_ten_distinct_digits():
    fonts = robustness.font_files()
    assert len(fonts) == len(robustness.FONT_FILES) == 16
    assert {path.parent for path in fonts} == {Path(matplotlib.get_data_path()) / "fonts" / "ttf"}
    for path in fonts:
        font = ImageFont.truetype(str(path), 40)
        glyphs = [robustness.render(font, str(digit), 0.0, 0).tobytes() for digit in range(10)]
        assert len(set(glyphs)) == 10 and all(any(glyph) for glyph in glyphs), path.name


def test_the_font_digits_do_not_depend_on_the_fonts_a_machine_has(tmp_path, monkeypatch):
    """Two machines with fonts of their own in the usual folders, one of them under the name of a
    font of the set: the set, its digest and its digits stay the same."""
    fonts = robustness.font_files()
    expected = fonts, robustness.files_digest(fonts), font_digits(20, seed=4)[0]
    for machine, (impostor, extra) in {"a": (fonts[-1], fonts[1]), "b": (fonts[2], fonts[-2])}.items():
        home = tmp_path / machine
        for folder in (home / ".fonts", home / ".local" / "share" / "fonts", home / "system" / "fonts"):
            folder.mkdir(parents=True)
            shutil.copy(impostor, folder / fonts[0].name)  # other bytes under a set member's name
            shutil.copy(extra, folder / f"Extra-{machine}.ttf")
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
        monkeypatch.setenv("XDG_DATA_DIRS", str(home / "system"))
        monkeypatch.setattr(Path, "home", classmethod(lambda cls, home=home: home))
        found = robustness.font_files()
        assert found == expected[0] and robustness.files_digest(found) == expected[1]
        assert torch.equal(font_digits(20, seed=4)[0], expected[2])


def test_command_prints_and_writes_every_score_and_repeats(synthetic_mnist, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(robustness, "ensure_mnist", lambda data_dir: None)
    torch.manual_seed(0)
    save_weights(tmp_path / "weights.pt", Net().eval())
    argv = ["--weights", str(tmp_path / "weights.pt"), "--data-dir", str(synthetic_mnist), "--count", "40",
            "--font-count", "20", "--output", str(tmp_path / "robust.json")]
    scores = robustness.main(argv)
    printed = capsys.readouterr().out
    assert set(scores) == {*robustness.CORRUPTIONS, "canvas", "corrupted_mean", "fonts", "overall"}
    for name, score in scores.items():
        assert f"{name} " in printed and 0 <= score <= 100
    corrupted = [scores[n] for n in (*robustness.CORRUPTIONS, "canvas") if n != "clean"]
    assert scores["corrupted_mean"] == pytest.approx(sum(corrupted) / len(corrupted))
    assert scores["overall"] == pytest.approx((sum(corrupted) + scores["fonts"]) / (len(corrupted) + 1))
    saved = json.loads((tmp_path / "robust.json").read_text())
    assert saved["scores"] == scores and saved["count"] == 40
    assert saved["fonts"] == 16 and saved["fonts_sha256"] == robustness.files_digest(robustness.font_files())
    assert saved["font_set"] == f"{robustness.FONT_SET}, matplotlib {matplotlib.__version__}"
    product = saved["through_product"]
    assert list(product) == [*robustness.KINDS, "fonts"]
    assert all(f"{name} " in printed and 0 <= score <= 100 for name, score in product.items())
    assert product["canvas"] == scores["canvas"] and product["fonts"] == scores["fonts"]  # pages in both
    pixels, labels = (part[:40] for part in read_split(synthetic_mnist, train=False))
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


def test_validation_images_are_the_last_holdout_training_images(synthetic_mnist, monkeypatch):
    monkeypatch.setattr(robustness, "ensure_mnist", lambda data_dir: None)
    read = []

    def benchmark(model, pixels, labels, seed, font_count):
        read.append((pixels, labels))
        return {"clean": 1.0}, {"clean": 1.0}
    monkeypatch.setattr(robustness, "benchmark", benchmark)
    robustness.main(["--data-dir", str(synthetic_mnist), "--split", "val", "--holdout=56", "--count=50"])
    train_pixels, train_labels = read_split(synthetic_mnist, train=True)
    ((pixels, labels),) = read
    assert torch.equal(pixels, train_pixels[-56:-6]) and torch.equal(labels, train_labels[-56:-6])


def test_unreadable_weights_are_one_line(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        robustness.main(["--weights", str(tmp_path / "bad.pt")])
    message = str(exit_info.value.code)
    assert message.startswith("robustness.py: error:") and "\n" not in message


@pytest.mark.parametrize("output, said", [(".", "is a folder, not a file"),
                                          ("README.md/r.json", "README.md is a file, not a folder")])
def test_an_output_that_is_a_folder_or_under_a_file_is_one_line(tmp_path, capsys, output, said, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "README.md").write_text("a file")
    assert robustness.parse_args(["--output", str(tmp_path / "new" / "r.json")]).output  # a folder is made
    with pytest.raises(SystemExit) as exit_info:
        robustness.parse_args(["--output", output])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and said in err
    assert len(err.strip().splitlines()) == 1


def test_paper_photos_repeat_with_their_seed_and_look_as_described():
    images = digits(3)
    pages = {name: list(robustness.photographed(images, np.random.default_rng(1), **style))
             for name, style in robustness.PAPER.items()}
    again = list(robustness.photographed(images, np.random.default_rng(1), **robustness.PAPER["grain_45"]))
    assert all(np.array_equal(a, b) for a, b in zip(pages["grain_45"], again))
    for name, photos in pages.items():
        assert all(min(photo.shape) > robustness.PAGE_FIELD for photo in photos), name  # a page, not a crop
    paper = [np.median(photo) * 255 for photo in pages["marker"]]
    assert all(225 < grey < 245 for grey in paper)
    grain = [np.std(pages[name][0][:20, :20]) * 255 for name in ("marker", "grain_25", "grain_45")]
    assert grain[0] < 8 < grain[1] < grain[2] / 1.2  # JPEG keeps most of it
    for photo in pages["shadow"]:
        corners = [photo[0, 0], photo[0, -1], photo[-1, 0], photo[-1, -1]]
        assert max(corners) - min(corners) > 0.25  # lit at one side, in shadow at the other
    ink = {name: sum((photo < 0.5).sum() for photo in pages[name]) for name in ("marker", "fine_pen")}
    assert ink["fine_pen"] < 0.6 * ink["marker"]


def test_a_pen_line_is_thin_and_keeps_the_strokes_connected():
    seven = np.zeros((40, 40), dtype=bool)
    seven[5:15, 5:35] = True  # a 10-px bar, and a 10-px stem down from its end
    seven[5:35, 25:35] = True
    for width in (2, 3):
        line = robustness.pen_line(seven, width)
        assert line.sum() < 0.4 * seven.sum() and (line[20:30].sum(axis=1) == width).all()
        assert len(np.unique(pieces_of(line)[0])) == 2  # the paper and one line


def plain_thinning(mask):
    """Zhang and Suen's thinning as their paper states it, pixel by pixel: P2..P9 are a pixel's
    neighbours clockwise from north; each sub-iteration marks, then deletes."""
    mask = np.pad(mask.astype(np.uint8), 1)
    offsets = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))
    changed = True
    while changed:
        changed = False
        for step in (0, 1):
            marked = []
            for y, x in zip(*np.nonzero(mask)):
                p2, p3, p4, p5, p6, p7, p8, p9 = (int(mask[y + dy, x + dx]) for dy, dx in offsets)
                ring = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
                count, runs = sum(ring[:8]), sum(a == 0 and b == 1 for a, b in zip(ring, ring[1:]))
                sides = (p2 * p4 * p6, p4 * p6 * p8) if step == 0 else (p2 * p4 * p8, p2 * p6 * p8)
                if 2 <= count <= 6 and runs == 1 and sides == (0, 0):
                    marked.append((y, x))
            for y, x in marked:
                mask[y, x] = 0
            changed = changed or bool(marked)
    return mask[1:-1, 1:-1].astype(bool)


def test_skeleton_is_zhang_and_suens_thinning_pixel_for_pixel():
    rng = np.random.default_rng(0)
    masks = []
    for _ in range(12):  # blobs, bars and rings of random sizes, some touching the border
        mask = np.zeros((20, 24), dtype=bool)
        for _ in range(rng.integers(1, 4)):
            top, left = rng.integers(-2, 16), rng.integers(-2, 20)
            mask[max(top, 0):top + rng.integers(2, 9), max(left, 0):left + rng.integers(2, 9)] = True
        if rng.random() < 0.5:
            mask[8:12, 8:14] = False  # a hole
        masks.append(mask)
    masks.append(synthetic_digits(1, seed=3)[0][0][:20, :24] > 127)
    together = robustness.skeleton(torch.from_numpy(np.stack(masks))).numpy()
    for mask, thinned in zip(masks, together):
        assert np.array_equal(thinned, plain_thinning(mask))
        assert not (thinned & ~mask).any()
    assert together.sum() < 0.5 * np.stack(masks).sum()  # it did thin
