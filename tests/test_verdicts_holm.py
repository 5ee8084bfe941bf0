"""Holm-adjusted alarms over the 9 checks (3 tiers x 3 budgets): hand values and the family-wise rate at the budgets."""
from __future__ import annotations

import math

import numpy as np
import pytest

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.verdicts import check_kill_exact, check_mean, holm_adjust, holm_alarms

ALPHA = 0.025
KILL_BUDGETS = (0.01, 0.05, 0.15)
DD_BUDGETS = (2000.0, 4000.0, 8000.0)
PNL_BUDGETS = (0.0, 0.0, -500.0)


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm's adjusted p-values written out: the i-th smallest times (m - i + 1), running maximum, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_holm_hand_values():
    assert holm_adjust([0.01, 0.04, 0.03, 0.5]).tolist() == pytest.approx([0.04, 0.09, 0.09, 0.5])
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, 9).tolist()
        assert holm_adjust(p).tolist() == pytest.approx(holm_by_hand(p), abs=1e-15)
    assert holm_adjust([0.3]).tolist() == [0.3]  # a family of one is not adjusted
    assert holm_adjust([0.2, 0.2, 0.2]).tolist() == pytest.approx([0.6, 0.6, 0.6])


def test_holm_rejects_bad_p_values():
    for bad in ([], [1.2], [-0.1, 0.5], [math.nan]):
        with pytest.raises(ParaphinaError):
            holm_adjust(bad)


def test_family_wise_rate_of_nine_null_checks_is_at_most_alpha():
    """Each of the 9 checks has its true value on its budget; an alarm anywhere is a family-wise error."""
    rng = np.random.default_rng(14)
    reps, n = 4000, 30
    false_alarms = uncorrected = 0
    for _ in range(reps):
        checks = [check_kill_exact(int(rng.binomial(n, b)), n, b) for b in KILL_BUDGETS]
        checks += [check_mean("drawdown", rng.normal(b, 0.4 * b, n), b, "max") for b in DD_BUDGETS]
        checks += [check_mean("pnl", rng.normal(b, 1000.0, n), b, "min") for b in PNL_BUDGETS]
        false_alarms += any(holm_alarms([c.p_violated for c in checks]))
        uncorrected += any(c.verdict == "violated" for c in checks)
    rate = false_alarms / reps
    assert rate <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    assert uncorrected / reps > 2 * ALPHA  # without the correction the family errs far more often


def test_holm_alarms_on_perfectly_dependent_checks():
    """Nine copies of one null check (the most dependent family): alarms only when the single check is below alpha / 9."""
    rng = np.random.default_rng(15)
    reps, n = 4000, 30
    alarms = 0
    for _ in range(reps):
        check = check_mean("drawdown", rng.normal(2000.0, 800.0, n), 2000.0, "max")
        flags = list(holm_alarms([check.p_violated] * 9))
        assert len(set(flags)) == 1 and flags[0] == (check.p_violated * 9 <= ALPHA)
        alarms += flags[0]
    assert alarms / reps <= ALPHA / 9 + 3 * math.sqrt(ALPHA / 9 / reps)


def test_holm_alarm_on_a_real_violation_survives_the_correction():
    clear = check_kill_exact(20, 100, 0.05)
    nulls = [check_kill_exact(5, 100, 0.05)] * 8
    assert list(holm_alarms([c.p_violated for c in (clear, *nulls)])) == [True] + [False] * 8
