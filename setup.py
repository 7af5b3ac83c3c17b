"""Build hook (the rest of the configuration is in pyproject.toml).

The built-in presets live at the project's top level, ``presets.yaml``, where they are
easy to find and edit.  An editable install reads them there; a built wheel carries a
copy inside the package, ``dmst/presets.yaml``, which :mod:`dmst.presets` looks for first.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithPresets(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "dmst" / "presets.yaml"
            self.mkpath(str(target.parent))
            self.copy_file("presets.yaml", str(target))


setup(cmdclass={"build_py": BuildPyWithPresets})
