"""``python -m dmst`` is the ``dmst`` command."""
from .cli import run

run()
