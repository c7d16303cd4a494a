"""Per-epoch training checkpoints: everything the next epoch needs, written atomically.

A checkpoint holds the model, optimizer and scheduler states, the epoch, the
history so far, the settings that decide the result, and every random state the
next epoch draws from: torch's global generator (dropout; with --loader
torchvision, the rotation too), the loader's own generator (the in-memory
loader's order and angles, or the DataLoader's order) and CUDA's, on CUDA.
Restoring all of them is what makes a resumed CPU run end bit for bit where an
uninterrupted one does.
Python's `random` and NumPy are not used by training, so they are not saved.
"""

import torch

from model import CheckpointError, safe_load
from utils import atomic_write

FORMAT = "mnist-7544/train-checkpoint/1"
# Settings whose change would make the resumed run a different run.
RESULT_KEYS = ("epochs", "loader", "batch_size", "dropout", "rotation", "seed", "lr", "momentum",
               "weight_decay", "nesterov", "max_lr", "pct_start", "div_factor",
               "final_div_factor", "anneal_strategy", "base_momentum", "max_momentum", "parameters")


def random_states(train_loader):
    states = {"torch": torch.get_rng_state(), "loader": train_loader.generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def save_checkpoint(path, epoch, history, config, model, optimizer, scheduler, train_loader):
    state = {
        "format": FORMAT, "epoch": epoch, "history": history,
        "config": {key: config[key] for key in RESULT_KEYS},
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "random": random_states(train_loader),
    }
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path):
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a train.py checkpoint (a weights.pt cannot be resumed)")
    return state


def resume(state, path, config, model, optimizer, scheduler, train_loader):
    """Put the run back where STATE left it; returns (epochs done, history so far)."""
    changed = [f"{key} {state['config'].get(key)!r} (now {config[key]!r})"
               for key in RESULT_KEYS if state["config"].get(key) != config[key]]
    if changed:
        raise CheckpointError(f"{path} was made with other settings: {'; '.join(changed)}; "
                              "resume with the same flags as the original run")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["random"]["torch"])
    train_loader.generator.set_state(state["random"]["loader"])
    if "cuda" in state["random"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["random"]["cuda"])
    return state["epoch"], state["history"]
