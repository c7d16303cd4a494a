"""One CSV row per screening run, from the runs' history.json files: the flags that make the
run (as the train.py command that repeats it), its seed, device and CPU, and its figures.

    python bench/screening_table.py runs/screen results/screening/round-4.csv

FOLDER holds <candidate>/seed<N>/history.json, and robustness.json where the run's weights
were scored (python robustness.py --split val --weights W --output ...). A flag that the
code has since dropped is left out where it was off (train.ABSENT_MEANS), else written as it
was given then (the round's commit has it).
"""

import csv
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train import ABSENT_MEANS, deciding_settings  # noqa: E402
from utils import atomic_write_bytes  # noqa: E402 (the project's modules are one folder up)

# Settings that decide a run but are no flag: train.py computed them from its flags.
COMPUTED = {"parameters", "teacher_sha256"}
COLUMNS = ["candidate", "seed", "device", "cpu", "torch", "final_val_acc", "last_3_min", "best_val_acc",
           "best_epoch", "seconds", "parameters", "robust_fonts", "robust_overall", "command"]


def command(config):
    """The train.py command that repeats the run: every setting that decides it (train.py's
    deciding_settings), as a flag."""
    words = ["python", "train.py"]
    for key, value in deciding_settings(config).items():
        if key in COMPUTED or value is None or (key in ABSENT_MEANS and value == ABSENT_MEANS[key]):
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            words.append(flag)
        elif value is False:
            words.append("--no-" + flag[2:] if key == "nesterov" else "")
        elif isinstance(value, list):  # --channels
            words += [flag, ",".join(map(str, value))]
        else:
            words += [flag, str(value)]
    return " ".join(word for word in words if word)


def row(candidate, history, robustness=None):
    """ROBUSTNESS: the run's robustness.json (python robustness.py --split val ...), if scored."""
    config, curve = history["config"], [epoch["val_acc"] for epoch in history["epochs"]]
    best = max(range(len(curve)), key=lambda i: curve[i])
    scores = {k: round(v, 2) for k, v in robustness["scores"].items() if v is not None} if robustness else {}
    return {"candidate": candidate, "seed": config["seed"], "device": config.get("device"),
            "cpu": config.get("cpu", ""), "torch": config.get("torch", ""), "final_val_acc": curve[-1],
            "last_3_min": min(curve[-3:]), "best_val_acc": curve[best], "best_epoch": best + 1,
            "seconds": round(sum(epoch["seconds"] for epoch in history["epochs"])),
            "parameters": config.get("parameters", ""), "robust_fonts": scores.get("fonts", ""),
            "robust_overall": scores.get("overall", ""), "command": command(config)}


def table(folder):
    rows = []
    for path in sorted(Path(folder).glob("*/seed*/history.json")):
        scored = path.with_name("robustness.json")
        robustness = json.loads(scored.read_text()) if scored.exists() else None
        rows.append(row(path.parent.parent.name, json.loads(path.read_text()), robustness))
    return sorted(rows, key=lambda r: (r["candidate"], r["seed"]))


def main(folder, out):
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table(folder))
    atomic_write_bytes(out, text.getvalue().encode())
    print(f"Wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/screening_table.py FOLDER OUT.csv")
    main(*sys.argv[1:])
