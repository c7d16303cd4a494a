"""Search train.py's flags with Optuna on the validation split: a recipe or an architecture.

    python search.py --out-dir runs/search/small --space channels --max-params 4000 --dropout 0

Each trial trains every seed of --seeds with the trial's flags as seeds.py does, one
ordinary train.py run at a time (--holdout, never the test set), in OUT_DIR/runs/NAME/seedS
with its train.log and history.json. Its value is the worst case the project judges recipes
by: over the seeds, the lowest validation accuracy of the last three epochs (maximized).
Each epoch's accuracy, from the epochs.json that train.py writes, goes to the pruner
(--prune). Any flag that search.py does not know goes to every run (above: --dropout 0).

The study lives in OUT_DIR/journal.log (Optuna's journal file storage): run the same
command again after Ctrl-C, and it continues, the stopped trial resuming from its
checkpoints. --jobs N runs N workers here; a worker on another machine joins with the
same command on a shared disk, or every worker gives --storage with the URL of a database
server they all reach. At the end (or with --report alone) it writes OUT_DIR/trials.md
(the best trials as train.py commands), history.png and importance.png.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

import seeds
from model import Net, count_parameters
from utils import (
    LAST_EPOCHS,
    OneLineErrorParser,
    atomic_write,
    bounded,
    lowest_of_last,
    one_line,
    pyplot,
    save_figure,
)

CHANNEL_SLOTS = ("conv1", "conv2", "transition", "conv3", "conv4", "conv5", "conv6")  # --channels' order
# Named spaces, in --param's syntax: NAME=LOW:HIGH[:log] (a range) or NAME=A,B,C (choices).
SPACES = {"optimizer": ["max-lr=0.01:0.3:log", "weight-decay=1e-5:2e-3:log", "dropout=0:0.1"],
          "channels": [f"{slot}=3:20" for slot in CHANNEL_SLOTS]}
SPACES["both"] = SPACES["optimizer"] + SPACES["channels"]
# Set by Ctrl-C or SIGTERM between trials; within one, seeds.run_seeds stops the runs and raises Stopped.
STOPPING = threading.Event()


def parameter(text):
    """'max-lr=0.01:0.3:log' -> (name, ('float', 0.01, 0.3, True)); 'batch-size=64,128' ->
    (name, ('choice', ['64', '128'])); integer ends make an integer range."""
    name, _, spec = text.partition("=")
    parts = spec.split(":")
    try:
        if name and len(parts) == 1 and "," in spec:
            return name, ("choice", spec.split(","))
        if name and len(parts) in (2, 3) and parts[2:] in ([], ["log"]):
            kind = int if all(re.fullmatch(r"-?\d+", p) for p in parts[:2]) else float
            low, high = kind(parts[0]), kind(parts[1])
            if low < high:
                return name, (kind.__name__, low, high, parts[2:] == ["log"])
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not NAME=LOW:HIGH[:log] or NAME=A,B,C")


def parse_args(argv=None):
    p = OneLineErrorParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="example:\n  " + __doc__.split("\n")[2].strip()
                                  + "\n\nAny other flag goes to train.py (python train.py --help).")
    add = p.add_argument
    add("--out-dir", required=True, help="the study's folder: its journal, runs, table and plots")
    add("--space", choices=list(SPACES), help="a named space: " + "; ".join(
        f"{name}: {' '.join(params)}" for name, params in SPACES.items() if name != "both") + "; both")
    add("--param", type=parameter, action="append", default=[], metavar="NAME=LOW:HIGH[:log]",
        help="a train.py flag (max-lr) or a channel count (conv1, conv2, transition, conv3-conv6) "
             "to search; repeat it; adds to --space")
    add("--max-params", type=bounded(int, 1),
        help="channel counts with more parameters are scaled down to fit, in proportion")
    add("--seeds", type=seeds.seed_list, default="1-2", help="seeds of every trial")
    add("--trials", type=bounded(int, 1), default=20, help="trials that train, over all workers")
    add("--holdout", type=bounded(int, 1, 59000), default=10000, help="validation images")
    add("--jobs", type=bounded(int, 1), default=1, help="workers here, each training one run at a time")
    add("--threads", type=bounded(int, 1), help="CPU threads a run; default: cores / jobs")
    add("--prune", action="store_true", help="stop trials whose seed lies below the median trial's "
        "at the same epoch, from the second half of each run on (results/search: what it saved and cut)")
    add("--storage", help="a database URL instead of OUT_DIR/journal.log: sqlite:///study.db serves one "
        "machine; workers on several machines need a database server that all of them reach, and its "
        "driver (e.g. psycopg2 for postgresql://...), which requirements.txt does not install")
    add("--sampler-seed", type=int, help="the TPE sampler's seed (worker i uses SEED + i)")
    add("--report", action="store_true", help="write the table and plots of the study as it is, and stop")
    add("--top", type=bounded(int, 1), default=10, help="trials in the table")
    add("--worker", type=int, help=argparse.SUPPRESS)  # set for the workers --jobs starts
    args, args.train_flags = p.parse_known_args(argv)
    args.space = dict([parameter(text) for text in SPACES.get(args.space, [])] + args.param)
    if not args.space and not args.report:
        p.error("nothing to search: give --space or --param")
    seeds.refuse_own_flags(p, "search.py", args.train_flags, ("--seed", "--resume", "--channels", "--width"))
    args.threads = args.threads or seeds.threads_per_job(args.jobs)
    # A bad train.py flag, a --param that train.py does not know or a --max-params below the
    # smallest network fails now, in one line, before a study exists: the flags of a trial at
    # the space's first values. Its seed table also gives every run's epochs, which the pruner counts.
    first = {name: spec[1][0] if spec[0] == "choice" else spec[1] for name, spec in args.space.items()}
    try:
        args.epochs = seed_table(args, suggest(optuna.trial.FixedTrial(first), args.space, args.max_params)
                                 ).train_args.epochs
    except ValueError as error:
        p.error(str(error))
    return args


def suggest(trial, space, max_params=None):
    """The trial's train.py flags: {'--max-lr': '0.0523', '--channels': '4,8,...'}; channel
    counts over MAX_PARAMS are scaled down to fit (within_budget)."""
    flags, channels = {}, {}
    for name, (kind, *spec) in space.items():
        if kind == "choice":
            value = trial.suggest_categorical(name, spec[0])
        elif kind == "int":
            value = trial.suggest_int(name, spec[0], spec[1], log=spec[2])
        else:
            value = f"{trial.suggest_float(name, spec[0], spec[1], log=spec[2]):.3g}"
        if name in CHANNEL_SLOTS:
            if not str(value).isdigit():  # a choice's values are text
                raise ValueError(f"--param {name}: {value!r} is not a channel count")
            channels[name] = int(value)
        else:
            flags[f"--{name}"] = str(value)
    if channels:  # the slots not searched keep the reference network's counts
        counts = [channels.get(slot, reference) for slot, reference in zip(CHANNEL_SLOTS, Net.CHANNELS)]
        flags["--channels"] = ",".join(map(str, within_budget(counts, max_params) if max_params else counts))
    return flags


def within_budget(counts, max_params):
    """COUNTS if the network has at most MAX_PARAMS parameters, else every count times the
    largest factor that fits (rounded down, at least 1): the proposal's proportions, at the
    budget. Skipping a proposal instead leaves the sampler nothing to learn from when most
    of the space is over the budget, and it proposes there again and again."""
    def size(factor):
        return parameter_count([max(1, int(c * factor)) for c in counts])

    if parameter_count(counts) <= max_params:
        return counts
    if size(0) > max_params:
        raise ValueError(f"--max-params {max_params} is below the smallest network ({size(0)} parameters)")
    low, high = 0.0, 1.0
    for _ in range(30):  # bisect the factor
        middle = (low + high) / 2
        low, high = (middle, high) if size(middle) <= max_params else (low, middle)
    return [max(1, int(c * low)) for c in counts]


def parameter_count(counts):
    with torch.device("meta"):  # counted without allocating or drawing random numbers
        return count_parameters(Net(channels=counts))


def run_name(flags):
    """A folder name for a trial's flags: the same flags, the same folder, so a repeated
    trial reuses finished seeds and resumes stopped ones."""
    return "_".join(f"{key.lstrip('-')}={value}".replace(",", "-") for key, value in sorted(flags.items()))


def objective(args, trial):
    """A trial: its flags, suggested, trained as a seed table of seeds.py (one run at a time,
    in OUT_DIR/runs/NAME); its value, the lowest validation accuracy of the last LAST_EPOCHS
    epochs over the seeds."""
    flags = suggest(trial, args.space, args.max_params)
    if "--channels" in flags:
        trial.set_user_attr("parameters", parameter_count([int(c) for c in flags["--channels"].split(",")]))
    trial.set_user_attr("flags", flags)
    trial.set_user_attr("train_flags", args.train_flags)  # the flags every run of the study had
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    try:
        table = seed_table(args, flags)
    except SystemExit:  # train.py's parser refused a sampled value, and said so on stderr
        raise RuntimeError(f"train.py refused the trial's flags {flags}") from None
    start = time.perf_counter()
    try:
        if STOPPING.is_set():  # a signal between two trials
            raise seeds.Stopped()
        failed = seeds.run_seeds(table, follow=reporting(trial, table))
    except seeds.Stopped:
        trial.set_user_attr("interrupted", True)  # requeue_interrupted runs it again
        raise
    finally:
        trial.set_user_attr("train_seconds", round(time.perf_counter() - start, 1))
    histories = {seed: seeds.read_history(seeds.seed_folder(table, seed)) for seed in table.seeds}
    if failed or None in histories.values():  # failed, or trained by another worker
        raise RuntimeError(f"not every seed finished; see {table.out_dir}/seedN/train.log")
    worst = {seed: lowest_of_last(history["epochs"]) for seed, history in histories.items()}
    trial.set_user_attr("worst_by_seed", worst)
    return min(worst.values())


def seed_table(args, flags):
    """seeds.py's arguments for a trial's runs: the study's flags and the trial's FLAGS."""
    chosen = [part for item in flags.items() for part in item]
    return seeds.parse_args([
        "--seeds", ",".join(map(str, args.seeds)), "--jobs", "1", "--threads", str(args.threads),
        "--out-dir", str(Path(args.out_dir) / "runs" / run_name(flags)), *args.train_flags, *chosen,
        "--holdout", str(args.holdout)])


def reporting(trial, table):
    """seeds.run_seeds' FOLLOW: each new epoch's accuracy, read from the epochs.json that
    train.py writes, reported to TRIAL (its steps count the epochs of all the seeds, one seed
    after another); optuna.TrialPruned when the pruner (--prune) says so."""
    epochs, reported = table.train_args.epochs, set()

    def follow(seed, folder):
        for row in seeds.read_json(folder / "epochs.json") or []:
            step = table.seeds.index(seed) * epochs + row["epoch"] - 1
            if step not in reported:
                reported.add(step)
                trial.report(row["val_acc"], step)
                if trial.should_prune():
                    trial.set_user_attr("pruned_at", f"seed {seed}, epoch {row['epoch']}")
                    raise optuna.TrialPruned()
    return follow


class SecondHalfPruner(optuna.pruners.BasePruner):
    """The median rule, asked only in the second half of each seed's run: under OneCycleLR
    the accuracy of the first epochs says little about the last ones (steps count the
    epochs of all seeds of a trial, one after another)."""

    def __init__(self, run_length):
        self.run_length = run_length
        self.median = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)

    def prune(self, study, trial):
        step = trial.last_step
        return step is not None and step % self.run_length >= self.run_length // 2 and \
            self.median.prune(study, trial)


def open_study(args):
    """The study at --storage or OUT_DIR/journal.log, made on first use."""
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    if not args.storage:
        storage = JournalStorage(JournalFileBackend(str(Path(args.out_dir) / "journal.log")))
    else:
        try:
            storage = optuna.storages.RDBStorage(args.storage)
        except Exception as error:  # the database library's many ways to refuse a URL or a database
            raise ValueError(f"--storage {args.storage}: {one_line(error)}") from None
    seed = None if args.sampler_seed is None else args.sampler_seed + (args.worker or 0)
    # Several workers: constant_liar keeps them from sampling the same point at once.
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    pruner = SecondHalfPruner(args.epochs) if args.prune else optuna.pruners.NopPruner()
    names = [study.study_name for study in optuna.get_all_study_summaries(storage)]
    # A moved folder's journal keeps its one study; a shared --storage holds one study per --out-dir name.
    name = names[0] if len(names) == 1 and not args.storage else Path(args.out_dir).name
    if name not in names:
        return optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                   direction="maximize", load_if_exists=True)
    # loaded, not created again: that would add a line to the journal each time
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
    if len(study.directions) != 1:  # results/handwriting's study; the code at 364e48c reads it
        raise ValueError(f"{args.out_dir} holds a two-objective study, which this search.py does not run")
    return study


def fail_orphans(study):
    """Trials left running by a worker of this machine that is gone (killed, crashed) are marked
    failed, so that they stop counting towards --trials. POSIX only: elsewhere os.kill ends a process."""
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
        host, _, pid = trial.user_attrs.get("worker", "").rpartition(":")
        if os.name == "posix" and host == socket.gethostname() and not process_alive(int(pid)):
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: is it there?
    except ProcessLookupError:
        return False
    except PermissionError:  # there, another user's
        pass
    return True


def requeue_interrupted(study):
    """Trials that Ctrl-C stopped run again first, with the same flags (so in the same
    folders, where their finished seeds are kept and the stopped one resumes)."""
    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("resumes") for t in trials}
    for trial in trials:
        if trial.user_attrs.get("interrupted") and trial.number not in requeued:
            study.enqueue_trial(trial.params, user_attrs={"resumes": trial.number})


def work(args, study):
    """One worker: trials of STUDY until it holds --trials that count. False if stopped."""

    def at_budget():
        # A trial counts if it trained or is training: complete, pruned, failed (so a study whose
        # runs all fail ends) or running; not one that Ctrl-C stopped, which runs again.
        return sum(t.state != optuna.trial.TrialState.WAITING and not t.user_attrs.get("interrupted")
                   for t in study.get_trials(deepcopy=False)) >= args.trials

    def after_trial(study, trial):
        if trial.state == optuna.trial.TrialState.COMPLETE:
            print(f"trial {trial.number}: {trial.value:.2f}% "
                  f"{' '.join(f'{k} {v}' for k, v in trial.user_attrs['flags'].items())}", flush=True)
        if at_budget() or STOPPING.is_set():
            study.stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, frame: STOPPING.set())
    try:
        if not at_budget():
            study.optimize(lambda trial: objective(args, trial), callbacks=[after_trial],
                           catch=(RuntimeError,))
    except seeds.Stopped:
        return False
    return not STOPPING.is_set()


def start_workers(args, argv):
    """--jobs N: N worker processes of this same command; True if all ran to the end."""
    workers = [subprocess.Popen([sys.executable, sys.argv[0], *argv, "--jobs", "1", "--threads",
                                 str(args.threads), "--worker", str(i)]) for i in range(args.jobs)]

    def forward(signum, frame):  # each worker stops after its current batch
        for worker in workers:
            worker.send_signal(signal.SIGINT)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return all([worker.wait() == 0 for worker in workers])
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.report and not args.storage and not (Path(args.out_dir) / "journal.log").exists():
        sys.exit(f"search.py: error: {args.out_dir} holds no study (no journal.log) to report on")
    try:
        study = open_study(args)
        if not args.report and args.worker is None:  # the first process, not one of its workers
            fail_orphans(study)
            requeue_interrupted(study)
        finished = args.report or (start_workers(args, argv) if args.jobs > 1 else work(args, study))
        if args.worker is None:
            write_report(study, args)
    except (ImportError, ValueError, OSError) as error:
        sys.exit(f"search.py: error: {one_line(error)}")
    if not finished:
        sys.exit(1 if args.worker is not None else
                 "search.py: stopped; run the same command again to continue the study")


def write_report(study, args):
    """OUT_DIR/trials.md (counts, importances, the best trials as train.py commands),
    history.png and importance.png."""
    import warnings

    pyplot()  # matplotlib with the Agg backend, before Optuna's plots import it
    from optuna.visualization import matplotlib as plots

    folder, trials = Path(args.out_dir), study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    done = sorted((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    hours = sum(t.user_attrs.get("train_seconds", 0) for t in trials) / 3600
    lines = [f"# Study {study.study_name}", "",
             f"Trials that trained: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
             f"{states.count('FAIL')} failed or stopped, {states.count('RUNNING')} running.",
             f"Training time: {hours:.2f} h of runs (each at --threads as given).", ""]
    evaluator, importances = optuna.importance.PedAnovaImportanceEvaluator(), {}
    if len(done) >= 4:
        try:
            importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except (ValueError, RuntimeError) as error:
            print(f"search.py: no parameter importance yet ({one_line(error)})")
    if importances:
        lines += ["Parameter importance (PED-ANOVA, on the completed trials): " + ", ".join(
            f"{name} {value:.2f}" for name, value in importances.items()), ""]
    lines += [f"| rank | trial | worst of the last {LAST_EPOCHS} epochs | by seed | parameters "
              "| train.py command |",
              "| --- | --- | --- | --- | --- | --- |"]
    for rank, t in enumerate(done[:args.top], 1):
        by_seed = ", ".join(f"{v:.2f}" for v in t.user_attrs["worst_by_seed"].values())
        command = " ".join(["python train.py", *t.user_attrs.get("train_flags", args.train_flags),
                            *(part for item in t.user_attrs["flags"].items() for part in item)])
        lines.append(f"| {rank} | {t.number} | {t.value:.2f}% | {by_seed} | "
                     f"{t.user_attrs.get('parameters', '')} | `{command}` |")
    atomic_write(folder / "trials.md", lambda f: f.write("\n".join(lines).encode() + b"\n"))
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the matplotlib plots'
    if done:
        save_figure(plots.plot_optimization_history(study).figure, folder / "history.png")
    if importances:
        save_figure(plots.plot_param_importances(study, evaluator=evaluator).figure,
                    folder / "importance.png")
    print("\n".join(lines), f"\nWrote {folder / 'trials.md'}", sep="")


if __name__ == "__main__":
    main()
