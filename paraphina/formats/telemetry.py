"""Read tick telemetry JSONL (the original engine's or ours) and condense it into run metrics; the JSONL reading
and line-numbered checks are shared with `dataset`, so both report `path:line: what is wrong`."""
from __future__ import annotations

import gzip
import json
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import REGIME_FRACTIONS, REGIME_NAMES
from paraphina.formats.jsonl import is_gzip

Kind = tuple[tuple[type, ...], str]

# Value kinds of a JSONL field: the accepted JSON types (bool is not a number) and a name for messages.
INT: Kind = ((int,), "an integer")
NUMBER: Kind = ((int, float), "a number")
BOOL: Kind = ((bool,), "true or false")
STR: Kind = ((str,), "a string")

_MISSING = object()


@dataclass(frozen=True)
class Field:
    """How one JSONL key is checked: its kind, whether it must be present, its allowed values."""

    kind: Kind
    required: bool = True
    choices: tuple[str, ...] = ()

    def accepts_all(self, values: list[Any]) -> bool:
        """Fast check of a whole column (no per-value Python call)."""
        allowed = set(self.kind[0]) if self.required else {*self.kind[0], type(None), type(_MISSING)}
        if not set(map(type, values)) <= allowed:
            return False
        return not self.choices or set(values) <= set(self.choices)

    def problem(self, key: str, value: Any) -> str | None:
        """Why `value` is not acceptable for `key`, or None when it is."""
        if value is _MISSING:
            return f"missing key '{key}'" if self.required else None
        if value is None:
            return f"{key} is null, not {self.kind[1]}" if self.required else None
        if type(value) not in self.kind[0]:
            return f"{key} {value!r} is not {self.kind[1]}"
        if self.choices and value not in self.choices:
            return f"{key} {value!r} is not one of {', '.join(self.choices)}"
        return None


TELEMETRY_FIELDS: dict[str, Field] = {
    "t": Field(INT),
    "pnl_realised": Field(NUMBER),
    "pnl_unrealised": Field(NUMBER),
    "pnl_total": Field(NUMBER),
    "risk_regime": Field(STR, choices=REGIME_NAMES),
    "kill_switch": Field(BOOL),
    "q_global_tao": Field(NUMBER),
    "dollar_delta_usd": Field(NUMBER),
    "basis_usd": Field(NUMBER),
}
REQUIRED_KEYS: tuple[str, ...] = tuple(TELEMETRY_FIELDS)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def line_error(path: str | os.PathLike[str], lineno: int, problem: str) -> ParaphinaError:
    """A one-line error `path:lineno: problem`."""
    return ParaphinaError(" ".join(f"{os.fspath(path)}:{lineno}: {problem}".split()))


def read_jsonl(path: str | os.PathLike[str], what: str, skip_blank: bool = True
               ) -> tuple[list[dict[str, Any]], list[int]]:
    """Parse a JSONL file of objects; return them with their 1-based line numbers.

    Blank lines are skipped, or with `skip_blank=False` an error (a file written one row per line has none,
    so one is a sign of files glued together or cut). NaN/Infinity are rejected. `what` names the file kind
    in messages.
    """
    records: list[dict[str, Any]] = []
    linenos: list[int] = []
    blank = 0   # the first blank line's number
    decode = _DECODER.decode
    try:
        with (gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")) as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    obj = decode(raw.decode("utf-8"))
                except json.JSONDecodeError as exc:
                    if not raw.strip():
                        blank = blank or lineno
                        continue
                    raise line_error(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                except ValueError as exc:  # bad UTF-8, or NaN/Infinity
                    raise line_error(path, lineno, f"not valid JSON ({exc})") from None
                if type(obj) is not dict:
                    raise line_error(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
                records.append(obj)
                linenos.append(lineno)
    except FileNotFoundError:
        raise ParaphinaError(f"{os.fspath(path)}: no such {what} file; check the path") from None
    except (OSError, EOFError, zlib.error) as exc:  # a .gz: not gzip (OSError), cut off (EOFError), corrupt (zlib)
        reason = getattr(exc, "strerror", None) or exc
        raise ParaphinaError(f"{os.fspath(path)}: cannot read the {what} file ({reason})") from None
    if not records:
        raise ParaphinaError(f"{os.fspath(path)}: empty {what} file (no JSON lines); point to a file with data")
    if blank and not skip_blank:
        raise line_error(path, blank, f"blank line; a {what} file has one JSON object on every line: remove it")
    return records, linenos


def check_fields(
    records: list[dict[str, Any]], linenos: list[int], path: str | os.PathLike[str], fields: Mapping[str, Field]
) -> None:
    """Raise a line-numbered error for the first record breaking `fields` (checked key by key)."""
    for key, field in fields.items():
        values = [record.get(key, _MISSING) for record in records]
        if field.accepts_all(values):
            continue
        for value, lineno in zip(values, linenos):
            problem = field.problem(key, value)
            if problem is not None:
                raise line_error(path, lineno, problem)


def records_frame(
    records: list[dict[str, Any]], linenos: list[int], path: str | os.PathLike[str], fields: Mapping[str, Field]
) -> pd.DataFrame:
    """Check records against `fields` and return them as a DataFrame with scalar columns only.

    Keys outside `fields` are kept when scalar; nested objects and lists are dropped.
    Numeric fields become float64. A number that overflows to infinity (e.g. 1e400) is an error;
    NaN/Infinity literals were already refused by `read_jsonl`.
    """
    check_fields(records, linenos, path, fields)
    df = pd.DataFrame.from_records(records)
    df = df.drop(columns=[c for c in df.columns
                          if df[c].dtype == object and df[c].map(lambda v: isinstance(v, (dict, list))).any()])
    df = df.astype({key: float for key, field in fields.items() if field.kind is NUMBER and key in df.columns})
    for col in df.columns:
        if df[col].dtype.kind == "f":
            bad = np.flatnonzero(np.isinf(df[col].to_numpy()))
            if bad.size:
                raise line_error(path, linenos[bad[0]], f"{col} is not a finite number")
    return df


def load_telemetry(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Load a telemetry JSONL file (one object per tick) into a DataFrame, one row per tick.

    The required keys are checked on every line and `t` must increase from row to row; other scalar keys are
    kept as columns; nested objects (venue_status, venue_q_tao) are dropped.
    """
    records, linenos = read_jsonl(path, "telemetry", skip_blank=False)
    df = records_frame(records, linenos, path, TELEMETRY_FIELDS)
    t = df["t"].to_numpy()
    back = np.flatnonzero(np.diff(t) <= 0)
    if back.size:
        i = back[0] + 1
        raise line_error(path, linenos[i], f"t {t[i]} does not follow t {t[i - 1]} of the row before; telemetry "
                         "rows go in tick order (one file per run)")
    return df


def max_drawdown(pnl: np.ndarray) -> float:
    """Largest drop of `pnl` below its running peak (the peak starts at the first value); >= 0."""
    return float(np.max(np.maximum.accumulate(pnl) - pnl))


def run_metrics(df: pd.DataFrame) -> dict[str, Any]:
    """Run-level metrics (spec section 5) of one telemetry series, as plain Python values."""
    if df.empty:
        raise ParaphinaError("telemetry has no ticks; metrics need at least one")
    pnl = df["pnl_total"].to_numpy(dtype=float)
    regime = df["risk_regime"].to_numpy()
    kill = df["kill_switch"].to_numpy(dtype=bool)
    killed = bool(kill.any())
    return {
        # rows may be every n-th tick (telemetry.every, with the last tick's row); the original's t is 1-based
        "num_ticks": int(df["t"].iloc[-1] - df["t"].iloc[0]) + 1,
        "final_pnl": float(pnl[-1]),
        "max_pnl": float(pnl.max()),
        "min_pnl": float(pnl.min()),
        "max_drawdown": max_drawdown(pnl),
        **{fraction: float(np.mean(regime == name)) for fraction, name in zip(REGIME_FRACTIONS, REGIME_NAMES)},
        "kill_switch": killed,
        "time_to_kill": int(df["t"].iloc[int(np.argmax(kill))]) if killed else None,
        "max_abs_delta_usd": float(np.abs(df["dollar_delta_usd"].to_numpy(dtype=float)).max()),
        "max_abs_basis_usd": float(np.abs(df["basis_usd"].to_numpy(dtype=float)).max()),
    }
