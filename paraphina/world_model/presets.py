"""Exp07 preset selection: the best grid points per risk tier, relaxing the budgets only with a warning (apart
from the experiment so the ranking rule can be tested on hand-made tables)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.tiers import RiskTier, budget_margins, tier_score

METRIC_COLUMNS = ("pnl_mean", "pnl_std", "dd_mean", "kill_prob")
"""Per-grid-point metrics a selection table must carry."""

_BUDGET_NAMES = {"kill_ok": "kill_prob", "dd_ok": "drawdown", "pnl_ok": "pnl"}
_CHECK_COLUMNS = ("kill_ok", "dd_ok", "pnl_ok", "kill_margin", "dd_margin", "pnl_margin")
_ADDED_COLUMNS = ("tier", "rank", "score", "relaxed", "in_envelope", *_CHECK_COLUMNS)
Envelope = Mapping[str, Sequence[float]]
"""Per metric column, the [low, high] a preset must lie in (world_model.regime_envelope)."""


def _validate(table: pd.DataFrame, tiers: dict[str, RiskTier], top_n: int, envelope: Envelope) -> None:
    """Reject inputs the ranking cannot be trusted on, with a one-line reason."""
    if not tiers:
        raise ParaphinaError("no risk tiers to select presets for")
    if top_n < 1:
        raise ParaphinaError(f"top_n must be at least 1, got {top_n}")
    columns = (*METRIC_COLUMNS, *envelope)
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ParaphinaError(f"preset table lacks column(s) {', '.join(missing)}")
    clashing = [c for c in _ADDED_COLUMNS if c in table.columns]
    if clashing:
        raise ParaphinaError(f"preset table already has column(s) {', '.join(clashing)}, which selection adds")
    if table.empty:
        raise ParaphinaError("preset table is empty: no grid points to select from")
    metrics = table[list(columns)]
    numeric = all(pd.api.types.is_numeric_dtype(metrics[c]) for c in columns)
    if not numeric or not np.isfinite(metrics.to_numpy(dtype=float)).all():
        raise ParaphinaError(f"preset table columns {', '.join(columns)} must hold finite numbers")


def _select_for_tier(table: pd.DataFrame, tier: RiskTier, top_n: int, kill_headroom: float,
                     in_envelope: np.ndarray) -> tuple[pd.DataFrame, str | None]:
    """Top rows for one tier, and a warning when no row meets all three budgets (the kill probability's
    within `kill_headroom` of it) inside the envelope."""
    score = tier_score(tier, table["pnl_mean"], table["pnl_std"], table["dd_mean"], table["kill_prob"])
    checks = budget_margins(tier, table["pnl_mean"], table["dd_mean"], table["kill_prob"])
    flags = pd.DataFrame({"kill_ok": table["kill_prob"].to_numpy() <= kill_headroom * tier.max_kill_prob,
                          "dd_ok": checks["dd_ok"], "pnl_ok": checks["pnl_ok"], "in_envelope": in_envelope})
    n_failed = (~flags).sum(axis=1).to_numpy()
    relaxed = bool((n_failed > 0).all())
    # Fewest failed budgets, then best score, then input order (np.lexsort keys run last to first).
    order = np.lexsort((np.arange(len(table)), -score.to_numpy(), n_failed))
    if not relaxed:
        order = order[n_failed[order] == 0]
    chosen = order[:top_n]
    out = pd.DataFrame(
        {
            "tier": tier.name,
            "rank": np.arange(1, len(chosen) + 1),
            "score": score.to_numpy()[chosen],
            "relaxed": relaxed,
            "in_envelope": in_envelope[chosen],
            **{k: np.asarray(checks[k])[chosen] for k in _CHECK_COLUMNS},
        }
    )
    out = pd.concat([out, table.iloc[chosen].reset_index(drop=True)], axis=1)
    if not relaxed:
        return out, None
    failed = [name for flag, name in {**_BUDGET_NAMES, "in_envelope": "regime envelope"}.items()
              if not flags[flag].to_numpy()[chosen].all()]
    warning = (
        f"tier {tier.name!r}: no grid point meets all budgets"
        + (f" (kill probability within {kill_headroom:g} of its budget)" if kill_headroom < 1 else "")
        + "; relaxed to the closest "
        f"(selected point(s) fail: {', '.join(failed)})"
    )
    return out, warning


def select_presets(
    table: pd.DataFrame, tiers: dict[str, RiskTier], top_n: int = 1, kill_headroom: float = 1.0,
    envelope: Envelope | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """Best `top_n` grid points per tier, in tier order, and one warning per relaxed tier.

    Within budgets: rank by score, descending. A point's kill probability must stay within `kill_headroom`
    times the budget: the best of many points on few seeds is luckier than it will be on fresh seeds, and a
    preset whose design rate sits on its budget can never be shown `ok` there. Each of a point's `envelope`
    columns must lie in its [low, high] (a live profile's regime fractions). When no point passes:
    rank every point by number of failed budgets, then score, and mark the rows relaxed.
    Ties keep the input order.
    """
    envelope = dict(envelope or {})
    _validate(table, tiers, top_n, envelope)
    if not 0.0 < kill_headroom <= 1.0:
        raise ParaphinaError(f"kill_headroom={kill_headroom} must lie in (0, 1]: the share of a tier's kill budget "
                             f"a preset's design estimate may use")
    in_envelope = np.ones(len(table), dtype=bool)
    for column, (low, high) in envelope.items():
        in_envelope &= table[column].between(low, high).to_numpy()
    selected = [_select_for_tier(table, tier, top_n, kill_headroom, in_envelope) for tier in tiers.values()]
    return pd.concat([rows for rows, _ in selected], ignore_index=True), [w for _, w in selected if w is not None]
