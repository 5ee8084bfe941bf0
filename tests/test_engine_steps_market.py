"""Hand-worked cases for the market's step functions (ENGINE_SPEC section 2; `paraphina.engine.market`).

`market_step(prm, cur, nxt, normals, uniforms, tick, dt)` writes the next tick's market from the current one and
the tick's draws: normals (diffusion, jump size, then per venue basis, liquidity, funding), uniforms (regime,
jump arrival, then per venue outage). Draws are set by hand here so every number can be worked out: a normal
of 0 and a uniform of 0.5 are "nothing happens" draws for the default config (no switch, no jump, no outage).
"""
from __future__ import annotations

import copy
import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paraphina.engine.market import (FUNDING_PERIOD_SEC, draw_counts, initial_market, market_state_dtype,
                                     market_step, markov_switch)
from paraphina.engine.params import build_params

N = 5                       # venues of the default config
BASIS_MEAN = np.array([0.0, 0.0002, -0.0002, 0.0001, -0.0001])
SPREAD_BPS = np.array([4.0, 3.0, 5.0, 5.0, 6.0])
DEPTH = np.array([2.0e6, 4.0e6, 1.5e6, 1.0e6, 1.0e6])
FUNDING_MEAN = np.array([1.0e-4, 1.0e-4, 5.0e-5, 1.0e-4, 1.0e-4])


def params_of(plain_cfg, **fields):
    p = build_params(copy.deepcopy(plain_cfg["engine"]), copy.deepcopy(plain_cfg["market"]), 1)
    for name, value in fields.items():
        p.table[name] = value
    return p.table[0]


@pytest.fixture(scope="module")
def prm(plain_cfg):
    return params_of(plain_cfg)


def path(prm, ticks):
    """ticks + 1 market records, the first the initial market."""
    states = np.zeros(ticks + 1, market_state_dtype(N))
    initial_market(prm, states[0])
    return states


def draws(diffusion=0.0, jump_size=0.0, basis=0.0, liquidity=0.0, funding=0.0, regime=0.5, jump=0.5, outage=0.5):
    """One tick's draws in stream order; per-venue draws are a scalar for every venue or a list of 5."""
    normals = np.concatenate([[diffusion, jump_size], np.broadcast_to(basis, N), np.broadcast_to(liquidity, N),
                              np.broadcast_to(funding, N)]).astype(float)
    uniforms = np.concatenate([[regime, jump], np.broadcast_to(outage, N), np.full(2 * N, 0.5)]).astype(float)
    assert (len(normals), len(uniforms)) == draw_counts(N, False)
    return normals, uniforms


def step(prm, states, t, dt=1.0, **draw):
    market_step(prm, states[t], states[t + 1], *draws(**draw), t, dt)
    return states[t + 1]


def close(a, b, rel=1e-13, abs_=0.0):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


def test_config_market_defaults(plain_cfg):
    m = plain_cfg["market"]
    assert (m["s0"], m["mu"], m["vol_scale"]) == (250.0, 0.0, 1.0)
    assert m["regime"] == {"sigma_calm": 0.0006, "sigma_stressed": 0.002, "p_calm_to_stressed": 0.001,
                           "p_stressed_to_calm": 0.01}
    assert m["basis"]["mean"] == BASIS_MEAN.tolist() and m["spread"]["mean_bps"] == SPREAD_BPS.tolist()
    assert m["depth"]["mean_usd"] == DEPTH.tolist() and m["funding"]["mean"] == FUNDING_MEAN.tolist()
    assert (m["spread"]["stressed_mult"], m["depth"]["stressed_mult"], m["spread"]["noise"]) == (2.0, 0.5, 0.2)
    assert (m["outage"]["p_start"], m["outage"]["mean_ticks"], m["funding"]["flip_tick"]) == (0.0005, 20.0, -1)
    assert FUNDING_PERIOD_SEC == 28800.0


def test_initial_market(prm):
    # x = ln 250, calm; every venue at its mean: mid_v = 250 exp(b_v), spread_v = mid_v bps_v / 1e4, depth mean
    st0 = path(prm, 0)[0]
    assert st0["x"] == math.log(250.0) and st0["stressed"] == 0.0
    assert st0["basis"].tolist() == BASIS_MEAN.tolist() and st0["funding"].tolist() == FUNDING_MEAN.tolist()
    assert st0["log_mid"].tolist() == (math.log(250.0) + BASIS_MEAN).tolist()
    close(st0["mid"], 250.0 * np.exp(BASIS_MEAN))
    close(st0["spread"], 250.0 * np.exp(BASIS_MEAN) * SPREAD_BPS / 1e4)
    assert st0["depth"].tolist() == DEPTH.tolist()
    assert st0["outage"].tolist() == [0.0] * N and st0["age"].tolist() == [0.0] * N
    # venue 1: 250 e^0.0002 = 250.050005; spread 3 bps of it = 0.0750150
    assert st0["mid"][1] == pytest.approx(250.050005, rel=1e-9)
    assert st0["spread"][1] == pytest.approx(0.0750150015, rel=1e-9)


def test_markov_switch_hand_cases():
    # off -> on iff u < p_enter; on -> off iff u < p_exit (stays on iff u >= p_exit)
    assert markov_switch(0.0, 0.0009, 0.001, 0.01) == 1.0
    assert markov_switch(0.0, 0.001, 0.001, 0.01) == 0.0
    assert markov_switch(1.0, 0.0099, 0.001, 0.01) == 0.0
    assert markov_switch(1.0, 0.01, 0.001, 0.01) == 1.0
    assert markov_switch(1.0, 0.5, 0.001, 0.01) == 1.0 and markov_switch(0.0, 0.5, 0.001, 0.01) == 0.0


@numba.njit(cache=True)
def _chain(uniforms, p_enter, p_exit):
    """(fraction of ticks on, number of completed on-spells, their total length) of a chain driven by uniforms."""
    on, ticks_on, spells, spell_ticks, current = 0.0, 0, 0, 0, 0
    for u in uniforms:
        nxt = markov_switch(on, u, p_enter, p_exit)
        if nxt != 0.0:
            ticks_on += 1
            current += 1
        elif on != 0.0:
            spells += 1
            spell_ticks += current
            current = 0
        on = nxt
    return ticks_on / len(uniforms), spells, spell_ticks


def test_markov_chain_stationary_share_and_spell_length():
    # outages: p_start 0.0005, exit 1 / 20 per tick: spells last 20 ticks on average (geometric, sd ~19.5), and
    # the stationary share of ticks in an outage is 0.0005 / (0.0005 + 0.05) = 0.990 %
    u = np.random.default_rng(17).random(4_000_000)
    share, spells, spell_ticks = _chain(u, 0.0005, 1.0 / 20.0)
    assert spells > 1000
    mean_len = spell_ticks / spells
    assert abs(mean_len - 20.0) < 4 * math.sqrt(0.95 / 0.05 ** 2 / spells)
    assert share == pytest.approx(0.0005 / 0.0505, rel=0.1)


def test_calm_step_without_shocks(prm):
    # normals 0, uniforms 0.5: stays calm (0.5 >= 0.001), no jump (0.5 >= 0.0005), no outage (0.5 >= 0.0005).
    # x' = ln 250 + (0 - 0.0006^2 / 2) * 1 = ln 250 - 1.8e-7; basis' = 0.95 b + 0.05 b = b; funding' = f;
    # books fresh (age 0): log_mid = x' + b, spread = mid bps / 1e4 (liquidity e^0 = 1), depth = mean
    states = path(prm, 1)
    nxt = step(prm, states, 0)
    assert nxt["stressed"] == 0.0
    assert nxt["x"] == pytest.approx(math.log(250.0) - 1.8e-7, abs=1e-15)
    close(nxt["basis"], BASIS_MEAN, rel=1e-14)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    assert nxt["outage"].tolist() == [0.0] * N and nxt["age"].tolist() == [0.0] * N
    assert nxt["log_mid"].tolist() == (nxt["x"] + nxt["basis"]).tolist()
    close(nxt["mid"], np.exp(nxt["log_mid"]), rel=1e-15)
    close(nxt["spread"], nxt["mid"] * SPREAD_BPS / 1e4, rel=1e-14)
    close(nxt["depth"], DEPTH, rel=1e-15)


def test_diffusion_drift_vol_scale_and_jump(plain_cfg, prm):
    x0 = math.log(250.0)
    # diffusion normal 1: + 0.0006 sqrt(1)
    assert step(prm, path(prm, 1), 0, diffusion=1.0)["x"] == pytest.approx(x0 - 1.8e-7 + 0.0006, abs=1e-15)
    # dt 4: drift -1.8e-7 * 4, diffusion 0.0006 * 2 = 0.0012
    assert step(prm, path(prm, 1), 0, dt=4.0, diffusion=1.0)["x"] == pytest.approx(x0 - 7.2e-7 + 0.0012,
                                                                                   abs=1e-15)
    # mu 1e-4 per s and vol_scale 2 (sigma 0.0012): x' = x + 1e-4 - 0.0012^2 / 2 - 0.0012 (normal -1)
    scaled = params_of(plain_cfg, mu=1e-4, vol_scale=2.0)
    assert step(scaled, path(scaled, 1), 0, diffusion=-1.0)["x"] == pytest.approx(x0 + 1e-4 - 7.2e-7 - 0.0012,
                                                                                  abs=1e-15)
    # a jump arrives when u < rate dt = 0.0005: size mean + std z = 0 + 0.04 * 1.5 = 0.06
    assert step(prm, path(prm, 1), 0, jump=0.0004, jump_size=1.5)["x"] == pytest.approx(x0 - 1.8e-7 + 0.06,
                                                                                         abs=1e-15)
    assert step(prm, path(prm, 1), 0, jump=0.0005, jump_size=1.5)["x"] == pytest.approx(x0 - 1.8e-7, abs=1e-15)


def test_basis_and_funding_ou_steps(prm):
    # basis normal 1 on every venue: b' = b + 0.0002 sqrt(1) (0.95 b + 0.05 b = b); funding normal -2:
    # f' = f - 2e-5 (sigma 1e-5); the mids follow the new basis: log_mid = x' + b'
    nxt = step(prm, path(prm, 1), 0, basis=1.0, funding=-2.0)
    close(nxt["basis"], BASIS_MEAN + 0.0002, rel=1e-12)
    close(nxt["funding"], FUNDING_MEAN - 2e-5, rel=1e-12)
    assert nxt["log_mid"].tolist() == (nxt["x"] + nxt["basis"]).tolist()
    # mean reversion: a basis 0.001 above the mean of venue 0 (0) moves 5 % of the way back: 0.00095
    states = path(prm, 1)
    states[0]["basis"][0] = 0.001
    assert step(prm, states, 0)["basis"][0] == pytest.approx(0.00095, rel=1e-12)


def test_stressed_regime_multiplies_spread_and_divides_depth(prm):
    # u = 0 < 0.001 enters the stressed regime: sigma 0.002 (x' = ln 250 - 2e-6), spread x2, depth x0.5
    states = path(prm, 3)
    nxt = step(prm, states, 0, regime=0.0)
    assert nxt["stressed"] == 1.0
    assert nxt["x"] == pytest.approx(math.log(250.0) - 2e-6, abs=1e-15)
    close(nxt["spread"], nxt["mid"] * SPREAD_BPS / 1e4 * 2.0, rel=1e-14)
    close(nxt["depth"], DEPTH * 0.5, rel=1e-15)
    # stays stressed while u >= p_exit 0.01, with liquidity noise z = 1 on top: spread x2 e^0.2, depth x0.5 / e^0.2
    nxt = step(prm, states, 1, regime=0.01, liquidity=1.0)
    assert nxt["stressed"] == 1.0
    close(nxt["spread"], nxt["mid"] * SPREAD_BPS / 1e4 * 2.0 * math.exp(0.2), rel=1e-14)
    close(nxt["depth"], DEPTH * 0.5 / math.exp(0.2), rel=1e-14)
    # leaves it when u < 0.01: calm book again
    nxt = step(prm, states, 2, regime=0.005)
    assert nxt["stressed"] == 0.0
    close(nxt["depth"], DEPTH, rel=1e-15)
    close(nxt["spread"], nxt["mid"] * SPREAD_BPS / 1e4, rel=1e-14)


def test_outage_holds_the_book_and_its_age_grows(prm):
    # venue 1 goes down at tick 0 (u = 0 < 0.0005), stays down on ticks 1-2 (u = 0.5 >= 1/20) while the fair
    # price moves (diffusion normals 2), and comes back at tick 3 (u = 0.01 < 0.05) with a fresh book
    states = path(prm, 4)
    book = {k: states[0][k][1] for k in ("log_mid", "mid", "spread", "depth")}
    down = [0.5, 0.0, 0.5, 0.5, 0.5]
    for t in range(3):
        nxt = step(prm, states, t, diffusion=2.0, liquidity=0.5, outage=down)
        down = [0.5] * N
        assert nxt["outage"][1] == 1.0 and nxt["age"][1] == t + 1.0
        for k, v in book.items():
            assert nxt[k][1] == v, k
        # the other venues follow the market
        assert nxt["age"][[0, 2, 3, 4]].tolist() == [0.0] * 4
        assert nxt["log_mid"][0] == nxt["x"] + nxt["basis"][0]
    assert states[3]["x"] > states[0]["x"] + 0.003  # the fair price moved while venue 1 was stale
    # its hidden basis kept evolving; on return the book is fresh: age 0, log_mid = x + basis, new spread / depth
    nxt = step(prm, states, 3, outage=[0.5, 0.01, 0.5, 0.5, 0.5])
    assert nxt["outage"][1] == 0.0 and nxt["age"][1] == 0.0
    assert nxt["log_mid"][1] == nxt["x"] + nxt["basis"][1]
    assert nxt["mid"][1] == pytest.approx(math.exp(nxt["log_mid"][1]), rel=1e-15)
    assert nxt["mid"][1] != book["mid"]
    assert nxt["depth"][1] == pytest.approx(DEPTH[1], rel=1e-15)  # liquidity normal 0 again


def test_funding_mean_flips_sign_from_flip_tick(plain_cfg):
    # flip_tick 10: market_step of tick t writes tick t + 1, so the step of tick 9 is the first with mean -m.
    # From f = m: f' = 0.999 m + 0.001 m = m before; 0.999 m - 0.001 m = 0.998 m from the flip on
    flip = params_of(plain_cfg, funding_flip_tick=10.0)
    states = path(flip, 0)
    nxt = np.zeros(1, market_state_dtype(N))[0]
    market_step(flip, states[0], nxt, *draws(), 8, 1.0)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    market_step(flip, states[0], nxt, *draws(), 9, 1.0)
    close(nxt["funding"], 0.998 * FUNDING_MEAN, rel=1e-12)
    # without a flip (-1) it never flips
    never = params_of(plain_cfg)
    market_step(never, states[0], nxt, *draws(), 10 ** 7, 1.0)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    # after n ticks from the flip with no noise: f = -m + 2 m 0.999^n; n = 1000: m (2 * 0.36770 - 1) < 0
    states = path(flip, 1000)
    for t in range(9, 9 + 1000):
        i = t - 9
        market_step(flip, states[i], states[i + 1], *draws(), t, 1.0)
    close(states[1000]["funding"], FUNDING_MEAN * (2 * 0.999 ** 1000 - 1), rel=1e-9)
    assert np.all(states[1000]["funding"] < 0)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(normals=st.lists(st.floats(-5.0, 5.0), min_size=17, max_size=17),
       uniforms=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=7, max_size=7),
       stressed=st.booleans(), outage=st.lists(st.booleans(), min_size=N, max_size=N),
       tick=st.integers(0, 100_000))
def test_market_step_invariants(prm, normals, uniforms, stressed, outage, tick):
    # whatever the draws: a fresh book has log_mid = x + basis, mid = exp(log_mid), a positive spread and depth,
    # age 0; a venue in an outage keeps its book and ages by one tick; the regime is 0 or 1
    states = path(prm, 1)
    states[0]["stressed"] = float(stressed)
    states[0]["outage"] = np.array(outage, float)
    states[0]["age"] = np.array(outage, float) * 3.0
    market_step(prm, states[0], states[1], np.array(normals), np.array(uniforms + [0.5] * (2 * N)), tick, 1.0)
    cur, nxt = states[0], states[1]
    assert nxt["stressed"] in (0.0, 1.0)
    for v in range(N):
        if nxt["outage"][v] != 0.0:
            assert nxt["age"][v] == cur["age"][v] + 1.0
            for k in ("log_mid", "mid", "spread", "depth"):
                assert nxt[k][v] == cur[k][v]
        else:
            assert nxt["age"][v] == 0.0
            assert nxt["log_mid"][v] == nxt["x"] + nxt["basis"][v]
            assert nxt["mid"][v] == pytest.approx(math.exp(nxt["log_mid"][v]), rel=1e-15)
            assert nxt["spread"][v] > 0.0 and nxt["depth"][v] > 0.0
            mult = 2.0 if nxt["stressed"] else 1.0
            # spread and depth move opposite ways with the same liquidity draw: spread x depth is fixed
            assert nxt["spread"][v] * nxt["depth"][v] == pytest.approx(
                nxt["mid"][v] * SPREAD_BPS[v] / 1e4 * DEPTH[v] * mult * (0.5 if nxt["stressed"] else 1.0), rel=1e-12)
