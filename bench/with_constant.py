"""Run a benchmark script with some of train.py's module constants changed, for one-change experiments.

    python bench/with_constant.py SIBILANCE_WEIGHT=1 [NAME=VALUE ...] -- bench/quality.py --space --stage train ...

train.py's loss weights and schedule constants (``SIBILANCE_WEIGHT``, ``AVERAGE_HALF_LIFE_EPOCHS``,
``PLATEAU_FROM_PROGRESS``...) are module constants, not options: a user's run has one meaning.  The README's
one-change rows were made with this wrapper, which sets them (as floats, or ``None``) in the imported module before
running the script in this process, so the script's ``import train`` sees them.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: with_constant.py NAME=VALUE [NAME=VALUE ...] -- SCRIPT [ARGS...]")
    split = argv.index("--")
    changes, script = argv[:split], argv[split + 1:]
    if not changes or not script:
        sys.exit("usage: with_constant.py NAME=VALUE [NAME=VALUE ...] -- SCRIPT [ARGS...]")
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    import train

    for change in changes:
        name, _, value = change.partition("=")
        if not hasattr(train, name):
            sys.exit(f"train.py has no constant {name!r}: check the name (upper case, as in train.py)")
        setattr(train, name, None if value == "None" else float(value))
        print(f"train.{name} = {getattr(train, name)}", file=sys.stderr)
    sys.argv = script
    runpy.run_path(script[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
