"""Export the trained model to ONNX and prove the export computes what PyTorch does.

    python export.py                         # weights.pt -> model.onnx, checked on MNIST's test set
    python export.py --weights runs/default/seed2/weights.pt --output seed2.onnx

The ONNX file has a dynamic batch dimension (input "image": N x 1 x 28 x 28,
normalized as in training; output "log_probs": N x 10). Before it is moved into
place, onnxruntime runs it on all 10,000 test digits next to PyTorch: the
largest difference of log-probabilities must stay below 1e-4 and every
prediction must agree, or nothing is written. Needs onnx, onnxscript and
onnxruntime, which are in requirements-dev.txt, not requirements.txt:
pip install -r requirements-dev.txt.
"""

import importlib
import sys

import torch

from data import DataError, ensure_mnist, normalized, read_split
from model import COMMITTED_WEIGHTS, WeightsError, load_model
from utils import OneLineErrorParser, atomic_write_bytes, bounded, output_file

MAX_ABS_DIFF = 1e-4
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def export_onnx(model):
    """The model as ONNX bytes, batch dimension dynamic (torch.export-based exporter)."""
    program = torch.onnx.export(model, (torch.zeros(2, 1, 28, 28),), dynamo=True, verbose=False,
                                input_names=["image"], output_names=["log_probs"],
                                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1 << 16)},))
    return program.model_proto.SerializeToString()


@torch.inference_mode()
def compare_with_pytorch(onnx_bytes, model, images, targets, batch_size=1000):
    """Run both on IMAGES (normalized), BATCH_SIZE at a time: the largest difference of their
    log-probabilities, how many predictions differ, and each one's accuracy on TARGETS."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    batches = images.split(batch_size)
    expected = torch.cat(list(map(model.eval(), batches)))  # eval() returns the model, in eval mode
    # the ONNX model's one output, log_probs
    got = torch.cat([torch.from_numpy(session.run(None, {"image": b.numpy()})[0]) for b in batches])
    return {"images": len(images), "max_abs_diff": (expected - got).abs().max().item(),
            "disagreements": (expected.argmax(1) != got.argmax(1)).sum().item(),
            "torch_accuracy": 100 * (expected.argmax(1) == targets).sum().item() / len(images),
            "onnx_accuracy": 100 * (got.argmax(1) == targets).sum().item() / len(images)}


def require_onnx_packages():
    """Exit in one line, before any weights or data are read, where an ONNX package is missing."""
    for name in ONNX_PACKAGES:
        try:
            importlib.import_module(name)
        except ImportError as error:
            sys.exit(f"export.py: error: {error}; the export needs onnx, onnxscript and onnxruntime: "
                     "pip install -r requirements-dev.txt")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=str(COMMITTED_WEIGHTS),
                   help="weights.pt from train.py, of either network (default: the committed trained model)")
    p.add_argument("--output", type=output_file, default="model.onnx")
    p.add_argument("--data-dir", default="data", help="MNIST, for the parity check")
    p.add_argument("--batch-size", type=bounded(int, 1), default=1000)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    require_onnx_packages()
    try:
        model = load_model(args.weights)
        ensure_mnist(args.data_dir)
        pixels, targets = read_split(args.data_dir, train=False)
        onnx_bytes = export_onnx(model)
        check = compare_with_pytorch(onnx_bytes, model, normalized(pixels), targets, args.batch_size)
        print("ONNX vs PyTorch on {images:,} MNIST test images: max |diff| of log-probabilities "
              "{max_abs_diff:.2e}, {disagreements} differing predictions; accuracy PyTorch "
              "{torch_accuracy:.2f}%, ONNX {onnx_accuracy:.2f}%".format(**check))
        if check["max_abs_diff"] >= MAX_ABS_DIFF or check["disagreements"]:
            sys.exit(f"export.py: error: the ONNX model does not match PyTorch; {args.output} not written")
        atomic_write_bytes(args.output, onnx_bytes)
    except (WeightsError, DataError, OSError) as error:
        sys.exit(f"export.py: error: {error}")
    print(f"Wrote {args.output} ({len(onnx_bytes) / 1024:.0f} KB, dynamic batch dimension)")


if __name__ == "__main__":
    main()
