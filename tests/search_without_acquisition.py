"""search.py for tests that run it as a process: its runs skip MNIST acquisition."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))

import search  # noqa: E402
import seeds  # noqa: E402

seeds.TRAIN_PY = TESTS / "train_without_acquisition.py"
search.main(sys.argv[1:])
