"""The compiled tick (ENGINE_SPEC section 3): `run_one` calls the steps in order for one run; `run_batch`
calls it for every run of a batch, over a thread pool (`prange`) or serially.

Everything a run needs is allocated before its tick loop; inside it there is scalar maths only. A killed run
stops (`break`) on the tick that fires the switch, after that tick's row is written.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from paraphina.core.names import METRIC_KEYS, MICROSTRUCTURE_KEYS
from paraphina.engine.ledger import apply_fill
from paraphina.engine.market import BUY, SELL, initial_market, market_step
from paraphina.engine.rng import normal, uniform
from paraphina.engine.strategy import (HARD_LIMIT, NORMAL, WARNING, DISABLED, delta_limit, fair_observation,
                                       funding_payment, hedge_orders, kalman_step, local_vol_step, mark_to_fair,
                                       measurement_noise, quote, quote_fill, risk_regime, taker_price,
                                       venue_health, vol_scalars)

SERIES_KEYS = ("pnl_total", "q_global_tao", "sigma_eff", "dollar_delta_usd")
# A telemetry row (ENGINE_SPEC section 4) and, last, what calibration probes look at.
ROW_KEYS = ("t", "pnl_realised", "pnl_unrealised", "pnl_total", "risk_regime", "kill_switch", "q_global_tao",
            "dollar_delta_usd", "basis_usd", "fair_value", "sigma_eff", "vol_ratio", "spread_mult", "size_mult",
            "band_mult", "delta_limit_usd", "basis_gross_usd", "pnl_funding", "fees_usd", "mm_fills",
            "mm_volume_tao", "hedge_volume_tao", "market_orders", "alpha")
ROW_VENUE_KEYS = ("venue_status", "venue_q_tao")
PROBE_KEYS = ("mm_quoted_sides", "y_mid", "market_stressed", "true_fair")
# What calibration (ENGINE_SPEC section 9) measures beyond the run metrics, accumulated over each run.
CALIBRATION_KEYS = ("mm_notional", "quoted_sides", "quoted_half_bps", "book_half_bps", "calm_ticks", "calm_r2", "jumps",
                    "stressed_venue_ticks", "stressed_disabled", "calm_venue_ticks", "calm_disabled",
                    "warning_from_delta", "warning_from_pnl")

OUTCOME_DTYPE = np.dtype([(k, np.float64) for k in (*METRIC_KEYS, *MICROSTRUCTURE_KEYS, "final_regime",
                                                    *CALIBRATION_KEYS)], align=True)
SERIES_DTYPE = np.dtype([(k, np.float64) for k in SERIES_KEYS], align=True)


def row_dtype(n_venues: int) -> np.dtype:
    """The record of one telemetry row."""
    return np.dtype([*((k, np.float64) for k in ROW_KEYS), *((k, np.float64, (n_venues,)) for k in ROW_VENUE_KEYS),
                     *((k, np.float64) for k in PROBE_KEYS)], align=True)


@njit(cache=True)
def run_one(prm, rng, markets, ticks, out, series, series_every, rows, every):
    """Run one session of `ticks`: metrics into the record `out`, the stepped series into `series` (one record
    per step, every `series_every` ticks and the last tick) and, when `rows` has room, telemetry rows every
    `every` ticks (and the last tick's, or the firing tick's). Returns how many rows were written."""
    n_venues = markets[0].mid.shape[0]
    dt = prm.tick_ms / 1000.0
    stale_ticks = prm.book_stale_ms / prm.tick_ms
    markout_ticks = max(1, int(round(prm.toxicity_markout_sec / dt)))
    stream = (rng[0], rng[1], rng[2], rng[3])
    q, entry = np.zeros(n_venues), np.zeros(n_venues)
    vol_short, vol_long, tox, hedge_dq = np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues)
    markout = np.zeros(n_venues)  # recent markout of each venue's own fills, bps (toxicity)
    status = np.zeros(n_venues, np.int64)
    fill_q = np.zeros((markout_ticks, n_venues))    # signed MM fills per tick, waiting for their markout
    fill_mid = np.zeros((markout_ticks, n_venues))  # the venue mid when they filled
    cur, nxt = markets[0], markets[1]
    initial_market(prm, cur)
    # initial position on venue 0 at s0, no fee (faithful)
    q[0] = prm.initial_q_tao
    entry[0] = prm.s0 if q[0] != 0.0 else 0.0
    xhat = math.log(prm.s0)
    fair = math.exp(xhat)
    p_var, rejects, has_fair, var_eff = prm.kalman_p_init, 0.0, False, 0.0
    realised = pnl_funding = fees = 0.0
    regime = NORMAL
    max_pnl, min_pnl, max_drawdown, max_abs_delta, max_abs_basis = -math.inf, math.inf, 0.0, 0.0, 0.0
    regime_ticks = np.zeros(3)
    mm_fills_total = mm_notional = capture_usd = markout_usd = hedge_cost = 0.0
    quoted_sides = quoted_half_bps = book_half_bps = calm_ticks = calm_r2 = jumps = 0.0
    stressed_venue_ticks = stressed_disabled = calm_venue_ticks = calm_disabled = 0.0
    warning_from_delta = warning_from_pnl = 0.0
    pnl_total = 0.0
    n_rows = 0
    killed = False
    n_done = 0
    last_step = -1
    for t in range(ticks):
        # markouts of the fills made markout_sec ago, at today's mids (toxicity and the markout metric)
        slot = t % markout_ticks
        for v in range(n_venues):
            markout[v] *= 1.0 - prm.toxicity_markout_decay
            if fill_q[slot, v] != 0.0:
                move = fill_q[slot, v] * (cur.mid[v] - fill_mid[slot, v])
                markout_usd += move
                bps = move / (abs(fill_q[slot, v]) * fill_mid[slot, v]) * 1e4
                markout[v] += prm.toxicity_markout_alpha * (bps - markout[v])
                fill_q[slot, v] = 0.0
        # 1. market step: the tick's orders arrive on `cur`; the strategy acts on `cur`, fills against `nxt`
        stream, jump = market_step(prm, cur, nxt, stream, t, dt)
        # 3. fair value from the usable venues
        n_usable, y_mid, half_mean, depth_mean = fair_observation(cur, stale_ticks)
        r = measurement_noise(prm, half_mean, depth_mean)
        xhat_prev = xhat
        xhat, p_var, rejects, has_fair = kalman_step(prm, xhat, fair, p_var, rejects, has_fair, n_usable, y_mid,
                                                     r, dt)
        fair = math.exp(xhat)
        # 4. effective volatility and control scalars
        var_eff, sigma_eff, vol_ratio, spread_mult, size_mult, band_mult = vol_scalars(prm, var_eff,
                                                                                       xhat - xhat_prev, dt)
        # 5. mark to fair
        q_total = mark_to_fair(q, entry, cur.mid, fair)[0]
        # 6. toxicity and venue health
        venue_health(prm, cur, vol_short, markout, sigma_eff, stale_ticks, tox, status)
        # 8. hedge (computed before the quotes fill, executed first)
        hedging = hedge_orders(prm, cur, q_total, band_mult, regime, status, tox, hedge_dq)
        # 7. quotes and 9. execution per venue: hedge slices as taker, then quotes fill from the tick's orders
        limit = delta_limit(prm, vol_ratio)
        tick_fees = mm_fills = mm_volume = hedge_volume = 0.0
        tick_quoted = 0.0
        for v in range(n_venues):
            mid = cur.mid[v]
            if hedging and hedge_dq[v] != 0.0:
                price = taker_price(prm, cur, v, hedge_dq[v])
                q[v], entry[v], pnl = apply_fill(q[v], entry[v], hedge_dq[v], price)
                realised += pnl
                fee = abs(hedge_dq[v]) * price * (prm.venues_taker_fee_bps[v] / 1e4)
                tick_fees += fee
                hedge_volume += abs(hedge_dq[v])
                hedge_cost += abs(hedge_dq[v]) * abs(price - mid) + fee
            bid, ask, size, bid_ok, ask_ok = quote(prm, v, mid, cur.funding[v], fair, q_total, sigma_eff, vol_ratio,
                                                   limit, spread_mult, size_mult, regime, status[v])
            maker_rate = (prm.venues_maker_fee_bps[v] - prm.venues_maker_rebate_bps[v]) / 1e4
            for side in range(2):
                ok = bid_ok if side == 0 else ask_ok
                if not ok:
                    continue
                price = bid if side == 0 else ask
                tick_quoted += 1.0
                quoted_half_bps += abs(price - mid) / mid * 1e4
                book_half_bps += cur.half_spread[v] * 1e4
                filled, stream = quote_fill(prm, cur, nxt.mid[v], v, SELL if side == 0 else BUY, price, size, stream)
                if filled == 0.0:
                    continue
                dq = filled if side == 0 else -filled
                q[v], entry[v], pnl = apply_fill(q[v], entry[v], dq, price)
                realised += pnl
                tick_fees += filled * price * maker_rate
                mm_fills += 1.0
                mm_volume += filled
                mm_notional += filled * mid
                capture_usd += dq * (mid - price)
                fill_q[slot, v] += dq
                fill_mid[slot, v] = mid
        realised -= tick_fees
        fees += tick_fees
        quoted_sides += tick_quoted
        mm_fills_total += mm_fills
        # 10. funding accrual
        pnl_funding -= funding_payment(q, cur, dt)
        # 11. recompute and risk on the post-fill state
        q_total, basis_usd, basis_gross, pnl_unrealised = mark_to_fair(q, entry, cur.mid, fair)
        dollar_delta = q_total * fair
        pnl_total = realised + pnl_unrealised + pnl_funding
        regime, killed = risk_regime(prm, pnl_total, dollar_delta, basis_usd, limit)
        # online metrics (spec section 5) and what calibration measures
        max_pnl = max(max_pnl, pnl_total)
        min_pnl = min(min_pnl, pnl_total)
        max_drawdown = max(max_drawdown, max_pnl - pnl_total)
        regime_ticks[regime] += 1.0
        max_abs_delta = max(max_abs_delta, abs(dollar_delta))
        max_abs_basis = max(max_abs_basis, abs(basis_usd))
        if regime == WARNING:
            warning_from_delta += abs(dollar_delta) >= prm.risk_delta_warn_frac * limit
            warning_from_pnl += pnl_total <= -prm.risk_pnl_warn_frac * prm.risk_daily_loss_limit
        disabled = 0.0
        for v in range(n_venues):
            disabled += status[v] == DISABLED
        if nxt.stressed != 0.0:
            stressed_venue_ticks += n_venues
            stressed_disabled += disabled
        else:
            calm_venue_ticks += n_venues
            calm_disabled += disabled
            if jump == 0.0:  # the calm regime's diffusion (with impact and alpha), jumps apart
                calm_ticks += 1.0
                calm_r2 += (nxt.x - cur.x) ** 2 / dt
        jumps += jump != 0.0
        if series_every > 0 and (t % series_every == 0 or t == ticks - 1 or killed):
            last_step = (t + series_every - 1) // series_every  # the last or firing tick: the next step holds it
            step = series[last_step]
            step.pnl_total, step.q_global_tao, step.sigma_eff, step.dollar_delta_usd = (pnl_total, q_total, sigma_eff,
                                                                                        dollar_delta)
        # 12. telemetry row
        if n_rows < rows.shape[0] and (t % every == 0 or killed or t == ticks - 1):
            row = rows[n_rows]
            n_rows += 1
            row.t, row.pnl_realised, row.pnl_unrealised, row.pnl_total = t, realised, pnl_unrealised, pnl_total
            row.risk_regime, row.kill_switch, row.q_global_tao = regime, killed, q_total
            row.dollar_delta_usd, row.basis_usd, row.fair_value, row.sigma_eff = dollar_delta, basis_usd, fair, sigma_eff
            row.vol_ratio, row.spread_mult, row.size_mult, row.band_mult = vol_ratio, spread_mult, size_mult, band_mult
            row.delta_limit_usd, row.basis_gross_usd, row.pnl_funding, row.fees_usd = limit, basis_gross, pnl_funding, fees
            row.mm_fills, row.mm_volume_tao, row.hedge_volume_tao = mm_fills, mm_volume, hedge_volume
            orders = 0.0
            for v in range(n_venues):
                row.venue_status[v] = status[v]
                row.venue_q_tao[v] = q[v]
                orders += cur.orders[v, BUY] + cur.orders[v, SELL]
            row.market_orders, row.alpha = orders, cur.alpha
            row.mm_quoted_sides, row.y_mid, row.market_stressed, row.true_fair = (tick_quoted, y_mid, cur.stressed,
                                                                                   math.exp(cur.x))
        # the local volatility of the next tick, then the next tick's market becomes the current one
        local_vol_step(prm, vol_short, vol_long, cur.log_mid, nxt.log_mid, dt)
        cur, nxt = nxt, cur
        n_done = t + 1
        if killed:
            break
    for k in range(markout_ticks):  # fills younger than the markout horizon: marked at the last mids
        for v in range(n_venues):
            markout_usd += fill_q[k, v] * (cur.mid[v] - fill_mid[k, v])
    for k in range(last_step + 1, series.shape[0]):  # a killed run's series stays at its final value
        step, last = series[k], series[last_step]
        step.pnl_total, step.q_global_tao, step.sigma_eff, step.dollar_delta_usd = (
            last.pnl_total, last.q_global_tao, last.sigma_eff, last.dollar_delta_usd)
    out.num_ticks = n_done
    out.final_pnl, out.max_pnl, out.min_pnl, out.max_drawdown = pnl_total, max_pnl, min_pnl, max_drawdown
    out.frac_normal = regime_ticks[NORMAL] / n_done
    out.frac_warning = regime_ticks[WARNING] / n_done
    out.frac_hard = regime_ticks[HARD_LIMIT] / n_done
    out.kill_switch = killed
    out.time_to_kill = n_done - 1 if killed else math.nan
    out.max_abs_delta_usd, out.max_abs_basis_usd = max_abs_delta, max_abs_basis
    out.final_regime = regime
    per_notional = 1e4 / mm_notional if mm_notional > 0.0 else 0.0  # bps of traded MM notional; 0 without fills
    out.mm_fill_rate = mm_fills_total / quoted_sides if quoted_sides > 0.0 else 0.0
    out.spread_capture_bps = capture_usd * per_notional
    out.markout_30s_bps = markout_usd * per_notional
    out.net_edge_bps = pnl_total * per_notional
    out.hedge_cost_usd = hedge_cost
    out.mm_notional = mm_notional
    out.quoted_sides, out.quoted_half_bps, out.book_half_bps = quoted_sides, quoted_half_bps, book_half_bps
    out.calm_ticks, out.calm_r2, out.jumps = calm_ticks, calm_r2, jumps
    out.stressed_venue_ticks, out.stressed_disabled = stressed_venue_ticks, stressed_disabled
    out.calm_venue_ticks, out.calm_disabled = calm_venue_ticks, calm_disabled
    out.warning_from_delta, out.warning_from_pnl = warning_from_delta, warning_from_pnl
    rng[0], rng[1], rng[2], rng[3] = stream
    return n_rows


@njit(cache=True, inline="always")
def run_index(i, table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts):
    """Run i of a batch: it reads and writes only its own rows of every array."""
    slot = row_slot[i]
    n = run_one(table[i], rngs[i], markets[i], ticks, outcome[i], series[i], series_every,
                rows[max(slot, 0)][:rows.shape[1] if slot >= 0 else 0], every)
    if slot >= 0:
        row_counts[slot] = n


@njit(cache=True, parallel=True, nogil=True)
def run_parallel(table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts):
    """Every run of the batch over the thread pool, the GIL released: other Python threads (the store opening,
    a search worker's heartbeat) run meanwhile."""
    for i in prange(table.shape[0]):
        run_index(i, table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts)


@njit(cache=True, nogil=True)
def run_serial(table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts):
    """Every run of the batch on the calling thread, the GIL released: for small batches a pool costs more than
    it saves."""
    for i in range(table.shape[0]):
        run_index(i, table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts)


@njit(cache=True)
def draws_only(rngs, ticks, n_normals, n_uniforms):
    """`n_normals` normals and `n_uniforms` uniforms per tick for every run, as the kernel draws them: the
    floor of a run-tick's cost. Returns a checksum so nothing is optimised away."""
    total = 0.0
    for i in range(rngs.shape[0]):
        stream = (rngs[i, 0], rngs[i, 1], rngs[i, 2], rngs[i, 3])
        for _ in range(ticks):
            for _ in range(n_normals):
                z, stream = normal(stream)
                total += z
            for _ in range(n_uniforms):
                u, stream = uniform(stream)
                total += u
    return total
