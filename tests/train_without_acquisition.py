"""train.py for tests that run it as a process: MNIST acquisition is skipped."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train  # noqa: E402

train.ensure_mnist = lambda data_dir: None
train.main(sys.argv[1:])
