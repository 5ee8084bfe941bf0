"""Exp06 full suite: baseline, Exp02-Exp05, Exp07 and Exp08 in order, in this process, each from its own conf.

    python -m paraphina.experiments.exp06 [ticks=500 seeds=2 steps=[exp02,exp04] skip=[exp03] dry_run=true]

A failing step is reported in the status table and the exit code, and the steps after it still run, so a long
suite is never lost to one bad step.
"""
from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.loading import compose_config, override_key
from paraphina.core.errors import ParaphinaError
from paraphina.experiments.cli import print_table
from paraphina.experiments.records import ExperimentRecorder
from paraphina.tracking.store import describe

OWN_KEYS = ("steps", "skip", "dry_run", "experiment")
"""Exp06's own settings (conf/experiment/exp06.yaml); every other override is shared with the steps."""
EXIT_STEP_FAILED = 1


@dataclass
class Step:
    name: str
    entry: str                  # module:function
    config: str                 # conf/<config>.yaml
    overrides: list[str]        # shared overrides, then the step's own
    selected: bool


def plan(cfg: DictConfig, overrides: Sequence[str]) -> list[Step]:
    """Every suite step in order, marked selected or not; unknown names in steps/skip stop with one line."""
    suite = cfg.experiment.suite
    valid = list(suite)
    chosen = valid if cfg.steps is None else list(cfg.steps)
    skip = list(cfg.skip)
    unknown = [s for s in [*chosen, *skip] if s not in suite]
    if unknown:
        raise ParaphinaError(f"unknown step(s) {', '.join(map(str, unknown))}; valid steps: {', '.join(valid)}")
    shared = [o for o in overrides if override_key(o).split(".")[0] not in OWN_KEYS]
    return [Step(name, spec.entry, spec.config, [*shared, *spec.overrides], name in chosen and name not in skip)
            for name, spec in suite.items()]


def resolve(entry: str) -> Callable:
    """The function `module:function` names."""
    module, _, function = entry.partition(":")
    try:
        return getattr(importlib.import_module(module), function)
    except ImportError as exc:
        raise ParaphinaError(f"cannot import {module}: {exc}") from exc
    except AttributeError as exc:
        raise ParaphinaError(f"{module} has no function {function}") from exc


def prepare(step: Step) -> tuple[Callable[[], object], DictConfig]:
    """The step ready to call (given the overrides if it composes more configs from them), and its composed
    config; raises ParaphinaError when either cannot be had."""
    func = resolve(step.entry)
    cfg = compose_config(step.overrides, step.config)
    kwargs = {"overrides": step.overrides} if "overrides" in inspect.signature(func).parameters else {}
    return (lambda: func(cfg, **kwargs)), cfg


def run_step(step: Step, position: str) -> dict:
    """Run one step, never raising (but for an interrupt): its status row."""
    print(f"\n[{position}] {step.name}  (config {step.config} {' '.join(step.overrides)})", flush=True)
    started = time.perf_counter()
    status, error = "ok", ""
    try:
        call, _ = prepare(step)
        call()
    except ParaphinaError as exc:
        status, error = "failed", str(exc)
    except Exception as exc:  # any step failure is reported and the suite goes on
        status, error = "failed", f"{type(exc).__name__}: {describe(exc)}"
        traceback.print_exc(file=sys.stderr)
    seconds = time.perf_counter() - started
    print(f"[{position}] {step.name} {status} in {seconds:.1f} s" + (f": {error}" if error else ""), flush=True)
    return {"step": step.name, "status": status, "seconds": seconds, "error": error}


def dry_run(steps: list[Step]) -> pd.DataFrame:
    """The plan: each selected step's config composed (not run), so bad overrides show before a long suite."""
    rows = []
    for step in steps:
        row = {"step": step.name, "status": "planned" if step.selected else "skipped", "config": step.config,
               "ticks": "-", "seeds": "-", "overrides": " ".join(step.overrides), "error": ""}
        if step.selected:
            try:
                _, cfg = prepare(step)
                row.update(ticks=cfg.ticks, seeds=cfg.seeds)
            except ParaphinaError as exc:
                row.update(status="invalid", error=str(exc))
        rows.append(row)
    return pd.DataFrame(rows)


def run(cfg: DictConfig, overrides: Sequence[str]) -> pd.DataFrame:
    """Run (or with dry_run, plan) the selected steps; `overrides` are those `cfg` was composed from. Returns the
    status table: step, status (ok, failed, skipped; planned or invalid in a dry run), seconds, one-line error."""
    steps = plan(cfg, overrides)
    if cfg.dry_run:
        return dry_run(steps)
    selected = [s for s in steps if s.selected]
    with ExperimentRecorder(cfg) as recorder:
        done = {s.name: run_step(s, f"{i}/{len(selected)}") for i, s in enumerate(selected, 1)}
        table = pd.DataFrame([done.get(s.name, {"step": s.name, "status": "skipped", "seconds": 0.0, "error": ""})
                              for s in steps])
        recorder.finish(tables={"exp06_status": table},
                        metrics={"failed_steps": float((table["status"] == "failed").sum()),
                                 **{f"{row.step}_seconds": row.seconds for row in table.itertuples()
                                    if row.status != "skipped"}})
    return table


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    overrides = task_overrides()
    table = run(cfg, overrides)
    title = "Exp06 plan (dry run: nothing ran)" if cfg.dry_run else "\nExp06 status"
    columns = None if cfg.dry_run else ["step", "status", "seconds", "error"]
    print_table(table, columns, title=title)
    failed = table[table["status"].isin(["failed", "invalid"])]["step"].tolist()
    if failed:
        print(f"error: {len(failed)} step(s) {'invalid' if cfg.dry_run else 'failed'}: "
              f"{', '.join(failed)}", file=sys.stderr)
        raise SystemExit(EXIT_STEP_FAILED)


main = hydra_command("exp06", command)

if __name__ == "__main__":
    main()
