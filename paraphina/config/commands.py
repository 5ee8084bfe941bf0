"""Command lines of the entry points that compose conf/ themselves (experiments, calibration, benchmark).

They take Hydra overrides (`key=value`) and `--help`, which prints the command's docstring and the
settings file it composes.
"""
from __future__ import annotations

import sys

from paraphina.config.loading import CONF_DIR
from paraphina.core.errors import ParaphinaError


def command_overrides(argv: list[str] | None, config_name: str, doc: str | None) -> list[str]:
    """The overrides of a command line; `--help` prints the usage and exits, other flags are errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print((doc or "").strip())
        path = next(p for p in (CONF_DIR / f"{config_name}.yaml", CONF_DIR / "experiment" / f"{config_name}.yaml")
                    if p.is_file())
        print(f"\nSettings ({path.relative_to(CONF_DIR.parent)}; every key of `python -m paraphina.run --cfg job` "
              f"applies too):\n")
        print(path.read_text())
        raise SystemExit(0)
    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise ParaphinaError(f"unknown option {flags[0]}; this command takes Hydra overrides key=value and --help")
    return args
