"""Where an epoch's time goes: input pipelines and training steps timed side by side.

    python bench/step.py --quick            # under a minute on a 2-core CPU
    python bench/step.py                    # 150 steps, 11 repeats
    python bench/step.py --candidates floor,floor-native-dropout,floor-no-dropout --profile

Each repeat runs every candidate in turn (interleaved, so that a noisy machine
slows them alike): a fresh, identically initialized model trains for --steps
batches with the reference recipe and then evaluates the whole test set. The
candidates:

  torchvision   the classic pipeline: PIL rotation, ToTensor, Normalize per image, DataLoader
                (bench/pipelines.py)
  in-memory     train.py's: the split as one tensor, batches augmented and normalized on the device
  floor         forward + backward + step on batches normalized beforehand: no data work at all,
                the best any pipeline can do with this model on this device
  floor-*       the floor with one thing changed: the network's dropout as torch's native
                nn.Dropout, as 16-bit masks on any device, or none at all; channels-last
                tensors, 1 thread, torch.compile, the optimizer's foreach or fused kernels

Both pipelines run train.py's own train_epoch and the project's evaluate().
Printed and written as JSON: the median over repeats of images/s, an epoch's
seconds (the steps' time scaled to a full epoch, plus the test pass), the ratio
to the floor and the speed-up over torchvision. --profile adds torch.profiler's
top operators of one more run of each candidate (its steps and its test pass).
Runs on whatever device train.py would pick.
"""

import contextlib
import io
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402 (the project's modules are one folder up)
from bench.pipelines import torchvision_loaders  # noqa: E402
from data import (  # noqa: E402
    Augmentation,
    DataError,
    InMemoryLoader,
    ensure_mnist,
    evaluate,
    normalized,
    read_split,
    read_splits,
)
from model import Dropout, Net  # noqa: E402
from train import StopOnSignal, cpu_name, pick_device, sizes_for  # noqa: E402
from utils import OneLineErrorParser, atomic_write_json, bounded, output_file  # noqa: E402


@dataclass
class Setup:
    """What every candidate shares: sizes, device and the data as tensors."""
    device: torch.device
    batch_size: int
    test_batch_size: int
    steps: int
    data_dir: str
    train_batches: list  # (images, labels), normalized beforehand: the floor's input
    test_batches: list
    steps_per_epoch: int
    dropout: float


def synchronize(device):
    """Wait until DEVICE has done all it was given (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def in_memory_loaders(data_dir, device, *, batch_size, test_batch_size, augment, seed, train_limit):
    """loaders.make_loaders's loaders, training on the first TRAIN_LIMIT images only."""
    (train_pixels, train_labels), (test_pixels, test_labels) = read_splits(data_dir)
    return (InMemoryLoader(train_pixels[:train_limit], train_labels[:train_limit], batch_size, device,
                           shuffle=True, augment=augment, seed=seed),
            InMemoryLoader(test_pixels, test_labels, test_batch_size, device))


def pipeline(kind, setup, model, optimizer, scheduler):
    """Time train.py's own loop over the first setup.steps batches, then the test pass."""
    make = in_memory_loaders if kind == "in-memory" else torchvision_loaders
    train_loader, test_loader = make(
        setup.data_dir, setup.device, batch_size=setup.batch_size, test_batch_size=setup.test_batch_size,
        augment=Augmentation(rotation=7.0), seed=1, train_limit=setup.steps * setup.batch_size)
    state = SimpleNamespace(model=model, optimizer=optimizer, scheduler=scheduler, ema=None, epoch=0)
    # train_epoch's progress bar shows on a terminal only: stderr is not one here, so none is timed.
    with StopOnSignal() as stop, contextlib.redirect_stderr(io.StringIO()):
        start = time.perf_counter()
        train.train_epoch(state, train_loader, stop)
        synchronize(setup.device)
        middle = time.perf_counter()
        evaluate(model, test_loader)
    return middle - start, time.perf_counter() - middle


def floor(setup, model, optimizer, scheduler, channels_last=False, compiled=False):
    """The same steps on ready batches: only the network's arithmetic is timed."""
    train_batches, test_batches = setup.train_batches, setup.test_batches
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        train_batches = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in train_batches]
    net = torch.compile(model) if compiled else model
    model.train()
    start = time.perf_counter()
    for images, labels in train_batches:
        optimizer.zero_grad()
        loss = F.nll_loss(net(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
    synchronize(setup.device)
    middle = time.perf_counter()
    evaluate(net, test_batches)
    return middle - start, time.perf_counter() - middle


def with_model(run, dropout):
    """RUN with every Dropout of the model swapped for DROPOUT(p) (or removed: None)."""
    def candidate(setup, model, *args):
        for block in (m for m in model.modules() if isinstance(m, nn.Sequential)):
            for i, layer in enumerate(block):
                if isinstance(layer, Dropout):
                    block[i] = nn.Identity() if dropout is None else dropout(layer.p)
        return run(setup, model, *args)
    return candidate


def with_threads(run, threads):
    def candidate(*args):
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run(*args)
        finally:
            torch.set_num_threads(before)
    return candidate


class MaskDropout(Dropout):
    """Dropout's 16-bit masks on every device (Dropout uses the native kernel off the CPU)."""

    def forward(self, x):
        return x * self.scaled_mask(x) if self.training else x


CANDIDATES = {
    "torchvision": partial(pipeline, "torchvision"),
    "in-memory": partial(pipeline, "in-memory"),
    "floor": floor,
    "floor-native-dropout": with_model(floor, nn.Dropout),
    "floor-no-dropout": with_model(floor, None),
    "floor-mask-dropout": with_model(floor, MaskDropout),
    "floor-channels-last": partial(floor, channels_last=True),
    "floor-1-thread": with_threads(floor, 1),
    "floor-compile": partial(floor, compiled=True),
    "floor-foreach": floor,  # optimizer variants: see make_optimizer
    "floor-fused": floor,
}
OPTIMIZER_KERNEL = {"floor-foreach": {"foreach": True}, "floor-fused": {"fused": True}}


def make_optimizer(name, model, steps):
    """The reference recipe's optimizer and schedule over STEPS, as train.make_optimizer
    makes them; the floor-foreach/-fused candidates choose SGD's kernel."""
    r, kernel = SimpleNamespace(**train.REFERENCE_RECIPE), OPTIMIZER_KERNEL.get(name, {})
    optimizer = torch.optim.SGD(model.parameters(), lr=r.max_lr / r.div_factor, momentum=r.max_momentum,
                                weight_decay=r.weight_decay, nesterov=r.nesterov, **kernel)
    scheduler = OneCycleLR(optimizer, max_lr=r.max_lr, total_steps=steps, pct_start=r.pct_start,
                           div_factor=r.div_factor, final_div_factor=r.final_div_factor,
                           anneal_strategy=r.anneal_strategy, base_momentum=r.base_momentum,
                           max_momentum=r.max_momentum)
    return optimizer, scheduler


def time_candidate(name, setup, profile=False):
    """(train seconds, test seconds) of one fresh, identically initialized run of NAME;
    with PROFILE, torch.profiler's averages of that run's operators instead."""
    torch.manual_seed(0)
    model = Net(setup.dropout).to(setup.device)
    optimizer, scheduler = make_optimizer(name, model, setup.steps)
    if not profile:
        return CANDIDATES[name](setup, model, optimizer, scheduler)
    with torch.profiler.profile() as profiler:
        CANDIDATES[name](setup, model, optimizer, scheduler)
    return profiler.key_averages()


def top_operators(averages, count=12):
    """The COUNT operators with the most self time, as (name, share %, ms)."""
    device_time = any(getattr(a, "self_device_time_total", 0) for a in averages)
    def self_time(a):
        return a.self_device_time_total if device_time else a.self_cpu_time_total
    total = sum(self_time(a) for a in averages) or 1
    ranked = sorted(averages, key=self_time, reverse=True)[:count]
    return [{"op": a.key, "share": 100 * self_time(a) / total, "ms": self_time(a) / 1000} for a in ranked]


def summarize(times, setup):
    """Per candidate: medians over repeats, an epoch extrapolated from them, and ratios."""
    rows = {}
    for name, runs in times.items():
        train_s = statistics.median(run[0] for run in runs)
        test_s = statistics.median(run[1] for run in runs)
        rows[name] = {"images_per_s": setup.steps * setup.batch_size / train_s,
                      "train_s": train_s, "test_s": test_s,
                      "epoch_s": train_s / setup.steps * setup.steps_per_epoch + test_s, "runs": runs}
    for row in rows.values():
        if "floor" in rows:
            row["x_floor"] = row["epoch_s"] / rows["floor"]["epoch_s"]
        if "torchvision" in rows:
            row["speedup_over_torchvision"] = rows["torchvision"]["epoch_s"] / row["epoch_s"]
    return rows


def print_table(rows):
    print(f"\n{'candidate':22} {'images/s':>9} {'epoch s':>8} {'test s':>7} {'x floor':>8} "
          f"{'vs torchvision':>15}")
    for name, row in rows.items():
        x_floor, speedup = row.get("x_floor"), row.get("speedup_over_torchvision")
        print(f"{name:22} {row['images_per_s']:9.0f} {row['epoch_s']:8.2f} {row['test_s']:7.2f} "
              f"{'' if x_floor is None else f'{x_floor:.3f}':>8} "
              f"{'' if speedup is None else f'{speedup:.2f}x':>15}")


def print_profiles(profiles):
    for name, ops in profiles.items():
        print(f"\nTop operators by self time, {name}:")
        for op in ops:
            print(f"  {op['op']:40} {op['share']:5.1f}%  {op['ms']:9.1f} ms")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="60 steps, 3 repeats")
    p.add_argument("--steps", type=bounded(int, 1), default=150, help="training batches per run")
    # Many short interleaved runs: on a shared machine the speed drifts by 10-20% over seconds.
    p.add_argument("--repeats", type=bounded(int, 1), default=11)
    p.add_argument("--candidates", default="torchvision,in-memory,floor",
                   help=f"comma-separated, from: {', '.join(CANDIDATES)}")
    p.add_argument("--profile", action="store_true",
                   help="also profile one more run of each candidate and print its top operators")
    p.add_argument("--dropout", type=bounded(float, 0, 0.99), default=0.05,
                   help="the network's dropout; default: the reference recipe's 0.05")
    p.add_argument("--batch-size", type=bounded(int, 1), default=None, help="default: as train.py")
    p.add_argument("--test-batch-size", type=bounded(int, 1), default=None, help="default: as train.py")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--output", type=output_file, default="bench.json", help="where the results go, as JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 60, 3
    args.candidates = list(dict.fromkeys(args.candidates.split(",")))  # each once, in order
    unknown = [name for name in args.candidates if name not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    return args


def make_setup(args):
    device = pick_device(args.device)
    sizes = sizes_for(device, args.batch_size, args.test_batch_size)
    train_pixels, train_labels = read_split(args.data_dir, train=True)
    test_pixels, test_labels = read_split(args.data_dir, train=False)
    count = args.steps * sizes["batch_size"]
    if count > len(train_labels):
        raise ValueError(f"--steps {args.steps} x batch {sizes['batch_size']} is more than "
                         f"the {len(train_labels)} training images")

    def batches(pixels, labels, size):  # views of one tensor: no copies, no allocations
        images, labels = normalized(pixels.to(device)), labels.to(device)
        return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(labels), size)]

    return Setup(device, **sizes, steps=args.steps, data_dir=args.data_dir,
                 train_batches=batches(train_pixels[:count], train_labels[:count], sizes["batch_size"]),
                 test_batches=batches(test_pixels, test_labels, sizes["test_batch_size"]),
                 steps_per_epoch=math.ceil(len(train_labels) / sizes["batch_size"]), dropout=args.dropout)


def machine():
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main(argv=None):
    args = parse_args(argv)
    try:
        ensure_mnist(args.data_dir)
        setup = make_setup(args)
    except (DataError, OSError, ValueError) as error:
        sys.exit(f"step.py: error: {error}")
    print(f"{setup.device}, batch {setup.batch_size}, test batch {setup.test_batch_size}, "
          f"dropout {args.dropout}, {args.steps} steps, {args.repeats} repeats, "
          f"{torch.get_num_threads()} threads")
    times = {name: [] for name in args.candidates}
    for repeat in range(args.repeats):
        for name in args.candidates:
            times[name].append(time_candidate(name, setup))
        print(f"repeat {repeat + 1}/{args.repeats}: " +
              ", ".join(f"{name} {sum(runs[-1]):.2f} s" for name, runs in times.items()), flush=True)
    rows = summarize(times, setup)
    print_table(rows)
    profiles = {name: top_operators(time_candidate(name, setup, profile=True))
                for name in args.candidates} if args.profile else {}
    print_profiles(profiles)
    atomic_write_json(args.output, {"machine": machine(), "device": str(setup.device),
                                  "batch_size": setup.batch_size, "test_batch_size": setup.test_batch_size,
                                  "steps": args.steps,
                                  "repeats": args.repeats, "candidates": rows, "profiles": profiles})
    print(f"Wrote {args.output}")
    return rows


if __name__ == "__main__":
    main()
