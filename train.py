"""Train the seed's 7,544-parameter network on MNIST to 99.4% in 15 epochs.

    python train.py                        # the seed's recipe, seed 1, ~6 min on a 2-core CPU
    python train.py --seed 2 --out-dir runs/seed2
    python train.py --epochs 1 --rotation 0  # a quick smoke run
    python train.py --resume checkpoint.pt   # continue an interrupted run (same flags)
    python train.py --loader torchvision     # the classic PIL + DataLoader pipeline, slower

Every setting is a flag below, with the seed document's value as its default;
the whole configuration is printed at start. MNIST is obtained offline if
torchvision's mirrors fail (see data.py), then held as one tensor on the
device and batched, rotated and normalized there (see loaders.py). Writes to
--out-dir: output.png (the four training curves), misclassified.png,
history.json and weights.pt, and after every epoch checkpoint.pt, from which
--resume continues bit for bit.
Ctrl-C or SIGTERM stops after the current batch and prints the resume command.
"""

import argparse
import json
import math
import os
import shlex
import signal
import sys
import time
from copy import deepcopy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR
from torchsummary import summary
from tqdm import tqdm

from checkpoint import load_checkpoint, resume, save_checkpoint
from data import DataError, ensure_mnist
from loaders import LOADERS, MNIST_MEAN, MNIST_STD, make_loaders
from model import DEFAULT_DROPOUT, CheckpointError, Net, count_parameters
from utils import atomic_write, atomic_write_json, plot_history, plot_misclassified


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def bounded(kind, low, high=None, low_open=False):
    """An argparse type: KIND within [low, high] (or (low, high] when low_open)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        too_low = value <= low if low_open else value < low
        if too_low or (high is not None and value > high) or value != value:
            interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]"
            raise argparse.ArgumentTypeError(f"{text} is outside {interval}")
        return value

    return parse


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    positive_int, positive_float = bounded(int, 1), bounded(float, 0, low_open=True)
    # Run
    p.add_argument("--epochs", type=positive_int, default=15)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: 128 on CUDA, 64 otherwise (the seed's choice)")
    p.add_argument("--test-batch-size", type=positive_int, default=None,
                   help="default: 1000 on CUDA/MPS, 250 on the CPU (faster there, see README)")
    p.add_argument("--seed", type=bounded(int, 0), default=1)
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    p.add_argument("--loader", choices=LOADERS, default="in-memory",
                   help="in-memory: MNIST as one tensor on the device (fast); torchvision: PIL + DataLoader")
    p.add_argument("--num-workers", type=bounded(int, 0), default=None,
                   help="--loader torchvision's DataLoader workers; default: 2 on CUDA, 0 otherwise")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--out-dir", default=".")
    p.add_argument("--checkpoint", default=None, help="written every epoch; default: OUT_DIR/checkpoint.pt")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint.pt of this run")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (for CUDA; CPU runs are repeatable without it)")
    # Model and augmentation
    p.add_argument("--dropout", type=bounded(float, 0, 0.99), default=DEFAULT_DROPOUT)
    p.add_argument("--rotation", type=bounded(float, 0, 180), default=7.0,
                   help="random rotation of training digits, +/- degrees; 0 disables")
    # SGD with Nesterov momentum
    p.add_argument("--lr", type=positive_float, default=0.01)
    p.add_argument("--momentum", type=bounded(float, 0, 1), default=0.9)
    p.add_argument("--weight-decay", type=bounded(float, 0), default=1e-4)
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True)
    # OneCycleLR, stepped after every batch
    p.add_argument("--max-lr", type=positive_float, default=0.02)
    p.add_argument("--pct-start", type=bounded(float, 0, 1, low_open=True), default=0.2)
    p.add_argument("--div-factor", type=positive_float, default=25.0)
    p.add_argument("--final-div-factor", type=positive_float, default=1e4)
    p.add_argument("--anneal-strategy", choices=["cos", "linear"], default="cos")
    p.add_argument("--base-momentum", type=bounded(float, 0, 1), default=0.85)
    p.add_argument("--max-momentum", type=bounded(float, 0, 1), default=0.95)
    args = p.parse_args(argv)
    if args.nesterov and args.momentum == 0:
        p.error("--nesterov needs --momentum > 0")
    if args.base_momentum > args.max_momentum:
        p.error("--base-momentum must not exceed --max-momentum")
    if args.device != "auto" and not device_available(args.device):
        p.error(f"--device {args.device} is not available on this machine")
    args.checkpoint = args.checkpoint or str(Path(args.out_dir) / "checkpoint.pt")
    return args


def device_available(name):
    return {"cpu": True, "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available()}[name]


def pick_device(name="auto"):
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if device_available(n))
    return torch.device(name)


def make_optimizer(model, args, steps_per_epoch):
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay, nesterov=args.nesterov)
    scheduler = OneCycleLR(
        optimizer, max_lr=args.max_lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=args.pct_start, div_factor=args.div_factor,
        final_div_factor=args.final_div_factor, anneal_strategy=args.anneal_strategy,
        base_momentum=args.base_momentum, max_momentum=args.max_momentum)
    return optimizer, scheduler


class TrainingStopped(Exception):
    """Training ended early (a signal, a non-finite loss); carries the exit code."""

    def __init__(self, message, exit_code):
        super().__init__(message)
        self.exit_code = exit_code


class StopOnSignal:
    """SIGINT (Ctrl-C) and SIGTERM set a flag that the training loop checks between
    batches: the current batch completes, a checkpoint is never abandoned half-written."""

    def __enter__(self):
        self.received = None
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        self.received = signum

    def __exit__(self, *exc_info):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def check(self, where):
        if self.received is not None:
            name = signal.Signals(self.received).name
            raise TrainingStopped(f"stopped by {name} {where}", 128 + self.received)


def train_epoch(model, loader, optimizer, scheduler, device, epoch, stop):
    """One pass over the training set; returns its mean loss, accuracy % and last learning rate."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    with tqdm(loader) as progress:  # closed on any exit, so a stop message starts on its own line
        for batch_id, (data, target) in enumerate(progress):
            stop.check(f"in epoch {epoch}, batch {batch_id}")
            data, target = data.to(device), target.to(device)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # stop before a NaN reaches the weights
                raise TrainingStopped(f"the loss is {loss_value} in epoch {epoch}, batch {batch_id}", 1)
            loss.backward()
            optimizer.step()
            scheduler.step()  # OneCycleLR moves every batch, not every epoch
            total_loss += loss_value * len(target)
            correct += (output.argmax(dim=1) == target).sum().item()
            seen += len(target)
            progress.set_description(
                f"Loss={loss_value:.4f} Batch_id={batch_id} Accuracy={100 * correct / seen:.2f}")
    return {"train_loss": total_loss / seen, "train_acc": 100 * correct / seen, "lr": lr}


@torch.inference_mode()
def test(model, loader, device):
    """Returns (mean loss, number correct, number of images)."""
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for data, target in loader:
        data, target = data.to(device), target.to(device)
        output = model(data)
        total_loss += F.nll_loss(output, target, reduction="sum").item()
        correct += (output.argmax(dim=1) == target).sum().item()
        count += len(target)
    print(f"\nTest set: Average loss: {total_loss / count:.4f}, "
          f"Accuracy: {correct}/{count} ({100 * correct / count:.2f}%)\n")
    return total_loss / count, correct, count


@torch.inference_mode()
def misclassified(model, loader, device, limit=25):
    """Up to LIMIT wrongly predicted test images (normalized), their targets and
    predictions, and how many test images were wrong in all."""
    model.eval()
    images, targets, predictions = [], [], []
    for data, target in loader:
        prediction = model(data.to(device)).argmax(dim=1).cpu()
        data, target = data.cpu(), target.cpu()
        wrong = prediction != target
        images += list(data[wrong])
        targets += target[wrong].tolist()
        predictions += prediction[wrong].tolist()
    return images[:limit], targets[:limit], predictions[:limit], len(targets)


def print_summary(model):
    """torchsummary's table, from a CPU copy: its forward pass in train mode would
    otherwise move the real model's BatchNorm statistics and the global RNG."""
    with torch.random.fork_rng(devices=[]):
        summary(deepcopy(model).cpu(), input_size=(1, 28, 28), device="cpu")


def save_results(out_dir, model, history, config, test_loader, device):
    out_dir = Path(out_dir)
    atomic_write(out_dir / "weights.pt", lambda f: torch.save(model.state_dict(), f))
    best = max(history, key=lambda row: row["test_acc"])
    atomic_write_json(out_dir / "history.json", {
        "config": config,
        "final_test_acc": history[-1]["test_acc"],
        "best_test_acc": best["test_acc"], "best_test_acc_epoch": best["epoch"],
        "best_test_loss": min(row["test_loss"] for row in history),
        "epochs": history,
    })
    plot_history(history, out_dir / "output.png")
    images, targets, predictions, total = misclassified(model, test_loader, device)
    pixels = [(MNIST_MEAN + MNIST_STD * image).numpy() for image in images]
    plot_misclassified(pixels, targets, predictions, total, out_dir / "misclassified.png")
    print(f"Wrote weights.pt, history.json, output.png and misclassified.png to {out_dir}")


def make_deterministic():
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at cuBLAS's first call
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def sizes_for(device, batch_size=None, test_batch_size=None, num_workers=None):
    """The given sizes, or the device's defaults for those left as None."""
    on_cuda, on_cpu = device.type == "cuda", device.type == "cpu"
    return {"batch_size": batch_size or (128 if on_cuda else 64),  # the seed's choice
            # On the CPU, test batches of 250 measured faster than 1000 or 10,000 (README).
            "test_batch_size": test_batch_size or (250 if on_cpu else 1000),
            # Workers pay off where they overlap a GPU; on a 2-core CPU they measured no gain.
            "num_workers": num_workers if num_workers is not None else (2 if on_cuda else 0)}


def run(args):
    device = pick_device(args.device)
    sizes = sizes_for(device, args.batch_size, args.test_batch_size, args.num_workers)
    config = {**vars(args), "device": str(device), **sizes,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)  # fail now, not after training
    ensure_mnist(args.data_dir)
    if args.deterministic:
        make_deterministic()
    torch.manual_seed(args.seed)
    train_loader, test_loader = make_loaders(args.loader, args.data_dir, sizes["batch_size"],
                                             sizes["test_batch_size"], args.rotation, args.seed, device,
                                             sizes["num_workers"])
    model = Net(args.dropout).to(device)
    config["parameters"] = count_parameters(model)
    print_summary(model)
    print("Config:", json.dumps(config, indent=2))
    optimizer, scheduler = make_optimizer(model, args, len(train_loader))
    done, history, last_checkpoint = 0, [], None
    if args.resume:
        done, history = resume(load_checkpoint(args.resume), args.resume, config,
                               model, optimizer, scheduler, train_loader)
        last_checkpoint = (args.resume, done)
        print(f"Resuming after epoch {done} of {args.epochs} from {args.resume}")
    try:
        with StopOnSignal() as stop:
            for epoch in range(done + 1, args.epochs + 1):
                print(f"EPOCH: {epoch}/{args.epochs}")
                start = time.perf_counter()
                train_stats = train_epoch(model, train_loader, optimizer, scheduler, device, epoch, stop)
                test_loss, correct, count = test(model, test_loader, device)
                history.append({"epoch": epoch, **train_stats, "test_loss": test_loss,
                                "test_acc": 100 * correct / count, "seconds": time.perf_counter() - start})
                save_checkpoint(args.checkpoint, epoch, history, config, model, optimizer, scheduler,
                                train_loader)
                last_checkpoint = (args.checkpoint, epoch)
            stop.check("after the last epoch")
    except TrainingStopped as stopped:
        stopped.last_checkpoint = last_checkpoint
        raise
    save_results(args.out_dir, model, history, config, test_loader, device)
    return history


def resume_hint(argv, last_checkpoint):
    """What to type to continue: the same flags, with --resume pointing at the checkpoint."""
    if last_checkpoint is None:
        return "No epoch was completed, so there is no checkpoint to resume from."
    path, epoch = last_checkpoint
    kept, skip = [], False
    for arg in argv:
        if not skip and not arg.startswith("--resume"):
            kept.append(arg)
        skip = arg == "--resume"
    command = shlex.join(["python", "train.py", *kept, "--resume", str(path)])
    return f"The last complete checkpoint is epoch {epoch}: {path}. Resume with:\n  {command}"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        return run(args)
    except TrainingStopped as stopped:
        print(f"train.py: {stopped}\n{resume_hint(argv, stopped.last_checkpoint)}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except (DataError, CheckpointError, OSError) as error:
        sys.exit(f"train.py: error: {error}")
    except KeyboardInterrupt:  # before training started: nothing to keep
        sys.exit("train.py: interrupted")


if __name__ == "__main__":
    main()
