"""What search.py --prune would have saved and cut in a study that ran without it.

    python bench/pruning.py runs/search/frontier --epochs 15 --winners 2

Replays the trials in the order of their numbers: each one is judged at every epoch by
search.py's pruner against the trials completed before it, with the curves they really
had. A trial it would stop is charged only the epochs up to there. Winners are the top
--winners trials by value; a winner it would stop is a wrong cut.
"""

import sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import search  # noqa: E402
from utils import OneLineErrorParser, bounded  # noqa: E402


def replay(trials, epochs):
    """{trial number: the step at which the pruner stops it, or None}."""
    history = optuna.create_study(direction="maximize")
    pruner = search.SecondHalfPruner(epochs)
    stopped = {}
    for trial in trials:
        stopped[trial.number] = None
        for step in sorted(trial.intermediate_values):
            partial = optuna.trial.create_trial(
                state=optuna.trial.TrialState.RUNNING, params=trial.params, distributions=trial.distributions,
                intermediate_values={s: v for s, v in trial.intermediate_values.items() if s <= step})
            if pruner.prune(history, partial):
                stopped[trial.number] = step
                break
        history.add_trial(trial)
    return stopped


def main():
    p = OneLineErrorParser(description=__doc__.split("\n")[0])
    p.add_argument("study", help="a study folder (its journal.log)")
    p.add_argument("--epochs", type=bounded(int, 1), default=15, help="epochs of each seed's run")
    p.add_argument("--winners", type=bounded(int, 1), default=2)
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not (Path(args.study) / "journal.log").is_file():
        sys.exit(f"pruning.py: error: {args.study} holds no journal.log")
    storage = JournalStorage(JournalFileBackend(str(Path(args.study) / "journal.log")))
    study = optuna.load_study(study_name=None, storage=storage)  # the one study in the journal
    trials = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    stopped = replay(trials, args.epochs)
    winners = {t.number for t in sorted(trials, key=lambda t: -t.value)[:args.winners]}
    total = sum(len(t.intermediate_values) for t in trials)
    spent = sum(len(t.intermediate_values) if stopped[t.number] is None else stopped[t.number] + 1
                for t in trials)
    cut = [n for n, step in stopped.items() if step is not None]
    print(f"{len(trials)} complete trials, {total} epochs trained without pruning")
    print(f"with --prune: {len(cut)} stopped ({', '.join(map(str, cut)) or 'none'}), {spent} epochs "
          f"({100 * (1 - spent / total):.0f}% saved)")
    print(f"winners {sorted(winners)}: {len(winners & set(cut))} of them would have been stopped")
    for trial in trials:
        step = stopped[trial.number]
        where = "-" if step is None else f"seed {step // args.epochs + 1}, epoch {step % args.epochs + 1}"
        print(f"trial {trial.number:3}: {trial.value:.2f}  stopped at: {where}")


if __name__ == "__main__":
    main()
