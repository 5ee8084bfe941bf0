"""The strategy's steps (ENGINE_SPEC section 3, steps 2-8 and 11), one compiled function each.

Each step reads one run's parameter record `prm` and scalars or per-venue arrays, and returns scalars or
writes the per-venue arrays it is given; the kernel calls them in the spec's order and the tests call them
on hand-worked cases.
"""
from __future__ import annotations

import math

from numba import njit

from paraphina.engine.market import FUNDING_PERIOD_SEC

NORMAL, WARNING, HARD_LIMIT = 0, 1, 2          # risk regimes
HEALTHY, VENUE_WARNING, DISABLED = 0, 1, 2     # venue status


@njit(cache=True)
def local_vol_step(prm, vol_short, vol_long, log_mid, log_mid_next):
    """Step 2: EWMAs (short and long) of each venue's squared log mid return, in place."""
    for v in range(log_mid.shape[0]):
        r2 = (log_mid_next[v] - log_mid[v]) ** 2
        vol_short[v] += prm.volatility_fv_vol_alpha_short * (r2 - vol_short[v])
        vol_long[v] += prm.volatility_fv_vol_alpha_long * (r2 - vol_long[v])


@njit(cache=True)
def fair_observation(mkt, status, stale_ticks):
    """Step 3's observation from the usable venues (book fresh, depth > 0, not Disabled).

    Returns (count, depth-weighted mid, mean spread, mean depth); the means are NaN without usable venues.
    """
    n_usable = depth_sum = weighted_mid = spread_sum = 0.0
    for v in range(mkt.mid.shape[0]):
        if mkt.age[v] <= stale_ticks and mkt.depth[v] > 0.0 and status[v] != DISABLED:
            n_usable += 1.0
            depth_sum += mkt.depth[v]
            weighted_mid += mkt.depth[v] * mkt.mid[v]
            spread_sum += mkt.spread[v]
    if n_usable == 0.0:
        return 0.0, math.nan, math.nan, math.nan
    return n_usable, weighted_mid / depth_sum, spread_sum / n_usable, depth_sum / n_usable


@njit(cache=True)
def measurement_noise(prm, spread_mean, depth_mean):
    """R = clip(r_min + r_a spread^2 + r_b / depth, r_min, r_max), in squared log-price units."""
    r = prm.kalman_r_min + prm.kalman_r_a * spread_mean * spread_mean + prm.kalman_r_b / depth_mean
    return min(max(r, prm.kalman_r_min), prm.kalman_r_max)


@njit(cache=True)
def kalman_step(prm, xhat, fair, p_var, rejects, has_fair, n_usable, y_mid, r, dt):
    """Step 3: one predict/update of the filter on the log fair price: (xhat, p_var, rejects, has_fair).

    `fair` is exp(xhat), which the previous tick already computed. An observation more than max_mid_jump_pct away from the last fair value is rejected; after
    max_consecutive_rejects in a row the filter re-anchors on the observation (improvement: the original
    never recovered from a real jump). Without enough usable venues it only predicts.
    """
    p_var = p_var + prm.kalman_q_base * dt
    if n_usable < prm.book_min_healthy_for_kf:
        return xhat, p_var, rejects, has_fair
    if has_fair and abs(y_mid / fair - 1.0) > prm.book_max_mid_jump_pct:
        rejects += 1.0
        if rejects >= prm.book_max_consecutive_rejects:
            return math.log(y_mid), prm.kalman_p_init, 0.0, True
        return xhat, p_var, rejects, has_fair
    gain = p_var / (p_var + r)
    return xhat + gain * (math.log(y_mid) - xhat), p_var * (1.0 - gain), 0.0, True


@njit(cache=True)
def vol_scalars(prm, var_eff, ret):
    """Step 4: EWMA variance of fair returns and the control scalars it drives (faithful).

    Returns (var_eff, sigma_eff, vol_ratio, spread_mult, size_mult, band_mult).
    """
    a = prm.volatility_fv_vol_alpha_short
    var_eff = (1.0 - a) * var_eff + a * ret * ret
    sigma_eff = max(math.sqrt(var_eff), prm.volatility_sigma_min)
    vol_ratio = min(max(sigma_eff / prm.volatility_vol_ref, prm.volatility_vol_ratio_min),
                    prm.volatility_vol_ratio_max)
    bump = max(vol_ratio - 1.0, 0.0)
    return (var_eff, sigma_eff, vol_ratio, 1.0 + prm.volatility_c_spread * bump,
            1.0 / (1.0 + prm.volatility_c_size * bump), 1.0 / (1.0 + prm.volatility_c_band * bump))


@njit(cache=True)
def mark_to_fair(q, entry, mid, fair):
    """Step 5 (faithful): (q_total, basis_usd, basis_gross_usd, pnl_unrealised) of the venue positions `q`
    entered at `entry`, marked at the fair value; basis_usd = sum q_v (m_v - S)."""
    q_total = basis_usd = basis_gross = pnl_unrealised = 0.0
    for v in range(q.shape[0]):
        q_total += q[v]
        basis = q[v] * (mid[v] - fair)
        basis_usd += basis
        basis_gross += abs(basis)
        pnl_unrealised += q[v] * (fair - entry[v])
    return q_total, basis_usd, basis_gross, pnl_unrealised


@njit(cache=True)
def funding_payment(q, mkt, dt):
    """Step 10 (improvement): funding the positions pay this tick, sum q_v f_v m_v dt / 8 h (USD)."""
    paid = 0.0
    for v in range(q.shape[0]):
        paid += q[v] * (mkt.funding[v] * mkt.mid[v] * (dt / FUNDING_PERIOD_SEC))
    return paid


@njit(cache=True)
def venue_health(prm, mkt, vol_short, sigma_eff, stale_ticks, tox, status):
    """Step 6: toxicity per venue (how far max(local vol, sigma_min) exceeds sigma_eff; 1 without a book)
    and Healthy / Warning / Disabled from it and staleness, written into `tox` and `status`."""
    for v in range(tox.shape[0]):
        if mkt.depth[v] > 0.0:
            local = max(math.sqrt(vol_short[v]), prm.volatility_sigma_min)
            tox[v] = min(max((local / sigma_eff - 1.0) / prm.toxicity_vol_tox_scale, 0.0), 1.0)
        else:
            tox[v] = 1.0
        if mkt.age[v] > stale_ticks:
            status[v] = DISABLED
        else:
            status[v] = (tox[v] >= prm.toxicity_tox_med_threshold) + (tox[v] >= prm.toxicity_tox_high_threshold)


@njit(cache=True)
def delta_limit(prm, vol_ratio):
    """The dollar-delta hard limit, tightened when volatility is high."""
    return prm.risk_delta_hard_limit_usd_base / max(vol_ratio, prm.risk_delta_limit_vol_ratio_floor)


@njit(cache=True)
def quote(prm, v, mid, funding, fair, q_total, sigma_eff, vol_ratio, limit, spread_mult, size_mult, regime,
          status):
    """Step 7: venue v's Avellaneda-Stoikov quote (faithful formulas): (bid, ask, size, bid_ok, ask_ok).

    reservation = mid + basis_weight (mid - fair) + funding_weight f (T / 8 h) fair - gamma sigma^2 T q / 2;
    prices on the venue's tick grid; in HardLimit only the side that reduces |q| is quoted (improvement).
    """
    horizon = prm.mm_quote_horizon_sec
    risk_term = prm.venues_gamma[v] * horizon * sigma_eff * sigma_eff
    half = max(risk_term * 0.5 + 1.0 / prm.venues_k[v], prm.mm_edge_local_min)
    half = max(half + prm.mm_edge_vol_mult * vol_ratio, prm.mm_edge_local_min) * spread_mult
    if regime == WARNING:
        half *= prm.risk_spread_warn_mult
    reservation = (mid + prm.mm_basis_weight * (mid - fair)
                   + prm.mm_funding_weight * funding * (horizon / FUNDING_PERIOD_SEC) * fair
                   - risk_term * 0.5 * q_total)
    size = prm.venues_base_order_size[v] * size_mult / (1.0 + prm.mm_size_eta * abs(q_total))
    if regime == WARNING:
        size = min(size, prm.risk_q_warn_cap)
    if status == VENUE_WARNING:
        size *= prm.mm_venue_warning_size_mult
    rho = abs(q_total * fair) / limit
    if rho > 1.0:  # taper, and no quote at or beyond delta_ratio_stop (the factor is <= 0 there)
        size *= prm.risk_delta_ratio_stop - rho
    size = min(size, prm.venues_max_order_size[v])
    tick = prm.venues_tick_size[v]
    bid = math.floor((reservation - half) / tick) * tick
    ask = math.ceil((reservation + half) / tick) * tick
    ok = status != DISABLED and size > 0.0 and bid > 0.0 and ask > bid
    if regime == HARD_LIMIT:
        return bid, ask, size, ok and q_total < 0.0, ok and q_total > 0.0
    return bid, ask, size, ok, ok


@njit(cache=True)
def hedge_orders(prm, mkt, q_total, band_mult, regime, status, tox, dq):
    """Step 8 (faithful): signed hedge size per venue into `dq`; returns whether any venue trades.

    Outside band = band_base * max(band_mult, floor), trade alpha of the excess back (x warning_step_mult in
    Warning, at most hedge_max_step), split over Healthy venues that allow hedging by 1 / (cost (1 + beta tox)),
    cost = half spread + taker fee of one TAO.
    """
    n_venues = dq.shape[0]
    excess = abs(q_total) - prm.hedge_band_base * max(band_mult, prm.hedge_band_mult_floor)
    if excess <= 0.0:
        for v in range(n_venues):
            dq[v] = 0.0
        return False
    step = -math.copysign(1.0, q_total) * excess * min(max(prm.hedge_alpha_hedge, 0.0), 1.0)
    if regime == WARNING:
        step *= prm.hedge_warning_step_mult
    step = min(max(step, -prm.hedge_hedge_max_step), prm.hedge_hedge_max_step)
    total = 0.0
    for v in range(n_venues):  # dq holds the weights first
        dq[v] = 0.0
        if prm.venues_hedge_allowed[v] != 0.0 and status[v] == HEALTHY:
            cost = mkt.spread[v] * 0.5 + prm.venues_taker_fee_bps[v] / 1e4 * mkt.mid[v]
            dq[v] = 1.0 / (cost * (1.0 + prm.hedge_beta_hedge * tox[v]))
            total += dq[v]
    any_slice = False
    for v in range(n_venues):
        size = min(abs(step) * dq[v] / (total if total > 0.0 else 1.0), prm.venues_max_order_size[v])
        dq[v] = math.copysign(size, step) if size >= prm.hedge_min_slice_tao else 0.0
        any_slice = any_slice or dq[v] != 0.0
    return any_slice


@njit(cache=True)
def taker_price(prm, mkt, v, dq):
    """Price of a hedge slice dq on venue v: mid +- (half spread + impact_coeff |dq| / depth mid)."""
    slip = mkt.spread[v] * 0.5 + prm.impact_coeff * abs(dq) / mkt.depth[v] * mkt.mid[v]
    return mkt.mid[v] + math.copysign(slip, dq)


@njit(cache=True)
def quote_fills(distance, u, fill_rate, k, never_below):
    """Whether a quote `distance` USD behind the end-of-tick mid fills: with probability
    1 - exp(-A dt exp(-k d)) (Avellaneda-Stoikov intensity A exp(-k d)), i.e. when the uniform draw u exceeds
    exp(-A dt exp(-k d)); a quote the mid has crossed (d < 0) fills. `fill_rate` is A dt and `never_below`
    exp(-A dt): a draw at or below it cannot fill a quote at d >= 0, which spares the exponentials."""
    if distance < 0.0:
        return True
    if u <= never_below:
        return False
    return u > math.exp(-fill_rate * math.exp(-k * distance))


@njit(cache=True)
def risk_regime(prm, pnl_total, dollar_delta, basis_usd, limit):
    """Step 11 (faithful thresholds): (regime, loss limit hit) from one post-fill state."""
    abs_delta, abs_basis = abs(dollar_delta), abs(basis_usd)
    loss_hit = pnl_total <= -prm.risk_daily_loss_limit
    if abs_delta >= limit or abs_basis >= prm.risk_basis_hard_limit_usd or loss_hit:
        return HARD_LIMIT, loss_hit
    if (abs_delta >= prm.risk_delta_warn_frac * limit
            or abs_basis >= prm.risk_basis_warn_frac * prm.risk_basis_hard_limit_usd
            or pnl_total <= -prm.risk_pnl_warn_frac * prm.risk_daily_loss_limit):
        return WARNING, loss_hit
    return NORMAL, loss_hit
