"""Exp12 safety tuner rule: shrink a preset's exposure when its measured risk overshoots the tier budget; the rule
only ever reduces risk (scale <= 1)."""
from __future__ import annotations

import math
from collections.abc import Mapping

from paraphina.core.errors import ParaphinaError
from paraphina.world_model.tiers import RiskTier

SCALED_KEYS = ("band_base", "mm_size_eta", "init_q_tao", "delta_hard_limit_usd_base")
"""Exposure knobs (research names, core.names) multiplied by the risk scale."""
LOSS_LIMIT_KEY = "daily_loss_limit"


def budget_ratio(value: float, budget: float) -> float:
    """value / budget; a zero budget gives 0 for a zero value and inf otherwise."""
    if budget == 0:
        return 0.0 if value == 0 else math.inf
    return value / budget


def risk_scale(dd_ratio: float, kill_ratio: float, *, threshold: float, floor: float) -> float:
    """min(1, 1/ratio for each ratio above `threshold`), never below `floor`."""
    scale = min([1.0] + [1.0 / ratio for ratio in (dd_ratio, kill_ratio) if ratio > threshold])
    return max(floor, scale)


def tune_preset(
    preset: Mapping[str, float],
    tier: RiskTier,
    dd_mean: float,
    kill_prob: float,
    *,
    loss_tighten_threshold: float,
    threshold: float,
    floor: float,
) -> dict[str, float]:
    """The preset with exposure knobs scaled and the loss limit tightened, plus risk_scale, dd_ratio, kill_ratio.

    Keys of the preset other than the tuned ones pass through unchanged. The loss limit
    becomes the tier's drawdown budget when it exceeds that budget by more than
    `loss_tighten_threshold` times. The three rules come from conf/experiment/exp12.yaml.
    """
    missing = [k for k in (*SCALED_KEYS, LOSS_LIMIT_KEY) if k not in preset]
    if missing:
        raise ParaphinaError(f"preset for tier {tier.name!r} lacks {', '.join(missing)}")
    if not (math.isfinite(dd_mean) and math.isfinite(kill_prob) and dd_mean >= 0 and kill_prob >= 0):
        raise ParaphinaError(f"tier {tier.name!r}: dd_mean and kill_prob must be finite and >= 0, got {dd_mean}, {kill_prob}")
    dd_ratio = budget_ratio(dd_mean, tier.max_drawdown_abs)
    kill_ratio = budget_ratio(kill_prob, tier.max_kill_prob)
    scale = risk_scale(dd_ratio, kill_ratio, threshold=threshold, floor=floor)
    loss_limit = float(preset[LOSS_LIMIT_KEY])
    if loss_limit > tier.max_drawdown_abs * loss_tighten_threshold:
        loss_limit = tier.max_drawdown_abs
    return {
        **preset,
        **{k: float(preset[k]) * scale for k in SCALED_KEYS},
        LOSS_LIMIT_KEY: loss_limit,
        "risk_scale": scale,
        "dd_ratio": dd_ratio,
        "kill_ratio": kill_ratio,
    }
