"""Hand-worked cases for the market's step functions (ENGINE_SPEC section 2, version 2; `paraphina.engine.market`).

`market_step(prm, cur, nxt, stream, tick, dt)` writes the next tick's market from the current one, drawing from
the run's stream (the tick's market orders into `cur`, then the regime, diffusion, jump, alpha and per venue
basis, funding, outage and book noise). The hand cases switch the randomness off through the parameters (zero
volatilities and noises, probabilities 0 or 1), so every number can be worked out whatever the draws; the
record fields each case depends on are set explicitly, never read from today's conf values. The order flow
(Hawkes intensities, orders, impact) is in tests/test_market_flow.py.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from engine_records import record
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paraphina.engine.market import (FUNDING_PERIOD_SEC, initial_market, market_state_dtype, market_step,
                                     markov_switch)
from paraphina.engine.rng import seed_states

N = 5                       # venues of the composed config (checked below)
BASIS_MEAN = np.array([0.0, 2e-5, -2e-5, 1e-5, -1e-5])
HALF_BPS = np.array([1.5, 1.0, 2.0, 2.0, 2.5])
DEPTH = np.array([2.0e6, 4.0e6, 1.5e6, 1.0e6, 1.0e6])
FUNDING_MEAN = np.array([1.0e-4, 1.0e-4, 5.0e-5, 1.0e-4, 1.0e-4])
# The market's means, set explicitly (the hand numbers depend on them, not on conf/market/default.yaml).
MEANS = dict(s0=250.0, basis_mean=BASIS_MEAN, spread_half_bps=HALF_BPS, depth_mean_usd=DEPTH,
             funding_mean=FUNDING_MEAN, basis_theta=0.05, funding_theta=0.001, spread_stressed_mult=2.0,
             depth_stressed_mult=0.5, funding_flip_tick=-1.0, flow_rate=[0.0] * N, alpha_theta=0.02)
# Nothing random happens: no volatility, jumps, alpha noise, basis / funding / book noise, switches or orders.
QUIET = dict(MEANS, mu=0.0, vol_scale=1.0, regime_sigma_calm=0.0, regime_sigma_stressed=0.0,
             regime_p_calm_to_stressed=0.0, regime_p_stressed_to_calm=0.0, jumps_rate=0.0, jumps_mean=0.0,
             jumps_std=0.0, alpha_sigma=0.0, basis_sigma=0.0, funding_sigma=0.0, spread_noise=0.0,
             outage_p_start=0.0, outage_mean_ticks=20.0)


@pytest.fixture(scope="module")
def quiet(plain_cfg):
    assert len(plain_cfg["engine"]["venues"]["names"]) == N
    return record(plain_cfg, **QUIET)


def path(prm, ticks):
    """ticks + 1 market records, the first the initial market."""
    states = np.zeros(ticks + 1, market_state_dtype(N))
    initial_market(prm, states[0])
    return states


def stream_of(seed):
    return tuple(np.uint64(x) for x in seed_states(np.array([seed]))[0])


def step(prm, states, t, dt=1.0, seed=0):
    """market_step of tick t from states[t] into states[t + 1]: (next record, the tick's jump)."""
    _, jump = market_step(prm, states[t], states[t + 1], stream_of(seed + t), t, dt)
    return states[t + 1], float(jump)


def close(a, b, rel=1e-13, abs_=0.0):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


def test_funding_period_is_eight_hours():
    assert FUNDING_PERIOD_SEC == 8 * 3600.0


def test_initial_market(quiet):
    # x = ln 250, calm, alpha 0; every venue at its means: mid_v = 250 exp(b_v), half-spread bps_v / 1e4 of mid
    # (a fraction), depth mean; the flow at its base rate (0 here), no orders yet
    st0 = path(quiet, 0)[0]
    assert st0["x"] == math.log(250.0) and st0["stressed"] == 0.0 and st0["alpha"] == 0.0
    assert st0["basis"].tolist() == BASIS_MEAN.tolist() and st0["funding"].tolist() == FUNDING_MEAN.tolist()
    assert st0["log_mid"].tolist() == (math.log(250.0) + BASIS_MEAN).tolist()
    close(st0["mid"], 250.0 * np.exp(BASIS_MEAN))
    close(st0["half_spread"], HALF_BPS / 1e4)
    assert st0["depth"].tolist() == DEPTH.tolist()
    assert st0["outage"].tolist() == [0.0] * N and st0["age"].tolist() == [0.0] * N
    # venue 1: 250 e^0.00002 = 250.0050000500
    assert st0["mid"][1] == pytest.approx(250.00500005, rel=1e-10)


def test_initial_intensity_is_the_base_rate(plain_cfg):
    prm = record(plain_cfg, **{**QUIET, "flow_rate": [0.5, 0.8, 0.4, 0.3, 0.3]})
    st0 = path(prm, 0)[0]
    assert st0["intensity"].tolist() == [[r, r] for r in (0.5, 0.8, 0.4, 0.3, 0.3)]
    assert st0["orders"].tolist() == [[0.0, 0.0]] * N


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
    # p_enter 0.0005, exit 1 / 20 per tick: spells last 20 ticks on average (geometric, sd ~19.5), and the
    # stationary share of ticks on is 0.0005 / (0.0005 + 0.05) = 0.990 %
    u = np.random.default_rng(17).random(4_000_000)
    share, spells, spell_ticks = _chain(u, 0.0005, 1.0 / 20.0)
    assert spells > 1000
    mean_len = spell_ticks / spells
    assert abs(mean_len - 20.0) < 4 * math.sqrt(0.95 / 0.05 ** 2 / spells)
    assert share == pytest.approx(0.0005 / 0.0505, rel=0.1)


def test_quiet_step_changes_nothing(quiet):
    # no volatility, no drift, no jump, no orders: x' = x; basis' = (1 - 0.05) b + 0.05 b = b; funding' = f;
    # books fresh (age 0): log_mid = x' + b, half-spread bps / 1e4 (noise e^0 = 1), depth the mean
    states = path(quiet, 1)
    nxt, jump = step(quiet, states, 0)
    assert jump == 0.0 and nxt["stressed"] == 0.0
    assert nxt["x"] == math.log(250.0)
    close(nxt["basis"], BASIS_MEAN, rel=1e-14)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    assert nxt["outage"].tolist() == [0.0] * N and nxt["age"].tolist() == [0.0] * N
    assert nxt["log_mid"].tolist() == (nxt["x"] + nxt["basis"]).tolist()
    close(nxt["mid"], np.exp(nxt["log_mid"]), rel=1e-15)
    close(nxt["half_spread"], HALF_BPS / 1e4, rel=1e-14)
    close(nxt["depth"], DEPTH, rel=1e-15)
    assert states[0]["orders"].sum() == 0.0


def test_drift_and_alpha(plain_cfg):
    # mu 1e-4 per s, dt 4 s: x' = x + 4e-4. With alpha a = 1e-5 per s on the current tick: x' = x + (mu + a) dt
    # = x + 4.4e-4, and the alpha decays: a' = a (1 - theta dt) = 1e-5 (1 - 0.02 * 4) = 9.2e-6
    prm = record(plain_cfg, **{**QUIET, "mu": 1e-4})
    states = path(prm, 1)
    nxt, _ = step(prm, states, 0, dt=4.0)
    assert nxt["x"] == pytest.approx(math.log(250.0) + 4e-4, abs=1e-15)
    states = path(prm, 1)
    states[0]["alpha"] = 1e-5
    nxt, _ = step(prm, states, 0, dt=4.0)
    assert nxt["x"] == pytest.approx(math.log(250.0) + 4.4e-4, abs=1e-15)
    assert nxt["alpha"] == pytest.approx(9.2e-6, rel=1e-12)


def test_diffusion_is_sigma_sqrt_dt_times_one_normal(plain_cfg):
    # with sigma > 0 and nothing else: x' - x = -sigma^2 dt / 2 + sigma sqrt(dt) eps. The same stream gives the
    # same eps whatever sigma, vol_scale and dt, so eps recovered from x' is the same number in every case:
    # sigma 1.5e-4 (dt 1), vol_scale 2 (sigma 3e-4), dt 4 (sqrt 2) and the stressed regime (6e-4, entered
    # with probability 1)
    cases = [(dict(regime_sigma_calm=1.5e-4), 1.5e-4, 1.0),
             (dict(regime_sigma_calm=1.5e-4, vol_scale=2.0), 3e-4, 1.0),
             (dict(regime_sigma_calm=1.5e-4), 1.5e-4, 4.0),
             (dict(regime_sigma_stressed=6e-4, regime_p_calm_to_stressed=1.0), 6e-4, 1.0)]
    for seed in (3, 4, 5):
        eps = []
        for fields, sigma, dt in cases:
            prm = record(plain_cfg, **{**QUIET, **fields})
            states = path(prm, 1)
            nxt, _ = step(prm, states, 0, dt=dt, seed=seed)
            eps.append((nxt["x"] - math.log(250.0) + 0.5 * sigma * sigma * dt) / (sigma * math.sqrt(dt)))
        assert max(eps) - min(eps) < 1e-7, eps
        assert eps[0] != 0.0


def test_diffusion_normals_are_standard_normal(plain_cfg):
    # 20,000 steps at sigma 1.5e-4: the recovered eps have mean 0 and variance 1 (4 standard errors)
    prm = record(plain_cfg, **{**QUIET, "regime_sigma_calm": 1.5e-4})
    n = 20_000
    states = path(prm, 1)
    nxt = np.zeros(1, market_state_dtype(N))[0]
    s = stream_of(11)
    eps = np.empty(n)
    for i in range(n):
        states[0]["x"] = math.log(250.0)
        s, _ = market_step(prm, states[0], nxt, s, i, 1.0)
        s = tuple(np.uint64(x) for x in s)
        eps[i] = (nxt["x"] - math.log(250.0) + 0.5 * 1.5e-4 ** 2) / 1.5e-4
    assert abs(eps.mean()) < 4 / math.sqrt(n)
    assert abs(eps.var() - 1.0) < 4 * math.sqrt(2 / n)


def test_jumps(plain_cfg, quiet):
    # rate x dt >= 1: a jump every tick (u < 1); size mean + std z = 0.01 exactly with std 0
    prm = record(plain_cfg, **{**QUIET, "jumps_rate": 1.0, "jumps_mean": 0.01, "jumps_std": 0.0})
    states = path(prm, 1)
    nxt, jump = step(prm, states, 0)
    assert jump == 0.01
    assert nxt["x"] == pytest.approx(math.log(250.0) + 0.01, abs=1e-15)
    # the mids follow the fair price: every venue's mid up by e^0.01
    close(nxt["mid"], 250.0 * np.exp(BASIS_MEAN + 0.01), rel=1e-13)
    # rate 0.5 per s and dt 2 s is a jump for sure too; rate 0 never jumps
    prm = record(plain_cfg, **{**QUIET, "jumps_rate": 0.5, "jumps_mean": -0.02, "jumps_std": 0.0})
    assert step(prm, path(prm, 1), 0, dt=2.0)[1] == -0.02
    assert step(quiet, path(quiet, 1), 0)[1] == 0.0


def test_jump_frequency_and_size(plain_cfg):
    # rate 0.2 per tick, size N(0, 0.01): about 20 % of 20,000 ticks jump (4 s.e.), and their sizes have std 0.01
    prm = record(plain_cfg, **{**QUIET, "jumps_rate": 0.2, "jumps_mean": 0.0, "jumps_std": 0.01})
    states = path(prm, 1)
    nxt = np.zeros(1, market_state_dtype(N))[0]
    s = stream_of(21)
    jumps = []
    n = 20_000
    for i in range(n):
        s, jump = market_step(prm, states[0], nxt, s, i, 1.0)
        s = tuple(np.uint64(x) for x in s)
        if jump != 0.0:
            jumps.append(jump)
    assert abs(len(jumps) / n - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    assert np.std(jumps) == pytest.approx(0.01, rel=0.06)


def test_basis_and_funding_ou_steps(quiet):
    # mean reversion: a basis 0.001 above venue 0's mean (0) moves theta dt = 5 % of the way back: 0.00095;
    # funding 0.0011 on venue 1 (mean 1e-4) moves 0.1 %: 0.0011 - 0.001 * 0.001 = 0.001099
    states = path(quiet, 1)
    states[0]["basis"][0] = 0.001
    states[0]["funding"][1] = 0.0011
    nxt, _ = step(quiet, states, 0)
    assert nxt["basis"][0] == pytest.approx(0.00095, rel=1e-12)
    assert nxt["funding"][1] == pytest.approx(0.001099, rel=1e-12)
    # the venue's mid follows its new basis: log_mid = x' + b'
    assert nxt["log_mid"][0] == pytest.approx(nxt["x"] + 0.00095, abs=1e-15)


def test_basis_noise_has_its_stationary_std(plain_cfg):
    # OU with theta 0.05, sigma 2e-5 per sqrt(s): stationary std sigma / sqrt(2 theta - theta^2 dt) = 6.49e-5
    prm = record(plain_cfg, **{**QUIET, "basis_sigma": 2e-5})
    states = path(prm, 1)
    nxt = np.zeros(1, market_state_dtype(N))[0]
    s = stream_of(5)
    values = []
    for i in range(6000):
        s, _ = market_step(prm, states[0], nxt, s, i, 1.0)
        s = tuple(np.uint64(x) for x in s)
        states[0]["basis"] = nxt["basis"]
        if i >= 200:
            values.append(nxt["basis"][0])
    assert np.std(values) == pytest.approx(2e-5 / math.sqrt(2 * 0.05 - 0.05 ** 2), rel=0.15)


def test_stressed_regime_widens_the_book_and_thins_it(plain_cfg):
    # p_calm_to_stressed 1: the next tick is stressed for sure; half-spread x2, depth x0.5
    prm = record(plain_cfg, **{**QUIET, "regime_p_calm_to_stressed": 1.0, "regime_p_stressed_to_calm": 0.0})
    states = path(prm, 2)
    nxt, _ = step(prm, states, 0)
    assert nxt["stressed"] == 1.0
    close(nxt["half_spread"], HALF_BPS / 1e4 * 2.0, rel=1e-14)
    close(nxt["depth"], DEPTH * 0.5, rel=1e-15)
    # p_stressed_to_calm 0: stays stressed; with book noise 0.2 and the same stream the book moves with
    # exp(+-0.2 z): half-spread x depth stays bps / 1e4 x mean depth x 2 x 0.5
    prm = record(plain_cfg, **{**QUIET, "regime_p_calm_to_stressed": 1.0, "regime_p_stressed_to_calm": 0.0,
                                  "spread_noise": 0.2})
    nxt, _ = step(prm, states, 1)
    assert nxt["stressed"] == 1.0
    close(nxt["half_spread"] * nxt["depth"], HALF_BPS / 1e4 * DEPTH, rel=1e-12)
    assert not np.allclose(nxt["depth"], DEPTH * 0.5)
    # p_stressed_to_calm 1: leaves it (the draw u < 1 always), calm book again
    prm = record(plain_cfg, **{**QUIET, "regime_p_stressed_to_calm": 1.0})
    nxt, _ = step(prm, states, 1)
    assert nxt["stressed"] == 0.0
    close(nxt["depth"], DEPTH, rel=1e-15)
    close(nxt["half_spread"], HALF_BPS / 1e4, rel=1e-14)


def test_outage_holds_the_book_and_its_age_grows(plain_cfg):
    # p_start 1 and mean length 1e12 ticks: every venue goes down at tick 0 and stays down; the books stay as
    # they were while the fair price moves (mu 1e-3 per s), and their age grows by one tick per tick
    down = record(plain_cfg, **{**QUIET, "mu": 1e-3, "outage_p_start": 1.0, "outage_mean_ticks": 1e12})
    states = path(down, 4)
    book = {k: states[0][k].copy() for k in ("log_mid", "mid", "half_spread", "depth")}
    for t in range(3):
        nxt, _ = step(down, states, t)
        assert nxt["outage"].tolist() == [1.0] * N and nxt["age"].tolist() == [t + 1.0] * N
        for k, v in book.items():
            assert nxt[k].tolist() == v.tolist(), k
    assert states[3]["x"] == pytest.approx(math.log(250.0) + 3e-3, abs=1e-14)
    # mean length 1 tick: the outage ends for sure (stays only if u >= 1); fresh books at the new fair price
    back = record(plain_cfg, **{**QUIET, "mu": 1e-3, "outage_p_start": 0.0, "outage_mean_ticks": 1.0})
    nxt, _ = step(back, states, 3)
    assert nxt["outage"].tolist() == [0.0] * N and nxt["age"].tolist() == [0.0] * N
    assert nxt["log_mid"].tolist() == (nxt["x"] + nxt["basis"]).tolist()
    close(nxt["mid"], 250.0 * np.exp(4e-3 + BASIS_MEAN), rel=1e-12)


def test_funding_mean_flips_sign_from_flip_tick(plain_cfg):
    # flip_tick 10: market_step of tick t writes tick t + 1, so the step of tick 9 is the first with mean -m.
    # From f = m: f' = 0.999 m + 0.001 m = m before; 0.999 m - 0.001 m = 0.998 m from the flip on
    flip = record(plain_cfg, **{**QUIET, "funding_flip_tick": 10.0})
    states = path(flip, 0)
    nxt = np.zeros(1, market_state_dtype(N))[0]
    market_step(flip, states[0], nxt, stream_of(1), 8, 1.0)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    market_step(flip, states[0], nxt, stream_of(1), 9, 1.0)
    close(nxt["funding"], 0.998 * FUNDING_MEAN, rel=1e-12)
    # without a flip (-1) it never flips
    never = record(plain_cfg, **QUIET)
    market_step(never, states[0], nxt, stream_of(1), 10 ** 7, 1.0)
    close(nxt["funding"], FUNDING_MEAN, rel=1e-14)
    # n ticks after the flip with no noise: f = -m + 2 m 0.999^n; n = 1000: m (2 * 0.36770 - 1) < 0
    states = path(flip, 1000)
    for i, t in enumerate(range(9, 9 + 1000)):
        market_step(flip, states[i], states[i + 1], stream_of(i), t, 1.0)
    close(states[1000]["funding"], FUNDING_MEAN * (2 * 0.999 ** 1000 - 1), rel=1e-9)
    assert np.all(states[1000]["funding"] < 0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2 ** 40), stressed=st.booleans(), outage=st.lists(st.booleans(), min_size=N, max_size=N),
       tick=st.integers(0, 100_000), p_out=st.sampled_from([0.0, 0.3, 1.0]))
def test_market_step_invariants(plain_cfg, seed, stressed, outage, tick, p_out):
    # the composed market with outages likely: whatever the draws, a fresh book has log_mid = x + basis,
    # mid = exp(log_mid), half-spread x depth = bps / 1e4 x mean depth x (2 x 0.5 when stressed), age 0; a venue
    # in an outage keeps its book and ages by one tick; the regime is 0 or 1; order counts are whole numbers
    prm = record(plain_cfg, **{**MEANS, "outage_p_start": p_out, "outage_mean_ticks": 3.0,
                                  "flow_rate": [0.5, 0.8, 0.4, 0.3, 0.3]})
    states = path(prm, 1)
    states[0]["stressed"] = float(stressed)
    states[0]["outage"] = np.array(outage, float)
    states[0]["age"] = np.array(outage, float) * 3.0
    market_step(prm, states[0], states[1], stream_of(seed), tick, 1.0)
    cur, nxt = states[0], states[1]
    assert nxt["stressed"] in (0.0, 1.0)
    assert np.all(cur["orders"] >= 0) and np.all(cur["orders"] == np.round(cur["orders"]))
    assert math.isfinite(nxt["x"]) and math.isfinite(nxt["alpha"])
    for v in range(N):
        if nxt["outage"][v] != 0.0:
            assert nxt["age"][v] == cur["age"][v] + 1.0
            for k in ("log_mid", "mid", "half_spread", "depth"):
                assert nxt[k][v] == cur[k][v]
        else:
            assert nxt["age"][v] == 0.0
            assert nxt["log_mid"][v] == nxt["x"] + nxt["basis"][v]
            assert nxt["mid"][v] == pytest.approx(math.exp(nxt["log_mid"][v]), rel=1e-15)
            assert nxt["half_spread"][v] > 0.0 and nxt["depth"][v] > 0.0
            mult = (prm["spread_stressed_mult"] * prm["depth_stressed_mult"]) if nxt["stressed"] else 1.0
            assert nxt["half_spread"][v] * nxt["depth"][v] == pytest.approx(HALF_BPS[v] / 1e4 * DEPTH[v] * mult,
                                                                            rel=1e-12)
