"""Small command-line and device pieces that the commands share."""

import argparse
import os
import platform

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
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"
