"""Hand-worked cases for the engine's step functions (ENGINE_SPEC sections 3 and 5, version 2).

Each test calls one compiled step of `paraphina.engine` (strategy, ledger, rng, the kernel through
`simulate`) on one run's parameter record, `params.table[0]`, with the record fields the case depends on set
explicitly (the conf values are tuned elsewhere). Every expected value is worked out by hand in the comment
next to it (from the spec's formulas and the numbers of the case), not copied from a run of the code. The
market's steps are in tests/test_engine_steps_market.py, the order flow and the fills in tests/test_market_flow.py.
"""
from __future__ import annotations

import copy
import math

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paraphina.config.loading import compose_config, to_plain
from paraphina.engine.ledger import apply_fill
from paraphina.engine.market import initial_market, market_state_dtype, market_step
from paraphina.engine.params import build_params
from paraphina.engine.rng import ZIGGURAT_R, next_u64, normal, seed_states, uniform
from paraphina.engine.simulate import RowRequest, Threads, simulate
from paraphina.engine.strategy import (DISABLED, HARD_LIMIT, HEALTHY, NORMAL, VENUE_WARNING, WARNING, delta_limit,
                                       fair_observation, funding_payment, hedge_orders, kalman_step, local_vol_step,
                                       mark_to_fair, measurement_noise, quote, risk_regime, taker_price,
                                       venue_health, vol_scalars)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SERIAL = Threads(threads=1, serial_below=1_000_000)


def params_of(plain_cfg, runs=1, per_run=None, **fields):
    """The composed parameter table (deep copies of the config dicts) with record fields set:
    `params_of(cfg, hedge_band_base=4.0)`."""
    p = build_params(copy.deepcopy(plain_cfg["engine"]), copy.deepcopy(plain_cfg["market"]), runs, per_run)
    for name, value in fields.items():
        p.table[name] = value
    return p


def record(plain_cfg, **fields):
    """Run 0's parameter record with `fields` set."""
    return params_of(plain_cfg, **fields).table[0]


def market(n_venues, **fields):
    """A market record of n venues (zeros) with the given fields set."""
    arr = np.zeros(1, market_state_dtype(n_venues))
    for name, value in fields.items():
        arr[0][name] = value
    return arr[0]


def compose_params(overrides, runs=1, per_run=None):
    plain = to_plain(compose_config(list(overrides), environ={}))
    return build_params(plain["engine"], plain["market"], runs, per_run)


def run_rows(overrides, ticks, seeds, per_run=None, record_runs=(0,)):
    """simulate with every tick's row of `record_runs`: (params, result)."""
    p = compose_params(overrides, len(seeds), per_run)
    return p, simulate(p, ticks, seeds, SERIAL, record=RowRequest(runs=tuple(record_runs), every=1))


def close(a, b, rel=1e-12, abs_=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


# --------------------------------------------------------------------------------------------------
# Config: the original profiles keep the spec's table (section 6); record fields are config paths.
# --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("profile,knobs", [
    ("original_conservative", (2.62125, 0.0466, 46600.0, 2000.0, 0.0)),
    ("original_aggressive", (4.86, 0.0864, 86400.0, 2000.0, 0.0)),
    ("original_balanced", (5.625, 0.10, 100000.0, 5000.0, 0.0)),
])
def test_original_profiles_match_spec_table(profile, knobs):
    e = to_plain(compose_config([f"+profile={profile}", "ticks=5"], environ={}))["engine"]
    got = (e["hedge"]["band_base"], e["mm"]["size_eta"], e["risk"]["delta_hard_limit_usd_base"],
           e["risk"]["daily_loss_limit"], e["initial_q_tao"])
    assert got == knobs


def test_params_record_fields_are_config_paths(plain_cfg):
    # one record per run; fields named by path without the section; venue knobs have one value per venue
    e, m = plain_cfg["engine"], plain_cfg["market"]
    p = params_of(plain_cfg, runs=3, per_run={"engine.hedge.band_base": [1.0, 2.0, 3.0],
                                              "engine.venues.gamma": [[0.1] * 5, [0.2] * 5, [0.3] * 5]})
    assert p.table.shape == (3,)
    assert p.table["hedge_band_base"].tolist() == [1.0, 2.0, 3.0]
    assert p.table["venues_gamma"][:, 0].tolist() == [0.1, 0.2, 0.3]
    prm = p.table[1]
    assert prm["mm_size_eta"] == e["mm"]["size_eta"] and prm["s0"] == m["s0"]
    assert prm["impact_coeff"] == m["impact_coeff"]
    assert prm["venues_k_bps"].tolist() == e["venues"]["k_bps"]
    assert prm["venues_hedge_allowed"].tolist() == [float(x) for x in e["venues"]["hedge_allowed"]]
    assert prm["regime_sigma_calm"] == m["regime"]["sigma_calm"]
    assert prm["flow_rate"].tolist() == m["flow"]["rate"]
    assert prm["flow_touch_fill_prob"] == m["flow"]["touch_fill_prob"]
    assert prm["mm_edge_local_min_bps"] == e["mm"]["edge_local_min_bps"]


# --------------------------------------------------------------------------------------------------
# Ledger (step 9): VWAP entry, realised PnL on reductions and flips.
# --------------------------------------------------------------------------------------------------

def _fill(q, entry, dq, price):
    return tuple(float(x) for x in apply_fill(float(q), float(entry), float(dq), float(price)))


def test_ledger_vwap_on_adds():
    # long 2 @ 100, buy 3 @ 110: q 5, entry (2*100 + 3*110) / 5 = 530 / 5 = 106, nothing realised
    assert _fill(2, 100, 3, 110) == (5.0, 106.0, 0.0)
    # from flat: sell 4 @ 50 -> short 4 @ 50
    assert _fill(0, 0, -4, 50) == (-4.0, 50.0, 0.0)
    # short 4 @ 50, sell 6 more @ 60: q -10, entry (-200 - 360) / -10 = 56
    assert _fill(-4, 50, -6, 60) == (-10.0, 56.0, 0.0)


def test_ledger_partial_close_long_and_short():
    # long 5 @ 106, sell 2 @ 120: realise (120 - 106) * 2 = 28; 3 left at the same entry
    assert _fill(5, 106, -2, 120) == (3.0, 106.0, 28.0)
    # long 5 @ 106, sell 2 @ 100: realise (100 - 106) * 2 = -12
    assert _fill(5, 106, -2, 100) == (3.0, 106.0, -12.0)
    # short 10 @ 56, buy 4 @ 50: realise (56 - 50) * 4 = 24; -6 left at 56
    assert _fill(-10, 56, 4, 50) == (-6.0, 56.0, 24.0)
    # short 10 @ 56, buy 4 @ 60: realise (56 - 60) * 4 = -16
    assert _fill(-10, 56, 4, 60) == (-6.0, 56.0, -16.0)


def test_ledger_flip():
    # long 3 @ 106, sell 5 @ 100: close 3 realising (100 - 106) * 3 = -18, short 2 entered at 100
    assert _fill(3, 106, -5, 100) == (-2.0, 100.0, -18.0)
    # short 6 @ 56, buy 10 @ 60: close 6 realising (56 - 60) * 6 = -24, long 4 entered at 60
    assert _fill(-6, 56, 10, 60) == (4.0, 60.0, -24.0)


def test_ledger_close_to_zero():
    # long 3 @ 106, sell 3 @ 110: realise (110 - 106) * 3 = 12, flat with entry 0
    assert _fill(3, 106, -3, 110) == (0.0, 0.0, 12.0)
    # short 2 @ 50, buy 2 @ 45: realise (50 - 45) * 2 = 10, flat with entry 0
    assert _fill(-2, 50, 2, 45) == (0.0, 0.0, 10.0)
    # no fill on a flat book stays flat at entry 0
    assert _fill(0, 0, 0, 123) == (0.0, 0.0, 0.0)
    # no fill on a position keeps it
    assert _fill(2, 100, 0, 123) == (2.0, 100.0, 0.0)


def test_ledger_zero_fill_keeps_entry_exactly():
    # a zero fill adds nothing, so the VWAP entry must stay exactly what it was: 5/6 TAO @ 249.16 stays @ 249.16
    # ((q * e) / q = 249.15999999999997 here, so a VWAP over a zero fill would move it).
    q = 1 / 1.2
    assert _fill(q, 249.16, 0.0, 250.0) == (q, 249.16, 0.0)
    assert _fill(-q, 249.16, 0.0, 250.0) == (-q, 249.16, 0.0)


@pytest.mark.parametrize("q,entry,dq,price,expected", [
    # the nine cases of the old (venues x runs) layout, each against its scalar answer
    (2, 100, 3, 110, (5, 106, 0)), (5, 106, -2, 120, (3, 106, 28)), (-10, 56, 4, 50, (-6, 56, 24)),
    (3, 106, -5, 100, (-2, 100, -18)), (-6, 56, 10, 60, (4, 60, -24)), (3, 106, -3, 110, (0, 0, 12)),
    (0, 0, -4, 50, (-4, 50, 0)), (-2, 50, 2, 45, (0, 0, 10)), (2, 100, 0, 123, (2, 100, 0)),
])
def test_ledger_cases_table(q, entry, dq, price, expected):
    assert _fill(q, entry, dq, price) == tuple(float(x) for x in expected)


@PROPERTY
@given(q=st.floats(-50, 50), entry=st.floats(100, 400), dq=st.floats(-50, 50), price=st.floats(100, 400),
       mark=st.floats(100, 400))
def test_ledger_conserves_value(q, entry, dq, price, mark):
    # for any mark m: realised + new_q (m - new_entry) = q (m - entry) + dq (m - price), i.e. a fill neither
    # creates nor destroys value: the ledger only moves PnL from unrealised to realised
    if q == 0.0:
        entry = 0.0
    new_q, new_entry, realised = apply_fill(q, entry, dq, price)
    assert new_q == q + dq
    before = q * (mark - entry) + dq * (mark - price)
    after = realised + new_q * (mark - new_entry)
    assert after == pytest.approx(before, abs=1e-7 * (1 + abs(q) + abs(dq)) * 400)
    # entry is 0 when flat and otherwise a price the position was built at (between entry and price)
    if new_q == 0.0:
        assert new_entry == 0.0
    elif q != 0.0:
        assert min(entry, price) - 1e-9 <= new_entry <= max(entry, price) + 1e-9


# --------------------------------------------------------------------------------------------------
# Mark to fair (steps 5 and 11), funding (step 10) and the taker price (step 9).
# --------------------------------------------------------------------------------------------------

def test_two_venue_mark_to_fair():
    # venue 0 long 5 @ 95 with mid 102, venue 1 short 3 @ 110 with mid 98, fair 100:
    # q = 5 - 3 = 2; basis = 5 (102 - 100) + (-3)(98 - 100) = 10 + 6 = 16;
    # basis_gross = |10| + |6| = 16; unrealised = 5 (100 - 95) + (-3)(100 - 110) = 25 + 30 = 55
    assert mark_to_fair(np.array([5.0, -3.0]), np.array([95.0, 110.0]), np.array([102.0, 98.0]),
                        100.0) == (2.0, 16.0, 16.0, 55.0)
    # venue 1 long 3 @ 110 instead: q 8; basis 10 - 6 = 4, gross 16; unrealised 25 + 3 (100 - 110) = -5
    assert mark_to_fair(np.array([5.0, 3.0]), np.array([95.0, 110.0]), np.array([102.0, 98.0]),
                        100.0) == (8.0, 4.0, 16.0, -5.0)
    # flat everywhere: zeros whatever the entries and mids
    assert mark_to_fair(np.zeros(5), np.zeros(5), np.full(5, 250.0), 251.0) == (0.0, 0.0, 0.0, 0.0)


def test_funding_payment_hand_case():
    # q 5, -3; funding 0.0008, -0.0004 per 8 h; mids 102, 98; dt 2 s:
    # 5 * 0.0008 * 102 = 0.408; -3 * -0.0004 * 98 = 0.1176; (0.408 + 0.1176) * 2 / 28800 = 3.65e-5 USD paid
    mkt = market(2, funding=[0.0008, -0.0004], mid=[102.0, 98.0])
    assert funding_payment(np.array([5.0, -3.0]), mkt, 2.0) == pytest.approx(3.65e-5, rel=1e-12)
    # a long on positive funding pays (positive), a short on it receives
    assert funding_payment(np.array([60.0, 0.0]), market(2, funding=[0.002, 0.0], mid=[250.5, 1.0]), 1.0) == \
        pytest.approx(60 * 0.002 * 250.5 / 28800, rel=1e-12)
    assert funding_payment(np.array([-60.0, 0.0]), market(2, funding=[0.002, 0.0], mid=[250.5, 1.0]), 1.0) < 0



def test_taker_price_hand_case(plain_cfg):
    # mid 250, half-spread 2 bps (2e-4 of mid), depth 2e6 USD, impact_coeff 0.1:
    # sell 20: slip = 2e-4 + 0.1 * 20 * 250 / 2e6 = 2e-4 + 2.5e-4 = 4.5e-4 -> 250 (1 - 4.5e-4) = 249.8875
    # buy 2: slip = 2e-4 + 0.1 * 2 * 250 / 2e6 = 2.25e-4 -> 250.05625
    prm = record(plain_cfg, impact_coeff=0.1)
    mkt = market(5, mid=[250.0] * 5, half_spread=[2e-4] * 5, depth=[2e6] * 5)
    assert taker_price(prm, mkt, 0, -20.0) == pytest.approx(249.8875, rel=1e-14)
    assert taker_price(prm, mkt, 3, 2.0) == pytest.approx(250.05625, rel=1e-14)
    # impact_coeff 0: the half-spread alone, 250 (1 +- 2e-4); a thinner book (depth 5e5) slips 4x more
    assert taker_price(record(plain_cfg, impact_coeff=0.0), mkt, 1, 7.0) == pytest.approx(250.05, rel=1e-14)
    thin = market(5, mid=[250.0] * 5, half_spread=[2e-4] * 5, depth=[5e5] * 5)
    assert taker_price(prm, thin, 0, -20.0) == pytest.approx(250 * (1 - 2e-4 - 1e-3), rel=1e-14)


# --------------------------------------------------------------------------------------------------
# Kalman filter (step 3): observation, measurement noise, predict / update / reject / re-anchor.
# --------------------------------------------------------------------------------------------------

KF = dict(kalman_q_base=0.01, kalman_r_a=0.01, kalman_r_b=100.0, kalman_r_min=0.01, kalman_r_max=1.0,
          kalman_p_init=1.0, book_min_healthy_for_kf=2.0, book_max_mid_jump_pct=0.02,
          book_max_consecutive_rejects=3.0)


@pytest.fixture(scope="module")
def kf_prm(plain_cfg):
    return record(plain_cfg, **KF)


def _kalman(prm, xhat, p, rejects, has_fair, observed, y, spread=1.0, depth=1000.0, dt=1.0):
    """One filter step from an observation of 2 usable venues (or none)."""
    r = measurement_noise(prm, spread, depth)
    out = kalman_step(prm, xhat, math.exp(xhat), p, float(rejects), has_fair, 2.0 if observed else 0.0, y, r, dt)
    return float(out[0]), float(out[1]), float(out[2]), bool(out[3])


def test_fair_observation_usable_venues():
    # mids 100, 102, 110, 90; depths 1e6, 3e6, 2e6, 0; half-spreads 1, 2, 3, 4 bps; ages 0, 1, 2, 0; stale
    # after 1 tick: venue 2 is stale (age 2 > 1), venue 3 has no depth. Usable 0 and 1:
    # y = (1e6 * 100 + 3e6 * 102) / 4e6 = 101.5; half-spread (1e-4 + 2e-4) / 2 = 1.5e-4; depth 4e6 / 2 = 2e6
    mkt = market(4, mid=[100.0, 102.0, 110.0, 90.0], depth=[1e6, 3e6, 2e6, 0.0],
                 half_spread=[1e-4, 2e-4, 3e-4, 4e-4], age=[0.0, 1.0, 2.0, 0.0])
    n, y, spread, depth = fair_observation(mkt, 1.0)
    assert (n, depth) == (2.0, 2e6)
    assert y == pytest.approx(101.5, rel=1e-15) and spread == pytest.approx(1.5e-4, rel=1e-15)
    # with a longer staleness allowance (2 ticks) venue 2 joins: y = (100e6 + 306e6 + 220e6) / 6e6 = 104.333
    assert fair_observation(mkt, 2.0)[1] == pytest.approx(626 / 6, rel=1e-14)
    # nothing usable (every book stale): count 0 and NaN means
    stale = market(4, mid=[100.0] * 4, depth=[1e6] * 4, half_spread=[1e-4] * 4, age=[5.0] * 4)
    n, y, spread, depth = fair_observation(stale, 1.0)
    assert n == 0.0 and math.isnan(y) and math.isnan(spread) and math.isnan(depth)


def test_measurement_noise_hand_and_clip(kf_prm, plain_cfg):
    # R = 0.01 + 0.01 * 1^2 + 100 / 1000 = 0.12; depth 1: 100.02 -> r_max 1; tiny: r_min
    assert measurement_noise(kf_prm, 1.0, 1000.0) == pytest.approx(0.12, rel=1e-14)
    assert measurement_noise(kf_prm, 1.0, 1.0) == 1.0
    # squared-log-price units: r_min 1e-12, r_a 0.01, r_b 1e-3, r_max 1e-4; half-spread 2 bps, depth 2e6:
    # 1e-12 + 0.01 * (2e-4)^2 + 1e-3 / 2e6 = 1e-12 + 4e-10 + 5e-10 = 9.01e-10
    prm = record(plain_cfg, kalman_r_min=1e-12, kalman_r_a=0.01, kalman_r_b=1e-3, kalman_r_max=1e-4)
    assert measurement_noise(prm, 2e-4, 2e6) == pytest.approx(9.01e-10, rel=1e-12)


def test_kalman_hand_update(kf_prm):
    # predict P = 0.02 + 0.01 * 1 = 0.03; R = 0.12; K = 0.03 / 0.15 = 0.2; y = 101 is 1 % from 100: accepted;
    # xhat = ln 100 + 0.2 (ln 101 - ln 100); P = 0.03 (1 - 0.2) = 0.024
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 101.0)
    assert xhat == pytest.approx(math.log(100) + 0.2 * (math.log(101) - math.log(100)), rel=1e-14)
    assert p == pytest.approx(0.024, rel=1e-12)
    assert rej == 0.0 and has


def test_kalman_hand_update_in_log_price_units(plain_cfg):
    # q_base 2.25e-8 per s, P 1e-9 before: predict P = 2.35e-8; R = 9.01e-10 (above); K = 2.35e-8 / 2.4401e-8;
    # xhat = ln 250 + K (ln 250.1 - ln 250); P = 2.35e-8 (1 - K)
    prm = record(plain_cfg, **{**KF, "kalman_q_base": 2.25e-8, "kalman_r_min": 1e-12, "kalman_r_a": 0.01,
                               "kalman_r_b": 1e-3, "kalman_r_max": 1e-4})
    xhat, p, _, _ = _kalman(prm, math.log(250), 1e-9, 0, True, True, 250.1, spread=2e-4, depth=2e6)
    k = 2.35e-8 / 2.4401e-8
    assert xhat == pytest.approx(math.log(250) + k * (math.log(250.1) - math.log(250)), rel=1e-12)
    assert p == pytest.approx(2.35e-8 * (1 - k), rel=1e-9)


def test_kalman_r_is_clipped(kf_prm, plain_cfg):
    # depth 1: R = 0.01 + 0.01 + 100 = 100.02 -> r_max 1; P = 0.03 -> K = 0.03 / 1.03
    _, p, _, _ = _kalman(kf_prm, 0.0, 0.02, 0, True, True, 1.01, spread=1.0, depth=1.0)
    assert p == pytest.approx(0.03 * (1 - 0.03 / 1.03), rel=1e-12)
    # r_min 0.5 > everything else: R = clip(0.5 + 0 + 1e-6, 0.5, 1) = 0.500001; K = 0.03 / 0.530001
    prm = record(plain_cfg, **{**KF, "kalman_r_min": 0.5, "kalman_r_a": 0.0})
    _, p, _, _ = _kalman(prm, 0.0, 0.02, 0, True, True, 1.01, spread=1.0, depth=1e8)
    assert p == pytest.approx(0.03 * (1 - 0.03 / 0.530001), rel=1e-12)


def test_kalman_rejects_jump_over_max_pct(kf_prm):
    # y = 103 is 3 % from 100 > 2 %: only predict (P = 0.02 + 0.01), xhat stays, one reject counted
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 103.0)
    assert xhat == math.log(100)
    assert p == pytest.approx(0.03, rel=1e-14)
    assert rej == 1.0 and has
    # 1.9 % is accepted, 2.1 % (either way) rejected
    assert _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 101.9)[2] == 0.0
    assert _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 102.1)[2] == 1.0
    assert _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 97.9)[2] == 1.0


def test_kalman_without_previous_fair_accepts_anything(kf_prm):
    # no previous fair value: y = 200 (100 % away) is accepted: K = 0.03 / 0.15 = 0.2
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, 0, False, True, 200.0)
    assert xhat == pytest.approx(math.log(100) + 0.2 * math.log(2), rel=1e-14)
    assert p == pytest.approx(0.024, rel=1e-12)
    assert has and rej == 0.0


def test_kalman_reanchors_on_third_consecutive_reject(kf_prm):
    x0 = math.log(100)
    # 1st and 2nd rejection count up; the 3rd re-anchors: xhat = ln 110, P = p_init = 1, rejects 0
    state = (x0, 0.02, 0.0, True)
    for expected_rejects in (1.0, 2.0):
        state = _kalman(kf_prm, state[0], state[1], state[2], state[3], True, 110.0)
        assert state[0] == x0 and state[2] == expected_rejects
    assert state[1] == pytest.approx(0.04, rel=1e-12)  # two predicts: 0.02 + 0.01 + 0.01
    xhat, p, rej, has = _kalman(kf_prm, state[0], state[1], state[2], state[3], True, 110.0)
    assert xhat == pytest.approx(math.log(110), rel=1e-15)
    assert p == 1.0 and rej == 0.0 and has
    # an accepted observation in between resets the count: 2 rejects then an accepted one -> 0
    assert _kalman(kf_prm, x0, 0.02, 2.0, True, True, 101.0)[2] == 0.0
    # a tick without observation neither counts nor resets
    assert _kalman(kf_prm, x0, 0.02, 2.0, True, False, 110.0)[2] == 2.0


def test_kalman_no_observation_only_predicts(kf_prm):
    # no observation (y, spread, depth NaN as fair_observation gives them): xhat unchanged, P = 0.02 + 0.01 * 0.5
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, 1.0, True, False, math.nan, spread=math.nan,
                                depth=math.nan, dt=0.5)
    assert xhat == math.log(100)
    assert p == pytest.approx(0.025, rel=1e-14)
    assert rej == 1.0 and has
    # before any fair value, no observation leaves has_fair False
    assert _kalman(kf_prm, math.log(100), 0.02, 0.0, False, False, math.nan)[3] is False
    # one usable venue is fewer than min_healthy_for_kf = 2: no update either
    out = kalman_step(kf_prm, math.log(100), 100.0, 0.02, 0.0, True, 1.0, 101.0, 0.12, 1.0)
    assert out[0] == math.log(100) and out[1] == pytest.approx(0.03, rel=1e-14)


@pytest.mark.parametrize("rejects,observed,y,xhat_expected,p_expected,rejects_expected", [
    # accept, reject, re-anchor, no observation
    (0, True, 101.0, math.log(100) + 0.2 * math.log(1.01), 0.024, 0.0),
    (0, True, 103.0, math.log(100), 0.03, 1.0),
    (2, True, 110.0, math.log(110), 1.0, 0.0),
    (0, False, math.nan, math.log(100), 0.03, 0.0),
])
def test_kalman_cases_table(kf_prm, rejects, observed, y, xhat_expected, p_expected, rejects_expected):
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, rejects, True, observed, y)
    assert xhat == pytest.approx(xhat_expected, rel=1e-14)
    assert p == pytest.approx(p_expected, rel=1e-12)
    assert rej == rejects_expected and has


@PROPERTY
@given(x0=st.floats(4.0, 6.0), jump=st.floats(-0.0199, 0.0199), p=st.floats(1e-6, 1.0),
       spread=st.floats(1e-3, 2.0), depth=st.floats(1e3, 1e8))
def test_kalman_update_moves_toward_the_observation(kf_prm, x0, jump, p, spread, depth):
    # an accepted update lands between xhat and ln y (0 < K < 1) and shrinks the predicted variance
    y = math.exp(x0) * (1 + jump)
    xhat, p_new, rej, has = _kalman(kf_prm, x0, p, 0, True, True, y, spread=spread, depth=depth)
    lo, hi = sorted((x0, math.log(y)))
    assert lo - 1e-12 <= xhat <= hi + 1e-12
    assert 0.0 < p_new < p + 0.01 and rej == 0.0 and has


# --------------------------------------------------------------------------------------------------
# Local volatility (step 2) and effective volatility with control scalars (step 4), per sqrt(s)
# --------------------------------------------------------------------------------------------------

def test_local_vol_step_both_ewmas(plain_cfg):
    # alpha short 0.2, long 0.05, from zero. Venue 0 moves +0.01 then -0.02 in log mid; venue 1 does not move:
    # tick 1 (dt 1): r2 = 1e-4: short 0.2e-4 = 2e-5, long 0.05e-4 = 5e-6
    # tick 2 (dt 1): r2 = 4e-4: short 2e-5 + 0.2 (4e-4 - 2e-5) = 9.6e-5; long 5e-6 + 0.05 (4e-4 - 5e-6) = 2.475e-5
    # venue 1 starts at 1e-6 (short) and 3e-6 (long) and decays: short 0.8^2 1e-6, long 0.95^2 3e-6
    prm = record(plain_cfg, volatility_fv_vol_alpha_short=0.2, volatility_fv_vol_alpha_long=0.05)
    short, long_ = np.array([0.0, 1e-6]), np.array([0.0, 3e-6])
    local_vol_step(prm, short, long_, np.array([0.0, 5.0]), np.array([0.01, 5.0]), 1.0)
    assert short[0] == pytest.approx(2e-5, rel=1e-12) and long_[0] == pytest.approx(5e-6, rel=1e-12)
    local_vol_step(prm, short, long_, np.array([0.01, 5.0]), np.array([-0.01, 5.0]), 1.0)
    assert short[0] == pytest.approx(9.6e-5, rel=1e-12) and long_[0] == pytest.approx(2.475e-5, rel=1e-12)
    assert short[1] == pytest.approx(0.64e-6, rel=1e-12) and long_[1] == pytest.approx(0.9025 * 3e-6, rel=1e-12)
    # per second: a return of 0.02 over dt 4 s is a squared return of 4e-4 / 4 = 1e-4 per s
    short, long_ = np.zeros(1), np.zeros(1)
    local_vol_step(prm, short, long_, np.array([0.0]), np.array([0.02]), 4.0)
    assert short[0] == pytest.approx(0.2 * 1e-4, rel=1e-12) and long_[0] == pytest.approx(0.05 * 1e-4, rel=1e-12)


def test_local_vol_converges_to_the_squared_return(plain_cfg):
    # a constant return r: both EWMAs converge to r^2; the short one faster (after 20 steps from 0:
    # short 1 - 0.8^20 = 98.8 % of r^2, long 1 - 0.95^20 = 64.2 %)
    prm = record(plain_cfg, volatility_fv_vol_alpha_short=0.2, volatility_fv_vol_alpha_long=0.05)
    short, long_ = np.zeros(1), np.zeros(1)
    for i in range(20):
        local_vol_step(prm, short, long_, np.array([0.003 * i]), np.array([0.003 * (i + 1)]), 1.0)
    assert short[0] == pytest.approx(9e-6 * (1 - 0.8 ** 20), rel=1e-9)
    assert long_[0] == pytest.approx(9e-6 * (1 - 0.95 ** 20), rel=1e-9)


VOL = dict(volatility_fv_vol_alpha_short=0.02, volatility_sigma_min=2e-5, volatility_vol_ref=1.5e-4,
           volatility_vol_ratio_min=0.25, volatility_vol_ratio_max=4.0, volatility_c_spread=1.0,
           volatility_c_size=2.0, volatility_c_band=1.0, risk_delta_hard_limit_usd_base=100000.0,
           risk_delta_limit_vol_ratio_floor=0.25)


@pytest.fixture(scope="module")
def vol_prm(plain_cfg):
    return record(plain_cfg, **VOL)


def test_vol_floor_and_lower_clip(vol_prm):
    # var 0, ret 0: var 0, sigma_eff = max(0, 2e-5) = 2e-5; 2e-5 / 1.5e-4 = 0.133 -> clipped to 0.25;
    # bump = max(0.25 - 1, 0) = 0 -> every multiplier is 1
    assert vol_scalars(vol_prm, 0.0, 0.0, 1.0) == (0.0, 2e-5, 0.25, 1.0, 1.0, 1.0)


def test_vol_hand_ewma(vol_prm):
    # var = 0.98 * 1e-8 + 0.02 * (3e-4)^2 / 1 = 0.98e-8 + 0.18e-8 = 1.16e-8; sigma_eff = sqrt(1.16e-8) = 1.0770e-4
    # per sqrt(s); vol_ratio = 1.0770e-4 / 1.5e-4 = 0.718 (inside [0.25, 4]); bump 0
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 1e-8, 3e-4, 1.0)
    assert var == pytest.approx(1.16e-8, rel=1e-12)
    assert sigma == pytest.approx(math.sqrt(1.16e-8), rel=1e-12)
    assert ratio == pytest.approx(math.sqrt(1.16e-8) / 1.5e-4, rel=1e-12)
    assert (sm, qm, bm) == (1.0, 1.0, 1.0)


def test_vol_ratio_two_and_per_second_units(vol_prm):
    # var 9e-8 and a return 3e-4 over 1 s keep var at 9e-8: sigma_eff 3e-4 = 2 vol_ref -> vol_ratio 2, bump 1:
    # spread_mult = 1 + 1 * 1 = 2; size_mult = 1 / (1 + 2 * 1) = 1/3; band_mult = 1 / (1 + 1 * 1) = 1/2
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 9e-8, 3e-4, 1.0)
    assert var == pytest.approx(9e-8, rel=1e-12)
    assert sigma == pytest.approx(3e-4, rel=1e-12)
    assert ratio == pytest.approx(2.0, rel=1e-12)
    assert sm == pytest.approx(2.0, rel=1e-12)
    assert qm == pytest.approx(1 / 3, rel=1e-12)
    assert bm == pytest.approx(0.5, rel=1e-12)
    # the same volatility per sqrt(s) over 4 s ticks: a return of 6e-4 (= 3e-4 sqrt 4) gives the same numbers
    assert vol_scalars(vol_prm, 9e-8, 6e-4, 4.0)[1:3] == pytest.approx((3e-4, 2.0), rel=1e-12)


def test_vol_upper_clip(vol_prm):
    # ret = 1: var = 0.02, sigma_eff = 0.1414 -> ratio 943 -> clipped to 4; bump 3:
    # spread 1 + 3 = 4, size 1 / (1 + 6) = 1/7, band 1 / (1 + 3) = 1/4
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 0.0, 1.0, 1.0)
    assert var == pytest.approx(0.02, rel=1e-15)
    assert ratio == 4.0
    assert (sm, qm, bm) == (4.0, 1 / 7, 0.25)


def test_delta_limit(vol_prm):
    # 100000 / max(2, 0.25) = 50000; 100000 / max(0.1, 0.25) = 400000; 100000 / 1 = 100000
    assert [delta_limit(vol_prm, r) for r in (2.0, 0.1, 1.0)] == [50000.0, 400000.0, 100000.0]


# --------------------------------------------------------------------------------------------------
# Toxicity and venue health (step 6): local vol against sigma_eff, or the markout of the venue's fills
# --------------------------------------------------------------------------------------------------

TOX = dict(toxicity_vol_tox_scale=0.5, toxicity_markout_tox_scale_bps=10.0, toxicity_tox_med_threshold=0.6,
           toxicity_tox_high_threshold=0.9, volatility_sigma_min=0.001)


@pytest.fixture(scope="module")
def tox_prm(plain_cfg):
    return record(plain_cfg, **TOX)


def _health(prm, local, sigma_eff=1.0, depth=None, age=None, stale_ticks=1.0, markout=None):
    """venue_health on venues whose short local volatility is `local` (vol_short = local^2): (tox, status)."""
    n = len(local)
    mkt = market(n, depth=depth if depth is not None else [1e6] * n, age=age if age is not None else [0.0] * n)
    vol_short = np.array(local, float) ** 2
    marks = np.array(markout if markout is not None else [0.0] * n, float)
    tox, status = np.full(n, -1.0), np.full(n, -1, np.int64)
    venue_health(prm, mkt, vol_short, marks, sigma_eff, stale_ticks, tox, status)
    return tox.tolist(), status.tolist()


def test_toxicity_scores_from_local_vol(tox_prm):
    # sigma_eff 1: (local / 1 - 1) / 0.5 clipped to [0, 1]:
    # 0.5 -> -1 -> 0; 1 -> 0; 1.25 -> 0.5; 1.375 -> 0.75; 1.5 -> 1; 2 -> 2 -> 1; no book (depth 0) -> 1
    tox, _ = _health(tox_prm, [0.5, 1.0, 1.25, 1.375, 1.5, 2.0, 1.0], depth=[1e6] * 6 + [0.0])
    assert tox == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0, 1.0]
    # with sigma_eff 0.002 and local 0.0025: (1.25 - 1) / 0.5 = 0.5
    assert _health(tox_prm, [0.0025], sigma_eff=0.002)[0][0] == pytest.approx(0.5)
    # local vol below sigma_min (0.001) counts as sigma_min: local 1e-4 against sigma_eff 0.0008 ->
    # (0.001 / 0.0008 - 1) / 0.5 = 0.5
    assert _health(tox_prm, [1e-4], sigma_eff=0.0008)[0][0] == pytest.approx(0.5, rel=1e-12)


def test_toxicity_scores_from_markout(tox_prm):
    # -(markout bps) / 10: -5 bps -> 0.5; -7.5 -> 0.75; -12 -> 1.2 -> 1; a favourable markout (+5) -> 0;
    # the larger of the two terms: local 1.25 (0.5) with markout -7.5 (0.75) -> 0.75; local 1.5 (1) with -2 -> 1
    tox, status = _health(tox_prm, [1.0, 1.0, 1.0, 1.0, 1.25, 1.5], markout=[-5.0, -7.5, -12.0, 5.0, -7.5, -2.0])
    assert tox == pytest.approx([0.5, 0.75, 1.0, 0.0, 0.75, 1.0], rel=1e-14)
    assert status == [HEALTHY, VENUE_WARNING, DISABLED, HEALTHY, VENUE_WARNING, DISABLED]


def test_venue_status_thresholds(tox_prm, plain_cfg):
    # < 0.6 Healthy; 0.6 <= tox < 0.9 Warning; >= 0.9 Disabled. local = 1 + 0.5 tox at sigma_eff 1:
    # tox 0, 0.5998, 0.6 (+1 ulp), 0.75, 0.8998, 0.9 (+), 1 (local 1.5)
    _, status = _health(tox_prm, [1.0, 1.2999, 1.30000001, 1.375, 1.4499, 1.45000001, 1.5])
    assert status == [HEALTHY, HEALTHY, VENUE_WARNING, VENUE_WARNING, VENUE_WARNING, DISABLED, DISABLED]
    # the thresholds are inclusive: with thresholds 0.5 and 0.75 (scores hit exactly by local 1.25, 1.375)
    prm = record(plain_cfg, **{**TOX, "toxicity_tox_med_threshold": 0.5, "toxicity_tox_high_threshold": 0.75})
    tox, status = _health(prm, [1.2499999, 1.25, 1.3749999, 1.375])
    assert tox[1] == 0.5 and tox[3] == 0.75
    assert status == [HEALTHY, VENUE_WARNING, VENUE_WARNING, DISABLED]


def test_stale_book_is_disabled_and_no_book_too(tox_prm):
    # stale (age 2 > 1 tick) Disabled whatever the score; age 1 is not stale; no book -> tox 1 -> Disabled
    tox, status = _health(tox_prm, [1.0, 1.0, 1.4, 1.0], age=[2.0, 1.0, 5.0, 0.0], depth=[1e6, 1e6, 1e6, 0.0])
    assert status == [DISABLED, HEALTHY, DISABLED, DISABLED]
    assert tox[0] == 0.0 and tox[3] == 1.0
    # a larger staleness allowance (5 ticks) lets venue 0 back: Healthy; venue 2 (age 5) Warning by its score 0.8
    assert _health(tox_prm, [1.0, 1.0, 1.4], age=[2.0, 1.0, 5.0], stale_ticks=5.0)[1] == [HEALTHY, HEALTHY,
                                                                                          VENUE_WARNING]


def test_toxicity_is_not_absorbing_local_vol(tox_prm):
    # a venue Disabled by its local vol comes back when its local vol falls back to sigma_eff
    mkt = market(1, depth=[1e6])
    tox, status = np.zeros(1), np.zeros(1, np.int64)
    venue_health(tox_prm, mkt, np.array([4.0]), np.zeros(1), 1.0, 1.0, tox, status)
    assert status[0] == DISABLED
    venue_health(tox_prm, mkt, np.array([1.0]), np.zeros(1), 1.0, 1.0, tox, status)
    assert status[0] == HEALTHY and tox[0] == 0.0


def test_disabled_by_markout_comes_back_as_the_markout_decays(plain_cfg):
    # markout -12 bps (score 1.2 -> 1: Disabled), no new fills; the kernel decays it by (1 - 0.005) per tick:
    # after n ticks the score is 1.2 x 0.995^n: below 0.9 from n = 58 (ln 0.75 / ln 0.995 = 57.4) -> Warning,
    # below 0.6 from n = 139 (ln 0.5 / ln 0.995 = 138.3) -> Healthy
    prm = record(plain_cfg, **TOX, toxicity_markout_decay=0.005)
    mkt = market(1, depth=[1e6])
    markout, tox, status = np.array([-12.0]), np.zeros(1), np.zeros(1, np.int64)
    seen = {}
    for n in range(200):
        venue_health(prm, mkt, np.array([1.0]), markout, 1.0, 1.0, tox, status)
        seen[n] = int(status[0])
        markout *= 1.0 - prm["toxicity_markout_decay"]
    assert seen[0] == seen[57] == DISABLED
    assert seen[58] == seen[138] == VENUE_WARNING
    assert seen[139] == seen[199] == HEALTHY


# --------------------------------------------------------------------------------------------------
# Risk regime and kill switch (step 11); the spec's comparisons are inclusive.
# --------------------------------------------------------------------------------------------------

RISK = dict(risk_delta_warn_frac=0.7, risk_basis_hard_limit_usd=10000.0, risk_basis_warn_frac=0.7,
            risk_daily_loss_limit=5000.0, risk_pnl_warn_frac=0.5)


@pytest.fixture(scope="module")
def risk_prm(plain_cfg):
    return record(plain_cfg, **RISK)


@pytest.mark.parametrize("pnl,delta,basis,regime,kill", [
    (0.0, 0.0, 0.0, NORMAL, False),
    # delta: warn at 0.7 * 100000 = 70000 (inclusive), hard at 100000 (inclusive), either sign
    (0.0, 69999.99, 0.0, NORMAL, False),
    (0.0, 70000.0, 0.0, WARNING, False),
    (0.0, -70000.0, 0.0, WARNING, False),
    (0.0, 99999.99, 0.0, WARNING, False),
    (0.0, 100000.0, 0.0, HARD_LIMIT, False),
    (0.0, -100000.0, 0.0, HARD_LIMIT, False),
    # basis: warn at 0.7 * 10000 = 7000, hard at 10000
    (0.0, 0.0, 6999.99, NORMAL, False),
    (0.0, 0.0, 7000.0, WARNING, False),
    (0.0, 0.0, -7000.0, WARNING, False),
    (0.0, 0.0, 10000.0, HARD_LIMIT, False),
    (0.0, 0.0, -10000.0, HARD_LIMIT, False),
    # pnl: warn at -0.5 * 5000 = -2500, hard and kill at -5000
    (-2499.99, 0.0, 0.0, NORMAL, False),
    (-2500.0, 0.0, 0.0, WARNING, False),
    (-4999.99, 0.0, 0.0, WARNING, False),
    (-5000.0, 0.0, 0.0, HARD_LIMIT, True),
    (-7000.0, 0.0, 0.0, HARD_LIMIT, True),
    # a big profit is not a loss
    (1e9, 0.0, 0.0, NORMAL, False),
    # delta hard limit with a loss under the limit: HardLimit but no kill
    (-4000.0, 100000.0, 0.0, HARD_LIMIT, False),
])
def test_risk_regime_thresholds(risk_prm, pnl, delta, basis, regime, kill):
    got_regime, got_kill = risk_regime(risk_prm, pnl, delta, basis, 100000.0)
    assert int(got_regime) == regime
    assert bool(got_kill) is kill


def test_risk_regime_with_per_run_limits(plain_cfg):
    # per-run loss limits 100, 5000, 200, pnl -100 everywhere:
    # run 0: -100 <= -100 -> HardLimit + kill; run 1: -100 > -2500 -> Normal; run 2: -100 <= -0.5 * 200 -> Warning
    fields = {k: v for k, v in RISK.items() if k != "risk_daily_loss_limit"}
    p = params_of(plain_cfg, runs=3, per_run={"engine.risk.daily_loss_limit": [100.0, 5000.0, 200.0]}, **fields)
    got = [risk_regime(p.table[i], -100.0, 0.0, 0.0, 1e5) for i in range(3)]
    assert [(int(r), bool(k)) for r, k in got] == [(HARD_LIMIT, True), (NORMAL, False), (WARNING, False)]
    # the limit is the one given: a 50000 delta is Warning against a 60000 limit (>= 42000), HardLimit at 50000
    assert int(risk_regime(p.table[1], 0.0, 50000.0, 0.0, 60000.0)[0]) == WARNING
    assert int(risk_regime(p.table[1], 0.0, 50000.0, 0.0, 50000.0)[0]) == HARD_LIMIT


# --------------------------------------------------------------------------------------------------
# MM quotes (step 7) in consistent units: sigma_p = sigma_eff S (USD per sqrt(s)), edges in bps of mid,
# 1 / k_usd = (1e-4 mid) / k_bps. Venue 0: gamma 0.1, k_bps 0.5, base size 1, max 20; horizon 30 s,
# edge_local_min 0.5 bps, edge_vol_mult 0.5 bps, basis and funding weights 0.3, size_eta 0.1. A fine tick
# (1e-6 USD) shows the prices to the micro-dollar; the grid cases use 0.01 and 0.5.
# --------------------------------------------------------------------------------------------------

QUOTE = dict(venues_gamma=[0.1] * 5, venues_k_bps=[0.5] * 5, venues_base_order_size=[1.0] * 5,
             venues_max_order_size=[20.0] * 5, venues_tick_size=[1e-6] * 5, mm_quote_horizon_sec=30.0,
             mm_edge_local_min_bps=0.5, mm_edge_vol_mult_bps=0.5, mm_basis_weight=0.3, mm_funding_weight=0.3,
             mm_size_eta=0.1, mm_venue_warning_size_mult=0.5, risk_spread_warn_mult=1.5, risk_q_warn_cap=5.0,
             risk_delta_ratio_stop=2.0, risk_delta_hard_limit_usd_base=100000.0,
             risk_delta_limit_vol_ratio_floor=0.25)
FINE = 1.01e-6  # a price floored / ceiled to a 1e-6 grid is within one tick of the exact one


@pytest.fixture(scope="module")
def q_prm(plain_cfg):
    return record(plain_cfg, **QUOTE)


def _quote(prm, mid, fair, q, sigma, vol_ratio, funding=0.0, spread_mult=1.0, size_mult=1.0, regime=NORMAL,
           status=HEALTHY, v=0):
    limit = delta_limit(prm, vol_ratio)
    return quote(prm, v, float(mid), float(funding), float(fair), float(q), float(sigma), float(vol_ratio),
                 limit, float(spread_mult), float(size_mult), regime, status)


def on_grid(price, tick=0.01):
    return abs(price / tick - round(price / tick)) < 1e-6


def test_quote_hand_case_flat(q_prm):
    # mid = fair = 250, q 0, sigma_eff 1.5e-4 per sqrt(s), vol_ratio 1:
    # sigma_p = 1.5e-4 * 250 = 0.0375 USD; gamma sigma_p^2 T = 0.1 * 0.00140625 * 30 = 0.00421875 USD;
    # 1 bps of mid = 0.025 USD, so 1 / k_usd = 0.025 / 0.5 = 0.05 USD; edge_min 0.5 bps = 0.0125 USD;
    # half = max(0.002109375 + 0.05, 0.0125) = 0.052109375; + 0.5 bps * 1 = 0.0125 -> 0.064609375 USD;
    # reservation 250 (no basis, funding or inventory): bid 249.935390625, ask 250.064609375; size 1
    bid, ask, size, bid_ok, ask_ok = _quote(q_prm, 250.0, 250.0, 0.0, 1.5e-4, 1.0)
    assert bid == pytest.approx(249.935390625, abs=FINE) and bid <= 249.935390625
    assert ask == pytest.approx(250.064609375, abs=FINE) and ask >= 250.064609375
    assert size == 1.0 and bid_ok and ask_ok
    # in bps of mid the half-spread is (0.064609375 / 250) 1e4 = 2.584 bps, of the order of the book's own
    assert (ask - bid) / 2 / 250 * 1e4 == pytest.approx(2.5843750, abs=1e-4)


def test_quote_hand_case_on_the_cent_grid(plain_cfg):
    # the flat case on a 0.01 grid: bid floor(24993.5390625) * 0.01 = 249.93, ask ceil(25006.4609375) = 250.07
    prm = record(plain_cfg, **{**QUOTE, "venues_tick_size": [0.01] * 5})
    bid, ask, _, _, _ = _quote(prm, 250.0, 250.0, 0.0, 1.5e-4, 1.0)
    assert bid == pytest.approx(249.93, abs=1e-9) and on_grid(bid)
    assert ask == pytest.approx(250.07, abs=1e-9) and on_grid(ask)
    # tick 0.5: bid floor(249.935 / 0.5) * 0.5 = 249.5; ask ceil(250.065 / 0.5) * 0.5 = 250.5
    prm = record(plain_cfg, **{**QUOTE, "venues_tick_size": [0.5] * 5})
    assert _quote(prm, 250.0, 250.0, 0.0, 1.5e-4, 1.0)[:2] == (249.5, 250.5)


def test_quote_hand_case_basis_funding_inventory(q_prm):
    # mid 250.5, fair 250, funding 1e-4 per 8 h, q 10, sigma_eff 6e-4, vol_ratio 2, spread_mult 2, size_mult 1:
    # sigma_p = 6e-4 * 250 (the fair value) = 0.15 USD; gamma sigma_p^2 T = 0.1 * 0.0225 * 30 = 0.0675 USD;
    # 1 bps of the venue's mid = 0.02505: 1 / k_usd = 0.0501, edge_min 0.012525;
    # half = (max(0.03375 + 0.0501, 0.012525) + 0.5 * 0.02505 * 2) * 2 = (0.08385 + 0.02505) * 2 = 0.2178
    # res = 250.5 + 0.3 (250.5 - 250) + 0.3 * 1e-4 * (30 / 28800) * 250 - 0.0675 * 10 / 2
    #     = 250.5 + 0.15 + 0.0000078125 - 0.3375 = 250.3125078125
    # bid = 250.0947078125, ask = 250.5303078125; size = 1 / (1 + 0.1 * 10) = 0.5
    bid, ask, size, bid_ok, ask_ok = _quote(q_prm, 250.5, 250.0, 10.0, 6e-4, 2.0, funding=1e-4, spread_mult=2.0)
    assert bid == pytest.approx(250.0947078125, abs=FINE)
    assert ask == pytest.approx(250.5303078125, abs=FINE)
    assert size == pytest.approx(0.5, rel=1e-14) and bid_ok and ask_ok


def test_quote_reservation_skew_in_usd(q_prm):
    # the inventory skew is gamma sigma_p^2 T q / 2 USD with sigma_p = sigma_eff x fair: sigma 6e-4, fair 250:
    # 0.0675 / 2 = 0.03375 USD per TAO; q 10 moves both prices down 0.3375 USD, q -4 up 0.135 USD (the
    # half-spread does not depend on q). A skew from the venue's mid instead (250.5) would be 0.33885.
    def centre(q):
        bid, ask, *_ = _quote(q_prm, 250.5, 250.0, q, 6e-4, 2.0, spread_mult=2.0)
        return (bid + ask) / 2, ask - bid
    c0, w0 = centre(0.0)
    c10, w10 = centre(10.0)
    cm4, wm4 = centre(-4.0)
    assert c0 - c10 == pytest.approx(0.3375, abs=2 * FINE)
    assert cm4 - c0 == pytest.approx(0.135, abs=2 * FINE)
    assert w0 == pytest.approx(w10, abs=2 * FINE) == pytest.approx(wm4, abs=2 * FINE)
    # and it scales with sigma^2: at sigma 3e-4 a quarter of it (0.084375 for q 10)
    bid0, ask0 = _quote(q_prm, 250.5, 250.0, 0.0, 3e-4, 2.0)[:2]
    bid10, ask10 = _quote(q_prm, 250.5, 250.0, 10.0, 3e-4, 2.0)[:2]
    assert (bid0 + ask0) / 2 - (bid10 + ask10) / 2 == pytest.approx(0.084375, abs=2 * FINE)


def test_quote_warning_multipliers(q_prm):
    # the flat case in Warning: half = 0.064609375 * 1.5 = 0.0969140625 -> bid 249.9030859375, ask 250.0969140625;
    # size 1 is under q_warn_cap 5: unchanged
    bid, ask, size, _, _ = _quote(q_prm, 250.0, 250.0, 0.0, 1.5e-4, 1.0, regime=WARNING)
    assert bid == pytest.approx(249.9030859375, abs=FINE)
    assert ask == pytest.approx(250.0969140625, abs=FINE)
    assert size == 1.0
    # spread_mult 3 at vol_ratio 3: half = (0.052109375 + 0.0125 * 3) * 3 = 0.268828125
    bid, ask, _, _, _ = _quote(q_prm, 250.0, 250.0, 0.0, 1.5e-4, 3.0, spread_mult=3.0)
    assert bid == pytest.approx(250 - 0.268828125, abs=FINE)
    assert ask == pytest.approx(250 + 0.268828125, abs=FINE)


def test_quote_half_spread_floor(plain_cfg):
    # gamma 0 and k_bps 100: 1 / k_usd = 0.025 / 100 = 0.00025 USD < edge_min 0.0125 -> half = 0.0125, then
    # + 0.5 bps * vol_ratio 0.25 = 0.003125 -> 0.015625 USD; a larger floor (2 bps = 0.05 USD) after the vol term
    # too: max(0.05 + 0.003125, 0.05) = 0.053125
    prm = record(plain_cfg, **{**QUOTE, "venues_gamma": [0.0] * 5, "venues_k_bps": [100.0] * 5})
    bid, ask, _, ok_b, ok_a = _quote(prm, 250.0, 250.0, 0.0, 1.5e-4, 0.25)
    assert bid == pytest.approx(250 - 0.015625, abs=FINE) and ask == pytest.approx(250 + 0.015625, abs=FINE)
    assert ok_b and ok_a
    prm = record(plain_cfg, **{**QUOTE, "venues_gamma": [0.0] * 5, "venues_k_bps": [100.0] * 5,
                               "mm_edge_local_min_bps": 2.0})
    bid, ask, _, _, _ = _quote(prm, 250.0, 250.0, 0.0, 1.5e-4, 0.25)
    assert ask - 250 == pytest.approx(0.053125, abs=FINE)
    # per venue: venue 1 with gamma 0.2, k_bps 1: half = 0.2 * 0.00140625 * 30 / 2 + 0.025 + 0.0125 = 0.04171875
    prm = record(plain_cfg, **{**QUOTE, "venues_gamma": [0.1, 0.2, 0.1, 0.1, 0.1],
                               "venues_k_bps": [0.5, 1.0, 0.5, 0.5, 0.5]})
    bid, ask, _, _, _ = _quote(prm, 250.0, 250.0, 0.0, 1.5e-4, 1.0, v=1)
    assert ask - 250 == pytest.approx(0.04171875, abs=FINE) and 250 - bid == pytest.approx(0.04171875, abs=FINE)


@PROPERTY
@given(mid=st.floats(50.0, 1000.0), fair_rel=st.floats(-0.01, 0.01), q=st.floats(-30.0, 30.0),
       sigma=st.floats(2e-5, 2e-3), vol_ratio=st.floats(0.25, 4.0), funding=st.floats(-0.003, 0.003),
       regime=st.sampled_from([NORMAL, WARNING]))
def test_quote_prices_on_the_grid_bid_floor_ask_ceil(plain_cfg, mid, fair_rel, q, sigma, vol_ratio, funding,
                                                     regime):
    # on a fine grid (0.01) and a coarse one (0.5, a multiple of it): both on their grids; the coarse bid is the
    # fine bid floored (at or below it, less than 0.5 below), the coarse ask the fine ask ceiled
    fair = mid * (1 + fair_rel)
    fine = _quote(record(plain_cfg, **{**QUOTE, "venues_tick_size": [0.01] * 5}), mid, fair, q, sigma, vol_ratio,
                  funding=funding, regime=regime)
    coarse = _quote(record(plain_cfg, **{**QUOTE, "venues_tick_size": [0.5] * 5}), mid, fair, q, sigma, vol_ratio,
                    funding=funding, regime=regime)
    for price, tick in ((fine[0], 0.01), (fine[1], 0.01), (coarse[0], 0.5), (coarse[1], 0.5)):
        assert on_grid(price, tick)
    assert fine[0] - 0.5 - 1e-9 < coarse[0] <= fine[0] + 1e-9
    assert fine[1] - 1e-9 <= coarse[1] < fine[1] + 0.5 + 1e-9
    assert fine[1] - fine[0] >= 2 * 0.5e-4 * mid - 1e-9  # at least twice edge_local_min (0.5 bps of mid) apart
    assert fine[2] == coarse[2]


def test_quote_size_reductions(plain_cfg, q_prm):
    # base 10, q 0, size_mult 1: 10; Warning -> min(10, 5) = 5; venue Warning -> 10 * 0.5 = 5; both -> 2.5
    prm = record(plain_cfg, **{**QUOTE, "venues_base_order_size": [10.0] * 5})
    assert _quote(prm, 250, 250, 0, 1.5e-4, 1.0)[2] == 10.0
    assert _quote(prm, 250, 250, 0, 1.5e-4, 1.0, regime=WARNING)[2] == 5.0
    assert _quote(prm, 250, 250, 0, 1.5e-4, 1.0, status=VENUE_WARNING)[2] == 5.0
    assert _quote(prm, 250, 250, 0, 1.5e-4, 1.0, regime=WARNING, status=VENUE_WARNING)[2] == 2.5
    # eta: base 1, q 5, size_mult 1/3: (1/3) / (1 + 0.1 * 5) = 2/9
    assert _quote(q_prm, 250, 250, 5.0, 1.5e-4, 1.0, size_mult=1 / 3)[2] == pytest.approx(2 / 9, rel=1e-14)
    # cap at max_order_size: base 30 -> 20
    assert _quote(record(plain_cfg, **{**QUOTE, "venues_base_order_size": [30.0] * 5}), 250, 250, 0, 1.5e-4,
                  1.0)[2] == 20.0


def test_quote_delta_ratio(plain_cfg):
    # size_eta 0 so that only the delta taper acts; fair 250.
    # vol_ratio 1: limit 100000. q 600: dollar delta 150000 -> rho 1.5 -> size x (2 - 1.5) = 0.5
    prm = record(plain_cfg, **{**QUOTE, "mm_size_eta": 0.0})
    _, _, size, ok_b, ok_a = _quote(prm, 250, 250, 600.0, 1.5e-4, 1.0)
    assert size == pytest.approx(0.5) and ok_b and ok_a
    # vol_ratio 2: limit 100000 / 2 = 50000; q -300 -> -75000 -> rho 1.5 -> 0.5
    assert _quote(prm, 250, 250, -300.0, 1.5e-4, 2.0)[2] == pytest.approx(0.5)
    # rho exactly 1 (q 400 -> 100000): no reduction
    assert _quote(prm, 250, 250, 400.0, 1.5e-4, 1.0)[2] == 1.0
    # rho 2 and more: no quote on either side
    for q in (800.0, 1000.0, -800.0):
        _, _, _, ok_b, ok_a = _quote(prm, 250, 250, q, 1.5e-4, 1.0)
        assert not ok_b and not ok_a


def test_quote_hard_limit_reduce_only(q_prm):
    # long: only the ask (a sell reduces |q|); short: only the bid; flat: nothing
    normal = _quote(q_prm, 250, 250, 3.0, 1.5e-4, 1.0)
    bid, ask, size, ok_b, ok_a = _quote(q_prm, 250, 250, 3.0, 1.5e-4, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (False, True)
    assert (bid, ask, size) == normal[:3]  # same prices and size as in Normal, one side only
    _, _, _, ok_b, ok_a = _quote(q_prm, 250, 250, -3.0, 1.5e-4, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (True, False)
    _, _, _, ok_b, ok_a = _quote(q_prm, 250, 250, 0.0, 1.5e-4, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (False, False)
    # reduce-only and Disabled: nothing
    _, _, _, ok_b, ok_a = _quote(q_prm, 250, 250, 3.0, 1.5e-4, 1.0, regime=HARD_LIMIT, status=DISABLED)
    assert not ok_b and not ok_a


@PROPERTY
@given(q=st.floats(-100.0, 100.0).filter(lambda x: x != 0.0), sigma=st.floats(2e-5, 2e-3),
       vol_ratio=st.floats(0.25, 4.0))
def test_quote_hard_limit_only_the_reducing_side(q_prm, q, sigma, vol_ratio):
    _, _, _, ok_b, ok_a = _quote(q_prm, 250, 250, q, sigma, vol_ratio, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (q < 0, q > 0)


def test_quote_disabled_and_nonpositive_bid(plain_cfg, q_prm):
    _, _, _, ok_b, ok_a = _quote(q_prm, 250, 250, 0.0, 1.5e-4, 1.0, status=DISABLED)
    assert not ok_b and not ok_a
    # mid 0.004 on a 0.01 grid: the bid floors to 0 -> no quote
    prm = record(plain_cfg, **{**QUOTE, "venues_tick_size": [0.01] * 5})
    bid, _, _, ok_b, ok_a = _quote(prm, 0.004, 0.004, 0.0, 1.5e-4, 1.0)
    assert bid <= 0 and not ok_b and not ok_a
    # base size 0 (the MM switched off): size 0, no quote on either side
    _, _, size, ok_b, ok_a = _quote(record(plain_cfg, **{**QUOTE, "venues_base_order_size": [0.0] * 5}), 250, 250,
                                    0.0, 1.5e-4, 1.0)
    assert size == 0.0 and not ok_b and not ok_a


# --------------------------------------------------------------------------------------------------
# Hedge (step 8). Three venues: mids 100, half-spreads 10, 20, 10 bps (0.1, 0.2, 0.1 USD), taker 5, 5, 10 bps, tox 0, 0, 0.5;
# band_base 4, floor 0.1, alpha 1, beta 1, max step 20, Warning x0.5, min slice 1e-4, max size 20.
# --------------------------------------------------------------------------------------------------

HEDGE = dict(hedge_band_base=4.0, hedge_band_mult_floor=0.1, hedge_alpha_hedge=1.0, hedge_beta_hedge=1.0,
             hedge_hedge_max_step=20.0, hedge_warning_step_mult=0.5, hedge_min_slice_tao=1e-4,
             venues_taker_fee_bps=[5.0, 5.0, 10.0, 5.0, 5.0], venues_max_order_size=[20.0] * 5,
             venues_hedge_allowed=[1.0] * 5)
HEDGE_MKT = market(3, mid=[100.0] * 3, half_spread=[0.001, 0.002, 0.001], depth=[1e6] * 3)


def _hedge(plain_cfg, q, band_mult=1.0, regime=NORMAL, status=(0, 0, 0), tox=(0.0, 0.0, 0.5), allowed=None,
           max_size=None, **hedge_over):
    fields = {**HEDGE, **hedge_over}
    if allowed is not None:
        fields["venues_hedge_allowed"] = [float(a) for a in allowed] + [1.0, 1.0]
    if max_size is not None:
        fields["venues_max_order_size"] = list(max_size) + [20.0, 20.0]
    prm = record(plain_cfg, **fields)
    dq = np.full(3, np.nan)
    any_slice = hedge_orders(prm, HEDGE_MKT, float(q), float(band_mult), regime, np.array(status, np.int64),
                             np.array(tox, float), dq)
    assert any_slice == bool(np.any(dq != 0.0))
    return dq


# cost = (half-spread + fee) mid = 0.1 + 0.05, 0.2 + 0.05, 0.1 + 0.1 = 0.15, 0.25, 0.2;
# weights 1 / (cost (1 + tox)) = 1/0.15, 1/0.25, 1/(0.2 * 1.5) = 20/3, 4, 10/3; sum 14; shares 10/21, 6/21, 5/21
SHARES = np.array([10 / 21, 6 / 21, 5 / 21])


def test_hedge_inside_band_is_none(plain_cfg):
    # band 4 * 1: |q| = 4 is not > 4; |q| = 3.9 and 0 inside; both sides -> no slices, dq all zero
    for q in (4.0, -3.9, 0.0, -4.0):
        assert _hedge(plain_cfg, q).tolist() == [0.0, 0.0, 0.0]
    # band_mult 0.5 -> band 2: q 1.99 inside
    assert _hedge(plain_cfg, 1.99, band_mult=0.5).tolist() == [0.0, 0.0, 0.0]


def test_hedge_step_and_allocation(plain_cfg):
    # q 10, band 4: step = -(10 - 4) * 1 = -6, split 10/21, 6/21, 5/21 -> -2.857, -1.714, -1.429
    dq = _hedge(plain_cfg, 10.0)
    close(dq, -6 * SHARES)
    assert dq.sum() == pytest.approx(-6.0, rel=1e-14)
    # short q -10: +6
    close(_hedge(plain_cfg, -10.0), 6 * SHARES)


def test_hedge_band_mult_and_floor(plain_cfg):
    # band_mult 0.5: band 2, q 10 -> -8
    close(_hedge(plain_cfg, 10.0, band_mult=0.5), -8 * SHARES)
    # band_mult 0.05 < floor 0.1: band 0.4, q 1 -> -0.6
    close(_hedge(plain_cfg, 1.0, band_mult=0.05), -0.6 * SHARES)


def test_hedge_warning_halving_alpha_and_clip(plain_cfg):
    # Warning: -6 * 0.5 = -3
    close(_hedge(plain_cfg, 10.0, regime=WARNING), -3 * SHARES)
    # alpha 0.5: -3; alpha 2 is clipped to 1: -6
    close(_hedge(plain_cfg, 10.0, hedge_alpha_hedge=0.5), -3 * SHARES)
    close(_hedge(plain_cfg, 10.0, hedge_alpha_hedge=2.0), -6 * SHARES)
    # q 50: excess 46 clipped to hedge_max_step 20; q -50 -> +20
    close(_hedge(plain_cfg, 50.0), -20 * SHARES)
    close(_hedge(plain_cfg, -50.0), 20 * SHARES)
    # Warning with q 50: 46 * 0.5 = 23, still clipped to 20
    close(_hedge(plain_cfg, 50.0, regime=WARNING), -20 * SHARES)


def test_hedge_only_healthy_hedge_allowed_venues(plain_cfg):
    # venue 0 in Warning: weights 0, 4, 10/3, sum 22/3 -> shares 0, 6/11, 5/11
    close(_hedge(plain_cfg, 10.0, status=(VENUE_WARNING, 0, 0)), -6 * np.array([0, 6 / 11, 5 / 11]))
    # venue 2 Disabled: weights 20/3, 4, 0 -> shares 5/8, 3/8, 0
    close(_hedge(plain_cfg, 10.0, status=(0, 0, DISABLED)), -6 * np.array([5 / 8, 3 / 8, 0]))
    # venue 1 not allowed to hedge: weights 20/3, 0, 10/3 -> shares 2/3, 0, 1/3
    close(_hedge(plain_cfg, 10.0, allowed=(True, False, True)), -6 * np.array([2 / 3, 0, 1 / 3]))
    # no eligible venue: nothing, and no NaN
    assert _hedge(plain_cfg, 10.0, status=(DISABLED, VENUE_WARNING, DISABLED)).tolist() == [0.0, 0.0, 0.0]
    # toxicity only re-weights: tox 0 everywhere -> weights 20/3, 4, 5 (sum 47/3) -> 20/47, 12/47, 15/47
    close(_hedge(plain_cfg, 10.0, tox=(0.0, 0.0, 0.0)), -6 * np.array([20 / 47, 12 / 47, 15 / 47]))


def test_hedge_slice_cap_and_min_slice(plain_cfg):
    # max_order_size 2 on venue 0: its slice 60/21 = 2.857 is capped to 2 (the rest is not re-allocated)
    close(_hedge(plain_cfg, 10.0, max_size=(2.0, 20.0, 20.0)), [-2.0, -6 * 6 / 21, -6 * 5 / 21])
    # q 4.0003: excess 0.0003 -> slices 1.4286e-4, 8.571e-5, 7.143e-5: the last two are under 1e-4, dropped
    dq = _hedge(plain_cfg, 4.0003)
    assert dq[0] == pytest.approx(-0.0003 * 10 / 21, rel=1e-6)
    assert dq[1] == 0.0 and dq[2] == 0.0
    # q 4.0001: every slice under 1e-4 -> nothing at all (and hedge_orders says so)
    assert _hedge(plain_cfg, 4.0001).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("q,step", [(10.0, -6.0), (3.0, 0.0), (-50.0, 20.0)])
def test_hedge_cases_table(plain_cfg, q, step):
    # the old per-run layout: q = 10, 3 (inside), -50 -> steps -6, 0, +20
    close(_hedge(plain_cfg, q), step * SHARES)


@PROPERTY
@given(q=st.floats(-200.0, 200.0), band_mult=st.floats(0.01, 1.0), regime=st.sampled_from([NORMAL, WARNING]),
       tox=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3))
def test_hedge_moves_toward_the_band_and_never_past_it(plain_cfg, q, band_mult, regime, tox):
    # every slice reduces |q|, the total is at most hedge_max_step, and q after hedging stays outside or on the
    # band (alpha <= 1: the hedge closes at most the excess)
    dq = _hedge(plain_cfg, q, band_mult=band_mult, regime=regime, tox=tuple(tox))
    band = 4.0 * max(band_mult, 0.1)
    total = float(dq.sum())
    assert np.all(dq * q <= 0.0)
    assert abs(total) <= 20.0 + 1e-9
    if abs(q) <= band:
        assert total == 0.0
    else:
        assert abs(q + total) >= band - 1e-9
        # only slices under min_slice (1e-4) are dropped: the largest share is >= 1/3, so that needs step < 3e-4
        step = (abs(q) - band) * (0.5 if regime == WARNING else 1.0)
        assert total != 0.0 or step < 3e-4 + 1e-12


# --------------------------------------------------------------------------------------------------
# Random streams: the inline SFC64 is numpy's bit for bit; ziggurat normals are standard normal.
# --------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _uniforms(s, n):
    out = np.empty(n)
    for i in range(n):
        out[i], s = uniform(s)
    return out


@numba.njit(cache=True)
def _raw(s, n):
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i], s = next_u64(s)
    return out


@numba.njit(cache=True)
def _normals(s, n):
    out = np.empty(n)
    for i in range(n):
        out[i], s = normal(s)
    return out


@numba.njit(cache=True)
def _tail_count(s, n, r):
    count = 0
    for _ in range(n):
        x, s = normal(s)
        count += abs(x) > r
    return count


def _state(seed):
    return tuple(seed_states(np.array([seed]))[0])


def _u64(state):
    """A stream state handed back to Python (plain ints) as the uint64 tuple the generators are typed for."""
    return tuple(np.uint64(x) for x in state)


@pytest.mark.parametrize("seed", [0, 1, 12345, 2 ** 40 + 7])
def test_sfc64_is_numpys_bit_for_bit(seed):
    state = seed_states(np.array([seed]))[0]
    assert state.tolist() == [int(x) for x in np.random.SFC64(seed).state["state"]["state"]]
    np.testing.assert_array_equal(_raw(_state(seed), 5000), np.random.SFC64(seed).random_raw(5000))
    np.testing.assert_array_equal(_uniforms(_state(seed), 5000),
                                  np.random.Generator(np.random.SFC64(seed)).random(5000))


def test_seed_states_one_stream_per_run():
    # the states of a batch are each seed's own, in order: run 1 of seeds (7, 8, 9) is seed 8 alone
    batch = seed_states(np.array([7, 8, 9]))
    assert batch.shape == (3, 4) and batch.dtype == np.uint64
    np.testing.assert_array_equal(batch[1], seed_states(np.array([8]))[0])
    assert len({tuple(r) for r in batch.tolist()}) == 3


def test_ziggurat_normals_pass_ks_test():
    from scipy import stats

    x = _normals(_state(20240601), 200_000)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(x.mean()) < 4 / math.sqrt(len(x))
    assert abs(x.var() - 1.0) < 4 * math.sqrt(2 / len(x))
    assert abs(np.mean(np.abs(x) > 1.959964) - 0.05) < 4 * math.sqrt(0.05 * 0.95 / len(x))
    assert abs(np.mean(x > 0) - 0.5) < 4 * math.sqrt(0.25 / len(x))


def test_ziggurat_is_numpys_layout():
    # fast-path draws equal numpy's ziggurat (same layers, same bits) to table precision, draw for draw
    np.testing.assert_allclose(_normals(_state(7), 2000),
                               np.random.Generator(np.random.SFC64(7)).standard_normal(2000), rtol=1e-9, atol=0)


def test_ziggurat_tail_beyond_r_at_the_right_rate():
    # P(|Z| > 3.6541528853610088) = erfc(R / sqrt 2) = 2.58e-4: 50M draws expect 12,902 +- 114. A tail whose
    # rejected samples restart the whole ziggurat instead of the tail (Marsaglia's tail accepts ~93 %) gives
    # ~12,000, 8 standard errors short
    n = 50_000_000
    expected = n * math.erfc(ZIGGURAT_R / math.sqrt(2))
    count = _tail_count(_state(99), n, ZIGGURAT_R)
    assert abs(count - expected) < 4 * math.sqrt(expected)


def test_ziggurat_tail_is_reached_on_both_sides():
    # the tail (|x| > R) is sampled, on both sides, beyond the last layer: values up to ~5 appear in 5M draws
    x = _normals(_state(3), 5_000_000)
    tail = x[np.abs(x) > ZIGGURAT_R]
    assert (tail > 0).sum() > 300 and (tail < 0).sum() > 300
    assert np.abs(tail).max() > 4.5


# --------------------------------------------------------------------------------------------------
# Through the kernel (simulate): hedge execution, fees and cost; mark to fair, funding and the observation;
# fills from the tick's orders; kills and regimes.
# --------------------------------------------------------------------------------------------------

MM_OFF = "engine.venues.base_order_size=[0,0,0,0,0]"
CALM = ("market=calm", "market.regime.p_calm_to_stressed=0", "market.jumps.rate=0", "market.outage.p_start=0")


def test_hedge_execution_taker_fees_and_hedge_cost():
    # MM off, calm market; 30 TAO opened on venue 0 at 250, no fee. Band 10, max step 20, alpha 1.
    # Tick 0 acts on the initial market (mid_v = 250 exp(basis_mean_v), half-spread h_v = bps_v / 1e4, depth
    # mean): every venue Healthy (no local vol yet: tox 0), vol_ratio <= 1 so band_mult 1:
    #   step = -(30 - 10) = -20, split by 1 / ((h_v + fee_v) mid_v); each slice sells at
    #   mid_v (1 - h_v - 0.1 |dq_v| mid_v / depth_v) and pays fee_v of |dq_v| price_v.
    # Then q = 10 sits on the band: no more hedging. hedge_cost_usd = sum |dq| |price - mid| + fee.
    p, res = run_rows([*CALM, "engine.initial_q_tao=30", MM_OFF, "engine.hedge.band_base=10",
                       "engine.hedge.hedge_max_step=20", "engine.hedge.alpha_hedge=1",
                       "engine.hedge.min_slice_tao=1e-4", "engine.venues.hedge_allowed=[true,true,true,true,true]",
                       "engine.venues.taker_fee_bps=[5,4,5,6,5]", "market.impact_coeff=0.1",
                       "engine.volatility.sigma_min=2e-5", "engine.volatility.vol_ref=1.5e-4",
                       "engine.risk.delta_hard_limit_usd_base=1e9", "engine.risk.daily_loss_limit=1e9"], 8, [3])
    rows = res.rows.of(0)
    prm = p.table[0]
    mid = 250.0 * np.exp(prm["basis_mean"])
    h = prm["spread_half_bps"] / 1e4
    depth = prm["depth_mean_usd"]
    fee_rate = np.array([5, 4, 5, 6, 5]) / 1e4
    weight = 1.0 / ((h + fee_rate) * mid)
    dq = -20.0 * weight / weight.sum()
    price = mid * (1 - (h + 0.1 * np.abs(dq) * mid / depth))
    fees = np.abs(dq) * price * fee_rate
    r0 = rows[0]
    assert r0["hedge_volume_tao"] == pytest.approx(20.0, rel=1e-12)
    assert r0["q_global_tao"] == pytest.approx(10.0, rel=1e-12)
    close(r0["venue_q_tao"], [30.0 + dq[0], *dq[1:]], rel=1e-12)
    assert r0["fees_usd"] == pytest.approx(fees.sum(), rel=1e-12)
    # venue 0 realises (price_0 - 250) on what it sells; the new shorts realise nothing; fees come off
    assert r0["pnl_realised"] == pytest.approx(-dq[0] * (price[0] - 250.0) - fees.sum(), rel=1e-10)
    for r in rows[1:]:
        assert r["hedge_volume_tao"] == 0.0 and r["fees_usd"] == r0["fees_usd"]
        assert r["q_global_tao"] == pytest.approx(10.0, rel=1e-12)
    assert (rows["mm_fills"] == 0).all() and (rows["mm_quoted_sides"] == 0).all()
    cost = float(np.sum(np.abs(dq) * np.abs(price - mid) + fees))
    assert res.metrics["hedge_cost_usd"][0] == pytest.approx(cost, rel=1e-10)
    # the half-spread and impact part alone is about 20 TAO x 250 x (1 to 2.5 bps + impact), a real cost
    assert cost - fees.sum() > 20 * 250 * 1e-4
    # no MM fills: no MM metrics
    assert res.metrics["mm_fill_rate"][0] == 0.0 and res.calibration["mm_notional"][0] == 0.0


def _replay_market(prm, seed, ticks):
    """The market path the kernel sees for one run without quotes (the stream feeds market_step alone):
    path[t] is the market tick t acts on, with tick t's orders."""
    path = np.zeros(ticks + 1, market_state_dtype(5))
    initial_market(prm, path[0])
    stream = _u64(seed_states(np.array([seed]))[0])
    for t in range(ticks):
        stream, _ = market_step(prm, path[t], path[t + 1], stream, t, prm["tick_ms"] / 1000.0)
        stream = _u64(stream)
    return path


def test_mark_to_fair_funding_and_observation_in_the_engine():
    # Calm market, MM off, hedging off (band 1e9): only the 60 TAO opened on venue 0 at 250 with no fee. Then
    # every tick, with m0, f0 venue 0's mid and funding and S the row's fair value (spec 3, 5, 10, 11):
    #   pnl_realised = 0, fees 0; q = 60; delta = 60 S; basis = 60 (m0 - S); unrealised = 60 (S - 250);
    #   pnl_funding falls by 60 f0 m0 dt / 28800 per tick; pnl_total = unrealised + funding;
    #   y_mid = sum(depth * mid) / sum(depth) over the venues with a fresh book; market_orders and alpha are
    #   the tick's (the replayed market's)
    ticks, seed = 40, 8
    p, res = run_rows([*CALM, "engine.initial_q_tao=60", "engine.hedge.band_base=1e9", MM_OFF,
                       "market.funding.mean=[0.002,0.001,-0.001,0.0005,0.0]", "market.outage.p_start=0.05",
                       "market.outage.mean_ticks=3", "engine.risk.daily_loss_limit=1e9"], ticks, [seed])
    rows = res.rows.of(0)
    assert len(rows) == ticks and rows["t"].tolist() == list(range(ticks))
    prm = p.table[0]
    path = _replay_market(prm, seed, ticks)
    stale = prm["book_stale_ms"] / prm["tick_ms"]
    funding_before = 0.0
    saw_stale = False
    for t, r in enumerate(rows):
        mkt = path[t]
        fair = r["fair_value"]
        assert r["pnl_realised"] == 0.0 and r["fees_usd"] == 0.0
        assert r["venue_q_tao"].tolist() == [60.0, 0.0, 0.0, 0.0, 0.0]
        assert r["q_global_tao"] == 60.0
        assert r["dollar_delta_usd"] == pytest.approx(60 * fair, rel=1e-14)
        assert r["basis_usd"] == pytest.approx(60 * (mkt["mid"][0] - fair), rel=1e-9, abs=1e-9)
        assert r["basis_gross_usd"] == pytest.approx(abs(60 * (mkt["mid"][0] - fair)), rel=1e-9, abs=1e-9)
        assert r["pnl_unrealised"] == pytest.approx(60 * (fair - 250.0), rel=1e-9, abs=1e-9)
        step = -60 * mkt["funding"][0] * mkt["mid"][0] * prm["tick_ms"] / 1000.0 / 28800
        assert r["pnl_funding"] - funding_before == pytest.approx(step, rel=1e-9)
        funding_before = r["pnl_funding"]
        assert r["pnl_total"] == pytest.approx(r["pnl_unrealised"] + r["pnl_funding"], rel=1e-12)
        usable = (mkt["age"] <= stale) & (mkt["depth"] > 0)
        saw_stale |= not usable.all()
        if usable.any():
            y = float(np.sum(mkt["depth"][usable] * mkt["mid"][usable]) / np.sum(mkt["depth"][usable]))
            assert r["y_mid"] == pytest.approx(y, rel=1e-12)
        assert r["market_orders"] == mkt["orders"].sum()
        assert r["alpha"] == mkt["alpha"]
        assert r["true_fair"] == pytest.approx(math.exp(mkt["x"]), rel=1e-14)
        assert abs(math.log(fair / r["true_fair"])) < 5e-3  # the filter follows the market in a calm market
    assert saw_stale, "the outages must make some books stale"
    assert rows["market_orders"].sum() > 0
    # the funding mean of venue 0 is positive: a long pays funding
    assert funding_before < 0


def test_disabled_venues_still_feed_the_fair_value():
    # thresholds 0: every venue is Disabled for toxicity on every tick. Improvement of v2: they still feed the
    # observation, so the fair value keeps following the mids (in v1 it froze); Disabled venues neither quote
    # nor hedge (30 TAO stay outside a band of 1)
    ticks, seed = 60, 5
    p, res = run_rows([*CALM, "engine.initial_q_tao=30", "engine.hedge.band_base=1",
                       "engine.toxicity.tox_med_threshold=0", "engine.toxicity.tox_high_threshold=0",
                       "engine.risk.daily_loss_limit=1e9", "engine.risk.delta_hard_limit_usd_base=1e9"], ticks,
                      [seed])
    rows = res.rows.of(0)
    assert (rows["venue_status"] == DISABLED).all()
    assert (rows["mm_quoted_sides"] == 0).all() and (rows["hedge_volume_tao"] == 0).all()
    path = _replay_market(p.table[0], seed, ticks)
    for t, r in enumerate(rows):
        mkt = path[t]
        y = float(np.sum(mkt["depth"] * mkt["mid"]) / np.sum(mkt["depth"]))
        assert r["y_mid"] == pytest.approx(y, rel=1e-12)
    assert len(set(rows["fair_value"].tolist())) == ticks  # it moves every tick
    assert np.max(np.abs(np.log(rows["fair_value"] / rows["y_mid"]))) < 1e-3


def test_mm_fees_maker_minus_rebate():
    # hedging off (band 1e9). Maker fees 0.2, 0.1, 0.2, 0.2, 0.2 bps; rebates 0.1, 0, 0.1, 0.1, 0.1: net 0.1 bps
    # on every venue, so each tick's fees are 0.1 bps of its MM notional (volume x a quote price within a few
    # bps of the fair value)
    base = ["engine.hedge.band_base=1e9", "engine.venues.maker_fee_bps=[0.2,0.1,0.2,0.2,0.2]",
            "engine.risk.daily_loss_limit=1e9", "engine.risk.delta_hard_limit_usd_base=1e9"]
    _, res = run_rows([*base, "engine.venues.maker_rebate_bps=[0.1,0,0.1,0.1,0.1]"], 1500, [1])
    rows = res.rows.of(0)
    step_fees = np.diff(np.concatenate([[0.0], rows["fees_usd"]]))
    filled = rows["mm_volume_tao"] > 0
    assert rows["mm_fills"].sum() > 50 and (rows["hedge_volume_tao"] == 0).all()
    assert (step_fees[~filled] == 0).all()
    ratio = step_fees[filled] / (rows["mm_volume_tao"][filled] * rows["fair_value"][filled])
    np.testing.assert_allclose(ratio, 0.1e-4, rtol=5e-3)
    # rebates equal to the fees: no fees at all; rebates above them: the MM is paid (fees fall)
    _, res = run_rows([*base, "engine.venues.maker_rebate_bps=[0.2,0.1,0.2,0.2,0.2]"], 500, [1])
    rows = res.rows.of(0)
    assert rows["mm_fills"].sum() > 10 and np.abs(rows["fees_usd"]).max() < 1e-9
    _, res = run_rows([*base, "engine.venues.maker_rebate_bps=[0.5,0.5,0.5,0.5,0.5]"], 500, [1])
    rows = res.rows.of(0)
    assert rows["fees_usd"][-1] < 0 and np.all(np.diff(rows["fees_usd"]) <= 0)


def test_fills_are_the_orders_size_when_smaller_than_the_quote():
    # every market order is 100 USD (median 100, log std 0) = 0.4 TAO at 250 and every quote is exactly 1 TAO
    # (base 1, size_eta 0, c_size 0, no venue Warning, hedging off, delta limits far away), about one order a
    # tick (0.1 per s per venue and side): a quote reached by k orders fills min(0.4 k, 1), a crossed one 1. So a tick with one fill has volume 0.4, 0.8 or 1 (up to the
    # mid moving by a few bps around 250), and most fills are one order's 0.4 TAO
    _, res = run_rows(["engine.hedge.band_base=1e9", "engine.venues.base_order_size=[1,1,1,1,1]",
                       "engine.mm.size_eta=0", "engine.volatility.c_size=0", "market.flow.order_median_usd=100",
                       "market.flow.order_sigma=0", "market.flow.touch_fill_prob=1", "market.flow.rate=[0.1,0.1,0.1,0.1,0.1]",
                       "engine.toxicity.tox_med_threshold=2", "engine.toxicity.tox_high_threshold=2",
                       "engine.risk.daily_loss_limit=1e9", "engine.risk.delta_hard_limit_usd_base=1e9"], 2000, [2])
    rows = res.rows.of(0)
    one = rows[rows["mm_fills"] == 1]
    assert len(one) > 100
    vol = one["mm_volume_tao"]
    near = lambda x: np.abs(vol - x) < 0.01 * x  # noqa: E731 (one order = 100 USD / mid, mid within 1 % of 250)
    assert np.all(near(0.4) | near(0.8) | near(1.0))
    assert near(0.4).mean() > 0.5
    assert np.all(rows["mm_volume_tao"] <= rows["mm_fills"] + 1e-12)


def test_kill_switch_fires_on_first_losing_tick_and_freezes_the_run():
    # volatile market, 60 TAO held (hedging off: band 1e9), seeds 11..18; odd runs have a 15 USD loss limit,
    # even runs 1e12 (never reached). A run whose pnl_total reaches -15 is killed on that very tick: its row is
    # the last one, in HardLimit, num_ticks = time_to_kill + 1.
    limits = [1e12, 15.0] * 4
    ticks = 300
    p, res = run_rows(["market=volatile", "engine.initial_q_tao=60", "engine.hedge.band_base=1e9"], ticks,
                      list(range(11, 19)), per_run={"engine.risk.daily_loss_limit": limits},
                      record_runs=tuple(range(8)))
    killed = []
    for i, limit in enumerate(limits):
        rows = res.rows.of(i)
        m = res.run_metrics(i)
        assert rows["t"].tolist() == list(range(len(rows)))
        # every row's regime and kill follow from its own numbers (step 11 on the post-fill state)
        for r in rows:
            regime, hit = risk_regime(p.table[i], r["pnl_total"], r["dollar_delta_usd"], r["basis_usd"],
                                      r["delta_limit_usd"])
            assert (int(regime), bool(hit)) == (int(r["risk_regime"]), bool(r["kill_switch"]))
        losing = np.flatnonzero(rows["pnl_total"] <= -limit)
        if len(losing):
            first = int(losing[0])
            killed.append(i)
            assert first == len(rows) - 1
            assert rows[-1]["kill_switch"] == 1.0 and rows[-1]["risk_regime"] == HARD_LIMIT
            assert not rows["kill_switch"][:-1].any()
            assert m["kill_switch"] is True and m["time_to_kill"] == first
            assert m["num_ticks"] == first + 1 == m["time_to_kill"] + 1
            assert m["final_pnl"] == rows[-1]["pnl_total"]
        else:
            assert len(rows) == ticks
            assert m["kill_switch"] is False and m["time_to_kill"] is None and m["num_ticks"] == ticks
            assert not rows["kill_switch"].any()
    # the scenario really exercises kills mid-run while the other runs go on to the end
    assert killed and set(killed) <= {1, 3, 5, 7}
    assert sum(0 < res.run_metrics(i)["time_to_kill"] < ticks - 1 for i in killed) >= 1
    assert all(res.run_metrics(i)["num_ticks"] == ticks for i in (0, 2, 4, 6))


def test_kill_switch_on_tick_zero():
    # MM off; 20 TAO opened at 250 and hedged at tick 0 (band 5.625: 14.375 TAO sold) pays the taker fee
    # 14.375 * ~250 * 5 bps = 1.80 USD plus its half-spread and impact: pnl_total < -1.8 after tick 0, so a 1 USD
    # loss limit kills at t = 0 (num_ticks 1, one row); a 1e12 limit runs all 20 ticks.
    _, res = run_rows(["engine.initial_q_tao=20", MM_OFF, "engine.hedge.band_base=5.625",
                       "engine.hedge.hedge_max_step=20", "engine.hedge.alpha_hedge=1",
                       "engine.venues.taker_fee_bps=[5,5,5,5,5]", "engine.risk.delta_hard_limit_usd_base=1e9"],
                      20, [11, 11], per_run={"engine.risk.daily_loss_limit": [1.0, 1e12]}, record_runs=(0, 1))
    m0, m1 = res.run_metrics(0), res.run_metrics(1)
    assert m0["time_to_kill"] == 0 and m0["num_ticks"] == 1 and m0["kill_switch"] is True
    assert m0["final_pnl"] <= -1.8
    rows = res.rows.of(0)
    assert len(rows) == 1 and rows[0]["kill_switch"] == 1.0 and rows[0]["risk_regime"] == HARD_LIMIT
    assert rows[0]["hedge_volume_tao"] == pytest.approx(14.375, rel=1e-12)
    assert m1["num_ticks"] == 20 and m1["kill_switch"] is False and len(res.rows.of(1)) == 20
    # before the kill both runs are the same run (same seed): tick 0 rows agree but for the kill and regime
    assert res.rows.of(1)[0]["pnl_total"] == rows[0]["pnl_total"]


def test_regimes_warning_and_hard_limit_from_delta_through_simulate():
    # 60 TAO held (no hedging, MM off) at ~250 is a ~15000 USD delta. With the vol-ratio floor of the limit at 4
    # (= vol_ratio_max) the limit is base / 4 whatever the volatility: base 80000 -> 20000, and
    # 15000 >= 0.7 * 20000 = 14000 is Warning; base 48000 -> 12000 <= 15000: HardLimit, without a kill
    _, res = run_rows([*CALM, "engine.initial_q_tao=60", "engine.hedge.band_base=1e9", MM_OFF,
                       "engine.volatility.vol_ratio_max=4", "engine.risk.delta_limit_vol_ratio_floor=4",
                       "engine.risk.delta_warn_frac=0.7", "engine.risk.daily_loss_limit=1e9",
                       "engine.risk.basis_hard_limit_usd=1e9"], 20, [5, 5],
                      per_run={"engine.risk.delta_hard_limit_usd_base": [80000.0, 48000.0]}, record_runs=(0, 1))
    warn, hard = res.rows.of(0), res.rows.of(1)
    assert np.all(warn["delta_limit_usd"] == 20000.0) and np.all(hard["delta_limit_usd"] == 12000.0)
    assert np.all(np.abs(warn["dollar_delta_usd"] - 15000.0) < 500.0)
    assert np.all(warn["risk_regime"] == WARNING) and np.all(hard["risk_regime"] == HARD_LIMIT)
    assert not hard["kill_switch"].any() and res.run_metrics(1)["num_ticks"] == 20
    assert res.run_metrics(0)["frac_warning"] == 1.0 and res.run_metrics(1)["frac_hard"] == 1.0
