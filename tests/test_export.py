import copy
import re
import subprocess
import sys

import onnx
import pytest
import torch

import export
from conftest import ROOT
from model import COMMITTED_WEIGHTS, Net, TinyNet, load_model
from train import save_weights


@pytest.fixture(scope="module")
def model_and_onnx():
    torch.manual_seed(0)
    model = Net().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model, export.export_onnx(model)


def doubled_classifier(model):
    """MODEL with its classifier's weights doubled: every logit exactly doubles (a power of two
    scales floats exactly), so each prediction stays the same and the log-probabilities move."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.classifier.weight.mul_(2)
    return other


def reported_diff(printed):
    """The max |diff| that export.py printed, and its count of differing predictions."""
    found = re.search(r"max \|diff\| of log-probabilities (\S+), (\d+) differing predictions", printed)
    return float(found[1]), int(found[2])


def test_onnx_matches_pytorch_on_a_batch(model_and_onnx):
    model, onnx_bytes = model_and_onnx
    images, targets = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    check = export.compare_with_pytorch(onnx_bytes, model, images, targets, batch_size=25)
    assert check["images"] == 64 and check["disagreements"] == 0
    assert check["max_abs_diff"] < 1e-4 and check["torch_accuracy"] == check["onnx_accuracy"]


def test_the_parity_check_measures_how_far_the_onnx_model_is_from_pytorch(model_and_onnx):
    model = model_and_onnx[0]
    other = doubled_classifier(model)
    images, targets = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    check = export.compare_with_pytorch(export.export_onnx(other), model, images, targets, batch_size=25)
    with torch.inference_mode():
        expected = (model(images) - other(images)).abs().max().item()
    assert check["max_abs_diff"] == pytest.approx(expected, rel=1e-3) and expected > 10 * export.MAX_ABS_DIFF
    assert check["disagreements"] == 0


def test_onnx_batch_dimension_is_dynamic(model_and_onnx):
    graph = onnx.load_from_string(model_and_onnx[1]).graph
    (image,), (log_probs,) = graph.input, graph.output
    assert (image.name, log_probs.name) == ("image", "log_probs")
    batch_dim = image.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == [1, 28, 28]


@pytest.mark.parametrize("network", [Net(), TinyNet(), Net(width=0.7), Net(channels=(4, 8, 8, 8, 8, 12, 12))],
                         ids=["reference", "tiny", "w0.7", "channels"])
def test_export_command_checks_and_writes_the_file(synthetic_mnist, tmp_path, no_acquisition, capsys,
                                                   network):
    weights = tmp_path / "weights.pt"
    save_weights(weights, network)
    export.main(["--weights", str(weights), "--output", str(tmp_path / "m.onnx"),
                 "--data-dir", str(synthetic_mnist)])
    printed = capsys.readouterr().out
    assert "on 100 MNIST test images" in printed
    max_diff, disagreements = reported_diff(printed)
    assert max_diff < export.MAX_ABS_DIFF and disagreements == 0
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))


def test_export_refuses_an_onnx_model_beyond_the_tolerance(synthetic_mnist, tmp_path, no_acquisition,
                                                             monkeypatch, capsys):
    """An export whose log-probabilities differ by more than MAX_ABS_DIFF, with every prediction
    the same: the tolerance alone must refuse it."""
    torch.manual_seed(0)
    model = Net().eval()
    save_weights(tmp_path / "weights.pt", model)
    export_onnx = export.export_onnx
    monkeypatch.setattr(export, "export_onnx", lambda _: export_onnx(doubled_classifier(model)))
    with pytest.raises(SystemExit, match="does not match PyTorch"):
        export.main(["--weights", str(tmp_path / "weights.pt"), "--output", str(tmp_path / "m.onnx"),
                     "--data-dir", str(synthetic_mnist)])
    max_diff, disagreements = reported_diff(capsys.readouterr().out)
    assert max_diff > 10 * export.MAX_ABS_DIFF and disagreements == 0
    assert not (tmp_path / "m.onnx").exists()


def test_the_pages_model_onnx_is_the_committed_weights():
    """web/model.onnx is export.py's output for weights.pt; after a new weights.pt, run
    python export.py --output web/model.onnx."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(ROOT / "web" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    images = torch.randn(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    got = session.run(["log_probs"], {"image": images.numpy()})[0]
    with torch.inference_mode():
        expected = load_model(COMMITTED_WEIGHTS)(images)
    assert (expected - torch.from_numpy(got)).abs().max() < export.MAX_ABS_DIFF


@pytest.mark.parametrize("package", export.ONNX_PACKAGES)
def test_without_an_onnx_package_export_py_says_so_in_one_line_before_any_data_work(package, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "export_without_package.py"), package,
                           "--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.splitlines() == [
        f"export.py: error: No module named '{package}'; the export needs onnx, onnxscript and onnxruntime: "
        "pip install -r requirements-dev.txt"]
    assert list(tmp_path.iterdir()) == []  # no data dir, no lock, no output
