"""World-model alignment shared by Exp10, Exp11 and Exp13: groups of runs (a profile's, optionally a label's)
checked against their tier's budgets, with verdicts, runs needed and Holm-adjusted alarms."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.loading import is_dataset_file
from paraphina.core.errors import ParaphinaError
from paraphina.experiments.records import latest_points, store_uri
from paraphina.world_model.power import runs_to_decide
from paraphina.world_model.tiers import RiskTier, budget_margins, tier_score, tiers_from_mapping
from paraphina.world_model.verdicts import CheckRules, check_tier, holm_alarms, is_decided, quantile_interval

VERDICTS = ("ok", "violated", "inconclusive")


@dataclass(frozen=True)
class Budget:
    """One tier budget as the tables show it."""

    prefix: str     # column prefix of its flag, margin, interval, verdict: kill_ok, kill_low, ...
    estimate: str   # column of the point estimate
    op: str         # "<=" (a maximum) or ">=" (a minimum)


# In the order world_model.verdicts.check_tier returns its checks.
BUDGETS = (Budget("kill", "kill_prob", "<="), Budget("dd", "dd_mean", "<="), Budget("pnl", "pnl_mean", ">="))


def load_tiers(cfg: DictConfig) -> dict[str, RiskTier]:
    """The world model's risk tiers, in config order."""
    return tiers_from_mapping(OmegaConf.to_container(cfg.world_model.tiers, resolve=True))


def check_rules(cfg: DictConfig) -> CheckRules:
    """The world model's verdict rules: alpha per side from `confidence`, `min_n`, `dd_statistic`."""
    wm = cfg.world_model
    return CheckRules.from_confidence(wm.confidence, wm.min_n, wm.dd_statistic, wm.power, wm.planned_fraction)


def overall_verdict(verdicts: Iterable[str]) -> str:
    """violated if any budget is violated, else inconclusive if any is undecided, else ok."""
    verdicts = list(verdicts)
    return "violated" if "violated" in verdicts else "ok" if all(map(is_decided, verdicts)) else "inconclusive"


def point_checks(tier: RiskTier, pnl_mean: float, pnl_std: float, dd_mean: float, kill_prob: float) -> dict:
    """Point estimates against the tier: pass flags, signed margins and the risk-adjusted score."""
    checks = budget_margins(tier, pnl_mean, dd_mean, kill_prob)
    return {"pnl_mean": float(pnl_mean), "pnl_std": float(pnl_std), "dd_mean": float(dd_mean),
            "kill_prob": float(kill_prob), **{k: bool(checks[k]) for k in ("pnl_ok", "dd_ok", "kill_ok")},
            **{k: float(checks[k]) for k in ("pnl_margin", "dd_margin", "kill_margin")},
            "score": float(tier_score(tier, pnl_mean, pnl_std, dd_mean, kill_prob))}


def run_checks(tier: RiskTier, runs: pd.DataFrame, rules: CheckRules) -> dict:
    """One group's runs (final_pnl, max_drawdown, kill_switch) against its tier: point checks and, per budget,
    bounds, verdict, runs needed and the p-value of `violated` (for Holm's alarms). pnl_std is 0 for a single run,
    as in aggregate_metrics."""
    pnl = np.asarray(runs["final_pnl"], dtype=float).ravel()
    drawdowns = np.asarray(runs["max_drawdown"], dtype=float).ravel()
    kills = np.asarray(runs["kill_switch"], dtype=bool).ravel()
    if pnl.size == 0:
        raise ParaphinaError(f"tier {tier.name!r}: no runs to check")
    checks = check_tier(tier, pnl, drawdowns, kills, rules)
    pnl_std = float(pnl.std(ddof=1)) if pnl.size > 1 else 0.0
    p95, (p95_low, p95_high) = quantile_interval(drawdowns, alpha=rules.alpha)
    out = {"tier": tier.name, "runs": int(pnl.size), "kills": int(kills.sum()),
           **point_checks(tier, float(pnl.mean()), pnl_std, float(drawdowns.mean()), float(kills.mean())),
           "dd_p95": p95, "dd_p95_low": p95_low, "dd_p95_high": p95_high}
    for budget, check, values in zip(BUDGETS, checks, (kills, drawdowns, pnl)):
        measure = budget.estimate if budget.prefix != "dd" else f"dd_{check.statistic}"  # dd_mean or dd_p95
        needed = None if is_decided(check.verdict) else runs_to_decide(check, values, rules).runs
        out.update({f"{budget.prefix}_{k}": v for k, v in (
            ("measure", measure), ("estimate", float(check.estimate)), ("budget", check.budget),
            ("low", float(check.low)), ("high", float(check.high)), ("verdict", check.verdict),
            ("runs_needed", needed), ("p_violated", check.p_violated))})
    out["verdict"] = overall_verdict(out[f"{b.prefix}_verdict"] for b in BUDGETS)
    return out


def cross_tiers(rows: pd.DataFrame, tiers: Mapping[str, RiskTier], rules: CheckRules) -> pd.DataFrame:
    """Every profile's runs against every tier: one row per profile, one column per tier holding the overall
    verdict (Holm's `violated` alarms over all these checks marked `violated!`). The tiers discriminate when a
    riskier profile is violated under a stricter tier while each profile keeps its own."""
    checks = [{"profile": profile, **run_checks(tier, group, rules)}
              for profile, group in rows.groupby("profile", sort=False) for tier in tiers.values()]
    table = add_alarms(checks_frame(checks), rules.alpha)
    alarmed = table[[f"{b.prefix}_alarm" for b in BUDGETS]].any(axis=1)
    table["shown"] = table["verdict"].where(~alarmed, "violated!")
    matrix = table.pivot(index="profile", columns="tier", values="shown")
    order = [p for p in tiers if p in matrix.index] + [p for p in matrix.index if p not in tiers]
    return matrix.loc[order, list(tiers)].rename_axis(columns=None).reset_index()


def add_alarms(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """`<budget>_alarm` columns: the `violated` verdicts that survive Holm's correction over every check of
    the table (3 budgets per row), so the family of checks raises a false alarm with probability <= alpha."""
    if table.empty:
        return table.assign(**{f"{b.prefix}_alarm": pd.Series(dtype=bool) for b in BUDGETS})
    p_violated = table[[f"{b.prefix}_p_violated" for b in BUDGETS]].to_numpy(dtype=float)
    alarms = holm_alarms(p_violated, alpha)
    return table.assign(**{f"{b.prefix}_alarm": alarms[:, i] for i, b in enumerate(BUDGETS)})


def alarm_text(table: pd.DataFrame, keys: Sequence[str], alpha: float) -> str:
    """One line naming the Holm-adjusted alarms of a table, or saying there are none."""
    n_checks = len(table) * len(BUDGETS)
    if f"{BUDGETS[0].prefix}_alarm" not in table:
        return "alarms: none computed (sequential verdicts: Holm's correction needs fixed-n checks)"
    raised = [f"{'/'.join(str(row[k]) for k in keys)} {row[f'{b.prefix}_measure']}"
              for _, row in table.iterrows() for b in BUDGETS if row.get(f"{b.prefix}_alarm", False)]
    head = f"alarms (violated after Holm's correction over {n_checks} checks, family-wise error <= {alpha:g})"
    return f"{head}: {', '.join(raised) if raised else 'none'}"


def checks_frame(rows: Sequence[Mapping]) -> pd.DataFrame:
    """Check rows as a table; runs_needed as a nullable integer (missing when decided or not projectable)."""
    table = pd.DataFrame(list(rows))
    return table.astype({c: "Int64" for c in (f"{b.prefix}_runs_needed" for b in BUDGETS) if c in table})


# --- research rows -----------------------------------------------------------------------------


def label_text(labels: pd.Series) -> pd.Series:
    """Labels as text, a missing label as "" (MLflow datasets give a missing text field back as "None")."""
    return labels.map(lambda v: "" if v is None or pd.isna(v) or str(v) in ("None", "nan") else str(v))


def group_checks(rows: pd.DataFrame, tiers: Mapping[str, RiskTier], rules: CheckRules,
                 by_label: bool = False) -> pd.DataFrame:
    """One row of checks per group of research rows (by profile, and label), in tier order, with Holm's alarms;
    every profile must name a tier (see `drop_untiered`)."""
    keys = ["profile", "label"] if by_label else ["profile"]
    data = rows.assign(label=label_text(rows["label"])) if by_label else rows
    order = {name: i for i, name in enumerate(tiers)}
    groups = sorted(data.groupby(keys, sort=False), key=lambda g: (order[g[0][0]], g[0]))  # keys are tuples
    out = [{**dict(zip(keys, key)), **run_checks(tiers[key[0]], group, rules)} for key, group in groups]
    return add_alarms(checks_frame(out), rules.alpha)


def drop_untiered(rows: pd.DataFrame, tiers: Mapping[str, RiskTier], source: str) -> tuple[pd.DataFrame, list[str]]:
    """Rows whose profile has a tier, and a note naming each profile that has none (all of them: an error)."""
    counts = rows["profile"].value_counts(sort=False)
    missing = [p for p in counts.index if p not in tiers]
    notes = [f"profile '{p}' ({counts[p]} run(s) in {source}) has no risk tier; skipped "
             f"(tiers: {', '.join(tiers)})" for p in missing]
    kept = rows[rows["profile"].isin(list(tiers))]
    if kept.empty:
        raise ParaphinaError(f"no run in {source} has a profile with a risk tier: profile(s) "
                             f"{', '.join(map(repr, missing))} have none; tiers: {', '.join(tiers)}")
    return kept, notes


def repeated_runs_note(rows: pd.DataFrame, source: str) -> str | None:
    """A note when rows repeat a run (same profile, label and metrics): the checks treat every row as an
    independent run, so repeats narrow the intervals wrongly."""
    keys = ["profile", "num_ticks", "final_pnl", "max_drawdown", "kill_switch"]
    repeats = int(rows.assign(label=label_text(rows["label"])).duplicated([*keys, "label"]).sum())
    if not repeats:
        return None
    return (f"{repeats} run(s) in {source} repeat another run (same profile, label and metrics, e.g. Exp13 rerun "
            f"with the same seeds) and count as independent runs; narrow with filter.source_run= or filter.label_contains=")


def mixed_ticks_notes(rows: pd.DataFrame, source: str) -> list[str]:
    """Notes naming the profiles whose runs have different lengths: budgets such as the kill probability
    depend on the horizon, so such a group mixes different questions. A killed run stops early, so only
    runs that kept going to their end are compared."""
    notes = []
    completed = rows[~rows["kill_switch"].astype(bool)]
    for profile, ticks in completed.groupby("profile", sort=False)["num_ticks"]:
        lengths = sorted(set(int(t) for t in ticks))
        if len(lengths) > 1:
            notes.append(f"profile '{profile}' in {source} mixes runs of {', '.join(map(str, lengths))} ticks; "
                         f"narrow with filter.source_run= or filter.label_contains= to compare like with like")
    return notes


def filter_rows(rows: pd.DataFrame, source: str, tiers: Mapping[str, RiskTier], profile: str | None = None,
                label_contains: str | None = None) -> pd.DataFrame:
    """Keep one profile (it must have a tier) and/or the labels containing a text; an empty result names the
    filter that emptied it."""
    if profile is not None and profile not in tiers:
        raise ParaphinaError(f"profile '{profile}' has no risk tier; choose one of: {', '.join(tiers)}")
    if rows.empty:
        raise ParaphinaError(f"{source} has no runs")
    if profile is not None:
        kept = rows[rows["profile"] == profile]
        if kept.empty:
            raise ParaphinaError(f"no runs of profile '{profile}' in {source}; profiles there: "
                                 f"{', '.join(sorted(rows['profile'].unique()))}")
        rows = kept
    if label_contains is not None:
        kept = rows[label_text(rows["label"]).str.contains(label_contains, regex=False)]
        if kept.empty:
            scope = f"the {len(rows)} run(s) of profile '{profile}'" if profile else f"the {len(rows)} run(s)"
            raise ParaphinaError(f"no label contains '{label_contains}' among {scope} in {source}")
        rows = kept
    return rows


def load_rows(cfg: DictConfig, dataset: str, source_run: str | None = None) -> pd.DataFrame:
    """Research rows of a dataset: an MLflow dataset (optionally only the rows recorded under one parent run,
    such as an Exp13 invocation) or a JSONL file in the original format."""
    from paraphina.formats.dataset import read_rows
    from paraphina.tracking.datasets import load_dataset
    if is_dataset_file(dataset):
        if source_run:
            raise ParaphinaError("source_run selects runs in MLflow; it cannot filter a JSONL dataset file")
        return read_rows(dataset)
    return load_dataset(store_uri(cfg), dataset, source_run or None)


# --- earlier experiments' records ----------------------------------------------------------------


def latest_presets(cfg: DictConfig) -> tuple[pd.DataFrame, str]:
    """The presets of the latest Exp07 invocation, one per tier (tier and relaxed columns from the tags),
    and that invocation's run id."""
    presets, info = latest_points(cfg, "exp07")
    if presets.empty:
        raise ParaphinaError(f"the latest exp07 run {info['run_id']} has no presets; rerun python -m "
                             f"paraphina.experiments.exp07")
    tags = info["child_tags"]
    presets["tier"] = [t.get("tier") or name.removeprefix("preset-") for t, name in zip(tags, presets["run_name"])]
    presets["relaxed"] = [t.get("relaxed", "false").lower() == "true" for t in tags]
    presets["source_run_id"] = [t.get("source_run") for t in tags]
    if "rank" in presets:
        presets = presets.sort_values("rank", kind="stable")
    return presets.drop_duplicates("tier"), info["run_id"]


# --- MLflow children and printing --------------------------------------------------------------


def record_metrics(row: Mapping) -> dict[str, float]:
    """The numeric cells of a check row as MLflow metrics (flags as 0/1; missing and infinite values left out)."""
    return {key: float(value) for key, value in row.items()
            if isinstance(value, (int, float, np.bool_, np.integer, np.floating)) and math.isfinite(float(value))}


def record_tags(row: Mapping, keys: Sequence[str] = ()) -> dict[str, str]:
    """Group keys and verdicts of a check row as tags, so runs can be searched by verdict."""
    return {**{k: str(row[k]) for k in keys if k in row and row[k] is not None},
            **{k: str(v) for k, v in row.items() if k.endswith("verdict") and isinstance(v, str)}}


def runs_needed_note(rules: CheckRules) -> str:
    """The footnote under a verdict table: the assumptions of its runs-needed counts."""
    return (
        f"runs needed: runs per profile for {rules.power:.0%} power (world_model.power) to decide an undecided "
        f"budget: for the kill probability, to read ok if the true rate is {rules.planned_fraction:g} of the budget "
        "(world_model.planned_fraction; exact binomial test; at 0 kills the rule-of-three count is a minimum, not an "
        "estimate); for a mean, at the observed mean and spread (t test); for dd_p95, the runs its interval needs "
        "for an upper end; ? = not projectable (one run has no spread, or the estimate sits on the budget). "
        "inconclusive (too few runs): a mean is judged from world_model.min_n runs on."
    )


def estimate_text(value: float, budget: str) -> str:
    """An estimate as the budget it is checked against reads (`budget` as in verdict_rows, e.g. 'kill_prob <= 0.01'):
    a probability with 3 decimals, an amount in USD with 1; infinite bounds as inf / -inf."""
    return f"{value:.3f}" if budget.startswith("kill") else f"{value:,.1f}"


def verdict_rows(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The checks of a table in long form: one row per group and budget (estimate, interval, verdict)."""
    rows = []
    for _, row in table.iterrows():
        for b in BUDGETS:
            needed = row[f"{b.prefix}_runs_needed"]
            rows.append({**{k: row[k] for k in keys},
                         "budget": f"{row[f'{b.prefix}_measure']} {b.op} {row[f'{b.prefix}_budget']:g}",
                         "runs": int(row["runs"]), "estimate": float(row[f"{b.prefix}_estimate"]),
                         "low": float(row[f"{b.prefix}_low"]), "high": float(row[f"{b.prefix}_high"]),
                         "verdict": row[f"{b.prefix}_verdict"],
                         "runs_needed": None if pd.isna(needed) else int(needed),
                         "alarm": bool(row.get(f"{b.prefix}_alarm", False))})
    return checks_frame(rows) if rows else pd.DataFrame(columns=[*keys, "budget", "runs", "estimate", "low", "high",
                                                                 "verdict", "runs_needed", "alarm"])


PLAN_ENDED = "none: its plan ended"  # a finished plan cannot be extended on the same seeds
PLAN_ENDED_NOTE = ("runs needed: none after a sequential plan's last look; a finished plan cannot be extended on "
                   "the same seeds (plan again on fresh seeds, experiment.seed_offset, with a planned_fraction nearer "
                   "the observed rate)")


def needed_text(verdict: str, needed, plan_ended: bool = False) -> str:
    """What an undecided verdict needs: the runs per profile, '?' when no count can be projected, or
    PLAN_ENDED after a sequential plan's last look."""
    if is_decided(verdict):
        return ""
    if plan_ended:
        return PLAN_ENDED
    return "?" if needed is None or pd.isna(needed) else f"{int(needed)}"


def shown_verdicts(long: pd.DataFrame, keys: Sequence[str], confidence: float, plan_ended: bool = False
                   ) -> pd.DataFrame:
    """The long verdict table as it is shown: estimates, intervals and runs needed as text."""
    return pd.DataFrame({
        **{k: long[k] for k in keys},
        "budget": long["budget"],
        "runs": long["runs"],
        "estimate": [estimate_text(v, b) for v, b in zip(long["estimate"], long["budget"])],
        f"{confidence:.0%} interval": [f"[{estimate_text(lo, b)}, {estimate_text(hi, b)}]"
                                       for lo, hi, b in zip(long["low"], long["high"], long["budget"])],
        "verdict": long["verdict"],
        "runs needed": [needed_text(v, n, plan_ended) for v, n in zip(long["verdict"], long["runs_needed"])],
    })


def format_verdicts(long: pd.DataFrame, keys: Sequence[str], confidence: float, rules: CheckRules) -> str:
    """The long verdict table as text, with a footnote on 'runs needed' (the assumptions of its power plan)."""
    shown = shown_verdicts(long, keys, confidence)
    for column in [*keys, "budget", "verdict"]:  # text left-aligned, numbers right-aligned
        width = max(len(column), *(len(str(v)) for v in shown[column])) if len(shown) else len(column)
        shown[column] = [str(v).ljust(width) for v in shown[column]]
        shown = shown.rename(columns={column: column.ljust(width)})
    return f"{shown.to_string(index=False)}\n{runs_needed_note(rules)}"
