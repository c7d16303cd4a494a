"""Small command-line pieces shared by train.py, predict.py, export.py, bench.py and seeds.py."""

import argparse

import torch


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where it is None (the help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


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


def device_available(name):
    return {"cpu": True, "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available()}[name]


def pick_device(name="auto"):
    if name == "auto":
        name = next(n for n in ("cuda", "mps", "cpu") if device_available(n))
    return torch.device(name)


def synchronize(device):
    """Wait until DEVICE has done all it was given (CUDA and MPS run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def first_line(error):
    """An error as one short line: some libraries raise multi-line messages."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."
