"""What the handwriting augmentations cost a CPU epoch: train.py's default against the same with
every augmentation of data.Augmentation on, one-epoch runs taking turns, side by side in one run.

    python bench/augment_cost.py --rounds 3 > results/bench/augment-cost.txt

Each run's epoch time is the `seconds` of its history.json (training and evaluation, not the
start); the figure is the ratio of the two medians.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils import OneLineErrorParser, bounded  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# Every augmentation at the top of the ranges the study searches (results/handwriting), pen included.
ALL_ON = ["--shear", "30", "--aspect", "0.4", "--elastic", "3", "--stroke", "1", "--noise", "0.5",
          "--pen", "0.5"]


def epoch_seconds(flags, args, folder):
    command = [sys.executable, str(ROOT / "train.py"), "--epochs", "1", "--threads", str(args.threads),
               "--data-dir", args.data_dir, "--out-dir", str(folder), "--overwrite", *flags]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"augment_cost.py: train.py failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads((folder / "history.json").read_text())["epochs"][0]["seconds"]


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=bounded(int, 1), default=3, help="runs of each, taking turns")
    p.add_argument("--threads", type=bounded(int, 1), default=2)
    p.add_argument("--data-dir", default="data")
    args = p.parse_args(argv)
    times = {"default": [], "all augmentations": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for (name, seconds), flags in zip(times.items(), ([], ALL_ON)):
                seconds.append(epoch_seconds(flags, args, Path(tmp) / "run"))
                print(f"{name}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    medians = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"One epoch, --threads {args.threads}, {args.rounds} runs each, taking turns:")
    for name, seconds in times.items():
        print(f"  {name:18} median {medians[name]:.1f} s  ({', '.join(f'{s:.1f}' for s in seconds)})")
    print(f"  ratio {medians['all augmentations'] / medians['default']:.3f}   flags: {' '.join(ALL_ON)}")


if __name__ == "__main__":
    main()
