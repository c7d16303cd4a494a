"""export.py for a test that runs it as a process where one package, the first argument, is
not installed: importing it fails as it does there. Acquiring MNIST, if reached, fails loudly."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import export  # noqa: E402

MISSING = sys.argv[1]


class NotInstalled:
    """An import finder that finds no module of the MISSING package."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
export.ensure_mnist = lambda data_dir: sys.exit("export.py went on to acquire MNIST")
export.main(sys.argv[2:])
