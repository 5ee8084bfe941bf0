"""A group-sequential test of the kill probability for `target=decisive` (ENGINE_SPEC section 7): the looks and
the kill counts that stop at each are fixed first, so at a rate on the budget P(ever ok), P(ever violated) <= alpha."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
from scipy import stats

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.power import POWER, kill_runs_needed
from paraphina.world_model.verdicts import ALPHA, Verdict, check_alpha, check_counts, check_probability_budget

Spending = Literal["obrien_fleming", "pocock"]
LOOKS = 5
"""Default number of looks: five equally spaced ones cost O'Brien-Fleming-like designs about 2 % more runs."""


@dataclass(frozen=True)
class SequentialDesign:
    """Looks (cumulative runs), stopping boundaries and exact operating characteristics of one plan.

    At look i with `looks[i]` runs: kills <= `ok_at_most[i]` stop `ok` (-1: not possible
    yet), kills >= `violated_at_least[i]` stop `violated` (looks[i] + 1: not possible);
    otherwise continue, and at the last look (the cap) stop `inconclusive`. The
    probabilities and expected runs are exact, computed with both boundaries in force.
    """

    budget: float
    alpha: float
    spending: Spending
    looks: tuple[int, ...]
    ok_at_most: tuple[int, ...]
    violated_at_least: tuple[int, ...]
    true_rate: float
    power: float
    ok_at_budget: float
    violated_at_budget: float
    expected_runs_at_budget: float
    expected_runs_at_true_rate: float

    @property
    def cap(self) -> int:
        """Most runs the design can take."""
        return self.looks[-1]


def spent_alpha(spending: Spending, fraction: float, alpha: float) -> float:
    """Cumulative error spent by information fraction t (Lan-DeMets; alpha at t = 1).

    `obrien_fleming`: 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), little spent early, so the cap is
    barely above the fixed-n count; `pocock`: alpha ln(1 + (e - 1) t), evenly spent, earlier
    stops for a larger cap.
    """
    if spending == "obrien_fleming":
        z = NormalDist().inv_cdf(1.0 - alpha / 2)
        return 2.0 - 2.0 * NormalDist().cdf(z / math.sqrt(fraction))
    if spending == "pocock":
        return alpha * math.log1p((math.e - 1.0) * fraction)
    raise ParaphinaError(f"spending must be 'obrien_fleming' or 'pocock', got {spending!r}")


def _advance(density: np.ndarray, runs: int, rate: float) -> np.ndarray:
    """Sub-density of the kill count after `runs` more runs at `rate` (convolution with their binomial)."""
    return np.convolve(density, stats.binom.pmf(np.arange(runs + 1), runs, rate))


def _boundaries(looks: tuple[int, ...], budget: float, alpha: float, spending: Spending) -> tuple[list[int], list[int]]:
    """Exact boundaries of each side at a rate on the budget, each side spending alpha on its own.

    Each side ignores the other one's stops (non-binding), so its error stays <= alpha even
    when the other side ends a trial early. Unspent alpha carries to later looks. No count
    reads both: P(S_k <= ok bound) <= alpha and P(S_k >= violated bound) <= alpha at every
    look, and alpha < 0.5.
    """
    ok_at_most, violated_at_least = [], []
    low_paths, high_paths = np.ones(1), np.ones(1)
    low_spent = high_spent = 0.0
    for n, before in zip(looks, (0, *looks)):
        allowed = spent_alpha(spending, n / looks[-1], alpha)
        low_paths, high_paths = _advance(low_paths, n - before, budget), _advance(high_paths, n - before, budget)
        lower_tail = low_spent + np.cumsum(low_paths)
        a = int(np.searchsorted(lower_tail, allowed, side="right")) - 1
        if a >= 0:
            low_spent = float(lower_tail[a])
            low_paths[: a + 1] = 0.0
        upper_tail = high_spent + np.cumsum(high_paths[::-1])[::-1]
        b = n + 1 - int(np.searchsorted(upper_tail[::-1], allowed, side="right"))
        if b <= n:
            high_spent = float(upper_tail[b])
            high_paths[b:] = 0.0
        ok_at_most.append(a)
        violated_at_least.append(b)
    return ok_at_most, violated_at_least


def operating_characteristics(
    looks: tuple[int, ...], ok_at_most: tuple[int, ...], violated_at_least: tuple[int, ...], rate: float
) -> tuple[float, float, float]:
    """Exact P(stop ok), P(stop violated) and expected runs of the design at a true kill rate."""
    paths = np.ones(1)
    p_ok = p_violated = expected = 0.0
    for n, before, a, b in zip(looks, (0, *looks), ok_at_most, violated_at_least):
        paths = _advance(paths, n - before, rate)
        stop_ok, stop_violated = float(paths[: a + 1].sum()), float(paths[b:].sum())
        p_ok, p_violated = p_ok + stop_ok, p_violated + stop_violated
        expected += n * (stop_ok + stop_violated)
        paths[: a + 1] = 0.0
        paths[b:] = 0.0
    return p_ok, p_violated, expected + looks[-1] * float(paths.sum())


def design_for_looks(
    looks: tuple[int, ...], budget: float, alpha: float = ALPHA, spending: Spending = "obrien_fleming",
    true_rate: float | None = None,
) -> SequentialDesign:
    """The design with these looks: its exact boundaries and operating characteristics at the budget and at true_rate."""
    check_probability_budget(budget)
    check_alpha(alpha)
    if not looks or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) for n in looks):
        raise ParaphinaError(f"looks must be a non-empty sequence of run counts, got {looks!r}")
    looks = tuple(int(n) for n in looks)
    if looks[0] < 1 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ParaphinaError(f"looks must be increasing positive run counts, got {list(looks)}")
    rate = budget / 2 if true_rate is None else float(true_rate)
    ok_at_most, violated_at_least = map(tuple, _boundaries(looks, budget, alpha, spending))
    ok_b, violated_b, expected_b = operating_characteristics(looks, ok_at_most, violated_at_least, budget)
    ok_r, _, expected_r = operating_characteristics(looks, ok_at_most, violated_at_least, rate)
    return SequentialDesign(
        budget=float(budget), alpha=alpha, spending=spending, looks=looks, ok_at_most=ok_at_most,
        violated_at_least=violated_at_least, true_rate=rate, power=ok_r, ok_at_budget=ok_b,
        violated_at_budget=violated_b, expected_runs_at_budget=expected_b, expected_runs_at_true_rate=expected_r,
    )


def plan_sequential(
    budget: float,
    alpha: float = ALPHA,
    power: float = POWER,
    true_rate: float | None = None,
    n_looks: int = LOOKS,
    spending: Spending = "obrien_fleming",
) -> SequentialDesign:
    """Equally spaced looks, the smallest spacing whose design reads `ok` with >= power at true_rate.

    The search starts from the fixed-n count of kill_runs_needed (same alpha, power and
    true rate, default half the budget) split into `n_looks` groups, and widens the groups
    one run at a time; the power is exact (binomial sums), not simulated.
    """
    if isinstance(n_looks, bool) or not isinstance(n_looks, numbers.Integral) or n_looks < 1:
        raise ParaphinaError(f"n_looks must be a positive integer, got {n_looks!r}")
    fixed = kill_runs_needed(budget, alpha, power, true_rate).runs
    assert fixed is not None  # a true rate below the budget always has a count
    group = math.ceil(fixed / n_looks)
    while True:
        design = design_for_looks(tuple(group * (i + 1) for i in range(n_looks)), budget, alpha, spending, true_rate)
        if design.power >= power:
            return design
        group += 1


def sequential_verdict(design: SequentialDesign, runs: int, kills: int) -> Verdict:
    """The verdict at a look: ok or violated stop the trial; inconclusive continues, or at the cap ends it undecided.

    `runs` must be one of the design's looks and `kills` counted over all its runs; looking
    at other counts, or going on after a stop, voids the error guarantee.
    """
    check_counts(kills, runs)
    if runs not in design.looks:
        raise ParaphinaError(f"the sequential design looks at {', '.join(map(str, design.looks))} runs, not at {runs}")
    i = design.looks.index(runs)
    if kills <= design.ok_at_most[i]:
        return "ok"
    if kills >= design.violated_at_least[i]:
        return "violated"
    return "inconclusive"


def describe_design(design: SequentialDesign) -> str:
    """The plan as text to print before the first run: looks, boundaries, cap, power and expected runs."""
    name = {"obrien_fleming": "O'Brien-Fleming-like", "pocock": "Pocock-like"}[design.spending]
    rows = [
        f"{i + 1:>4}  {n:>6}  {('-' if a < 0 else str(a)):>14}  {('-' if b > n else str(b)):>19}"
        for i, (n, a, b) in enumerate(zip(design.looks, design.ok_at_most, design.violated_at_least))
    ]
    return "\n".join([
        f"sequential kill-probability test against a {100 * design.budget:.3g} % budget: {len(design.looks)} looks, "
        f"{name} alpha spending, alpha {design.alpha:.4g} per side",
        "look    runs  ok if kills <=  violated if kills >=",
        *rows,
        f"cap {design.cap} runs; {100 * design.power:.1f} % power to read ok if the true kill probability is "
        f"{100 * design.true_rate:.3g} %",
        f"at a rate on the budget: ok {100 * design.ok_at_budget:.2f} %, violated {100 * design.violated_at_budget:.2f} % "
        f"(each <= {100 * design.alpha:.3g} %)",
        f"expected runs: {design.expected_runs_at_budget:,.0f} at the budget, "
        f"{design.expected_runs_at_true_rate:,.0f} at {100 * design.true_rate:.3g} %",
    ])
