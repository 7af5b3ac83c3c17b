"""``python -m dmst`` is the ``dmst`` command."""
import sys

from .cli import main

sys.exit(main())
