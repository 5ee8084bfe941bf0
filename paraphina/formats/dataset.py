"""Research rows (one per run) and the original JSONL dataset files that hold them.

Several processes may append to one dataset at once, so appends take an exclusive lock."""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import METRIC_KEYS, ROW_KNOBS
from paraphina.formats.telemetry import BOOL, INT, NUMBER, STR, Field, read_jsonl, records_frame

_TEXT_KEYS = ("timestamp_utc", "label", "profile", "notes", "telemetry_path")
ROW_KEYS: tuple[str, ...] = (*_TEXT_KEYS, *METRIC_KEYS, *ROW_KNOBS)

# What a dataset line must hold for the summaries; the rest may be absent in older files.
_REQUIRED = ("profile", "num_ticks", "final_pnl", "max_drawdown", "kill_switch")
_KINDS = {**dict.fromkeys(_TEXT_KEYS, STR), "num_ticks": INT, "kill_switch": BOOL, "time_to_kill": INT}
ROW_FIELDS: dict[str, Field] = {key: Field(_KINDS.get(key, NUMBER), key in _REQUIRED) for key in ROW_KEYS}


def utc_timestamp() -> str:
    """Now, as a research row's `timestamp_utc` (UTC, ISO 8601, whole seconds)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_row(
    metrics: Mapping[str, Any],
    *,
    profile: str,
    label: str | None = None,
    notes: str | None = None,
    telemetry_path: str | os.PathLike[str] | None = None,
    knobs: Mapping[str, float | None] | None = None,
    timestamp_utc: str | None = None,
) -> dict[str, Any]:
    """A research row with exactly ROW_KEYS, in order; the timestamp defaults to now (UTC, ISO 8601)."""
    knobs = dict(knobs or {})
    unknown = sorted(set(knobs) - set(ROW_KNOBS))
    if unknown:
        raise ValueError(f"unknown knobs {unknown}; expected some of {list(ROW_KNOBS)}")
    return {
        "timestamp_utc": timestamp_utc or utc_timestamp(),
        "label": label,
        "profile": profile,
        "notes": notes,
        "telemetry_path": None if telemetry_path is None else os.fspath(telemetry_path),
        **{key: metrics[key] for key in METRIC_KEYS},
        **{key: None if knobs.get(key) is None else float(knobs[key]) for key in ROW_KNOBS},
    }


def append_rows(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows as JSON lines, safe against concurrent appenders (flock, one write, fsync)."""
    try:
        data = "".join(json.dumps(dict(row), allow_nan=False) + "\n" for row in rows).encode("utf-8")
    except ValueError as exc:
        raise ParaphinaError(f"{os.fspath(path)}: a row to append has a non-finite number ({exc})") from None
    if not data:
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # never glue a row onto an unterminated last line
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # closing releases the lock
    except OSError as exc:
        raise ParaphinaError(
            f"{os.fspath(path)}: cannot append to the dataset ({exc.strerror or exc}); choose a writable path"
        ) from None


def read_rows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a research dataset (ours or the original's) as a DataFrame, one row per run.

    Columns are ROW_KEYS (absent ones filled with None/NaN) followed by any extra scalar keys.
    `max_drawdown` is read as a magnitude: some original datasets store it as a negative number.
    """
    records, linenos = read_jsonl(path, "dataset")
    df = records_frame(records, linenos, path, ROW_FIELDS)
    df = df.reindex(columns=[*ROW_KEYS, *(c for c in df.columns if c not in ROW_KEYS)])
    df["max_drawdown"] = np.abs(df["max_drawdown"])
    return df


def check_appendable(path: str | os.PathLike[str]) -> None:
    """Fail before anything is recorded when rows could not be appended to `path` (in a folder that exists)."""
    target = Path(path).absolute()
    folder = target.parent
    if target.is_dir():
        raise ParaphinaError(f"{path}: is a folder; --out takes a JSONL file")
    if not folder.is_dir():  # a typo in the folder would otherwise start a new dataset somewhere else
        raise ParaphinaError(f"{path}: the folder {folder} does not exist; create it (mkdir -p {folder}) "
                             "or choose another --out")
    blocked = target if target.exists() and not os.access(target, os.W_OK) else None
    if blocked is None and not os.access(folder, os.W_OK):
        blocked = folder
    if blocked is not None:
        raise ParaphinaError(f"{path}: {blocked} is not writable; choose another --out")
    if target.is_file() and target.stat().st_size > 0:
        read_rows(target)  # an existing file must already be a research dataset: file:line error otherwise
