"""model.py: the networks against the reference table, dropout, receptive fields, and weights
files (saved with their shape, refused in one line when they do not fit)."""

import ast
import copy
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import ROOT
from model import (
    ARCHITECTURES,
    Dropout,
    Net,
    TinyNet,
    WeightsError,
    count_parameters,
    load_model,
    receptive_fields,
)
from train import FORMAT, load_checkpoint, print_summary, save_weights

# The reference torchsummary table: (layer type, output shape, params), row by row.
SEED_TABLE = [
    ("Conv2d", [16, 26, 26], 144), ("ReLU", [16, 26, 26], 0), ("BatchNorm2d", [16, 26, 26], 32),
    ("Dropout", [16, 26, 26], 0),
    ("Conv2d", [10, 24, 24], 1440), ("ReLU", [10, 24, 24], 0), ("BatchNorm2d", [10, 24, 24], 20),
    ("Dropout", [10, 24, 24], 0),
    ("Conv2d", [10, 24, 24], 100), ("MaxPool2d", [10, 12, 12], 0),
    ("Conv2d", [10, 10, 10], 900), ("ReLU", [10, 10, 10], 0), ("BatchNorm2d", [10, 10, 10], 20),
    ("Dropout", [10, 10, 10], 0),
    ("Conv2d", [10, 8, 8], 900), ("ReLU", [10, 8, 8], 0), ("BatchNorm2d", [10, 8, 8], 20),
    ("Dropout", [10, 8, 8], 0),
    ("Conv2d", [16, 6, 6], 1440), ("ReLU", [16, 6, 6], 0), ("BatchNorm2d", [16, 6, 6], 32),
    ("Dropout", [16, 6, 6], 0),
    ("Conv2d", [16, 6, 6], 2304), ("ReLU", [16, 6, 6], 0), ("BatchNorm2d", [16, 6, 6], 32),
    ("Dropout", [16, 6, 6], 0),
    ("AvgPool2d", [16, 1, 1], 0), ("Conv2d", [10, 1, 1], 160),
]


# TinyNet's torchsummary table, as python train.py --model tiny prints it.
TINY_TABLE = [
    ("Conv2d", [6, 26, 26], 54), ("ReLU", [6, 26, 26], 0), ("BatchNorm2d", [6, 26, 26], 12),
    ("Dropout", [6, 26, 26], 0),
    ("Conv2d", [8, 24, 24], 432), ("ReLU", [8, 24, 24], 0), ("BatchNorm2d", [8, 24, 24], 16),
    ("Dropout", [8, 24, 24], 0), ("MaxPool2d", [8, 12, 12], 0),
    ("Conv2d", [8, 10, 10], 576), ("ReLU", [8, 10, 10], 0), ("BatchNorm2d", [8, 10, 10], 16),
    ("Dropout", [8, 10, 10], 0),
    ("Conv2d", [8, 8, 8], 576), ("ReLU", [8, 8, 8], 0), ("BatchNorm2d", [8, 8, 8], 16),
    ("Dropout", [8, 8, 8], 0), ("MaxPool2d", [8, 4, 4], 0),
    ("Conv2d", [8, 4, 4], 576), ("ReLU", [8, 4, 4], 0), ("BatchNorm2d", [8, 4, 4], 16),
    ("Dropout", [8, 4, 4], 0),
    ("Conv2d", [8, 4, 4], 576), ("ReLU", [8, 4, 4], 0), ("BatchNorm2d", [8, 4, 4], 16),
    ("Dropout", [8, 4, 4], 0),
    ("AvgPool2d", [8, 1, 1], 0), ("Conv2d", [10, 1, 1], 80),
]


ROW = re.compile(r"^\s*(\w+)-(\d+)\s+\[-1, ([\d, ]+)\]\s+([\d,]+)$")


def test_parameter_count_is_the_references_and_under_8k():
    model = Net()
    assert count_parameters(model) == 7544 < 8000
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def summary_rows(model, capsys):
    print_summary(model)
    printed = capsys.readouterr().out
    rows = [ROW.match(line).groups() for line in printed.splitlines() if ROW.match(line)]
    assert [int(number) for _, number, _, _ in rows] == list(range(1, len(rows) + 1))  # no row skipped
    return printed, [(kind, [int(n) for n in shape.split(", ")], int(params.replace(",", "")))
                     for kind, _, shape, params in rows]


def test_summary_table_matches_the_reference_row_for_row(capsys):
    printed, rows = summary_rows(Net(), capsys)
    assert rows == SEED_TABLE
    assert "Total params: 7,544" in printed and "Non-trainable params: 0" in printed


def test_tiny_net_has_at_most_3000_parameters_and_its_own_table(capsys):
    model = TinyNet()
    assert count_parameters(model) == 2962 <= 3000
    printed, rows = summary_rows(model, capsys)
    assert rows == TINY_TABLE
    assert "Total params: 2,962" in printed and "Non-trainable params: 0" in printed


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_each_network_is_convolutions_batchnorm_gap_and_a_1x1_classifier(architecture):
    model = ARCHITECTURES[architecture]()
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds and {nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d} <= kinds
    # no conv has a bias: the BatchNorm after it has one (and the classifier needs none)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert isinstance(model.classifier, nn.Conv2d) and model.classifier.kernel_size == (1, 1)
    assert model.architecture == architecture


def test_summary_leaves_the_model_and_rng_untouched():
    torch.manual_seed(0)
    model = Net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    print_summary(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_output_is_log_probabilities_of_shape_n_by_10(architecture):
    model = ARCHITECTURES[architecture]().eval()
    out = model(torch.randn(7, 1, 28, 28))
    assert out.shape == (7, 10)
    assert torch.all(out <= 0)
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(7))


def test_dropout_is_a_constructor_argument_and_an_nn_dropout():
    dropouts = [m for m in Net(dropout=0.2).modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 6 and {m.p for m in dropouts} == {0.2}
    assert all(isinstance(m, Dropout) for m in dropouts)


def imported_packages(path, top_level_only=False):
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    imported = {alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in nodes if isinstance(node, ast.ImportFrom)}
    return {name.split(".")[0] for name in imported} - set(sys.stdlib_module_names)


def test_model_module_imports_only_torch_and_the_standard_library():
    """model.py, its command included: torch alone beside the standard library; utils imports
    nothing but the standard library when it loads (matplotlib comes with the first plot)."""
    assert imported_packages(ROOT / "model.py") == {"torch"}
    assert imported_packages(ROOT / "utils.py", top_level_only=True) == set()


@pytest.mark.parametrize("p", [0.01, 0.05, 0.5])
def test_fast_dropout_keeps_each_element_with_probability_1_minus_p(p):
    torch.manual_seed(0)
    out = Dropout(p)(torch.ones(1_000_000))
    kept = (out != 0).double().mean().item()
    standard_error = math.sqrt(p * (1 - p) / 1_000_000)
    assert abs(kept - (1 - p)) < 4 * standard_error
    assert set(out.unique().tolist()) == {0.0, torch.tensor(1 / (1 - p)).item()}  # kept ones scaled exactly


def test_fast_dropout_masks_vary_and_repeat_with_the_seed():
    x = torch.ones(64, 16, 26, 26)
    dropout = Dropout(0.05)
    torch.manual_seed(3)
    first, second = dropout(x.clone()), dropout(x.clone())
    torch.manual_seed(3)
    again = dropout(x.clone())
    assert torch.equal(first, again) and not torch.equal(first, second)
    dropped = first == 0  # not the same elements in every row, channel or position
    assert dropped.any(0).float().mean() > 0.9 and not dropped.all(0).any()
    words = dropped.flatten()[:4096].view(-1, 4)  # the four 16-bit draws of a 64-bit word are independent
    assert words.sum(1).max() < 4 and (words.sum(1) >= 1).sum() > 100


def test_fast_dropout_does_nothing_in_eval_mode_or_at_p_0():
    x = torch.randn(8, 16, 5, 5)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0)(x) is x


@pytest.mark.parametrize("inplace", [False, True])
def test_fast_dropout_gradient_is_the_mask_times_the_scale(inplace):
    torch.manual_seed(1)
    x = torch.randn(32, 10, 6, 6, requires_grad=True)
    out = Dropout(0.3, inplace=inplace)(x * 1.0)  # in place only on a non-leaf, as in the network
    out.backward(torch.ones_like(out))
    scale = torch.tensor(1 / 0.7)
    expected = torch.where(out != 0, scale, torch.tensor(0.0))
    assert torch.equal(x.grad, expected)
    assert torch.allclose(out, x.detach() * expected)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_overfits_one_small_batch(architecture):
    torch.manual_seed(0)
    images, labels = torch.randn(32, 1, 28, 28), torch.arange(32) % 10
    model = ARCHITECTURES[architecture](dropout=0.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.nll_loss(model(images), labels)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05
    assert (model(images).argmax(dim=1) == labels).all()


def test_width_1_is_the_reference_network_and_width_scales_every_channel():
    torch.manual_seed(0)
    before = Net().state_dict()
    torch.manual_seed(0)
    same = Net(width=1.0).state_dict()
    assert list(before) == list(same) and all(torch.equal(before[k], same[k]) for k in before)
    assert count_parameters(Net(width=1.0)) == 7544
    half = Net(width=0.5)
    assert [m.out_channels for m in half.modules() if isinstance(m, nn.Conv2d)] == [8, 5, 5, 5, 5, 8, 8, 10]
    sizes = [count_parameters(Net(width=w)) for w in (0.5, 0.7, 1.0, 1.2)]
    assert sizes == sorted(sizes) and sizes[0] < 3000 < sizes[1] < 4000 < 10000 < sizes[3]


def measured_field(model, layer, side=96):
    """The extent, in input pixels, of the non-zero input gradient of one central output
    position of LAYER. Every weight is positive and max-pools are swapped for average pools
    of the same geometry, so every path carries gradient: the extent is the receptive field."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child,
                    nn.AvgPool2d(module.kernel_size, module.stride, module.padding))
        elif isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 1.0 / module.weight[0].numel())
    outputs = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, out: outputs.setdefault("y", out))
    image = torch.ones(1, 1, side, side, requires_grad=True)
    model(image)
    y = outputs["y"]
    y[0, :, y.shape[-2] // 2, y.shape[-1] // 2].sum().backward()
    rows = image.grad[0, 0].abs().sum(1).nonzero()
    columns = image.grad[0, 0].abs().sum(0).nonzero()
    assert rows.max() < side - 1 and rows.min() > 0  # inside the image: nothing clipped
    assert rows.max() - rows.min() == columns.max() - columns.min()
    return int(rows.max() - rows.min() + 1)


@pytest.mark.parametrize("model, layers", [
    (Net(), {"conv2.0": 5, "transition.1": 6, "conv4.0": 14, "conv6.0": 22, "gap": 32}),
    (Net(width=0.6), {"conv3.0": 10, "gap": 32}),
    (TinyNet(), {"block1.2": 6, "block2.2": 16, "block3.1.0": 32, "gap": 44}),
], ids=["reference", "reference-width-0.6", "tiny"])
def test_receptive_field_table_matches_the_measured_one_and_the_comments(model, layers):
    """The table is computed from kernels, strides and paddings; the gradient measures it. The
    numbers here are also those the networks' comments give (28 -> 24: 5, ..., 32 at the end)."""
    table = {row["layer"]: row for row in receptive_fields(model)}
    for layer, field in layers.items():
        assert table[layer]["field"] == field == measured_field(model, layer), layer
    assert sum(row["parameters"] for row in table.values()) == count_parameters(model)
    assert table["gap"]["size"] == 1


@pytest.mark.parametrize("flags, model", [
    ([], Net()), (["--model", "tiny"], TinyNet()),
    (["--channels", "4,8,8,8,8,12,12"], Net(channels=[4, 8, 8, 8, 8, 12, 12])),
], ids=["reference", "tiny", "channels"])
def test_python_model_py_prints_the_table_of_the_network_asked_for(flags, model):
    done = subprocess.run([sys.executable, "model.py", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    header, *rows, total = done.stdout.splitlines()
    assert header.split()[:3] == ["layer", "kind", "output"]
    assert [row.split() for row in rows] == [
        [r["layer"], r["kind"], f"{r['size']}x{r['size']}", str(r["field"]), str(r["jump"]),
         f"{r['parameters']:,}"] for r in receptive_fields(model)]
    assert total.split() == ["total", f"{count_parameters(model):,}"]


@pytest.mark.parametrize("content", [b"", b"\x80\x02garbage" * 50, b"junk\n", "truncated", "weights"])
def test_bad_checkpoint_files_give_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    if content == "weights":  # a real file, but a state_dict, not a checkpoint
        torch.save(Net().state_dict(), path)
    elif content == "truncated":
        torch.save({"model": Net().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("content", "said"), [
    (b"", "is empty"), (b"hello\n", "is not a PyTorch weights file"),
    (b'{"config": {}, "epochs": []}\n', "is not a PyTorch weights file"),  # a history.json
    ("truncated", "is a damaged PyTorch weights file"),
    ("code", "holds more than tensors, and loading it would run code: refused")])
def test_weights_errors_say_plainly_what_the_file_is(tmp_path, content, said):
    path = tmp_path / "weights.pt"
    if content == "truncated":
        torch.save({"model": Net().state_dict()}, path)
        path.write_bytes(path.read_bytes()[:-200])
    elif content == "code":
        torch.save({"loader": print}, path)  # pickles a function: loading it would run code
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsError) as error:
        load_model(path)
    assert str(error.value) == f"{path} {said}"


def test_a_checkpoint_given_as_weights_is_named_for_what_it_is(tmp_path):
    torch.save({"format": FORMAT, "model": Net().state_dict()}, tmp_path / "checkpoint.pt")
    with pytest.raises(WeightsError) as error:
        load_model(tmp_path / "checkpoint.pt")
    assert str(error.value) == (f"{tmp_path / 'checkpoint.pt'} is a train.py checkpoint, not a weights file: "
                                "use the weights.pt beside it")


@pytest.mark.parametrize("broken", ["nan", "architecture"])
def test_weights_that_are_not_numbers_or_name_no_network_are_one_line(tmp_path, broken):
    state = Net().state_dict()
    if broken == "nan":
        state["classifier.weight"][0] = float("nan")
    name = ["reference"] if broken == "architecture" else "reference"  # a list is no network's name
    torch.save({"architecture": name, "state_dict": state}, tmp_path / "weights.pt")
    with pytest.raises(WeightsError) as error:
        load_model(tmp_path / "weights.pt")
    assert "\n" not in str(error.value) and str(tmp_path / "weights.pt") in str(error.value)


def test_importing_model_loads_no_other_module_of_the_project():
    project = {path.stem for path in ROOT.glob("*.py")}
    done = subprocess.run([sys.executable, "-c", "import sys, model; print(' '.join(sys.modules))"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(done.stdout.split()) & project == {"model"}


@pytest.mark.parametrize("argv", [["--model", "tiny", "--width", "2"], ["--widht", "2"],
                                  ["--width", "0.5", "--channels", "1,1,1,1,1,1,1"]])
def test_model_py_refuses_flags_it_would_ignore_in_one_line(argv):
    done = subprocess.run([sys.executable, "model.py", *argv], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("model.py: error: ") and done.stderr.count("\n") == 1


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_weights_are_saved_with_the_architecture_as_cpu_tensors_and_load_into_it(tmp_path, architecture):
    model = ARCHITECTURES[architecture]()
    save_weights(tmp_path / "weights.pt", model)
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    assert saved["architecture"] == architecture
    weights = saved["state_dict"]
    assert type(weights) is type(model.state_dict()) and list(weights) == list(model.state_dict())
    assert all(tensor.device.type == "cpu" for tensor in weights.values())
    loaded = load_model(tmp_path / "weights.pt")
    assert type(loaded) is type(model) and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_bare_state_dict_of_the_earlier_format_loads_as_the_reference_network(tmp_path):
    torch.save(Net().state_dict(), tmp_path / "weights.pt")
    assert type(load_model(tmp_path / "weights.pt")) is Net


def one_line_error(path):
    with pytest.raises(WeightsError) as error:
        load_model(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    return message


def test_one_networks_weights_are_refused_by_the_other_in_one_line(tmp_path):
    torch.save(TinyNet().state_dict(), tmp_path / "bare-tiny.pt")  # read as the reference net's
    assert "not weights for the reference network" in one_line_error(tmp_path / "bare-tiny.pt")
    torch.save({"architecture": "tiny", "state_dict": Net().state_dict()}, tmp_path / "mislabelled.pt")
    assert "not weights for the tiny network" in one_line_error(tmp_path / "mislabelled.pt")
    torch.save({"architecture": "huge", "state_dict": Net().state_dict()}, tmp_path / "unknown.pt")
    assert "unknown network 'huge'" in one_line_error(tmp_path / "unknown.pt")


def test_a_width_is_saved_with_the_weights_and_a_mismatch_is_refused_in_one_line(tmp_path):
    torch.manual_seed(0)
    narrow = Net(width=0.7)
    save_weights(tmp_path / "narrow.pt", narrow)
    save_weights(tmp_path / "reference.pt", Net())
    assert torch.load(tmp_path / "narrow.pt", weights_only=True)["width"] == 0.7
    assert "width" not in torch.load(tmp_path / "reference.pt", weights_only=True)  # as before --width
    loaded = load_model(tmp_path / "narrow.pt")
    assert loaded.width == 0.7
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in narrow.state_dict().items())
    relabelled = torch.load(tmp_path / "narrow.pt", weights_only=True)
    relabelled["width"] = 0.5
    torch.save(relabelled, tmp_path / "relabelled.pt")
    assert "not weights for the reference network of width 0.5" in one_line_error(tmp_path / "relabelled.pt")


def test_channel_counts_are_saved_with_the_weights_and_load_back(tmp_path):
    torch.manual_seed(0)
    custom = Net(channels=(4, 8, 8, 8, 8, 12, 12))
    save_weights(tmp_path / "custom.pt", custom)
    saved = torch.load(tmp_path / "custom.pt", weights_only=True)
    assert saved["channels"] == [4, 8, 8, 8, 8, 12, 12] and "width" not in saved
    loaded = load_model(tmp_path / "custom.pt")
    assert loaded.channels == (4, 8, 8, 8, 8, 12, 12)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in custom.state_dict().items())
    save_weights(tmp_path / "same.pt", Net(channels=Net.CHANNELS))  # the default records nothing
    assert set(torch.load(tmp_path / "same.pt", weights_only=True)) == {"architecture", "state_dict"}
    saved["channels"] = [4, 8, 8, 8, 8, 12, 13]
    torch.save(saved, tmp_path / "relabelled.pt")
    message = one_line_error(tmp_path / "relabelled.pt")
    assert "reference network of channels [4, 8, 8, 8, 8, 12, 13]" in message
    saved["channels"] = [4, 8]
    torch.save(saved, tmp_path / "broken.pt")
    assert "not weights for the reference network" in one_line_error(tmp_path / "broken.pt")
