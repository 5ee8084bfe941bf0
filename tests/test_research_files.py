"""File-level research tools: telemetry metrics, dataset files (errors, concurrent appends), summaries."""
from __future__ import annotations

import gzip
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import ROW_KNOBS
from paraphina.formats.dataset import ROW_KEYS, append_rows, make_row, read_rows
from paraphina.world_model.summary import format_summary, global_summary, per_profile_summary, top_runs
from paraphina.formats.telemetry import REQUIRED_KEYS, load_telemetry, max_drawdown, run_metrics

DD_WEIGHT = 0.5  # conf/world_model/tiers.yaml utility_dd_weight

# t, pnl_total, risk_regime, kill_switch, dollar_delta_usd, basis_usd: original keys only.
HAND_TICKS = [
    (1, 0.0, "Normal", False, 100.0, -5.0),
    (2, 10.0, "Normal", False, -250.0, 2.0),
    (3, 4.0, "Warning", False, 80.0, 7.5),
    (4, 12.0, "Normal", False, 30.0, -1.0),
    (5, -3.0, "HardLimit", True, 60.0, -20.0),
    (6, -1.0, "HardLimit", True, 10.0, 3.0),
]


def tick(t: int, pnl: float, regime: str = "Normal", kill: bool = False, delta: float = 0.0, basis: float = 0.0) -> dict:
    """A telemetry line with exactly the original engine's keys."""
    return {
        "t": t,
        "pnl_realised": pnl / 2,
        "pnl_unrealised": pnl / 2,
        "pnl_total": pnl,
        "risk_regime": regime,
        "kill_switch": kill,
        "q_global_tao": 0.0,
        "dollar_delta_usd": delta,
        "basis_usd": basis,
    }


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def hand_telemetry(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "hand.jsonl", [json.dumps(tick(*row)) for row in HAND_TICKS])


def test_original_telemetry_metrics_worked_by_hand(hand_telemetry: Path) -> None:
    df = load_telemetry(hand_telemetry)
    assert list(df.columns) == list(REQUIRED_KEYS)
    metrics = run_metrics(df)
    assert metrics == {
        "num_ticks": 6,
        "final_pnl": -1.0,
        "max_pnl": 12.0,
        "min_pnl": -3.0,
        "max_drawdown": 15.0,  # peak 12 at t=4, trough -3 at t=5
        "frac_normal": 0.5,
        "frac_warning": 1 / 6,
        "frac_hard": 2 / 6,
        "kill_switch": True,
        "time_to_kill": 5,
        "max_abs_delta_usd": 250.0,
        "max_abs_basis_usd": 20.0,
    }
    assert all(type(metrics[k]) is float for k in metrics if k not in {"num_ticks", "kill_switch", "time_to_kill"})
    assert type(metrics["num_ticks"]) is int and type(metrics["kill_switch"]) is bool
    assert type(metrics["time_to_kill"]) is int


def test_no_kill_gives_null_time_to_kill(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "calm.jsonl", [json.dumps(tick(t, float(t))) for t in range(3)])
    metrics = run_metrics(load_telemetry(path))
    assert metrics["kill_switch"] is False and metrics["time_to_kill"] is None
    assert metrics["frac_normal"] == 1.0 and metrics["max_drawdown"] == 0.0


def test_extra_keys_kept_nested_dropped(tmp_path: Path) -> None:
    row = tick(0, 1.0) | {"fair_value": 300.5, "mm_fills": 2, "venue_status": {"a": "Healthy"}, "venue_q_tao": {"a": 1.0}}
    df = load_telemetry(write_lines(tmp_path / "ours.jsonl", [json.dumps(row)]))
    assert list(df.columns) == [*REQUIRED_KEYS, "fair_value", "mm_fills"]
    assert df["fair_value"].iloc[0] == 300.5


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        ([1.0, 2.0, 2.0, 5.0], 0.0),  # monotone rising
        ([0.0, 3.0, 8.0, 1.0, 6.0, 2.0], 7.0),  # peak 8 then trough 1
        ([10.0, 4.0, 6.0, 9.0], 6.0),  # peak at the first row
        ([-5.0, -7.0, -1.0, -4.0], 3.0),  # all negative; later peak -1, trough -4
        ([3.0], 0.0),
    ],
)
def test_max_drawdown_hand_series(series: list[float], expected: float) -> None:
    assert max_drawdown(np.array(series)) == expected


GOOD = json.dumps(tick(0, 1.0))
NEXT = json.dumps(tick(1, 1.0))


@pytest.mark.parametrize(
    ("lines", "lineno", "fragment"),
    [
        ([GOOD, GOOD, '{"t": 2, "pnl_total" 1}'], 3, "not valid JSON"),
        ([GOOD, json.dumps({k: v for k, v in tick(1, 1.0).items() if k != "pnl_total"})], 2, "missing key 'pnl_total'"),
        ([GOOD, GOOD, GOOD, GOOD, json.dumps(tick(4, 1.0, "Foo"))], 5, "risk_regime 'Foo' is not one of Normal, Warning, HardLimit"),
        ([GOOD, GOOD.replace('"pnl_total": 1.0', '"pnl_total": NaN')], 2, "NaN is not a finite number"),
        ([GOOD.replace('"basis_usd": 0.0', '"basis_usd": -Infinity')], 1, "-Infinity is not a finite number"),
        ([GOOD, GOOD, GOOD.replace('"basis_usd": 0.0', '"basis_usd": 1e400')], 3, "basis_usd is not a finite number"),
        ([GOOD, GOOD.replace('"pnl_total": 1.0', '"pnl_total": "12.5"')], 2, "pnl_total '12.5' is not a number"),
        ([GOOD.replace('"pnl_total": 1.0', '"pnl_total": true')], 1, "pnl_total True is not a number"),
        ([GOOD, GOOD.replace('"kill_switch": false', '"kill_switch": 1')], 2, "kill_switch 1 is not true or false"),
        ([GOOD, GOOD, GOOD.replace('"t": 0', '"t": 2.5')], 3, "t 2.5 is not an integer"),
        ([GOOD, "[1, 2]"], 2, "expected a JSON object"),
        ([GOOD, "", GOOD[:-7]], 3, "not valid JSON"),  # truncated last line, after a blank one
    ],
)
def test_telemetry_errors_name_file_and_line(tmp_path: Path, lines: list[str], lineno: int, fragment: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(ParaphinaError) as info:
        load_telemetry(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{lineno}: ")
    assert fragment in message
    assert "\n" not in message


def test_bad_utf8_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bin.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"t": "\xff"}\n')
    with pytest.raises(ParaphinaError, match=rf"^{path}:2: not valid JSON"):
        load_telemetry(path)


@pytest.mark.parametrize("text, lineno", [
    (f"{GOOD}\n\n{NEXT}\n", 2),
    (f"{GOOD}\n{NEXT}\n\n  \n", 3),
])
def test_blank_lines_in_telemetry_are_errors(tmp_path: Path, text: str, lineno: int) -> None:
    path = tmp_path / "blank.jsonl"
    path.write_text(text)
    with pytest.raises(ParaphinaError) as info:
        load_telemetry(path)
    assert str(info.value) == f"{path}:{lineno}: blank line; a telemetry file has one JSON object on every line: remove it"


def test_blank_lines_in_datasets_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "ds.jsonl"
    path.write_text(json.dumps(metrics_row(1)) + "\n\n" + json.dumps(metrics_row(2)) + "\n\n")
    assert list(read_rows(path)["label"]) == ["run001", "run002"]


@pytest.mark.parametrize("ts, lineno, problem", [
    ([0, 1, 1], 3, "t 1 does not follow t 1 of the row before"),
    ([0, 60, 30, 90], 3, "t 30 does not follow t 60 of the row before"),
])
def test_telemetry_rows_out_of_tick_order_are_errors(tmp_path: Path, ts: list[int], lineno: int, problem: str) -> None:
    path = write_lines(tmp_path / "order.jsonl", [json.dumps(tick(t, 1.0)) for t in ts])
    with pytest.raises(ParaphinaError) as info:
        load_telemetry(path)
    assert str(info.value) == f"{path}:{lineno}: {problem}; telemetry rows go in tick order (one file per run)"


def test_rows_every_n_ticks_are_in_order(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "every.jsonl", [json.dumps(tick(t, 1.0)) for t in (0, 60, 120, 179)])
    assert run_metrics(load_telemetry(path))["num_ticks"] == 180


@pytest.mark.parametrize("damage, reason", [
    (lambda data: data[: len(data) // 2], "Compressed file ended before the end-of-stream marker"),   # cut off
    (lambda data: data[:40] + b"x" * 20 + data[60:], "Error -3 while decompressing data"),          # corrupted
    (lambda data: b"plain text, no gzip\n", "Not a gzipped file"),
])
def test_a_damaged_gzip_file_is_one_line(tmp_path: Path, damage, reason: str) -> None:
    rows = "".join(json.dumps({"t": t, "pnl_total": 0.0}) + "\n" for t in range(2000))
    path = tmp_path / "run.jsonl.gz"
    path.write_bytes(damage(gzip.compress(rows.encode())))
    for read in (load_telemetry, read_rows):
        with pytest.raises(ParaphinaError, match=f"^{path}: cannot read the .* file \\({reason}") as info:
            read(path)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [None, "", "\n\n"])
def test_missing_or_empty_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "nothing.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ParaphinaError) as info:
        load_telemetry(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and ("no such" in message or "empty" in message)
    assert "\n" not in message


def metrics_row(i: int) -> dict:
    """A synthetic research row; the fields vary with `i` so groups and ranks differ."""
    metrics = {
        "num_ticks": 100,
        "final_pnl": float((i * 37) % 23 - 11),
        "max_pnl": 30.0,
        "min_pnl": -30.0,
        "max_drawdown": float((i * 11) % 7),
        "frac_normal": 0.9,
        "frac_warning": 0.1,
        "frac_hard": 0.0,
        "kill_switch": i % 4 == 0,
        "time_to_kill": 50 if i % 4 == 0 else None,
        "max_abs_delta_usd": 1000.0,
        "max_abs_basis_usd": 10.0,
    }
    profile = ("conservative", "balanced", "aggressive")[i % 3]
    return make_row(metrics, profile=profile, label=f"run{i:03d}", knobs={"band_base": 5.0, "daily_loss_limit": 2000})


def test_make_row_keys_and_roundtrip(tmp_path: Path) -> None:
    row = metrics_row(0)
    assert tuple(row) == ROW_KEYS
    assert row["mm_size_eta"] is None and row["daily_loss_limit"] == 2000.0
    assert row["timestamp_utc"].endswith("Z")
    path = tmp_path / "ds.jsonl"
    append_rows(path, [row])
    back = read_rows(path)
    assert list(back.columns) == list(ROW_KEYS)
    assert back["profile"].iloc[0] == "conservative" and back["time_to_kill"].iloc[0] == 50
    with pytest.raises(ValueError, match="unknown knobs"):
        make_row(row, profile="x", knobs={"band": 1.0})
    assert set(ROW_KNOBS) <= set(ROW_KEYS)


def test_original_dataset_lines_missing_optional_keys(tmp_path: Path) -> None:
    original = {"label": "old", "profile": "balanced", "num_ticks": 2000, "final_pnl": 12.0, "max_drawdown": -4.0, "kill_switch": False}
    df = read_rows(write_lines(tmp_path / "v001.jsonl", [json.dumps(original)]))
    assert df["max_drawdown"].iloc[0] == 4.0  # the original's negative drawdown is read as a magnitude
    assert pd.isna(df["time_to_kill"].iloc[0])


def test_append_after_unterminated_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "ds.jsonl"
    path.write_text(json.dumps(metrics_row(1)))  # no final newline
    append_rows(path, [metrics_row(2)])
    assert list(read_rows(path)["label"]) == ["run001", "run002"]


def test_dataset_errors(tmp_path: Path) -> None:
    good = json.dumps(metrics_row(1))
    path = write_lines(tmp_path / "ds.jsonl", [good, good, json.dumps(metrics_row(2) | {"final_pnl": None})])
    with pytest.raises(ParaphinaError, match=rf"^{path}:3: final_pnl is null, not a number$"):
        read_rows(path)
    path = write_lines(tmp_path / "ds2.jsonl", [good, json.dumps({k: v for k, v in metrics_row(2).items() if k != "profile"})])
    with pytest.raises(ParaphinaError, match=rf"^{path}:2: missing key 'profile'$"):
        read_rows(path)
    with pytest.raises(ParaphinaError, match=rf"^{tmp_path / 'none.jsonl'}: no such dataset file"):
        read_rows(tmp_path / "none.jsonl")


def test_append_to_unwritable_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / "ds.jsonl"  # a directory that is a file
    with pytest.raises(ParaphinaError) as info:
        append_rows(target, [metrics_row(0)])
    assert str(info.value).startswith(f"{target}: cannot append") and "\n" not in str(info.value)


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_rows(path, [metrics_row(worker * 1000 + i)])


def test_concurrent_appends_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.jsonl")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(path, w, 200)) for w in (1, 2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
    assert [p.exitcode for p in workers] == [0, 0]
    lines = Path(path).read_text().splitlines()
    assert len(lines) == 400
    labels = sorted(json.loads(line)["label"] for line in lines)
    assert labels == sorted(f"run{w * 1000 + i:03d}" for w in (1, 2) for i in range(200))
    assert len(read_rows(path)) == 400


@pytest.fixture
def dataset(tmp_path: Path) -> pd.DataFrame:
    path = tmp_path / "ds.jsonl"
    append_rows(path, [metrics_row(i) for i in range(30)])
    return read_rows(path)


def test_summaries_match_pandas(dataset: pd.DataFrame) -> None:
    assert global_summary(dataset) == {
        "runs": 30,
        "mean_final_pnl": dataset["final_pnl"].mean(),
        "mean_max_drawdown": dataset["max_drawdown"].mean(),
        "kill_fraction": dataset["kill_switch"].astype(float).mean(),
    }
    by = per_profile_summary(dataset)
    groups = dataset.groupby("profile")
    assert list(by.index) == ["aggressive", "balanced", "conservative"]
    pd.testing.assert_series_equal(by["runs"], groups.size(), check_names=False)
    pd.testing.assert_series_equal(by["final_pnl_mean"], groups["final_pnl"].mean(), check_names=False)
    pd.testing.assert_series_equal(by["final_pnl_std"], groups["final_pnl"].std(), check_names=False)
    pd.testing.assert_series_equal(by["max_drawdown_mean"], groups["max_drawdown"].mean(), check_names=False)
    pd.testing.assert_series_equal(by["kill_fraction"], groups["kill_switch"].mean(), check_names=False)


def test_top_runs_by_utility_stable_ties() -> None:
    df = pd.DataFrame(
        {
            "label": ["a", "b", "c", "d", "e"],
            "final_pnl": [10.0, 12.0, 8.0, 11.0, 20.0],
            "max_drawdown": [4.0, 8.0, 0.0, 2.0, 30.0],
        }
    )
    # utilities 8, 8, 8, 10, 5: d first, then the ties in file order, then e
    top = top_runs(df, 4, DD_WEIGHT)
    assert list(top["label"]) == ["d", "a", "b", "c"]
    assert list(top["utility"]) == [10.0, 8.0, 8.0, 8.0]
    assert list(top_runs(df, 5, 0.0)["label"]) == ["e", "b", "d", "a", "c"]


def test_format_summary(dataset: pd.DataFrame) -> None:
    text = format_summary(dataset, 3, DD_WEIGHT)
    assert "runs               30" in text and "Top 3 runs by utility (final_pnl - 0.5 * max_drawdown)" in text
    best = top_runs(dataset, 1, DD_WEIGHT)["label"].iloc[0]
    assert best in text.split("=== Top")[1].splitlines()[3]
    for profile in ("aggressive", "balanced", "conservative"):
        assert profile in text
    with pytest.raises(ParaphinaError, match="no runs"):
        format_summary(dataset.iloc[:0], 3, DD_WEIGHT)
