"""Hand-worked cases for the engine's formulas (ENGINE_SPEC sections 3 and 5).

Every expected value below is worked out by hand in the comment next to it (from the spec's formulas
and the numbers of the case), not copied from a run of the code.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from paraphina.config.loading import compose_config, to_plain
from paraphina.engine import control
from paraphina.engine import simulate as sim_mod
from paraphina.engine.control import (DISABLED, HARD_LIMIT, HEALTHY, NORMAL, VENUE_WARNING, WARNING, vsum)
from paraphina.engine.ledger import apply_fill as ledger_fill
from paraphina.engine.params import build_params
from paraphina.engine.simulate import fill_thresholds, simulate


def apply_fill(q, entry, dq, price):
    """The ledger as the engine calls it: under the errstate that silences 0/0 where a position closes."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return ledger_fill(q, entry, dq, price)


def row(*values) -> np.ndarray:
    """A run-level array (1, runs)."""
    return np.array(values, dtype=float).reshape(1, -1)


def col(*values) -> np.ndarray:
    """A venue column (venues, 1)."""
    return np.array(values, dtype=float).reshape(-1, 1)


def close(a, b, rel=1e-12, abs_=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=rel, atol=abs_)


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


# --------------------------------------------------------------------------------------------------
# Ledger (step 9): VWAP entry, realised PnL on reductions and flips.
# --------------------------------------------------------------------------------------------------

def _fill(q, entry, dq, price):
    q, entry, realised = apply_fill(np.array([[q]], float), np.array([[entry]], float), np.array([[dq]], float),
                                    np.array([[price]], float))
    return float(q[0, 0]), float(entry[0, 0]), float(realised[0, 0])


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
    # a zero fill adds nothing, so the VWAP entry must stay exactly what it was: 5/6 TAO @ 249.16 stays @ 249.16.
    # (The tick loop calls apply_fill for every run of a batch when any run fills, so a run with no fill must
    # come out bit-identical, or a batch differs from single runs; (q * e) / q = 249.15999999999997 here.)
    q = 1 / 1.2
    assert _fill(q, 249.16, 0.0, 250.0) == (q, 249.16, 0.0)
    assert _fill(-q, 249.16, 0.0, 250.0) == (-q, 249.16, 0.0)
    # and vectorised: the venue that does not fill keeps its entry while the other one fills
    new_q, new_entry, _ = apply_fill(col(q, 2.0), col(249.16, 100.0), col(0.0, 2.0), col(250.0, 110.0))
    assert new_entry[:, 0].tolist() == [249.16, 105.0]


def test_ledger_vectorised_over_venues_and_runs():
    # the cases above laid out as 3 venues x 3 runs at once; each element must match its scalar case
    q = np.array([[2, 5, -10], [3, -6, 3], [0, -2, 2]], float)
    entry = np.array([[100, 106, 56], [106, 56, 106], [0, 50, 100]], float)
    dq = np.array([[3, -2, 4], [-5, 10, -3], [-4, 2, 0]], float)
    price = np.array([[110, 120, 50], [100, 60, 110], [50, 45, 123]], float)
    new_q, new_entry, realised = apply_fill(q, entry, dq, price)
    assert new_q.tolist() == [[5, 3, -6], [-2, 4, 0], [-4, 0, 2]]
    assert new_entry.tolist() == [[106, 106, 56], [100, 60, 0], [50, 0, 100]]
    assert realised.tolist() == [[0, 28, 24], [-18, -24, 12], [0, 10, 0]]
    # inputs are not modified
    assert q.tolist() == [[2, 5, -10], [3, -6, 3], [0, -2, 2]]


# --------------------------------------------------------------------------------------------------
# Mark to fair (steps 5 and 11): the two-venue example.
# --------------------------------------------------------------------------------------------------

def test_two_venue_mark_to_fair():
    # venue 0 long 5 @ 95 with mid 102, venue 1 short 3 @ 110 with mid 98, fair 100:
    # q = 5 - 3 = 2; delta = 2 * 100 = 200; basis = 5 (102 - 100) + (-3)(98 - 100) = 10 + 6 = 16;
    # basis_gross = |10| + |6| = 16; unrealised = 5 (100 - 95) + (-3)(100 - 110) = 25 + 30 = 55
    q = col(5, -3)
    entry = col(95, 110)
    mid = col(102, 98)
    fair = row(100)
    q_total = vsum(q)
    assert q_total.shape == (1, 1)
    assert q_total[0, 0] == 2.0
    assert (q_total * fair)[0, 0] == 200.0
    assert vsum(q * (mid - fair))[0, 0] == 16.0
    assert vsum(np.abs(q * (mid - fair)))[0, 0] == 16.0
    assert vsum(q * (fair - entry))[0, 0] == 55.0


# --------------------------------------------------------------------------------------------------
# Kalman filter (step 3)
# --------------------------------------------------------------------------------------------------

KF = SimpleNamespace(q_base=0.01, r_a=0.01, r_b=100.0, r_min=0.01, r_max=1.0, p_init=1.0)
BOOK = SimpleNamespace(max_mid_jump_pct=0.02, max_consecutive_rejects=3, min_healthy_for_kf=2)


def _kalman_step(xhat, p, rejects, has_fair, observed, y, spread, depth, kf, dt):
    """kalman_step on (1, runs) rows, from an observation built by kalman_observation (2 usable venues or none)."""
    obs = control.kalman_observation(np.where(observed, 2, 0), y, spread, depth, kf, BOOK)
    return control.kalman_step(xhat, np.exp(xhat), p, rejects, has_fair, obs, kf, BOOK, dt)


def _kalman(xhat, p, rejects, has_fair, observed, y, spread=1.0, depth=1000.0, kf=KF, dt=1.0):
    out = _kalman_step(row(xhat), row(p), row(rejects), np.array([[has_fair]]), np.array([[observed]]),
                       row(y), row(spread), row(depth), kf, dt)
    return tuple(float(a[0, 0]) for a in out[:3]) + (bool(out[3][0, 0]),)


def test_kalman_hand_update():
    # predict P = 0.02 + 0.01 * 1 = 0.03; R = 0.01 + 0.01 * 1^2 + 100 / 1000 = 0.12 (inside [0.01, 1]);
    # K = 0.03 / 0.15 = 0.2; y = 101 is 1 % from 100: accepted;
    # xhat = ln 100 + 0.2 (ln 101 - ln 100); P = 0.03 (1 - 0.2) = 0.024
    xhat, p, rej, has = _kalman(math.log(100), 0.02, 0, True, True, 101.0)
    assert xhat == pytest.approx(math.log(100) + 0.2 * (math.log(101) - math.log(100)), rel=1e-14)
    assert p == pytest.approx(0.024, rel=1e-12)
    assert rej == 0.0 and has


def test_kalman_hand_update_with_default_config(plain_cfg):
    kf = SimpleNamespace(**plain_cfg["engine"]["kalman"])
    # P = 1 + 1e-6; R = 1e-8 + 1e-6 * 0.1^2 + 100 / 2e6 = 1e-8 + 1e-8 + 5e-5 = 5.002e-5
    # K = 1.000001 / (1.000001 + 5.002e-5); xhat = ln 250 + K (ln 251 - ln 250); P = 1.000001 (1 - K)
    xhat, p, _, _ = _kalman(math.log(250), 1.0, 0, True, True, 251.0, spread=0.1, depth=2e6, kf=kf)
    k = 1.000001 / (1.000001 + 5.002e-5)
    assert xhat == pytest.approx(math.log(250) + k * (math.log(251) - math.log(250)), rel=1e-12)
    assert p == pytest.approx(1.000001 * (1 - k), rel=1e-9)


def test_kalman_r_is_clipped():
    # depth 1: R = 0.01 + 0.01 + 100 = 100.02 -> r_max 1; P = 0.03 -> K = 0.03 / 1.03
    _, p, _, _ = _kalman(0.0, 0.02, 0, True, True, 1.01, spread=1.0, depth=1.0)
    assert p == pytest.approx(0.03 * (1 - 0.03 / 1.03), rel=1e-12)
    # r_min 0.5 > everything else: R = clip(0.5 + 0 + 1e-6, 0.5, 1) = 0.500001; K = 0.03 / 0.530001
    kf = SimpleNamespace(**{**vars(KF), "r_min": 0.5, "r_a": 0.0})
    _, p, _, _ = _kalman(0.0, 0.02, 0, True, True, 1.01, spread=1.0, depth=1e8, kf=kf)
    assert p == pytest.approx(0.03 * (1 - 0.03 / 0.530001), rel=1e-12)


def test_kalman_rejects_jump_over_max_pct():
    # y = 103 is 3 % from 100 > 2 %: only predict (P = 0.02 + 0.01), xhat stays, one reject counted
    xhat, p, rej, has = _kalman(math.log(100), 0.02, 0, True, True, 103.0)
    assert xhat == math.log(100)
    assert p == pytest.approx(0.03, rel=1e-14)
    assert rej == 1.0 and has
    # 1.9 % is accepted, 2.1 % (either way) rejected
    assert _kalman(math.log(100), 0.02, 0, True, True, 101.9)[2] == 0.0
    assert _kalman(math.log(100), 0.02, 0, True, True, 102.1)[2] == 1.0
    assert _kalman(math.log(100), 0.02, 0, True, True, 97.9)[2] == 1.0


def test_kalman_without_previous_fair_accepts_anything():
    # no previous fair value: y = 200 (100 % away) is accepted: K = 0.03 / 0.15 = 0.2
    xhat, p, rej, has = _kalman(math.log(100), 0.02, 0, False, True, 200.0)
    assert xhat == pytest.approx(math.log(100) + 0.2 * math.log(2), rel=1e-14)
    assert p == pytest.approx(0.024, rel=1e-12)
    assert has and rej == 0.0


def test_kalman_reanchors_on_third_consecutive_reject():
    x0 = math.log(100)
    # 1st and 2nd rejection count up; the 3rd re-anchors: xhat = ln 110, P = p_init = 1, rejects 0
    state = (x0, 0.02, 0.0, True)
    for expected_rejects in (1.0, 2.0):
        state = _kalman(state[0], state[1], state[2], state[3], True, 110.0)
        assert state[0] == x0 and state[2] == expected_rejects
    assert state[1] == pytest.approx(0.04, rel=1e-12)  # two predicts: 0.02 + 0.01 + 0.01
    xhat, p, rej, has = _kalman(state[0], state[1], state[2], state[3], True, 110.0)
    assert xhat == pytest.approx(math.log(110), rel=1e-15)
    assert p == 1.0 and rej == 0.0 and has
    # an accepted observation in between resets the count: 2 rejects then an accepted one -> 0
    assert _kalman(x0, 0.02, 2.0, True, True, 101.0)[2] == 0.0
    # a tick without observation neither counts nor resets
    assert _kalman(x0, 0.02, 2.0, True, False, 110.0)[2] == 2.0


def test_kalman_no_observation_only_predicts():
    # no observation (y, spread, depth are NaN as 0/0 would give): xhat unchanged, P = 0.02 + 0.01 * 0.5
    xhat, p, rej, has = _kalman(math.log(100), 0.02, 1.0, True, False, math.nan, spread=math.nan,
                                depth=math.nan, dt=0.5)
    assert xhat == math.log(100)
    assert p == pytest.approx(0.025, rel=1e-14)
    assert rej == 1.0 and has
    # before any fair value, no observation leaves has_fair False
    assert _kalman(math.log(100), 0.02, 0.0, False, False, math.nan)[3] is False


def test_kalman_vectorised_runs():
    # the four cases side by side: accept, reject, re-anchor, no observation
    x0 = math.log(100)
    xhat, p, rej, has = _kalman_step(
        row(x0, x0, x0, x0), row(0.02, 0.02, 0.02, 0.02), row(0, 0, 2, 0), np.array([[True, True, True, True]]),
        np.array([[True, True, True, False]]), row(101, 103, 110, np.nan), row(1, 1, 1, np.nan),
        row(1000, 1000, 1000, np.nan), KF, 1.0)
    close(xhat, row(x0 + 0.2 * (math.log(101) - x0), x0, math.log(110), x0), rel=1e-14)
    close(p, row(0.024, 0.03, 1.0, 0.03))
    assert rej.tolist() == [[0, 1, 0, 0]]
    assert has.all()


# --------------------------------------------------------------------------------------------------
# Effective volatility and control scalars (step 4)
# --------------------------------------------------------------------------------------------------

VOL = SimpleNamespace(fv_vol_alpha_short=0.2, fv_vol_alpha_long=0.05, sigma_min=0.001, vol_ref=0.028125,
                      vol_ratio_min=0.25, vol_ratio_max=4.0, c_spread=1.0, c_size=2.0, c_band=1.0)


def _vol(var, ret):
    return [float(a[0, 0]) for a in control.vol_scalars(row(var), row(ret), VOL)]


def test_vol_floor_and_lower_clip():
    # var 0, ret 0: var 0, sigma_eff = max(0, 0.001) = 0.001; 0.001 / 0.028125 = 0.0356 -> clipped to 0.25;
    # bump = max(0.25 - 1, 0) = 0 -> every multiplier is 1
    assert _vol(0.0, 0.0) == [0.0, 0.001, 0.25, 1.0, 1.0, 1.0]


def test_vol_hand_ewma():
    # var = 0.8 * 1e-4 + 0.2 * 0.02^2 = 1.6e-4; sigma_eff = sqrt(1.6e-4) = 0.0126491;
    # vol_ratio = 0.0126491 / 0.028125 = 0.449751 (inside [0.25, 4]); bump 0
    var, sigma, ratio, sm, qm, bm = _vol(1e-4, 0.02)
    assert var == pytest.approx(1.6e-4, rel=1e-12)
    assert sigma == pytest.approx(math.sqrt(1.6e-4), rel=1e-12)
    assert ratio == pytest.approx(math.sqrt(1.6e-4) / 0.028125, rel=1e-12)
    assert (sm, qm, bm) == (1.0, 1.0, 1.0)


def test_vol_ratio_two():
    # var = ret^2 = 0.05625^2 stays 0.05625^2; sigma_eff 0.05625; vol_ratio = 0.05625 / 0.028125 = 2; bump 1:
    # spread_mult = 1 + 1 * 1 = 2; size_mult = 1 / (1 + 2 * 1) = 1/3; band_mult = 1 / (1 + 1 * 1) = 1/2
    var, sigma, ratio, sm, qm, bm = _vol(0.05625 ** 2, 0.05625)
    assert sigma == pytest.approx(0.05625, rel=1e-12)
    assert ratio == pytest.approx(2.0, rel=1e-12)
    assert sm == pytest.approx(2.0, rel=1e-12)
    assert qm == pytest.approx(1 / 3, rel=1e-12)
    assert bm == pytest.approx(0.5, rel=1e-12)


def test_vol_upper_clip():
    # ret = 1: var = 0.2, sigma_eff = 0.447 -> ratio 15.9 -> clipped to 4; bump 3:
    # spread 1 + 3 = 4, size 1 / (1 + 6) = 1/7, band 1 / (1 + 3) = 1/4
    var, sigma, ratio, sm, qm, bm = _vol(0.0, 1.0)
    assert var == pytest.approx(0.2, rel=1e-15)
    assert ratio == 4.0
    assert (sm, qm, bm) == (4.0, 1 / 7, 0.25)


def test_delta_limit():
    risk = SimpleNamespace(delta_hard_limit_usd_base=100000.0, delta_limit_vol_ratio_floor=0.25)
    # 100000 / max(2, 0.25) = 50000; 100000 / max(0.1, 0.25) = 400000; 100000 / 1 = 100000
    close(control.delta_limit(row(2.0, 0.1, 1.0), risk), row(50000, 400000, 100000))


# --------------------------------------------------------------------------------------------------
# Toxicity and venue status (step 6)
# --------------------------------------------------------------------------------------------------

TOX = SimpleNamespace(vol_tox_scale=0.5, tox_med_threshold=0.6, tox_high_threshold=0.9)


def test_toxicity_scores():
    # sigma_eff 1: (local / 1 - 1) / 0.5 clipped to [0, 1]:
    # 0.5 -> -1 -> 0; 1 -> 0; 1.25 -> 0.5; 1.375 -> 0.75; 1.5 -> 1; 2 -> 2 -> 1; no book -> 1
    local = col(0.5, 1.0, 1.25, 1.375, 1.5, 2.0, 1.0)
    has_book = col(1, 1, 1, 1, 1, 1, 0).astype(bool)
    tox = control.toxicity(local, row(1.0), has_book, TOX)
    assert tox[:, 0].tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0, 1.0]
    # with sigma_eff 0.002 and local 0.0025: (1.25 - 1) / 0.5 = 0.5
    assert control.toxicity(col(0.0025), row(0.002), col(1).astype(bool), TOX)[0, 0] == pytest.approx(0.5)


def test_venue_status_thresholds():
    # < 0.6 Healthy; 0.6 <= tox < 0.9 Warning; >= 0.9 Disabled; stale Disabled whatever the score
    tox = col(0.0, 0.5999, 0.6, 0.75, 0.8999, 0.9, 1.0, 0.0, 0.7)
    stale = col(0, 0, 0, 0, 0, 0, 0, 1, 1).astype(bool)
    status = control.venue_status(tox, stale, TOX)
    assert status[:, 0].tolist() == [HEALTHY, HEALTHY, VENUE_WARNING, VENUE_WARNING, VENUE_WARNING, DISABLED,
                                     DISABLED, DISABLED, DISABLED]


def test_no_book_means_disabled():
    # no book -> tox 1 >= 0.9 -> Disabled
    tox = control.toxicity(col(0.001), row(0.001), col(0).astype(bool), TOX)
    assert control.venue_status(tox, col(0).astype(bool), TOX)[0, 0] == DISABLED


# --------------------------------------------------------------------------------------------------
# Risk regime and kill switch (step 11); the spec's comparisons are inclusive.
# --------------------------------------------------------------------------------------------------

RISK = SimpleNamespace(delta_hard_limit_usd_base=100000.0, delta_warn_frac=0.7, basis_hard_limit_usd=10000.0,
                       basis_warn_frac=0.7, daily_loss_limit=5000.0, pnl_warn_frac=0.5,
                       delta_limit_vol_ratio_floor=0.25)


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
def test_risk_regime_thresholds(pnl, delta, basis, regime, kill):
    got_regime, got_kill = control.risk_regime(row(pnl), row(delta), row(basis), row(100000.0), RISK)
    assert int(got_regime[0, 0]) == regime
    assert bool(got_kill[0, 0]) is kill


def test_risk_regime_vectorised_with_per_run_limits():
    # per-run loss limits (1, runs): 100, 5000, 200; pnl -100 -> kill, Warning(-100 <= -2500? no) Normal, Warning
    risk = SimpleNamespace(**{**vars(RISK), "daily_loss_limit": row(100.0, 5000.0, 200.0)})
    regime, kill = control.risk_regime(row(-100.0, -100.0, -100.0), row(0, 0, 0), row(0, 0, 0), row(1e5, 1e5, 1e5),
                                       risk)
    # run 0: -100 <= -100 -> HardLimit + kill; run 1: -100 > -2500 -> Normal; run 2: -100 <= -0.5*200 -> Warning
    assert regime.tolist() == [[HARD_LIMIT, NORMAL, WARNING]]
    assert kill.tolist() == [[True, False, False]]


# --------------------------------------------------------------------------------------------------
# MM quotes (step 7)
# --------------------------------------------------------------------------------------------------

def mm_eng(**venue_over):
    venues = dict(gamma=0.1, k=1.5, base_order_size=1.0, max_order_size=20.0, tick_size=0.01)
    venues.update(venue_over)
    return SimpleNamespace(
        venues=SimpleNamespace(**{k: (col(*v) if isinstance(v, (list, tuple)) else v) for k, v in venues.items()}),
        mm=SimpleNamespace(quote_horizon_sec=30.0, edge_local_min=0.5, edge_vol_mult=0.2, basis_weight=0.3,
                           funding_weight=0.3, size_eta=0.1, venue_warning_size_mult=0.5),
        risk=SimpleNamespace(delta_hard_limit_usd_base=100000.0, delta_limit_vol_ratio_floor=0.25,
                             delta_ratio_stop=2.0, spread_warn_mult=1.5, q_warn_cap=5.0))


def quote(mid, fair, q, sigma, vol_ratio, funding=0.0, spread_mult=1.0, size_mult=1.0, regime=NORMAL,
          status=HEALTHY, dollar_delta=None, eng=None):
    eng = eng or mm_eng()
    mid_arr = np.array(mid, float).reshape(-1, 1)
    mid_res, fair_coef = control.quote_market_terms(mid_arr, np.zeros_like(mid_arr) + funding, eng.mm)
    status_arr = np.zeros(mid_arr.shape, np.int64) + np.array(status).reshape(-1, 1)
    dd = q * fair if dollar_delta is None else dollar_delta
    limit = control.delta_limit(row(vol_ratio), eng.risk)
    bid, ask, size, bid_ok, ask_ok = control.mm_quotes(
        mid_res, fair_coef, row(fair), row(q), row(dd), row(sigma), row(vol_ratio), limit, row(spread_mult),
        row(size_mult), np.array([[regime]]), status_arr, eng)
    return bid[:, 0], ask[:, 0], size[:, 0], bid_ok[:, 0], ask_ok[:, 0]


def on_grid(price, tick=0.01):
    return abs(price / tick - round(price / tick)) < 1e-6


def test_quote_hand_case_flat():
    # mid = fair = 250, q 0, sigma 0.01, vol_ratio 0.5:
    # gamma sigma^2 T = 0.1 * 1e-4 * 30 = 3e-4; half = max(1.5e-4 + 1/1.5, 0.5) = 0.6668167;
    # + 0.2 * 0.5 = 0.7668167; reservation 250 (no basis, no funding, no inventory);
    # bid = floor(249.2331833 / 0.01) * 0.01 = 249.23; ask = ceil(250.7668167 / 0.01) * 0.01 = 250.77; size 1
    bid, ask, size, bid_ok, ask_ok = quote(250.0, 250.0, 0.0, 0.01, 0.5)
    assert bid[0] == pytest.approx(249.23, abs=1e-9) and on_grid(bid[0])
    assert ask[0] == pytest.approx(250.77, abs=1e-9) and on_grid(ask[0])
    assert size[0] == 1.0
    assert bid_ok[0] and ask_ok[0]


def test_quote_hand_case_basis_funding_inventory():
    # mid 101, fair 100, funding 0.0008 per 8 h, q 2, sigma 0.02, vol_ratio 1:
    # gamma sigma^2 T = 0.1 * 4e-4 * 30 = 1.2e-3; half = 6e-4 + 0.6666667 + 0.2 = 0.8672667
    # res = 101 + 0.3 (101 - 100) + 0.3 * 0.0008 * (30 / 28800) * 100 - 1.2e-3 * 2 / 2
    #     = 101 + 0.3 + 0.000025 - 0.0012 = 101.298825
    # bid = floor((101.298825 - 0.8672667) / 0.01) = floor(10043.1558) -> 100.43
    # ask = ceil((101.298825 + 0.8672667) / 0.01) = ceil(10216.6092) -> 102.17
    # size = 1 * 1 / (1 + 0.1 * 2) = 0.8333333
    bid, ask, size, bid_ok, ask_ok = quote(101.0, 100.0, 2.0, 0.02, 1.0, funding=0.0008)
    assert bid[0] == pytest.approx(100.43, abs=1e-9) and on_grid(bid[0])
    assert ask[0] == pytest.approx(102.17, abs=1e-9) and on_grid(ask[0])
    assert size[0] == pytest.approx(1 / 1.2, rel=1e-14)
    assert bid_ok[0] and ask_ok[0]


def test_quote_warning_multipliers():
    # same case in Warning: half = 0.8672667 * 1.5 = 1.3009;
    # bid = floor((101.298825 - 1.3009) / 0.01) = floor(9999.7925) -> 99.99; ask = ceil(10259.9725) -> 102.60
    bid, ask, size, _, _ = quote(101.0, 100.0, 2.0, 0.02, 1.0, funding=0.0008, regime=WARNING)
    assert bid[0] == pytest.approx(99.99, abs=1e-9)
    assert ask[0] == pytest.approx(102.60, abs=1e-9)
    # size 0.8333 is under q_warn_cap 5: unchanged
    assert size[0] == pytest.approx(1 / 1.2, rel=1e-14)
    # spread_mult 2 (vol_ratio 2): half = (1.5e-4 + 0.6666667 + 0.2 * 2) * 2 = 2.1336333 at sigma 0.01, fair 250
    # bid = floor(247.8663667 / 0.01) -> 247.86; ask = ceil(252.1336333 / 0.01) -> 252.14
    bid, ask, _, _, _ = quote(250.0, 250.0, 0.0, 0.01, 2.0, spread_mult=2.0)
    assert bid[0] == pytest.approx(247.86, abs=1e-9)
    assert ask[0] == pytest.approx(252.14, abs=1e-9)


def test_quote_half_spread_floor_and_venue_columns():
    # k = 100: 1/k = 0.01, so half = max(1.5e-4 + 0.01, 0.5) = 0.5, then + 0.2 * 0.25 = 0.55:
    # bid = floor(99.45 / 0.01) * 0.01 = 99.45 (up to float), ask = 100.55.
    # Two venues in one call, the second with k = 1.5 as in the flat case at mid 100:
    # half = 0.6668167 + 0.05 = 0.7168167 -> bid floor(99.2831833) = 99.28, ask ceil(100.7168167) = 100.72
    eng = mm_eng(k=[100.0, 1.5], gamma=[0.1, 0.1], base_order_size=[1.0, 1.0], max_order_size=[20.0, 20.0],
                 tick_size=[0.01, 0.01])
    bid, ask, _, ok_b, ok_a = quote([100.0, 100.0], 100.0, 0.0, 0.01, 0.25, eng=eng)
    assert bid[0] == pytest.approx(99.45, abs=0.0100001) and bid[0] <= 99.45 + 1e-9
    assert ask[0] == pytest.approx(100.55, abs=0.0100001) and ask[0] >= 100.55 - 1e-9
    assert bid[1] == pytest.approx(99.28, abs=1e-9)
    assert ask[1] == pytest.approx(100.72, abs=1e-9)
    assert ok_b.all() and ok_a.all()


def test_quote_tick_grid_coarse_tick():
    # tick 0.5: flat case at 250 with half 0.7668167: bid = floor(249.2331833 / 0.5) * 0.5 = 249.0;
    # ask = ceil(250.7668167 / 0.5) * 0.5 = 251.0
    bid, ask, _, _, _ = quote(250.0, 250.0, 0.0, 0.01, 0.5, eng=mm_eng(tick_size=0.5))
    assert (bid[0], ask[0]) == (249.0, 251.0)


def test_quote_size_reductions():
    # base 10, q 0, size_mult 1: 10; Warning -> min(10, 5) = 5; venue Warning -> 10 * 0.5 = 5;
    # both -> 2.5
    eng = mm_eng(base_order_size=10.0)
    assert quote(250, 250, 0, 0.01, 1.0, eng=eng)[2][0] == 10.0
    assert quote(250, 250, 0, 0.01, 1.0, regime=WARNING, eng=eng)[2][0] == 5.0
    assert quote(250, 250, 0, 0.01, 1.0, status=VENUE_WARNING, eng=eng)[2][0] == 5.0
    assert quote(250, 250, 0, 0.01, 1.0, regime=WARNING, status=VENUE_WARNING, eng=eng)[2][0] == 2.5
    # eta: base 1, q 5, size_mult 1/3: (1/3) / (1 + 0.1 * 5) = 2/9
    assert quote(250, 250, 5.0, 0.01, 1.0, size_mult=1 / 3)[2][0] == pytest.approx(2 / 9, rel=1e-14)
    # cap at max_order_size: base 30 -> 20
    assert quote(250, 250, 0, 0.01, 1.0, eng=mm_eng(base_order_size=30.0))[2][0] == 20.0


def test_quote_delta_ratio():
    # vol_ratio 1: limit 100000. dollar delta 150000 -> rho 1.5 -> size x (2 - 1.5) = 0.5
    b, a, size, ok_b, ok_a = quote(250, 250, 0.0, 0.01, 1.0, dollar_delta=150000.0)
    assert size[0] == pytest.approx(0.5) and ok_b[0] and ok_a[0]
    # vol_ratio 2: limit 100000 / 2 = 50000; -75000 -> rho 1.5 -> 0.5
    assert quote(250, 250, 0.0, 0.01, 2.0, dollar_delta=-75000.0)[2][0] == pytest.approx(0.5)
    # rho exactly 1: no reduction
    assert quote(250, 250, 0.0, 0.01, 1.0, dollar_delta=100000.0)[2][0] == 1.0
    # rho 2 and more: no quote on either side
    for dd in (200000.0, 250000.0, -200000.0):
        _, _, _, ok_b, ok_a = quote(250, 250, 0.0, 0.01, 1.0, dollar_delta=dd)
        assert not ok_b[0] and not ok_a[0]


def test_quote_hard_limit_reduce_only():
    # long: only the ask (a sell reduces |q|); short: only the bid; flat: nothing
    _, _, _, ok_b, ok_a = quote(250, 250, 3.0, 0.01, 1.0, regime=HARD_LIMIT, dollar_delta=0.0)
    assert (bool(ok_b[0]), bool(ok_a[0])) == (False, True)
    _, _, _, ok_b, ok_a = quote(250, 250, -3.0, 0.01, 1.0, regime=HARD_LIMIT, dollar_delta=0.0)
    assert (bool(ok_b[0]), bool(ok_a[0])) == (True, False)
    _, _, _, ok_b, ok_a = quote(250, 250, 0.0, 0.01, 1.0, regime=HARD_LIMIT, dollar_delta=0.0)
    assert (bool(ok_b[0]), bool(ok_a[0])) == (False, False)


def test_quote_disabled_and_nonpositive_bid():
    _, _, _, ok_b, ok_a = quote(250, 250, 0.0, 0.01, 1.0, status=DISABLED)
    assert not ok_b[0] and not ok_a[0]
    # mid 0.5: half 0.8668 at vol_ratio 1 -> bid = floor(-0.3668 / 0.01) * 0.01 < 0 -> no quote
    bid, _, _, ok_b, ok_a = quote(0.5, 0.5, 0.0, 0.01, 1.0)
    assert bid[0] < 0 and not ok_b[0] and not ok_a[0]


def test_quote_with_real_params_per_venue(plain_cfg):
    # the real 5-venue config: venue 1 (hyperliquid) has gamma 0.09, k 1.6. mid = fair = 250, q 0,
    # sigma 0.01, vol_ratio 0.25: half_1 = 0.09 * 1e-4 * 30 / 2 + 1/1.6 + 0.2 * 0.25 = 1.35e-4 + 0.625 + 0.05
    # = 0.675135 -> bid floor(249.324865 / 0.01) = 249.32, ask ceil(250.675135 / 0.01) = 250.68
    p = build_params(plain_cfg["engine"], plain_cfg["market"], 1)
    mid = np.full((5, 1), 250.0)
    mid_res, fair_coef = control.quote_market_terms(mid, np.zeros((5, 1)), p.engine.mm)
    bid, ask, size, ok_b, ok_a = control.mm_quotes(
        mid_res, fair_coef, row(250.0), row(0.0), row(0.0), row(0.01), row(0.25), row(100000.0), row(1.0), row(1.0),
        np.array([[NORMAL]]), np.zeros((5, 1), np.int64), p.engine)
    assert bid.shape == (5, 1)
    assert bid[1, 0] == pytest.approx(249.32, abs=1e-9)
    assert ask[1, 0] == pytest.approx(250.68, abs=1e-9)
    # venue 2 (aster): gamma 0.11, k 1.4: half = 1.65e-4 + 0.7142857 + 0.05 = 0.7644507
    # -> bid floor(249.2355493 / 0.01) = 249.23, ask ceil(250.7644507 / 0.01) = 250.77
    assert bid[2, 0] == pytest.approx(249.23, abs=1e-9)
    assert ask[2, 0] == pytest.approx(250.77, abs=1e-9)
    assert (size == 1.0).all() and ok_b.all() and ok_a.all()


# --------------------------------------------------------------------------------------------------
# Hedge (step 8)
# --------------------------------------------------------------------------------------------------

def hedge_eng(allowed=(True, True, True), max_size=(20.0, 20.0, 20.0), **hedge_over):
    hedge = dict(band_base=4.0, band_mult_floor=0.1, alpha_hedge=1.0, beta_hedge=1.0, hedge_max_step=20.0,
                 warning_step_mult=0.5, min_slice_tao=1e-4)
    hedge.update(hedge_over)
    venues = SimpleNamespace(hedge_allowed=np.array(allowed, bool).reshape(-1, 1), max_order_size=col(*max_size),
                             taker_fee_bps=col(5.0, 5.0, 10.0))
    return SimpleNamespace(hedge=SimpleNamespace(**hedge), venues=venues)


def hedge(q, band_mult=1.0, regime=NORMAL, status=(0, 0, 0), tox=(0.0, 0.0, 0.5), eng=None):
    eng = eng or hedge_eng()
    # mids 100, spreads 0.2, 0.4, 0.2; taker 5, 5, 10 bps:
    # cost_base = s/2 + fee * mid = 0.1 + 0.05, 0.2 + 0.05, 0.1 + 0.1 = 0.15, 0.25, 0.2
    cost = control.hedge_cost_base(col(100, 100, 100), col(0.2, 0.4, 0.2), eng.venues)
    close(cost, col(0.15, 0.25, 0.2), rel=1e-12)
    q = np.array(q, float).reshape(1, -1)
    runs = q.shape[1]
    status_arr = np.repeat(np.array(status, np.int64).reshape(-1, 1), runs, axis=1)
    tox_arr = np.repeat(col(*tox), runs, axis=1)
    return control.hedge_orders(q, row(*([band_mult] * runs)), np.array([[regime] * runs]), status_arr, tox_arr,
                                cost, eng)


# weights 1 / (cost (1 + tox)) = 1/0.15, 1/0.25, 1/(0.2 * 1.5) = 20/3, 4, 10/3; sum 14;
# shares 10/21, 6/21, 5/21
SHARES = np.array([10 / 21, 6 / 21, 5 / 21])


def test_hedge_inside_band_is_none():
    # band 4 * 1: |q| = 4 is not > 4; |q| = 3.9 inside; both sides
    assert hedge([4.0]) is None
    assert hedge([-3.9, 0.0, 4.0]) is None
    # band_mult 0.5 -> band 2: q 1.99 inside
    assert hedge([1.99], band_mult=0.5) is None


def test_hedge_step_and_allocation():
    # q 10, band 4: step = -(10 - 4) * 1 = -6, split 10/21, 6/21, 5/21 -> -2.857, -1.714, -1.429
    dq = hedge([10.0])
    close(dq[:, 0], -6 * SHARES)
    assert dq.sum() == pytest.approx(-6.0, rel=1e-14)
    # short q -10: +6
    close(hedge([-10.0])[:, 0], 6 * SHARES)


def test_hedge_band_mult_and_floor():
    # band_mult 0.5: band 2, q 10 -> -8
    close(hedge([10.0], band_mult=0.5)[:, 0], -8 * SHARES)
    # band_mult 0.05 < floor 0.1: band 0.4, q 1 -> -0.6
    close(hedge([1.0], band_mult=0.05)[:, 0], -0.6 * SHARES)


def test_hedge_warning_halving_alpha_and_clip():
    # Warning: -6 * 0.5 = -3
    close(hedge([10.0], regime=WARNING)[:, 0], -3 * SHARES)
    # alpha 0.5: -3; alpha 2 is clipped to 1: -6
    close(hedge([10.0], eng=hedge_eng(alpha_hedge=0.5))[:, 0], -3 * SHARES)
    close(hedge([10.0], eng=hedge_eng(alpha_hedge=2.0))[:, 0], -6 * SHARES)
    # q 50: excess 46 clipped to hedge_max_step 20; q -50 -> +20
    close(hedge([50.0])[:, 0], -20 * SHARES)
    close(hedge([-50.0])[:, 0], 20 * SHARES)
    # Warning with q 50: 46 * 0.5 = 23, still clipped to 20
    close(hedge([50.0], regime=WARNING)[:, 0], -20 * SHARES)


def test_hedge_only_healthy_hedge_allowed_venues():
    # venue 0 in Warning: weights 0, 4, 10/3, sum 22/3 -> shares 0, 6/11, 5/11
    close(hedge([10.0], status=(VENUE_WARNING, 0, 0))[:, 0], -6 * np.array([0, 6 / 11, 5 / 11]))
    # venue 2 Disabled: weights 20/3, 4, 0 -> shares 5/8, 3/8, 0
    close(hedge([10.0], status=(0, 0, DISABLED))[:, 0], -6 * np.array([5 / 8, 3 / 8, 0]))
    # venue 1 not allowed to hedge: weights 20/3, 0, 10/3 -> shares 2/3, 0, 1/3
    close(hedge([10.0], eng=hedge_eng(allowed=(True, False, True)))[:, 0], -6 * np.array([2 / 3, 0, 1 / 3]))
    # no eligible venue: nothing, and no NaN
    dq = hedge([10.0], status=(DISABLED, VENUE_WARNING, DISABLED))
    assert dq.tolist() == [[0.0], [0.0], [0.0]]


def test_hedge_slice_cap_and_min_slice():
    # max_order_size 2 on venue 0: its slice 60/21 = 2.857 is capped to 2 (the rest is not re-allocated)
    dq = hedge([10.0], eng=hedge_eng(max_size=(2.0, 20.0, 20.0)))
    close(dq[:, 0], [-2.0, -6 * 6 / 21, -6 * 5 / 21])
    # q 4.0003: excess 0.0003 -> slices 1.4286e-4, 8.571e-5, 7.143e-5: the last two are under 1e-4, dropped
    dq = hedge([4.0003])
    assert dq[0, 0] == pytest.approx(-0.0003 * 10 / 21, rel=1e-6)
    assert dq[1, 0] == 0.0 and dq[2, 0] == 0.0


def test_hedge_vectorised_runs():
    # runs q = 10, 3 (inside), -50: steps -6, 0, +20
    dq = hedge([10.0, 3.0, -50.0])
    assert dq.shape == (3, 3)
    close(dq, np.outer(SHARES, [-6.0, 0.0, 20.0]))


# --------------------------------------------------------------------------------------------------
# Fill rule (step 9): P(fill) = 1 - exp(-A exp(-k max(d, 0)) dt); crossed quote fills with probability 1.
# --------------------------------------------------------------------------------------------------

def test_fill_thresholds_equal_the_intensity_rule():
    # for a draw U, the quote at distance d fills iff U > exp(-A dt exp(-k max(d, 0))), which has probability
    # 1 - exp(-A exp(-k max(d, 0)) dt); a distance d < 0 (crossed) fills for every U.
    rng = np.random.default_rng(5)
    u = rng.random((400, 1))
    A, k, dt = 1.0, 1.5, 1.0
    thr = fill_thresholds(u, A, k, dt)
    for d in (-0.5, 0.0, 0.1, 0.5, 1.0, 2.0):
        rule = u[:, 0] > math.exp(-A * dt * math.exp(-k * max(d, 0.0)))
        fills = d < thr[:, 0]
        if d < 0:
            assert fills.all()
            continue
        # away from exact ties the two agree
        tie = np.abs(u[:, 0] - math.exp(-A * dt * math.exp(-k * max(d, 0.0)))) < 1e-9
        assert (fills == rule)[~tie].all()


# --------------------------------------------------------------------------------------------------
# Market blocks (section 2): a run's path does not depend on how its ticks are split into rng blocks.
# --------------------------------------------------------------------------------------------------

def _box_muller(u1, u2):
    from paraphina.engine.rng import box_muller

    uniforms = np.array([*u1, *u2], float).reshape(1, -1, 1)
    half = (1, len(u1), 1)
    return box_muller(uniforms, np.empty(half, np.float32), np.empty(half, np.float32))[0, :, 0]


def test_box_muller_hand_cases():
    # u1 = 1 - e^-0.5: radius sqrt(-2 ln e^-0.5) = 1; u2 = 1/8: angle pi/4, cos = sin = 0.7071068
    # u1 = 1 - e^-2: radius 2; u2 = 1/2: angle pi, cos -1, sin 0 -> (-2, 0)
    # u1 = 0: radius sqrt(-2 ln 1) = 0 exactly, whatever the angle
    z = _box_muller([1 - math.exp(-0.5), 1 - math.exp(-2.0), 0.0], [0.125, 0.5, 0.3])
    cos_normals, sin_normals = z[:3], z[3:]
    close(cos_normals, [math.sqrt(0.5), -2.0, 0.0], rel=1e-6, abs_=1e-6)
    close(sin_normals, [math.sqrt(0.5), 0.0, 0.0], rel=1e-6, abs_=1e-6)
    assert cos_normals[2] == 0.0 and sin_normals[2] == 0.0


def test_run_streams_give_standard_normals_and_uniforms():
    # 200 runs x 400 ticks x 18 normals: mean within 5 standard errors of 0, variance of 1, 5 % outside 1.96,
    # no correlation between the normal columns; uniforms with mean 1/2 and variance 1/12
    from paraphina.engine.rng import RunStreams

    streams = RunStreams(np.arange(200), 17, 17)
    normals, uniforms = (np.concatenate(parts) for parts in zip(*(
        tuple(a.copy() for a in streams.draw(100)) for _ in range(4))))
    assert normals.shape == (400, 18, 200) and uniforms.shape == (400, 17, 200)
    n = normals.size
    assert abs(normals.mean()) < 5 / math.sqrt(n)
    assert abs(normals.var() - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(np.mean(np.abs(normals) > 1.959964) - 0.05) < 5 * math.sqrt(0.05 * 0.95 / n)
    corr = np.corrcoef(normals.transpose(1, 0, 2).reshape(18, -1))
    assert np.abs(corr - np.eye(18)).max() < 5 / math.sqrt(normals[:, 0].size)
    assert abs(uniforms.mean() - 0.5) < 5 * math.sqrt(1 / 12 / uniforms.size)
    assert abs(uniforms.var() - 1 / 12) < 0.001


def test_run_streams_follow_each_runs_own_generator():
    # run i draws from SFC64(seed i) alone, 35 uniforms a tick in tick order: the first 18 make the normals
    # (radius from the first 9, angle from the next 9: cos normals, then sin normals), the last 17 are the
    # plain uniforms. The reference below is the same transform in double precision.
    from paraphina.engine.rng import RunStreams

    seeds = (3, 40, 41)
    normals, uniforms = (a.copy() for a in RunStreams(np.array(seeds), 17, 17).draw(6))
    for i, seed in enumerate(seeds):
        u = np.random.Generator(np.random.SFC64(seed)).random((6, 35))
        radius, angle = np.sqrt(-2.0 * np.log(1.0 - u[:, :9])), 2.0 * np.pi * u[:, 9:18]
        expected = np.hstack([radius * np.cos(angle), radius * np.sin(angle)])
        np.testing.assert_allclose(normals[:, :, i], expected, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(uniforms[:, :, i], u[:, 18:])


def test_run_streams_do_not_depend_on_the_batch_or_the_block_split():
    # run 2 of a batch seeded 7, 8, 9 draws what a batch of seed 8 alone draws, in blocks of 10 or of 7 + 3
    from paraphina.engine.rng import RunStreams

    batch = [a[..., 1].copy() for a in RunStreams(np.array([7, 8, 9]), 17, 17).draw(10)]
    alone = RunStreams(np.array([8]), 17, 17)
    first = [a[..., 0].copy() for a in alone.draw(7)]
    second = [a[..., 0].copy() for a in alone.draw(3)]
    for whole, *parts in zip(batch, first, second):
        np.testing.assert_array_equal(whole, np.concatenate(parts))


def test_market_path_does_not_depend_on_block_split(plain_cfg):
    # the same 10 ticks of draws, simulated as one block of 10 and as blocks of 7 + 3, give the same market
    from paraphina.engine.market import draw_counts, initial_state, simulate_block
    from paraphina.engine.rng import RunStreams

    p = build_params(plain_cfg["engine"], plain_cfg["market"], 2)
    normals, uniforms = RunStreams(np.array([4, 5]), *draw_counts(p)).draw(10)
    start = initial_state(p, 2)
    whole = simulate_block(start, p, normals, uniforms, 0)
    first = simulate_block(start, p, normals[:7], uniforms[:7], 0)
    second = simulate_block(first.last, p, normals[7:], uniforms[7:], 7)
    for name in ("x", "mid", "spread", "depth", "funding", "age", "stale", "stressed"):
        split = np.concatenate([getattr(first, name), getattr(second, name)[1:]])
        np.testing.assert_array_equal(split, getattr(whole, name), err_msg=name)


# --------------------------------------------------------------------------------------------------
# Fees through the engine (step 9): taker bps on hedge notional, maker minus rebate on MM notional.
# --------------------------------------------------------------------------------------------------

def _record_fills(monkeypatch):
    """Record every fill the tick loop books, through apply_fill (every position) or apply_fills (sparse):
    (dq, price) per call as (venues, runs) arrays, zero where no fill."""
    calls = []
    real, real_sparse = sim_mod.apply_fill, sim_mod.apply_fills

    def recording(q, entry, dq, price):
        calls.append((np.array(dq, copy=True), np.where(dq != 0, price, 0.0)))
        return real(q, entry, dq, price)

    def recording_sparse(q, entry, idx, dq, price):
        dense_dq, dense_price = np.zeros(q.shape), np.zeros(q.shape)
        dense_dq.reshape(-1)[idx], dense_price.reshape(-1)[idx] = dq, price
        calls.append((dense_dq, dense_price))
        return real_sparse(q, entry, idx, dq, price)

    monkeypatch.setattr(sim_mod, "apply_fill", recording)
    monkeypatch.setattr(sim_mod, "apply_fills", recording_sparse)
    return calls


def _record_blocks(monkeypatch):
    blocks = []
    real = sim_mod.simulate_block

    def recording(state, p, normals, uniforms, t0):
        block = real(state, p, normals, uniforms, t0)
        blocks.append((t0, block))
        return block

    monkeypatch.setattr(sim_mod, "simulate_block", recording)
    return blocks


def _params(overrides, runs=1, per_run=None):
    plain = to_plain(compose_config(overrides, environ={}))
    return build_params(plain["engine"], plain["market"], runs, per_run)


def test_hedge_execution_and_taker_fees(monkeypatch):
    # MM off (base size 0), calm market (no outages, no jumps); 30 TAO opened on venue 0 at 250.
    # tick 0: every venue Healthy (tox 0 while local vol and sigma_eff sit at sigma_min), band 5.625:
    #   step = -(30 - 5.625) = -24.375 -> clipped to -20; q after = 10
    # tick 1: step = -(10 - 5.625) = -4.375; q after = 5.625, then inside the band (no more hedging).
    # Each slice sells at mid - (spread / 2 + 20 * size / depth * mid) and pays 5 bps of |size| * price.
    calls = _record_fills(monkeypatch)
    blocks = _record_blocks(monkeypatch)
    p = _params(["market=calm", "ticks=5", "engine.initial_q_tao=30",
                 "engine.venues.base_order_size=[0,0,0,0,0]"])
    rows = []
    seen = []

    def observer(tick, ids, r):
        rows.append({k: np.array(r[k], copy=True) for k in ("q_global_tao", "hedge_volume_tao", "fees_usd",
                                                            "mm_fills", "venue_q_tao")})
        seen.append(len(calls))

    simulate(p, 5, [3], [observer])
    assert rows[0]["hedge_volume_tao"][0, 0] == pytest.approx(20.0, rel=1e-12)
    assert rows[0]["q_global_tao"][0, 0] == pytest.approx(10.0, rel=1e-12)
    assert rows[1]["hedge_volume_tao"][0, 0] == pytest.approx(4.375, rel=1e-12)
    assert rows[1]["q_global_tao"][0, 0] == pytest.approx(5.625, rel=1e-12)
    for r in rows[2:]:
        assert r["hedge_volume_tao"][0, 0] < 1e-9
        assert r["q_global_tao"][0, 0] == pytest.approx(5.625, rel=1e-12)
    assert all(int(r["mm_fills"][0, 0]) == 0 for r in rows)
    # tick 0's fills: one call (the hedge), all sells; price and fee from the tick's market
    assert seen[0] == 1
    dq, price = calls[0]
    assert (dq < 0).all()
    t0, block = blocks[0]
    assert t0 == 0
    mid, spread, depth = block.mid[0], block.spread[0], block.depth[0]
    impact_coeff = p.market.impact_coeff
    close(price, mid - (spread / 2 + impact_coeff * np.abs(dq) / depth * mid), rel=1e-13)
    fee0 = float(np.sum(np.abs(dq) * price * 5.0 / 1e4))
    assert rows[0]["fees_usd"][0, 0] == pytest.approx(fee0, rel=1e-12)
    # cumulative fees over the run = sum over every hedge slice of |size| * price * 5 bps
    total = sum(float(np.sum(np.abs(d) * pr * 5e-4)) for d, pr in calls)
    assert rows[-1]["fees_usd"][0, 0] == pytest.approx(total, rel=1e-12)


def test_mark_to_fair_funding_and_observation_in_the_engine(monkeypatch):
    # Calm market, MM off (base size 0), hedging off (band 1e9): only the 60 TAO opened on venue 0 at 250 with
    # no fee. Then every tick, with m0, f0 venue 0's mid and funding and S the row's fair value (spec 3, 5, 10, 11):
    #   pnl_realised = 0, fees 0; q = 60; delta = 60 S; basis = 60 (m0 - S); unrealised = 60 (S - 250);
    #   pnl_funding falls by 60 f0 m0 dt / 28800 per tick (dt = 1 s); pnl_total = unrealised + funding;
    #   y_mid = sum(depth * mid) / sum(depth) over venues not Disabled on the previous tick with a fresh book.
    blocks = _record_blocks(monkeypatch)
    p = _params(["market=calm", "engine.initial_q_tao=60", "engine.hedge.band_base=1e9",
                 "engine.venues.base_order_size=[0,0,0,0,0]", "market.funding.mean=[0.002,0.001,-0.001,0.0005,0.0]"])
    seen = []

    def observer(tick, ids, r):
        seen.append({k: np.array(v, copy=True) for k, v in r.items() if isinstance(v, np.ndarray)})

    simulate(p, 30, [8], [observer])
    assert len(blocks) == 1 and blocks[0][0] == 0
    block = blocks[0][1]
    funding_before = 0.0
    prev_status = np.zeros((5, 1), np.int64)
    for t, r in enumerate(seen):
        mid, depth, f = block.mid[t], block.depth[t], block.funding[t]
        fair = r["fair_value"][0, 0]
        assert r["pnl_realised"][0, 0] == 0.0 and r["fees_usd"][0, 0] == 0.0
        assert r["venue_q_tao"][:, 0].tolist() == [60.0, 0.0, 0.0, 0.0, 0.0]
        assert r["q_global_tao"][0, 0] == 60.0
        assert r["dollar_delta_usd"][0, 0] == pytest.approx(60 * fair, rel=1e-14)
        assert r["basis_usd"][0, 0] == pytest.approx(60 * (mid[0, 0] - fair), rel=1e-9, abs=1e-9)
        assert r["pnl_unrealised"][0, 0] == pytest.approx(60 * (fair - 250.0), rel=1e-9, abs=1e-9)
        step = -60 * f[0, 0] * mid[0, 0] * 1.0 / 28800
        assert r["pnl_funding"][0, 0] - funding_before == pytest.approx(step, rel=1e-9)
        funding_before = r["pnl_funding"][0, 0]
        assert r["pnl_total"][0, 0] == pytest.approx(r["pnl_unrealised"][0, 0] + r["pnl_funding"][0, 0], rel=1e-12)
        usable = (prev_status[:, 0] != DISABLED) & (block.age[t][:, 0] <= 1) & (depth[:, 0] > 0)
        assert usable.sum() >= 2
        y = float(np.sum(depth[usable, 0] * mid[usable, 0]) / np.sum(depth[usable, 0]))
        assert r["y_mid"][0, 0] == pytest.approx(y, rel=1e-12)
        prev_status = r["venue_status"]
    # the funding mean of venue 0 is positive: a long pays funding
    assert funding_before < 0


def test_mm_fees_maker_minus_rebate(monkeypatch):
    # hedging off (band 1e9); maker fees 2, 1.5, 2, 2, 2 bps, rebates 0.5, 0, 1, 0, 0.25 bps:
    # net 1.5, 1.5, 1, 2, 1.75 bps of each MM fill's notional |size| * quote price.
    calls = _record_fills(monkeypatch)
    p = _params(["ticks=60", "engine.hedge.band_base=1e9",
                 "engine.venues.maker_rebate_bps=[0.5,0,1,0,0.25]"])
    net_bps = col(1.5, 1.5, 1.0, 2.0, 1.75)
    state = {"prev_fees": np.zeros((1, 2)), "n": 0, "fills": 0}

    def observer(tick, ids, r):
        new = calls[state["n"]:]
        state["n"] = len(calls)
        expected = sum((vsum(np.abs(d) * pr * net_bps / 1e4) for d, pr in new), np.zeros((1, 2)))
        # MM prices are on the tick grid
        for d, pr in new:
            filled = d != 0
            assert np.all(np.abs(pr[filled] / 0.01 - np.round(pr[filled] / 0.01)) < 1e-6)
        close(r["fees_usd"] - state["prev_fees"], expected, rel=1e-10, abs_=1e-12)
        assert (r["hedge_volume_tao"] == 0).all()
        state["prev_fees"] = np.array(r["fees_usd"], copy=True)
        state["fills"] += int(r["mm_fills"].sum())

    simulate(p, 60, [1, 2], [observer])
    assert state["fills"] > 10  # the check above covered real fills


# --------------------------------------------------------------------------------------------------
# Kill switch through the engine (step 11).
# --------------------------------------------------------------------------------------------------

def test_kill_switch_fires_on_first_losing_tick_and_freezes_the_run():
    # volatile market, 60 TAO held (hedging off: band 1e9), seeds 11..18; odd runs have a 15 USD loss limit,
    # even runs 1e12 (never reached). A run whose pnl_total reaches -15 is killed on that very tick.
    limits = [1e12, 15.0] * 4
    seeds = np.arange(11, 19)
    ticks = 300
    p = _params(["market=volatile", "engine.initial_q_tao=60", "engine.hedge.band_base=1e9"], runs=8,
                per_run={"engine.risk.daily_loss_limit": limits})
    per_run: dict[int, list] = {i: [] for i in range(8)}

    def observer(tick, ids, r):
        for c, i in enumerate(ids.tolist()):
            per_run[i].append((tick, float(r["pnl_total"][0, c]), bool(r["kill_switch"][0, c]),
                               int(r["risk_regime"][0, c])))

    result = simulate(p, ticks, seeds, [observer])
    killed = []
    for i, limit in enumerate(limits):
        rows_i = per_run[i]
        assert [t for t, *_ in rows_i] == list(range(len(rows_i)))
        losing = [t for t, pnl, _, _ in rows_i if pnl <= -limit]
        m = result.run_metrics(i)
        if losing:
            first = losing[0]
            killed.append(i)
            # the kill fires on the first tick with pnl_total <= -limit, in HardLimit; its row is the last
            assert rows_i[-1][0] == first
            assert rows_i[-1][2] is True and rows_i[-1][3] == HARD_LIMIT
            assert not any(k for _, _, k, _ in rows_i[:-1])
            assert m["kill_switch"] is True
            assert m["time_to_kill"] == first
            assert m["num_ticks"] == first + 1
            assert m["final_pnl"] == rows_i[-1][1]
        else:
            assert len(rows_i) == ticks
            assert m["kill_switch"] is False and m["time_to_kill"] is None
            assert m["num_ticks"] == ticks
            assert not any(k for _, _, k, _ in rows_i)
    # the scenario really exercises kills mid-run while the other runs go on to the end
    assert killed and set(killed) <= {1, 3, 5, 7}
    assert sum(0 < result.run_metrics(i)["time_to_kill"] < ticks - 1 for i in killed) >= 1
    assert all(result.run_metrics(i)["num_ticks"] == ticks for i in (0, 2, 4, 6))


def test_kill_switch_on_tick_zero():
    # MM off; 20 TAO opened at 250 and hedged at tick 0 (14.375 TAO sold) pays the taker fee
    # 14.375 * ~250 * 5 bps = 1.80 USD plus half a spread (~0.05 USD per TAO, 0.7 USD) while the fair value moves
    # by ~5e-5 (0.07 USD on the 5.625 TAO left): pnl_total ~ -2.4 after tick 0, so a 1 USD loss limit kills at
    # t = 0 (num_ticks 1); a run with a 1e12 limit in the same batch runs all 20 ticks.
    p = _params(["engine.initial_q_tao=20", "engine.venues.base_order_size=[0,0,0,0,0]"], runs=2,
                per_run={"engine.risk.daily_loss_limit": [1.0, 1e12]})
    result = simulate(p, 20, [11, 11])
    assert result.run_metrics(0)["time_to_kill"] == 0
    assert result.run_metrics(0)["num_ticks"] == 1
    assert result.run_metrics(0)["final_pnl"] <= -1.0
    assert result.run_metrics(1)["num_ticks"] == 20
    assert result.run_metrics(1)["kill_switch"] is False
