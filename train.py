"""Train the reference 7,544-parameter network on MNIST to 99.4% in 15 epochs.

    python train.py                          # the default recipe, seed 1; writes runs/seed1/
    python train.py --seed 2 --threads 1     # another seed, one CPU thread
    python train.py --epochs 1               # a quick smoke run
    python train.py --recipe fast            # 10 epochs at batch 128: 99.4% in about half the time
    python train.py --model tiny             # the 2,962-parameter network and its recipe
    python train.py --holdout 10000          # validate on the last 10,000 training images
    python train.py --resume runs/seed1/checkpoint.pt   # continue a stopped run (same flags)

Every setting is a flag below. The defaults are the reference recipe's network,
optimizer and schedule, plus the augmentation, dropout and weight averaging
chosen on validation (results/recipes.md); the whole configuration is printed
at start. MNIST is obtained offline if torchvision's mirrors fail (data.py),
then held as one tensor on the device and batched, augmented and normalized
there (loaders.py). Writes to --out-dir:
output.png (the four training curves), misclassified.png, history.json and
weights.pt, and after every epoch checkpoint.pt, from which --resume continues
bit for bit. Ctrl-C or SIGTERM stops after the current batch and prints the
resume command.
"""

import argparse
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR
from torch.optim.swa_utils import AveragedModel
from torchsummary import summary
from tqdm import tqdm

from checkpoint import CheckpointError, TrainingState, save_weights
from cli import DefaultsHelpFormatter, OneLineErrorParser, bounded, device_available, pick_device
from data import DataError, ensure_mnist
from evaluate import evaluate
from files import atomic_write_json
from loaders import LOADERS, MNIST_MEAN, MNIST_STD, Augmentation, make_loaders
from model import ARCHITECTURES, DEFAULT_DROPOUT, count_parameters
from utils import plot_history, plot_misclassified

# The reference optimizer and schedule. SGD's own learning rate and momentum are
# not settings: OneCycleLR overwrites both from its first step, the learning rate
# from max_lr / div_factor up to max_lr and down to max_lr / div_factor /
# final_div_factor, the momentum between max_momentum and base_momentum.
REFERENCE_RECIPE = dict(epochs=15, weight_decay=1e-4, nesterov=True, max_lr=0.02, pct_start=0.2,
                        div_factor=25.0, final_div_factor=1e4, anneal_strategy="cos",
                        base_momentum=0.85, max_momentum=0.95)
# Recipes that change the defaults below; a flag given on the command line still wins.
# The tiny network's own recipe comes with --model tiny (no dropout, no rotation:
# within 15 epochs, regularization cost it more than it gave). --recipe fast gives up 5 epochs for a
# larger batch, a higher peak learning rate, no dropout and more weight decay: 5 of 5
# seeds at 99.4% in 0.47x the time.
# Both were chosen on --holdout 10000 validation (results/recipes.md).
MODEL_RECIPES = {"reference": {}, "tiny": dict(dropout=0.0, max_lr=0.05, rotation=0.0)}
RECIPES = {"default": {}, "fast": dict(epochs=10, batch_size=128, max_lr=0.1, dropout=0.0, weight_decay=5e-4)}


def as_flags(settings):
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in settings.items())


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0], epilog=(
        "SGD's learning rate and momentum are not flags: OneCycleLR sets both from the first "
        "step, the learning rate from max-lr / div-factor up to max-lr and down to max-lr / "
        "div-factor / final-div-factor, the momentum from max-momentum down to base-momentum "
        "and back. The reference document's SGD values (lr 0.01, momentum 0.9) are overwritten "
        "that way; its OneCycleLR values are the defaults here."),
        formatter_class=DefaultsHelpFormatter)
    p.set_defaults(**REFERENCE_RECIPE)
    positive_int, positive_float = bounded(int, 1), bounded(float, 0, low_open=True)
    p.add_argument("--recipe", choices=list(RECIPES), default="default",
                   help=f"fast: {as_flags(RECIPES['fast'])}; explicit flags still win")
    # Run
    p.add_argument("--epochs", type=positive_int, help="also the length of the OneCycleLR schedule")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="default: 128 on CUDA, 64 otherwise (the reference's choice)")
    p.add_argument("--test-batch-size", type=positive_int, default=None,
                   help="default: 1000 on CUDA/MPS, 250 on the CPU (measured faster there)")
    p.add_argument("--seed", type=bounded(int, 0), default=1,
                   help="initialization, order, augmentation, dropout")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads; default: torch's (one per core). On the CPU the thread "
                        "count changes the result, so it is recorded in history.json")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto",
                   help="auto: cuda, then mps, then cpu")
    p.add_argument("--loader", choices=LOADERS, default="in-memory",
                   help="in-memory: MNIST as one tensor on the device (fast); torchvision: PIL + DataLoader")
    p.add_argument("--num-workers", type=bounded(int, 0), default=None,
                   help="--loader torchvision's DataLoader workers; default: 2 on CUDA, 0 otherwise")
    p.add_argument("--holdout", type=bounded(int, 0, 59000), default=0,
                   help="train on all but the last N training images and evaluate on those "
                        "(validation) instead of the test set")
    p.add_argument("--data-dir", default="data", help="MNIST goes to DATA_DIR/MNIST/raw")
    p.add_argument("--out-dir", default=None, help="default: runs/seed<SEED>")
    p.add_argument("--resume", metavar="CHECKPOINT", help="continue from a checkpoint.pt of this run")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms (for CUDA; CPU runs are repeatable without it)")
    # Model, augmentation and weight averaging
    p.add_argument("--model", choices=list(ARCHITECTURES), default="reference",
                   help="reference: the 7,544-parameter network; tiny: 2,962 parameters, with its "
                        f"own defaults: {as_flags(MODEL_RECIPES['tiny'])}")
    p.add_argument("--dropout", type=bounded(float, 0, 0.99), default=DEFAULT_DROPOUT,
                   help="after every convolution block")
    # Bilinear rotation, dropout 0.01 and the averaged weights were chosen on validation
    # (results/recipes.md); the reference recipe's choices were --interpolation nearest
    # --dropout 0.05 --ema 0.
    p.add_argument("--rotation", type=bounded(float, 0, 180), default=7.0,
                   help="random rotation of training digits, +/- degrees; 0 disables")
    p.add_argument("--translate", type=bounded(float, 0, 0.5), default=0.0,
                   help="random shift, +/- this fraction of the image size per axis")
    p.add_argument("--scale", type=bounded(float, 0, 0.5), default=0.0,
                   help="random zoom in [1 - SCALE, 1 + SCALE]")
    p.add_argument("--interpolation", choices=["nearest", "bilinear"], default="bilinear",
                   help="how augmented digits are resampled")
    p.add_argument("--ema", type=bounded(float, 0, 1), default=0.999, metavar="DECAY",
                   help="evaluate and save an exponential moving average of the weights "
                        "(and BatchNorm statistics) with this decay per step; 0: off")
    # SGD with Nesterov momentum; OneCycleLR stepped after every batch sets its lr and momentum
    p.add_argument("--weight-decay", type=bounded(float, 0), help="SGD's L2 penalty")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum")
    p.add_argument("--max-lr", type=positive_float, help="peak learning rate of OneCycleLR")
    p.add_argument("--pct-start", type=bounded(float, 0, 1, low_open=True),
                   help="the fraction of steps spent raising the learning rate")
    p.add_argument("--div-factor", type=positive_float, help="the first learning rate is max-lr / this")
    p.add_argument("--final-div-factor", type=positive_float,
                   help="the last learning rate is max-lr / div-factor / this")
    p.add_argument("--anneal-strategy", choices=["cos", "linear"], help="the shape of both ramps")
    p.add_argument("--base-momentum", type=bounded(float, 0, 1),
                   help="momentum at the peak learning rate")
    p.add_argument("--max-momentum", type=bounded(float, 0, 1, low_open=True),
                   help="momentum at the lowest learning rates")
    chosen, _ = p.parse_known_args(argv)  # --model and --recipe decide the other defaults
    p.set_defaults(**{**MODEL_RECIPES[chosen.model], **RECIPES[chosen.recipe]})
    args = p.parse_args(argv)
    if args.base_momentum > args.max_momentum:
        p.error("--base-momentum must not exceed --max-momentum")
    if args.device != "auto" and not device_available(args.device):
        p.error(f"--device {args.device} is not available on this machine")
    args.out_dir = args.out_dir or str(Path("runs") / f"seed{args.seed}")
    return args


def make_optimizer(model, recipe, steps_per_epoch, **kernel):
    """SGD-Nesterov under OneCycleLR, from RECIPE's REFERENCE_RECIPE keys; KERNEL picks
    SGD's implementation (foreach=True or fused=True, as bench.py compares)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.max_lr / recipe.div_factor,
                                momentum=recipe.max_momentum, weight_decay=recipe.weight_decay,
                                nesterov=recipe.nesterov, **kernel)
    scheduler = OneCycleLR(
        optimizer, max_lr=recipe.max_lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=recipe.pct_start, div_factor=recipe.div_factor,
        final_div_factor=recipe.final_div_factor, anneal_strategy=recipe.anneal_strategy,
        base_momentum=recipe.base_momentum, max_momentum=recipe.max_momentum)
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


@dataclass
class EpochStats:
    loss: float  # mean training loss
    accuracy: float  # % of training images right, in train mode (dropout on)
    lr: float  # the learning rate of the epoch's last batch


def train_epoch(state, loader, stop, show_progress=None):
    """One pass over the training set. One host sync a batch: the loss, to stop on NaN.
    The progress bar shows on a terminal (show_progress None), always (True) or never (False)."""
    model, optimizer, epoch = state.model, state.optimizer, state.epoch + 1
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    with tqdm(loader, disable=None if show_progress is None else not show_progress) as progress:
        for batch_id, (data, target) in enumerate(progress):
            stop.check(f"in epoch {epoch}, batch {batch_id}")
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss_value = loss.item()
            if not math.isfinite(loss_value):  # stop before a NaN reaches the weights
                raise TrainingStopped(f"the loss is {loss_value} in epoch {epoch}, batch {batch_id}", 1)
            loss.backward()
            optimizer.step()
            state.scheduler.step()  # OneCycleLR moves every batch, not every epoch
            if state.ema is not None:
                state.ema.update_parameters(model)
            total_loss += loss_value * len(target)
            correct = correct + (output.argmax(dim=1) == target).sum()  # stays on the device
            seen += len(target)
            if batch_id % 20 == 0:
                progress.set_description(f"Loss={loss_value:.4f} Batch_id={batch_id} "
                                         f"Accuracy={100 * int(correct) / seen:.2f}")
    return EpochStats(total_loss / seen, 100 * int(correct) / seen, lr)


def print_summary(model):
    """torchsummary's table, from a CPU copy: its forward pass in train mode would
    otherwise move the real model's BatchNorm statistics and the global RNG."""
    with torch.random.fork_rng(devices=[]):
        summary(deepcopy(model).cpu(), input_size=(1, 28, 28), device="cpu")


def save_results(out_dir, state, config, evaluation):
    out_dir, history = Path(out_dir), state.history
    split = config["eval_split"]
    save_weights(out_dir / "weights.pt", state.evaluated_model)
    best = max(history, key=lambda row: row[f"{split}_acc"])
    atomic_write_json(out_dir / "history.json", {
        "config": config,
        f"final_{split}_acc": history[-1][f"{split}_acc"],
        f"best_{split}_acc": best[f"{split}_acc"], f"best_{split}_acc_epoch": best["epoch"],
        f"best_{split}_loss": min(row[f"{split}_loss"] for row in history),
        "epochs": history,
    })
    plot_history(history, split, out_dir / "output.png")
    pixels = [(MNIST_MEAN + MNIST_STD * image).numpy() for image in evaluation.wrong_images]
    plot_misclassified(pixels, evaluation.wrong_targets, evaluation.wrong_predictions,
                       evaluation.count - evaluation.correct, out_dir / "misclassified.png")
    print(f"Wrote weights.pt, history.json, output.png and misclassified.png to {out_dir}")


def make_deterministic():
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at cuBLAS's first call
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def sizes_for(device, batch_size=None, test_batch_size=None, num_workers=None):
    """The given sizes, or the device's defaults for those left as None."""
    on_cuda, on_cpu = device.type == "cuda", device.type == "cpu"
    return {"batch_size": batch_size or (128 if on_cuda else 64),  # the reference's choice
            # On the CPU, test batches of 250 measured faster than 1000 or 10,000.
            "test_batch_size": test_batch_size or (250 if on_cpu else 1000),
            # Workers pay off where they overlap a GPU; on a 2-core CPU they measured no gain.
            "num_workers": num_workers if num_workers is not None else (2 if on_cuda else 0)}


def ema_update(decay):
    """AveragedModel's multi_avg_fn for an exponential moving average whose decay warms up
    as min(DECAY, (1 + n) / (10 + n)) after n updates, so that a short run's average is not
    mostly its random initialization; from about 9,000 steps on it is DECAY. Integer
    buffers (BatchNorm's batch count) are copied."""
    def update(averaged, current, updates):
        n = int(updates)
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for average, value in zip(averaged, current):
            if average.is_floating_point():
                average.lerp_(value, weight)
            else:
                average.copy_(value)
    return update


def augmentation(args):
    return Augmentation(args.rotation, args.translate, args.scale, args.interpolation)


def setup(args):
    """(TrainingState, training loader, evaluation loader, config) for ARGS, the data on the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    sizes = sizes_for(device, args.batch_size, args.test_batch_size, args.num_workers)
    config = {**vars(args), "device": str(device), **sizes, "threads": torch.get_num_threads(),
              "eval_split": "val" if args.holdout else "test", "torch": torch.__version__}
    ensure_mnist(args.data_dir)
    if args.deterministic:
        make_deterministic()
    torch.manual_seed(args.seed)
    train_loader, eval_loader = make_loaders(args.loader, args.data_dir, device, augment=augmentation(args),
                                             seed=args.seed, holdout=args.holdout, **sizes)
    model = ARCHITECTURES[args.model](args.dropout).to(device)
    config["parameters"] = count_parameters(model)
    optimizer, scheduler = make_optimizer(model, args, len(train_loader))
    ema = AveragedModel(model, multi_avg_fn=ema_update(args.ema), use_buffers=True) if args.ema else None
    state = TrainingState(model, optimizer, scheduler, train_loader.generator, device, ema)
    return state, train_loader, eval_loader, config


def train(state, train_loader, eval_loader, config, checkpoint, stop):
    """Epochs from state.epoch + 1 to the last: train, evaluate, checkpoint."""
    split = config["eval_split"]
    evaluation = None
    for epoch in range(state.epoch + 1, config["epochs"] + 1):
        print(f"EPOCH: {epoch}/{config['epochs']}")
        start = time.perf_counter()
        stats = train_epoch(state, train_loader, stop)
        evaluation = evaluate(state.evaluated_model, eval_loader)
        seconds = time.perf_counter() - start
        print(f"Train: loss {stats.loss:.4f}, accuracy {stats.accuracy:.2f}%, {seconds:.1f} s")
        print(f"{'Validation' if split == 'val' else 'Test'} set: Average loss: {evaluation.loss:.4f}, "
              f"Accuracy: {evaluation.correct}/{evaluation.count} ({evaluation.accuracy:.2f}%)\n")
        state.history.append({"epoch": epoch, "train_loss": stats.loss, "train_acc": stats.accuracy,
                              "lr": stats.lr, f"{split}_loss": evaluation.loss,
                              f"{split}_acc": evaluation.accuracy, "seconds": seconds})
        state.epoch = epoch
        state.save(checkpoint, config)
    stop.check("after the last epoch")
    return evaluation or evaluate(state.evaluated_model, eval_loader)


def resume_command(argv, checkpoint, windows=os.name == "nt"):
    """What to type to continue: the same flags, with --resume pointing at the checkpoint,
    quoted for the shell of this platform."""
    kept, skip = [], False
    for arg in argv:
        if not skip and not arg.startswith("--resume"):
            kept.append(arg)
        skip = arg == "--resume"
    words = ["python", "train.py", *kept, "--resume", str(checkpoint)]
    return subprocess.list2cmdline(words) if windows else shlex.join(words)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    checkpoint, resumed = Path(args.out_dir) / "checkpoint.pt", None
    try:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)  # fail now, not after training
        state, train_loader, eval_loader, config = setup(args)
        print_summary(state.model)
        print("Config:", json.dumps(config, indent=2))
        if args.resume:
            state.restore(args.resume, config)
            resumed = state.epoch
            print(f"Resuming after epoch {state.epoch} of {args.epochs} from {args.resume}")
        with StopOnSignal() as stop:
            evaluation = train(state, train_loader, eval_loader, config, checkpoint, stop)
        save_results(args.out_dir, state, config, evaluation)
        return state.history
    except TrainingStopped as stopped:
        last = args.resume if state.epoch == resumed else checkpoint
        if state.epoch == 0:
            hint = "No epoch was completed, so there is no checkpoint to resume from."
        else:
            hint = (f"The last complete checkpoint is epoch {state.epoch}: {last}. Resume with:\n"
                    f"  {resume_command(argv, last)}")
        print(f"train.py: {stopped}\n{hint}", file=sys.stderr)
        sys.exit(stopped.exit_code)
    except (DataError, CheckpointError, OSError) as error:
        sys.exit(f"train.py: error: {error}")
    except KeyboardInterrupt:  # before training started: nothing to keep
        sys.exit("train.py: interrupted")


if __name__ == "__main__":
    main()
