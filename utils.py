"""Atomic file writes and the training plots (output.png, misclassified.png)."""

import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # write PNGs with no display (servers, CI, Colab)
import matplotlib.pyplot as plt  # noqa: E402


def atomic_write(path, write):
    """Call write(file) on a temp file beside PATH, then rename it over PATH.

    A crash, a full disk or a kill leaves either the old file or the new one,
    never half of one: rename within a folder is atomic on POSIX and Windows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give it normal rights
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, content):
    atomic_write(path, lambda f: f.write(content))


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def plot_history(history, path):
    """The seed's four training curves, one panel each, against the epoch number."""
    epochs = [row["epoch"] for row in history]
    panels = [
        ("train_loss", "Training loss", "loss"),
        ("train_acc", "Training accuracy", "accuracy (%)"),
        ("test_loss", "Test loss", "loss"),
        ("test_acc", "Test accuracy", "accuracy (%)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    best = max(history, key=lambda row: row["test_acc"])
    fig.suptitle(f"Final test accuracy {history[-1]['test_acc']:.2f}% "
                 f"(best {best['test_acc']:.2f}% at epoch {best['epoch']})")
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        ax.plot(epochs, [row[key] for row in history], marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_misclassified(images, targets, predictions, total, path, columns=5):
    """A grid of test digits the model got wrong, titled 'true 7 / pred 2'; TOTAL is
    how many it got wrong in all."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(images[i].squeeze(), cmap="gray")
            ax.set_title(f"true {int(targets[i])} / pred {int(predictions[i])}", fontsize=10)
    fig.suptitle(f"{count} of the {total} misclassified test digits")
    save_figure(fig, path)
