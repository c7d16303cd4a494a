import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import data
import predict
from conftest import ROOT
from model import ARCHITECTURES, Net, TinyNet, WeightsError, load_model
from train import save_weights


def ring(size, box, ink=255, paper=0, mode="L"):
    """An '0'-like ring inside BOX on a SIZE canvas."""
    image = Image.new(mode, size, paper)
    ImageDraw.Draw(image).ellipse(box, outline=ink, width=max(2, (box[2] - box[0]) // 6))
    return image


def rgba_ring():
    image = Image.new("RGBA", (120, 90), (0, 0, 0, 0))  # transparent black paper
    ImageDraw.Draw(image).ellipse((60, 20, 90, 80), outline=(10, 10, 10, 255), width=6)
    return image


def sixteen_bit_ring():
    image = Image.fromarray(np.asarray(ring((64, 64), (10, 5, 40, 60)), dtype=np.uint16) * 257)
    assert image.mode.startswith("I")
    return image


CASES = {
    "small, off-centre, light on dark": lambda: ring((28, 28), (1, 1, 13, 17)),
    "shifted and scaled up, dark on white": lambda: ring((400, 300), (250, 20, 390, 260), ink=0, paper=255),
    "RGB photo-like, grey paper": lambda: ring((200, 200), (20, 100, 70, 190), ink=(30, 30, 30),
                                              paper=(200, 190, 180), mode="RGB"),
    "RGBA, transparent background": rgba_ring,
    "16-bit grayscale": sixteen_bit_ring,
}


def centre_of_mass(digit):
    rows, cols = np.mgrid[:28, :28]
    return (digit * rows).sum() / digit.sum(), (digit * cols).sum() / digit.sum()


# Every case in every format that can hold it: only PNG keeps 16-bit samples, and
# JPEG and BMP (as Pillow writes them) keep no alpha.
CASES_AND_FORMATS = [(case, suffix) for case in CASES for suffix in (".png", ".jpg", ".bmp", ".gif")
                     if (suffix == ".png" or case != "16-bit grayscale")
                     and (suffix in (".png", ".gif") or case != "RGBA, transparent background")]


@pytest.mark.parametrize(("case", "suffix"), CASES_AND_FORMATS)
def test_preprocessing_centres_the_ink_like_mnist(case, suffix, tmp_path):
    image = CASES[case]()
    path = tmp_path / f"digit{suffix}"
    image.save(path)
    digit = predict.to_mnist_digit(predict.load_grayscale(path))
    assert digit.shape == (28, 28) and digit.min() >= 0 and digit.max() <= 1
    row, col = centre_of_mass(digit)
    assert abs(row - 13.5) <= 1 and abs(col - 13.5) <= 1
    ink_rows, ink_cols = np.nonzero(digit > 0.05)
    assert ink_rows.min() >= 4 and ink_rows.max() < 24 and ink_cols.min() >= 4 and ink_cols.max() < 24
    assert max(np.ptp(ink_rows), np.ptp(ink_cols)) >= 17  # longer side scaled to about 20 px
    assert digit[13, 13] < 0.2 and digit.max() > 0.9  # a light ring on dark, hole in the middle


def test_gif_uses_the_first_frame(tmp_path):
    frames = [ring((60, 60), (10, 10, 50, 50)), Image.new("L", (60, 60), 0)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert predict.to_mnist_digit(predict.load_grayscale(path)).max() > 0.9


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "weights.pt"
    torch.save(Net().state_dict(), path)
    return path


def bad_inputs(folder, monkeypatch):
    """file name -> the words its one-line error must contain."""
    buffer = folder / "good.png"
    ring((50, 50), (5, 5, 45, 45)).save(buffer)
    good = buffer.read_bytes()
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt.png").write_text("not an image\n")
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("L", (64, 64), 255).save(folder / "blank.png")
    Image.new("L", (300, 300), 0).save(folder / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40_000)  # 90,000 px is over twice the limit
    return {"missing.png": "no such file", "empty.png": "empty file",
            "notes.txt.png": "not an image", "truncated.png": "truncated or corrupt",
            "blank.png": "no ink found", "bomb.png": "decompression bomb"}


def test_each_bad_input_gets_one_line_and_the_rest_are_still_read(tmp_path, monkeypatch, capsys, weights):
    expected = bad_inputs(tmp_path, monkeypatch)
    files = [str(tmp_path / name) for name in expected] + [str(tmp_path / "good.png")]
    code = predict.main([*files, "--weights", str(weights)])
    out, err = capsys.readouterr()
    assert code == 1
    errors = err.strip().splitlines()
    assert len(errors) == len(expected)
    for line, (name, words) in zip(errors, expected.items()):
        assert line.startswith(f"predict.py: error: {tmp_path / name}: ") and words in line
    assert out.startswith(f"{tmp_path / 'good.png'}: ")


def test_json_output_and_show_input(tmp_path, capsys, weights):
    ring((80, 80), (10, 10, 70, 70), ink=0, paper=255).save(tmp_path / "zero.png")
    code = predict.main([str(tmp_path / "zero.png"), "--weights", str(weights), "--json",
                         "--top-k", "3", "--show-input", str(tmp_path / "seen.png")])
    (result,) = json.loads(capsys.readouterr().out)
    assert code == 0 and len(result["top_k"]) == 3
    probabilities = [t["probability"] for t in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert result["digit"] == result["top_k"][0]["digit"]
    seen = Image.open(tmp_path / "seen.png")
    assert seen.size == (28, 28) and seen.mode == "L"


def test_a_show_input_that_cannot_be_written_names_that_path_and_the_digit_is_still_read(tmp_path, capsys,
                                                                                          weights):
    ring((80, 80), (10, 10, 70, 70), ink=0, paper=255).save(tmp_path / "zero.png")
    (tmp_path / "a-file").write_text("not a folder")
    shown = tmp_path / "a-file" / "seen.png"
    code = predict.main([str(tmp_path / "zero.png"), "--weights", str(weights), "--show-input", str(shown)])
    out, err = capsys.readouterr()
    assert code == 1 and out.startswith(f"{tmp_path / 'zero.png'}: ")
    assert err.startswith(f"predict.py: error: --show-input {shown}: ") and err.count("\n") == 1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_either_networks_weights_are_read(tmp_path, capsys, architecture):
    torch.manual_seed(0)
    save_weights(tmp_path / "weights.pt", ARCHITECTURES[architecture]())
    ring((80, 80), (10, 10, 70, 70), ink=0, paper=255).save(tmp_path / "zero.png")
    argv = [str(tmp_path / "zero.png"), "--weights", str(tmp_path / "weights.pt"), "--json"]
    assert predict.main(argv) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert 0 <= result["digit"] <= 9


def test_command_line_refuses_another_networks_bare_weights_in_one_line(tmp_path, capsys):
    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pt")  # no name saved: read as the reference net's
    ring((80, 80), (10, 10, 70, 70), ink=0, paper=255).save(tmp_path / "zero.png")
    weights = tmp_path / "tiny.pt"
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tmp_path / "zero.png"), "--weights", str(weights)])
    (line,) = str(exit_info.value.code).splitlines()
    assert line.startswith(f"predict.py: error: {weights}: not weights for the reference network")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("content", [b"", b"garbage" * 100, None])
def test_unloadable_weights_give_one_line_naming_the_file(tmp_path, content, weights):
    path = tmp_path / "bad.pt"
    if content is None:  # a truncated real weights file
        content = weights.read_bytes()[:-100]
    path.write_bytes(content)
    with pytest.raises(WeightsError) as error:
        load_model(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_command_line_reports_a_missing_file_without_traceback(tmp_path, weights):
    done = subprocess.run([sys.executable, "predict.py", str(tmp_path / "nope.png"), "--weights",
                           str(weights)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"predict.py: error: {tmp_path / 'nope.png'}: no such file"


REAL_MNIST = all(data.is_verified(data.raw_dir(ROOT / "data") / n) for n in data.MNIST_MD5)


@pytest.mark.skipif(not REAL_MNIST, reason="real MNIST is not in ./data (run python data.py to get it)")
def test_real_test_digits_survive_photo_like_transforms(tmp_path):
    """500 MNIST test digits, shifted inside 100x100, inverted to dark on white and upscaled
    to 300x300, saved as PNG: predict.py must still read at least 98% of them."""
    from torchvision.datasets import MNIST

    test_set = MNIST(ROOT / "data", train=False)
    model = load_model(ROOT / "weights.pt")
    rng = np.random.default_rng(0)
    correct = 0
    for index in range(500):
        canvas = np.zeros((100, 100), dtype=np.uint8)
        top, left = rng.integers(0, 72, size=2)
        canvas[top:top + 28, left:left + 28] = test_set.data[index].numpy()
        path = tmp_path / f"{index}.png"
        Image.fromarray(255 - canvas).resize((300, 300), Image.BILINEAR).save(path)
        top = predict.predict(model, predict.to_mnist_digit(predict.load_grayscale(path)), 1)
        correct += top[0]["digit"] == int(test_set.targets[index])
    assert correct >= 490, f"{correct}/500"
