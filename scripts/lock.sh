#!/usr/bin/env bash
# Re-create constraints.txt: install dmst with every extra into a new virtual environment and
# freeze what pip resolved.  Run it after changing a dependency in pyproject.toml, then run the
# tests in a fresh environment made with the new file (.ci/run does exactly that).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
"$work/venv/bin/python" -m pip install --quiet ".[dev,serve,plot,bench]"
{
  echo "# The whole resolved set dmst is tested with (Python $("$work/venv/bin/python" -c 'import platform; print(platform.python_version())'), $(uname -m) Linux)."
  echo "# Made by scripts/lock.sh on $(date -u +%Y-%m-%d); install with: pip install -c constraints.txt -e \".[dev]\""
  "$work/venv/bin/python" -m pip freeze --exclude dmst | LC_ALL=C sort -f
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
