"""Entry point named in the model card: ``python infer.py render IN -o OUT`` is ``dmst render IN -o OUT``.

Runs the same command line as the ``dmst`` console script (see :mod:`dmst.cli`), for
use straight from a checkout without installing the package.
"""
from dmst.cli import run

if __name__ == "__main__":
    run()
