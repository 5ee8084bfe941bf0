"""A batch too big for memory stops in one line before it runs; an allocation that fails anyway is one line too."""
from __future__ import annotations

import re

import numpy as np
import pytest

from paraphina.config.loading import compose_config
from paraphina.core.cli import cli_errors
from paraphina.core.errors import ParaphinaError
from paraphina.engine.kernel import OUTCOME_DTYPE, SERIES_DTYPE, row_dtype
from paraphina.runner import batch
from paraphina.runner.batch import available_memory, check_memory, series_every

DAY = 86_400
needs_meminfo = pytest.mark.skipif(available_memory() is None, reason="the system does not say its free memory")


def _refusal(cfg, runs: int, rows_every: int = 0) -> str:
    with pytest.raises(ParaphinaError) as refused:
        check_memory(cfg, runs, series_every(cfg), rows_every)
    return str(refused.value)


@needs_meminfo
def test_the_estimate_counts_each_runs_outcome_series_and_rows():
    cfg = compose_config([f"ticks={DAY}"], environ={})
    copies = cfg.execution.result_copies
    # 25 series points: every 3,456th tick from 0 (25 ticks) and the last one
    assert series_every(cfg) == 3456
    plain = copies * 2**40 * (OUTCOME_DTYPE.itemsize + 26 * SERIES_DTYPE.itemsize)
    assert f"about {plain / 2**30:,.1f} GiB of results" in _refusal(cfg, 2**40)
    # telemetry every 60 ticks keeps 1,440 rows and the last tick's per run
    rows = copies * 2**40 * 1441 * row_dtype(len(cfg.engine.venues.names)).itemsize
    message = _refusal(cfg, 2**40, rows_every=60)
    assert f"about {(plain + rows) / 2**30:,.1f} GiB of results" in message
    assert "telemetry.every=N" in message


@needs_meminfo
def test_the_limit_it_names_is_the_limit_it_keeps():
    cfg = compose_config([f"ticks={DAY}"], environ={})
    limit = int(re.search(r"run at most ([\d,]+) runs per command", _refusal(cfg, 2**40))[1].replace(",", ""))
    assert limit > 1000   # any machine that runs the tests holds a thousand day-long results
    check_memory(cfg, limit // 2, series_every(cfg), 0)   # half: free memory moves a little between two calls
    _refusal(cfg, limit * 2)


def test_a_run_that_cannot_fit_names_the_ticks_or_rows_to_cut(monkeypatch):
    cfg = compose_config([f"ticks={DAY}"], environ={})
    monkeypatch.setattr(batch, "available_memory", lambda: 1000)   # a machine with 1,000 bytes free
    assert "not one run fits: use fewer ticks or telemetry.every=N keeps fewer rows" in _refusal(cfg, 1, rows_every=1)
    monkeypatch.setattr(batch, "available_memory", lambda: None)   # a system that does not say: no check
    check_memory(cfg, 2**40, series_every(cfg), 0)


@pytest.mark.parametrize("failure, line", [
    (lambda: np.empty(2**50), "error: out of memory: Unable to allocate 8.00 PiB"),   # refused at once, untouched
    (MemoryError, "error: out of memory: an allocation failed; run fewer runs or seeds per command"),
    (lambda: open("/nonexistent-folder/table.csv", "w"), "error: /nonexistent-folder/table.csv: No such file or "
                                                         "directory; free disk space or fix the path"),
])
def test_what_the_machine_refuses_ends_the_command_in_one_line(capsys, failure, line):
    @cli_errors
    def command() -> None:
        raise failure() if isinstance(failure, type) else failure()

    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line), err
