"""The research tools (ticks, summary, telemetry_summary, transfer) on real files and a real SQLite store."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import free_port
from paraphina.research import summary, telemetry_summary, ticks, transfer
from paraphina.world_model.summary import format_summary
from paraphina.formats.dataset import ROW_KEYS, read_rows
from paraphina.tracking.datasets import list_datasets, load_dataset
from paraphina.tracking.ui import page, ui_command, url

# Telemetry as another program writes it: the original engine's keys only. PnL peaks at 150 (t=5), falls to 30
# (t=6): max drawdown 120. The kill switch fires at t=7 and stays on.
ORIGINAL_TICKS = [
    # t, pnl_total, risk_regime, kill_switch, dollar_delta_usd, basis_usd
    (1, 0.0, "Normal", False, 10.0, 1.0),
    (2, 50.0, "Normal", False, -20.0, -2.0),
    (3, 120.0, "Normal", False, 300.0, 3.0),
    (4, 80.0, "Warning", False, -450.0, -4.0),
    (5, 150.0, "Normal", False, 100.0, 25.5),
    (6, 30.0, "Warning", False, 50.0, -30.25),
    (7, 60.0, "HardLimit", True, 0.0, 2.0),
    (8, 40.0, "HardLimit", True, 5.0, 0.0),
]
ORIGINAL_METRICS = {
    "num_ticks": 8, "final_pnl": 40.0, "max_pnl": 150.0, "min_pnl": 0.0, "max_drawdown": 120.0,
    "frac_normal": 0.5, "frac_warning": 0.25, "frac_hard": 0.25, "kill_switch": True, "time_to_kill": 7,
    "max_abs_delta_usd": 450.0, "max_abs_basis_usd": 30.25,
}  # fmt: skip


def original_telemetry(path: Path, shift: float = 0.0) -> Path:
    """Write ORIGINAL_TICKS (PnL shifted by `shift`) with exactly the original engine's keys."""
    lines = []
    for t, pnl, regime, kill, delta, basis in ORIGINAL_TICKS:
        pnl += shift
        lines.append(json.dumps({"t": t, "pnl_realised": pnl * 0.25, "pnl_unrealised": pnl * 0.75, "pnl_total": pnl,
                                 "risk_regime": regime, "kill_switch": kill, "q_global_tao": delta / 400.0,
                                 "dollar_delta_usd": delta, "basis_usd": basis}))  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def record_ticks(telemetry: Path, uri: str, label: str, *extra: str) -> None:
    ticks.main(["--telemetry", str(telemetry), "--profile", "balanced", "--label", label, "--tracking-uri", uri,
                *extra])  # fmt: skip


def one_line_error(capsys, call) -> str:
    """Run `call`, expect exit 2 with a single `error: ...` line on stderr and no traceback; return that line."""
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def dataset_runs(uri: str) -> int:
    """Every run in the store (any experiment), to prove nothing was recorded."""
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=1000))


def test_original_telemetry_becomes_a_research_run(tmp_path: Path, made_store: str, capsys) -> None:
    telemetry = original_telemetry(tmp_path / "orig" / "run1.jsonl")
    out = tmp_path / "research_v001.jsonl"
    record_ticks(telemetry, made_store, "orig-001", "--out", str(out), "--notes", "by hand", "--band-base", "5.0")
    printed = capsys.readouterr().out
    assert "max_drawdown       120.00 USD" in printed and "FIRED at t=7" in printed
    assert "dataset 'research_dataset'" in printed  # the default dataset name

    (row,) = load_dataset(made_store, ticks.DEFAULT_DATASET).to_dict("records")
    assert {key: row[key] for key in ORIGINAL_METRICS} == ORIGINAL_METRICS
    assert (row["label"], row["profile"], row["notes"]) == ("orig-001", "balanced", "by hand")
    assert row["telemetry_path"] == str(telemetry) and row["band_base"] == 5.0
    assert all(row[knob] != row[knob] for knob in ("mm_size_eta", "vol_ref", "daily_loss_limit"))  # NaN: not given

    client = MlflowClient(made_store)
    (run,) = client.search_runs([client.get_experiment_by_name("research").experiment_id])
    assert run.data.tags["dataset"] == ticks.DEFAULT_DATASET
    local = Path(client.download_artifacts(run.info.run_id, "telemetry", str(tmp_path / "download")))
    assert (local / "run1.jsonl").read_bytes() == telemetry.read_bytes()

    (file_row,) = transfer.frame_to_rows(read_rows(out))
    assert list(file_row) == list(ROW_KEYS)
    assert {key: file_row[key] for key in ORIGINAL_METRICS} == ORIGINAL_METRICS

    # the same file under the same label again replaces the row; another label is another row
    record_ticks(telemetry, made_store, "orig-001", "--notes", "again")
    (row,) = load_dataset(made_store, ticks.DEFAULT_DATASET).to_dict("records")
    assert row["notes"] == "again"
    record_ticks(telemetry, made_store, "orig-002")
    assert sorted(load_dataset(made_store, ticks.DEFAULT_DATASET)["label"]) == ["orig-001", "orig-002"]


def test_malformed_telemetry_is_reported_and_nothing_recorded(tmp_path: Path, made_store: str, capsys) -> None:
    out = tmp_path / "ds.jsonl"
    record_ticks(original_telemetry(tmp_path / "good.jsonl"), made_store, "good", "--out", str(out))
    capsys.readouterr()
    bad_json = original_telemetry(tmp_path / "bad_json.jsonl")
    lines = bad_json.read_text().splitlines()
    lines[2] = lines[2][:-10]  # line 3 cut short
    bad_json.write_text("\n".join(lines) + "\n")
    bad_key = original_telemetry(tmp_path / "bad_key.jsonl")
    lines = bad_key.read_text().splitlines()
    lines[4] = json.dumps({k: v for k, v in json.loads(lines[4]).items() if k != "kill_switch"})
    bad_key.write_text("\n".join(lines) + "\n")

    err = one_line_error(capsys, lambda: record_ticks(bad_json, made_store, "bad1", "--out", str(out)))
    assert f"{bad_json}:3: not valid JSON" in err
    err = one_line_error(capsys, lambda: record_ticks(bad_key, made_store, "bad2", "--out", str(out)))
    assert f"{bad_key}:5: missing key 'kill_switch'" in err
    assert dataset_runs(made_store) == 1 and len(out.read_text().splitlines()) == 1


def test_unreachable_server_is_reported_before_any_work(tmp_path: Path, capsys) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "ds.jsonl"
    err = one_line_error(capsys, lambda: record_ticks(original_telemetry(tmp_path / "t.jsonl"), uri, "x", "--out",
                                                      str(out)))  # fmt: skip
    assert "unreachable" in err and uri in err and not out.exists()


def test_concurrent_recorders_lose_no_rows(tmp_path: Path, tracking_uri: str) -> None:
    files = [original_telemetry(tmp_path / f"w{k}.jsonl", shift=10.0 * k) for k in range(3)]
    out = tmp_path / "shared.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    workers = [
        subprocess.Popen([sys.executable, "-m", "paraphina.research.ticks", "--telemetry", str(path), "--profile",
                          "aggressive", "--label", f"w{k}", "--dataset", "shared", "--tracking-uri", tracking_uri,
                          "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k, path in enumerate(files)
    ]  # fmt: skip  (all started before any finishes, on a store none of them has created yet)
    results = [worker.communicate(timeout=180) for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 3, [err for _, err in results]
    rows = load_dataset(tracking_uri, "shared")
    assert sorted(rows["label"]) == ["w0", "w1", "w2"]
    assert sorted(rows["final_pnl"]) == [40.0, 50.0, 60.0]
    assert sorted(read_rows(out)["label"]) == ["w0", "w1", "w2"]


def test_summary_of_file_and_missing_dataset(tmp_path: Path, made_store: str, capsys) -> None:
    out = tmp_path / "ds.jsonl"
    for k in range(3):
        record_ticks(original_telemetry(tmp_path / f"r{k}.jsonl", shift=k), made_store, f"r{k}", "--dataset",
                     "alpha", "--out", str(out))  # fmt: skip
    capsys.readouterr()
    summary.main(["--input", str(out), "--top", "2"])
    printed = capsys.readouterr().out
    assert printed == format_summary(read_rows(out), 2, 0.5) + "\n"
    assert "=== Top 2 runs by utility" in printed and "mean max_drawdown  120.00" in printed

    err = one_line_error(capsys, lambda: summary.main(["--dataset", "beta", "--tracking-uri", made_store]))
    assert "no dataset 'beta'" in err and "datasets there: alpha" in err
    missing_store = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    err = one_line_error(capsys, lambda: summary.main(["--dataset", "alpha", "--tracking-uri", missing_store]))
    assert "no tracking store" in err and not (tmp_path / "nowhere").exists()
    for uri in ("foo://x", str(tmp_path)):   # no MLflow store has that scheme; a path is the file store
        err = one_line_error(capsys, lambda: summary.main(["--dataset", "alpha", "--tracking-uri", uri]))
        assert f"tracking URI {uri} has the scheme" in err and "use sqlite:///PATH/mlflow.db" in err


def test_telemetry_summary_records_nothing(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "mlruns" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store}")
    telemetry_summary.main(["--telemetry", str(original_telemetry(tmp_path / "t.jsonl"))])
    printed = capsys.readouterr().out
    assert "final_pnl          40.00 USD   (min 0.00, max 150.00)" in printed
    assert "max_drawdown       120.00 USD" in printed and "FIRED at t=7" in printed
    assert not store.parent.exists()


def test_transfer_imports_original_rows_and_exports_them_back(tmp_path: Path, made_store: str, capsys) -> None:
    # An original dataset file: negative drawdowns (an older convention), absent keys, a key we do not keep.
    original = tmp_path / "research_dataset_v004.jsonl"
    rows = [
        {"timestamp_utc": "2025-03-01T10:00:0%dZ" % i, "label": f"exp13_balanced_r{i:03d}", "profile": "balanced",
         "num_ticks": 2000, "final_pnl": 100.0 + i, "max_drawdown": -(20.0 + i), "kill_switch": i == 1,
         "time_to_kill": 1500 if i == 1 else None, "band_base": 5.0, "exp_id": "exp13"}
        for i in range(3)
    ]  # fmt: skip
    original.write_text("".join(json.dumps(row) + "\n" for row in rows))
    transfer.main(["import", "--input", str(original), "--dataset", "v004", "--tracking-uri", made_store])
    printed = capsys.readouterr().out
    assert "imported 3 rows" in printed and "not imported (not research-row keys): exp_id" in printed
    loaded = load_dataset(made_store, "v004")
    assert loaded["max_drawdown"].tolist() == [20.0, 21.0, 22.0]
    assert loaded["kill_switch"].tolist() == [False, True, False] and loaded["time_to_kill"][1] == 1500

    exported = tmp_path / "export.jsonl"
    transfer.main(["export", "--dataset", "v004", "--out", str(exported), "--tracking-uri", made_store])
    assert transfer.frame_to_rows(read_rows(exported)) == transfer.frame_to_rows(loaded)
    err = one_line_error(capsys, lambda: transfer.main(["export", "--dataset", "v004", "--out", str(exported),
                                                        "--tracking-uri", made_store]))  # fmt: skip
    assert "already exists" in err
    transfer.main(["import", "--input", str(exported), "--dataset", "v004-copy", "--tracking-uri", made_store])
    assert transfer.frame_to_rows(load_dataset(made_store, "v004-copy")) == transfer.frame_to_rows(loaded)

    before = dataset_runs(made_store)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "final_pnl": "n/a"}) + "\n")
    err = one_line_error(capsys, lambda: transfer.main(["import", "--input", str(broken), "--dataset", "v005",
                                                        "--tracking-uri", made_store]))  # fmt: skip
    assert f"{broken}:2: final_pnl 'n/a' is not a number" in err
    assert dataset_runs(made_store) == before and "v005" not in list_datasets(made_store)


def test_importing_a_dataset_s_own_export_adds_nothing(tmp_path: Path, made_store: str, capsys) -> None:
    # rows recorded from telemetry are keyed by file and label, not by content; their export must still match
    for i in range(2):
        record_ticks(original_telemetry(tmp_path / f"t{i}.jsonl", shift=10.0 * i), made_store, f"run{i}",
                     "--dataset", "eng")
    exported = tmp_path / "eng.jsonl"
    transfer.main(["export", "--dataset", "eng", "--out", str(exported), "--tracking-uri", made_store])
    capsys.readouterr()
    transfer.main(["import", "--input", str(exported), "--dataset", "eng", "--tracking-uri", made_store])
    assert "imported 0 rows" in capsys.readouterr().out
    assert len(load_dataset(made_store, "eng")) == 2
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(exported.read_text() * 2)   # a second copy of each row is a row of its own
    transfer.main(["import", "--input", str(doubled), "--dataset", "eng", "--tracking-uri", made_store])
    assert "imported 2 rows" in capsys.readouterr().out and len(load_dataset(made_store, "eng")) == 4


@pytest.mark.parametrize(
    "tool, flags",
    [
        (ticks, ["--telemetry", "--profile", "--label", "--notes", "--dataset", "--out", "--band-base", "--vol-scale"]),
        (summary, ["--input", "--dataset", "--top"]),
        (telemetry_summary, ["--telemetry"]),
        (transfer, ["export", "import"]),
    ],
)
def test_help_lists_the_original_flags(tool, flags: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(flag in text for flag in flags)


def test_bad_flags_are_one_line(capsys) -> None:
    assert "--telemetry" in one_line_error(capsys, lambda: ticks.main(["--profile", "balanced", "--label", "x"]))
    assert "not a finite number" in one_line_error(capsys, lambda: ticks.main(
        ["--telemetry", "t", "--profile", "p", "--label", "l", "--vol-ref", "nan"]))  # fmt: skip
    assert "not allowed with" in one_line_error(capsys, lambda: summary.main(["--input", "a", "--dataset", "b"]))


@pytest.mark.parametrize("name", ["it's", "two words", ""])
def test_dataset_names_mlflow_cannot_search_are_refused_before_recording(tmp_path: Path, tracking_uri: str, capsys,
                                                                        name: str) -> None:
    telemetry = original_telemetry(tmp_path / "run.jsonl")
    error = one_line_error(capsys, lambda: record_ticks(telemetry, tracking_uri, "l", "--dataset", name))
    assert error == (f"error: dataset name {name!r} cannot be searched for in MLflow; use only letters, digits, "
                     "'_', '-' and '.', e.g. research_dataset_v004\n")
    assert not (tmp_path / "mlruns").exists()


def test_out_into_a_missing_folder_is_refused_before_recording(tmp_path: Path, made_store: str, capsys) -> None:
    telemetry = original_telemetry(tmp_path / "run.jsonl")
    out = tmp_path / "sweepz" / "ds.jsonl"
    error = one_line_error(capsys, lambda: record_ticks(telemetry, made_store, "l", "--out", str(out)))
    assert error == (f"error: {out}: the folder {out.parent} does not exist; create it (mkdir -p {out.parent}) "
                     "or choose another --out\n")
    assert not out.parent.exists() and dataset_runs(made_store) == 0


def test_ui_serves_the_sqlite_store_with_its_artifacts(tmp_path: Path) -> None:
    command = ui_command(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "127.0.0.1", 5000)
    assert command[1:4] == ["-m", "mlflow", "ui"]
    assert command[command.index("--default-artifact-root") + 1] == str(tmp_path / "mlruns" / "artifacts")
    assert command[command.index("--port") + 1] == "5000"


def test_ui_address_opens_the_model_training_view() -> None:
    assert page(url("127.0.0.1", 5000), "experiments") == ("http://127.0.0.1:5000/#/experiments?"
                                                           "workflowType=machine_learning")


def test_ticks_refuses_to_append_to_a_file_that_is_not_a_dataset(tmp_path, tracking_uri, capsys):
    telemetry = tmp_path / "t.jsonl"
    telemetry.write_text("".join(
        json.dumps({"t": t, "pnl_realised": 0.0, "pnl_unrealised": 0.0, "pnl_total": float(t),
                    "risk_regime": "Normal", "kill_switch": False, "q_global_tao": 0.0,
                    "dollar_delta_usd": 0.0, "basis_usd": 0.0}) + "\n" for t in range(3)))
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\n')
    error = one_line_error(capsys, lambda: record_ticks(telemetry, tracking_uri, "x", "--out", str(other)))
    assert error.startswith(f"error: {other}:1:"), error
    assert other.read_text() == '{"a": 1}\n'
