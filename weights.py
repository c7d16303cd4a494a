"""Weights files: what train.py saves and what predict.py, export.py and the page use.

weights.pt holds the network's architecture name ("reference" or "tiny", see
model.ARCHITECTURES), its shape where that is not the default (the width of train.py
--width, or the channel counts of --channels: model.shape_options), and its
state_dict of CPU tensors: it loads anywhere, into the right class. A bare
state_dict (the format before there were two networks) loads as the reference
network. Loading never runs code from the file (weights_only=True), and every
failure is one WeightsError line that names the file and keeps the cause.
Imports only torch and the standard library.
"""

import pickle
import warnings
from pathlib import Path

import torch

from files import atomic_write, one_line
from model import ARCHITECTURES, shape_options

COMMITTED_WEIGHTS = Path(__file__).resolve().parent / "weights.pt"  # the shipped model, in git


SHAPE_KEYS = ("width", "channels")  # what shape_options may record


class WeightsError(Exception):
    """A weights or checkpoint file that cannot be used; the message names the file."""


def safe_load(path, device="cpu"):
    """torch.load with weights_only=True: a checkpoint is data, and loading one must not
    run code. Any failure becomes one WeightsError line that names the file and the cause."""
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning is noise here
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, not a file") from None
    except pickle.UnpicklingError as error:
        raise WeightsError(f"{path}: not a PyTorch weights file, or one that would run code "
                           f"to load (refused: weights_only=True): {one_line(error, 160)}") from None
    except (EOFError, RuntimeError, ValueError, OSError) as error:  # what torch.load raises for a bad file
        reason = f"{type(error).__name__}: {one_line(error, 160)}"
        raise WeightsError(f"{path}: cannot be loaded ({reason})") from None


def read_weights(path, device="cpu"):
    """(architecture name, its keyword arguments, state_dict) from a weights file that train.py wrote."""
    weights = safe_load(path, device)
    if isinstance(weights, dict) and "architecture" in weights and "state_dict" in weights:
        options = {key: weights[key] for key in SHAPE_KEYS if key in weights}
        return weights["architecture"], options, weights["state_dict"]
    return "reference", {}, weights  # a bare state_dict, as train.py wrote before TinyNet


def load_model(path, device="cpu"):
    """The network named in the weights file at PATH, in eval mode, with its weights."""
    name, options, state = read_weights(path, device)
    if name not in ARCHITECTURES:
        raise WeightsError(f"{path}: weights of an unknown network {name!r} "
                           f"(known: {', '.join(ARCHITECTURES)})")
    try:
        model = ARCHITECTURES[name](**options).to(device)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError, AttributeError) as error:  # another network's tensors
        shape = ", ".join(f"{key} {value}" for key, value in options.items())
        described = f"{name} network" + (f" of {shape}" if shape else "")
        raise WeightsError(f"{path}: not weights for the {described} ({one_line(error, 160)})") from None
    return model.eval()


def save_weights(path, model):
    """MODEL's architecture name and state_dict as CPU tensors, so that a CUDA run's file
    loads anywhere."""
    weights = model.state_dict()  # an OrderedDict with metadata, as torch.save expects
    for key in weights:
        weights[key] = weights[key].cpu()
    # The default shape records nothing, so the reference network's files stay as they were.
    file = {"architecture": model.architecture, "state_dict": weights, **shape_options(model)}
    atomic_write(path, lambda f: torch.save(file, f))
