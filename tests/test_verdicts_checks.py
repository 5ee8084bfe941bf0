"""Per-check verdicts of world_model.verdicts: error rates at a true value on the budget for every n, hand cases, edges."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.tiers import tiers_from_mapping
from paraphina.world_model.verdicts import (
    TOO_FEW,
    CheckRules,
    check_drawdown_budget,
    check_kill_exact,
    check_mean,
    check_quantile,
    check_tier,
    clopper_pearson,
    kill_p_values,
    quantile_interval,
)

ALPHA = 0.025
NS = (1, 2, 5, 10, 30, 100, 1000)
KILL_BUDGETS = (0.01, 0.05, 0.15, 0.5)
TIERS = tiers_from_mapping({
    "conservative": dict(max_kill_prob=0.01, max_drawdown_abs=2000, min_final_pnl_mean=0,
                         lambda_std=0.5, lambda_dd=0.5, lambda_kill=200),
})


def mc_tolerance(reps: int, rate: float = ALPHA) -> float:
    """Three Monte-Carlo standard errors of a rate estimated from `reps` draws."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / reps)


def exact_kill_rates(n: int, budget: float) -> tuple[float, float]:
    """P(ok) and P(violated) of the exact check at a true rate on the budget, summed over the binomial pmf."""
    pmf = stats.binom.pmf(np.arange(n + 1), n, budget)
    verdicts = [check_kill_exact(k, n, budget).verdict for k in range(n + 1)]
    ok = sum(p for p, v in zip(pmf, verdicts) if v == "ok")
    violated = sum(p for p, v in zip(pmf, verdicts) if v == "violated")
    return ok, violated


# --- kill probability ------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("budget", KILL_BUDGETS)
def test_kill_check_keeps_both_error_rates_at_the_budget_for_every_n(n, budget):
    ok, violated = exact_kill_rates(n, budget)
    assert ok <= ALPHA + 1e-12 and violated <= ALPHA + 1e-12


def test_kill_check_keeps_its_rates_on_the_null_side_away_from_the_budget():
    for n in (10, 100):
        pmf_at = {p: stats.binom.pmf(np.arange(n + 1), n, p) for p in (0.1, 0.2, 0.3)}
        verdicts = [check_kill_exact(k, n, 0.2).verdict for k in range(n + 1)]
        assert sum(p for p, v in zip(pmf_at[0.3], verdicts) if v == "ok") <= ALPHA  # true rate above the budget
        assert sum(p for p, v in zip(pmf_at[0.1], verdicts) if v == "violated") <= ALPHA  # below it


def wilson_low(kills: int, n: int, z: float = 1.959963984540054) -> float:
    """Wilson's lower score bound (the rule the exact bounds replaced), for comparison."""
    p = kills / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return 0.0 if kills == 0 else centre - z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))


def test_wilson_bounds_overshoot_at_small_n_and_the_kill_check_does_not():
    pmf = stats.binom.pmf(np.arange(11), 10, 0.01)
    wilson_violated = sum(p for k, p in enumerate(pmf) if wilson_low(k, 10) > 0.01)
    assert wilson_violated == pytest.approx(0.0956, abs=1e-4)  # against 0.025 nominal
    assert exact_kill_rates(10, 0.01)[1] <= ALPHA
    assert sum(p for k, p in enumerate(pmf) if check_kill_exact(k, 10, 0.01).verdict == "violated") <= ALPHA


@pytest.mark.parametrize("kills, n", [(0, 1), (1, 1), (0, 10), (5, 10), (10, 10), (3, 100), (17, 1000)])
def test_clopper_pearson_matches_scipy_binomtest_exact_interval(kills, n):
    ci = stats.binomtest(kills, n).proportion_ci(confidence_level=1 - 2 * ALPHA, method="exact")
    assert clopper_pearson(kills, n) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


def test_clopper_pearson_hand_values_and_edges():
    assert clopper_pearson(5, 10) == (pytest.approx(0.1870860284, abs=1e-9), pytest.approx(0.8129139716, abs=1e-9))
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(1 - ALPHA ** 0.1, abs=1e-14))  # 0 of n
    assert clopper_pearson(10, 10) == (pytest.approx(ALPHA ** 0.1, abs=1e-14), 1.0)  # n of n
    assert clopper_pearson(1, 1) == (pytest.approx(ALPHA), 1.0)
    assert clopper_pearson(0, 1) == (0.0, pytest.approx(1 - ALPHA))


def test_one_kill_in_one_run_is_not_violated_at_a_budget_wilson_called_violated():
    assert wilson_low(1, 1) > 0.2
    assert check_kill_exact(1, 1, 0.2).verdict == "inconclusive"
    assert check_kill_exact(1, 1, 0.02).verdict == "violated"  # below alpha, a single kill is evidence
    assert check_kill_exact(0, 1, 0.99).verdict == "ok" and check_kill_exact(0, 1, 0.97).verdict == "inconclusive"


def test_budget_exactly_on_an_interval_end_is_inconclusive():
    low, high = clopper_pearson(3, 50)
    assert check_kill_exact(3, 50, high).verdict == "inconclusive"
    assert check_kill_exact(3, 50, low).verdict == "inconclusive"
    assert check_kill_exact(3, 50, high * (1 + 1e-9)).verdict == "ok"
    assert check_kill_exact(3, 50, low * (1 - 1e-9)).verdict == "violated"


def test_kill_p_values_match_scipy_binomtest_and_the_bounds():
    for kills, n, budget in [(0, 368, 0.01), (3, 50, 0.05), (12, 100, 0.05), (1, 1, 0.2)]:
        p_ok, p_violated = kill_p_values(kills, n, budget)
        assert p_ok == pytest.approx(stats.binomtest(kills, n, budget, alternative="less").pvalue, rel=1e-10)
        assert p_violated == pytest.approx(stats.binomtest(kills, n, budget, alternative="greater").pvalue, rel=1e-10)
        check = check_kill_exact(kills, n, budget)
        assert (check.verdict == "ok") == (p_ok < ALPHA) and (check.verdict == "violated") == (p_violated < ALPHA)


def test_zero_and_full_budgets():
    assert check_kill_exact(0, 1000, 0.0).verdict == "inconclusive"  # nothing is below a zero budget
    assert check_kill_exact(1, 1000, 0.0).verdict == "violated"
    assert check_kill_exact(1000, 1000, 1.0).verdict == "inconclusive"


@pytest.mark.parametrize("args", [(-1, 5, 0.1), (6, 5, 0.1), (0, 0, 0.1), (1.5, 5, 0.1), (True, 5, 0.1), (1, 5, 1.5)])
def test_kill_check_rejects_bad_input_in_one_line(args):
    with pytest.raises(ParaphinaError) as err:
        check_kill_exact(*args)
    assert "\n" not in str(err.value)


def test_bad_alpha_is_rejected():
    for alpha in (0.0, 0.5, -0.1, True):
        with pytest.raises(ParaphinaError, match="alpha"):
            clopper_pearson(1, 10, alpha)


# --- means -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", NS)
def test_mean_checks_keep_both_error_rates_at_the_budget_for_normal_values(n):
    rng = np.random.default_rng(1000 + n)
    reps = 4000
    draws = rng.normal(2000.0, 800.0, size=(reps, n))
    for name, direction in (("drawdown", "max"), ("pnl", "min")):
        verdicts = [check_mean(name, row, 2000.0, direction).verdict for row in draws]
        ok, violated = verdicts.count("ok") / reps, verdicts.count("violated") / reps
        assert ok <= ALPHA + mc_tolerance(reps) and violated <= ALPHA + mc_tolerance(reps)
        if n < 10:
            assert set(verdicts) == {TOO_FEW}


def test_mean_check_hand_values_against_scipy_ttest():
    values = np.array([1200.0, 1900.0, 800.0, 2500.0, 1500.0, 1100.0, 1700.0, 900.0, 1300.0, 1600.0])
    check = check_mean("drawdown", values, 2000.0, "max")
    ci = stats.ttest_1samp(values, 2000.0).confidence_interval(1 - 2 * ALPHA)
    assert (check.low, check.high) == (pytest.approx(ci.low, rel=1e-12), pytest.approx(ci.high, rel=1e-12))
    assert check.p_ok == pytest.approx(stats.ttest_1samp(values, 2000.0, alternative="less").pvalue, rel=1e-10)
    assert check.p_violated == pytest.approx(stats.ttest_1samp(values, 2000.0, alternative="greater").pvalue, rel=1e-10)
    assert check.verdict == "ok" and check.margin == pytest.approx(2000.0 - values.mean())
    pnl = check_mean("pnl", values - 1500.0, 0.0, "min")
    assert pnl.p_ok == pytest.approx(stats.ttest_1samp(values - 1500.0, 0.0, alternative="greater").pvalue, rel=1e-10)


def test_mean_check_below_min_n_and_edges():
    one = check_mean("pnl", [5.0], 0.0, "min")
    assert (one.verdict, one.low, one.high, one.p_ok, one.p_violated) == (TOO_FEW, -math.inf, math.inf, 1.0, 1.0)
    far = check_mean("drawdown", [1.0, 2.0, 3.0], 1e6, "max")
    assert far.verdict == TOO_FEW and far.high < 1e6  # the interval is reported, the verdict waits for min_n
    assert check_mean("drawdown", [1.0, 2.0, 3.0], 1e6, "max", min_n=2).verdict == "ok"
    flat = check_mean("drawdown", [100.0] * 10, 100.0, "max")
    assert (flat.low, flat.high, flat.verdict, flat.p_ok, flat.p_violated) == (100.0, 100.0, "inconclusive", 1.0, 1.0)
    assert check_mean("drawdown", [100.0] * 10, 101.0, "max").verdict == "ok"
    with pytest.raises(ParaphinaError, match="min_n"):
        check_mean("pnl", [1.0, 2.0], 0.0, "min", min_n=1)
    with pytest.raises(ParaphinaError, match="non-finite"):
        check_mean("pnl", [1.0, math.nan], 0.0, "min")


# --- drawdown tail -----------------------------------------------------------------------------


def exact_quantile_rates(n: int, q: float = 0.95) -> tuple[float, float]:
    """For continuous values with x_q on the budget: P(high < budget) and P(low > budget), from the order-statistic ranks."""
    ranks = np.arange(1, n + 1)
    high_ranks = ranks[stats.binom.sf(ranks - 1, n, q) <= ALPHA]
    low_ranks = ranks[stats.binom.cdf(ranks - 1, n, q) <= ALPHA]
    ok = stats.binom.sf(high_ranks[0] - 1, n, q) if high_ranks.size else 0.0
    violated = stats.binom.cdf(low_ranks[-1] - 1, n, q) if low_ranks.size else 0.0
    return ok, violated


@pytest.mark.parametrize("n", NS)
def test_p95_check_keeps_both_error_rates_for_skewed_and_tied_values(n):
    assert max(exact_quantile_rates(n)) <= ALPHA
    rng = np.random.default_rng(2000 + n)
    reps = 3000 if n < 1000 else 1000
    scale = 2000.0 / math.log(20.0)  # exponential drawdowns whose 95th percentile is the 2000 USD budget
    continuous = rng.exponential(scale, size=(reps, n))
    # Whole hundreds of USD (ties); the budget is their 95th percentile: P(X <= 1900) < 0.95 <= P(X <= 2000).
    tied = 100.0 * np.ceil(rng.exponential(1950.0 / math.log(20.0), size=(reps, n)) / 100.0)
    for draws in (continuous, tied):
        verdicts = [check_quantile("drawdown", row, 2000.0).verdict for row in draws]
        for wrong in ("ok", "violated"):
            assert verdicts.count(wrong) / reps <= ALPHA + mc_tolerance(reps)


def test_tied_draws_put_the_budget_on_the_95th_percentile():
    cdf = lambda x: 1.0 - math.exp(-x * math.log(20.0) / 1950.0)  # noqa: E731 - P(X <= x) of the rounded-up values
    assert cdf(1900.0) < 0.95 <= cdf(2000.0)


def test_quantile_interval_hand_values():
    values = np.arange(1.0, 101.0)  # 100 distinct values: X_(k) = k
    estimate, (low, high) = quantile_interval(values)
    assert estimate == pytest.approx(np.quantile(values, 0.95))
    # Largest l with P(Bin(100, .95) <= l - 1) <= .025, smallest u with P(Bin(100, .95) >= u) <= .025.
    l = max(k for k in range(1, 101) if stats.binom.cdf(k - 1, 100, 0.95) <= ALPHA)
    u = min(k for k in range(1, 101) if stats.binom.sf(k - 1, 100, 0.95) <= ALPHA)
    assert (low, high) == (float(l), float(u)) == (90.0, 100.0)
    assert stats.binom.sf(98, 100, 0.95) > ALPHA >= 0.95 ** 100  # X_(99) would fall short: u = 100
    assert quantile_interval([7.0])[1] == (-math.inf, math.inf)  # n = 1
    assert quantile_interval(np.arange(71.0))[1][1] == math.inf  # the upper bound needs 72 runs
    assert math.isfinite(quantile_interval(np.arange(72.0))[1][1])


def test_p95_check_p_values_agree_with_its_bounds():
    rng = np.random.default_rng(7)
    for n in (20, 100, 500):
        values = rng.exponential(700.0, n)
        for budget in np.quantile(values, [0.5, 0.9, 0.95, 0.99]) + [0.0, 0.0, 1e-6, 0.0]:
            check = check_quantile("drawdown", values, float(budget))
            assert (check.verdict == "ok") == (check.p_ok <= ALPHA)
            assert (check.verdict == "violated") == (check.p_violated <= ALPHA)


def test_drawdown_statistic_switch():
    values = np.linspace(100.0, 1900.0, 200)
    assert check_drawdown_budget(values, 2000.0).statistic == "mean"
    tail = check_drawdown_budget(values, 1800.0, "p95")
    assert (tail.statistic, tail.verdict) == ("p95", "inconclusive")
    assert check_drawdown_budget(values, 1800.0, "mean").verdict == "ok"
    with pytest.raises(ParaphinaError, match="dd_statistic"):
        check_drawdown_budget(values, 2000.0, "max")


def test_tier_checks_in_order_and_length_mismatch():
    tier = TIERS["conservative"]
    checks = check_tier(tier, [100.0] * 12, [50.0] * 12, [False] * 12, CheckRules(dd_statistic="p95"))
    assert [c.name for c in checks] == ["kill_prob", "drawdown", "pnl"]
    assert [c.statistic for c in checks] == ["rate", "p95", "mean"]
    assert [c.verdict for c in checks] == ["inconclusive", "inconclusive", "ok"]
    with pytest.raises(ParaphinaError, match="same runs"):
        check_tier(tier, [1.0, 2.0], [1.0], [False, False])
