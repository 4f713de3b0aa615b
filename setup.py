"""Everything is in pyproject.toml; this only adds the ``.pth`` line that registers equirl's gymnasium
envs when gymnasium is imported (see ``equirl_gymnasium.py``: gymnasium 1.x has no plugin entry points),
and maps the top-level ``agents/``, ``envs/`` and ``configs/`` into the wheel as ``equirl/assets/*``."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH = "equirl-gymnasium.pth"


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        (Path(self.build_lib) / PTH).write_text(
            "import equirl_gymnasium; equirl_gymnasium.install()\n", encoding="utf-8"
        )

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / PTH)]


#: shipped folders at the top of the tree -> their place inside the package (see equirl/assets)
ASSETS = {f"equirl.assets.{kind}": kind for kind in ("agents", "envs", "configs")}

setup(
    packages=[*find_packages(include=["equirl", "equirl.*"]), *ASSETS],
    package_dir=ASSETS,
    package_data={
        "equirl": ["py.typed", "language/data/**/*"],
        **{pkg: ["**/*.yaml", "**/*.yml", "**/*.zip", "**/*.json", "**/*.md"] for pkg in ASSETS},
    },
    py_modules=["equirl_gymnasium"],
    cmdclass={"build_py": BuildPyWithPth},
)
