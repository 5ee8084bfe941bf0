"""Structured config: the types of every key in conf/, so Hydra rejects wrong types and unknown keys."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class VenuesConfig:
    names: list[str] = MISSING
    base_order_size: list[float] = MISSING
    max_order_size: list[float] = MISSING
    tick_size: list[float] = MISSING
    maker_fee_bps: list[float] = MISSING
    taker_fee_bps: list[float] = MISSING
    maker_rebate_bps: list[float] = MISSING
    gamma: list[float] = MISSING
    k_bps: list[float] = MISSING
    w_liq: list[float] = MISSING
    w_fund: list[float] = MISSING
    hedge_allowed: list[bool] = MISSING


@dataclass
class BookConfig:
    stale_ms: float = MISSING
    min_healthy_for_kf: int = MISSING
    max_mid_jump_pct: float = MISSING
    max_consecutive_rejects: int = MISSING


@dataclass
class KalmanConfig:
    q_base: float = MISSING
    r_a: float = MISSING
    r_b: float = MISSING
    r_min: float = MISSING
    r_max: float = MISSING
    p_init: float = MISSING


@dataclass
class VolatilityConfig:
    fv_vol_alpha_short: float = MISSING
    fv_vol_alpha_long: float = MISSING
    sigma_min: float = MISSING
    vol_ref: float = MISSING
    vol_ratio_min: float = MISSING
    vol_ratio_max: float = MISSING
    c_spread: float = MISSING
    c_size: float = MISSING
    c_band: float = MISSING


@dataclass
class RiskConfig:
    delta_hard_limit_usd_base: float = MISSING
    delta_warn_frac: float = MISSING
    basis_hard_limit_usd: float = MISSING
    basis_warn_frac: float = MISSING
    daily_loss_limit: float = MISSING
    pnl_warn_frac: float = MISSING
    spread_warn_mult: float = MISSING
    q_warn_cap: float = MISSING
    delta_limit_vol_ratio_floor: float = MISSING
    delta_ratio_stop: float = MISSING


@dataclass
class MMConfig:
    quote_horizon_sec: float = MISSING
    edge_local_min_bps: float = MISSING
    edge_vol_mult_bps: float = MISSING
    basis_weight: float = MISSING
    funding_weight: float = MISSING
    size_eta: float = MISSING
    venue_warning_size_mult: float = MISSING


@dataclass
class HedgeConfig:
    band_base: float = MISSING
    band_mult_floor: float = MISSING
    alpha_hedge: float = MISSING
    beta_hedge: float = MISSING
    hedge_max_step: float = MISSING
    warning_step_mult: float = MISSING
    min_slice_tao: float = MISSING


@dataclass
class ToxicityConfig:
    vol_tox_scale: float = MISSING
    markout_tox_scale_bps: float = MISSING
    markout_sec: float = MISSING
    markout_alpha: float = MISSING
    markout_decay: float = MISSING
    tox_med_threshold: float = MISSING
    tox_high_threshold: float = MISSING


@dataclass
class EngineConfig:
    tick_ms: float = MISSING
    initial_q_tao: float = MISSING
    venues: VenuesConfig = field(default_factory=VenuesConfig)
    book: BookConfig = field(default_factory=BookConfig)
    kalman: KalmanConfig = field(default_factory=KalmanConfig)
    volatility: VolatilityConfig = field(default_factory=VolatilityConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    mm: MMConfig = field(default_factory=MMConfig)
    hedge: HedgeConfig = field(default_factory=HedgeConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)


@dataclass
class RegimeConfig:
    sigma_calm: float = MISSING
    sigma_stressed: float = MISSING
    p_calm_to_stressed: float = MISSING
    p_stressed_to_calm: float = MISSING


@dataclass
class JumpsConfig:
    rate: float = MISSING
    mean: float = MISSING
    std: float = MISSING


@dataclass
class BasisConfig:
    mean: list[float] = MISSING
    theta: float = MISSING
    sigma: float = MISSING


@dataclass
class SpreadConfig:
    half_bps: list[float] = MISSING
    noise: float = MISSING
    stressed_mult: float = MISSING


@dataclass
class DepthConfig:
    mean_usd: list[float] = MISSING
    stressed_mult: float = MISSING


@dataclass
class FundingConfig(BasisConfig):   # the same mean-reverting process per venue, and the tick its sign flips
    flip_tick: int = MISSING


@dataclass
class OutageConfig:
    p_start: float = MISSING
    mean_ticks: float = MISSING


@dataclass
class AlphaConfig:
    theta: float = MISSING
    sigma: float = MISSING


@dataclass
class FlowConfig:
    rate: list[float] = MISSING
    decay: float = MISSING
    jump: float = MISSING
    cross: float = MISSING
    informed: float = MISSING
    imbalance: float = MISSING
    stressed_mult: float = MISSING
    order_median_usd: float = MISSING
    order_sigma: float = MISSING
    impact_perm: float = MISSING
    touch_fill_prob: float = MISSING
    reach_k_bps: float = MISSING


@dataclass
class MarketConfig:
    scenario: str = MISSING
    s0: float = MISSING
    mu: float = MISSING
    vol_scale: float = MISSING
    regime: RegimeConfig = field(default_factory=RegimeConfig)
    jumps: JumpsConfig = field(default_factory=JumpsConfig)
    alpha: AlphaConfig = field(default_factory=AlphaConfig)
    basis: BasisConfig = field(default_factory=BasisConfig)
    spread: SpreadConfig = field(default_factory=SpreadConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    funding: FundingConfig = field(default_factory=FundingConfig)
    outage: OutageConfig = field(default_factory=OutageConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    impact_coeff: float = MISSING


@dataclass
class TierConfig:
    max_kill_prob: float = MISSING
    max_drawdown_abs: float = MISSING
    min_final_pnl_mean: float = MISSING
    lambda_std: float = MISSING
    lambda_dd: float = MISSING
    lambda_kill: float = MISSING


@dataclass
class WorldModelConfig:
    tiers: dict[str, TierConfig] = field(default_factory=dict)
    regime_envelope: dict[str, list[float]] = field(default_factory=dict)   # regime metric: [low, high]
    session_ticks: int = MISSING
    confidence: float = MISSING
    power: float = MISSING
    planned_fraction: float = MISSING
    min_n: int = MISSING
    dd_statistic: str = MISSING
    utility_dd_weight: float = MISSING


@dataclass
class TelemetryConfig:
    mode: str = MISSING
    path: Optional[str] = None
    every: int = MISSING


class SeedChildren(StrEnum):
    """When a batch's seeds are child runs as well as rows of its table (conf/tracking `seed_children`)."""

    auto = "auto"
    always = "always"
    never = "never"


@dataclass
class TrackingConfig:
    enabled: bool = MISSING
    uri: Optional[str] = None
    experiment: str = MISSING
    reachability_timeout_s: float = MISSING
    series_points: int = MISSING
    child_plots: bool = MISSING
    parent_metrics: list[str] = field(default_factory=list)
    unlogged_sections: list[str] = field(default_factory=list)
    child_config: str = MISSING
    child_params: list[str] = field(default_factory=list)
    end_attempts: int = MISSING
    end_wait_s: float = MISSING
    seed_children: SeedChildren = MISSING
    seed_children_below: int = MISSING


@dataclass
class ExecutionConfig:
    threads: int = MISSING
    serial_below: int = MISSING
    chunk_runs: int = MISSING
    progress_after_s: float = MISSING
    result_copies: int = MISSING


@dataclass
class PathsConfig:
    root: str = MISSING
    store: str = MISSING
    sweeps: str = MISSING


@dataclass
class ParaphinaConfig:
    """The primary config of every entry point (experiments add their own section)."""

    ticks: int = MISSING
    seed: int = MISSING
    runs: int = MISSING
    profile_name: str = MISSING
    risk_tier: str = MISSING          # the world-model tier the profile is judged against
    seeds: int = MISSING              # seeds per grid point or trial (experiments)
    label: Optional[str] = None
    dataset: Optional[str] = None
    notes: Optional[str] = None
    engine: EngineConfig = field(default_factory=EngineConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_names: dict[str, str] = field(default_factory=dict)
    experiment: Any = None

