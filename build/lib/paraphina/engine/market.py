"""Synthetic multi-venue market (ENGINE_SPEC section 2): one run's market, one tick at a time.

The market state is a record (`market_state_dtype`); `market_step` writes the next tick's state from the
current one and the tick's draws. The strategy acts on the current state; its quotes fill against the mid of
the next one.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

FUNDING_PERIOD_SEC = 8 * 3600.0  # funding rates are quoted per 8 hours

# The draws of one tick, in stream order: normals, then uniforms.
N_FAIR_NORMALS = 2          # the fair price's diffusion and jump size
NORMALS_PER_VENUE = 3       # basis, liquidity, funding
N_FAIR_UNIFORMS = 2         # regime switch, jump arrival
UNIFORMS_PER_VENUE = 3      # outage, bid fill, ask fill
SIZE_UNIFORMS_PER_VENUE = 2  # bid and ask fill fractions (market.fills.size_random)


def market_state_dtype(n_venues: int) -> np.dtype:
    """The record of one run's market at one tick."""
    venue = (np.float64, (n_venues,))
    return np.dtype([("x", np.float64), ("stressed", np.float64), ("basis", venue), ("funding", venue),
                     ("outage", venue), ("age", venue), ("log_mid", venue), ("mid", venue), ("spread", venue),
                     ("depth", venue)], align=True)


@njit(cache=True)
def draw_counts(n_venues, size_random):
    """(normals, uniforms) one run draws per tick."""
    return (N_FAIR_NORMALS + NORMALS_PER_VENUE * n_venues,
            N_FAIR_UNIFORMS + UNIFORMS_PER_VENUE * n_venues + (SIZE_UNIFORMS_PER_VENUE * n_venues if size_random else 0))


@njit(cache=True)
def initial_market(prm, st):
    """The market at tick 0: fair price s0, calm, every venue at its mean basis, funding, spread and depth."""
    st.x = math.log(prm.s0)
    st.stressed = 0.0
    for v in range(st.mid.shape[0]):
        st.basis[v] = prm.basis_mean[v]
        st.funding[v] = prm.funding_mean[v]
        st.outage[v] = 0.0
        st.age[v] = 0.0
        st.log_mid[v] = st.x + st.basis[v]
        st.mid[v] = math.exp(st.log_mid[v])
        st.spread[v] = st.mid[v] * prm.spread_mean_bps[v] / 1e4
        st.depth[v] = prm.depth_mean_usd[v]


@njit(cache=True, inline="always")
def markov_switch(on, u, p_enter, p_exit):
    """Two-state chain: off -> on with probability p_enter, on -> off with p_exit."""
    if on != 0.0:
        return 1.0 if u >= p_exit else 0.0
    return 1.0 if u < p_enter else 0.0


@njit(cache=True)
def market_step(prm, cur, nxt, normals, uniforms, tick, dt):
    """Write into `nxt` the market after tick `tick` (0-based) from `cur` and the tick's draws.

    normals: diffusion, jump size, then per venue basis, liquidity, funding (blocks of venues);
    uniforms: regime, jump arrival, then per venue outage (bid and ask fill draws follow, for the fills).
    """
    n_venues = cur.mid.shape[0]
    sqdt = math.sqrt(dt)
    nxt.stressed = markov_switch(cur.stressed, uniforms[0], prm.regime_p_calm_to_stressed,
                                 prm.regime_p_stressed_to_calm)
    sigma = (prm.regime_sigma_stressed if nxt.stressed != 0.0 else prm.regime_sigma_calm) * prm.vol_scale
    jump = prm.jumps_mean + prm.jumps_std * normals[1] if uniforms[1] < prm.jumps_rate * dt else 0.0
    nxt.x = cur.x + ((prm.mu - 0.5 * sigma * sigma) * dt + sigma * sqdt * normals[0] + jump)
    basis_phi = 1.0 - prm.basis_theta * dt
    funding_phi = 1.0 - prm.funding_theta * dt
    flipped = prm.funding_flip_tick >= 0.0 and tick + 1 >= prm.funding_flip_tick
    stressed = nxt.stressed != 0.0
    for v in range(n_venues):
        z_basis = normals[N_FAIR_NORMALS + v]
        z_liq = normals[N_FAIR_NORMALS + n_venues + v]
        z_fund = normals[N_FAIR_NORMALS + 2 * n_venues + v]
        nxt.basis[v] = cur.basis[v] * basis_phi + (prm.basis_theta * dt * prm.basis_mean[v]
                                                   + prm.basis_sigma * sqdt * z_basis)
        funding_mean = -prm.funding_mean[v] if flipped else prm.funding_mean[v]
        nxt.funding[v] = cur.funding[v] * funding_phi + (prm.funding_theta * dt * funding_mean
                                                         + prm.funding_sigma * sqdt * z_fund)
        nxt.outage[v] = markov_switch(cur.outage[v], uniforms[N_FAIR_UNIFORMS + v], prm.outage_p_start,
                                      1.0 / prm.outage_mean_ticks)
        if nxt.outage[v] != 0.0:  # a venue in an outage keeps its last book
            nxt.log_mid[v], nxt.mid[v] = cur.log_mid[v], cur.mid[v]
            nxt.spread[v], nxt.depth[v] = cur.spread[v], cur.depth[v]
            nxt.age[v] = cur.age[v] + 1.0
        else:
            liquidity = math.exp(prm.spread_noise * z_liq)
            nxt.log_mid[v] = nxt.x + nxt.basis[v]
            nxt.mid[v] = math.exp(nxt.log_mid[v])
            nxt.spread[v] = nxt.mid[v] * (prm.spread_mean_bps[v] / 1e4) * liquidity * (
                prm.spread_stressed_mult if stressed else 1.0)
            nxt.depth[v] = prm.depth_mean_usd[v] / liquidity * (prm.depth_stressed_mult if stressed else 1.0)
            nxt.age[v] = 0.0
