"""pyproject.toml's layout of the package: imports only go down the layers (its import-linter contracts), no
package has a cycle, and every folder of conf/ ships."""
from __future__ import annotations

import tomllib
from pathlib import Path

from importlinter.cli import lint_imports

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_import_contracts_are_kept() -> None:
    assert lint_imports(config_filename=str(PYPROJECT), no_cache=True) == 0


def test_every_config_folder_ships_in_the_package() -> None:
    """An installed copy composes paraphina.conf; setuptools ships (and builds without a warning) only the conf/
    folders its package list names."""
    packages = set(tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"])
    folders = {f"paraphina.conf.{p.name}" for p in (PYPROJECT.parent / "conf").iterdir() if p.is_dir()}
    assert folders - packages == set()
