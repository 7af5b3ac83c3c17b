"""The install: exact torch/torchaudio pins everywhere they are written, and one clear error when the pair breaks.

A resolver that drifts (torchaudio 2.11.1 beside torch 2.11.0 does not load) must fail
here, in CI, not on a user's machine.
"""
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dmst import _torchaudio

ROOT = Path(__file__).resolve().parent.parent


def _pins_in(lines, names=("torch", "torchaudio")):
    pins = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)", line)
        if m and m.group(1).lower() in names:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_pyproject_pins_the_adapters_pair_exactly():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert _pins_in(deps) == {"torch": _torchaudio.TORCH_PIN, "torchaudio": _torchaudio.TORCHAUDIO_PIN}


def test_lock_file_pins_the_same_pair():
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    assert _pins_in(lines) == {"torch": _torchaudio.TORCH_PIN, "torchaudio": _torchaudio.TORCHAUDIO_PIN}


def test_installed_torch_and_torchaudio_are_the_pinned_releases():
    for package, pin in (("torch", _torchaudio.TORCH_PIN), ("torchaudio", _torchaudio.TORCHAUDIO_PIN)):
        installed = importlib.metadata.version(package).split("+")[0]  # "2.11.0+cu130" -> "2.11.0"
        assert installed == pin, f"{package} {installed} is installed, but dmst pins {pin}; reinstall from constraints.txt"


def test_torchaudio_is_imported_by_one_module_only():
    importers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "dmst").rglob("*.py")
        if re.search(r"^\s*(import torchaudio|from torchaudio)", path.read_text(), re.M)
    )
    assert importers == ["dmst/_torchaudio.py"]


@pytest.mark.parametrize("broken", ["torchaudio", "torch"])
def test_a_stack_that_cannot_load_is_one_line_and_exit_2(tmp_path, broken):
    """A package that raises as a mismatched torchaudio does (an OSError from its .so) shadows the real one."""
    fake = tmp_path / "site" / broken
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "raise OSError('Could not load this library: libtorchaudio.so (undefined symbol: "
        "torch_exception_get_what_without_backtrace)')\n")
    out = tmp_path / "out.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "dmst", "render", str(ROOT / "examples" / "and_its_all.wav"), "-o", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    installed = importlib.metadata.version(broken).split("+")[0]
    assert lines[0].startswith(f"dmst: error: {broken} {installed} cannot ")
    assert f"pip install torch=={_torchaudio.TORCH_PIN} torchaudio=={_torchaudio.TORCHAUDIO_PIN}" in lines[0]
    assert not out.exists()


def test_help_and_version_need_no_torch(tmp_path):
    """Even with torch broken, `dmst --version` answers (the check runs only before real work)."""
    fake = tmp_path / "site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise OSError('broken torch')\n")
    proc = subprocess.run([sys.executable, "-m", "dmst", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and proc.stdout.startswith("dmst "), proc.stderr
