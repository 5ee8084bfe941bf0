"""JSONL telemetry (ENGINE_SPEC section 4): one file per run (gzip-compressed for a path ending in .gz), one
object per row, renamed into place when the batch completes so an interrupted run leaves nothing half-written."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from paraphina.core.errors import ParaphinaError
from paraphina.core.files import writer_tag
from paraphina.core.names import PART_SUFFIX, REGIME_NAMES, STATUS_NAMES
from paraphina.engine.kernel import ROW_KEYS
from paraphina.engine.simulate import TickRows
from paraphina.formats.jsonl import open_jsonl_writer

NUMBER_KEYS = ("pnl_realised", "pnl_unrealised", "pnl_total")
AFTER_REGIME_KEYS = ("q_global_tao", "dollar_delta_usd", "basis_usd", "fair_value", "sigma_eff", "vol_ratio",
                     "spread_mult", "size_mult", "band_mult", "delta_limit_usd", "basis_gross_usd", "pnl_funding",
                     "fees_usd", "mm_volume_tao", "hedge_volume_tao")


def _with_suffix(text: str, suffix: str) -> str:
    """`suffix` before the file's extension: `run.jsonl` -> `run-s0.jsonl`, `run.jsonl.gz` -> `run-s0.jsonl.gz`."""
    folder, slash, name = text.rpartition("/")
    base = name.removesuffix(".gz")
    gzip = name[len(base):]
    stem, dot, ext = base.rpartition(".")
    return f"{folder}{slash}{f'{stem}{suffix}.{ext}' if dot and stem else f'{base}{suffix}'}{gzip}"


def telemetry_paths(template: str, seeds: Sequence[int], profiles: Sequence[str], job: int | None = None
                    ) -> list[Path]:
    """One path per run, `{seed}`, `{profile}` and `{job}` filled; so that no run overwrites another's file, a
    batch without `{seed}` gets `-s<seed>`, a job of a Hydra multirun without `{job}` gets `-j<job>`."""
    text = template
    if len(seeds) > 1 and "{seed}" not in text:
        text = _with_suffix(text, "-s{seed}")
    if job is not None and "{job}" not in text:
        text = _with_suffix(text, "-j{job}")
    paths = [Path(text.replace("{seed}", str(int(seed))).replace("{profile}", str(profile)).replace("{job}", str(job)))
             for seed, profile in zip(seeds, profiles)]
    if len(set(paths)) != len(paths):
        raise ParaphinaError(f"telemetry.path '{template}' gives the same file to several runs; add {{seed}} and {{profile}}")
    return paths


@contextmanager
def removed_unless_done(paths: Sequence[Path]) -> Iterator[None]:
    """Remove the telemetry files (or folders) `paths` when the block fails or is stopped: the runs they
    belong to are not recorded, and files of a command that did not finish are not left behind."""
    try:
        yield
    except BaseException:
        for path in paths:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def part_path(path: Path) -> Path:
    """Where a telemetry file is written until its batch completes, named by its writer (core.files.writer_tag)."""
    return path.with_name(f"{path.name}.{writer_tag()}{PART_SUFFIX}")


class TelemetryWriter:
    """Writes each run's telemetry rows to its own file, moved into place when the batch completes."""

    def __init__(self, paths: Sequence[Path], venue_names: Sequence[str]):
        self.paths = [Path(p) for p in paths]
        self.venues = list(venue_names)
        self._tmp = [part_path(p) for p in self.paths]
        self._files: list = []

    def __enter__(self) -> "TelemetryWriter":
        for path, tmp in zip(self.paths, self._tmp):
            if path.is_dir():
                self._abort()
                raise ParaphinaError(f"telemetry path {path} is a folder; give a file, e.g. {path / 'run.jsonl'}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._files.append(open_jsonl_writer(path, tmp))
            except OSError as exc:
                self._abort()
                raise ParaphinaError(f"cannot write telemetry to {path} ({exc.strerror}); "
                                     "choose a writable telemetry.path") from exc
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self._abort()
            return False
        for f in self._files:
            f.close()
        try:
            for tmp, path in zip(self._tmp, self.paths):
                os.replace(tmp, path)
        except OSError as exc:
            for tmp in self._tmp:
                tmp.unlink(missing_ok=True)
            raise ParaphinaError(f"cannot move telemetry into place at {exc.filename} ({exc.strerror}); "
                                 "choose another telemetry.path") from exc
        finally:
            self._files = []
        return False

    def _abort(self) -> None:
        for f, tmp in zip(self._files, self._tmp):
            f.close()
            tmp.unlink(missing_ok=True)
        self._files = []

    def write(self, rows: TickRows) -> None:
        """Every recorded run's rows (run `rows.runs[j]` into file j), one JSON object per line."""
        for j, run in enumerate(rows.runs):
            self._files[run].writelines(self._json_line(row) for row in rows.of(j).tolist())

    def _json_line(self, row: tuple) -> str:
        """One row record (as a tuple of ROW_KEYS, venue arrays, probes) as the spec's JSON object."""
        values = dict(zip(ROW_KEYS, row))
        status, venue_q = row[len(ROW_KEYS)], row[len(ROW_KEYS) + 1]
        obj = {"t": int(values["t"]), **{k: values[k] for k in NUMBER_KEYS},
               "risk_regime": REGIME_NAMES[int(values["risk_regime"])], "kill_switch": bool(values["kill_switch"]),
               **{k: values[k] for k in AFTER_REGIME_KEYS}, "mm_fills": int(values["mm_fills"]),
               "venue_status": {v: STATUS_NAMES[int(s)] for v, s in zip(self.venues, status)},
               "venue_q_tao": dict(zip(self.venues, venue_q.tolist())),
               "market_orders": int(values["market_orders"]), "alpha": values["alpha"]}
        return json.dumps(obj, allow_nan=False) + "\n"
