"""The compiled tick (ENGINE_SPEC section 3): `run_one` calls the steps in order for one run; `run_batch`
calls it for every run of a batch, over a thread pool (`prange`) or serially.

Everything a run needs is allocated before its tick loop; inside it there is scalar maths only. A killed run
stops (`break`) on the tick that fires the switch, after that tick's row is written.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from paraphina.core.names import METRIC_KEYS
from paraphina.engine.ledger import apply_fill
from paraphina.engine.market import N_FAIR_UNIFORMS, draw_counts, initial_market, market_step
from paraphina.engine.rng import normal, uniform
from paraphina.engine.strategy import (HARD_LIMIT, NORMAL, WARNING, delta_limit, fair_observation,
                                       funding_payment, hedge_orders, kalman_step, local_vol_step, mark_to_fair,
                                       measurement_noise, quote, quote_fills, risk_regime, taker_price,
                                       venue_health, vol_scalars)

SERIES_KEYS = ("pnl_total", "q_global_tao", "sigma_eff", "dollar_delta_usd")
# A telemetry row (ENGINE_SPEC section 4) and, last, what calibration probes look at.
ROW_KEYS = ("t", "pnl_realised", "pnl_unrealised", "pnl_total", "risk_regime", "kill_switch", "q_global_tao",
            "dollar_delta_usd", "basis_usd", "fair_value", "sigma_eff", "vol_ratio", "spread_mult", "size_mult",
            "band_mult", "delta_limit_usd", "basis_gross_usd", "pnl_funding", "fees_usd", "mm_fills",
            "mm_volume_tao", "hedge_volume_tao")
ROW_VENUE_KEYS = ("venue_status", "venue_q_tao")
PROBE_KEYS = ("mm_quoted_sides", "y_mid", "market_stressed")

OUTCOME_DTYPE = np.dtype([(k, np.float64) for k in (*METRIC_KEYS, "final_regime")], align=True)
SERIES_DTYPE = np.dtype([(k, np.float64) for k in SERIES_KEYS], align=True)


def row_dtype(n_venues: int) -> np.dtype:
    """The record of one telemetry row."""
    return np.dtype([*((k, np.float64) for k in ROW_KEYS), *((k, np.float64, (n_venues,)) for k in ROW_VENUE_KEYS),
                     *((k, np.float64) for k in PROBE_KEYS)], align=True)


@njit(cache=True, inline="always")
def draw_tick(s, normals, uniforms):
    """The tick's draws from the run's stream state `s`, normals then uniforms; returns the next state."""
    for i in range(normals.shape[0]):
        normals[i], s = normal(s)
    for i in range(uniforms.shape[0]):
        uniforms[i], s = uniform(s)
    return s


@njit(cache=True)
def run_one(prm, rng, markets, ticks, out, series, series_every, rows, every):
    """Run one session of `ticks`: metrics into the record `out`, the stepped series into `series` (one record
    per step, every `series_every` ticks) and, when `rows` has room, telemetry rows every `every` ticks (and
    the firing tick's). Returns how many rows were written."""
    n_venues = markets[0].mid.shape[0]
    dt = prm.tick_ms / 1000.0
    stale_ticks = prm.book_stale_ms / prm.tick_ms
    size_random = prm.fills_size_random != 0.0
    n_normals, n_uniforms = draw_counts(n_venues, size_random)
    fill_uniforms = N_FAIR_UNIFORMS + n_venues  # bid fill draws, then ask, then fill fractions
    normals, uniforms = np.empty(n_normals), np.empty(n_uniforms)
    fill_rate, never_fills = np.empty(n_venues), np.empty(n_venues)
    for v in range(n_venues):
        fill_rate[v] = prm.fills_intensity[v] * dt
        never_fills[v] = math.exp(-fill_rate[v])
    stream = (rng[0], rng[1], rng[2], rng[3])
    q, entry = np.zeros(n_venues), np.zeros(n_venues)
    vol_short, vol_long, tox, hedge_dq = np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues)
    status = np.zeros(n_venues, np.int64)
    bid, ask, bid_size, ask_size = np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues), np.zeros(n_venues)
    quoted = np.zeros(n_venues, np.int64)  # sides quoted per venue (probe)
    bid_ok, ask_ok = np.zeros(n_venues, np.bool_), np.zeros(n_venues, np.bool_)
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
    pnl_total = 0.0
    n_rows = 0
    killed = False
    n_done = 0
    last_step = -1
    for t in range(ticks):
        # 1. market step: the strategy acts on `cur`, its quotes fill against `nxt`
        stream = draw_tick(stream, normals, uniforms)
        market_step(prm, cur, nxt, normals, uniforms, t, dt)
        # 3. fair value from the usable venues (venues Disabled on the last tick are left out)
        n_usable, y_mid, spread_mean, depth_mean = fair_observation(cur, status, stale_ticks)
        r = measurement_noise(prm, spread_mean, depth_mean)
        xhat_prev = xhat
        xhat, p_var, rejects, has_fair = kalman_step(prm, xhat, fair, p_var, rejects, has_fair, n_usable, y_mid,
                                                     r, dt)
        fair = math.exp(xhat)
        # 4. effective volatility and control scalars
        var_eff, sigma_eff, vol_ratio, spread_mult, size_mult, band_mult = vol_scalars(prm, var_eff,
                                                                                       xhat - xhat_prev)
        # 5. mark to fair
        q_total = mark_to_fair(q, entry, cur.mid, fair)[0]
        # 6. toxicity and venue health
        venue_health(prm, cur, vol_short, sigma_eff, stale_ticks, tox, status)
        # 7. quotes
        limit = delta_limit(prm, vol_ratio)
        for v in range(n_venues):
            bid[v], ask[v], bid_size[v], bid_ok[v], ask_ok[v] = quote(
                prm, v, cur.mid[v], cur.funding[v], fair, q_total, sigma_eff, vol_ratio, limit, spread_mult,
                size_mult, regime, status[v])
            quoted[v] = bid_ok[v] + ask_ok[v]
        # 8. hedge
        hedging = hedge_orders(prm, cur, q_total, band_mult, regime, status, tox, hedge_dq)
        # 9. execution: hedge slices as taker, then quotes against the end-of-tick mid; ledger per venue
        tick_fees = mm_fills = mm_volume = hedge_volume = 0.0
        for v in range(n_venues):
            if hedging and hedge_dq[v] != 0.0:
                price = taker_price(prm, cur, v, hedge_dq[v])
                q[v], entry[v], pnl = apply_fill(q[v], entry[v], hedge_dq[v], price)
                realised += pnl
                tick_fees += abs(hedge_dq[v]) * price * (prm.venues_taker_fee_bps[v] / 1e4)
                hedge_volume += abs(hedge_dq[v])
            size = bid_size[v]
            bid_size[v] = ask_size[v] = 0.0
            u_bid, u_ask = uniforms[fill_uniforms + v], uniforms[fill_uniforms + n_venues + v]
            if bid_ok[v] and quote_fills(nxt.mid[v] - bid[v], u_bid, fill_rate[v], prm.venues_k[v], never_fills[v]):
                bid_size[v] = size * (uniforms[fill_uniforms + 2 * n_venues + v] if size_random else 1.0)
            if ask_ok[v] and quote_fills(ask[v] - nxt.mid[v], u_ask, fill_rate[v], prm.venues_k[v], never_fills[v]):
                ask_size[v] = size * (uniforms[fill_uniforms + 3 * n_venues + v] if size_random else 1.0)
            maker_rate = (prm.venues_maker_fee_bps[v] - prm.venues_maker_rebate_bps[v]) / 1e4
            if bid_size[v] != 0.0:
                q[v], entry[v], pnl = apply_fill(q[v], entry[v], bid_size[v], bid[v])
                realised += pnl
                mm_fills += 1.0
            if ask_size[v] != 0.0:
                q[v], entry[v], pnl = apply_fill(q[v], entry[v], -ask_size[v], ask[v])
                realised += pnl
                mm_fills += 1.0
            tick_fees += (bid_size[v] * bid[v] + ask_size[v] * ask[v]) * maker_rate
            mm_volume += bid_size[v] + ask_size[v]
        realised -= tick_fees
        fees += tick_fees
        # 10. funding accrual
        pnl_funding -= funding_payment(q, cur, dt)
        # 11. recompute and risk on the post-fill state
        q_total, basis_usd, basis_gross, pnl_unrealised = mark_to_fair(q, entry, cur.mid, fair)
        dollar_delta = q_total * fair
        pnl_total = realised + pnl_unrealised + pnl_funding
        regime, killed = risk_regime(prm, pnl_total, dollar_delta, basis_usd, limit)
        # online metrics (spec section 5)
        max_pnl = max(max_pnl, pnl_total)
        min_pnl = min(min_pnl, pnl_total)
        max_drawdown = max(max_drawdown, max_pnl - pnl_total)
        regime_ticks[regime] += 1.0
        max_abs_delta = max(max_abs_delta, abs(dollar_delta))
        max_abs_basis = max(max_abs_basis, abs(basis_usd))
        if series_every > 0 and t % series_every == 0:
            last_step = t // series_every
            step = series[last_step]
            step.pnl_total, step.q_global_tao, step.sigma_eff, step.dollar_delta_usd = (pnl_total, q_total, sigma_eff,
                                                                                        dollar_delta)
        # 12. telemetry row
        if n_rows < rows.shape[0] and (t % every == 0 or killed):
            row = rows[n_rows]
            n_rows += 1
            row.t, row.pnl_realised, row.pnl_unrealised, row.pnl_total = t, realised, pnl_unrealised, pnl_total
            row.risk_regime, row.kill_switch, row.q_global_tao = regime, killed, q_total
            row.dollar_delta_usd, row.basis_usd, row.fair_value, row.sigma_eff = dollar_delta, basis_usd, fair, sigma_eff
            row.vol_ratio, row.spread_mult, row.size_mult, row.band_mult = vol_ratio, spread_mult, size_mult, band_mult
            row.delta_limit_usd, row.basis_gross_usd, row.pnl_funding, row.fees_usd = limit, basis_gross, pnl_funding, fees
            row.mm_fills, row.mm_volume_tao, row.hedge_volume_tao = mm_fills, mm_volume, hedge_volume
            quoted_sides = 0.0
            for v in range(n_venues):
                row.venue_status[v] = status[v]
                row.venue_q_tao[v] = q[v]
                quoted_sides += quoted[v]
            row.mm_quoted_sides, row.y_mid, row.market_stressed = quoted_sides, y_mid, cur.stressed
        # the local volatility of the next tick, then the next tick's market becomes the current one
        local_vol_step(prm, vol_short, vol_long, cur.log_mid, nxt.log_mid)
        cur, nxt = nxt, cur
        n_done = t + 1
        if killed:
            break
    for k in range(last_step + 1, series.shape[0]):  # a killed run's series stays at its last value
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


@njit(cache=True, parallel=True)
def run_parallel(table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts):
    """Every run of the batch over the thread pool."""
    for i in prange(table.shape[0]):
        run_index(i, table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts)


@njit(cache=True)
def run_serial(table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts):
    """Every run of the batch on the calling thread: for small batches a pool costs more than it saves."""
    for i in range(table.shape[0]):
        run_index(i, table, rngs, markets, ticks, outcome, series, series_every, rows, row_slot, every, row_counts)


@njit(cache=True)
def draws_only(rngs, ticks, n_normals, n_uniforms):
    """The batch's random draws alone, as the kernel makes them (the floor of a run-tick's cost); returns a
    checksum so nothing is optimised away."""
    normals, uniforms = np.empty(n_normals), np.empty(n_uniforms)
    total = 0.0
    for i in range(rngs.shape[0]):
        stream = (rngs[i, 0], rngs[i, 1], rngs[i, 2], rngs[i, 3])
        for _ in range(ticks):
            stream = draw_tick(stream, normals, uniforms)
            total += normals[0] + uniforms[0]
    return total
