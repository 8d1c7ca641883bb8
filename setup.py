"""The wheel carries the repository's attack presets and example configs (attacks/, configs/: their sources
stay there) as package data in robustbench_leak/_shipped/; everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = ("attacks", "configs")


class BuildPyWithShipped(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout's folders directly
            return
        for folder in SHIPPED:
            target = Path(self.build_lib) / "robustbench_leak" / "_shipped" / folder
            target.mkdir(parents=True, exist_ok=True)
            for source in sorted(Path(folder).glob("*.yaml")):
                self.copy_file(str(source), str(target / source.name))


setup(cmdclass={"build_py": BuildPyWithShipped})
