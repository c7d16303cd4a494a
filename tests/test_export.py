import onnx
import pytest
import torch

import export
from conftest import ROOT
from model import Net, TinyNet
from weights import COMMITTED_WEIGHTS, load_model, save_weights


@pytest.fixture(scope="module")
def model_and_onnx():
    torch.manual_seed(0)
    model = Net().eval()
    for module in model.modules():  # non-trivial BatchNorm statistics, as after training
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return model, export.export_onnx(model)


def test_onnx_matches_pytorch_on_a_batch(model_and_onnx):
    model, onnx_bytes = model_and_onnx
    images, targets = torch.randn(64, 1, 28, 28), torch.arange(64) % 10
    check = export.compare_with_pytorch(onnx_bytes, model, images, targets, batch_size=25)
    assert check["images"] == 64 and check["disagreements"] == 0
    assert check["max_abs_diff"] < 1e-4 and check["torch_accuracy"] == check["onnx_accuracy"]


def test_onnx_batch_dimension_is_dynamic(model_and_onnx):
    graph = onnx.load_from_string(model_and_onnx[1]).graph
    (image,), (log_probs,) = graph.input, graph.output
    assert (image.name, log_probs.name) == ("image", "log_probs")
    batch_dim = image.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert [d.dim_value for d in image.type.tensor_type.shape.dim[1:]] == [1, 28, 28]


@pytest.mark.parametrize("network", [Net(), TinyNet(), Net(width=0.7)], ids=["reference", "tiny", "w0.7"])
def test_export_command_checks_and_writes_the_file(synthetic_mnist, tmp_path, no_acquisition, capsys,
                                                   network):
    weights = tmp_path / "weights.pt"
    save_weights(weights, network)
    export.main(["--weights", str(weights), "--output", str(tmp_path / "m.onnx"),
                 "--data-dir", str(synthetic_mnist)])
    printed = capsys.readouterr().out
    assert "on 100 MNIST test images" in printed and "0 differing predictions" in printed
    onnx.checker.check_model(onnx.load(tmp_path / "m.onnx"))


def test_export_refuses_a_model_that_does_not_match(synthetic_mnist, tmp_path, no_acquisition, monkeypatch):
    weights = tmp_path / "weights.pt"
    torch.save(Net().state_dict(), weights)
    monkeypatch.setattr(export, "MAX_ABS_DIFF", 0.0)  # nothing can pass a zero tolerance
    with pytest.raises(SystemExit, match="does not match PyTorch"):
        export.main(["--weights", str(weights), "--output", str(tmp_path / "m.onnx"),
                     "--data-dir", str(synthetic_mnist)])
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
