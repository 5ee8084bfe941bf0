"""Hand-worked cases for the engine's step functions (ENGINE_SPEC sections 3 and 5).

Each test calls one compiled step of `paraphina.engine` (strategy, ledger, rng, the kernel through
`simulate`) on one run's parameter record, `params.table[0]`. Every expected value is worked out by hand in
the comment next to it (from the spec's formulas and the numbers of the case), not copied from a run of the
code. The market's steps are in tests/test_engine_steps_market.py.
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
from paraphina.engine.kernel import draw_tick
from paraphina.engine.ledger import apply_fill
from paraphina.engine.market import draw_counts, initial_market, market_state_dtype, market_step
from paraphina.engine.params import build_params
from paraphina.engine.rng import ZIGGURAT_R, next_u64, normal, seed_states, uniform
from paraphina.engine.simulate import RowRequest, Threads, simulate
from paraphina.engine.strategy import (DISABLED, HARD_LIMIT, HEALTHY, NORMAL, VENUE_WARNING, WARNING, delta_limit,
                                       fair_observation, funding_payment, hedge_orders, kalman_step, local_vol_step,
                                       mark_to_fair, measurement_noise, quote, quote_fills, risk_regime,
                                       taker_price, venue_health, vol_scalars)

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SERIAL = Threads(threads=1, serial_below=1_000_000)


def params_of(plain_cfg, runs=1, per_run=None, engine=None, market=None, **fields):
    """The default parameter table (deep copies of the config dicts, `engine` / `market` merged in by
    section) with record fields set: `params_of(cfg, hedge_band_base=4.0)`."""
    eng, mkt = copy.deepcopy(plain_cfg["engine"]), copy.deepcopy(plain_cfg["market"])
    for tree, over in ((eng, engine or {}), (mkt, market or {})):
        for section, values in over.items():
            tree[section].update(values) if isinstance(values, dict) else tree.__setitem__(section, values)
    p = build_params(eng, mkt, runs, per_run)
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


# --------------------------------------------------------------------------------------------------
# The config's defaults are the spec's (sections 3 and 6), so the hand cases below use the real numbers.
# --------------------------------------------------------------------------------------------------

def test_config_defaults_match_spec(plain_cfg):
    e = plain_cfg["engine"]
    assert e["tick_ms"] == 1000
    assert e["book"] == {"stale_ms": 1000, "min_healthy_for_kf": 2, "max_mid_jump_pct": 0.02,
                         "max_consecutive_rejects": 3}
    assert e["kalman"] == {"q_base": 1e-6, "r_a": 1e-6, "r_b": 100.0, "r_min": 1e-8, "r_max": 1e-2, "p_init": 1.0}
    v = e["volatility"]
    assert (v["fv_vol_alpha_short"], v["fv_vol_alpha_long"], v["sigma_min"], v["vol_ratio_min"],
            v["vol_ratio_max"], v["c_spread"], v["c_size"], v["c_band"]) == (0.2, 0.05, 0.001, 0.25, 4.0, 1, 2, 1)
    r = e["risk"]
    assert (r["delta_warn_frac"], r["basis_hard_limit_usd"], r["basis_warn_frac"], r["pnl_warn_frac"],
            r["spread_warn_mult"], r["q_warn_cap"]) == (0.7, 10000.0, 0.7, 0.5, 1.5, 5.0)
    m = e["mm"]
    assert (m["quote_horizon_sec"], m["edge_local_min"], m["edge_vol_mult"], m["basis_weight"],
            m["funding_weight"]) == (30.0, 0.5, 0.2, 0.3, 0.3)
    h = e["hedge"]
    assert (h["hedge_max_step"], h["alpha_hedge"], h["beta_hedge"], h["min_slice_tao"]) == (20.0, 1.0, 1.0, 1e-4)
    t = e["toxicity"]
    assert (t["vol_tox_scale"], t["tox_med_threshold"], t["tox_high_threshold"]) == (0.5, 0.6, 0.9)
    ven = e["venues"]
    assert ven["names"] == ["extended", "hyperliquid", "aster", "lighter", "paradex"]
    assert ven["maker_fee_bps"] == [2.0, 1.5, 2.0, 2.0, 2.0]
    assert ven["taker_fee_bps"] == [5.0] * 5
    assert ven["gamma"] == [0.10, 0.09, 0.11, 0.10, 0.10]
    assert ven["k"] == [1.5, 1.6, 1.4, 1.5, 1.5]
    assert ven["hedge_allowed"] == [True] * 5
    # balanced centre (section 6)
    assert (h["band_base"], m["size_eta"], v["vol_ref"], r["delta_hard_limit_usd_base"], r["daily_loss_limit"],
            e["initial_q_tao"]) == (5.625, 0.10, 0.028125, 100000.0, 5000.0, 0.0)


@pytest.mark.parametrize("profile,knobs", [
    ("conservative", (2.62125, 0.0466, 0.028125, 46600.0, 2000.0, 0.0)),
    ("aggressive", (4.86, 0.0864, 0.028125, 86400.0, 2000.0, 0.0)),
    ("balanced", (5.625, 0.10, 0.028125, 100000.0, 5000.0, 0.0)),
])
def test_profiles_match_spec_table(profile, knobs):
    e = to_plain(compose_config([f"+profile={profile}", "ticks=5"], environ={}))["engine"]
    got = (e["hedge"]["band_base"], e["mm"]["size_eta"], e["volatility"]["vol_ref"],
           e["risk"]["delta_hard_limit_usd_base"], e["risk"]["daily_loss_limit"], e["initial_q_tao"])
    assert got == knobs


def test_params_record_fields_are_config_paths(plain_cfg):
    # one record per run; fields named by path without the section; venue knobs have one value per venue
    p = params_of(plain_cfg, runs=3, per_run={"engine.hedge.band_base": [1.0, 2.0, 3.0]})
    assert p.table.shape == (3,)
    assert p.table["hedge_band_base"].tolist() == [1.0, 2.0, 3.0]
    prm = p.table[1]
    assert prm["mm_size_eta"] == 0.1 and prm["s0"] == 250.0 and prm["impact_coeff"] == 20.0
    assert prm["venues_gamma"].tolist() == [0.10, 0.09, 0.11, 0.10, 0.10]
    assert prm["venues_hedge_allowed"].tolist() == [1.0] * 5
    assert prm["regime_sigma_calm"] == 0.0006 and prm["fills_intensity"].tolist() == [1.0] * 5


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
    # mid 250, spread 0.1, depth 2e6, impact_coeff 20:
    # sell 14.375: slip = 0.05 + 20 * 14.375 / 2e6 * 250 = 0.05 + 0.0359375 -> 249.9140625
    # buy 2: slip = 0.05 + 20 * 2 / 2e6 * 250 = 0.055 -> 250.055
    prm = record(plain_cfg)
    mkt = market(5, mid=[250.0] * 5, spread=[0.1] * 5, depth=[2e6] * 5)
    assert taker_price(prm, mkt, 0, -14.375) == pytest.approx(249.9140625, rel=1e-14)
    assert taker_price(prm, mkt, 3, 2.0) == pytest.approx(250.055, rel=1e-14)


# --------------------------------------------------------------------------------------------------
# Kalman filter (step 3): observation, measurement noise, predict / update / reject / re-anchor.
# --------------------------------------------------------------------------------------------------

KF = dict(kalman_q_base=0.01, kalman_r_a=0.01, kalman_r_b=100.0, kalman_r_min=0.01, kalman_r_max=1.0,
          kalman_p_init=1.0)


@pytest.fixture(scope="module")
def kf_prm(plain_cfg):
    return record(plain_cfg, **KF)


def _kalman(prm, xhat, p, rejects, has_fair, observed, y, spread=1.0, depth=1000.0, dt=1.0):
    """One filter step from an observation of 2 usable venues (or none)."""
    r = measurement_noise(prm, spread, depth)
    out = kalman_step(prm, xhat, math.exp(xhat), p, float(rejects), has_fair, 2.0 if observed else 0.0, y, r, dt)
    return float(out[0]), float(out[1]), float(out[2]), bool(out[3])


def test_fair_observation_usable_venues():
    # mids 100, 102, 110, 90; depths 1e6, 3e6, 2e6, 0; spreads 0.1, 0.2, 0.3, 0.4; ages 0, 1, 2, 0; stale after
    # 1 tick: venue 2 is stale (age 2 > 1), venue 3 has no depth. Usable 0 and 1:
    # y = (1e6 * 100 + 3e6 * 102) / 4e6 = 101.5; spread (0.1 + 0.2) / 2 = 0.15; depth 4e6 / 2 = 2e6
    mkt = market(4, mid=[100.0, 102.0, 110.0, 90.0], depth=[1e6, 3e6, 2e6, 0.0], spread=[0.1, 0.2, 0.3, 0.4],
                 age=[0.0, 1.0, 2.0, 0.0])
    healthy = np.zeros(4, np.int64)
    n, y, spread, depth = fair_observation(mkt, healthy, 1.0)
    assert (n, depth) == (2.0, 2e6)
    assert y == pytest.approx(101.5, rel=1e-15) and spread == pytest.approx(0.15, rel=1e-15)
    # a venue in Warning still observes; a Disabled one does not (venue 1 Disabled: venue 0 alone, y = 100)
    assert fair_observation(mkt, np.array([VENUE_WARNING, VENUE_WARNING, 0, 0]), 1.0)[:2] == (2.0, 101.5)
    assert fair_observation(mkt, np.array([HEALTHY, DISABLED, 0, 0]), 1.0) == (1.0, 100.0, 0.1, 1e6)
    # with a longer staleness allowance (2 ticks) venue 2 joins: y = (100e6 + 306e6 + 220e6) / 6e6 = 104.333
    assert fair_observation(mkt, healthy, 2.0)[1] == pytest.approx(626 / 6, rel=1e-14)
    # nothing usable: count 0 and NaN means
    n, y, spread, depth = fair_observation(mkt, np.full(4, DISABLED), 1.0)
    assert n == 0.0 and math.isnan(y) and math.isnan(spread) and math.isnan(depth)


def test_measurement_noise_hand_and_clip(kf_prm, plain_cfg):
    # R = 0.01 + 0.01 * 1^2 + 100 / 1000 = 0.12; depth 1: 100.02 -> r_max 1; tiny: r_min
    assert measurement_noise(kf_prm, 1.0, 1000.0) == pytest.approx(0.12, rel=1e-14)
    assert measurement_noise(kf_prm, 1.0, 1.0) == 1.0
    # default config: 1e-8 + 1e-6 * 0.1^2 + 100 / 2e6 = 5.002e-5
    assert measurement_noise(record(plain_cfg), 0.1, 2e6) == pytest.approx(5.002e-5, rel=1e-12)


def test_kalman_hand_update(kf_prm):
    # predict P = 0.02 + 0.01 * 1 = 0.03; R = 0.12; K = 0.03 / 0.15 = 0.2; y = 101 is 1 % from 100: accepted;
    # xhat = ln 100 + 0.2 (ln 101 - ln 100); P = 0.03 (1 - 0.2) = 0.024
    xhat, p, rej, has = _kalman(kf_prm, math.log(100), 0.02, 0, True, True, 101.0)
    assert xhat == pytest.approx(math.log(100) + 0.2 * (math.log(101) - math.log(100)), rel=1e-14)
    assert p == pytest.approx(0.024, rel=1e-12)
    assert rej == 0.0 and has


def test_kalman_hand_update_with_default_config(plain_cfg):
    # P = 1 + 1e-6; R = 5.002e-5; K = 1.000001 / (1.000001 + 5.002e-5); xhat = ln 250 + K (ln 251 - ln 250)
    xhat, p, _, _ = _kalman(record(plain_cfg), math.log(250), 1.0, 0, True, True, 251.0, spread=0.1, depth=2e6)
    k = 1.000001 / (1.000001 + 5.002e-5)
    assert xhat == pytest.approx(math.log(250) + k * (math.log(251) - math.log(250)), rel=1e-12)
    assert p == pytest.approx(1.000001 * (1 - k), rel=1e-9)


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
    # the four cases of the old per-run layout: accept, reject, re-anchor, no observation
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
# Local volatility (step 2) and effective volatility with control scalars (step 4)
# --------------------------------------------------------------------------------------------------

def test_local_vol_step_both_ewmas(plain_cfg):
    # alpha short 0.2, long 0.05, from zero. Venue 0 moves +0.01 then -0.02 in log mid; venue 1 does not move:
    # tick 1: r2 = 1e-4: short 0.2e-4 = 2e-5, long 0.05e-4 = 5e-6
    # tick 2: r2 = 4e-4: short 2e-5 + 0.2 (4e-4 - 2e-5) = 9.6e-5; long 5e-6 + 0.05 (4e-4 - 5e-6) = 2.475e-5
    # venue 1 starts at 1e-6 (short) and 3e-6 (long) and decays: short 0.8^2 1e-6, long 0.95^2 3e-6
    prm = record(plain_cfg)
    short, long_ = np.array([0.0, 1e-6]), np.array([0.0, 3e-6])
    local_vol_step(prm, short, long_, np.array([0.0, 5.0]), np.array([0.01, 5.0]))
    assert short[0] == pytest.approx(2e-5, rel=1e-12) and long_[0] == pytest.approx(5e-6, rel=1e-12)
    local_vol_step(prm, short, long_, np.array([0.01, 5.0]), np.array([-0.01, 5.0]))
    assert short[0] == pytest.approx(9.6e-5, rel=1e-12) and long_[0] == pytest.approx(2.475e-5, rel=1e-12)
    assert short[1] == pytest.approx(0.64e-6, rel=1e-12) and long_[1] == pytest.approx(0.9025 * 3e-6, rel=1e-12)


def test_local_vol_converges_to_the_squared_return(plain_cfg):
    # a constant return r: both EWMAs converge to r^2; the short one faster (after 20 steps from 0:
    # short 1 - 0.8^20 = 98.8 % of r^2, long 1 - 0.95^20 = 64.2 %)
    prm = record(plain_cfg, volatility_fv_vol_alpha_long=0.05)
    short, long_ = np.zeros(1), np.zeros(1)
    for i in range(20):
        local_vol_step(prm, short, long_, np.array([0.003 * i]), np.array([0.003 * (i + 1)]))
    assert short[0] == pytest.approx(9e-6 * (1 - 0.8 ** 20), rel=1e-9)
    assert long_[0] == pytest.approx(9e-6 * (1 - 0.95 ** 20), rel=1e-9)


@pytest.fixture(scope="module")
def vol_prm(plain_cfg):
    return record(plain_cfg)


def test_vol_floor_and_lower_clip(vol_prm):
    # var 0, ret 0: var 0, sigma_eff = max(0, 0.001) = 0.001; 0.001 / 0.028125 = 0.0356 -> clipped to 0.25;
    # bump = max(0.25 - 1, 0) = 0 -> every multiplier is 1
    assert vol_scalars(vol_prm, 0.0, 0.0) == (0.0, 0.001, 0.25, 1.0, 1.0, 1.0)


def test_vol_hand_ewma(vol_prm):
    # var = 0.8 * 1e-4 + 0.2 * 0.02^2 = 1.6e-4; sigma_eff = sqrt(1.6e-4) = 0.0126491;
    # vol_ratio = 0.0126491 / 0.028125 = 0.449751 (inside [0.25, 4]); bump 0
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 1e-4, 0.02)
    assert var == pytest.approx(1.6e-4, rel=1e-12)
    assert sigma == pytest.approx(math.sqrt(1.6e-4), rel=1e-12)
    assert ratio == pytest.approx(math.sqrt(1.6e-4) / 0.028125, rel=1e-12)
    assert (sm, qm, bm) == (1.0, 1.0, 1.0)


def test_vol_ratio_two(vol_prm):
    # var = ret^2 = 0.05625^2 stays 0.05625^2; sigma_eff 0.05625; vol_ratio = 0.05625 / 0.028125 = 2; bump 1:
    # spread_mult = 1 + 1 * 1 = 2; size_mult = 1 / (1 + 2 * 1) = 1/3; band_mult = 1 / (1 + 1 * 1) = 1/2
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 0.05625 ** 2, 0.05625)
    assert sigma == pytest.approx(0.05625, rel=1e-12)
    assert ratio == pytest.approx(2.0, rel=1e-12)
    assert sm == pytest.approx(2.0, rel=1e-12)
    assert qm == pytest.approx(1 / 3, rel=1e-12)
    assert bm == pytest.approx(0.5, rel=1e-12)


def test_vol_upper_clip(vol_prm):
    # ret = 1: var = 0.2, sigma_eff = 0.447 -> ratio 15.9 -> clipped to 4; bump 3:
    # spread 1 + 3 = 4, size 1 / (1 + 6) = 1/7, band 1 / (1 + 3) = 1/4
    var, sigma, ratio, sm, qm, bm = vol_scalars(vol_prm, 0.0, 1.0)
    assert var == pytest.approx(0.2, rel=1e-15)
    assert ratio == 4.0
    assert (sm, qm, bm) == (4.0, 1 / 7, 0.25)


def test_delta_limit(vol_prm):
    # 100000 / max(2, 0.25) = 50000; 100000 / max(0.1, 0.25) = 400000; 100000 / 1 = 100000
    assert [delta_limit(vol_prm, r) for r in (2.0, 0.1, 1.0)] == [50000.0, 400000.0, 100000.0]


# --------------------------------------------------------------------------------------------------
# Toxicity and venue health (step 6)
# --------------------------------------------------------------------------------------------------

def _health(prm, local, sigma_eff=1.0, depth=None, age=None, stale_ticks=1.0):
    """venue_health on venues whose short local volatility is `local` (vol_short = local^2): (tox, status)."""
    n = len(local)
    mkt = market(n, depth=depth if depth is not None else [1e6] * n, age=age if age is not None else [0.0] * n)
    vol_short = np.array(local, float) ** 2
    tox, status = np.full(n, -1.0), np.full(n, -1, np.int64)
    venue_health(prm, mkt, vol_short, sigma_eff, stale_ticks, tox, status)
    return tox.tolist(), status.tolist()


def test_toxicity_scores(vol_prm):
    # sigma_eff 1: (local / 1 - 1) / 0.5 clipped to [0, 1]:
    # 0.5 -> -1 -> 0; 1 -> 0; 1.25 -> 0.5; 1.375 -> 0.75; 1.5 -> 1; 2 -> 2 -> 1; no book (depth 0) -> 1
    tox, _ = _health(vol_prm, [0.5, 1.0, 1.25, 1.375, 1.5, 2.0, 1.0], depth=[1e6] * 6 + [0.0])
    assert tox == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0, 1.0]
    # with sigma_eff 0.002 and local 0.0025: (1.25 - 1) / 0.5 = 0.5
    assert _health(vol_prm, [0.0025], sigma_eff=0.002)[0][0] == pytest.approx(0.5)
    # local vol below sigma_min (0.001) counts as sigma_min: local 1e-4 against sigma_eff 0.0008 ->
    # (0.001 / 0.0008 - 1) / 0.5 = 0.5
    assert _health(vol_prm, [1e-4], sigma_eff=0.0008)[0][0] == pytest.approx(0.5, rel=1e-12)


def test_venue_status_thresholds(vol_prm, plain_cfg):
    # < 0.6 Healthy; 0.6 <= tox < 0.9 Warning; >= 0.9 Disabled. local = 1 + 0.5 tox at sigma_eff 1:
    # tox 0, 0.5998, 0.6 (+1 ulp), 0.75, 0.8998, 0.9 (+), 1 (local 1.5)
    _, status = _health(vol_prm, [1.0, 1.2999, 1.30000001, 1.375, 1.4499, 1.45000001, 1.5])
    assert status == [HEALTHY, HEALTHY, VENUE_WARNING, VENUE_WARNING, VENUE_WARNING, DISABLED, DISABLED]
    # the thresholds are inclusive: with thresholds 0.5 and 0.75 (scores hit exactly by local 1.25, 1.375)
    prm = record(plain_cfg, toxicity_tox_med_threshold=0.5, toxicity_tox_high_threshold=0.75)
    tox, status = _health(prm, [1.2499999, 1.25, 1.3749999, 1.375])
    assert tox[1] == 0.5 and tox[3] == 0.75
    assert status == [HEALTHY, VENUE_WARNING, VENUE_WARNING, DISABLED]


def test_stale_book_is_disabled_and_no_book_too(vol_prm):
    # stale (age 2 > 1 tick) Disabled whatever the score; age 1 is not stale; no book -> tox 1 -> Disabled
    tox, status = _health(vol_prm, [1.0, 1.0, 1.4, 1.0], age=[2.0, 1.0, 5.0, 0.0], depth=[1e6, 1e6, 1e6, 0.0])
    assert status == [DISABLED, HEALTHY, DISABLED, DISABLED]
    assert tox[0] == 0.0 and tox[3] == 1.0
    # a larger staleness allowance (5 ticks) lets venue 0 back: Healthy; venue 2 (age 5) Warning by its score 0.8
    assert _health(vol_prm, [1.0, 1.0, 1.4], age=[2.0, 1.0, 5.0], stale_ticks=5.0)[1] == [HEALTHY, HEALTHY,
                                                                                          VENUE_WARNING]


def test_toxicity_is_not_absorbing(vol_prm):
    # a venue Disabled by its score comes back when its local vol falls back to sigma_eff
    mkt = market(1, depth=[1e6])
    tox, status = np.zeros(1), np.zeros(1, np.int64)
    venue_health(vol_prm, mkt, np.array([4.0]), 1.0, 1.0, tox, status)
    assert status[0] == DISABLED
    venue_health(vol_prm, mkt, np.array([1.0]), 1.0, 1.0, tox, status)
    assert status[0] == HEALTHY and tox[0] == 0.0


# --------------------------------------------------------------------------------------------------
# Risk regime and kill switch (step 11); the spec's comparisons are inclusive.
# --------------------------------------------------------------------------------------------------

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
def test_risk_regime_thresholds(vol_prm, pnl, delta, basis, regime, kill):
    got_regime, got_kill = risk_regime(vol_prm, pnl, delta, basis, 100000.0)
    assert int(got_regime) == regime
    assert bool(got_kill) is kill


def test_risk_regime_with_per_run_limits(plain_cfg):
    # per-run loss limits 100, 5000, 200, pnl -100 everywhere:
    # run 0: -100 <= -100 -> HardLimit + kill; run 1: -100 > -2500 -> Normal; run 2: -100 <= -0.5 * 200 -> Warning
    p = params_of(plain_cfg, runs=3, per_run={"engine.risk.daily_loss_limit": [100.0, 5000.0, 200.0]})
    got = [risk_regime(p.table[i], -100.0, 0.0, 0.0, 1e5) for i in range(3)]
    assert [(int(r), bool(k)) for r, k in got] == [(HARD_LIMIT, True), (NORMAL, False), (WARNING, False)]
    # the limit is the one given: a 50000 delta is Warning against a 60000 limit (>= 42000), HardLimit at 50000
    assert int(risk_regime(p.table[1], 0.0, 50000.0, 0.0, 60000.0)[0]) == WARNING
    assert int(risk_regime(p.table[1], 0.0, 50000.0, 0.0, 50000.0)[0]) == HARD_LIMIT


# --------------------------------------------------------------------------------------------------
# MM quotes (step 7). Venue 0 of the default config: gamma 0.1, k 1.5, base size 1, max 20, tick 0.01;
# horizon 30 s, edge_local_min 0.5, edge_vol_mult 0.2, basis and funding weights 0.3, size_eta 0.1.
# --------------------------------------------------------------------------------------------------

def _quote(prm, mid, fair, q, sigma, vol_ratio, funding=0.0, spread_mult=1.0, size_mult=1.0, regime=NORMAL,
           status=HEALTHY, v=0):
    limit = delta_limit(prm, vol_ratio)
    return quote(prm, v, float(mid), float(funding), float(fair), float(q), float(sigma), float(vol_ratio),
                 limit, float(spread_mult), float(size_mult), regime, status)


def on_grid(price, tick=0.01):
    return abs(price / tick - round(price / tick)) < 1e-6


def test_quote_hand_case_flat(vol_prm):
    # mid = fair = 250, q 0, sigma 0.01, vol_ratio 0.5:
    # gamma sigma^2 T = 0.1 * 1e-4 * 30 = 3e-4; half = max(1.5e-4 + 1/1.5, 0.5) = 0.6668167;
    # + 0.2 * 0.5 = 0.7668167; reservation 250 (no basis, no funding, no inventory);
    # bid = floor(249.2331833 / 0.01) * 0.01 = 249.23; ask = ceil(250.7668167 / 0.01) * 0.01 = 250.77; size 1
    bid, ask, size, bid_ok, ask_ok = _quote(vol_prm, 250.0, 250.0, 0.0, 0.01, 0.5)
    assert bid == pytest.approx(249.23, abs=1e-9) and on_grid(bid)
    assert ask == pytest.approx(250.77, abs=1e-9) and on_grid(ask)
    assert size == 1.0
    assert bid_ok and ask_ok


def test_quote_hand_case_basis_funding_inventory(vol_prm):
    # mid 101, fair 100, funding 0.0008 per 8 h, q 2, sigma 0.02, vol_ratio 1:
    # gamma sigma^2 T = 0.1 * 4e-4 * 30 = 1.2e-3; half = 6e-4 + 0.6666667 + 0.2 = 0.8672667
    # res = 101 + 0.3 (101 - 100) + 0.3 * 0.0008 * (30 / 28800) * 100 - 1.2e-3 * 2 / 2
    #     = 101 + 0.3 + 0.000025 - 0.0012 = 101.298825
    # bid = floor((101.298825 - 0.8672667) / 0.01) = floor(10043.1558) -> 100.43
    # ask = ceil((101.298825 + 0.8672667) / 0.01) = ceil(10216.6092) -> 102.17
    # size = 1 * 1 / (1 + 0.1 * 2) = 0.8333333
    bid, ask, size, bid_ok, ask_ok = _quote(vol_prm, 101.0, 100.0, 2.0, 0.02, 1.0, funding=0.0008)
    assert bid == pytest.approx(100.43, abs=1e-9) and on_grid(bid)
    assert ask == pytest.approx(102.17, abs=1e-9) and on_grid(ask)
    assert size == pytest.approx(1 / 1.2, rel=1e-14)
    assert bid_ok and ask_ok


def test_quote_warning_multipliers(vol_prm):
    # same case in Warning: half = 0.8672667 * 1.5 = 1.3009;
    # bid = floor((101.298825 - 1.3009) / 0.01) = floor(9999.7925) -> 99.99; ask = ceil(10259.9725) -> 102.60
    bid, ask, size, _, _ = _quote(vol_prm, 101.0, 100.0, 2.0, 0.02, 1.0, funding=0.0008, regime=WARNING)
    assert bid == pytest.approx(99.99, abs=1e-9)
    assert ask == pytest.approx(102.60, abs=1e-9)
    # size 0.8333 is under q_warn_cap 5: unchanged
    assert size == pytest.approx(1 / 1.2, rel=1e-14)
    # spread_mult 2 (vol_ratio 2): half = (1.5e-4 + 0.6666667 + 0.2 * 2) * 2 = 2.1336333 at sigma 0.01, fair 250
    # bid = floor(247.8663667 / 0.01) -> 247.86; ask = ceil(252.1336333 / 0.01) -> 252.14
    bid, ask, _, _, _ = _quote(vol_prm, 250.0, 250.0, 0.0, 0.01, 2.0, spread_mult=2.0)
    assert bid == pytest.approx(247.86, abs=1e-9)
    assert ask == pytest.approx(252.14, abs=1e-9)


def test_quote_half_spread_floor_and_two_venues(plain_cfg):
    # venue 0 with k = 100: 1/k = 0.01, so half = max(1.5e-4 + 0.01, 0.5) = 0.5, then + 0.2 * 0.25 = 0.55:
    # bid = floor(99.45 / 0.01) * 0.01 = 99.45 (up to float), ask = 100.55.
    # venue 1 set to gamma 0.1, k 1.5 as in the flat case at mid 100:
    # half = 0.6668167 + 0.05 = 0.7168167 -> bid floor(99.2831833) = 99.28, ask ceil(100.7168167) = 100.72
    prm = record(plain_cfg, venues_k=[100.0, 1.5, 1.4, 1.5, 1.5], venues_gamma=[0.1] * 5)
    bid, ask, _, ok_b, ok_a = _quote(prm, 100.0, 100.0, 0.0, 0.01, 0.25, v=0)
    assert bid == pytest.approx(99.45, abs=0.0100001) and bid <= 99.45 + 1e-9
    assert ask == pytest.approx(100.55, abs=0.0100001) and ask >= 100.55 - 1e-9
    assert ok_b and ok_a
    bid, ask, _, ok_b, ok_a = _quote(prm, 100.0, 100.0, 0.0, 0.01, 0.25, v=1)
    assert bid == pytest.approx(99.28, abs=1e-9)
    assert ask == pytest.approx(100.72, abs=1e-9)
    assert ok_b and ok_a


def test_quote_tick_grid_coarse_tick(plain_cfg):
    # tick 0.5: flat case at 250 with half 0.7668167: bid = floor(249.2331833 / 0.5) * 0.5 = 249.0;
    # ask = ceil(250.7668167 / 0.5) * 0.5 = 251.0
    prm = record(plain_cfg, venues_tick_size=[0.5] * 5)
    bid, ask, _, _, _ = _quote(prm, 250.0, 250.0, 0.0, 0.01, 0.5)
    assert (bid, ask) == (249.0, 251.0)


@PROPERTY
@given(mid=st.floats(50.0, 1000.0), fair_rel=st.floats(-0.01, 0.01), q=st.floats(-30.0, 30.0),
       sigma=st.floats(1e-4, 0.05), vol_ratio=st.floats(0.25, 4.0), funding=st.floats(-0.003, 0.003),
       regime=st.sampled_from([NORMAL, WARNING]))
def test_quote_prices_on_the_grid_bid_floor_ask_ceil(plain_cfg, mid, fair_rel, q, sigma, vol_ratio, funding,
                                                     regime):
    # on a fine grid (0.01) and a coarse one (0.5, a multiple of it): both on their grids; the coarse bid is the
    # fine bid floored (at or below it, less than 0.5 below), the coarse ask the fine ask ceiled
    fair = mid * (1 + fair_rel)
    fine = _quote(record(plain_cfg), mid, fair, q, sigma, vol_ratio, funding=funding, regime=regime)
    coarse = _quote(record(plain_cfg, venues_tick_size=[0.5] * 5), mid, fair, q, sigma, vol_ratio,
                    funding=funding, regime=regime)
    for price, tick in ((fine[0], 0.01), (fine[1], 0.01), (coarse[0], 0.5), (coarse[1], 0.5)):
        assert on_grid(price, tick)
    assert fine[0] - 0.5 - 1e-9 < coarse[0] <= fine[0] + 1e-9
    assert fine[1] - 1e-9 <= coarse[1] < fine[1] + 0.5 + 1e-9
    assert fine[1] - fine[0] >= 2 * 0.5 - 1e-9  # at least twice edge_local_min apart
    assert fine[2] == coarse[2]


def test_quote_size_reductions(plain_cfg, vol_prm):
    # base 10, q 0, size_mult 1: 10; Warning -> min(10, 5) = 5; venue Warning -> 10 * 0.5 = 5; both -> 2.5
    prm = record(plain_cfg, venues_base_order_size=[10.0] * 5)
    assert _quote(prm, 250, 250, 0, 0.01, 1.0)[2] == 10.0
    assert _quote(prm, 250, 250, 0, 0.01, 1.0, regime=WARNING)[2] == 5.0
    assert _quote(prm, 250, 250, 0, 0.01, 1.0, status=VENUE_WARNING)[2] == 5.0
    assert _quote(prm, 250, 250, 0, 0.01, 1.0, regime=WARNING, status=VENUE_WARNING)[2] == 2.5
    # eta: base 1, q 5, size_mult 1/3: (1/3) / (1 + 0.1 * 5) = 2/9
    assert _quote(vol_prm, 250, 250, 5.0, 0.01, 1.0, size_mult=1 / 3)[2] == pytest.approx(2 / 9, rel=1e-14)
    # cap at max_order_size: base 30 -> 20
    assert _quote(record(plain_cfg, venues_base_order_size=[30.0] * 5), 250, 250, 0, 0.01, 1.0)[2] == 20.0


def test_quote_delta_ratio(plain_cfg):
    # size_eta 0 so that only the delta taper acts; fair 250.
    # vol_ratio 1: limit 100000. q 600: dollar delta 150000 -> rho 1.5 -> size x (2 - 1.5) = 0.5
    prm = record(plain_cfg, mm_size_eta=0.0)
    _, _, size, ok_b, ok_a = _quote(prm, 250, 250, 600.0, 0.01, 1.0)
    assert size == pytest.approx(0.5) and ok_b and ok_a
    # vol_ratio 2: limit 100000 / 2 = 50000; q -300 -> -75000 -> rho 1.5 -> 0.5
    assert _quote(prm, 250, 250, -300.0, 0.01, 2.0)[2] == pytest.approx(0.5)
    # rho exactly 1 (q 400 -> 100000): no reduction
    assert _quote(prm, 250, 250, 400.0, 0.01, 1.0)[2] == 1.0
    # rho 2 and more: no quote on either side
    for q in (800.0, 1000.0, -800.0):
        _, _, _, ok_b, ok_a = _quote(prm, 250, 250, q, 0.01, 1.0)
        assert not ok_b and not ok_a


def test_quote_hard_limit_reduce_only(vol_prm):
    # long: only the ask (a sell reduces |q|); short: only the bid; flat: nothing
    normal = _quote(vol_prm, 250, 250, 3.0, 0.01, 1.0)
    bid, ask, size, ok_b, ok_a = _quote(vol_prm, 250, 250, 3.0, 0.01, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (False, True)
    assert (bid, ask, size) == normal[:3]  # same prices and size as in Normal, one side only
    _, _, _, ok_b, ok_a = _quote(vol_prm, 250, 250, -3.0, 0.01, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (True, False)
    _, _, _, ok_b, ok_a = _quote(vol_prm, 250, 250, 0.0, 0.01, 1.0, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (False, False)
    # reduce-only and Disabled: nothing
    _, _, _, ok_b, ok_a = _quote(vol_prm, 250, 250, 3.0, 0.01, 1.0, regime=HARD_LIMIT, status=DISABLED)
    assert not ok_b and not ok_a


@PROPERTY
@given(q=st.floats(-100.0, 100.0).filter(lambda x: x != 0.0), sigma=st.floats(1e-4, 0.05),
       vol_ratio=st.floats(0.25, 4.0))
def test_quote_hard_limit_only_the_reducing_side(vol_prm, q, sigma, vol_ratio):
    _, _, _, ok_b, ok_a = _quote(vol_prm, 250, 250, q, sigma, vol_ratio, regime=HARD_LIMIT)
    assert (bool(ok_b), bool(ok_a)) == (q < 0, q > 0)


def test_quote_disabled_and_nonpositive_bid(plain_cfg, vol_prm):
    _, _, _, ok_b, ok_a = _quote(vol_prm, 250, 250, 0.0, 0.01, 1.0, status=DISABLED)
    assert not ok_b and not ok_a
    # mid 0.5: half 0.8668 at vol_ratio 1 -> bid = floor(-0.3668 / 0.01) * 0.01 < 0 -> no quote
    bid, _, _, ok_b, ok_a = _quote(vol_prm, 0.5, 0.5, 0.0, 0.01, 1.0)
    assert bid < 0 and not ok_b and not ok_a
    # base size 0 (the MM switched off): size 0, no quote on either side
    _, _, size, ok_b, ok_a = _quote(record(plain_cfg, venues_base_order_size=[0.0] * 5), 250, 250, 0.0, 0.01, 1.0)
    assert size == 0.0 and not ok_b and not ok_a


def test_quote_with_real_params_per_venue(vol_prm):
    # the real 5-venue config: venue 1 (hyperliquid) has gamma 0.09, k 1.6. mid = fair = 250, q 0,
    # sigma 0.01, vol_ratio 0.25: half_1 = 0.09 * 1e-4 * 30 / 2 + 1/1.6 + 0.2 * 0.25 = 1.35e-4 + 0.625 + 0.05
    # = 0.675135 -> bid floor(249.324865 / 0.01) = 249.32, ask ceil(250.675135 / 0.01) = 250.68
    got = [quote(vol_prm, v, 250.0, 0.0, 250.0, 0.0, 0.01, 0.25, 100000.0, 1.0, 1.0, NORMAL, HEALTHY)
           for v in range(5)]
    assert got[1][0] == pytest.approx(249.32, abs=1e-9)
    assert got[1][1] == pytest.approx(250.68, abs=1e-9)
    # venue 2 (aster): gamma 0.11, k 1.4: half = 1.65e-4 + 0.7142857 + 0.05 = 0.7644507
    # -> bid floor(249.2355493 / 0.01) = 249.23, ask ceil(250.7644507 / 0.01) = 250.77
    assert got[2][0] == pytest.approx(249.23, abs=1e-9)
    assert got[2][1] == pytest.approx(250.77, abs=1e-9)
    assert all(g[2] == 1.0 and g[3] and g[4] for g in got)


# --------------------------------------------------------------------------------------------------
# Hedge (step 8). Three venues: mids 100, spreads 0.2, 0.4, 0.2, taker 5, 5, 10 bps, tox 0, 0, 0.5;
# band_base 4, floor 0.1, alpha 1, beta 1, max step 20, Warning x0.5, min slice 1e-4, max size 20.
# --------------------------------------------------------------------------------------------------

HEDGE = dict(hedge_band_base=4.0, hedge_band_mult_floor=0.1, hedge_alpha_hedge=1.0, hedge_beta_hedge=1.0,
             hedge_hedge_max_step=20.0, hedge_warning_step_mult=0.5, hedge_min_slice_tao=1e-4,
             venues_taker_fee_bps=[5.0, 5.0, 10.0, 5.0, 5.0])
HEDGE_MKT = market(3, mid=[100.0] * 3, spread=[0.2, 0.4, 0.2], depth=[1e6] * 3)


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


# cost = s/2 + fee * mid = 0.1 + 0.05, 0.2 + 0.05, 0.1 + 0.1 = 0.15, 0.25, 0.2;
# weights 1 / (cost (1 + tox)) = 1/0.15, 1/0.25, 1/(0.2 * 1.5) = 20/3, 4, 10/3; sum 14; shares 10/21, 6/21, 5/21
SHARES = np.array([10 / 21, 6 / 21, 5 / 21])


def close(a, b, rel=1e-12, abs_=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


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
# Fill rule (step 9): P(fill) = 1 - exp(-A dt exp(-k d)); a crossed quote (d < 0) always fills.
# --------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _count_fills(distance, uniforms, fill_rate, k):
    never_below = math.exp(-fill_rate)
    n = 0
    for u in uniforms:
        n += quote_fills(distance, u, fill_rate, k, never_below)
    return n


def test_fill_rule_equals_the_intensity_rule_draw_by_draw():
    # for a draw U, the quote at distance d fills iff U > exp(-A dt exp(-k d)); away from exact ties the two agree
    u = np.random.default_rng(5).random(400)
    fill_rate, k = 1.0, 1.5
    never_below = math.exp(-fill_rate)
    for d in (0.0, 0.1, 0.5, 1.0, 2.0):
        threshold = math.exp(-fill_rate * math.exp(-k * d))
        rule = u > threshold
        fills = np.array([quote_fills(d, x, fill_rate, k, never_below) for x in u])
        tie = np.abs(u - threshold) < 1e-9
        assert (fills == rule)[~tie].all()
        assert 0 < fills.sum() < len(u)


def test_fill_rule_crossed_quote_always_fills():
    # d < 0 fills for every draw, even those at or below exp(-A dt) that can never fill a quote at d >= 0
    u = np.concatenate([[0.0, math.exp(-1.0), 0.5, 1 - 1e-16], np.random.default_rng(6).random(200)])
    assert _count_fills(-1e-9, u, 1.0, 1.5) == len(u)
    assert _count_fills(-3.0, u, 0.2, 1.5) == len(u)
    assert _count_fills(0.0, np.array([0.0, math.exp(-1.0)]), 1.0, 1.5) == 0


@pytest.mark.parametrize("fill_rate,k,d", [(1.0, 1.5, 0.0), (1.0, 1.5, 0.5), (0.5, 1.6, 0.7), (1.0, 1.4, 2.0),
                                           (0.05, 1.5, 0.3)])
def test_fill_frequency_by_simulation(fill_rate, k, d):
    # 400k uniforms: the frequency of fills is 1 - exp(-A dt exp(-k d)) within 4 standard errors
    u = np.random.default_rng(int(1000 * (fill_rate + k + d))).random(400_000)
    p = 1.0 - math.exp(-fill_rate * math.exp(-k * d))
    freq = _count_fills(d, u, fill_rate, k) / len(u)
    assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(u))


@PROPERTY
@given(d1=st.floats(0.0, 5.0), d2=st.floats(0.0, 5.0), u=st.floats(0.0, 1.0, exclude_max=True),
       fill_rate=st.floats(0.01, 3.0), k=st.floats(0.1, 3.0))
def test_fill_rule_monotone_in_distance(d1, d2, u, fill_rate, k):
    # with the same draw, a quote nearer the mid fills whenever a farther one does; u <= exp(-A dt) never fills
    near, far = min(d1, d2), max(d1, d2)
    never = math.exp(-fill_rate)
    if quote_fills(far, u, fill_rate, k, never):
        assert quote_fills(near, u, fill_rate, k, never)
    if u <= never:
        assert not quote_fills(near, u, fill_rate, k, never)


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


def test_tick_draws_are_the_runs_stream():
    # a tick draws its normals then its uniforms from the run's stream: 17 normals and 17 uniforms per tick
    # (5 venues, no size_random; 10 more uniforms with it), in stream order, the stream going on from tick to tick
    n_normals, n_uniforms = draw_counts(5, False)
    assert (n_normals, n_uniforms) == (17, 17)
    assert draw_counts(5, True) == (17, 27)
    assert draw_counts(2, False) == (8, 8)
    normals, uniforms = np.empty(n_normals), np.empty(n_uniforms)
    stream, reference = _state(42), _state(42)
    for _ in range(3):
        stream = _u64(draw_tick(stream, normals, uniforms))
        expected_normals, expected_uniforms = [], []
        for _ in range(n_normals):
            x, reference = normal(reference)
            reference = _u64(reference)
            expected_normals.append(x)
        for _ in range(n_uniforms):
            u, reference = uniform(reference)
            reference = _u64(reference)
            expected_uniforms.append(u)
        assert normals.tolist() == expected_normals and uniforms.tolist() == expected_uniforms
    assert tuple(int(x) for x in stream) == tuple(int(x) for x in reference)


# --------------------------------------------------------------------------------------------------
# Through the kernel (simulate): hedge execution and fees, mark to fair and funding, size_random, kills.
# --------------------------------------------------------------------------------------------------

def test_hedge_execution_and_taker_fees():
    # MM off (base size 0), calm market; 30 TAO opened on venue 0 at 250, no fee.
    # tick 0 acts on the initial market (mid_v = 250 exp(basis_mean_v), spread_v = mid_v * bps_v / 1e4, depth
    # mean): every venue Healthy (local vol and sigma_eff at sigma_min -> tox 0), band 5.625:
    #   step = -(30 - 5.625) = -24.375 -> clipped to -20, split by 1 / (spread/2 + 5 bps mid);
    #   each slice sells at mid - (spread / 2 + 20 |dq| / depth mid) and pays 5 bps of |dq| price.
    # tick 1: step = -(10 - 5.625) = -4.375; q after = 5.625, then inside the band (no more hedging).
    p, res = run_rows(["market=calm", "engine.initial_q_tao=30", "engine.venues.base_order_size=[0,0,0,0,0]"],
                      8, [3])
    rows = res.rows.of(0)
    mkt = p.table[0]
    mid = np.exp(math.log(250.0) + mkt["basis_mean"])
    spread = mid * mkt["spread_mean_bps"] / 1e4
    depth = mkt["depth_mean_usd"]
    weight = 1.0 / (spread / 2 + 5e-4 * mid)
    dq = -20.0 * weight / weight.sum()
    price = mid - (spread / 2 + 20.0 * np.abs(dq) / depth * mid)
    fee0 = float(np.sum(np.abs(dq) * price * 5e-4))
    r0 = rows[0]
    assert r0["hedge_volume_tao"] == pytest.approx(20.0, rel=1e-12)
    assert r0["q_global_tao"] == pytest.approx(10.0, rel=1e-12)
    close(r0["venue_q_tao"], [30.0 + dq[0], *dq[1:]], rel=1e-12)
    assert r0["fees_usd"] == pytest.approx(fee0, rel=1e-12)
    # venue 0 realises (price_0 - 250) on what it sells; the new shorts realise nothing; fees come off
    assert r0["pnl_realised"] == pytest.approx(-dq[0] * (price[0] - 250.0) - fee0, rel=1e-10)
    assert rows[1]["hedge_volume_tao"] == pytest.approx(4.375, rel=1e-12)
    assert rows[1]["q_global_tao"] == pytest.approx(5.625, rel=1e-12)
    assert rows[1]["fees_usd"] - fee0 == pytest.approx(4.375 * 250 * 5e-4, rel=5e-3)
    for r in rows[2:]:
        assert r["hedge_volume_tao"] == 0.0
        assert r["q_global_tao"] == pytest.approx(5.625, rel=1e-12)
        assert r["fees_usd"] == rows[1]["fees_usd"]
    assert (rows["mm_fills"] == 0).all() and (rows["mm_quoted_sides"] == 0).all()


def _replay_market(prm, seed, ticks):
    """The market path the kernel sees for one run: path[t] is the market tick t acts on."""
    path = np.zeros(ticks + 1, market_state_dtype(5))
    n_normals, n_uniforms = draw_counts(5, prm["fills_size_random"] != 0.0)
    normals, uniforms = np.empty(n_normals), np.empty(n_uniforms)
    initial_market(prm, path[0])
    stream = _state(seed)
    for t in range(ticks):
        stream = _u64(draw_tick(stream, normals, uniforms))
        market_step(prm, path[t], path[t + 1], normals, uniforms, t, prm["tick_ms"] / 1000.0)
    return path


def test_mark_to_fair_funding_and_observation_in_the_engine():
    # Calm market, MM off (base size 0), hedging off (band 1e9): only the 60 TAO opened on venue 0 at 250 with
    # no fee. Then every tick, with m0, f0 venue 0's mid and funding and S the row's fair value (spec 3, 5, 10, 11):
    #   pnl_realised = 0, fees 0; q = 60; delta = 60 S; basis = 60 (m0 - S); unrealised = 60 (S - 250);
    #   pnl_funding falls by 60 f0 m0 dt / 28800 per tick (dt = 1 s); pnl_total = unrealised + funding;
    #   y_mid = sum(depth * mid) / sum(depth) over venues not Disabled on the previous tick with a fresh book.
    ticks, seed = 30, 8
    p, res = run_rows(["market=calm", "engine.initial_q_tao=60", "engine.hedge.band_base=1e9",
                       "engine.venues.base_order_size=[0,0,0,0,0]",
                       "market.funding.mean=[0.002,0.001,-0.001,0.0005,0.0]"], ticks, [seed])
    rows = res.rows.of(0)
    assert len(rows) == ticks and rows["t"].tolist() == list(range(ticks))
    path = _replay_market(p.table[0], seed, ticks)
    funding_before = 0.0
    prev_status = np.zeros(5, np.int64)
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
        step = -60 * mkt["funding"][0] * mkt["mid"][0] * 1.0 / 28800
        assert r["pnl_funding"] - funding_before == pytest.approx(step, rel=1e-9)
        funding_before = r["pnl_funding"]
        assert r["pnl_total"] == pytest.approx(r["pnl_unrealised"] + r["pnl_funding"], rel=1e-12)
        usable = (prev_status != DISABLED) & (mkt["age"] <= 1) & (mkt["depth"] > 0)
        assert usable.sum() >= 2
        y = float(np.sum(mkt["depth"][usable] * mkt["mid"][usable]) / np.sum(mkt["depth"][usable]))
        assert r["y_mid"] == pytest.approx(y, rel=1e-12)
        assert abs(math.log(fair / y)) < 5e-3  # the filter follows the observation (with a lag) in a calm market
        prev_status = r["venue_status"].astype(np.int64)
    # the funding mean of venue 0 is positive: a long pays funding
    assert funding_before < 0


def test_mm_fees_maker_minus_rebate():
    # hedging off (band 1e9). Maker fees 2, 1.5, 2, 2, 2 bps; rebates 0.5, 0, 0.5, 0.5, 0.5: net 1.5 bps on every
    # venue, so each tick's fees are 1.5 bps of its MM notional (volume x a quote price within 2 % of the fair
    # value: half-spread ~0.7 USD plus the inventory skew of the unhedged position)
    _, res = run_rows(["engine.hedge.band_base=1e9", "engine.venues.maker_rebate_bps=[0.5,0,0.5,0.5,0.5]"], 300, [1])
    rows = res.rows.of(0)
    step_fees = np.diff(np.concatenate([[0.0], rows["fees_usd"]]))
    filled = rows["mm_volume_tao"] > 0
    assert rows["mm_fills"].sum() > 100 and (rows["hedge_volume_tao"] == 0).all()
    assert (step_fees[~filled] == 0).all()
    ratio = step_fees[filled] / (rows["mm_volume_tao"][filled] * rows["fair_value"][filled])
    np.testing.assert_allclose(ratio, 1.5e-4, rtol=2e-2)
    # rebates equal to the fees: no fees at all; rebates above them: the MM is paid (fees fall)
    _, res = run_rows(["engine.hedge.band_base=1e9", "engine.venues.maker_rebate_bps=[2,1.5,2,2,2]"], 100, [1])
    rows = res.rows.of(0)
    assert rows["mm_fills"].sum() > 10 and np.abs(rows["fees_usd"]).max() < 1e-9
    _, res = run_rows(["engine.hedge.band_base=1e9", "engine.venues.maker_rebate_bps=[3,2.5,3,3,3]"], 100, [1])
    rows = res.rows.of(0)
    assert rows["fees_usd"][-1] < 0 and np.all(np.diff(rows["fees_usd"]) <= 0)


def test_size_random_fills_a_fraction_of_the_quoted_size():
    # calm market, hedging off, size_eta 0: a Healthy venue quotes exactly base size 1 TAO (size_mult 1 at
    # vol_ratio 0.25, Normal regime, rho << 1), a venue in Warning 0.5. Whole fills: a tick's MM volume is a
    # multiple of 0.5 and at most its fill count; random fractions (market.fills.size_random): not multiples,
    # never more than the quoted size (<= fills x 1), and a uniform fraction on average (mean 1/2 of the size)
    base = ["market=calm", "engine.hedge.band_base=1e9", "engine.mm.size_eta=0.0"]
    _, res = run_rows(base, 1500, [4])
    whole = res.rows.of(0)
    filled = whole["mm_fills"] > 0
    assert filled.sum() > 500
    assert np.all(whole["mm_volume_tao"] <= whole["mm_fills"] + 1e-12)
    np.testing.assert_allclose(whole["mm_volume_tao"] * 2, np.round(whole["mm_volume_tao"] * 2), atol=1e-9)
    assert np.mean(whole["mm_volume_tao"][filled] == whole["mm_fills"][filled]) > 0.9  # mostly Healthy venues

    _, res = run_rows([*base, "market.fills.size_random=true"], 1500, [4])
    part = res.rows.of(0)
    filled = part["mm_fills"] > 0
    vol, fills = part["mm_volume_tao"][filled], part["mm_fills"][filled]
    assert filled.sum() > 500
    assert np.all(vol <= fills + 1e-12) and np.all(vol > 0)
    off_grid = np.abs(vol * 2 - np.round(vol * 2)) > 1e-6
    assert off_grid.mean() > 0.95
    mean_fraction = vol.sum() / fills.sum()
    assert 0.45 < mean_fraction < 0.55


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
    # MM off; 20 TAO opened at 250 and hedged at tick 0 (14.375 TAO sold) pays the taker fee
    # 14.375 * ~250 * 5 bps = 1.80 USD plus half a spread (~0.05 USD per TAO, 0.7 USD): pnl_total ~ -2.4 after
    # tick 0, so a 1 USD loss limit kills at t = 0 (num_ticks 1, one row); a 1e12 limit runs all 20 ticks.
    _, res = run_rows(["engine.initial_q_tao=20", "engine.venues.base_order_size=[0,0,0,0,0]"], 20, [11, 11],
                      per_run={"engine.risk.daily_loss_limit": [1.0, 1e12]}, record_runs=(0, 1))
    m0, m1 = res.run_metrics(0), res.run_metrics(1)
    assert m0["time_to_kill"] == 0 and m0["num_ticks"] == 1 and m0["kill_switch"] is True
    assert m0["final_pnl"] <= -1.0
    rows = res.rows.of(0)
    assert len(rows) == 1 and rows[0]["kill_switch"] == 1.0 and rows[0]["risk_regime"] == HARD_LIMIT
    assert rows[0]["hedge_volume_tao"] == pytest.approx(14.375, rel=1e-12)
    assert m1["num_ticks"] == 20 and m1["kill_switch"] is False and len(res.rows.of(1)) == 20
    # before the kill both runs are the same run (same seed): tick 0 rows agree but for the kill and regime
    assert res.rows.of(1)[0]["pnl_total"] == rows[0]["pnl_total"]


def test_regimes_warning_and_hard_limit_from_delta_through_simulate():
    # 60 TAO held (no hedging) at ~250 is a 15000 USD delta. In a calm market vol_ratio sits at its 0.25 floor, so
    # limit = base / max(0.25, 0.25) = 4 base: base 5000 -> 20000, and 15000 >= 0.7 * 20000 = 14000 is Warning;
    # base 3000 -> 12000 <= 15000: HardLimit, without a kill (no loss limit hit)
    _, res = run_rows(["market=calm", "engine.initial_q_tao=60", "engine.hedge.band_base=1e9",
                       "engine.venues.base_order_size=[0,0,0,0,0]"], 20, [5, 5],
                      per_run={"engine.risk.delta_hard_limit_usd_base": [5000.0, 3000.0]}, record_runs=(0, 1))
    warn, hard = res.rows.of(0), res.rows.of(1)
    assert np.all(warn["delta_limit_usd"] == 20000.0) and np.all(hard["delta_limit_usd"] == 12000.0)
    assert np.all(warn["risk_regime"] == WARNING) and np.all(hard["risk_regime"] == HARD_LIMIT)
    assert not hard["kill_switch"].any() and res.run_metrics(1)["num_ticks"] == 20
    assert res.run_metrics(0)["frac_warning"] == 1.0 and res.run_metrics(1)["frac_hard"] == 1.0
