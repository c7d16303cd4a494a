"""Run seeds of a committed table again from their recorded flags and compare the weights.

    python bench/reproduce.py results/previous-default-bs64 --seeds 1,2

Reads TABLE/seeds.json (its train_flags, each seed's weights SHA-256 and CPU), trains the
seeds again with `python seeds.py` into runs/reproduce/<table>/, and prints, per seed,
whether the new weights are byte for byte the recorded ones. A run repeats bit for bit
only on the kind of CPU that made it, so a seed recorded on another CPU is reported as such.
Exits 1 if a seed made on this kind of CPU differs.
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import seeds  # noqa: E402 (the project's modules are one folder up)
from train import cpu_name  # noqa: E402
from utils import OneLineErrorParser, bounded  # noqa: E402


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("table", help="a folder with seeds.json")
    p.add_argument("--seeds", type=seeds.seed_list, required=True)
    p.add_argument("--jobs", type=bounded(int, 1), default=1)
    args = p.parse_args(argv)
    try:
        recorded = json.loads((Path(args.table) / "seeds.json").read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"reproduce.py: error: {error}")
    runs = {run["seed"]: run for run in recorded["runs"]}
    out = Path("runs") / "reproduce" / Path(args.table).name
    seeds.main(["--seeds", ",".join(map(str, args.seeds)), "--jobs", str(args.jobs), "--out-dir", str(out),
                *recorded["train_flags"]])
    differing = 0
    for seed in args.seeds:
        expected, got = runs[seed]["weights_sha256"], seeds.sha256_of(out / f"seed{seed}" / "weights.pt")
        same_cpu = cpu_name() in (runs[seed]["cpu"] or "") and \
            runs[seed].get("cpu_capability") in (None, torch.backends.cpu.get_cpu_capability())
        if expected is None:
            verdict = "no recorded SHA-256 to compare with"
        else:
            verdict = "byte for byte the same" if got == expected else "DIFFERENT"
        print(f"seed {seed}: {verdict} (now {got}); recorded on {runs[seed]['cpu']}, now on {cpu_name()}")
        differing += expected is not None and got != expected and same_cpu
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
