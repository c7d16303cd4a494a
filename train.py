"""Train the reference 7,544-parameter MNIST network in 15 epochs (results over seeds: README).

    python train.py                          # the default recipe, seed 1; writes runs/default/seed1/
    python train.py --seed 2 --threads 1     # another seed, one CPU thread
    python train.py --recipe fast            # 10 epochs at batch 128, in runs/fast/seed1/
    python train.py --model tiny             # the 2,962-parameter network and its recipe: runs/tiny/seed1/
    python train.py --holdout 10000          # validate on the last 10,000 training images
    python train.py --resume runs/default/seed1/checkpoint.pt   # continue a stopped run (same flags)

Every setting is a flag; the whole configuration is printed at start. MNIST is
held as one tensor on the device and batched, augmented and normalized there
(data.py). Writes output.png (the curves), misclassified.png, history.json
and weights.pt to --out-dir, and checkpoint.pt after every epoch, from which
--resume continues bit for bit. Ctrl-C stops after the current batch. The default
--out-dir is runs/NAME/seedN, NAME what sets the run apart: its recipe and network, and
each setting that differs from their defaults (default, fast, tiny, holdout=10000,
batch-size=128_max-lr=0.1, ...). A finished run made with other settings, or a stopped
one, is not replaced without --overwrite.

The file reads top down: the recipes and flags, the training loop, then a run's
state (checkpoint.pt, stopping on a signal, the resume command) and the device.
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR
from torch.optim.swa_utils import AveragedModel
from torchsummary import summary
from tqdm import tqdm

from data import Augmentation, DataError, ensure_mnist, evaluate, make_loaders
from model import (
    ARCHITECTURES,
    DEFAULT_DROPOUT,
    MNIST_MEAN,
    MNIST_STD,
    Net,
    TinyNet,
    WeightsError,
    channel_counts,
    count_parameters,
    safe_load,
    shape_error,
    shape_options,
)
from utils import (
    DefaultsHelpFormatter,
    OneLineErrorParser,
    atomic_write,
    atomic_write_json,
    bounded,
    plot_history,
    plot_misclassified,
)

# The reference optimizer and schedule: SGD-Nesterov under OneCycleLR, stepped every batch.
# SGD's own learning rate and momentum are not settings: OneCycleLR overwrites both from
# its first step, the learning rate from max_lr / div_factor up to max_lr and down to
# max_lr / div_factor / final_div_factor, the momentum between max_momentum and base_momentum.
REFERENCE_RECIPE = dict(epochs=15, weight_decay=1e-4, nesterov=True, max_lr=0.02, pct_start=0.2,
                        div_factor=25.0, final_div_factor=1e4, anneal_strategy="cos",
                        base_momentum=0.85, max_momentum=0.95)
# Defaults and recipes are chosen on --holdout 10000 validation (results/recipes.md); a flag given
# on the command line still wins. DEFAULT_OPTIMIZER: the default's peak learning rate and weight
# decay, at both batch sizes. --model tiny brings the tiny network's recipe: within 15 epochs,
# regularization cost it more than it gave. reference: the reference document's recipe as written,
# with the choices it leaves open set to nearest rotation, dropout 0.05 and no weight average.
DEFAULT_OPTIMIZER = dict(max_lr=0.05, weight_decay=5e-4)
MODEL_RECIPES = {"reference": {}, "tiny": dict(dropout=0.0, max_lr=0.05, weight_decay=1e-4, rotation=0.0)}
RECIPES = {"default": {}, "fast": dict(epochs=10, batch_size=128, max_lr=0.1, dropout=0.0, weight_decay=5e-4),
           "reference": dict(REFERENCE_RECIPE, batch_size=None, rotation=7.0, translate=0.0, scale=0.0,
                             interpolation="nearest", dropout=0.05, ema=0.0)}
# Entries of a run's config (history.json) that do not change the weights it computes on one
# machine: where its files are, the recipe's name (the values it sets are recorded as flags),
# evaluation's batch size, and what it ran on. Every other entry decides the result.
# deciding_settings and changed_settings are the one definition of that: resuming (TrainingState),
# the refusal to replace a finished run, seeds.py's reuse of one and its summary, and
# bench/screening_table.py use them.
NOT_DECIDING = ("recipe", "device", "test_batch_size", "data_dir", "out_dir", "resume", "overwrite",
                "deterministic", "eval_split", "torch", "cpu", "cpu_capability")

# Augmentation flags since removed (CHANGELOG), each with the value that meant off. A recorded
# config with one at that value, or without it, is this code's run; one with another value is
# neither resumed nor reused.
ABSENT_MEANS = {"pen": 0.0, "shear": 0.0, "aspect": 0.0, "elastic": 0.0, "stroke": 0.0, "noise": 0.0}


def as_flags(settings):
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in settings.items())


def add_run_flags(p):
    add = p.add_argument_group("run").add_argument
    add("--recipe", choices=list(RECIPES), default="default",
        help=f"fast: {as_flags(RECIPES['fast'])}; reference: the reference document's, with nearest "
             "rotation, dropout 0.05 and no weight average; explicit flags still win")
    add("--seed", type=bounded(int, 0), default=1, help="initialization, order, augmentation, dropout")
    add("--threads", type=bounded(int, 1), help="CPU threads (they change the result); default: one a core")
    add("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto", help="auto: cuda, mps, cpu")
    add("--holdout", type=bounded(int, 0, 59000), default=0,
        help="train on all but the last N training images and validate on those, not the test set")
    add("--test-batch-size", type=bounded(int, 1), help="default: 250 on the CPU (faster there), else 1000")
    add("--data-dir", default="data", help="MNIST goes to DATA_DIR/MNIST/raw")
    add("--out-dir", default=None, help="default: runs/NAME/seed<SEED>, NAME from --recipe, --model and "
                                        "each changed setting: default, fast, tiny, holdout=10000, ...")
    add("--overwrite", action="store_true", help="replace a run in --out-dir: a stopped one, or a finished "
                                                 "one with other settings")
    add("--resume", metavar="CHECKPOINT", help="continue from a checkpoint.pt of this run")
    add("--deterministic", action="store_true", help="for CUDA; CPU runs repeat without it")


def add_model_flags(p):
    # Bilinear rotation, dropout 0.01 and the averaged weights were chosen on validation
    # (results/recipes.md); the reference recipe's choices were --interpolation nearest
    # --dropout 0.05 --ema 0.
    add = p.add_argument_group("network, augmentation and weight average").add_argument
    add("--model", choices=list(ARCHITECTURES), default="reference",
        help="reference: the 7,544-parameter network; tiny: 2,962 parameters, with its "
             f"own defaults: {as_flags(MODEL_RECIPES['tiny'])}")
    add("--width", type=bounded(float, 0, 8, low_open=True), default=1.0,
        help="scales every channel count of the reference network (python model.py --width W: its table)")
    add("--channels", type=channel_counts, default=None, metavar="C1,C2,T,C3,C4,C5,C6",
        help="the reference network's seven channel counts (16,10,10,10,10,16,16 is the default "
             "network); instead of --width")
    add("--dropout", type=bounded(float, 0, 0.99), default=DEFAULT_DROPOUT, help="after every conv block")
    add("--rotation", type=bounded(float, 0, 180), default=7.0, help="random rotation, +/- degrees")
    add("--translate", type=bounded(float, 0, 0.5), default=0.0, help="random shift, +/- image fraction")
    add("--scale", type=bounded(float, 0, 0.5), default=0.0, help="random zoom in [1 - SCALE, 1 + SCALE]")
    add("--interpolation", choices=["nearest", "bilinear"], default="bilinear", help="augmentation's")
    add("--ema", type=bounded(float, 0, 1), default=0.999, metavar="DECAY",
        help="evaluate and save a moving average of the weights with this decay a step; 0: off")


def add_optimizer_flags(p):
    positive_float = bounded(float, 0, low_open=True)
    add = p.add_argument_group("SGD-Nesterov, OneCycleLR (REFERENCE_RECIPE, DEFAULT_OPTIMIZER)").add_argument
    add("--epochs", type=bounded(int, 1), help="also the length of the OneCycleLR schedule")
    add("--batch-size", type=bounded(int, 1), help="default: 128 on CUDA, 64 otherwise, as the reference")
    add("--weight-decay", type=bounded(float, 0), help="SGD's L2 penalty")
    add("--nesterov", action=argparse.BooleanOptionalAction, help="Nesterov momentum")
    add("--max-lr", type=positive_float, help="peak learning rate")
    add("--pct-start", type=bounded(float, 0, 1, low_open=True), help="fraction of steps rising")
    add("--div-factor", type=positive_float, help="the first learning rate is max-lr / this")
    add("--final-div-factor", type=positive_float, help="the last is max-lr / div-factor / this")
    add("--anneal-strategy", choices=["cos", "linear"], help="the shape of both ramps")
    add("--base-momentum", type=bounded(float, 0, 1), help="momentum at the peak learning rate")
    add("--max-momentum", type=bounded(float, 0, 1, low_open=True), help="momentum at the lowest")


def parse_args(argv=None):
    # --help comes after the recipe's defaults, so that it shows them; no abbreviated flags, so that
    # seeds.py and search.py can refuse the flags they set for each run by their full names
    p = OneLineErrorParser(description=__doc__.split("\n")[0], formatter_class=DefaultsHelpFormatter,
                           add_help=False, allow_abbrev=False)
    p.set_defaults(**{**REFERENCE_RECIPE, **DEFAULT_OPTIMIZER})
    add_run_flags(p)
    add_model_flags(p)
    add_optimizer_flags(p)
    chosen, _ = p.parse_known_args(argv)  # --model and --recipe decide the other defaults
    p.set_defaults(**{**MODEL_RECIPES[chosen.model], **RECIPES[chosen.recipe]})
    p.add_argument("-h", "--help", action="help", help="show this message, with the defaults of the "
                                                       "--recipe and --model given, and exit")
    args = p.parse_args(argv)
    if args.base_momentum > args.max_momentum:
        p.error("--base-momentum must not exceed --max-momentum")
    if error := shape_error(args.model, args.width, args.channels):
        p.error(error)
    if args.resume and not Path(args.resume).is_file():
        p.error(f"--resume {args.resume}: no such file")
    if args.device != "auto" and not device_available(args.device):
        p.error(f"--device {args.device} is not available on this machine")
    args.out_dir = args.out_dir or str(Path("runs") / run_name(args, p) / f"seed{args.seed}")
    return args


def run_name(args, parser):
    """The default run folder's name: the recipe and network where not the default ones, then
    every setting that decides the run and differs from their defaults, as FLAG=VALUE joined
    by "_" (default, fast, tiny, holdout=10000, fast_batch-size=256, channels=4-8-8-8-8-12-12)."""
    fixed = (*NOT_DECIDING, "seed", "model")
    changed = [f"{key.replace('_', '-')}={as_name(value)}" for key, value in vars(args).items()
               if key not in fixed and value != parser.get_default(key)]
    parts = [args.recipe] * (args.recipe != "default") + [args.model] * (args.model != "reference")
    return "_".join(parts + changed) or "default"


def as_name(value):
    """A setting's value in a folder name: 0.9, 4-8-8-8-8-12-12, False."""
    if isinstance(value, list):
        return "-".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def deciding_settings(config):
    """The settings of CONFIG that decide a run's result (see NOT_DECIDING), as recorded."""
    return {key: value for key, value in config.items() if key not in NOT_DECIDING}


def changed_settings(before, after):
    """'key old (now new)' for each setting that decides a run and differs from config BEFORE
    to config AFTER; an entry that one of them lacks counts as None, or as ABSENT_MEANS's value
    where it names the entry."""
    before, after = ({**ABSENT_MEANS, **deciding_settings(config)} for config in (before, after))
    return [f"{key} {before.get(key)!r} (now {after.get(key)!r}"
            + ("; a flag since removed, see CHANGELOG)" if key in ABSENT_MEANS else ")")
            for key in sorted(before.keys() | after.keys()) if before.get(key) != after.get(key)]


def make_model(args):
    if args.model == "reference":
        return Net(args.dropout, args.width, args.channels)
    return TinyNet(args.dropout)


def run_config(args):
    """The config a run with ARGS records in history.json, as this machine resolves it: the
    device, batch sizes and threads, and the network's parameter count."""
    device = pick_device(args.device)
    with torch.device("meta"):  # counted without drawing from the random generator
        parameters = count_parameters(make_model(args))
    sizes = sizes_for(device, args.batch_size, args.test_batch_size)
    return {**vars(args), "device": str(device), **sizes, "threads": args.threads or torch.get_num_threads(),
            "eval_split": "val" if args.holdout else "test", "torch": str(torch.__version__),
            # CPU runs repeat bit for bit only on the same kind of CPU: torch picks kernels by it.
            "cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "parameters": parameters}


def read_history(path):
    """A finished run's history.json as train.py writes it (its config and epochs); ValueError,
    in one line, if PATH holds anything else."""
    try:
        history = json.loads(Path(path).read_text())
        if isinstance(history["config"], dict) and history["epochs"]:
            return history
    except (ValueError, KeyError, TypeError):
        pass
    raise ValueError(f"{path} is not a history.json that train.py wrote")


def refuse_to_replace(args, argv):
    """Exit with one line if --out-dir holds a stopped run that this one does not resume, or a
    finished run whose deciding settings differ from this one's, unless --overwrite."""
    folder = Path(args.out_dir)
    if args.overwrite:
        return
    if not (folder / "history.json").exists():
        if (folder / "checkpoint.pt").exists() and not args.resume:
            sys.exit(f"train.py: error: {folder} holds a stopped run; resume it with "
                     f"{resume_command(argv, folder / 'checkpoint.pt')}, or give --overwrite to start again")
        return
    how = "give another --out-dir, or --overwrite to replace it"
    try:
        saved = read_history(folder / "history.json")["config"]
    except ValueError as error:
        sys.exit(f"train.py: error: {error}; {how}")
    changed = changed_settings(saved, run_config(args))
    if changed:
        sys.exit(f"train.py: error: {folder} holds a finished run with other settings "
                 f"({'; '.join(changed)}); {how}")


def make_optimizer(model, recipe, steps_per_epoch):
    """SGD-Nesterov under OneCycleLR, from RECIPE's REFERENCE_RECIPE keys."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.max_lr / recipe.div_factor,
                                momentum=recipe.max_momentum, weight_decay=recipe.weight_decay,
                                nesterov=recipe.nesterov)
    scheduler = OneCycleLR(
        optimizer, max_lr=recipe.max_lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=recipe.pct_start, div_factor=recipe.div_factor,
        final_div_factor=recipe.final_div_factor, anneal_strategy=recipe.anneal_strategy,
        base_momentum=recipe.base_momentum, max_momentum=recipe.max_momentum)
    return optimizer, scheduler


def train_epoch(state, loader, stop):
    """One pass over the training set: (mean loss, % right in train mode, the last batch's
    learning rate). One host sync a batch: the loss, to stop on NaN. The progress bar shows
    on a terminal only."""
    model, optimizer, epoch = state.model, state.optimizer, state.epoch + 1
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    with tqdm(loader, disable=None) as progress:
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
    return total_loss / seen, 100 * int(correct) / seen, lr


def print_summary(model):
    """torchsummary's table, from a CPU copy: its train-mode pass would move BatchNorm and the RNG."""
    with torch.random.fork_rng(devices=[]):
        summary(deepcopy(model).cpu(), input_size=(1, 28, 28), device="cpu")


def save_weights(path, model):
    """MODEL's architecture name, shape (model.shape_options) and state_dict as CPU tensors,
    so that a CUDA run's file loads anywhere (model.load_model)."""
    weights = model.state_dict()  # an OrderedDict with metadata, as torch.save expects
    for key in weights:
        weights[key] = weights[key].cpu()
    file = {"architecture": model.architecture, "state_dict": weights, **shape_options(model)}
    atomic_write(path, lambda f: torch.save(file, f))


def save_results(out_dir, state, config, evaluation):
    out_dir, history = Path(out_dir), state.history
    split = config["eval_split"]
    save_weights(out_dir / "weights.pt", state.evaluated_model)
    best = max(history, key=lambda row: row[f"{split}_acc"])
    atomic_write_json(out_dir / "history.json", {
        "config": config, f"final_{split}_acc": history[-1][f"{split}_acc"],
        f"best_{split}_acc": best[f"{split}_acc"], f"best_{split}_acc_epoch": best["epoch"],
        f"best_{split}_loss": min(row[f"{split}_loss"] for row in history), "epochs": history})
    plot_history(history, split, out_dir / "output.png")
    pixels = [(MNIST_MEAN + MNIST_STD * image).numpy() for image in evaluation.wrong_images]
    plot_misclassified(pixels, evaluation.wrong_targets, evaluation.wrong_predictions,
                       evaluation.count - evaluation.correct, out_dir / "misclassified.png")
    print(f"Wrote weights.pt, history.json, output.png and misclassified.png to {out_dir}")


def ema_update(decay):
    """AveragedModel's multi_avg_fn: an exponential moving average whose decay warms up as
    min(DECAY, (1 + n) / (10 + n)), so a short run's is not mostly its initialization."""
    def update(averaged, current, updates):
        n = int(updates)
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for average, value in zip(averaged, current):
            if average.is_floating_point():
                average.lerp_(value, weight)
            else:
                average.copy_(value)
    return update


def setup(args):
    """(TrainingState, training loader, evaluation loader, config) for ARGS, the data on the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = run_config(args)
    device = torch.device(config["device"])
    sizes = {key: config[key] for key in ("batch_size", "test_batch_size")}
    ensure_mnist(args.data_dir)
    if args.deterministic:
        make_deterministic()
    torch.manual_seed(args.seed)
    augment = Augmentation(args.rotation, args.translate, args.scale, args.interpolation)
    train_loader, eval_loader = make_loaders(args.data_dir, device, augment=augment, seed=args.seed,
                                             holdout=args.holdout, **sizes)
    model = make_model(args).to(device)
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
        loss, accuracy, lr = train_epoch(state, train_loader, stop)
        evaluation = evaluate(state.evaluated_model, eval_loader)
        seconds = time.perf_counter() - start
        print(f"Train: loss {loss:.4f}, accuracy {accuracy:.2f}%, {seconds:.1f} s")
        print(f"{'Validation' if split == 'val' else 'Test'} set: Average loss: {evaluation.loss:.4f}, "
              f"Accuracy: {evaluation.correct}/{evaluation.count} ({evaluation.accuracy:.2f}%)\n")
        state.history.append({"epoch": epoch, "train_loss": loss, "train_acc": accuracy,
                              "lr": lr, f"{split}_loss": evaluation.loss,
                              f"{split}_acc": evaluation.accuracy, "seconds": seconds})
        state.epoch = epoch
        state.save(checkpoint, config)
        # The epochs so far, for a process that follows the run (search.py prunes on them).
        atomic_write_json(checkpoint.parent / "epochs.json", state.history)
    stop.check("after the last epoch")
    return evaluation or evaluate(state.evaluated_model, eval_loader)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    checkpoint, resumed, state = Path(args.out_dir) / "checkpoint.pt", None, None
    try:
        refuse_to_replace(args, argv)
        state, train_loader, eval_loader, config = setup(args)  # MNIST first: no empty folder without it
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)  # fail now, not after training
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
    except (TrainingStopped, KeyboardInterrupt) as stopped:  # Ctrl-C outside the loop: KeyboardInterrupt
        if args.resume and resumed is None:  # stopped before the checkpoint was read: it is as it was
            hint = f"{args.resume} is unchanged. Resume with:\n  {resume_command(argv, args.resume)}"
        else:
            epoch = state.epoch if state else 0
            hint = resume_hint(argv, epoch, args.resume if epoch == resumed else checkpoint)
        print(f"train.py: {str(stopped) or 'interrupted'}\n{hint}", file=sys.stderr)
        sys.exit(getattr(stopped, "exit_code", 128 + signal.SIGINT))
    except (DataError, WeightsError, OSError) as error:
        sys.exit(f"train.py: error: {error}")


# A run's state. checkpoint.pt is a TrainingState: everything the next epoch needs. It holds
# the model, optimizer, scheduler and (with --ema) averaged-model states, the epoch, the
# history so far, the run's config, and every random state the next epoch draws from:
# torch's CPU generator (dropout on the CPU), the loader's own CPU generator (order and
# augmentation, the same on every device) and the generator of the device the run used
# (dropout on CUDA or MPS). Restoring all of them is what makes a resumed run end bit for bit
# where an uninterrupted one does. Python's `random` and NumPy are not used by training.

FORMAT = "mnist-7544/train-checkpoint/4"


class CheckpointError(WeightsError):
    """A checkpoint that cannot be resumed; the message names the file."""


@dataclass
class TrainingState:
    """What a run carries from epoch to epoch: what checkpoint.pt saves and restores."""
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the loader's: order and augmentation
    device: torch.device
    ema: torch.nn.Module = None  # AveragedModel with --ema, else None
    epoch: int = 0
    history: list = field(default_factory=list)

    def device_random_state(self):
        """The state of the generator that draws dropout on CUDA or MPS; None on the CPU."""
        if self.device.type != "cpu":  # torch.cuda's or torch.mps's generator
            return torch.get_device_module(self.device).get_rng_state(self.device)

    @property
    def evaluated_model(self):
        """The model whose weights are evaluated and saved: the average with --ema."""
        return self.model if self.ema is None else self.ema.module

    def parts(self):
        """The objects whose state_dict the checkpoint holds (ema: None without --ema)."""
        return dict(model=self.model, optimizer=self.optimizer, scheduler=self.scheduler, ema=self.ema)

    def save(self, path, config):
        """Everything the next epoch needs, and the run's CONFIG, which restore() compares."""
        state = {"format": FORMAT, "epoch": self.epoch, "history": self.history, "config": config,
                 **{name: None if part is None else part.state_dict() for name, part in self.parts().items()},
                 "random": {"torch": torch.get_rng_state(), "loader": self.generator.get_state(),
                            "device": self.device_random_state(), "device_type": self.device.type}}
        atomic_write(path, lambda f: torch.save(state, f))

    def restore(self, path, config):
        """Put the run back where the checkpoint at PATH left it, if no setting that decides the
        run (changed_settings) differs between its config and CONFIG."""
        state = load_checkpoint(path)
        changed = changed_settings(state["config"], config)
        if changed:
            raise CheckpointError(f"{path} was made with other settings: {'; '.join(changed)}; "
                                  "resume with the same flags as the original run")
        for name, part in self.parts().items():
            if part is not None:
                part.load_state_dict(state[name])
        torch.set_rng_state(state["random"]["torch"])
        self.generator.set_state(state["random"]["loader"])
        if state["random"]["device_type"] == self.device.type != "cpu":  # else not bitwise, but runs
            torch.get_device_module(self.device).set_rng_state(state["random"]["device"], self.device)
        self.epoch, self.history = state["epoch"], state["history"]


def load_checkpoint(path):
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT or "config" not in state:
        raise CheckpointError(f"{path}: not a train.py checkpoint of this version "
                              "(a weights.pt cannot be resumed)")
    return state


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


def resume_hint(argv, epoch, checkpoint):
    """What to tell a user whose run stopped after EPOCH complete epochs."""
    if epoch == 0:
        return "No epoch was completed, so there is no checkpoint to resume from."
    return (f"The last complete checkpoint is epoch {epoch}: {checkpoint}. Resume with:\n"
            f"  {resume_command(argv, checkpoint)}")


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


def device_available(name):
    return {"cpu": True, "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available()}[name]


def pick_device(name="auto"):
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if device_available(n))
    return torch.device(name)


def make_deterministic():
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read at cuBLAS's first call
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


def sizes_for(device, batch_size=None, test_batch_size=None):
    """The given batch sizes, or the device's defaults for those left as None."""
    return {"batch_size": batch_size or (128 if device.type == "cuda" else 64),  # the reference's choice
            # On the CPU, test batches of 250 measured faster than 1000 or 10,000.
            "test_batch_size": test_batch_size or (250 if device.type == "cpu" else 1000)}


def cpu_name():
    """The processor's model name (Linux: /proc/cpuinfo), else platform's, else 'unknown'."""
    try:
        names = re.findall(r"^model name\s*: (.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        names = []
    return names[0].strip() if names else platform.processor() or platform.machine() or "unknown"


if __name__ == "__main__":
    main()
