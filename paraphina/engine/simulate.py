"""The engine's tick loop (ENGINE_SPEC section 3), written once for a batch of runs.

State arrays are (1, runs) or (venues, runs). A killed run is frozen: its metrics are kept and it
leaves the live arrays, so the others go on without masks. Run-level metrics are computed online;
observers (telemetry, calibration probes) see each tick's row only when they are attached.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np

from paraphina.core.names import METRIC_KEYS
from paraphina.engine import control
from paraphina.engine.control import anywhere, vsum
from paraphina.engine.ledger import apply_fill, apply_fills
from paraphina.engine.market import (FUNDING_PERIOD_SEC, MarketState, draw_counts, initial_state, simulate_block,
                                     subset_block)
from paraphina.engine.params import Params
from paraphina.engine.rng import RunStreams

SERIES_KEYS = ("pnl_total", "q_global_tao", "sigma_eff", "dollar_delta_usd")
REGIMES = np.array([[control.NORMAL], [control.WARNING], [control.HARD_LIMIT]])

# An observer sees every tick of the live runs: (tick, run indices, row of arrays). Telemetry is one.
Observer = Callable[[int, np.ndarray, dict], None]


@dataclass
class EngineState:
    """Everything the engine carries from tick to tick, one column per live run."""

    q: np.ndarray
    entry: np.ndarray
    realised: np.ndarray
    pnl_funding: np.ndarray
    fees: np.ndarray
    xhat: np.ndarray
    fair: np.ndarray       # exp(xhat)
    p_var: np.ndarray
    rejects: np.ndarray
    has_fair: np.ndarray
    var_eff: np.ndarray
    vol_short: np.ndarray
    status: np.ndarray
    regime: np.ndarray
    # online metrics (spec section 5); every live run has run the same number of ticks, and the peak of
    # pnl_total that the drawdown falls from is max_pnl
    final_pnl: np.ndarray
    max_pnl: np.ndarray
    min_pnl: np.ndarray
    max_drawdown: np.ndarray
    ticks_in_regime: np.ndarray  # (3, runs): Normal, Warning, HardLimit
    max_abs_delta_usd: np.ndarray
    max_abs_basis_usd: np.ndarray

    def subset(self, keep: np.ndarray) -> "EngineState":
        return EngineState(**{f.name: getattr(self, f.name)[:, keep] for f in fields(self)})


def initial_engine_state(p: Params, market: MarketState) -> EngineState:
    """Flat book but for `initial_q_tao` opened on venue 0 at s0 with no fee (faithful)."""
    v, runs = market.mid.shape
    row = np.zeros((1, runs))
    q = np.zeros((v, runs))
    q[:1] = p.engine.initial_q_tao
    xhat = row + np.log(p.market.s0)
    return EngineState(
        q=q, entry=np.where(q != 0.0, p.market.s0, 0.0), realised=row.copy(), pnl_funding=row.copy(),
        fees=row.copy(), xhat=xhat, fair=np.exp(xhat), p_var=row + p.engine.kalman.p_init, rejects=row.copy(),
        has_fair=np.zeros((1, runs), bool), var_eff=row.copy(), vol_short=np.zeros((v, runs)),
        status=np.zeros((v, runs), np.int64), regime=np.zeros((1, runs), np.int64),
        final_pnl=row.copy(), max_pnl=row - np.inf, min_pnl=row + np.inf,
        max_drawdown=row.copy(), ticks_in_regime=np.zeros((3, runs)),
        max_abs_delta_usd=row.copy(), max_abs_basis_usd=row.copy())


@dataclass
class BatchResult:
    """Metrics of every run (arrays of length runs) and downsampled series (steps x runs)."""

    seeds: np.ndarray
    metrics: dict[str, np.ndarray]
    final_regime: np.ndarray   # regime code on each run's last tick
    series_steps: np.ndarray
    series: dict[str, np.ndarray] = field(default_factory=dict)

    def run_metrics(self, i: int) -> dict:
        """Spec section 5 metrics of run i as plain Python values."""
        m = {k: float(v[i]) for k, v in self.metrics.items()}
        m["num_ticks"] = int(m["num_ticks"])
        m["kill_switch"] = bool(m["kill_switch"])
        m["time_to_kill"] = None if np.isnan(m["time_to_kill"]) else int(m["time_to_kill"])
        return m


def _local_vol_short(prev: np.ndarray, mid: np.ndarray, alpha) -> np.ndarray:
    """Step 2 for a block: EWMA of squared log mid returns per venue (index 0 = carried value)."""
    r2 = np.log(mid[1:] / mid[:-1]) ** 2
    out = np.empty_like(mid)
    out[0] = prev
    for j in range(r2.shape[0]):
        out[j + 1] = out[j] + alpha * (r2[j] - out[j])
    return out


def fill_thresholds(uniforms: np.ndarray, intensity, k, dt: float) -> np.ndarray:
    """Distances below which a quote fills: P(fill) = 1 - exp(-A exp(-k max(d, 0)) dt), crossed = 1.

    With G = -ln(-ln U) a Gumbel draw, the quote fills iff k d < ln(A dt) + G; precomputing the right
    side per block leaves one comparison per quote in the tick.
    """
    with np.errstate(divide="ignore"):
        return np.maximum((np.log(intensity * dt) - np.log(-np.log(uniforms))) / k, 0.0)


def maker_fee_rate(eng) -> np.ndarray | float:
    """Net maker fee per unit notional (fee minus rebate) of each venue, per run if the fees vary."""
    return (eng.venues.maker_fee_bps - eng.venues.maker_rebate_bps) / 1e4


def simulate(p: Params, ticks: int, seeds: Sequence[int], observers: Sequence[Observer] = (),
             series_every: int = 0) -> BatchResult:
    """Run a batch: run i uses seed seeds[i] and the i-th value of every per-run parameter."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _simulate(p, ticks, np.asarray(seeds, dtype=np.int64), observers, series_every)


def _simulate(p: Params, ticks: int, seeds: np.ndarray, observers: Sequence[Observer],
              series_every: int) -> BatchResult:
    runs_total = len(seeds)
    eng, mk = p.engine, p.market
    dt = eng.tick_ms / 1000.0
    stale_ticks = eng.book.stale_ms / eng.tick_ms
    streams = RunStreams(seeds, *draw_counts(p))
    market = initial_state(p, runs_total)
    st = initial_engine_state(p, market)
    ids = np.arange(runs_total)
    out = {k: np.zeros(runs_total) for k in METRIC_KEYS}
    out["time_to_kill"][:] = np.nan
    final_regime = np.zeros(runs_total, np.int64)
    steps = np.arange(0, ticks, series_every) if series_every else np.zeros(0, np.int64)
    series = {k: np.full((len(steps), runs_total), np.nan) for k in SERIES_KEYS}

    def export(cols: np.ndarray, killed: bool, n: int) -> None:
        """Copy the metrics of live columns `cols`, which have run `n` ticks, into the batch's output."""
        dest = ids[cols]
        out["num_ticks"][dest] = n
        for k in ("final_pnl", "max_pnl", "min_pnl", "max_drawdown", "max_abs_delta_usd", "max_abs_basis_usd"):
            out[k][dest] = getattr(st, k)[0, cols]
        for i, k in enumerate(("frac_normal", "frac_warning", "frac_hard")):
            out[k][dest] = st.ticks_in_regime[i, cols] / n
        out["kill_switch"][dest] = killed
        final_regime[dest] = st.regime[0, cols]
        if killed:
            out["time_to_kill"][dest] = n - 1

    block_size = max(1, min(int(eng.rng_block_ticks), int(eng.rng_max_block_cells) // runs_total))
    t = 0
    while t < ticks and len(ids):
        n_block = min(block_size, ticks - t)
        block = simulate_block(market, p, *streams.draw(n_block), t)
        # market-only terms of the whole block, computed in bulk
        vol_short = _local_vol_short(st.vol_short, block.mid, eng.volatility.fv_vol_alpha_short)
        local_vol = np.maximum(np.sqrt(vol_short), eng.volatility.sigma_min)
        bid_thr = fill_thresholds(block.bid_uniforms, mk.fills.intensity, eng.venues.k, dt)
        ask_thr = fill_thresholds(block.ask_uniforms, mk.fills.intensity, eng.venues.k, dt)
        stale = block.age > stale_ticks
        has_book = block.depth > 0.0
        book_ok = ~stale & has_book
        obs_n, obs_y, obs_spread, obs_depth = control.fair_observation(book_ok, block.mid, block.spread, block.depth)
        obs = control.kalman_observation(obs_n, obs_y, obs_spread, obs_depth, eng.kalman, eng.book)
        mid_res, fair_coef = control.quote_market_terms(block.mid, block.funding, eng.mm)
        cost_base = control.hedge_cost_base(block.mid, block.spread, eng.venues)
        funding_rate = block.funding * block.mid * (dt / FUNDING_PERIOD_SEC)
        maker_bps = maker_fee_rate(eng)
        for j in range(n_block):
            mid, spread, depth = block.mid[j], block.spread[j], block.depth[j]
            # 3. fair value from the usable venues (the block's market-only observation unless the venue
            # status of the last tick disables a venue whose book is fine now)
            status_disabled = (st.status == control.DISABLED) & book_ok[j]
            if anywhere(status_disabled):
                n_usable, y_mid, spread_mean, depth_mean = control.fair_observation(
                    book_ok[j] & ~status_disabled, mid, spread, depth)
                tick_obs = control.kalman_observation(n_usable, y_mid, spread_mean, depth_mean, eng.kalman, eng.book)
            else:
                y_mid, tick_obs = obs_y[j], obs.at(j)
            xhat_prev = st.xhat
            st.xhat, st.p_var, st.rejects, st.has_fair = control.kalman_step(
                st.xhat, st.fair, st.p_var, st.rejects, st.has_fair, tick_obs, eng.kalman, eng.book, dt)
            st.fair = fair = np.exp(st.xhat)
            # 4. effective volatility and control scalars
            st.var_eff, sigma_eff, vol_ratio, spread_mult, size_mult, band_mult = control.vol_scalars(
                st.var_eff, st.xhat - xhat_prev, eng.volatility)
            # 5. mark to fair
            q_total = vsum(st.q)
            # 6. toxicity and venue health
            tox = control.toxicity(local_vol[j], sigma_eff, has_book[j], eng.toxicity)
            st.status = control.venue_status(tox, stale[j], eng.toxicity)
            # 7. quotes and 8. hedge
            limit = control.delta_limit(vol_ratio, eng.risk)
            bid, ask, size, bid_ok, ask_ok = control.mm_quotes(
                mid_res[j], fair_coef[j], fair, q_total, q_total * fair, sigma_eff, vol_ratio, limit, spread_mult,
                size_mult, st.regime, st.status, eng)
            hedge_dq = control.hedge_orders(q_total, band_mult, st.regime, st.status, tox, cost_base[j], eng)
            # 9. execution: hedges now as taker, quotes against the end-of-tick mid. Sparse fills update fresh
            # copies of the positions in place, so the arrays of rows already seen by observers never change.
            st.q, st.entry = st.q.copy(), st.entry.copy()
            fees = 0.0
            if hedge_dq is not None:
                hedge_abs = np.abs(hedge_dq)
                price = mid + np.sign(hedge_dq) * (spread * 0.5 + mk.impact_coeff * hedge_abs / depth * mid)
                idx = np.flatnonzero(hedge_dq != 0.0)  # nonzero() of a float array costs several times a mask's
                st.realised += vsum(apply_fills(st.q, st.entry, idx, hedge_dq.reshape(-1)[idx], price.reshape(-1)[idx]))
                fees = hedge_abs * price * (eng.venues.taker_fee_bps / 1e4)
            mid_end = block.mid[j + 1]
            bid_fill = bid_ok & (mid_end - bid < bid_thr[j])
            ask_fill = ask_ok & (ask - mid_end < ask_thr[j])
            bid_size = size * bid_fill
            ask_size = size * ask_fill
            if block.size_uniforms is not None:
                bid_size = bid_size * block.size_uniforms[j][:len(bid)]
                ask_size = ask_size * block.size_uniforms[j][len(bid):]
            # bids then asks per venue: a dense pass over every position for venues with at most one side
            # filled (about half of a batch's positions fill each tick), a sparse one for the few with both
            both = bid_fill & ask_fill
            single_dq = bid_size - np.where(both, 0.0, ask_size)
            if anywhere(single_dq):
                st.q, st.entry, realised = apply_fill(st.q, st.entry, single_dq, np.where(bid_fill, bid, ask))
                st.realised += vsum(realised)
            if anywhere(both):
                idx = np.flatnonzero(both)
                st.realised += vsum(apply_fills(st.q, st.entry, idx, -ask_size.reshape(-1)[idx], ask.reshape(-1)[idx]))
            fee_total = vsum(fees + (bid_size * bid + ask_size * ask) * maker_bps)
            st.realised -= fee_total
            st.fees += fee_total
            # 10. funding accrual
            st.pnl_funding -= vsum(st.q * funding_rate[j])
            # 11. recompute and risk on the post-fill state
            q_total = vsum(st.q)
            dollar_delta = q_total * fair
            basis_each = st.q * (mid - fair)
            basis_usd = vsum(basis_each)
            pnl_unrealised = vsum(st.q * (fair - st.entry))
            pnl_total = st.realised + pnl_unrealised + st.pnl_funding
            st.regime, kill = control.risk_regime(pnl_total, dollar_delta, basis_usd, limit, eng.risk)
            # online metrics
            st.final_pnl = pnl_total
            np.maximum(st.max_pnl, pnl_total, out=st.max_pnl)
            np.minimum(st.min_pnl, pnl_total, out=st.min_pnl)
            np.maximum(st.max_drawdown, st.max_pnl - pnl_total, out=st.max_drawdown)
            st.ticks_in_regime += st.regime == REGIMES
            np.maximum(st.max_abs_delta_usd, np.abs(dollar_delta), out=st.max_abs_delta_usd)
            np.maximum(st.max_abs_basis_usd, np.abs(basis_usd), out=st.max_abs_basis_usd)
            tick = t + j
            if series_every and tick % series_every == 0:
                k = tick // series_every
                for key, value in (("pnl_total", pnl_total), ("q_global_tao", q_total), ("sigma_eff", sigma_eff),
                                   ("dollar_delta_usd", dollar_delta)):
                    series[key][k, ids] = value[0]
            if observers:
                row = {
                    # the realised, funding and fee accumulators change in place on later ticks: rows get copies
                    "t": tick, "pnl_realised": st.realised.copy(), "pnl_unrealised": pnl_unrealised,
                    "pnl_total": pnl_total,
                    "risk_regime": st.regime, "kill_switch": kill, "q_global_tao": q_total,
                    "dollar_delta_usd": dollar_delta, "basis_usd": basis_usd, "fair_value": fair,
                    "sigma_eff": sigma_eff, "vol_ratio": vol_ratio, "spread_mult": spread_mult,
                    "size_mult": size_mult, "band_mult": band_mult, "delta_limit_usd": limit,
                    "basis_gross_usd": vsum(np.abs(basis_each)), "pnl_funding": st.pnl_funding.copy(),
                    "fees_usd": st.fees.copy(), "mm_fills": vsum(bid_fill) + vsum(ask_fill),
                    "mm_volume_tao": vsum(bid_size + ask_size),
                    "hedge_volume_tao": vsum(np.abs(hedge_dq)) if hedge_dq is not None else np.zeros_like(pnl_total),
                    "venue_status": st.status, "venue_q_tao": st.q,
                    # not telemetry: what calibration probes look at
                    "mm_quoted_sides": vsum(bid_ok) + vsum(ask_ok), "y_mid": y_mid,
                    "market_stressed": block.stressed[j],
                }
                for observer in observers:
                    observer(tick, ids, row)
            if anywhere(kill):
                dead = kill[0]
                export(np.flatnonzero(dead), killed=True, n=tick + 1)
                keep = np.flatnonzero(~dead)
                ids, st, p = ids[keep], st.subset(keep), p.subset(keep)
                eng, mk = p.engine, p.market
                maker_bps = maker_fee_rate(eng)
                streams.subset(keep)
                block = subset_block(block, keep)
                vol_short, local_vol, bid_thr, ask_thr = (a[..., keep] for a in (vol_short, local_vol, bid_thr, ask_thr))
                stale, has_book, book_ok, mid_res, fair_coef, cost_base, funding_rate = (
                    a[..., keep] for a in (stale, has_book, book_ok, mid_res, fair_coef, cost_base, funding_rate))
                obs_y = obs_y[..., keep]
                obs = control.KalmanObservation(*(a[..., keep] for a in obs))
                if not len(ids):
                    break
        st.vol_short = vol_short[-1]
        market = block.last
        t += n_block
    export(np.arange(len(ids)), killed=False, n=t)
    _forward_fill(series)
    return BatchResult(seeds=seeds, metrics=out, final_regime=final_regime, series_steps=steps, series=series)


def _forward_fill(series: dict[str, np.ndarray]) -> None:
    """A killed run's series stays at its last value (the run is frozen)."""
    for values in series.values():
        for k in range(1, values.shape[0]):
            gap = np.isnan(values[k])
            values[k][gap] = values[k - 1][gap]
