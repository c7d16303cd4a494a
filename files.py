"""Atomic file writes (a crash, a full disk or a kill leaves the old file or the new one), and
errors as one line."""

import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, write):
    """Call write(file) on a temp file beside PATH, then rename it over PATH.

    Rename within a folder is atomic on POSIX and Windows, so a reader never
    sees half a file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give it normal rights
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path, content):
    atomic_write(path, lambda f: f.write(content))


def atomic_write_json(path, obj):
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def one_line(error, limit=200):
    """An error's message on one line of at most LIMIT characters: some libraries raise
    multi-line messages."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
