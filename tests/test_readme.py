"""README.md's headline and results table say what results/*/seeds.json say (bench/readme.py)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_py(*argv):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "readme.py"), *argv],
                          capture_output=True, text=True, cwd=ROOT)


def test_readme_agrees_with_the_committed_results():
    done = readme_py("--check")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("typed, wrong", [
    ("| 18 of 20 | 15 of 20 |", "| 19 of 20 | 15 of 20 |"),  # a count of the default's row
    ("99.42 ± 0.05%", "99.43 ± 0.05%"),  # the reference recipe's mean
    ("parameters: 99.46% over 20 seeds", "parameters: 99.50% over 20 seeds"),  # the headline
])
def test_a_number_that_differs_from_the_data_fails_the_check_and_is_rewritten(tmp_path, typed, wrong):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    assert readme_py("--readme", str(readme)).returncode == 0  # without --check it writes the data's numbers
    agreed = readme.read_text()
    assert agreed.count(typed) == 1
    readme.write_text(agreed.replace(typed, wrong))
    done = readme_py("--check", "--readme", str(readme))
    assert done.returncode == 1 and "differs from results/*/seeds.json" in done.stderr
    assert wrong in done.stdout  # the diff shows the line
    assert readme_py("--readme", str(readme)).returncode == 0
    assert readme.read_text() == agreed
