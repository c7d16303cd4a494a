"""The plots: a run's training curves (output.png), its misclassified digits, and a
many-seed summary (seeds.png)."""

import matplotlib

matplotlib.use("Agg")  # write PNGs with no display (servers, CI, Colab)
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from files import atomic_write  # noqa: E402

TARGET_ACCURACY = 99.40
LAST_EPOCHS = 3  # "99.4% held over the last epochs" is judged on this many


def held_target(accuracies):
    """Whether each of the last LAST_EPOCHS accuracies is at least TARGET_ACCURACY."""
    return len(accuracies) >= LAST_EPOCHS and min(accuracies[-LAST_EPOCHS:]) >= TARGET_ACCURACY


def save_figure(fig, path):
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"))
    plt.close(fig)


def plot_history(history, split, path):
    """The four training curves, one panel each, against the epoch number; SPLIT is
    "test" or "val", the set evaluated after each epoch."""
    name = "Test" if split == "test" else "Validation"
    epochs = [row["epoch"] for row in history]
    panels = [
        ("train_loss", "Training loss", "loss"),
        ("train_acc", "Training accuracy", "accuracy (%)"),
        (f"{split}_loss", f"{name} loss", "loss"),
        (f"{split}_acc", f"{name} accuracy", "accuracy (%)"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), layout="constrained")
    accuracies = [row[f"{split}_acc"] for row in history]
    held = "held" if held_target(accuracies) else "not held"
    fig.suptitle(f"Final {name.lower()} accuracy {accuracies[-1]:.2f}% (best {max(accuracies):.2f}%); "
                 f"{TARGET_ACCURACY:.2f}% {held} in each of the last {LAST_EPOCHS} epochs "
                 f"({', '.join(f'{a:.2f}' for a in accuracies[-LAST_EPOCHS:])})")
    axes[1, 1].axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1, label=f"{TARGET_ACCURACY:.2f}%")
    axes[1, 1].legend(loc="lower right")
    for ax, (key, title, ylabel) in zip(axes.flat, panels):
        ax.plot(epochs, [row[key] for row in history], marker="o")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    save_figure(fig, path)


def plot_misclassified(images, targets, predictions, total, path, columns=5):
    """A grid of digits the model got wrong, titled 'true 7 / pred 2'; TOTAL is how many
    it got wrong in all."""
    count = len(images)
    rows = max(1, -(-count // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2.3 * rows), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(images[i].squeeze(), cmap="gray")
            ax.set_title(f"true {int(targets[i])} / pred {int(predictions[i])}", fontsize=10)
    fig.suptitle(f"{count} of the {total} misclassified digits")
    save_figure(fig, path)


def plot_seeds(curves, split, path):
    """Left: every seed's accuracy curve and their mean. Right: each seed's final accuracy
    (bar) and its lowest of the last LAST_EPOCHS (dot), against the 99.40% target; a bar is
    green where all of the last LAST_EPOCHS reached it. CURVES maps seed -> per-epoch accuracies."""
    name = "test" if split == "test" else "validation"
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    for accuracies in curves.values():
        left.plot(range(1, len(accuracies) + 1), accuracies, color="tab:blue", alpha=0.35, lw=1)
    if len({len(a) for a in curves.values()}) == 1:
        mean = [sum(column) / len(column) for column in zip(*curves.values())]
        left.plot(range(1, len(mean) + 1), mean, color="black", lw=2, label="mean")
        left.legend(loc="lower right")
    left.axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1)
    left.set_ylim(max(98.0, min(min(a) for a in curves.values())), 100)  # the last epochs matter
    left.set(title=f"{name.capitalize()} accuracy per epoch, {len(curves)} seed(s)",
             xlabel="epoch", ylabel="accuracy (%)")
    left.grid(alpha=0.3)
    labels, finals = [str(s) for s in curves], [a[-1] for a in curves.values()]
    lows = [min(a[-LAST_EPOCHS:]) for a in curves.values()]
    colors = ["tab:green" if held_target(a) else "tab:orange" for a in curves.values()]
    right.bar(labels, finals, color=colors)
    bar_colors = [matplotlib.patches.Patch(color=color, label=f"final epoch; last {LAST_EPOCHS} {what}")
                  for color, what in (("tab:green", "held"), ("tab:orange", "not held"))]
    right.plot(labels, lows, "o", color="black", label=f"lowest of the last {LAST_EPOCHS}")
    right.axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1, label="99.40%")
    right.set_ylim(min(*lows, TARGET_ACCURACY) - 0.1, max(*finals, TARGET_ACCURACY) + 0.1)
    at_end, held = sum(f >= TARGET_ACCURACY for f in finals), colors.count("tab:green")
    right.set(title=f"Per seed: {at_end} of {len(finals)} at 99.40% at the end, {held} in each of the last "
                    f"{LAST_EPOCHS}", xlabel="seed", ylabel=f"{name} accuracy (%)")
    right.legend(handles=bar_colors + right.get_legend_handles_labels()[0], loc="upper center",
                 bbox_to_anchor=(0.5, -0.12), ncol=2)
    right.grid(alpha=0.3, axis="y")
    save_figure(fig, path)
