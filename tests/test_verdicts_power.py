"""Runs needed from power (world_model.power): exact counts, power at half the budget by simulation, the printed assumption."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.power import (
    kill_min_runs,
    kill_ok_limit,
    kill_power,
    kill_runs_needed,
    mean_power,
    mean_runs_needed,
)
from paraphina.world_model.verdicts import check_kill_exact, check_mean

ALPHA = 0.025


def mc_tolerance(reps: int, rate: float) -> float:
    """Three Monte-Carlo standard errors of a rate estimated from `reps` draws."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / reps)


def test_ok_limit_is_the_exact_checks_own_limit():
    for budget in (0.01, 0.05, 0.15, 0.5):
        for n in (1, 2, 5, 10, 30, 100, 368, 1000):
            limit = int(kill_ok_limit(n, budget))
            if limit >= 0:
                assert check_kill_exact(limit, n, budget).verdict == "ok"
            if limit < n:
                assert check_kill_exact(limit + 1, n, budget).verdict != "ok"


@pytest.mark.parametrize("budget, runs", [(0.01, 2470), (0.05, 465), (0.15, 144)])
def test_kill_runs_for_80_percent_power_at_half_the_budget(budget, runs):
    plan = kill_runs_needed(budget)
    assert plan.runs == runs
    pmf = stats.binom.pmf(np.arange(runs + 1), runs, budget / 2)
    by_check = sum(p for k, p in enumerate(pmf) if check_kill_exact(k, runs, budget).verdict == "ok")
    assert plan.power == pytest.approx(by_check, abs=1e-12) and plan.power >= 0.8
    assert (kill_power(np.arange(1, runs), budget, budget / 2) < 0.8).all()  # the first n to reach it
    rng = np.random.default_rng(int(budget * 1000))
    reps = 20000
    ok = np.mean(rng.binomial(runs, budget / 2, reps) <= kill_ok_limit(runs, budget))
    assert ok == pytest.approx(plan.power, abs=mc_tolerance(reps, plan.power))


def test_kill_plan_text_states_its_assumption_and_the_zero_kill_minimum():
    plan = kill_runs_needed(0.01, observed_kills=0)
    assert "2470 runs" in plan.assumption and "0.5 %" in plan.assumption and "half the budget" in plan.assumption
    assert "368 runs is the rule-of-three minimum" in plan.assumption and "not an estimate" in plan.assumption
    assert "minimum" not in kill_runs_needed(0.01, observed_kills=2).assumption
    other = kill_runs_needed(0.05, power=0.9, true_rate=0.01)
    assert "half" not in other.assumption and other.power >= 0.9 and other.runs < kill_runs_needed(0.05).runs


def test_rule_of_three_minimum_is_where_zero_kills_first_read_ok():
    for budget in (0.01, 0.05, 0.15, 0.5, 1.0):
        n = kill_min_runs(budget)
        assert check_kill_exact(0, n, budget).verdict == "ok"
        assert n == 1 or check_kill_exact(0, n - 1, budget).verdict == "inconclusive"
    assert kill_min_runs(0.01) == 368 and kill_min_runs(0.01, alpha=0.05) == 299  # close to 3 / budget


def test_kill_plan_rejects_impossible_assumptions():
    for kwargs in ({"budget": 0.0}, {"budget": 0.05, "true_rate": 0.05}, {"budget": 0.05, "power": 1.0}):
        with pytest.raises(ParaphinaError):
            kill_runs_needed(**kwargs)
    with pytest.raises(ParaphinaError, match="zero"):
        kill_min_runs(0.0)


@pytest.mark.parametrize("name, direction, budget, mean", [("drawdown", "max", 2000.0, 1600.0), ("pnl", "min", 0.0, 120.0),
                                                           ("drawdown", "max", 2000.0, 2500.0)])
def test_mean_runs_give_the_planned_power_on_normal_values(name, direction, budget, mean):
    rng = np.random.default_rng(42)
    observed = rng.normal(mean, 700.0, 40)
    plan = mean_runs_needed(name, observed, budget, direction)
    assert plan.runs is not None and plan.runs >= 10 and plan.power >= 0.8
    target = "ok" if (budget - mean if direction == "max" else mean - budget) > 0 else "violated"
    assert f"power to read {target}" in plan.assumption and "observed std" in plan.assumption
    std, true_mean = float(observed.std(ddof=1)), float(observed.mean())
    reps = 4000
    verdicts = [check_mean(name, rng.normal(true_mean, std, plan.runs), budget, direction).verdict for _ in range(reps)]
    assert verdicts.count(target) / reps == pytest.approx(plan.power, abs=mc_tolerance(reps, plan.power))
    if plan.runs > 10:  # the smallest such count
        assert mean_power(plan.runs - 1, abs(true_mean - budget) / std) < 0.8


def test_mean_runs_at_the_minimum_and_on_the_budget():
    far = mean_runs_needed("drawdown", [100.0, 200.0, 150.0], 2000.0, "max")
    assert far.runs == 10  # decided from the minimum on
    on = mean_runs_needed("pnl", [-10.0, 10.0], 0.0, "min")
    assert on.runs is None and math.isnan(on.power) and "no number of runs" in on.assumption
    flat = mean_runs_needed("drawdown", [5.0, 5.0], 10.0, "max")
    assert (flat.runs, flat.power) == (10, 1.0)
    assumed = mean_runs_needed("drawdown", [1000.0, 3000.0], 2000.0, "max", true_mean=1500.0)
    assert "assumed 1,500" in assumed.assumption
    with pytest.raises(ParaphinaError, match="one run"):
        mean_runs_needed("pnl", [1.0], 0.0, "min")
