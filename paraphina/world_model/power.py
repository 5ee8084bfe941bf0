"""Runs needed for a verdict with a stated power under a stated true value, and that assumption as a line to print
(not "runs at the observed rate": 0 kills of 2 runs fits a 66 % rate)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.tiers import Direction, signed_margin
from paraphina.world_model.verdicts import (
    ALPHA,
    DD_QUANTILE,
    MIN_N,
    POWER,
    ArrayLike,
    BudgetVerdict,
    CheckRules,
    check_alpha,
    check_min_n,
    check_probability_budget,
    check_share,
    finite_values,
)

MAX_RUNS = 10_000_000
"""Largest run count the searches consider before reporting that no feasible count exists."""


@dataclass(frozen=True)
class RunsNeeded:
    """Total runs per profile for a verdict with `power`, under `assumption` (one printable line).

    `runs` is None when no number of runs gives that power (a true value on the budget);
    `power` is then NaN.
    """

    runs: int | None
    power: float
    assumption: str


def _pct(p: float) -> str:
    """A probability as a short percentage (0.005 -> '0.5 %')."""
    return f"{100 * p:.3g} %"


def kill_ok_limit(n: np.ndarray | int, budget: float, alpha: float = ALPHA) -> np.ndarray:
    """Most kills out of n that still read `ok` by the exact check (-1 where none does).

    k reads ok when its Clopper-Pearson upper bound is below the budget, i.e. when
    P(Bin(n, budget) <= k) < alpha; the limit is the smallest k with that probability
    >= alpha, minus one.
    """
    return np.asarray(stats.binom.ppf(alpha, n, budget), dtype=np.int64) - 1


def kill_min_runs(budget: float, alpha: float = ALPHA) -> int:
    """Fewest runs at which 0 kills read ok: the exact rule-of-three count, (1 - budget)^n < alpha.

    It is a minimum, not an estimate: any kill raises it, and it carries no power.
    """
    check_probability_budget(budget)
    check_alpha(alpha)
    if budget == 0.0:
        raise ParaphinaError("a zero kill-probability budget can never read ok")
    n = 1 if budget == 1.0 else max(1, math.floor(math.log(alpha) / math.log1p(-budget)))
    while (1.0 - budget) ** n >= alpha:
        n += 1
    while n > 1 and (1.0 - budget) ** (n - 1) < alpha:
        n -= 1
    return n


def kill_power(n: np.ndarray | int, budget: float, true_rate: float, alpha: float = ALPHA) -> np.ndarray:
    """Exact probability that n runs at kill rate `true_rate` read `ok` against the budget."""
    return stats.binom.cdf(kill_ok_limit(n, budget, alpha), n, true_rate)


def kill_runs_needed(
    budget: float,
    alpha: float = ALPHA,
    power: float = POWER,
    true_rate: float | None = None,
    observed_kills: int | None = None,
) -> RunsNeeded:
    """Smallest n whose exact check says `ok` with probability >= power at `true_rate` (default: half the budget).

    Computed by summing binomial probabilities, not by a normal approximation. Power is a
    saw-tooth in n (the kill counts are whole), so a slightly larger n can fall just short;
    the count returned is the first that reaches it. With `observed_kills == 0` the text also
    gives the rule-of-three minimum and says that it is only a minimum.
    """
    check_probability_budget(budget)
    check_alpha(alpha)
    check_share("power", power)
    rate = budget / 2 if true_rate is None else true_rate
    if not 0.0 <= rate < budget:
        raise ParaphinaError(f"true_rate must lie within [0, budget) to read ok, got {rate} for budget {budget}")
    start = 1
    while start <= MAX_RUNS:
        ns = np.arange(start, min(2 * start + 63, MAX_RUNS) + 1)
        reached = kill_power(ns, budget, rate, alpha) >= power
        if reached.any():
            n = int(ns[reached][0])
            break
        start = int(ns[-1]) + 1
    else:
        raise ParaphinaError(f"more than {MAX_RUNS} runs needed for {_pct(power)} power at a true rate of {rate}")
    achieved = float(kill_power(n, budget, rate, alpha))
    share = rate / budget
    half = " (half the budget)" if share == 0.5 else f" ({share:.2g} of the budget)"
    text = (
        f"{n} runs: {_pct(achieved)} power to read ok (exact one-sided binomial test, alpha {alpha:.4g}) "
        f"if the true kill probability is {_pct(rate)}{half}, budget {_pct(budget)}"
    )
    if observed_kills == 0:
        text += (
            f"; with 0 kills so far, {kill_min_runs(budget, alpha)} runs is the rule-of-three minimum "
            f"before 0 kills can read ok, not an estimate"
        )
    return RunsNeeded(runs=n, power=achieved, assumption=text)


def mean_power(n: int, effect: float, alpha: float = ALPHA) -> float:
    """Probability that a one-sided t test at alpha on n normal values decides when |true mean - budget| / std = effect."""
    return float(stats.nct.sf(stats.t.ppf(1.0 - alpha, n - 1), n - 1, effect * math.sqrt(n)))


def mean_runs_needed(
    name: str,
    values: ArrayLike,
    budget: float,
    direction: Direction,
    alpha: float = ALPHA,
    power: float = POWER,
    true_mean: float | None = None,
    min_n: int = MIN_N,
) -> RunsNeeded:
    """Smallest n >= min_n at which the t check decides with probability >= power (noncentral t, observed std).

    The assumed true mean defaults to the observed one; the target verdict is `ok` when it
    lies on the safe side and `violated` otherwise. Exact for normal values; the observed
    std is itself an estimate, which the text says.
    """
    check_alpha(alpha)
    check_share("power", power)
    check_min_n(min_n)
    array = finite_values(values, f"{name} values")
    if array.size < 2:
        raise ParaphinaError(f"{name}: one run gives no std to plan from; run at least 2")
    std = float(array.std(ddof=1))
    mean = float(array.mean()) if true_mean is None else float(true_mean)
    where = "observed" if true_mean is None else "assumed"
    safe = signed_margin(mean, budget, direction)
    target = "ok" if safe > 0 else "violated"
    setting = (f"if the true mean {name} is the {where} {mean:,.4g} with the observed std {std:,.4g} "
               f"(budget {budget:,.4g}; the std is itself estimated)")
    if safe == 0:
        return RunsNeeded(runs=None, power=math.nan, assumption=f"no number of runs decides: {setting}")
    if std == 0.0:
        return RunsNeeded(runs=min_n, power=1.0, assumption=f"{min_n} runs (the minimum) decide {setting}")
    effect = abs(safe) / std
    lo, hi = min_n - 1, min_n
    while mean_power(hi, effect, alpha) < power:
        if hi > MAX_RUNS:
            raise ParaphinaError(f"{name}: more than {MAX_RUNS} runs needed for {_pct(power)} power {setting}")
        lo, hi = hi, 2 * hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if mean_power(mid, effect, alpha) >= power else (mid, hi)
    achieved = mean_power(hi, effect, alpha)
    text = f"{hi} runs: {_pct(achieved)} power to read {target} (one-sided t test, alpha {alpha:.4g}) {setting}"
    return RunsNeeded(runs=hi, power=achieved, assumption=text)


def quantile_min_runs(q: float, alpha: float = ALPHA) -> int:
    """Fewest runs whose order-statistic interval of the q-quantile has a finite upper end: q^n <= alpha."""
    check_alpha(alpha)
    return math.ceil(math.log(alpha) / math.log(q))


def runs_to_decide(check: BudgetVerdict, values: ArrayLike, rules: CheckRules = CheckRules()) -> RunsNeeded:
    """What an undecided check needs, at least one run more than it has, at the rules' power.

    Kill probability: the exact test's runs at a true rate of the rules' planned fraction of the
    budget; means: the t test's runs at the observed mean and spread; the drawdown p95: the runs its interval
    needs for an upper end, or None once it has them (the tail decides with more runs only
    where it lies off the budget, which one sample cannot plan from).
    """
    if check.statistic == "rate":
        if not 0.0 < check.budget < 1.0:
            return RunsNeeded(None, math.nan, f"no number of runs decides a kill budget of {check.budget}")
        plan = kill_runs_needed(check.budget, check.alpha, rules.power, check.budget * rules.planned_fraction,
                                observed_kills=round(check.estimate * check.n))
    elif check.statistic == "mean":
        if check.n < 2:
            return RunsNeeded(None, math.nan, f"{check.name}: one run gives no spread to plan from")
        plan = mean_runs_needed(check.name, values, check.budget, check.direction, check.alpha, rules.power,
                                min_n=rules.min_n)
    else:
        needed = quantile_min_runs(DD_QUANTILE, check.alpha)
        if check.n >= needed:
            return RunsNeeded(None, math.nan, f"{check.name} p95: its interval straddles the budget")
        plan = RunsNeeded(needed, math.nan, f"{needed} runs give the {check.name} p95 interval an upper end")
    if plan.runs is None:
        return plan
    return RunsNeeded(max(plan.runs, check.n + 1), plan.power, plan.assumption)
