"""README.md's headline and results table, written from the committed results/*/seeds.json.

    python bench/readme.py           # rewrite them in README.md
    python bench/readme.py --check   # exit 1 if README.md says something else

The headline is README's first line; the table sits between the lines
`<!-- results table: python bench/readme.py -->` and `<!-- end -->`. Each row is one
table folder's seeds.json: the command (train.py's recorded flags, --threads included), the
parameters, the seeds, the final test accuracy's mean ± sd and min, and how many seeds
reach 99.40% at the last epoch and in each of the last three. The first folder is the
headline's.
"""

import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from utils import OneLineErrorParser, atomic_write_bytes  # noqa: E402 (the project is one folder up)

TABLES = ["seeds-bs64", "seeds-bs128", "reference", "fast", "frontier/w0.9", "tiny"]
START, END = "<!-- results table: python bench/readme.py -->", "<!-- end -->"
COLUMNS = ["command", "parameters", "seeds", "mean ± sd", "min", "at 99.40%: last epoch",
           "in each of the last 3"]
HEADER = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]


def command(flags):
    """train.py's recorded flags as a user types them, --threads included: threads change the result."""
    return " ".join(["python train.py", *flags])


def seed_range(seeds):
    """[1, 2, 3] -> '1-3'; seeds that are not one run of numbers -> '1, 3, 5'."""
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 1:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def bold(text, on):
    return f"**{text}**" if on else text


def rows(tables):
    """The table's lines, one per seeds.json: the first row's mean (the headline's) and the
    fewest parameters in bold."""
    fewest = min(table["config"]["parameters"] for table in tables)
    lines = []
    for i, table in enumerate(tables):
        s, parameters = table["summary"], table["config"]["parameters"]
        cells = [f"`{command(table['train_flags'])}`", bold(f"{parameters:,}", parameters == fewest),
                 seed_range(run["seed"] for run in table["runs"]),
                 bold(f"{s['mean']:.2f} ± {s['sd']:.2f}%", i == 0), f"{s['min']:.2f}%",
                 f"{s['at_least_99_40']} of {s['n']}", f"{s['at_least_99_40_in_last_3']} of {s['n']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return ["", *HEADER, *lines, ""]  # blank lines keep the markers out of the table


def headline(table):
    s, config = table["summary"], table["config"]
    return (f"# MNIST in {config['parameters']:,} parameters: {s['mean']:.2f}% over {s['n']} seeds "
            f"in {config['epochs']} epochs")


def expected_readme(text, tables):
    """TEXT (README.md) with its headline and results table as the data says."""
    lines = text.split("\n")
    if START not in lines or END not in lines[lines.index(START):]:
        sys.exit(f"readme.py: error: README.md has no {START} ... {END} block")
    start = lines.index(START)
    end = lines.index(END, start)
    return "\n".join([headline(tables[0]), *lines[1:start + 1], *rows(tables), *lines[end:]])


def main(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if README.md differs")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--results", type=Path, default=ROOT / "results")
    args = p.parse_args(argv)
    try:
        tables = [json.loads((args.results / name / "seeds.json").read_text()) for name in TABLES]
        text = args.readme.read_text()
    except (OSError, ValueError) as error:
        sys.exit(f"readme.py: error: {error}")
    expected = expected_readme(text, tables)
    if expected == text:
        print(f"{args.readme.name} agrees with {args.results.name}/*/seeds.json")
        return 0
    if not args.check:
        atomic_write_bytes(args.readme, expected.encode())
        print(f"Wrote {args.readme.name}'s headline and results table")
        return 0
    diff = difflib.unified_diff(text.split("\n"), expected.split("\n"), "README.md", "data", lineterm="")
    print("\n".join(diff))
    print(f"readme.py: {args.readme.name} differs from {args.results.name}/*/seeds.json; "
          "run python bench/readme.py", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
