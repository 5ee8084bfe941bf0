"""Budget verdicts that keep their error rates at every number of runs (ENGINE_SPEC section 7, version 2): each
check tests both sides at level alpha and carries its one-sided p-values, so alarms can be Holm-adjusted."""
from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np
from scipy import special

from paraphina.core.errors import ParaphinaError
from paraphina.core.names import DD_STATISTICS
from paraphina.world_model.tiers import Direction, RiskTier, signed_margin

Verdict = Literal["ok", "violated", "inconclusive", "inconclusive (too few runs)"]
CheckName = Literal["kill_prob", "drawdown", "pnl"]
Statistic = Literal["rate", "mean", "p95"]
DdStatistic = Literal["mean", "p95"]
Interval = tuple[float, float]
ArrayLike = Union[Sequence[float], np.ndarray]

ALPHA = 0.025
"""Error rate per side: the ends of the two-sided 95 % interval."""
MIN_N = 10
"""Fewest runs a t interval is trusted on (drawdowns and PnL are not normal; below it: too few runs)."""
DD_QUANTILE = 0.95
"""The tail drawdown reported as dd_p95."""
POWER = 0.8
"""Probability of reaching the verdict that the assumed true value deserves (world_model.power)."""
PLANNED_FRACTION = 0.5
"""The true kill probability a kill plan assumes, as a fraction of the budget (world_model.planned_fraction)."""
TOO_FEW: Verdict = "inconclusive (too few runs)"


@dataclass(frozen=True)
class CheckRules:
    """How budgets are judged (world_model config): error rate per side, fewest runs for a t interval, and
    the drawdown statistic (`mean` or the tail `p95`)."""

    alpha: float = ALPHA
    min_n: int = MIN_N
    dd_statistic: DdStatistic = "mean"
    power: float = POWER                          # the runs-needed plans: power to read ok ...
    planned_fraction: float = PLANNED_FRACTION    # ... at a true kill probability of this fraction of the budget

    @classmethod
    def from_confidence(cls, confidence: float, min_n: int, dd_statistic: DdStatistic, power: float = POWER,
                        planned_fraction: float = PLANNED_FRACTION) -> "CheckRules":
        """Rules whose two one-sided bounds make an interval at `confidence` (alpha = (1 - confidence) / 2)."""
        check_share("confidence", confidence)
        check_min_n(min_n)
        if dd_statistic not in DD_STATISTICS:
            raise ParaphinaError(f"dd_statistic must be 'mean' or 'p95', got {dd_statistic!r}")
        check_share("power", power)
        check_share("planned_fraction", planned_fraction)
        return cls((1.0 - float(confidence)) / 2.0, int(min_n), dd_statistic, float(power), float(planned_fraction))

    def per_look(self, looks: int) -> "CheckRules":
        """The rules for one of `looks` planned looks at a growing sample: alpha / looks each (Bonferroni), so
        the chance of a wrong verdict at any look stays <= alpha whenever the looks stop."""
        return dataclasses.replace(self, alpha=self.alpha / looks)


def is_decided(verdict: str) -> bool:
    """ok and violated decide a budget; both kinds of inconclusive do not."""
    return verdict in ("ok", "violated")


@dataclass(frozen=True)
class BudgetVerdict:
    """One budget judged by a test that keeps its error rates.

    `low`/`high` are the one-sided bounds at level alpha each; `margin` is the signed
    point-estimate margin (positive = safe). `p_ok` is the one-sided p-value against
    "the budget is not kept" (small: ok), `p_violated` the one against "the budget is
    kept" (small: violated); a check that cannot test (too few runs) gives 1 for both.
    """

    name: CheckName
    statistic: Statistic
    estimate: float
    low: float
    high: float
    budget: float
    direction: Direction
    margin: float
    verdict: Verdict
    n: int
    p_ok: float
    p_violated: float
    alpha: float


def check_share(name: str, value: float) -> None:
    """Reject a probability that must lie strictly between 0 and 1 (a power, a fraction of a budget)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < value < 1.0:
        raise ParaphinaError(f"{name} must be a number strictly between 0 and 1, got {value!r}")


def check_alpha(alpha: float) -> None:
    """Reject an error rate a one-sided test cannot use (it must lie in (0, 0.5))."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < alpha < 0.5:
        raise ParaphinaError(f"alpha must be a number strictly between 0 and 0.5, got {alpha!r}")


def check_counts(kills: int, n: int) -> None:
    """Reject kill counts that are not integers with 0 <= kills <= n and n >= 1."""
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (kills, n)):
        raise ParaphinaError(f"need integer counts, got kills={kills!r}, n={n!r}")
    if n < 1:
        raise ParaphinaError("no runs to estimate the kill probability from")
    if not 0 <= kills <= n:
        raise ParaphinaError(f"need 0 <= kills <= n, got kills={kills}, n={n}")


def check_probability_budget(budget: float) -> None:
    """Reject a kill-probability budget outside [0, 1]."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real) or not 0.0 <= budget <= 1.0:
        raise ParaphinaError(f"kill probability budget must be a number within [0, 1], got {budget!r}")


def _check_real(value: float, what: str) -> None:
    """Reject a budget or other scalar that is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParaphinaError(f"{what} must be a finite number, got {value!r}")


def check_min_n(min_n: int) -> None:
    """Reject a minimum run count a t interval cannot start from (it needs at least 2 runs)."""
    if isinstance(min_n, bool) or not isinstance(min_n, numbers.Integral) or min_n < 2:
        raise ParaphinaError(f"min_n must be an integer >= 2 (a t interval needs two runs), got {min_n!r}")


def finite_values(values: ArrayLike, what: str) -> np.ndarray:
    """Values as a non-empty 1-D float array of finite numbers."""
    array = np.asarray(values, dtype=float).ravel()
    if array.size == 0:
        raise ParaphinaError(f"no {what} to judge")
    if not np.all(np.isfinite(array)):
        raise ParaphinaError(f"{what} contain non-finite values")
    return array


def verdict_of(low: float, high: float, budget: float, direction: Direction) -> Verdict:
    """ok when the whole interval is strictly on the safe side, violated when strictly beyond, else inconclusive."""
    worst, best = (high, low) if direction == "max" else (low, high)
    if signed_margin(worst, budget, direction) > 0:
        return "ok"
    if signed_margin(best, budget, direction) < 0:
        return "violated"
    return "inconclusive"


# --- kill probability ------------------------------------------------------------------------


def clopper_pearson(kills: int, n: int, alpha: float = ALPHA) -> Interval:
    """Exact bounds of a binomial proportion, each one-sided at level alpha.

    For every true p, P(low > p) <= alpha and P(high < p) <= alpha at every n, which
    Wilson bounds do not give at small n. 0 kills give low = 0, n kills high = 1.
    """
    check_counts(kills, n)
    check_alpha(alpha)
    low = 0.0 if kills == 0 else float(special.betaincinv(kills, n - kills + 1, alpha))
    high = 1.0 if kills == n else float(special.betaincinv(kills + 1, n - kills, 1.0 - alpha))
    return low, high


def kill_p_values(kills: int, n: int, budget: float) -> tuple[float, float]:
    """Exact one-sided binomial p-values (p_ok, p_violated) of kills out of n at a true rate on the budget.

    p_ok = P(K <= kills) tests "rate >= budget", p_violated = P(K >= kills) tests
    "rate <= budget"; each is below alpha exactly when the matching Clopper-Pearson bound
    passes the budget.
    """
    check_counts(kills, n)
    check_probability_budget(budget)
    p_violated = 1.0 if kills == 0 else float(special.bdtrc(kills - 1, n, budget))
    return float(special.bdtr(kills, n, budget)), p_violated


def check_kill_exact(kills: int, n: int, budget: float, alpha: float = ALPHA) -> BudgetVerdict:
    """Kill probability <= budget by exact bounds: ok if high < budget, violated if low > budget."""
    check_probability_budget(budget)
    low, high = clopper_pearson(kills, n, alpha)
    p_ok, p_violated = kill_p_values(kills, n, budget)
    rate = kills / n
    return BudgetVerdict(
        name="kill_prob", statistic="rate", estimate=rate, low=low, high=high, budget=float(budget),
        direction="max", margin=float(signed_margin(rate, budget, "max")),
        verdict=verdict_of(low, high, budget, "max"), n=n, p_ok=p_ok, p_violated=p_violated, alpha=alpha,
    )


# --- means -------------------------------------------------------------------------------------


def check_mean(
    name: Literal["drawdown", "pnl"],
    values: ArrayLike,
    budget: float,
    direction: Direction,
    alpha: float = ALPHA,
    min_n: int = MIN_N,
) -> BudgetVerdict:
    """A mean against its budget with the Student t interval, one-sided at alpha per side.

    Below `min_n` runs the verdict is `inconclusive (too few runs)` and both p-values are 1:
    the t interval's error rates hold for normal values, and session drawdowns and PnL are
    skewed enough that a handful of runs cannot be trusted to it. The interval is still
    reported from two runs on (one run gives (-inf, inf)). Zero spread gives a zero-width
    interval.

    Exact for normal values only. Right-skewed values (drawdowns) make the `ok` side of a
    `max` budget err more often than alpha (measured for gamma(2) values at a mean on the
    budget: 6.9 % at n = 10, 5.2 % at 30, 3.6 % at 100, 2.7 % at 1000, against 2.5 %);
    the p95 check has no such assumption.
    """
    check_alpha(alpha)
    check_min_n(min_n)
    _check_real(budget, f"{name} budget")
    array = finite_values(values, f"{name} values")
    n = array.size
    equal = bool(np.all(array == array[0]))  # all-equal values: exactly that mean and zero spread, no rounding
    mean = float(array[0]) if equal else float(array.mean())
    if n < 2:
        low, high, p_ok, p_violated = -math.inf, math.inf, 1.0, 1.0
    else:
        se = 0.0 if equal else float(array.std(ddof=1)) / math.sqrt(n)
        half = float(special.stdtrit(n - 1, 1.0 - alpha)) * se
        low, high = mean - half, mean + half
        p_ok, p_violated = _t_p_values(mean, se, n, budget, direction)
    outcome = verdict_of(low, high, budget, direction)
    if n < min_n:
        outcome, p_ok, p_violated = TOO_FEW, 1.0, 1.0
    return BudgetVerdict(
        name=name, statistic="mean", estimate=mean, low=low, high=high, budget=float(budget),
        direction=direction, margin=float(signed_margin(mean, budget, direction)), verdict=outcome, n=n,
        p_ok=p_ok, p_violated=p_violated, alpha=alpha,
    )


def _t_p_values(mean: float, se: float, n: int, budget: float, direction: Direction) -> tuple[float, float]:
    """One-sided t p-values (p_ok, p_violated) of a mean at a true mean on the budget; zero spread is decided outright."""
    if se == 0.0:
        safe = signed_margin(mean, budget, direction)
        return (0.0, 1.0) if safe > 0 else (1.0, 0.0) if safe < 0 else (1.0, 1.0)
    t_stat = (mean - budget) / se
    below, above = float(special.stdtr(n - 1, t_stat)), float(special.stdtr(n - 1, -t_stat))
    return (below, above) if direction == "max" else (above, below)


# --- drawdown tail -----------------------------------------------------------------------------


def quantile_interval(values: ArrayLike, q: float = DD_QUANTILE, alpha: float = ALPHA) -> tuple[float, Interval]:
    """The q-quantile (linear interpolation) and order-statistic bounds, each one-sided at level alpha.

    low is the largest order statistic X_(l) with P(Bin(n, q) <= l - 1) <= alpha, high the
    smallest X_(u) with P(Bin(n, q) >= u) <= alpha; for any distribution (ties included)
    P(low > x_q) <= alpha and P(high < x_q) <= alpha. Too few runs leave an end infinite
    (for q = 0.95, alpha = 0.025 the upper bound needs 72 runs).
    """
    check_alpha(alpha)
    if not 0.0 < q < 1.0:
        raise ParaphinaError(f"quantile must be strictly between 0 and 1, got {q}")
    array = np.sort(finite_values(values, "values"))
    n = array.size
    ranks = np.arange(1, n + 1)
    low_ok = special.bdtr(ranks - 1, n, q) <= alpha
    high_ok = special.bdtrc(ranks - 1, n, q) <= alpha
    low = float(array[ranks[low_ok][-1] - 1]) if low_ok.any() else -math.inf
    high = float(array[ranks[high_ok][0] - 1]) if high_ok.any() else math.inf
    return float(np.quantile(array, q)), (low, high)


def check_quantile(
    name: Literal["drawdown"], values: ArrayLike, budget: float, q: float = DD_QUANTILE, alpha: float = ALPHA
) -> BudgetVerdict:
    """The q-quantile of values <= budget, judged with its distribution-free interval.

    p-values come from counts: p_ok = P(Bin(n, q) >= #{x < budget}) and
    p_violated = P(Bin(n, q) <= #{x <= budget}); each is <= alpha exactly when the matching
    order-statistic bound passes the budget.
    """
    _check_real(budget, f"{name} budget")
    estimate, (low, high) = quantile_interval(values, q, alpha)
    array = finite_values(values, "values")
    n = array.size
    below, at_most = int((array < budget).sum()), int((array <= budget).sum())
    return BudgetVerdict(
        name=name, statistic="p95", estimate=estimate, low=low, high=high, budget=float(budget),
        direction="max", margin=float(signed_margin(estimate, budget, "max")),
        verdict=verdict_of(low, high, budget, "max"), n=n,
        p_ok=1.0 if below == 0 else float(special.bdtrc(below - 1, n, q)), p_violated=float(special.bdtr(at_most, n, q)),
        alpha=alpha,
    )


def check_drawdown_budget(
    drawdowns: ArrayLike,
    budget: float,
    statistic: DdStatistic = "mean",
    alpha: float = ALPHA,
    min_n: int = MIN_N,
) -> BudgetVerdict:
    """Session drawdowns (positive USD) against the budget by `statistic` (world_model.dd_statistic).

    `mean`: the t check of the mean drawdown; `p95`: the order-statistic check of the 95th
    percentile, a tail measure that suits a risk budget and needs no minimum n.
    """
    if statistic == "mean":
        return check_mean("drawdown", drawdowns, budget, "max", alpha, min_n)
    if statistic == "p95":
        return check_quantile("drawdown", drawdowns, budget, DD_QUANTILE, alpha)
    raise ParaphinaError(f"dd_statistic must be 'mean' or 'p95', got {statistic!r}")


def check_tier(
    tier: RiskTier,
    final_pnls: ArrayLike,
    drawdowns: ArrayLike,
    kill_flags: ArrayLike,
    rules: CheckRules = CheckRules(),
) -> tuple[BudgetVerdict, BudgetVerdict, BudgetVerdict]:
    """The tier's three checks on one group of runs: kill probability, drawdown, mean final PnL, in that order."""
    flags = np.asarray(kill_flags, dtype=bool).ravel()
    sizes = {flags.size, np.asarray(final_pnls).size, np.asarray(drawdowns).size}
    if len(sizes) != 1:
        raise ParaphinaError(
            f"tier {tier.name!r}: final_pnls, drawdowns and kill_flags must describe the same runs, got lengths {sorted(sizes)}"
        )
    return (
        check_kill_exact(int(flags.sum()), int(flags.size), tier.max_kill_prob, rules.alpha),
        check_drawdown_budget(drawdowns, tier.max_drawdown_abs, rules.dd_statistic, rules.alpha, rules.min_n),
        check_mean("pnl", final_pnls, tier.min_final_pnl_mean, "min", rules.alpha, rules.min_n),
    )


# --- family of checks --------------------------------------------------------------------------


def holm_adjust(p_values: ArrayLike) -> np.ndarray:
    """Holm step-down adjusted p-values, in the input order.

    Rejecting every hypothesis whose adjusted p-value is <= alpha keeps the family-wise
    error rate (any false rejection) at or below alpha under any dependence between the
    tests, as the 9 checks of 3 tiers on the same runs are.
    """
    p = np.asarray(p_values, dtype=float).ravel()
    if p.size == 0:
        raise ParaphinaError("no p-values to adjust")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ParaphinaError("p-values must lie within [0, 1]")
    order = np.argsort(p, kind="stable")
    m = p.size
    stepped = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted


def holm_alarms(p_violated: ArrayLike, alpha: float = ALPHA) -> np.ndarray:
    """Which checks of a family raise a `violated` alarm: their p_violated after Holm's adjustment at alpha
    (a boolean array in the input's shape)."""
    check_alpha(alpha)
    p = np.asarray(p_violated, dtype=float)
    return holm_adjust(p.ravel()).reshape(p.shape) <= alpha
