"""A bench/ script for tests that run it as a process: MNIST acquisition is skipped.

    python tests/bench_without_acquisition.py bench/step.py [its flags]
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import data  # noqa: E402

data.ensure_mnist = lambda data_dir: None  # before the script imports it
sys.argv = sys.argv[1:]
runpy.run_path(str(ROOT / sys.argv[0]), run_name="__main__")
