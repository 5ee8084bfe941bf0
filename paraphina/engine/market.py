"""Synthetic multi-venue market (ENGINE_SPEC section 2), simulated a block of ticks at a time.

The market does not depend on what the strategy does, so whole blocks are computed with bulk numpy
operations; only the recursions (regimes, OU processes, outages) step tick by tick. Arrays are
venue-major: (venues, runs) per tick, (ticks, venues, runs) per block.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from paraphina.engine.params import Params

FUNDING_PERIOD_SEC = 8 * 3600.0  # funding rates are quoted per 8 hours


def draw_counts(p: Params) -> tuple[int, int]:
    """How many normals and uniforms one run needs per tick."""
    v = p.n_venues
    return 2 + 3 * v, 2 + v + 2 * v + (2 * v if p.market.fills.size_random else 0)


@dataclass
class MarketState:
    """The market of every live run at one tick; arrays (1, runs) or (venues, runs)."""

    x: np.ndarray          # log fair price
    stressed: np.ndarray   # volatility regime
    basis: np.ndarray      # log basis per venue
    funding: np.ndarray    # funding rate per 8 h
    stale: np.ndarray      # book not updated this tick
    age: np.ndarray        # ticks since the book last updated
    mid: np.ndarray
    spread: np.ndarray     # USD
    depth: np.ndarray      # USD notional near mid

    def subset(self, keep: np.ndarray) -> "MarketState":
        return MarketState(**{f.name: getattr(self, f.name)[:, keep] for f in fields(self)})


def initial_state(p: Params, runs: int) -> MarketState:
    """The market at tick 0: fair price s0, calm, every venue at its mean basis, spread and depth."""
    mk = p.market
    ones = np.ones((p.n_venues, runs))
    x = np.zeros((1, runs)) + np.log(mk.s0)
    basis = ones * mk.basis.mean
    mid = np.exp(x + basis)
    return MarketState(
        x=x, stressed=np.zeros((1, runs), bool), basis=basis, funding=ones * mk.funding.mean,
        stale=np.zeros(ones.shape, bool), age=np.zeros(ones.shape), mid=mid,
        spread=mid * mk.spread.mean_bps / 1e4, depth=ones * mk.depth.mean_usd)


@dataclass
class MarketBlock:
    """Market states of ticks t0..t0+B (index 0 = the carried state) and the fill draws of ticks t0..t0+B-1."""

    stressed: np.ndarray   # (B+1, 1, runs)
    x: np.ndarray          # (B+1, 1, runs)
    stale: np.ndarray      # (B+1, venues, runs)
    age: np.ndarray
    mid: np.ndarray
    spread: np.ndarray
    depth: np.ndarray
    funding: np.ndarray
    bid_uniforms: np.ndarray   # (B, venues, runs)
    ask_uniforms: np.ndarray
    size_uniforms: np.ndarray | None  # (B, 2 * venues, runs): bid fractions then ask fractions
    last: MarketState


def _ou(start: np.ndarray, phi, shocks: np.ndarray) -> np.ndarray:
    """x_j = phi * x_{j-1} + shocks_j, stacked with the start state at index 0."""
    out = np.empty((shocks.shape[0] + 1,) + start.shape)
    out[0] = start
    for j in range(shocks.shape[0]):
        np.multiply(out[j], phi, out=out[j + 1])
        out[j + 1] += shocks[j]
    return out


def _markov(start: np.ndarray, uniforms: np.ndarray, p_enter, p_exit) -> np.ndarray:
    """Two-state chain: off -> on with p_enter, on -> off with p_exit, per tick; start at index 0."""
    out = np.empty((uniforms.shape[0] + 1,) + start.shape, bool)
    out[0] = start
    enter = uniforms < p_enter
    stay = uniforms >= p_exit
    for j in range(uniforms.shape[0]):
        out[j + 1] = np.where(out[j], stay[j], enter[j])
    return out


def _hold(start: np.ndarray, fresh: np.ndarray, stale: np.ndarray) -> np.ndarray:
    """`fresh` (B+1, ...), changed in place, where a stale book keeps its previous value; start at index 0."""
    fresh[0] = start
    for j in range(1, fresh.shape[0]):
        np.copyto(fresh[j], fresh[j - 1], where=stale[j])
    return fresh


def _accumulate(start: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """x_j = x_{j-1} + steps_j, stacked with the start at index 0: the additions of np.cumsum in the same
    order, without its slow walk down the ticks axis of a (ticks, 1, runs) array."""
    out = np.empty((steps.shape[0] + 1,) + start.shape)
    out[0] = start
    for j in range(steps.shape[0]):
        np.add(out[j], steps[j], out=out[j + 1])
    return out


def simulate_block(state: MarketState, p: Params, normals: np.ndarray, uniforms: np.ndarray,
                   t0: int) -> MarketBlock:
    """Advance the market by B ticks from `state`, the market at tick t0; draws are (B, k, runs)."""
    mk = p.market
    v = p.n_venues
    dt = p.engine.tick_ms / 1000.0
    sqdt = np.sqrt(dt)
    n = normals.shape[0]
    eps, z_jump = normals[:, 0:1], normals[:, 1:2]
    z_basis, z_liq, z_fund = normals[:, 2:2 + v], normals[:, 2 + v:2 + 2 * v], normals[:, 2 + 2 * v:2 + 3 * v]
    u_regime, u_jump, u_outage = uniforms[:, 0:1], uniforms[:, 1:2], uniforms[:, 2:2 + v]

    stressed = _markov(state.stressed, u_regime, mk.regime.p_calm_to_stressed, mk.regime.p_stressed_to_calm)
    sigma = np.where(stressed[1:], mk.regime.sigma_stressed, mk.regime.sigma_calm) * mk.vol_scale
    jumps = (u_jump < mk.jumps.rate * dt) * (mk.jumps.mean + mk.jumps.std * z_jump)
    dx = (mk.mu - 0.5 * sigma * sigma) * dt + sigma * sqdt * eps + jumps
    # accumulate from the carried price so x_t = x_{t-1} + dx_t whatever the block boundaries
    x = _accumulate(state.x, dx)

    basis = _ou(state.basis, 1.0 - mk.basis.theta * dt,
                mk.basis.theta * dt * mk.basis.mean + mk.basis.sigma * sqdt * z_basis)
    ticks = np.arange(t0 + 1, t0 + n + 1).reshape(n, 1, 1)
    flipped = (mk.funding.flip_tick >= 0) & (ticks >= mk.funding.flip_tick)
    funding_mean = np.where(flipped, -1.0, 1.0) * mk.funding.mean
    funding = _ou(state.funding, 1.0 - mk.funding.theta * dt,
                  mk.funding.theta * dt * funding_mean + mk.funding.sigma * sqdt * z_fund)

    stale = _markov(state.stale, u_outage, mk.outage.p_start, 1.0 / mk.outage.mean_ticks)
    liquidity = np.exp(mk.spread.noise * z_liq)
    fresh_mid = np.exp(x + basis)
    fresh_spread = np.empty_like(fresh_mid)
    np.multiply(fresh_mid[1:] * (mk.spread.mean_bps / 1e4) * liquidity,
                np.where(stressed[1:], mk.spread.stressed_mult, 1.0), out=fresh_spread[1:])
    fresh_depth = np.empty_like(fresh_mid)
    np.multiply(mk.depth.mean_usd / liquidity, np.where(stressed[1:], mk.depth.stressed_mult, 1.0),
                out=fresh_depth[1:])

    mid = _hold(state.mid, fresh_mid, stale)
    spread = _hold(state.spread, fresh_spread, stale)
    depth = _hold(state.depth, fresh_depth, stale)
    age = np.empty_like(mid)
    age[0] = state.age
    for j in range(1, n + 1):
        np.add(age[j - 1], 1.0, out=age[j])
        age[j] *= stale[j]

    last = MarketState(x=x[-1], stressed=stressed[-1], basis=basis[-1], funding=funding[-1], stale=stale[-1],
                       age=age[-1], mid=mid[-1], spread=spread[-1], depth=depth[-1])
    return MarketBlock(stressed=stressed, x=x, stale=stale, age=age, mid=mid, spread=spread, depth=depth,
                       funding=funding, bid_uniforms=uniforms[:, 2 + v:2 + 2 * v],
                       ask_uniforms=uniforms[:, 2 + 2 * v:2 + 3 * v],
                       size_uniforms=uniforms[:, 2 + 3 * v:] if mk.fills.size_random else None, last=last)


def subset_block(block: MarketBlock, keep: np.ndarray) -> MarketBlock:
    """The block's arrays for the runs `keep` (the runs axis is last)."""
    values = {}
    for f in fields(block):
        value = getattr(block, f.name)
        if isinstance(value, MarketState):
            values[f.name] = value.subset(keep)
        else:
            values[f.name] = None if value is None else value[..., keep]
    return MarketBlock(**values)
