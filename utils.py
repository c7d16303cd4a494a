"""Small pieces the commands share: atomic file writes, errors and flags on one line, and
the plots (a run's training curves, its misclassified digits, a many-seed summary).

Importing it costs nothing beyond the standard library: matplotlib is imported by the
first plot, so that using a model (predict.py) does not pay for it.
"""

import argparse
import json
import math
import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call write(file) on a temp file beside PATH, then rename it over PATH.

    Rename within a folder is atomic on POSIX and Windows, so a reader never
    sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)  # the only way to read it is to set it: set it back at once
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give it normal rights
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_bytes(path, content):
    atomic_write(path, lambda f: f.write(content))


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def one_line(error, limit=200):
    """An error's message on one line of at most LIMIT characters: some libraries raise
    multi-line messages."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one line on stderr (no usage block) and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help shows each flag's default, except where it is None (the help says what happens)."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def output_file(text):
    """An argparse type: a file to write, refused at once if it names a folder or lies under a file
    (missing folders are made when it is written)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    above = next(parent for parent in path.absolute().parents if parent.exists())
    if not above.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {above} is a file, not a folder")
    return text


def bounded(kind, low, high=float("inf"), low_open=False):
    """An argparse type: KIND within [low, high] (or (low, high] when low_open); never NaN or infinite."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a valid {kind.__name__}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not a finite number")
        if not (low < value <= high if low_open else low <= value <= high):
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}{low}, {high}]")
        return value

    return parse


def pyplot():
    """matplotlib.pyplot, imported on first use, drawing PNGs with no display (servers, CI, Colab)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


TARGET_ACCURACY = 99.40
LAST_EPOCHS = 3  # "99.4% held over the last epochs" is judged on this many


def lowest_of_last(epochs, key="val_acc"):
    """The lowest KEY over the last LAST_EPOCHS rows of EPOCHS (history.json's): how recipes are judged."""
    return min(row[key] for row in epochs[-LAST_EPOCHS:])


def held_target(accuracies):
    """Whether each of the last LAST_EPOCHS accuracies is at least TARGET_ACCURACY."""
    return len(accuracies) >= LAST_EPOCHS and min(accuracies[-LAST_EPOCHS:]) >= TARGET_ACCURACY


def save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    pyplot().close(fig)


def plot_history(history, split, path):
    """The four training curves, one panel each, against the epoch number; SPLIT is
    "test" or "val", the set evaluated after each epoch."""
    name, accuracies = "Test" if split == "test" else "Validation", [row[f"{split}_acc"] for row in history]
    fig, axes = pyplot().subplots(2, 2, figsize=(12, 8), layout="constrained")
    fig.suptitle(f"Final {name.lower()} accuracy {accuracies[-1]:.2f}% (best {max(accuracies):.2f}%); "
                 f"{TARGET_ACCURACY:.2f}% {'held' if held_target(accuracies) else 'not held'} in each of the "
                 f"last {LAST_EPOCHS} epochs ({', '.join(f'{a:.2f}' for a in accuracies[-LAST_EPOCHS:])})")
    # the target, drawn first so that it lies under the curve
    axes[1, 1].axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1, label=f"{TARGET_ACCURACY:.2f}%")
    axes[1, 1].legend(loc="lower right")
    for ax, key, title in zip(axes.flat, ("train_loss", "train_acc", f"{split}_loss", f"{split}_acc"),
                              ("Training loss", "Training accuracy", f"{name} loss", f"{name} accuracy")):
        ax.plot([row["epoch"] for row in history], [row[key] for row in history], marker="o")
        ax.set(title=title, xlabel="epoch", ylabel="loss" if key.endswith("loss") else "accuracy (%)")
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_misclassified(images, targets, predictions, total, path, columns=5):
    """A grid of digits the model got wrong, titled 'true 7 / pred 2'; TOTAL is how many
    it got wrong in all."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = pyplot().subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False,
                                  layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, target, prediction in zip(axes.flat, images, targets, predictions):
        ax.imshow(image.squeeze(), cmap="gray")
        ax.set_title(f"true {int(target)} / pred {int(prediction)}", fontsize=10)
    fig.suptitle(f"{len(images)} of the {total} misclassified digits")
    save_figure(fig, path)


def plot_seeds(curves, split, path):
    """Left: every seed's accuracy curve and their mean. Right: each seed's final accuracy
    (bar) and its lowest of the last LAST_EPOCHS (dot), against the 99.40% target; a bar is
    green where all of the last LAST_EPOCHS reached it. CURVES maps seed -> per-epoch accuracies."""
    from matplotlib.patches import Patch

    name, runs = "test" if split == "test" else "validation", list(curves.values())
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(13, 5), layout="constrained")
    for accuracies in runs:
        left.plot(range(1, len(accuracies) + 1), accuracies, color="tab:blue", alpha=0.35, lw=1)
    if len({len(a) for a in runs}) == 1:
        mean = [sum(column) / len(column) for column in zip(*runs)]
        left.plot(range(1, len(mean) + 1), mean, color="black", lw=2, label="mean")
        left.legend(loc="lower right")
    left.axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1)
    left.set(title=f"{name.capitalize()} accuracy per epoch, {len(curves)} seed(s)", xlabel="epoch",
             ylabel="accuracy (%)", ylim=(max(98.0, min(min(a) for a in runs)), 100))  # 98-100: the end
    left.grid(alpha=0.3)
    seeds, finals, lows = list(map(str, curves)), [a[-1] for a in runs], [min(a[-LAST_EPOCHS:]) for a in runs]
    colors = ["tab:green" if held_target(a) else "tab:orange" for a in runs]
    right.bar(seeds, finals, color=colors)
    right.plot(seeds, lows, "o", color="black", label=f"lowest of the last {LAST_EPOCHS}")
    right.axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1, label="99.40%")
    at_end, held = sum(f >= TARGET_ACCURACY for f in finals), colors.count("tab:green")
    right.set(title=f"Per seed: {at_end} of {len(finals)} at 99.40% at the end, {held} in each of the last "
                    f"{LAST_EPOCHS}", xlabel="seed", ylabel=f"{name} accuracy (%)",
              ylim=(min(*lows, TARGET_ACCURACY) - 0.1, max(*finals, TARGET_ACCURACY) + 0.1))
    bar_colors = [Patch(color=color, label=f"final epoch; last {LAST_EPOCHS} {what}")
                  for color, what in (("tab:green", "held"), ("tab:orange", "not held"))]
    right.legend(handles=bar_colors + right.get_legend_handles_labels()[0], loc="upper center",
                 bbox_to_anchor=(0.5, -0.12), ncol=2)
    right.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
