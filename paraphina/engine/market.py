"""Synthetic multi-venue market (ENGINE_SPEC section 2, version 2): one run's market, one tick at a time.

The market state is a record (`market_state_dtype`); `market_step` writes the next tick's state from the
current one, drawing from the run's stream: the volatility regime, jumps, the short-term alpha, each venue's
basis, book, funding and outages, and the tick's market orders (a Hawkes process per venue and side, tilted
by the alpha) whose signed notional moves the fair price permanently. The strategy acts on the current
state; its quotes fill from the tick's orders and against the mid of the next state.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from paraphina.engine.rng import normal, uniform

FUNDING_PERIOD_SEC = 8 * 3600.0  # funding rates are quoted per 8 hours
BUY, SELL = 0, 1                 # market-order sides: a buy lifts asks, a sell hits bids
POISSON_CHUNK = 30.0  # the largest mean one inversion handles
RECIPROCALS = 1.0 / np.maximum(np.arange(64.0), 1.0)  # 1 / k: the Poisson inversion multiplies, not divides
MAX_ORDERS = 32                  # orders per venue, side and tick kept one by one for the fills (more still move
                                 # the price; at the default rates 32 in one second has a probability below 1e-20)


def market_state_dtype(n_venues: int) -> np.dtype:
    """The record of one run's market at one tick, and the orders that arrived during it."""
    venue = (np.float64, (n_venues,))
    side = (np.float64, (n_venues, 2))
    return np.dtype([("x", np.float64), ("stressed", np.float64), ("alpha", np.float64), ("basis", venue),
                     ("funding", venue), ("outage", venue), ("age", venue), ("log_mid", venue), ("mid", venue),
                     ("half_spread", venue), ("depth", venue), ("intensity", side), ("orders", side),
                     ("order_usd", (np.float64, (n_venues, 2, MAX_ORDERS)))], align=True)


def fixed_draws(n_venues: int) -> tuple[int, int]:
    """(normals, uniforms) of a tick without market orders: the diffusion, the alpha and per venue basis,
    funding and book noise; the regime, the jump arrival and per venue the outage and one Poisson draw per
    side. Each order adds a normal (its size) and, per resting quote it could reach, a uniform."""
    return 2 + 3 * n_venues, 2 + 3 * n_venues


@njit(cache=True)
def initial_market(prm, st):
    """The market at tick 0: fair price s0, calm, alpha 0, every venue at its means, flow at its base rate."""
    st.x = math.log(prm.s0)
    st.stressed = 0.0
    st.alpha = 0.0
    for v in range(st.mid.shape[0]):
        st.basis[v] = prm.basis_mean[v]
        st.funding[v] = prm.funding_mean[v]
        st.outage[v] = 0.0
        st.age[v] = 0.0
        st.log_mid[v] = st.x + st.basis[v]
        st.mid[v] = math.exp(st.log_mid[v])
        st.half_spread[v] = prm.spread_half_bps[v] / 1e4
        st.depth[v] = prm.depth_mean_usd[v]
        for side in range(2):
            st.intensity[v, side] = prm.flow_rate[v]
            st.orders[v, side] = 0.0


@njit(cache=True, inline="always")
def markov_switch(on, u, p_enter, p_exit):
    """Two-state chain: off -> on with probability p_enter, on -> off with p_exit."""
    if on != 0.0:
        return 1.0 if u >= p_exit else 0.0
    return 1.0 if u < p_enter else 0.0


@njit(cache=True)
def poisson(s, mean):
    """(a Poisson count with this mean, next state), by inversion: one uniform and one exp per
    POISSON_CHUNK of mean (a sum of independent Poisson counts is Poisson; exp(-mean) would underflow for a
    mean above about 745)."""
    k = 0
    while mean > POISSON_CHUNK:
        part, s = poisson_small(s, POISSON_CHUNK)
        k += part
        mean -= POISSON_CHUNK
    part, s = poisson_small(s, mean)
    return k + part, s


@njit(cache=True)
def poisson_small(s, mean):
    """A Poisson count by inversion of its distribution function, for a mean whose exp(-mean) is normal."""
    u, s = uniform(s)
    p = math.exp(-mean)
    cumulative, k = p, 0
    while u > cumulative and p > 0.0:
        k += 1
        p *= mean * RECIPROCALS[k] if k < RECIPROCALS.shape[0] else mean / k
        cumulative += p
    return k, s


@njit(cache=True)
def base_intensity(prm, v, side, tilt, stressed):
    """Market orders per second on venue v's side before excitation: rate x tilt for buys and / tilt for
    sells, tilt = exp(kappa alpha) (buys lean with the alpha, sells against it), x (1 +- imbalance),
    x stressed_mult in the stressed regime."""
    if side == BUY:
        base = prm.flow_rate[v] * tilt * (1.0 + prm.flow_imbalance)
    else:
        base = prm.flow_rate[v] / tilt * (1.0 - prm.flow_imbalance)
    return base * (prm.flow_stressed_mult if stressed else 1.0)


@njit(cache=True)
def hawkes_step(prm, intensity, base, own, other, retained):
    """Next intensity of one side (ENGINE_SPEC 2.3): decay toward `base` (`retained` = exp(-decay dt) of the
    excess stays), plus `jump` per order of this tick on the same side and `cross` x `jump` per order on the
    other side (Bacry-Mastromatteo-Muzy 2015). One order triggers jump dt / (1 - retained) orders on its side
    in all, so the flow is stationary when jump (1 + cross) dt / (1 - exp(-decay dt)) < 1, which tends to the
    continuous-time ratio jump (1 + cross) / decay as dt -> 0 (config.loading.branching_ratio)."""
    return base + (intensity - base) * retained + prm.flow_jump * (own + prm.flow_cross * other)


@njit(cache=True)
def draw_orders(prm, cur, s, dt):
    """The tick's market orders per venue and side into `cur.orders` (count) and `cur.order_usd`
    (notionals, lognormal); returns (signed notional / depth summed over venues, state)."""
    flow = 0.0
    for v in range(cur.mid.shape[0]):
        for side in range(2):
            n, s = poisson(s, cur.intensity[v, side] * dt)
            notional = 0.0
            for i in range(n):
                z, s = normal(s)
                size = prm.flow_order_median_usd * math.exp(prm.flow_order_sigma * z)
                if i < MAX_ORDERS:
                    cur.order_usd[v, side, i] = size
                notional += size
            cur.orders[v, side] = n
            flow += (notional if side == BUY else -notional) / cur.depth[v]
    return flow, s


@njit(cache=True)
def market_step(prm, cur, nxt, s, tick, dt):
    """Write into `nxt` the market after tick `tick` (0-based) from `cur`, drawing the tick's market orders
    into `cur`; returns (stream state, the tick's jump of the log price, 0 without one).

    x_{t+1} = x_t + (mu + alpha) dt - sigma^2 dt / 2 + sigma sqrt(dt) eps + jump + impact_perm x flow, where
    flow is the tick's signed market-order notional over depth summed over venues (linear, Kyle 1985).
    """
    n_venues = cur.mid.shape[0]
    sqdt = math.sqrt(dt)
    flow, s = draw_orders(prm, cur, s, dt)
    u, s = uniform(s)
    nxt.stressed = markov_switch(cur.stressed, u, prm.regime_p_calm_to_stressed, prm.regime_p_stressed_to_calm)
    stressed = nxt.stressed != 0.0
    sigma = (prm.regime_sigma_stressed if stressed else prm.regime_sigma_calm) * prm.vol_scale
    eps, s = normal(s)
    jump = 0.0
    u, s = uniform(s)
    if u < prm.jumps_rate * dt:
        z, s = normal(s)
        jump = prm.jumps_mean + prm.jumps_std * z
    nxt.x = cur.x + ((prm.mu + cur.alpha - 0.5 * sigma * sigma) * dt + sigma * sqdt * eps + jump
                     + prm.flow_impact_perm * flow)
    z, s = normal(s)
    nxt.alpha = cur.alpha * (1.0 - prm.alpha_theta * dt) + prm.alpha_sigma * sqdt * z
    basis_phi = 1.0 - prm.basis_theta * dt
    funding_phi = 1.0 - prm.funding_theta * dt
    retained = math.exp(-prm.flow_decay * dt)
    tilt = math.exp(prm.flow_informed * cur.alpha)
    flipped = prm.funding_flip_tick >= 0.0 and tick + 1 >= prm.funding_flip_tick
    for v in range(n_venues):
        z, s = normal(s)
        nxt.basis[v] = cur.basis[v] * basis_phi + (prm.basis_theta * dt * prm.basis_mean[v]
                                                   + prm.basis_sigma * sqdt * z)
        z, s = normal(s)
        funding_mean = -prm.funding_mean[v] if flipped else prm.funding_mean[v]
        nxt.funding[v] = cur.funding[v] * funding_phi + (prm.funding_theta * dt * funding_mean
                                                         + prm.funding_sigma * sqdt * z)
        for side in range(2):
            base = base_intensity(prm, v, side, tilt, stressed)
            nxt.intensity[v, side] = hawkes_step(prm, cur.intensity[v, side], base, cur.orders[v, side],
                                                 cur.orders[v, 1 - side], retained)
        u, s = uniform(s)
        nxt.outage[v] = markov_switch(cur.outage[v], u, prm.outage_p_start, 1.0 / prm.outage_mean_ticks)
        z, s = normal(s)
        if nxt.outage[v] != 0.0:  # a venue in an outage keeps its last book
            nxt.log_mid[v], nxt.mid[v] = cur.log_mid[v], cur.mid[v]
            nxt.half_spread[v], nxt.depth[v] = cur.half_spread[v], cur.depth[v]
            nxt.age[v] = cur.age[v] + 1.0
        else:
            liquidity = math.exp(prm.spread_noise * z)
            nxt.log_mid[v] = nxt.x + nxt.basis[v]
            nxt.mid[v] = math.exp(nxt.log_mid[v])
            nxt.half_spread[v] = prm.spread_half_bps[v] / 1e4 * liquidity * (
                prm.spread_stressed_mult if stressed else 1.0)
            nxt.depth[v] = prm.depth_mean_usd[v] / liquidity * (prm.depth_stressed_mult if stressed else 1.0)
            nxt.age[v] = 0.0
    return s, jump
