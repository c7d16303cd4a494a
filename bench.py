"""Where an epoch's time goes: the input pipelines timed side by side in one process.

    python bench.py --quick                 # under a minute on a 2-core CPU
    python bench.py                         # the README's table: 150 steps, 11 repeats, ~3 min
    python bench.py --candidates floor,floor-channels-last,floor-1-thread,floor-flush-denormal,floor-sync

Each repeat runs every candidate in turn (interleaved, so that a noisy machine
slows them alike): a fresh model trains for --steps batches with the seed's
recipe and then evaluates the whole test set. The candidates:

  torchvision   the classic pipeline: PIL rotation, ToTensor, Normalize per image, DataLoader
  in-memory     train.py's default: the split as one tensor, batches rotated and normalized on the device
  floor         forward + backward + step on batches sliced and normalized beforehand: no data
                work at all, the best any pipeline can do with this model on this device
  floor-*       the floor with one knob changed: channels-last tensors, 1 thread, flush-denormal,
                a host sync per batch (loss.item(), as train.py does), torch.compile

Both pipelines run train.py's own train_epoch and test. Printed and written as
JSON: the median over repeats of images/s, an epoch's seconds (the steps' time
scaled to a full epoch, plus the test pass), the ratio to the floor and the
speed-up over torchvision. Runs on whatever device train.py would pick.
"""

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision import datasets

import train
from data import DataError, ensure_mnist
from loaders import make_loaders, normalize, to_unit_interval
from model import Net
from utils import atomic_write_json


def pipeline(kind, setup, model, optimizer, scheduler):
    """Time train.py's own loop over the first setup.steps batches, then its test pass."""
    train_loader, test_loader = make_loaders(
        kind, setup.data_dir, setup.batch_size, setup.test_batch_size, setup.recipe.rotation, seed=1,
        device=setup.device, num_workers=setup.num_workers, train_limit=setup.steps * setup.batch_size)
    # train.py's progress bar and test line still run, but print to nowhere
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet), \
            contextlib.redirect_stderr(quiet), train.StopOnSignal() as stop:
        start = time.perf_counter()
        train.train_epoch(model, train_loader, optimizer, scheduler, setup.device, 1, stop)
        middle = finish(setup.device)
        train.test(model, test_loader, setup.device)
    return middle - start, finish(setup.device) - middle


def floor(setup, model, optimizer, scheduler, channels_last=False, sync=False, compiled=False):
    """The same steps on ready batches: only the network's arithmetic is timed."""
    def ready(pixels):
        images = normalize(to_unit_interval(pixels.to(setup.device)))
        return images.contiguous(memory_format=torch.channels_last) if channels_last else images

    def batches(pixels, labels, size, count):
        images = ready(pixels[:count])  # one tensor: its batches are views, no copies, no allocations
        return [(images[i:i + size], labels[i:i + size]) for i in range(0, count, size)]

    train_batches = batches(setup.train_pixels, setup.train_labels, setup.batch_size,
                            setup.steps * setup.batch_size)
    test_batches = batches(setup.test_pixels, setup.test_labels, setup.test_batch_size,
                           len(setup.test_labels))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    start = time.perf_counter()
    model.train()
    for images, labels in train_batches:
        optimizer.zero_grad()
        loss = F.nll_loss(net(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if sync:
            loss.item()
    middle = finish(setup.device)
    model.eval()
    with torch.inference_mode():
        correct = sum((net(images).argmax(1) == labels).sum() for images, labels in test_batches)
    correct.item()
    return middle - start, finish(setup.device) - middle


def finish(device):
    """The time once the device has done all it was given (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


def with_cpu_setting(run, threads=None, flush_denormal=False):
    """RUN with torch's CPU thread count or denormal flushing changed, and restored after."""
    def candidate(*args):
        before = torch.get_num_threads()
        torch.set_num_threads(threads or before)
        torch.set_flush_denormal(flush_denormal)
        try:
            return run(*args)
        finally:
            torch.set_num_threads(before)
            torch.set_flush_denormal(False)
    return candidate


CANDIDATES = {
    "torchvision": partial(pipeline, "torchvision"),
    "in-memory": partial(pipeline, "in-memory"),
    "floor": floor,
    "floor-channels-last": partial(floor, channels_last=True),
    "floor-1-thread": with_cpu_setting(floor, threads=1),
    "floor-flush-denormal": with_cpu_setting(floor, flush_denormal=True),
    "floor-sync": partial(floor, sync=True),
    "floor-compile": partial(floor, compiled=True),
}


def time_candidate(name, setup):
    """(train seconds, test seconds) of one fresh, identically initialized run of NAME."""
    torch.manual_seed(0)
    model = Net(setup.recipe.dropout).to(setup.device)
    optimizer, scheduler = train.make_optimizer(model, setup.recipe, setup.steps)
    return CANDIDATES[name](setup, model, optimizer, scheduler)


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


def parse_args(argv=None):
    p = train.OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="60 steps, 3 repeats")
    p.add_argument("--steps", type=train.bounded(int, 1), default=150, help="training batches per run")
    # Many short interleaved runs: on a shared machine the speed drifts by 10-20% over seconds.
    p.add_argument("--repeats", type=train.bounded(int, 1), default=11)
    p.add_argument("--candidates", default="torchvision,in-memory,floor",
                   help=f"comma-separated, from: {', '.join(CANDIDATES)}")
    p.add_argument("--batch-size", type=train.bounded(int, 1), default=None, help="default: as train.py")
    p.add_argument("--test-batch-size", type=train.bounded(int, 1), default=None, help="default: as train.py")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--json", default="bench.json", help="where the results go")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 60, 3
    args.candidates = list(dict.fromkeys(args.candidates.split(",")))  # each once, in order
    if not Path(args.json).resolve().parent.is_dir():
        p.error(f"--json {args.json}: its folder does not exist")
    unknown = [name for name in args.candidates if name not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate {', '.join(unknown)}; choose from {', '.join(CANDIDATES)}")
    return args


@dataclass
class Setup:
    """What every candidate shares: train.py's recipe, sizes, device and the data as tensors."""
    recipe: argparse.Namespace
    device: torch.device
    batch_size: int
    test_batch_size: int
    num_workers: int
    steps: int
    data_dir: str
    train_pixels: torch.Tensor
    train_labels: torch.Tensor
    test_pixels: torch.Tensor
    test_labels: torch.Tensor

    @property
    def steps_per_epoch(self):
        return math.ceil(len(self.train_labels) / self.batch_size)


def make_setup(args):
    device = train.pick_device(args.device)
    sizes = train.sizes_for(device, args.batch_size, args.test_batch_size)
    train_set, test_set = (datasets.MNIST(args.data_dir, train=split) for split in (True, False))
    if args.steps * sizes["batch_size"] > len(train_set):
        raise ValueError(f"--steps {args.steps} x batch {sizes['batch_size']} is more than "
                         f"the {len(train_set)} training images")
    return Setup(train.parse_args(["--device", args.device]), device, **sizes, steps=args.steps,
                 data_dir=args.data_dir,
                 train_pixels=train_set.data, train_labels=train_set.targets.to(device),
                 test_pixels=test_set.data, test_labels=test_set.targets.to(device))


def machine():
    model_names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name")] if Path("/proc/cpuinfo").exists() else []
    return {"cpu": model_names[0] if model_names else platform.processor(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def main(argv=None):
    args = parse_args(argv)
    try:
        ensure_mnist(args.data_dir)
        setup = make_setup(args)
    except (DataError, OSError, ValueError) as error:
        sys.exit(f"bench.py: error: {error}")
    print(f"{setup.device}, batch {setup.batch_size}, test batch {setup.test_batch_size}, "
          f"{args.steps} steps, {args.repeats} repeats, {torch.get_num_threads()} threads")
    times = {name: [] for name in args.candidates}
    for repeat in range(args.repeats):
        for name in args.candidates:
            times[name].append(time_candidate(name, setup))
        print(f"repeat {repeat + 1}/{args.repeats}: " +
              ", ".join(f"{name} {sum(runs[-1]):.2f} s" for name, runs in times.items()), flush=True)
    rows = summarize(times, setup)
    print_table(rows)
    atomic_write_json(args.json, {"machine": machine(), "device": str(setup.device),
                                  "batch_size": setup.batch_size, "test_batch_size": setup.test_batch_size,
                                  "num_workers": setup.num_workers,
                                  "steps": args.steps, "repeats": args.repeats, "candidates": rows})
    print(f"Wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
