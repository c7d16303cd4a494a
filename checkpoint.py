"""Stopping and resuming a run: the per-epoch checkpoint.pt, signals, the resume command.

checkpoint.pt is a TrainingState: everything the next epoch needs. It holds the
model, optimizer, scheduler and (with --ema) averaged-model states, the epoch,
the history so far, the settings that decide the result (train.py says which),
and every random state the next epoch draws from: torch's CPU generator (dropout on the CPU),
the loader's own CPU generator (order and augmentation, the same on every
device) and the generator of the device the run used (dropout on CUDA or MPS).
Restoring all of them is what makes a resumed run end bit for bit where an
uninterrupted one does. Python's `random` and NumPy are not used by training.
Ctrl-C or SIGTERM stops a run between batches (StopOnSignal), and resume_command
says what to type to continue.
"""

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field

import torch

from files import atomic_write
from weights import WeightsError, safe_load

FORMAT = "mnist-7544/train-checkpoint/4"


class CheckpointError(WeightsError):
    """A checkpoint that cannot be resumed; the message names the file."""


def device_rng_state(device):
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    if device.type == "mps":
        return torch.mps.get_rng_state()
    return None


def set_device_rng_state(device, state):
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    elif device.type == "mps":
        torch.mps.set_rng_state(state)


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

    @property
    def evaluated_model(self):
        """The model whose weights are evaluated and saved: the average with --ema."""
        return self.model if self.ema is None else self.ema.module

    def save(self, path, config):
        """Everything the next epoch needs, and the run's CONFIG, which restore() compares."""
        state = {
            "format": FORMAT, "epoch": self.epoch, "history": self.history, "config": config,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "random": {"torch": torch.get_rng_state(), "loader": self.generator.get_state(),
                       "device": device_rng_state(self.device), "device_type": self.device.type},
        }
        atomic_write(path, lambda f: torch.save(state, f))

    def restore(self, path, config, changed_settings):
        """Put the run back where the checkpoint at PATH left it, if CHANGED_SETTINGS(its config,
        CONFIG) (train.changed_settings) finds no setting that decides the run changed."""
        state = load_checkpoint(path)
        saved = state.get("config", state.get("settings"))  # "settings": checkpoints of earlier versions
        changed = changed_settings(saved, config)
        if changed:
            raise CheckpointError(f"{path} was made with other settings: {'; '.join(changed)}; "
                                  "resume with the same flags as the original run")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["random"]["torch"])
        self.generator.set_state(state["random"]["loader"])
        if state["random"]["device_type"] == self.device.type != "cpu":  # else not bitwise, but runs
            set_device_rng_state(self.device, state["random"]["device"])
        self.epoch, self.history = state["epoch"], state["history"]


def load_checkpoint(path):
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
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
