"""The strategy's formulas (ENGINE_SPEC section 3, steps 3-8 and 11), each a function over arrays.

Arrays are venue-major: (1, runs) for run-level quantities, (venues, runs) for venue quantities; every
parameter may be a scalar, a venue column (venues, 1) or per run. The engine's tick calls these and
the tests check them on hand-worked cases. Branches on `anywhere(...)` skip work no run needs this tick.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import NamedTuple

import numpy as np

from paraphina.engine.market import FUNDING_PERIOD_SEC

NORMAL, WARNING, HARD_LIMIT = 0, 1, 2          # risk regimes
HEALTHY, VENUE_WARNING, DISABLED = 0, 1, 2     # venue status


def vsum(x: np.ndarray) -> np.ndarray:
    """Sum over venues (the second-to-last axis), keeping the (1, runs) shape; blocks (ticks, venues, runs) too."""
    return np.add.reduce(x, axis=-2, keepdims=True)


def anywhere(mask: np.ndarray) -> bool:
    """Whether any element of `mask` is true: np.count_nonzero costs about a third of `mask.any()` (a ufunc
    reduction) on the small arrays of a tick, and the tick loop asks this a dozen times per tick."""
    return np.count_nonzero(mask) > 0


def fair_observation(usable, mid, spread, depth):
    """The filter's observation from the usable venues: (count, depth-weighted mid, mean spread, mean depth).

    Works per tick (venues, runs) and for a whole block (ticks, venues, runs).
    """
    usable = usable.astype(np.float64)  # one conversion: float x bool costs about twice float x float
    n_usable = vsum(usable)
    w_depth = depth * usable
    depth_sum = vsum(w_depth)
    return n_usable, vsum(w_depth * mid) / depth_sum, vsum(spread * usable) / n_usable, depth_sum / n_usable


class KalmanObservation(NamedTuple):
    """The filter's observation terms, which depend on the market only (so a block computes them in bulk)."""

    observed: np.ndarray   # enough usable venues
    y_mid: np.ndarray      # observed mid, 1.0 where there is no observation
    log_y: np.ndarray
    r: np.ndarray          # measurement noise variance

    def at(self, j: int) -> "KalmanObservation":
        """The terms of tick j of a block."""
        return KalmanObservation(self.observed[j], self.y_mid[j], self.log_y[j], self.r[j])


def kalman_observation(n_usable, y_mid, spread_mean, depth_mean, kf: SimpleNamespace,
                       book: SimpleNamespace) -> KalmanObservation:
    """Observation terms from `fair_observation`'s output: R = clip(r_min + r_a s^2 + r_b / d, r_min, r_max)."""
    observed = n_usable >= book.min_healthy_for_kf
    y_mid = np.where(observed, y_mid, 1.0)
    r = np.minimum(np.maximum(kf.r_min + kf.r_a * spread_mean * spread_mean + kf.r_b / depth_mean, kf.r_min),
                   kf.r_max)
    return KalmanObservation(observed, y_mid, np.log(y_mid), r)


def kalman_step(xhat, fair, p_var, rejects, has_fair, obs: KalmanObservation, kf: SimpleNamespace,
                book: SimpleNamespace, dt: float):
    """One predict/update of the 1-D Kalman filter on log fair price, with outlier gating and re-anchoring.

    `fair` is exp(xhat), which the previous tick already computed. Returns (xhat, p_var, rejects, has_fair).
    An observation more than max_mid_jump_pct away from the previous fair value is rejected; after
    max_consecutive_rejects in a row the filter re-anchors on the observation (improvement: the original
    never recovered from a real jump).
    """
    observed, log_y = obs.observed, obs.log_y
    p_var = p_var + kf.q_base * dt
    accept = observed & (~has_fair | (np.abs(obs.y_mid / fair - 1.0) <= book.max_mid_jump_pct))
    gain = np.where(accept, p_var / (p_var + obs.r), 0.0)
    xhat = xhat + gain * (log_y - xhat)
    p_var = p_var * (1.0 - gain)
    rejects = np.where(accept, 0.0, rejects + observed)
    reanchor = rejects >= book.max_consecutive_rejects
    if anywhere(reanchor):
        xhat = np.where(reanchor, log_y, xhat)
        p_var = np.where(reanchor, kf.p_init, p_var)
        rejects = np.where(reanchor, 0.0, rejects)
    return xhat, p_var, rejects, has_fair | accept | reanchor


def vol_scalars(var_eff, ret, vol: SimpleNamespace):
    """EWMA variance of fair returns and the control scalars it drives (faithful).

    Returns (var_eff, sigma_eff, vol_ratio, spread_mult, size_mult, band_mult).
    """
    a = vol.fv_vol_alpha_short
    var_eff = (1.0 - a) * var_eff + a * ret * ret
    sigma_eff = np.maximum(np.sqrt(var_eff), vol.sigma_min)
    vol_ratio = np.minimum(np.maximum(sigma_eff / vol.vol_ref, vol.vol_ratio_min), vol.vol_ratio_max)
    bump = np.maximum(vol_ratio - 1.0, 0.0)
    if not anywhere(bump):  # the usual tick: every multiplier is exactly 1 (one array serves all three)
        ones = np.ones_like(bump)
        return var_eff, sigma_eff, vol_ratio, ones, ones, ones
    return (var_eff, sigma_eff, vol_ratio, 1.0 + vol.c_spread * bump, 1.0 / (1.0 + vol.c_size * bump),
            1.0 / (1.0 + vol.c_band * bump))


def toxicity(local_vol_floored, sigma_eff, has_book, tox: SimpleNamespace):
    """Toxicity per venue: how far the venue's own volatility, max(local vol, sigma_min), exceeds sigma_eff.

    A venue without a mid or depth scores 1.
    """
    score = np.minimum(np.maximum((local_vol_floored / sigma_eff - 1.0) / tox.vol_tox_scale, 0.0), 1.0)
    score[~has_book] = 1.0
    return score


def venue_status(tox_score, stale, tox: SimpleNamespace):
    """Healthy / Warning / Disabled from toxicity and staleness (improvement: the score now acts)."""
    status = (tox_score >= tox.tox_med_threshold).astype(np.int64)
    status += tox_score >= tox.tox_high_threshold
    status[stale] = DISABLED
    return status


def delta_limit(vol_ratio, risk: SimpleNamespace):
    """The dollar-delta hard limit, tightened when volatility is high."""
    return risk.delta_hard_limit_usd_base / np.maximum(vol_ratio, risk.delta_limit_vol_ratio_floor)


def quote_market_terms(mid, funding, mm: SimpleNamespace):
    """The parts of the reservation price that depend on the market only, computed for whole blocks of ticks
    at once: (1 + basis_weight) mid, and the coefficient of fair, funding_weight * f * T / 8h - basis_weight."""
    fund_term = mm.funding_weight * funding * (mm.quote_horizon_sec / FUNDING_PERIOD_SEC)
    return (1.0 + mm.basis_weight) * mid, fund_term - mm.basis_weight


def mm_quotes(mid_res, fair_coef, fair, q_total, dollar_delta, sigma_eff, vol_ratio, limit, spread_mult, size_mult,
              regime, status, eng: SimpleNamespace):
    """Avellaneda-Stoikov quotes per venue: (bid, ask, size, bid_ok, ask_ok), faithful formulas.

    reservation = mid + basis_weight (mid - fair) + funding_weight f T/8h fair - gamma sigma^2 T q / 2, from
    `quote_market_terms`; `limit` is the tick's `delta_limit`. In HardLimit only the side that reduces |q| is
    quoted (improvement).
    """
    mm, ven, risk = eng.mm, eng.venues, eng.risk
    risk_term = (ven.gamma * mm.quote_horizon_sec) * (sigma_eff * sigma_eff)
    half = np.maximum(risk_term * 0.5 + 1.0 / ven.k, mm.edge_local_min)
    half = np.maximum(half + mm.edge_vol_mult * vol_ratio, mm.edge_local_min)
    half *= spread_mult
    warning = regime == WARNING
    any_warning = anywhere(warning)
    if any_warning:
        half *= np.where(warning, risk.spread_warn_mult, 1.0)
    reservation = mid_res + fair * fair_coef - risk_term * (0.5 * q_total)
    size = ven.base_order_size * (size_mult / (1.0 + mm.size_eta * np.abs(q_total)))
    if any_warning:
        size = np.where(warning, np.minimum(size, risk.q_warn_cap), size)
    venue_warning = status == VENUE_WARNING
    if anywhere(venue_warning):
        size = np.where(venue_warning, size * mm.venue_warning_size_mult, size)
    rho = np.abs(dollar_delta) / limit
    over = rho > 1.0
    if anywhere(over):
        size = size * np.where(over, risk.delta_ratio_stop - rho, 1.0)
    size = np.minimum(size, ven.max_order_size)
    tick = ven.tick_size
    bid = np.floor((reservation - half) / tick) * tick
    ask = np.ceil((reservation + half) / tick) * tick
    # size > 0 also removes rho >= delta_ratio_stop, where the size factor (stop - rho) is <= 0
    ok = (status != DISABLED) & (size > 0.0) & (bid > 0.0) & (ask > bid)
    hard = regime == HARD_LIMIT
    if not anywhere(hard):
        return bid, ask, size, ok, ok
    return bid, ask, size, ok & (~hard | (q_total < 0.0)), ok & (~hard | (q_total > 0.0))


def hedge_cost_base(mid, spread, ven: SimpleNamespace):
    """Cost of taking one TAO on a venue before toxicity: half spread plus taker fee (market-only)."""
    return spread * 0.5 + ven.taker_fee_bps / 1e4 * mid


def hedge_orders(q_total, band_mult, regime, status, tox_score, cost_base, eng: SimpleNamespace):
    """Signed hedge size per venue (faithful), or None when every run is inside its band.

    Outside band = band_base * max(band_mult, floor), trade alpha of the excess back (half in Warning,
    at most hedge_max_step), split over Healthy venues that allow hedging by 1 / (cost (1 + beta tox)).
    """
    hedge, ven = eng.hedge, eng.venues
    excess = np.abs(q_total) - hedge.band_base * np.maximum(band_mult, hedge.band_mult_floor)
    outside = excess > 0.0
    if not anywhere(outside):
        return None
    step = -np.sign(q_total) * np.where(outside, excess, 0.0) * np.minimum(np.maximum(hedge.alpha_hedge, 0.0), 1.0)
    step = np.where(regime == WARNING, step * hedge.warning_step_mult, step)
    step = np.minimum(np.maximum(step, -hedge.hedge_max_step), hedge.hedge_max_step)
    eligible = ven.hedge_allowed & (status == HEALTHY)
    weight = 1.0 / (cost_base * (1.0 + hedge.beta_hedge * tox_score))
    weight[~eligible] = 0.0
    total = vsum(weight)
    slices = np.abs(step) * weight / np.where(total > 0.0, total, 1.0)
    slices = np.minimum(slices, ven.max_order_size)
    slices = np.where(slices < hedge.min_slice_tao, 0.0, slices)
    return np.sign(step) * slices


def risk_regime(pnl_total, dollar_delta, basis_usd, limit, risk: SimpleNamespace):
    """Normal / Warning / HardLimit and the kill switch, from one post-fill state (self-consistent rows)."""
    abs_delta, abs_basis = np.abs(dollar_delta), np.abs(basis_usd)
    loss_hit = pnl_total <= -risk.daily_loss_limit
    hard = (abs_delta >= limit) | (abs_basis >= risk.basis_hard_limit_usd) | loss_hit
    warn = ((abs_delta >= risk.delta_warn_frac * limit)
            | (abs_basis >= risk.basis_warn_frac * risk.basis_hard_limit_usd)
            | (pnl_total <= -risk.pnl_warn_frac * risk.daily_loss_limit))
    return np.maximum(warn * WARNING, hard * HARD_LIMIT), loss_hit
