"""Run the training recipe over many seeds and summarize the results as a distribution.

    python seeds.py --seeds 1-10                          # the default recipe -> runs/seeds/default/
    python seeds.py --seeds 1-3 --holdout 10000 --dropout 0.01 --out-dir runs/screen-d01
    python seeds.py --seeds 1-5 --batch-size 128 --out-dir runs/seeds-bs128
    python seeds.py --seeds 1-20 --robustness             # also robustness.py on each seed's weights

Each seed is an ordinary `python train.py --seed N --threads T --out-dir OUT/seedN
[train.py flags]` run, with its own train.log, history.json, weights.pt and checkpoint.pt,
and wall.json: the whole process's wall time, start to exit, kept only for a run
that was not resumed (the fast recipe's time is measured this way). Every flag
that seeds.py does not know goes to train.py. Run again, a seed already finished
with the same settings (those that decide a run, as train.py defines them: a
--recipe counts by its values, --data-dir not at all) is skipped, and an
interrupted one resumes from its checkpoint. Ctrl-C stops every job after its
current batch and says how to continue. A failing seed is reported, the others
go on, and the exit code is 1; so too for a seed that --robustness cannot score,
whose one-line error seeds.json keeps (robustness_error).

Several processes, here or on machines that share the disk, may run their share of the
seeds into one OUT: a seed's run holds a lock (flock, on POSIX systems) on its
OUT/seedN/train.log while it trains, and a seed that another process trains is skipped.
OUT/seeds.json, OUT/seeds.png and the printed table summarize every seed finished in OUT
with these settings, not only those of --seeds, so the summary written last holds every
seed finished by then.
"""

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

import train
import utils
from utils import LAST_EPOCHS, TARGET_ACCURACY, OneLineErrorParser, atomic_write_json, bounded

if os.name == "posix":  # elsewhere (Windows) nothing is locked: each process trains every seed it is given
    import fcntl

TRAIN_PY = Path(__file__).resolve().parent / "train.py"


def seed_list(text):
    """'1-10', '3' or '1,4,7-9' -> a sorted list of distinct seeds."""
    seeds = set()
    for part in text.split(","):
        low, dash, high = part.partition("-")
        try:
            first, last = int(low), int(high if dash else low)  # "1-" is a typo, not seed 1
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a list of seeds like 1-10 or 1,3,5") from None
        if first < 0 or last < first:
            raise argparse.ArgumentTypeError(f"{part!r} is not a range of seeds >= 0")
        seeds.update(range(first, last + 1))
    return sorted(seeds)


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0], allow_abbrev=False,  # --seed is train.py's
                           epilog="Any other flag is passed to train.py (see python train.py --help).")
    p.add_argument("--seeds", type=seed_list, default="1-10", help="e.g. 1-10 or 1,3,5")
    # On this project's 2-core CPU, 2 jobs x 1 thread finished more seed-runs per hour
    # than 1 job x 2 threads (results/README.md).
    p.add_argument("--jobs", type=bounded(int, 1), default=2, help="seeds trained at once")
    p.add_argument("--threads", type=bounded(int, 1), default=None,
                   help="CPU threads per job; default: the cores divided among the jobs")
    p.add_argument("--out-dir", help="the seeds' folder, which processes may share; default: "
                                     "runs/seeds/NAME, NAME as train.py names a run's (default, fast, ...)")
    p.add_argument("--robustness", action="store_true",
                   help="also score each seed's weights with robustness.py on the split it was evaluated on "
                        "(about 90 s a seed on a 2-core CPU); kept in seedN/robustness.json")
    args, train_flags = p.parse_known_args(argv)
    refuse_own_flags(p, "seeds.py", train_flags, ("--seed", "--out-dir", "--resume", "--threads"))
    args.threads = args.threads or threads_per_job(args.jobs)
    args.train_flags = train_flags + ["--threads", str(args.threads)]
    # train.py's arguments, as every seed shares them; a bad train.py flag fails now, in one line
    args.train_args = train.parse_args(args.train_flags)
    named = Path(train.parse_args(train_flags).out_dir).parent.name  # without --threads, a machine's choice
    args.out_dir = args.out_dir or str(Path("runs", "seeds", named))
    return args


def refuse_own_flags(parser, command, train_flags, own):
    """Exit in one line if TRAIN_FLAGS hold one of OWN, which COMMAND (PARSER's) sets itself."""
    for name in own:
        if any(flag == name or flag.startswith(name + "=") for flag in train_flags):
            parser.error(f"{name} is set by {command} for each run; it cannot be passed to train.py")


def threads_per_job(jobs):
    """The default --threads: the machine's cores shared among JOBS."""
    return max(1, (os.cpu_count() or 1) // jobs)


def seed_folder(args, seed):
    return Path(args.out_dir) / f"seed{seed}"


def seed_flags(args, seed):
    return [*args.train_flags, "--seed", str(seed), "--out-dir", str(seed_folder(args, seed))]


def other_settings(args, seed, history):
    """The settings that decide a run (train.changed_settings) in which SEED's finished run,
    HISTORY, differs from the run these ARGS ask for."""
    expected = train.run_config(train.parse_args(seed_flags(args, seed)))
    return train.changed_settings(history["config"], expected)


def read_history(folder):
    """FOLDER's history.json, or None if there is none; one line and exit 1 if train.py
    cannot have written it (train.read_history)."""
    path = Path(folder) / "history.json"
    try:
        return train.read_history(path) if path.exists() else None
    except ValueError as error:
        sys.exit(f"seeds.py: error: {error}; move it away or use another --out-dir")


def read_json(path):
    return json.loads(path.read_text()) if path.exists() else None


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def lock(file, wait=False):
    """Lock the open FILE for this process and the children that inherit it, until all have
    closed it; False if another process holds it (unless WAIT: then wait). Such a lock ends
    with its processes, so a crash leaves none behind. Only POSIX systems have it."""
    try:
        if os.name == "posix":
            fcntl.flock(file, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


class Stopped(Exception):
    """SIGINT or SIGTERM stopped the runs, each after its batch and with its checkpoint kept."""


class Jobs:
    """The train.py runs of a seed table, up to --jobs at once. A run's claim on its seed is
    a lock on its train.log, which it holds open while it runs. SIGINT and SIGTERM stop them
    all after their batch (stop())."""

    def __init__(self, args):
        self.args, self.running, self.stopping = args, {}, False

    def start(self, seed):
        """Start SEED's run, from its checkpoint if it has one; False if another process
        trains it, or has finished it since this one looked."""
        folder = seed_folder(self.args, seed)
        folder.mkdir(parents=True, exist_ok=True)
        log = open(folder / "train.log", "a")  # noqa: SIM115 (closed in finished(), when the run ends)
        if not lock(log) or (folder / "history.json").exists():
            log.close()
            return False
        resume = ["--resume", str(folder / "checkpoint.pt")] if (folder / "checkpoint.pt").exists() else []
        (folder / "wall.json").unlink(missing_ok=True)
        process = subprocess.Popen([sys.executable, str(TRAIN_PY), *seed_flags(self.args, seed), *resume],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True,  # Ctrl-C reaches them through stop()
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.running[seed] = (process, log, time.perf_counter(), bool(resume))
        return True

    def stop(self, signum=None, frame=None):
        self.stopping = True
        for process, *_ in self.running.values():
            process.send_signal(signal.SIGINT)

    def finished(self, follow=None):
        """Wait until a run ends: (seed, exit code, seconds); its wall time goes to wall.json if
        it ran whole. Meanwhile FOLLOW(seed, folder) is called for each running seed, five
        times a second."""
        while True:
            for seed, (process, log, start, resumed) in list(self.running.items()):
                if process.poll() is not None:
                    log.close()
                    del self.running[seed]
                    seconds = time.perf_counter() - start
                    if process.returncode == 0 and not resumed:  # a whole run: its wall time means something
                        atomic_write_json(seed_folder(self.args, seed) / "wall.json", {"seconds": seconds})
                    return seed, process.returncode, seconds
                if follow:
                    follow(seed, seed_folder(self.args, seed))
            time.sleep(0.2)


def seeds_to_train(args):
    """(the seeds of --seeds not yet finished, those finished with other settings), each
    finished one said."""
    queue, refused = [], []
    for seed in args.seeds:
        history = read_history(seed_folder(args, seed))
        if history is None:
            queue.append(seed)
        elif changed := other_settings(args, seed, history):
            print(f"seed {seed}: {seed_folder(args, seed)} holds a finished run with other settings "
                  f"({'; '.join(changed)}); use another --out-dir")
            refused.append(seed)
    if done := len(args.seeds) - len(queue) - len(refused):
        print(f"{done} seed(s) already finished with these settings: skipped")
    return queue, refused


def run_seeds(args, follow=None):
    """Train every seed of --seeds not yet finished; returns the seeds that failed. Raises
    Stopped after SIGINT or SIGTERM. What FOLLOW (Jobs.finished) raises stops every run
    after its batch, checkpoint kept, and is raised on (search.py prunes a trial so)."""
    queue, failed = seeds_to_train(args)
    jobs = Jobs(args)
    previous = {s: signal.signal(s, jobs.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with tqdm(total=len(queue), desc="seeds", unit="run") as bar:
            while (queue and not jobs.stopping) or jobs.running:
                while queue and not jobs.stopping and len(jobs.running) < args.jobs:
                    seed = queue.pop(0)
                    if not jobs.start(seed):
                        bar.update(1)
                        bar.write(f"seed {seed}: another process trains it, or has finished it; skipped")
                if jobs.running:
                    seed, code, seconds = jobs.finished(follow)
                    bar.update(1)
                    bar.write(seed_report(args, seed, code, seconds))
                    if code != 0 and not jobs.stopping:
                        failed.append(seed)
    except BaseException:  # FOLLOW's exception, or an error here: no run goes on without us
        jobs.stop()
        while jobs.running:
            jobs.finished()
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if jobs.stopping:
        raise Stopped()
    return failed


def seed_report(args, seed, code, seconds):
    folder = seed_folder(args, seed)
    history = read_history(folder) if code == 0 else None
    if history is None:
        return f"seed {seed}: stopped or failed (exit code {code}); see {folder / 'train.log'}"
    split = history["config"]["eval_split"]
    return (f"seed {seed}: {history[f'final_{split}_acc']:.2f}% {split} accuracy "
            f"(best {history[f'best_{split}_acc']:.2f}% at epoch {history[f'best_{split}_acc_epoch']}), "
            f"{seconds:.0f} s")


def finished_seeds(args):
    """{seed: history} of every seed in --out-dir finished with these settings, by seed."""
    folders = Path(args.out_dir).glob("seed*")
    numbers = sorted(int(folder.name[4:]) for folder in folders if folder.name[4:].isdigit())
    histories = {seed: read_history(seed_folder(args, seed)) for seed in numbers}
    return {seed: history for seed, history in histories.items()
            if history is not None and not other_settings(args, seed, history)}


def read_robustness(folder, weights_sha256):
    """robustness.py's robustness.json of the seed's weights, if it scored these very weights."""
    scored = read_json(folder / "robustness.json")
    return scored if scored and weights_sha256 and scored.get("weights_sha256") == weights_sha256 else None


def score_robustness(args, seeds):
    """robustness.py on the weights of SEEDS not yet scored, on their evaluated split;
    returns {seed: robustness.py's error} for the seeds it could not score."""
    import robustness  # only here: it reads fonts and images that training does not need

    errors, flags = {}, args.train_args  # every seed's --data-dir and --holdout
    split = ["--split", "val", "--holdout", str(flags.holdout)] if flags.holdout else []
    for seed in seeds:
        folder = seed_folder(args, seed)
        weights_sha256 = sha256_of(folder / "weights.pt")
        if weights_sha256 and read_robustness(folder, weights_sha256) is None:
            try:
                robustness.main(["--weights", str(folder / "weights.pt"), "--data-dir", flags.data_dir,
                                 *split, "--output", str(folder / "robustness.json")])
            except SystemExit as failure:  # robustness.py's one-line error (or argparse's exit code)
                code = failure.code
                errors[seed] = code if isinstance(code, str) else f"robustness.py: exit code {code}"
                print(f"seed {seed}: {errors[seed]}", file=sys.stderr)
    return errors


def run_row(folder, seed, history, robustness_error):
    """One seed's line of seeds.json, from its history.json (and wall.json, weights.pt,
    robustness.json)."""
    split = history["config"]["eval_split"]
    curve = [row[f"{split}_acc"] for row in history["epochs"]]
    weights_sha256 = sha256_of(folder / "weights.pt")
    robust = read_robustness(folder, weights_sha256) or {}
    wall = read_json(folder / "wall.json")
    return {"seed": seed, f"final_{split}_acc": curve[-1], "last_3_min": min(curve[-LAST_EPOCHS:]),
            f"best_{split}_acc": history[f"best_{split}_acc"],
            "best_epoch": history[f"best_{split}_acc_epoch"],
            f"best_{split}_loss": history[f"best_{split}_loss"], "curve": curve,
            "seconds": round(sum(row["seconds"] for row in history["epochs"]), 1),
            "wall_seconds": wall and round(wall["seconds"], 1), "weights_sha256": weights_sha256,
            "robustness": robust.get("scores"), "fonts_sha256": robust.get("fonts_sha256"),
            "robustness_error": robustness_error,
            # bit for bit only on the same kind of CPU (older histories did not record it)
            "cpu": history["config"].get("cpu"), "cpu_capability": history["config"].get("cpu_capability")}


def summarize(args, histories, robustness_errors):
    """seeds.json's content from HISTORIES, {seed: history.json} of the seeds finished with
    these settings (not empty), and score_robustness's {seed: error}."""
    runs = [run_row(seed_folder(args, seed), seed, history, robustness_errors.get(seed))
            for seed, history in histories.items()]
    first = next(iter(histories.values()))
    split = first["config"]["eval_split"]
    walls = [run["wall_seconds"] for run in runs if run["wall_seconds"] is not None]
    finals = [run[f"final_{split}_acc"] for run in runs]
    shared = {k: v for k, v in train.deciding_settings(first["config"]).items() if k != "seed"}
    seed, why_none = robust_seed(runs)
    return {"config": shared, "train_flags": args.train_flags, "split": split, "runs": runs,
            "summary": {"n": len(finals), **mean_and_sd(finals), "min": min(finals), "max": max(finals),
                        "at_least_99_40": sum(f >= TARGET_ACCURACY for f in finals),
                        "at_least_99_40_in_last_3": sum(utils.held_target(run["curve"]) for run in runs),
                        "median_wall_seconds": statistics.median(walls) if walls else None,
                        "robustness": robustness_summary(runs),
                        "robust_seed": seed, "no_robust_seed": why_none,
                        "cpus": sorted({run["cpu"] or "not recorded" for run in runs})}}


def mean_and_sd(values):
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def robustness_summary(runs):
    """Mean and sd over seeds of each robustness score, where every seed was scored."""
    if any(run["robustness"] is None for run in runs):
        return None
    names = [name for name, value in runs[0]["robustness"].items() if value is not None]
    return {name: mean_and_sd([run["robustness"][name] for run in runs]) for name in names}


def robust_seed(runs):
    """(the seed to ship, None), or (None, why not, in one line; None if no seed was scored).
    The seed to ship is, of all the table's seeds, the one that reads the font-rendered digits
    best (they hold no MNIST image, so the choice reads no MNIST test accuracy); a tie goes to
    the lower seed. Scores compare only where every seed was scored on the same font set
    (robustness.json's fonts_sha256)."""
    fonts = {run["seed"]: (run["robustness"] or {}).get("fonts") for run in runs}
    if all(score is None for score in fonts.values()):
        return None, None
    if unscored := [str(seed) for seed, score in fonts.items() if score is None]:
        return None, f"seed(s) {', '.join(unscored)} have no fonts score (--robustness gives them one)"
    font_sets = {run["fonts_sha256"] for run in runs}
    if None in font_sets or len(font_sets) > 1:
        return None, ("the seeds' fonts scores were made with different font sets, or do not record "
                      "theirs (fonts_sha256): delete their robustness.json and run with --robustness")
    return max(fonts, key=lambda seed: (fonts[seed], -seed)), None


def print_table(result):
    split = result["split"]
    print(f"\n{'seed':>4} {'final %':>8} {'last-3 min':>10} {'best %':>8} {'epoch':>6} {'best loss':>10} "
          f"{'seconds':>8} {'wall s':>7} {'fonts %':>8} {'robust %':>9}")
    for run in result["runs"]:
        wall = "" if run["wall_seconds"] is None else f"{run['wall_seconds']:.0f}"
        robust = run["robustness"] or {}
        fonts, overall = (f"{robust[k]:.2f}" if robust.get(k) is not None else ""
                          for k in ("fonts", "overall"))
        print(f"{run['seed']:>4} {run[f'final_{split}_acc']:8.2f} {run['last_3_min']:10.2f} "
              f"{run[f'best_{split}_acc']:8.2f} {run['best_epoch']:>6} {run[f'best_{split}_loss']:10.4f} "
              f"{run['seconds']:8.0f} {wall:>7} {fonts:>8} {overall:>9}")
    s = result["summary"]
    print(f"{split} accuracy over {s['n']} seeds: mean {s['mean']:.3f} +/- {s['sd']:.3f} (sd), "
          f"min {s['min']:.2f}, max {s['max']:.2f}; {s['at_least_99_40']} of {s['n']} reach 99.40% at the "
          f"last epoch, {s['at_least_99_40_in_last_3']} in each of the last 3; CPU: {', '.join(s['cpus'])}")
    if s["robust_seed"] is not None:
        print(f"robust seed (best on fonts of all the seeds): {s['robust_seed']}")
    elif s["no_robust_seed"]:
        print(f"no robust seed: {s['no_robust_seed']}")


def write_summary(args):
    """Score (--robustness) and summarize every seed in --out-dir finished with these settings,
    into seeds.json and seeds.png; returns the seeds robustness.py could not score."""
    # One process at a time, each reading the seeds anew: the last summary written holds them
    # all, and no seed is scored twice at once.
    out = Path(args.out_dir)
    with open(out / ".lock", "a") as summary_lock:
        lock(summary_lock, wait=True)
        histories = finished_seeds(args)
        robustness_errors = score_robustness(args, histories) if args.robustness else {}
        if histories:
            result = summarize(args, histories, robustness_errors)
            atomic_write_json(out / "seeds.json", result)
            utils.plot_seeds({run["seed"]: run["curve"] for run in result["runs"]}, result["split"],
                             out / "seeds.png")
            print_table(result)
            print(f"Wrote {out / 'seeds.json'} and seeds.png")
    return robustness_errors


def main(argv=None):
    args = parse_args(argv)
    try:
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file of that name, no permission, ...
        sys.exit(f"seeds.py: error: --out-dir {args.out_dir}: {error.strerror or error}")
    print(f"seeds {args.seeds}, {args.jobs} job(s) x {args.threads} thread(s), train.py "
          f"{' '.join(args.train_flags)}, into {args.out_dir}")
    try:
        failed = run_seeds(args)
    except Stopped:
        print(f"Stopped. Run the same command again to continue: finished seeds are skipped and "
              f"stopped ones resume from {Path(args.out_dir)}/seedN/checkpoint.pt.", file=sys.stderr)
        sys.exit(130)
    robustness_errors = write_summary(args)
    if failed:
        print(f"seeds.py: error: seed(s) {', '.join(map(str, failed))} did not finish with these settings; "
              "see the lines above and their train.log", file=sys.stderr)
    if robustness_errors:
        print("seeds.py: error: robustness.py could not score seed(s) "
              f"{', '.join(map(str, robustness_errors))}", file=sys.stderr)
    return 1 if failed or robustness_errors else 0


if __name__ == "__main__":
    sys.exit(main())
