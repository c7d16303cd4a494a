"""Weights files and per-epoch training checkpoints, loaded safely and written atomically.

weights.pt holds the network's architecture name ("reference" or "tiny", see
model.ARCHITECTURES) and its state_dict of CPU tensors: it loads anywhere, into
the right class. A bare state_dict (the format before there were two networks)
loads as the reference network.
checkpoint.pt is a TrainingState: everything the next epoch needs. It holds the
model, optimizer, scheduler and (with --ema) averaged-model states, the epoch,
the history so far, the settings that decide the result, and every random
state the next epoch draws from: torch's CPU generator (dropout on the CPU),
the loader's own CPU generator (order and augmentation, the same on every
device) and the generator of the device the run used (dropout on CUDA or MPS).
Restoring all of them is what makes a resumed run end bit for bit where an
uninterrupted one does. Python's `random` and NumPy are not used by training.
"""

import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from files import atomic_write
from model import ARCHITECTURES

COMMITTED_WEIGHTS = Path(__file__).resolve().parent / "weights.pt"  # the reference run's, in git
FORMAT = "mnist-7544/train-checkpoint/3"
# Settings whose change would make the resumed run a different run.
RESULT_KEYS = ("model", "epochs", "loader", "batch_size", "dropout", "rotation", "translate", "scale",
               "interpolation", "ema", "holdout", "seed", "threads", "weight_decay", "nesterov",
               "max_lr", "pct_start", "div_factor", "final_div_factor", "anneal_strategy",
               "base_momentum", "max_momentum", "parameters")


class CheckpointError(Exception):
    """A weights or checkpoint file that cannot be used; the message names the file."""


def safe_load(path, device="cpu"):
    """torch.load with weights_only=True: a checkpoint is data, and loading one must not
    run code. Any failure becomes one CheckpointError line that names the file."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is noise here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a directory, not a file") from None
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path}: not a PyTorch weights file, or one that would run code "
                              "to load (refused: weights_only=True)") from None
    except Exception:  # torch.load raises many kinds (EOFError, RuntimeError...) for a bad file
        raise CheckpointError(f"{path}: empty, truncated or corrupted; not a PyTorch file") from None


def read_weights(path, device="cpu"):
    """(architecture name, state_dict) from a weights file that train.py wrote."""
    weights = safe_load(path, device)
    if isinstance(weights, dict) and "architecture" in weights and "state_dict" in weights:
        return weights["architecture"], weights["state_dict"]
    return "reference", weights  # a bare state_dict, as train.py wrote before TinyNet


def load_model(path, device="cpu"):
    """The network named in the weights file at PATH, in eval mode, with its weights."""
    name, state = read_weights(path, device)
    if name not in ARCHITECTURES:
        raise CheckpointError(f"{path}: weights of an unknown network {name!r} "
                              f"(known: {', '.join(ARCHITECTURES)})")
    model = ARCHITECTURES[name]().to(device)
    try:
        model.load_state_dict(state)
    except Exception as error:  # another network's tensors, or not a dict at all
        reason = " ".join(str(error).split())[:160]
        raise CheckpointError(f"{path}: not weights for the {name} network ({reason})") from None
    return model.eval()


def save_weights(path, model):
    """MODEL's architecture name and state_dict as CPU tensors, so that a CUDA run's file
    loads anywhere."""
    weights = model.state_dict()  # an OrderedDict with metadata, as torch.save expects
    for key in weights:
        weights[key] = weights[key].cpu()
    file = {"architecture": model.architecture, "state_dict": weights}
    atomic_write(path, lambda f: torch.save(file, f))


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
        state = {
            "format": FORMAT, "epoch": self.epoch, "history": self.history,
            "config": {key: config[key] for key in RESULT_KEYS},
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "random": {"torch": torch.get_rng_state(), "loader": self.generator.get_state(),
                       "device": device_rng_state(self.device), "device_type": self.device.type},
        }
        atomic_write(path, lambda f: torch.save(state, f))

    def restore(self, path, config):
        """Put the run back where the checkpoint at PATH left it."""
        state = load_checkpoint(path)
        changed = [f"{key} {state['config'].get(key)!r} (now {config[key]!r})"
                   for key in RESULT_KEYS if state["config"].get(key) != config[key]]
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
