"""target=decisive for Exp08 and Exp13: each profile runs through the looks of a group-sequential plan until all its
budgets are decided or its last look; the plan is fixed before the first added run, so stopping early keeps each
verdict's error rate at its alpha (ENGINE_SPEC section 7)."""
from __future__ import annotations

import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from omegaconf import DictConfig

from paraphina.core.errors import ParaphinaError
from paraphina.experiments import alignment
from paraphina.world_model.sequential import (
    SequentialDesign,
    Spending,
    describe_design,
    design_for_looks,
    plan_sequential,
    sequential_verdict,
)
from paraphina.world_model.tiers import RiskTier
from paraphina.world_model.verdicts import check_tier, is_decided

RunRound = Callable[[list[str], int, int], object]
"""Runs `seeds` more seeds (from offset `start`) of these profiles and adds them to their ProfileRuns; what it
returns is collected for the caller."""


@dataclass
class ProfileRuns:
    """What one profile's runs measured so far."""

    final_pnl: list[float] = field(default_factory=list)
    max_drawdown: list[float] = field(default_factory=list)
    kill_switch: list[bool] = field(default_factory=list)

    def add(self, metrics: dict, rows: np.ndarray) -> None:
        self.final_pnl.extend(np.asarray(metrics["final_pnl"])[rows].tolist())
        self.max_drawdown.extend(np.asarray(metrics["max_drawdown"])[rows].tolist())
        self.kill_switch.extend(np.asarray(metrics["kill_switch"], dtype=bool)[rows].tolist())


@dataclass
class SequentialPlan:
    """One profile's plan: the kill test's design, and the verdicts reached so far (a stopped kill test keeps
    its verdict: looking again after a stop would void its error rate)."""

    design: SequentialDesign
    look: int = 0
    verdicts: dict[str, str] = field(default_factory=dict)

    def next_runs(self) -> int:
        return self.design.looks[self.look]


def plan_profiles(cfg: DictConfig, profiles: Sequence[str]) -> dict[str, SequentialPlan]:
    """A group-sequential kill test per profile at its tier's budget, within the cap (fewer runs than planned
    cost power, which the printed plan says)."""
    tiers, rules, decisive = alignment.load_tiers(cfg), alignment.check_rules(cfg), cfg.experiment.decisive
    plans = {}
    for p in profiles:
        budget = tiers[p].max_kill_prob
        design = plan_sequential(budget, rules.alpha, decisive.power, budget * decisive.planned_fraction,
                                 decisive.looks, decisive.spending)
        if design.cap > decisive.max_runs_per_profile:
            step = decisive.max_runs_per_profile / decisive.looks
            looks = tuple(sorted({max(1, round(step * (i + 1))) for i in range(decisive.looks)}))
            design = design_for_looks(looks, budget, rules.alpha, decisive.spending,
                                      budget * decisive.planned_fraction)
        plans[p] = SequentialPlan(design)
    return plans


def check_plans(cfg: DictConfig, profiles: Sequence[str], first_round: int) -> None:
    """The plans' settings, and that a first round of `first_round` runs per profile fits them: before any run."""
    decisive, tiers = cfg.experiment.decisive, alignment.load_tiers(cfg)
    untiered = [p for p in profiles if p not in tiers]
    if untiered:
        raise ParaphinaError(f"profile(s) {', '.join(untiered)} have no risk tier to plan against; "
                             f"tiers: {', '.join(tiers)}")
    spendings = typing.get_args(Spending)
    if decisive.spending not in spendings:
        raise ParaphinaError(f"experiment.decisive.spending={decisive.spending!r} is not one of {', '.join(spendings)}")
    if not 0.0 < decisive.planned_fraction < 1.0:
        raise ParaphinaError(f"experiment.decisive.planned_fraction={decisive.planned_fraction} must lie strictly "
                             f"between 0 and 1: the plan needs a true kill probability below the budget to read ok")
    short = {p: plan.design.cap for p, plan in plan_profiles(cfg, profiles).items() if plan.design.cap < first_round}
    if short:
        raise ParaphinaError(f"runs_per_profile={first_round} is past the sequential plan's last look for "
                             + ", ".join(f"{p} ({n} runs)" for p, n in short.items()) + "; use a smaller runs_per_profile")


def look_verdicts(cfg: DictConfig, plan: SequentialPlan, tier: RiskTier, runs: ProfileRuns) -> dict[str, str]:
    """The verdicts at the plan's current look: the kill test's boundaries, and the means at alpha / looks."""
    rules = alignment.check_rules(cfg).per_look(len(plan.design.looks))
    n = len(runs.final_pnl)
    kill = sequential_verdict(plan.design, n, int(np.sum(runs.kill_switch)))
    _, dd, pnl = check_tier(tier, runs.final_pnl, runs.max_drawdown, runs.kill_switch, rules)
    found = {"kill": kill, "dd": dd.verdict, "pnl": pnl.verdict}
    return {prefix: plan.verdicts.get(prefix) if is_decided(plan.verdicts.get(prefix, "")) else verdict
            for prefix, verdict in found.items()}


def announced_plans(cfg: DictConfig, profiles: Sequence[str]) -> dict[str, SequentialPlan]:
    """Each profile's plan, printed before any of its runs."""
    plans = plan_profiles(cfg, profiles)
    for p, plan in plans.items():
        print(f"{p}: {describe_design(plan.design)}", flush=True)
    return plans


def sequential_rounds(cfg: DictConfig, plans: dict[str, SequentialPlan], measured: dict[str, ProfileRuns],
                      run_round: RunRound) -> list:
    """Run every profile through its planned looks until all its budgets are decided or its last look (the
    plans keep their looks and verdicts); returns what each `run_round` call returned.

    Profiles at the same look share one `run_round` call, and every profile keeps the seeds seed, seed+1, ...
    (common random numbers); runs already in `measured` count toward the first looks.
    """
    tiers = alignment.load_tiers(cfg)
    active = [p for p in plans if len(measured[p].final_pnl) <= plans[p].design.cap]
    rounds = []
    while active:
        groups: dict[tuple[int, int], list[str]] = {}
        for p in active:
            plan, have = plans[p], len(measured[p].final_pnl)
            while plan.next_runs() < have:  # earlier runs already passed this look's count
                plan.look += 1
            groups.setdefault((have, plan.next_runs()), []).append(p)
        for (start, target), profiles in groups.items():
            if target > start:
                rounds.append(run_round(profiles, target - start, start))
        still = []
        for p in active:
            plan = plans[p]
            plan.verdicts = look_verdicts(cfg, plan, tiers[p], measured[p])
            done = all(map(is_decided, plan.verdicts.values())) or plan.look == len(plan.design.looks) - 1
            print(f"look {plan.look + 1} of {len(plan.design.looks)}: {p} at {plan.next_runs()} runs: "
                  + ", ".join(f"{k} {v}" for k, v in plan.verdicts.items()) + ("" if done else "; continuing"),
                  flush=True)
            if not done:
                plan.look += 1
                still.append(p)
        active = still
    return rounds
