"""The market's order flow and the fills it makes (ENGINE_SPEC sections 2.3 and 3.9, version 2).

Hand-worked cases for the Hawkes intensity (`hawkes_step`), its alpha-tilted base rate (`base_intensity`), the
tick's orders (`poisson`, `draw_orders`), the permanent impact of the signed flow on the fair price
(`market_step`), the reach probability of a quote and its fill from the tick's orders (`reach_probability`,
`quote_fill`); the config's stationarity and range checks; and, by simulation, fill frequencies and the
clustering of the flow. Every record field a case depends on is set explicitly.
"""
from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from engine_records import record

from paraphina.config.loading import branching_ratio, compose_config, to_plain
from paraphina.core.errors import ParaphinaError
from paraphina.engine.market import (BUY, MAX_ORDERS, SELL, base_intensity, draw_orders, hawkes_step,
                                     initial_market, market_state_dtype, market_step, poisson)
from paraphina.engine.params import build_params
from paraphina.engine.rng import seed_states
from paraphina.engine.simulate import RowRequest, Threads, simulate
from paraphina.engine.strategy import quote_fill, reach_probability

N = 5
SERIAL = Threads(threads=1, serial_below=1_000_000)
DEPTH = np.array([2.0e6, 4.0e6, 1.5e6, 1.0e6, 1.0e6])
FLOW = dict(flow_decay=0.5, flow_jump=0.2, flow_cross=0.25, flow_informed=1e5, flow_imbalance=0.0,
            flow_stressed_mult=2.0, flow_order_median_usd=2000.0, flow_order_sigma=0.0, flow_impact_perm=0.01,
            flow_touch_fill_prob=0.3, flow_reach_k_bps=0.5)
# no price noise, no switches, no jumps: the fair price moves only by drift, alpha and impact
QUIET = dict(s0=250.0, mu=0.0, vol_scale=1.0, regime_sigma_calm=0.0, regime_sigma_stressed=0.0,
             regime_p_calm_to_stressed=0.0, regime_p_stressed_to_calm=0.0, jumps_rate=0.0, alpha_sigma=0.0,
             alpha_theta=0.02, basis_sigma=0.0, basis_mean=[0.0] * N, funding_sigma=0.0, spread_noise=0.0,
             outage_p_start=0.0, spread_half_bps=[1.5, 1.0, 2.0, 2.0, 2.5], depth_mean_usd=DEPTH,
             depth_stressed_mult=0.5, spread_stressed_mult=2.0)


@pytest.fixture(scope="module")
def flow_prm(plain_cfg):
    return record(plain_cfg, **QUIET, **FLOW, flow_rate=[0.5, 0.8, 0.4, 0.3, 0.3])


def stream_of(seed):
    return tuple(np.uint64(x) for x in seed_states(np.array([seed]))[0])


def u64(state):
    return tuple(np.uint64(x) for x in state)


def market(n_venues, **fields):
    arr = np.zeros(1, market_state_dtype(n_venues))
    for name, value in fields.items():
        arr[0][name] = value
    return arr[0]


def base(prm, v, side, alpha, stressed):
    """base_intensity in the spec's terms: the alpha itself rather than its tilt exp(kappa alpha)."""
    return base_intensity(prm, v, side, math.exp(prm["flow_informed"] * alpha), stressed)


def hawkes(prm, intensity, base_rate, own, other, dt):
    """hawkes_step with its retained share exp(-decay dt) computed from dt."""
    return hawkes_step(prm, intensity, base_rate, own, other, math.exp(-prm["flow_decay"] * dt))


# --------------------------------------------------------------------------------------------------
# Hawkes intensity and its base rate (section 2.3)
# --------------------------------------------------------------------------------------------------

def test_hawkes_step_by_hand(flow_prm):
    # decay 0.5, jump 0.2, cross 0.25. intensity 2, base 0.5, 3 orders on this side, 2 on the other, dt 1:
    # 0.5 + (2 - 0.5) e^-0.5 + 0.2 (3 + 0.25 * 2) = 0.5 + 0.909795989569 + 0.7 = 2.109795989569
    assert hawkes(flow_prm, 2.0, 0.5, 3.0, 2.0, 1.0) == pytest.approx(2.109795989569, rel=1e-12)
    # no orders, dt 2: 0.5 + 1.5 e^-1 = 1.051819161757; from below the base it rises toward it: 0.5 - 0.5 e^-1
    assert hawkes(flow_prm, 2.0, 0.5, 0.0, 0.0, 2.0) == pytest.approx(1.051819161757, rel=1e-12)
    assert hawkes(flow_prm, 0.0, 0.5, 0.0, 0.0, 2.0) == pytest.approx(0.5 - 0.5 * math.exp(-1.0), rel=1e-12)
    # only the other side traded (4 orders): + 0.2 * 0.25 * 4 = 0.2 on top of the decay
    assert hawkes(flow_prm, 0.5, 0.5, 0.0, 4.0, 1.0) == pytest.approx(0.7, rel=1e-12)
    # over all later ticks one order triggers jump dt / (1 - e^(-decay dt)) expected orders on its side: the
    # branching ratio the config checks (0.4 as dt -> 0, 0.508 at dt = 1)
    for dt in (0.01, 1.0, 5.0):
        excess, total = hawkes(flow_prm, 0.0, 0.0, 1.0, 0.0, dt), 0.0
        for _ in range(20000):
            total += excess * dt
            excess = hawkes(flow_prm, excess, 0.0, 0.0, 0.0, dt)
        assert total == pytest.approx(0.2 * dt / -math.expm1(-0.5 * dt), rel=1e-9)
    # at its base without orders the intensity stays there
    assert hawkes(flow_prm, 0.8, 0.8, 0.0, 0.0, 1.0) == pytest.approx(0.8, rel=1e-15)


def test_hawkes_excess_decays_geometrically(flow_prm):
    # without orders the excess over the base shrinks by e^{-decay dt} per tick: after 10 ticks of 1 s, e^-5
    lam = 3.0
    for _ in range(10):
        lam = hawkes(flow_prm, lam, 1.0, 0.0, 0.0, 1.0)
    assert lam - 1.0 == pytest.approx(2.0 * math.exp(-5.0), rel=1e-10)


def test_base_intensity_alpha_tilt_by_hand(plain_cfg, flow_prm):
    # venue 1 (rate 0.8), kappa 1e5, alpha 2e-6: kappa alpha = 0.2; buy 0.8 e^0.2 = 0.977122206, sell 0.8 e^-0.2
    # = 0.654984603; alpha 0: both 0.8; a negative alpha tilts the other way
    assert base(flow_prm, 1, BUY, 2e-6, False) == pytest.approx(0.8 * math.exp(0.2), rel=1e-13)
    assert base(flow_prm, 1, SELL, 2e-6, False) == pytest.approx(0.8 * math.exp(-0.2), rel=1e-13)
    assert base(flow_prm, 1, BUY, 0.0, False) == base(flow_prm, 1, SELL, 0.0, False) == 0.8
    assert base(flow_prm, 1, BUY, -2e-6, False) == pytest.approx(0.8 * math.exp(-0.2), rel=1e-13)
    # the tilt moves flow from one side to the other: buy x sell = rate^2 whatever the alpha
    assert base(flow_prm, 1, BUY, 3e-6, False) * base(flow_prm, 1, SELL, 3e-6, False) == pytest.approx(0.64, rel=1e-13)
    # stressed: x stressed_mult 2 -> 1.954244413 and 1.309969206
    assert base(flow_prm, 1, BUY, 2e-6, True) == pytest.approx(1.6 * math.exp(0.2), rel=1e-13)
    assert base(flow_prm, 1, SELL, 2e-6, True) == pytest.approx(1.6 * math.exp(-0.2), rel=1e-13)
    # imbalance 0.25: buy x 1.25, sell x 0.75: venue 0 (rate 0.5), alpha 0 -> 0.625 and 0.375
    prm = record(plain_cfg, **QUIET, **{**FLOW, "flow_imbalance": 0.25}, flow_rate=[0.5, 0.8, 0.4, 0.3, 0.3])
    assert base(prm, 0, BUY, 0.0, False) == pytest.approx(0.625, rel=1e-14)
    assert base(prm, 0, SELL, 0.0, False) == pytest.approx(0.375, rel=1e-14)
    # all together: venue 2 (0.4), alpha -1e-6 (tilt e^-0.1), stressed: buy 0.4 e^-0.1 1.25 2, sell 0.4 e^0.1 0.75 2
    assert base(prm, 2, BUY, -1e-6, True) == pytest.approx(0.4 * math.exp(-0.1) * 1.25 * 2, rel=1e-13)
    assert base(prm, 2, SELL, -1e-6, True) == pytest.approx(0.4 * math.exp(0.1) * 0.75 * 2, rel=1e-13)


def test_market_step_updates_the_intensity_from_the_ticks_orders(flow_prm):
    # market_step draws the tick's orders from the current intensity (counts into cur.orders) and writes the
    # next intensity: base(alpha of this tick, next regime) + (lambda - base) e^{-decay dt} + jump (own + cross
    # other), per venue and side
    cur, nxt = market(N), market(N)
    initial_market(flow_prm, cur)
    cur["intensity"] = np.array([[3.0, 1.0], [0.0, 2.0], [5.0, 5.0], [0.3, 0.3], [1.0, 0.0]])
    cur["alpha"] = 1e-6
    market_step(flow_prm, cur, nxt, stream_of(9), 0, 1.0)
    orders = cur["orders"]
    assert orders.sum() > 5 and orders[1, BUY] == 0 and orders[4, SELL] == 0  # intensity 0: no orders
    for v in range(N):
        for side in (BUY, SELL):
            b = base(flow_prm, v, side, 1e-6, False)
            expected = (b + (cur["intensity"][v, side] - b) * math.exp(-0.5)
                        + 0.2 * (orders[v, side] + 0.25 * orders[v, 1 - side]))
            assert nxt["intensity"][v, side] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# Orders of a tick: Poisson counts, sizes, the signed flow
# --------------------------------------------------------------------------------------------------

@numba.njit(cache=True)
def _poissons(s, mean, n):
    out = np.empty(n)
    for i in range(n):
        k, s = poisson(s, mean)
        out[i] = k
    return out


def test_poisson_counts():
    # mean 0: always 0; mean 3.2 over 200,000 draws: mean and variance 3.2, P(0) = e^-3.2 (4 standard errors)
    assert _poissons(stream_of(1), 0.0, 1000).max() == 0.0
    n, m = 200_000, 3.2
    k = _poissons(stream_of(2), m, n)
    assert np.all(k == np.round(k)) and k.min() >= 0
    assert abs(k.mean() - m) < 4 * math.sqrt(m / n)
    assert abs(k.var() - m) < 4 * math.sqrt((2 * m * m + m) / n)
    p0 = math.exp(-m)
    assert abs(np.mean(k == 0) - p0) < 4 * math.sqrt(p0 * (1 - p0) / n)
    # a small mean (0.05, one second of a quiet venue): P(1) = 0.05 e^-0.05
    k = _poissons(stream_of(3), 0.05, n)
    p1 = 0.05 * math.exp(-0.05)
    assert abs(np.mean(k == 1) - p1) < 4 * math.sqrt(p1 * (1 - p1) / n)


def test_poisson_with_a_large_mean():
    # a busy venue-side (or a stressed, excited one): mean 800 orders in a tick; the counts average 800
    k = _poissons(stream_of(4), 800.0, 2000)
    assert abs(k.mean() - 800.0) < 4 * math.sqrt(800.0 / 2000)


def test_draw_orders_counts_sizes_and_signed_flow(plain_cfg, flow_prm):
    # order_sigma 0: every order is exactly the median 2000 USD. The signed flow returned is
    # sum_v (buys - sells) x 2000 / depth_v, and each order's notional is kept (first MAX_ORDERS)
    cur = market(N, depth=DEPTH, mid=[250.0] * N, intensity=[[4.0, 1.0], [1.0, 6.0], [0.0, 0.0], [2.0, 2.0],
                                                             [0.5, 3.0]])
    flow, _ = draw_orders(flow_prm, cur, stream_of(4), 1.0)
    n = cur["orders"]
    assert n[2].tolist() == [0.0, 0.0] and n.sum() > 5
    assert flow == pytest.approx(float(np.sum((n[:, BUY] - n[:, SELL]) * 2000.0 / DEPTH)), rel=1e-12, abs=1e-15)
    for v in range(N):
        for side in (BUY, SELL):
            assert cur["order_usd"][v, side, :int(n[v, side])].tolist() == [2000.0] * int(n[v, side])
    # lognormal sizes (order_sigma 1): the flow is the recorded notionals', signed and over depth
    prm = record(plain_cfg, **QUIET, **{**FLOW, "flow_order_sigma": 1.0}, flow_rate=[0.5] * N)
    flow, _ = draw_orders(prm, cur, stream_of(5), 2.0)
    n = cur["orders"].astype(int)
    expected = sum((cur["order_usd"][v, BUY, :n[v, BUY]].sum() - cur["order_usd"][v, SELL, :n[v, SELL]].sum())
                   / DEPTH[v] for v in range(N))
    assert flow == pytest.approx(expected, rel=1e-12)
    sizes = np.concatenate([cur["order_usd"][v, s, :n[v, s]] for v in range(N) for s in (BUY, SELL)])
    assert len(sizes) > 5 and np.all(sizes > 0) and len(set(sizes.tolist())) == len(sizes)


def test_order_sizes_are_lognormal_around_the_median(plain_cfg):
    # 20,000 orders of median 2000 USD, log std 1: the log sizes have mean ln 2000 and std 1
    prm = record(plain_cfg, **QUIET, **{**FLOW, "flow_order_sigma": 1.0}, flow_rate=[0.5] * N)
    cur = market(N, depth=DEPTH, intensity=[[10.0, 10.0]] * N)
    s = stream_of(6)
    logs = []
    while len(logs) < 20_000:
        _, s = draw_orders(prm, cur, s, 1.0)
        s = u64(s)
        n = cur["orders"].astype(int)
        for v in range(N):
            for side in (BUY, SELL):
                logs.extend(np.log(cur["order_usd"][v, side, :min(n[v, side], MAX_ORDERS)]).tolist())
    logs = np.array(logs)
    assert abs(logs.mean() - math.log(2000.0)) < 4 / math.sqrt(len(logs))
    assert abs(logs.std() - 1.0) < 4 * math.sqrt(0.5 / len(logs))


# --------------------------------------------------------------------------------------------------
# Permanent impact of the signed flow on the fair price (section 2.1, I_t)
# --------------------------------------------------------------------------------------------------

def test_impact_of_the_ticks_flow_on_the_fair_price(flow_prm):
    # no volatility, drift, alpha or jumps: x' - x = impact_perm x sum_v (buy - sell notional) / depth_v,
    # with every order 2000 USD: 0.01 x sum_v (n_buy - n_sell) 2000 / depth_v, from the counts the step drew
    for seed in range(6):
        cur, nxt = market(N), market(N)
        initial_market(flow_prm, cur)
        cur["intensity"] = np.array([[3.0, 0.5], [2.0, 2.0], [0.0, 4.0], [1.0, 1.0], [2.5, 0.0]])
        market_step(flow_prm, cur, nxt, stream_of(100 + seed), 0, 1.0)
        n = cur["orders"]
        signed = float(np.sum((n[:, BUY] - n[:, SELL]) * 2000.0 / DEPTH))
        assert nxt["x"] - cur["x"] == pytest.approx(0.01 * signed, rel=1e-9, abs=1e-15)
        # the venues' mids move with it (basis 0, no noise)
        np.testing.assert_allclose(nxt["mid"], 250.0 * math.exp(0.01 * signed), rtol=1e-13)
    # only buys: 3 orders on venue 3 (depth 1e6) and nothing else -> the price rises by 0.01 x 6000 / 1e6 = 6e-5
    # in log (counts drawn until the tick has exactly 3)
    for seed in range(200):
        cur, nxt = market(N), market(N)
        initial_market(flow_prm, cur)
        cur["intensity"] = 0.0
        cur["intensity"][3, BUY] = 3.0
        market_step(flow_prm, cur, nxt, stream_of(seed), 0, 1.0)
        if cur["orders"][3, BUY] == 3:
            break
    assert cur["orders"].sum() == 3 and cur["orders"][3, BUY] == 3
    assert nxt["x"] - math.log(250.0) == pytest.approx(6e-5, rel=1e-9)


def test_impact_adds_to_drift_and_jump(plain_cfg):
    # mu 1e-4, a certain jump of 0.01 and the flow: x' - x = mu dt + jump + impact x flow (sigma 0)
    prm = record(plain_cfg, **{**QUIET, "mu": 1e-4, "jumps_rate": 1.0, "jumps_mean": 0.01, "jumps_std": 0.0},
                 **FLOW, flow_rate=[0.5] * N)
    cur, nxt = market(N), market(N)
    initial_market(prm, cur)
    cur["intensity"] = 2.0
    _, jump = market_step(prm, cur, nxt, stream_of(8), 0, 1.0)
    n = cur["orders"]
    signed = float(np.sum((n[:, BUY] - n[:, SELL]) * 2000.0 / DEPTH))
    assert jump == 0.01 and n.sum() > 0
    assert nxt["x"] - cur["x"] == pytest.approx(1e-4 + 0.01 + 0.01 * signed, rel=1e-9)


# --------------------------------------------------------------------------------------------------
# Config: a stationary flow and meaningful rates, sizes and probabilities (one-line errors)
# --------------------------------------------------------------------------------------------------

def compose(*overrides):
    return compose_config(["ticks=5", *overrides], environ={})


def one_line_error(*overrides) -> str:
    with pytest.raises(ParaphinaError) as info:
        compose(*overrides)
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_branching_ratio_of_the_composed_flow():
    # jump (1 + cross) dt / (1 - e^(-decay dt)): 0.3 x 1.5 x 1 / (1 - e^-0.9) = 0.759171..., and it tends to the
    # continuous-time 0.3 x 1.5 / 0.9 = 0.5 as the tick shrinks
    cfg = compose("market.flow.jump=0.3", "market.flow.cross=0.5", "market.flow.decay=0.9")
    assert branching_ratio(cfg.market.flow, 1.0) == pytest.approx(0.45 / (1 - math.exp(-0.9)), rel=1e-12)
    assert branching_ratio(cfg.market.flow, 1e-6) == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("jump,cross,decay", [(0.4, 0.25, 0.5), (0.6, 0.0, 0.5), (0.3, 1.0, 0.5), (0.7, 0.25, 1.0)])
def test_nonstationary_flow_is_rejected_naming_the_branching_ratio(jump, cross, decay):
    # jump (1 + cross) / (1 - e^-decay) >= 1 at 1 s ticks: 0.5 / 0.3935 = 1.27, 1.53, 1.53, 0.875 / 0.632 = 1.38
    message = one_line_error(f"market.flow.jump={jump}", f"market.flow.cross={cross}", f"market.flow.decay={decay}")
    assert "branching ratio" in message and "market.flow" in message


def test_stationary_flow_just_below_one_is_accepted():
    # 0.3 x 1.25 / (1 - e^-0.5) = 0.953
    cfg = compose("market.flow.jump=0.3", "market.flow.cross=0.25", "market.flow.decay=0.5")
    assert branching_ratio(cfg.market.flow, 1.0) == pytest.approx(0.375 / -math.expm1(-0.5), rel=1e-12)


@pytest.mark.parametrize("overrides,names", [
    (("market.flow.order_median_usd=0",), "order_median_usd"),
    (("market.flow.order_median_usd=-2000",), "order_median_usd"),
    (("market.flow.touch_fill_prob=1.5",), "touch_fill_prob"),
    (("market.flow.touch_fill_prob=-0.1",), "touch_fill_prob"),
    (("market.flow.decay=0",), "decay"),
    (("market.flow.jump=-0.1",), "jump"),
    (("market.flow.impact_perm=-0.01",), "impact_perm"),
    (("market.flow.order_sigma=-1",), "order_sigma"),
    (("ticks=0",), "ticks"),
    (("ticks=-5",), "ticks"),
])
def test_bad_flow_values_are_one_line_errors(overrides, names):
    assert names in one_line_error(*overrides)


def test_negative_flow_rate_is_a_one_line_error(plain_cfg):
    n = len(plain_cfg["engine"]["venues"]["names"])
    rates = ",".join(["-0.5"] + ["0.5"] * (n - 1))
    assert "market.flow.rate" in one_line_error(f"market.flow.rate=[{rates}]")
    # zero rates are allowed (no orders on that venue)
    compose(f"market.flow.rate=[{','.join(['0.0'] * n)}]")
    # and one rate per venue
    assert "market.flow.rate" in one_line_error("market.flow.rate=[0.5,0.5]")


def test_touch_fill_prob_bounds_are_inclusive():
    compose("market.flow.touch_fill_prob=0")
    compose("market.flow.touch_fill_prob=1")


# --------------------------------------------------------------------------------------------------
# Fills of resting quotes from the tick's orders (section 3.9)
# --------------------------------------------------------------------------------------------------

def test_reach_probability_by_hand(flow_prm):
    # touch_fill_prob 0.3, reach_k_bps 0.5: at the touch 0.3; 2 bps beyond it 0.3 e^-1 = 0.110363832;
    # 1 bps inside it 0.3 e^0.5 = 0.494616381 (higher); 10 bps inside it 0.3 e^5 = 44.5 -> capped at 1
    assert reach_probability(flow_prm, 0.0) == 0.3
    assert reach_probability(flow_prm, 2.0) == pytest.approx(0.3 * math.exp(-1.0), rel=1e-14)
    assert reach_probability(flow_prm, -1.0) == pytest.approx(0.3 * math.exp(0.5), rel=1e-14)
    assert reach_probability(flow_prm, -10.0) == 1.0
    # monotone: further out is less likely
    d = np.linspace(-5, 20, 101)
    p = np.array([reach_probability(flow_prm, x) for x in d])
    assert np.all(np.diff(p) <= 0) and p[-1] == pytest.approx(0.3 * math.exp(-10.0), rel=1e-12)


def _book(n_orders=1, order_usd=1e6, mid=250.0, half_spread=2e-4, side=BUY, v=0):
    """One venue's book (mid 250, half-spread 2 bps: touch 250.05 / 249.95) with `n_orders` orders on `side`."""
    mkt = market(N, mid=[mid] * N, half_spread=[half_spread] * N, depth=DEPTH)
    mkt["orders"][v, side] = n_orders
    mkt["order_usd"][v, side, :min(n_orders, MAX_ORDERS)] = order_usd
    return mkt


def test_crossed_quote_fills_in_full(flow_prm):
    # an ask at 250.10 that the end-of-tick mid (250.20) has crossed fills all 3 TAO, even without any order;
    # a bid at 249.90 crossed by a mid of 249.90 (at it) too; a mid short of the quote does not cross it
    mkt = _book(n_orders=0)
    assert quote_fill(flow_prm, mkt, 250.20, 0, BUY, 250.10, 3.0, stream_of(1))[0] == 3.0
    assert quote_fill(flow_prm, mkt, 249.90, 0, SELL, 249.90, 3.0, stream_of(1))[0] == 3.0
    assert quote_fill(flow_prm, mkt, 250.09, 0, BUY, 250.10, 3.0, stream_of(1))[0] == 0.0
    assert quote_fill(flow_prm, mkt, 249.91, 0, SELL, 249.90, 3.0, stream_of(1))[0] == 0.0


def test_fill_size_is_the_orders_when_smaller(plain_cfg):
    # touch_fill_prob 1 and a quote at the touch: every order reaches it. One 100 USD order at mid 250 fills
    # 0.4 TAO of a 1 TAO ask; orders of 100 and 150 USD: 0.4 + 0.6 = 1.0 (all); three of 150: 0.6 + 0.4 (capped)
    prm = record(plain_cfg, **QUIET, **{**FLOW, "flow_touch_fill_prob": 1.0})
    touch_ask, touch_bid = 250.0 * (1 + 2e-4), 250.0 * (1 - 2e-4)
    assert quote_fill(prm, _book(1, 100.0), 250.0, 0, BUY, touch_ask, 1.0, stream_of(1))[0] == pytest.approx(0.4)
    mkt = _book(2, 100.0)
    mkt["order_usd"][0, BUY, 1] = 150.0
    assert quote_fill(prm, mkt, 250.0, 0, BUY, touch_ask, 1.0, stream_of(1))[0] == pytest.approx(1.0)
    assert quote_fill(prm, _book(3, 150.0), 250.0, 0, BUY, touch_ask, 1.0, stream_of(1))[0] == pytest.approx(1.0)
    # a bid takes the sells: the same 100 USD order fills 0.4 TAO of it; the buys do not touch a bid
    assert quote_fill(prm, _book(1, 100.0, side=SELL), 250.0, 0, SELL, touch_bid, 1.0,
                      stream_of(1))[0] == pytest.approx(0.4)
    assert quote_fill(prm, _book(5, 100.0, side=BUY), 250.0, 0, SELL, touch_bid, 1.0, stream_of(1))[0] == 0.0
    # orders are per venue: orders on venue 0 do not fill venue 1's quote
    assert quote_fill(prm, _book(5, 1e6), 250.0, 1, BUY, touch_ask, 1.0, stream_of(1))[0] == 0.0
    # no orders, no fill (unless crossed)
    assert quote_fill(prm, _book(0), 250.0, 0, BUY, touch_ask, 1.0, stream_of(1))[0] == 0.0


@numba.njit(cache=True)
def _fill_count(prm, mkt, mid_next, v, side, price, size, s, n):
    """(fills, total filled) of n independent tries of one quote against the same book."""
    fills, total = 0, 0.0
    for _ in range(n):
        filled, s = quote_fill(prm, mkt, mid_next, v, side, price, size, s)
        fills += filled > 0.0
        total += filled
    return fills, total


@pytest.mark.parametrize("distance_bps,side,n_orders", [(0.0, BUY, 1), (1.0, BUY, 1), (3.0, SELL, 1),
                                                        (-0.5, SELL, 1), (2.0, BUY, 3), (0.5, SELL, 2)])
def test_fill_frequency_matches_the_reach_probability(flow_prm, distance_bps, side, n_orders):
    # a quote d bps beyond the touch with n (large) orders a tick on its side fills with probability
    # 1 - (1 - p)^n, p = reach_probability(d); 100,000 ticks: the frequency within 4 standard errors; a fill is
    # the full size (the orders are larger than the quote)
    mid, h = 250.0, 2e-4
    if side == BUY:   # an ask above the touch
        price = mid * (1 + h) + distance_bps * 1e-4 * mid
        mid_next = mid
    else:             # a bid below it
        price = mid * (1 - h) - distance_bps * 1e-4 * mid
        mid_next = mid
    p1 = reach_probability(flow_prm, distance_bps)
    p = 1 - (1 - p1) ** n_orders
    n = 100_000
    fills, total = _fill_count(flow_prm, _book(n_orders, 1e6, side=side), mid_next, 0, side, price, 2.0,
                               stream_of(int(100 * distance_bps) + 100 + 7 * n_orders + side), n)
    assert abs(fills / n - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert total == pytest.approx(2.0 * fills, rel=1e-12)


# --------------------------------------------------------------------------------------------------
# The flow over a session: clustering (Hawkes) against Poisson
# --------------------------------------------------------------------------------------------------

def _order_counts(overrides, ticks, seed):
    plain = to_plain(compose(*overrides))
    p = build_params(plain["engine"], plain["market"], 1)
    res = simulate(p, ticks, [seed], SERIAL, record=RowRequest(runs=(0,), every=1))
    return res.rows.of(0)["market_orders"].astype(float)


# constant base rates: calm throughout, no informed tilt, no imbalance
CONSTANT_BASE = ("market.regime.p_calm_to_stressed=0", "market.flow.informed=0", "market.flow.imbalance=0",
                 "market.flow.rate=[0.5,0.8,0.4,0.3,0.3]", "market.flow.decay=0.5")


def test_order_counts_are_poisson_without_excitation():
    # jump 0: each tick's count is Poisson(sum of the base rates x 2 sides = 4.6): mean 4.6 and variance / mean
    # = 1 within 4 standard errors (sqrt(2 / n) for the dispersion index)
    n = 20_000
    counts = _order_counts((*CONSTANT_BASE, "market.flow.jump=0", "market.flow.cross=0"), n, 3)
    assert len(counts) == n
    assert abs(counts.mean() - 4.6) < 4 * math.sqrt(4.6 / n)
    assert abs(counts.var() / counts.mean() - 1.0) < 4 * math.sqrt(2 / n)


def test_order_counts_cluster_with_a_positive_branching_ratio():
    # jump 0.2, cross 0.25 (branching ratio 0.5): more orders on average than the base rate and a variance well
    # above the mean (over-dispersed), and the counts of successive ticks are positively correlated
    n = 20_000
    counts = _order_counts((*CONSTANT_BASE, "market.flow.jump=0.2", "market.flow.cross=0.25"), n, 3)
    assert counts.mean() > 4.6 * 1.5
    assert counts.var() / counts.mean() > 1.0 + 10 * math.sqrt(2 / n)
    lag1 = np.corrcoef(counts[:-1], counts[1:])[0, 1]
    assert lag1 > 0.2


def test_every_accepted_flow_is_stationary_in_the_discretised_engine():
    # jump 0.36, cross 0.25, decay 0.5 (continuous-time ratio 0.9) explodes in the tick recursion
    # (0.45 / (1 - e^-0.5) = 1.14), so the config refuses it; jump 0.283 (ratio 0.9 in the recursion) is
    # accepted and stays bounded: the mean count of the last 1000 of 3000 ticks within 10x the stationary
    # mean 4.6 / (1 - 0.9) = 46
    with pytest.raises(ParaphinaError, match="branching ratio"):
        compose(*CONSTANT_BASE, "market.flow.jump=0.36", "market.flow.cross=0.25")
    counts = _order_counts((*CONSTANT_BASE, "market.flow.jump=0.283", "market.flow.cross=0.25"), 3000, 1)
    assert counts[-1000:].mean() < 460


SCENARIOS = ["calm", "default", "volatile", "jumpy", "venue_outage", "funding_flip", "liquidity_crisis",
             "toxic_flow"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_shipped_scenarios_flow_near_its_stationary_rate(scenario):
    # each scenario's mean orders per tick over 2000 ticks stay within 4x the continuous-time stationary rate
    # 2 sum(rate) / (1 - branching ratio) (the alpha tilt, stress and the tick discretisation raise it somewhat)
    cfg = compose(f"market={scenario}")
    flow = cfg.market.flow
    stationary = 2 * sum(flow.rate) / (1 - branching_ratio(flow, cfg.engine.tick_ms / 1000.0))
    counts = _order_counts((f"market={scenario}",), 2000, 2)
    assert counts.mean() < 4 * stationary
