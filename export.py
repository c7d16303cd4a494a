"""Export the trained model to ONNX and prove the export computes what PyTorch does.

    python export.py                         # weights.pt -> model.onnx, checked on MNIST's test set
    python export.py --checkpoint runs/seed2/weights.pt --output seed2.onnx

The ONNX file has a dynamic batch dimension (input "image": N x 1 x 28 x 28,
normalized as in training; output "log_probs": N x 10). Before it is moved into
place, onnxruntime runs it on all 10,000 test digits next to PyTorch: the
largest difference of log-probabilities must stay below 1e-4 and every
prediction must agree, or nothing is written. Needs onnx, onnxscript and
onnxruntime (in requirements.txt).
"""

import sys
from pathlib import Path

import torch

from data import DataError, ensure_mnist
from loaders import normalize, to_unit_interval
from model import COMMITTED_WEIGHTS, CheckpointError, load_model
from train import OneLineErrorParser, bounded
from utils import atomic_write_bytes

MAX_ABS_DIFF = 1e-4


def export_onnx(model):
    """The model as ONNX bytes, batch dimension dynamic (torch.export-based exporter)."""
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    program = torch.onnx.export(
        model, (torch.zeros(2, 1, 28, 28),), dynamo=True, verbose=False,
        input_names=["image"], output_names=["log_probs"], dynamic_shapes=({0: batch},))
    return program.model_proto.SerializeToString()


@torch.inference_mode()
def compare_with_pytorch(onnx_bytes, model, images, targets, batch_size=1000):
    """Run both on IMAGES (normalized); returns max |diff|, disagreements and both accuracies."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    max_diff, disagreements, torch_correct, onnx_correct = 0.0, 0, 0, 0
    for start in range(0, len(images), batch_size):
        batch, target = images[start:start + batch_size], targets[start:start + batch_size]
        expected = model(batch)
        got = torch.from_numpy(session.run(["log_probs"], {"image": batch.numpy()})[0])
        max_diff = max(max_diff, (expected - got).abs().max().item())
        disagreements += (expected.argmax(1) != got.argmax(1)).sum().item()
        torch_correct += (expected.argmax(1) == target).sum().item()
        onnx_correct += (got.argmax(1) == target).sum().item()
    count = len(images)
    return {"images": count, "max_abs_diff": max_diff, "disagreements": disagreements,
            "torch_accuracy": 100 * torch_correct / count, "onnx_accuracy": 100 * onnx_correct / count}


def mnist_test_tensors(data_dir):
    from torchvision.datasets import MNIST

    test_set = MNIST(data_dir, train=False)
    return normalize(to_unit_interval(test_set.data)), test_set.targets


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default=str(COMMITTED_WEIGHTS),
                   help="weights.pt from train.py (default: the committed trained model)")
    p.add_argument("--output", default="model.onnx")
    p.add_argument("--data-dir", default="data", help="MNIST, for the parity check")
    p.add_argument("--batch-size", type=bounded(int, 1), default=1000)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        model = load_model(args.checkpoint)
        ensure_mnist(args.data_dir)
        images, targets = mnist_test_tensors(args.data_dir)
        onnx_bytes = export_onnx(model)
        check = compare_with_pytorch(onnx_bytes, model, images, targets, args.batch_size)
        print(f"ONNX vs PyTorch on {check['images']:,} MNIST test images: "
              f"max |diff| of log-probabilities {check['max_abs_diff']:.2e}, "
              f"{check['disagreements']} differing predictions; accuracy "
              f"PyTorch {check['torch_accuracy']:.2f}%, ONNX {check['onnx_accuracy']:.2f}%")
        if check["max_abs_diff"] >= MAX_ABS_DIFF or check["disagreements"]:
            sys.exit(f"export.py: error: the ONNX model does not match PyTorch; {args.output} not written")
        atomic_write_bytes(Path(args.output), onnx_bytes)
    except (CheckpointError, DataError, OSError) as error:
        sys.exit(f"export.py: error: {error}")
    print(f"Wrote {args.output} ({len(onnx_bytes) / 1024:.0f} KB, dynamic batch dimension)")


if __name__ == "__main__":
    main()
