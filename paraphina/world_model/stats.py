"""Statistical verdicts on risk budgets: a point estimate alone cannot show "kill probability <= 1 %".

Superseded by world_model.verdicts, power and sequential (ENGINE_SPEC section 7, version 2):
Wilson bounds and "runs needed at the observed rate" do not keep their error rates at small
n. Kept until the experiments move to those modules.

Each budget check reports a 95 % interval (Wilson for probabilities, Student t for means),
a verdict (`ok`, `violated`, or `inconclusive` when the interval straddles the budget) and,
when inconclusive, how many runs per profile would decide it at the observed rate or mean.

Boundary convention: a budget lying exactly on the interval's safe end counts as `ok`
(e.g. for a "max" budget, high == budget is ok), matching the point checks where a
margin of zero passes.
"""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal, Union

import numpy as np

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.tiers import Direction, RiskTier, signed_margin
from paraphina.world_model.verdicts import clopper_pearson, finite_values

Verdict = Literal["ok", "violated", "inconclusive"]
CheckName = Literal["kill_prob", "drawdown", "pnl"]
Interval = tuple[float, float]
ArrayLike = Union[Sequence[float], np.ndarray]

def _two_sided_z(confidence: float) -> float:
    """Standard normal quantile for a two-sided interval at `confidence`."""
    _check_confidence(confidence)
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ParaphinaError(f"confidence must be strictly between 0 and 1, got {confidence}")


# --- Wilson interval -------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion; n = 0 gives the uninformative (0, 1)."""
    _check_counts(successes, n)
    z = _two_sided_z(confidence)
    if n == 0:
        return (0.0, 1.0)
    return _wilson(successes / n, n, z)


def _check_counts(successes: int, n: int) -> None:
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in (successes, n)):
        raise ParaphinaError(f"need integer counts, got successes={successes!r}, n={n!r}")
    if not 0 <= successes <= n:
        raise ParaphinaError(f"need 0 <= successes <= n, got successes={successes}, n={n}")


def _wilson(rate: float, n: int, z: float) -> Interval:
    """Wilson interval at an observed rate (possibly a hypothetical one at another n)."""
    z2n = z * z / n
    centre = (rate + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(rate * (1 - rate) / n + z2n / (4 * n)) / (1 + z2n)
    low = 0.0 if rate == 0 else max(0.0, centre - half)
    high = 1.0 if rate == 1 else min(1.0, centre + half)
    return (low, high)


# --- Student t quantile ----------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t with `df` degrees of freedom (cached: the runs-needed search asks it often)."""
    from scipy.special import stdtrit  # 0.2 s to import, paid only when a t interval is computed

    if not 0.0 < p < 1.0:
        raise ParaphinaError(f"t quantile needs 0 < p < 1, got {p}")
    if isinstance(df, bool) or not isinstance(df, numbers.Integral) or df < 1:
        raise ParaphinaError(f"t quantile needs a positive integer df, got {df!r}")
    return float(stdtrit(df, p))


# --- Mean interval ---------------------------------------------------------------------------


def _mean_std(array: np.ndarray) -> tuple[float, float]:
    """Mean and sample std (ddof 1, NaN for one value); all-equal values give exactly (value, 0)."""
    if np.all(array == array[0]):
        return float(array[0]), (0.0 if array.size > 1 else math.nan)
    return float(array.mean()), float(array.std(ddof=1))


def _t_interval(mean: float, std: float, n: int, confidence: float) -> Interval:
    """Student t interval for a mean; one value (or fewer) cannot bound it."""
    if n < 2:
        return (-math.inf, math.inf)
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return (mean - half, mean + half)


def mean_interval(values: ArrayLike, confidence: float = 0.95) -> Interval:
    """Student t interval for the mean; one value gives (-inf, inf), all-equal values a zero-width interval."""
    _check_confidence(confidence)
    array = finite_values(values, "values")
    mean, std = _mean_std(array)
    return _t_interval(mean, std, array.size, confidence)


# --- Budget checks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetCheck:
    """A budget judged with an interval rather than a point estimate.

    `margin` is the signed point-estimate margin (positive = safe). `runs_needed` is only
    set for an inconclusive verdict: for the kill probability the power plan's runs (80 %
    power to show ok at half the budget), for a mean the runs that would decide it if the
    observed mean and std held; None when no number of runs would.
    """

    name: CheckName
    estimate: float
    low: float
    high: float
    budget: float
    direction: Direction
    margin: float
    verdict: Verdict
    runs_needed: int | None
    n: int


def verdict(low: float, high: float, budget: float, direction: Direction) -> Verdict:
    """ok if the whole interval is on the safe side (touching the budget counts), violated if wholly beyond it."""
    worst, best = (high, low) if direction == "max" else (low, high)
    if signed_margin(worst, budget, direction) >= 0:
        return "ok"
    if signed_margin(best, budget, direction) < 0:
        return "violated"
    return "inconclusive"


def _smallest_deciding_n(decides: Callable[[int], bool], undecided_n: int) -> int:
    """Smallest n > undecided_n with decides(n) (doubling, then bisection; decisions are monotone in n)."""
    lo, hi = undecided_n, 2 * undecided_n
    while not decides(hi):
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decides(mid) else (mid, hi)
    return hi


def _check(
    name: CheckName,
    estimate: float,
    n: int,
    budget: float,
    direction: Direction,
    interval_at: Callable[[int], Interval],
    decidable: bool,
) -> BudgetCheck:
    """Judge a budget from the interval at the observed n, searching runs_needed if inconclusive."""
    low, high = interval_at(n)
    outcome = verdict(low, high, budget, direction)
    runs_needed = None
    if outcome == "inconclusive" and decidable:
        runs_needed = _smallest_deciding_n(
            lambda m: verdict(*interval_at(m), budget, direction) != "inconclusive", n
        )
    return BudgetCheck(
        name=name,
        estimate=estimate,
        low=low,
        high=high,
        budget=float(budget),
        direction=direction,
        margin=float(signed_margin(estimate, budget, direction)),
        verdict=outcome,
        runs_needed=runs_needed,
        n=n,
    )


def check_kill(kills: int, n: int, budget: float, confidence: float = 0.95) -> BudgetCheck:
    """Kill probability <= budget, judged with exact Clopper-Pearson bounds of kills out of n runs, each
    one-sided at (1 - confidence) / 2: unlike Wilson's, they keep that error rate at every n (Wilson read
    1 kill of 1 run as "violated" for any budget up to 0.2).

    runs_needed comes from a power calculation (ENGINE_SPEC section 7): the runs for 80 % power to show
    `ok` when the true kill probability is half the budget; None when the check is decided.
    """
    _check_counts(kills, n)
    if n == 0:
        raise ParaphinaError("no runs to estimate the kill probability from")
    _check_confidence(confidence)
    alpha = (1.0 - confidence) / 2.0
    low, high = clopper_pearson(kills, n, alpha)
    outcome = verdict(low, high, budget, "max")
    runs_needed = None
    if outcome == "inconclusive" and 0.0 < budget < 1.0:
        # imported here: the power plan needs scipy.stats (0.5 s), which a run that prints no verdict never pays
        from paraphina.world_model.power import kill_runs_needed

        runs_needed = max(kill_runs_needed(budget, alpha, observed_kills=kills).runs, n + 1)
    rate = kills / n
    return BudgetCheck(name="kill_prob", estimate=rate, low=low, high=high, budget=float(budget), direction="max",
                       margin=float(signed_margin(rate, budget, "max")), verdict=outcome, runs_needed=runs_needed,
                       n=n)


def _check_mean(
    name: Literal["drawdown", "pnl"], values: ArrayLike, budget: float, direction: Direction, confidence: float
) -> BudgetCheck:
    """A mean against its budget, judged with the t interval; runs_needed keeps the mean and std.

    The search finds the smallest n with ceil((t_{n-1} * s / |mean - budget|)^2) <= n, i.e. the
    fixed point of that iteration. None with a single run (no std) or a mean on the budget.
    """
    _check_confidence(confidence)
    array = finite_values(values, f"{name} values")
    mean, std = _mean_std(array)
    return _check(
        name,
        mean,
        array.size,
        budget,
        direction,
        lambda m: _t_interval(mean, std, m, confidence),
        decidable=array.size >= 2 and mean != budget,
    )


def check_drawdown(drawdowns: ArrayLike, budget: float, confidence: float = 0.95) -> BudgetCheck:
    """Mean max drawdown (positive USD) <= budget."""
    return _check_mean("drawdown", drawdowns, budget, "max", confidence)


def check_pnl(pnls: ArrayLike, budget: float, confidence: float = 0.95) -> BudgetCheck:
    """Mean final PnL >= budget."""
    return _check_mean("pnl", pnls, budget, "min", confidence)


def check_tier(
    tier: RiskTier,
    final_pnls: ArrayLike,
    drawdowns: ArrayLike,
    kill_flags: ArrayLike,
    confidence: float = 0.95,
) -> list[BudgetCheck]:
    """The tier's three budgets on one profile's runs, in the order kill_prob, drawdown, pnl."""
    flags = np.asarray(kill_flags, dtype=bool).ravel()
    sizes = {len(np.ravel(final_pnls)), len(np.ravel(drawdowns)), flags.size}
    if len(sizes) != 1:
        raise ParaphinaError(
            f"tier {tier.name!r}: final_pnls, drawdowns and kill_flags must describe the same runs, got lengths {sorted(sizes)}"
        )
    return [
        check_kill(int(flags.sum()), flags.size, tier.max_kill_prob, confidence),
        check_drawdown(drawdowns, tier.max_drawdown_abs, confidence),
        check_pnl(final_pnls, tier.min_final_pnl_mean, confidence),
    ]
