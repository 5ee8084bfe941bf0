"""JSONL telemetry (ENGINE_SPEC section 4): one file per run, one object per tick.

Files are written beside their final name and renamed into place when the batch completes, so an
interrupted run leaves nothing half-written; an unwritable path is an error before the engine starts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from paraphina.core.names import REGIME_NAMES, STATUS_NAMES
from paraphina.core.errors import ParaphinaError

NUMBER_KEYS = ("pnl_realised", "pnl_unrealised", "pnl_total")
AFTER_REGIME_KEYS = ("q_global_tao", "dollar_delta_usd", "basis_usd", "fair_value", "sigma_eff", "vol_ratio",
                     "spread_mult", "size_mult", "band_mult", "delta_limit_usd", "basis_gross_usd", "pnl_funding",
                     "fees_usd", "mm_volume_tao", "hedge_volume_tao")


def _with_suffix(text: str, suffix: str) -> str:
    stem, dot, ext = text.rpartition(".")
    return f"{stem}{suffix}.{ext}" if dot and "/" not in ext else f"{text}{suffix}"


def telemetry_paths(template: str, seeds: Sequence[int], profiles: Sequence[str], job: int | None = None
                    ) -> list[Path]:
    """One path per run: `{seed}`, `{profile}` and `{job}` in the template are filled.

    A batch without `{seed}` gets `-s<seed>`, a job of a Hydra multirun without `{job}` gets `-j<job>`,
    so no run overwrites another's file.
    """
    text = template
    if len(seeds) > 1 and "{seed}" not in text:
        text = _with_suffix(text, "-s{seed}")
    if job is not None and "{job}" not in text:
        text = _with_suffix(text, "-j{job}")
    paths = []
    for seed, profile in zip(seeds, profiles):
        paths.append(Path(text.replace("{seed}", str(int(seed))).replace("{profile}", str(profile))
                          .replace("{job}", str(job))))
    if len(set(paths)) != len(paths):
        raise ParaphinaError(f"telemetry.path '{template}' gives the same file to several runs; add {{seed}} and {{profile}}")
    return paths


class TelemetryWriter:
    """An engine observer that writes each live run's row to its own file."""

    def __init__(self, paths: Sequence[Path], venue_names: Sequence[str]):
        self.paths = [Path(p) for p in paths]
        self.venues = list(venue_names)
        self._tmp = [p.with_name(p.name + ".part") for p in self.paths]
        self._files: list = []

    def __enter__(self) -> "TelemetryWriter":
        for path, tmp in zip(self.paths, self._tmp):
            if path.is_dir():
                self._abort()
                raise ParaphinaError(f"telemetry path {path} is a folder; give a file, e.g. {path / 'run.jsonl'}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._files.append(open(tmp, "w", encoding="utf-8"))
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

    def __call__(self, tick: int, ids: np.ndarray, row: dict) -> None:
        cols = {k: row[k][0].tolist() for k in NUMBER_KEYS + AFTER_REGIME_KEYS}
        regimes = row["risk_regime"][0].tolist()
        kills = row["kill_switch"][0].tolist()
        fills = row["mm_fills"][0].tolist()
        status = row["venue_status"].T.tolist()
        venue_q = row["venue_q_tao"].T.tolist()
        for c, run in enumerate(ids.tolist()):
            obj = {"t": tick}
            for k in NUMBER_KEYS:
                obj[k] = cols[k][c]
            obj["risk_regime"] = REGIME_NAMES[regimes[c]]
            obj["kill_switch"] = kills[c]
            for k in AFTER_REGIME_KEYS:
                obj[k] = cols[k][c]
            obj["mm_fills"] = int(fills[c])
            obj["venue_status"] = {v: STATUS_NAMES[s] for v, s in zip(self.venues, status[c])}
            obj["venue_q_tao"] = dict(zip(self.venues, venue_q[c]))
            self._files[run].write(json.dumps(obj, allow_nan=False) + "\n")
