"""Group-sequential kill test (world_model.sequential): its level under its own stopping rule, its planned power, its text."""
from __future__ import annotations

import math

import numpy as np
import pytest

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.power import kill_ok_limit, kill_runs_needed
from paraphina.world_model.sequential import (
    describe_design,
    design_for_looks,
    operating_characteristics,
    plan_sequential,
    sequential_verdict,
    spent_alpha,
)
from paraphina.world_model.verdicts import check_kill_exact

ALPHA = 0.025
BUDGETS = (0.01, 0.05, 0.15)


def mc_tolerance(reps: int, rate: float) -> float:
    """Three Monte-Carlo standard errors of a rate estimated from `reps` draws."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / reps)


def simulate(design, rate: float, reps: int, seed: int) -> tuple[float, float, float, float]:
    """Run the design's stopping rule on seeded trials: rates of ok, violated, undecided at the cap, and mean runs."""
    rng = np.random.default_rng(seed)
    increments = rng.binomial(np.diff((0, *design.looks)), rate, size=(reps, len(design.looks)))
    counts = {"ok": 0, "violated": 0, "inconclusive": 0}
    runs = 0
    for trial in np.cumsum(increments, axis=1):
        for n, kills in zip(design.looks, trial):
            outcome = sequential_verdict(design, n, int(kills))
            if outcome != "inconclusive" or n == design.cap:
                break
        counts[outcome] += 1
        runs += n
    return counts["ok"] / reps, counts["violated"] / reps, counts["inconclusive"] / reps, runs / reps


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_stopping_rule_keeps_its_level_at_the_budget_and_its_power_at_half(budget, spending):
    design = plan_sequential(budget, spending=spending)
    assert design.ok_at_budget <= ALPHA and design.violated_at_budget <= ALPHA
    assert design.power >= 0.8 and design.true_rate == budget / 2
    reps = 4000
    ok, violated, _, runs = simulate(design, budget, reps, seed=int(1e4 * budget) + len(spending))
    assert ok <= ALPHA + mc_tolerance(reps, ALPHA) and violated <= ALPHA + mc_tolerance(reps, ALPHA)
    assert ok == pytest.approx(design.ok_at_budget, abs=mc_tolerance(reps, ALPHA))
    ok, _, _, runs = simulate(design, budget / 2, reps, seed=int(1e4 * budget) + 7)
    assert ok == pytest.approx(design.power, abs=mc_tolerance(reps, design.power))
    assert runs == pytest.approx(design.expected_runs_at_true_rate, rel=0.02)


def test_level_holds_over_the_whole_null_side():
    design = plan_sequential(0.05)
    for rate in np.linspace(0.05, 0.3, 11):
        assert operating_characteristics(design.looks, design.ok_at_most, design.violated_at_least, rate)[0] <= ALPHA
    for rate in np.linspace(0.0, 0.05, 11):
        assert operating_characteristics(design.looks, design.ok_at_most, design.violated_at_least, rate)[1] <= ALPHA


def test_checking_the_fixed_n_verdict_at_each_look_would_inflate_the_error():
    """The same looks judged by the fixed-n exact check (optional stopping): violated at the budget exceeds alpha."""
    design = plan_sequential(0.05, spending="pocock")
    looks = design.looks
    naive_ok = tuple(int(kill_ok_limit(n, 0.05)) for n in looks)
    naive_violated = tuple(min(k for k in range(n + 1) if check_kill_exact(k, n, 0.05).verdict == "violated")
                           for n in looks)
    ok, violated, _ = operating_characteristics(looks, naive_ok, naive_violated, 0.05)
    assert violated > 2 * ALPHA and ok > ALPHA
    assert design.violated_at_budget <= ALPHA and design.ok_at_budget <= ALPHA


def test_one_look_is_the_fixed_n_exact_test():
    for budget in BUDGETS:
        n = kill_runs_needed(budget).runs
        design = design_for_looks((n,), budget)
        assert design.ok_at_most == (int(kill_ok_limit(n, budget)),)
        assert check_kill_exact(design.violated_at_least[0], n, budget).verdict == "violated"
        assert check_kill_exact(design.violated_at_least[0] - 1, n, budget).verdict != "violated"


def test_planned_cap_is_close_to_the_fixed_count_and_expected_runs_fall_at_half_the_budget():
    for budget in BUDGETS:
        fixed = kill_runs_needed(budget).runs
        flat = plan_sequential(budget)
        even = plan_sequential(budget, spending="pocock")
        assert fixed <= flat.cap <= 1.05 * fixed + 5 and flat.cap <= even.cap
        assert even.expected_runs_at_true_rate < flat.expected_runs_at_true_rate < flat.cap
        assert len(flat.looks) == 5 and flat.looks == tuple(flat.looks[0] * (i + 1) for i in range(5))


def test_spending_functions_spend_alpha_by_the_end():
    for spending in ("obrien_fleming", "pocock"):
        spent = [spent_alpha(spending, t, ALPHA) for t in (0.2, 0.4, 0.6, 0.8, 1.0)]
        assert spent == sorted(spent) and spent[-1] == pytest.approx(ALPHA, rel=1e-12)
    assert spent_alpha("obrien_fleming", 0.2, ALPHA) < 1e-5 < spent_alpha("pocock", 0.2, ALPHA)
    with pytest.raises(ParaphinaError, match="spending"):
        spent_alpha("linear", 0.5, ALPHA)


def test_verdicts_at_looks_and_bad_looks():
    design = plan_sequential(0.15)
    first, last = design.looks[0], design.cap
    assert sequential_verdict(design, first, design.violated_at_least[0]) == "violated"
    assert sequential_verdict(design, last, design.ok_at_most[-1]) == "ok"
    assert sequential_verdict(design, last, design.ok_at_most[-1] + 1) == "inconclusive"  # undecided at the cap
    assert sequential_verdict(design, first, 0) == "inconclusive"  # too early for ok under O'Brien-Fleming
    with pytest.raises(ParaphinaError, match="looks at"):
        sequential_verdict(design, first + 1, 0)
    wide = design_for_looks((10, 20, 30), 0.5, alpha=0.45, spending="pocock")
    assert all(a < b for a, b in zip(wide.ok_at_most, wide.violated_at_least))  # no count reads both, even at alpha 0.45
    for looks in ((), (10, 10), (0, 5), (5.5,)):
        with pytest.raises(ParaphinaError, match="looks"):
            design_for_looks(looks, 0.05)


def test_description_prints_the_plan_before_it_starts():
    design = plan_sequential(0.01)
    text = describe_design(design)
    assert f"cap {design.cap} runs" in text and "O'Brien-Fleming-like" in text
    assert f"{design.expected_runs_at_budget:,.0f} at the budget" in text
    assert f"{design.expected_runs_at_true_rate:,.0f} at 0.5 %" in text
    assert len(text.splitlines()) == 2 + len(design.looks) + 3
