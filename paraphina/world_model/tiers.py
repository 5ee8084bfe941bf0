"""Risk tiers of the world model: their budgets, the risk-adjusted score and signed budget margins; every judge of
a profile against a tier goes through these, so "within budget" is defined once."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from paraphina.core.errors import ParaphinaError

if TYPE_CHECKING:  # pandas only for type hints: the engine CLI does not pay its import
    import pandas as pd

Values = Union[float, np.ndarray, "pd.Series"]
"""A scalar or a vector of per-point metrics; all arithmetic here is element-wise."""

Direction = Literal["max", "min"]
"""`max`: the value must stay <= the budget; `min`: it must stay >= the budget."""


@dataclass(frozen=True)
class RiskTier:
    """Budgets and score weights of one risk tier (ENGINE_SPEC section 7)."""

    name: str
    max_kill_prob: float
    max_drawdown_abs: float
    min_final_pnl_mean: float
    lambda_std: float
    lambda_dd: float
    lambda_kill: float

    @classmethod
    def from_mapping(cls, name: str, mapping: Mapping[str, Any]) -> RiskTier:
        """Build a tier from its knobs (a dict or an OmegaConf DictConfig), rejecting unknown or missing keys."""
        if not isinstance(mapping, Mapping):
            raise ParaphinaError(f"risk tier {name!r} must be a mapping of knobs, got {type(mapping).__name__}")
        knobs = [f.name for f in fields(cls) if f.name != "name"]
        unknown = sorted(set(map(str, mapping)) - set(knobs))
        missing = [k for k in knobs if k not in mapping]
        if unknown:
            raise ParaphinaError(f"risk tier {name!r}: unknown key(s) {', '.join(unknown)}; expected {', '.join(knobs)}")
        if missing:
            raise ParaphinaError(f"risk tier {name!r}: missing key(s) {', '.join(missing)}")
        values = {k: _knob(name, k, mapping[k]) for k in knobs}
        if not 0.0 <= values["max_kill_prob"] <= 1.0:
            raise ParaphinaError(f"risk tier {name!r}: max_kill_prob must be within [0, 1], got {values['max_kill_prob']}")
        negative = [k for k in knobs if k != "min_final_pnl_mean" and values[k] < 0]
        if negative:
            raise ParaphinaError(f"risk tier {name!r}: {', '.join(negative)} must not be negative")
        return cls(name=str(name), **values)


def _knob(tier: str, key: str, value: Any) -> float:
    """One finite numeric knob value, or a one-line error naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ParaphinaError(f"risk tier {tier!r}: {key} must be a finite number, got {value!r}")
    return float(value)


def tiers_from_mapping(mapping: Mapping[str, Any]) -> dict[str, RiskTier]:
    """Build all tiers from `{tier name: knobs}` (how conf/world_model arrives), keeping their order."""
    if not isinstance(mapping, Mapping) or len(mapping) == 0:
        raise ParaphinaError("world_model config must map tier names to their knobs, and list at least one tier")
    return {str(name): RiskTier.from_mapping(str(name), knobs) for name, knobs in mapping.items()}


def tier_score(tier: RiskTier, pnl_mean: Values, pnl_std: Values, dd_mean: Values, kill_prob: Values) -> Values:
    """Risk-adjusted score, bigger is better: pnl_mean - (λ_std·pnl_std + λ_dd·dd_mean + λ_kill·kill_prob)."""
    return pnl_mean - (tier.lambda_std * pnl_std + tier.lambda_dd * dd_mean + tier.lambda_kill * kill_prob)


def signed_margin(value: Values, budget: float, direction: Direction) -> Values:
    """Distance from `value` to `budget`, positive on the safe side (zero, on the budget, counts as safe)."""
    return budget - value if direction == "max" else value - budget


def budget_margins(tier: RiskTier, pnl_mean: Values, dd_mean: Values, kill_prob: Values) -> dict[str, Values]:
    """Signed margins (positive = safe) and pass flags (margin >= 0) of the tier's three budgets."""
    margins = {
        "kill_margin": signed_margin(kill_prob, tier.max_kill_prob, "max"),
        "dd_margin": signed_margin(dd_mean, tier.max_drawdown_abs, "max"),
        "pnl_margin": signed_margin(pnl_mean, tier.min_final_pnl_mean, "min"),
    }
    flags = {name.replace("_margin", "_ok"): margin >= 0 for name, margin in margins.items()}
    return {**margins, **flags}


def horizon_note(ticks: int, session_ticks: int) -> str | None:
    """The first line of a report whose sessions are shorter than the tiers' horizon, or None."""
    if ticks >= session_ticks:
        return None
    return (f"note: sessions of {ticks:,} ticks are shorter than the tiers' horizon of {session_ticks:,} "
            f"(world_model.session_ticks): daily budgets are judged on part of a day")
