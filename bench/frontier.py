"""The accuracy-parameters frontier: parameters (log axis) against final test accuracy, one
dot per seed, each size's mean +/- sd, the 99.4% line, and public single runs drawn apart.

    python bench/frontier.py results/frontier/w0.7 results/seeds-bs64 ... --seeds 1-5 \
        --out-dir results/frontier

Each FOLDER is a `python seeds.py` output (seeds.json); --seeds keeps those seeds of each
(every folder must have them). Writes OUT/frontier.png and OUT/frontier.md (one row per
size) and prints the table.
"""

import json
import statistics
import sys
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seeds import seed_list  # noqa: E402
from utils import TARGET_ACCURACY, OneLineErrorParser, atomic_write_bytes, save_figure  # noqa: E402 (the project is one folder up)

# Public MNIST networks under 8K parameters with a logged test accuracy, each a single run
# (no seed spread published): (parameters, accuracy %, label, the side its label goes).
PUBLIC_SINGLE_RUNS = [(3762, 99.52, "3,762: one run (a second run of it peaked at 99.33)", "right"),
                      (4838, 99.41, "4,838: one run", "left"), (5760, 99.42, "5,760: one run", "left")]


def size_row(folder, seeds=None):
    try:
        result = json.loads((Path(folder) / "seeds.json").read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"frontier.py: error: {error}")
    runs = [run for run in result["runs"] if seeds is None or run["seed"] in seeds]
    if seeds is not None and len(runs) != len(seeds):
        sys.exit(f"frontier.py: error: {folder} does not have every seed of {seeds}")
    finals = [run[f"final_{result['split']}_acc"] for run in runs]
    config = result["config"]
    return {"folder": str(folder), "model": config.get("model", "reference"),
            "width": config.get("width", 1.0), "channels": config.get("channels"),
            "parameters": config["parameters"], "seeds": [run["seed"] for run in runs],
            "finals": finals, "mean": statistics.mean(finals),
            "sd": statistics.stdev(finals) if len(finals) > 1 else 0.0, "min": min(finals),
            "at_least_99_40": sum(f >= TARGET_ACCURACY for f in finals)}


def plot(rows, path):
    fig, ax = plt.subplots(figsize=(10, 6), layout="constrained")
    dots, means = dict(color="tab:blue", alpha=0.45, ms=5), dict(fmt="s", color="black", capsize=5)
    searched = dict(means, color="tab:green")  # channel counts found by search.py
    for row in rows:
        ax.plot([row["parameters"]] * len(row["finals"]), row["finals"], "o", **dots)
        ax.errorbar(row["parameters"], row["mean"], yerr=row["sd"], ms=7,
                    **(searched if row["channels"] else means))
    ax.plot([], [], "o", label="this project: one seed", **dots)
    ax.errorbar([], [], yerr=[], label="this project: mean ± sd over seeds (width scaled)", **means)
    if any(row["channels"] for row in rows):
        ax.errorbar([], [], yerr=[], label="channel counts from search.py (Intel Xeon)", **searched)
    for parameters, accuracy, label, side in PUBLIC_SINGLE_RUNS:
        ax.plot(parameters, accuracy, "*", color="tab:orange", ms=14, mec="black")
        ax.annotate(f"public, {label}", (parameters, accuracy), xytext=(8 if side == "right" else -8, 8),
                    textcoords="offset points", ha="left" if side == "right" else "right", fontsize=8,
                    color="tab:orange")
    ax.plot([], [], "*", color="tab:orange", ms=12, mec="black", label="public single runs (not ours)")
    ax.axhline(TARGET_ACCURACY, color="tab:red", ls="--", lw=1, label="99.40%")
    ax.set_xscale("log")
    ticks = [2000, 3000, 4000, 5000, 6000, 8000, 10000, 12000]
    ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel="parameters (log scale)", ylabel="final test accuracy (%)",
           title="How few parameters reach 99.4%? Final test accuracy over seeds")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right")
    save_figure(fig, path)


def table(rows):
    lines = ["| network | parameters | seeds | mean ± sd | min | at 99.40% or more |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        name = ("tiny" if row["model"] == "tiny" else
                f"reference, channels {','.join(map(str, row['channels']))}" if row["channels"] else
                f"reference, width {row['width']:g}")
        seeds = f"{min(row['seeds'])}-{max(row['seeds'])}"
        lines.append(f"| {name} | {row['parameters']:,} | {seeds} | {row['mean']:.2f} ± {row['sd']:.2f}% | "
                     f"{row['min']:.2f}% | {row['at_least_99_40']} of {len(row['finals'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="+")
    p.add_argument("--seeds", type=seed_list, help="e.g. 1-5; default: every seed of each folder")
    p.add_argument("--out-dir", required=True, help="where frontier.png and frontier.md go")
    args = p.parse_args(argv)
    rows = sorted((size_row(folder, args.seeds) for folder in args.folders), key=lambda r: r["parameters"])
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    plot(rows, Path(args.out_dir) / "frontier.png")
    atomic_write_bytes(Path(args.out_dir) / "frontier.md", table(rows).encode())
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
