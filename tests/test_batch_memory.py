"""A batch too big for memory stops in one line before it runs; an allocation that fails anyway is one line too."""
from __future__ import annotations

import re

import numpy as np
import pytest

from paraphina.config.loading import compose_config
from paraphina.core.cli import cli_errors
from paraphina.core.errors import ParaphinaError
from paraphina.engine.kernel import OUTCOME_DTYPE, SERIES_DTYPE, row_dtype
from paraphina.runner.batch import check_memory, series_every

DAY = 86_400


def _refusal(cfg, runs: int, rows_every: int = 0) -> str:
    with pytest.raises(ParaphinaError) as refused:
        check_memory(cfg, runs, series_every(cfg), rows_every)
    return str(refused.value)


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


def test_the_limit_it_names_is_the_limit_it_keeps():
    cfg = compose_config([f"ticks={DAY}"], environ={})
    limit = int(re.search(r"run at most ([\d,]+) runs per command", _refusal(cfg, 2**40))[1].replace(",", ""))
    assert limit > 1000   # any machine that runs the tests holds a thousand day-long results
    check_memory(cfg, limit // 2, series_every(cfg), 0)   # half: free memory moves a little between two calls
    _refusal(cfg, limit * 2)


def test_an_allocation_that_fails_ends_the_command_in_one_line(capsys):
    @cli_errors
    def command() -> None:
        np.empty(2**50)   # 8 PiB: refused at once, nothing is touched

    with pytest.raises(SystemExit) as stop:
        command()
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: out of memory: Unable to allocate 8.00 PiB") and "fewer runs or seeds" in err
