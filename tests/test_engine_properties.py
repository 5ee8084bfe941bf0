"""Properties of the engine (ENGINE_SPEC sections 1-5): determinism, batch = single runs, self-consistent
telemetry rows, online metrics = metrics from the telemetry file, independence of threads and batch order.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from paraphina.config.loading import compose_config, to_plain
from paraphina.core.names import METRIC_KEYS, MICROSTRUCTURE_KEYS
from paraphina.engine.params import build_params
from paraphina.engine.simulate import RowRequest, Threads, series_ticks, simulate
from paraphina.formats.telemetry import load_telemetry, run_metrics
from paraphina.runner.batch import config_hash, run_batch

REQUIRED_KEYS = ("t", "pnl_realised", "pnl_unrealised", "pnl_total", "risk_regime", "kill_switch", "q_global_tao",
                 "dollar_delta_usd", "basis_usd")
ADDED_KEYS = ("fair_value", "sigma_eff", "vol_ratio", "spread_mult", "size_mult", "band_mult", "delta_limit_usd",
              "basis_gross_usd", "pnl_funding", "fees_usd", "mm_fills", "mm_volume_tao", "hedge_volume_tao",
              "venue_status", "venue_q_tao", "market_orders", "alpha")
VENUES = ["extended", "hyperliquid", "aster", "lighter", "paradex"]

# Volatile market, seeds 11..18, 60 TAO opened at the start. Runs 2, 3, 4, 5 and 7 have a 15 USD loss limit
# (most of them are killed mid-run), the others a limit they cannot reach; runs 1, 4 and 7 hedge (band 3, 8,
# 5.625), the others hold the position (band 1e9); run 6 has a 6000 USD delta limit, so HardLimit without a
# kill and Warning on delta show up too (60 TAO x 250 = 15000 USD).
KILL_SEEDS = list(range(11, 19))
KILL_BASE = ("market=volatile", "engine.initial_q_tao=60")
KILL_KNOBS = {
    "engine.risk.daily_loss_limit": [1e12, 1e12, 15.0, 15.0, 15.0, 15.0, 1e12, 15.0],
    "engine.hedge.band_base": [1e9, 3.0, 1e9, 1e9, 8.0, 1e9, 1e9, 5.625],
    "engine.risk.delta_hard_limit_usd_base": [1e5, 1e5, 1e5, 1e5, 1e5, 1e5, 6000.0, 1e5],
}
KILL_TICKS = 300


def compose(*overrides: str):
    """The config of `overrides` (their config groups are composed once per test process, so hypothesis'
    examples cost no Hydra composition each)."""
    return compose_config(list(overrides), environ={})


def run_to(directory: Path, overrides: tuple[str, ...], seeds=None, per_run=None, name="run"):
    """run_batch with JSONL telemetry into `directory`; returns (result, {seed: path})."""
    template = str(directory / f"{name}-{{seed}}.jsonl")
    # the composed config (once per overrides) with the telemetry settings merged in: equal to composing
    # them too, which would compose again for every directory
    cfg = OmegaConf.merge(compose(*overrides), {"telemetry": {"mode": "jsonl", "path": template}})
    result, paths = run_batch(cfg, seeds=seeds, per_run=per_run)
    seeds_used = [int(s) for s in result.seeds]
    assert len(paths) == len(seeds_used)
    return result, dict(zip(seeds_used, paths))


def _no_constant(name):
    raise ValueError(f"{name} in telemetry")


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line, parse_constant=_no_constant) for line in path.read_text().splitlines()]


def check_rows(rows: list[dict], risk: dict, vol: dict, ticks: int) -> None:
    """Every row is self-consistent (spec sections 3.4, 3.5, 3.11 and 4)."""
    assert [r["t"] for r in rows] == list(range(len(rows)))
    kills = [r["kill_switch"] for r in rows]
    assert not any(kills[:-1])
    if kills[-1]:
        assert len(rows) <= ticks
    else:
        assert len(rows) == ticks
    loss, base = risk["daily_loss_limit"], risk["delta_hard_limit_usd_base"]
    for r in rows:
        for key in REQUIRED_KEYS + ADDED_KEYS:
            assert key in r, key
        assert type(r["t"]) is int and type(r["kill_switch"]) is bool and type(r["mm_fills"]) is int
        assert type(r["market_orders"]) is int and r["market_orders"] >= 0
        for key, value in r.items():
            if key in ("risk_regime", "kill_switch", "venue_status", "venue_q_tao"):
                continue
            assert isinstance(value, (int, float)) and math.isfinite(value), (key, value)
        assert list(r["venue_status"]) == VENUES and list(r["venue_q_tao"]) == VENUES
        assert set(r["venue_status"].values()) <= {"Healthy", "Warning", "Disabled"}
        assert all(math.isfinite(q) for q in r["venue_q_tao"].values())
        # regime and kill from the row's own numbers (inclusive comparisons, spec 3.11)
        pnl, dd, basis, limit = r["pnl_total"], r["dollar_delta_usd"], r["basis_usd"], r["delta_limit_usd"]
        loss_hit = pnl <= -loss
        hard = abs(dd) >= limit or abs(basis) >= risk["basis_hard_limit_usd"] or loss_hit
        warn = (abs(dd) >= risk["delta_warn_frac"] * limit
                or abs(basis) >= risk["basis_warn_frac"] * risk["basis_hard_limit_usd"]
                or pnl <= -risk["pnl_warn_frac"] * loss)
        assert r["risk_regime"] == ("HardLimit" if hard else "Warning" if warn else "Normal"), r
        assert r["kill_switch"] is (hard and loss_hit)
        # limit and control scalars from the row's vol_ratio (spec 3.4, 3.11)
        vr = r["vol_ratio"]
        assert vol["vol_ratio_min"] <= vr <= vol["vol_ratio_max"]
        assert r["sigma_eff"] >= vol["sigma_min"]
        assert limit == pytest.approx(base / max(vr, risk["delta_limit_vol_ratio_floor"]), rel=1e-14)
        bump = max(vr - 1.0, 0.0)
        assert r["spread_mult"] == pytest.approx(1 + vol["c_spread"] * bump, rel=1e-14)
        assert r["size_mult"] == pytest.approx(1 / (1 + vol["c_size"] * bump), rel=1e-14)
        assert r["band_mult"] == pytest.approx(1 / (1 + vol["c_band"] * bump), rel=1e-14)
        # mark to fair (spec 3.5 / 3.11)
        q = sum(r["venue_q_tao"].values())
        assert r["q_global_tao"] == pytest.approx(q, rel=1e-12, abs=1e-12)
        assert dd == pytest.approx(r["q_global_tao"] * r["fair_value"], rel=1e-14, abs=1e-12)
        assert r["basis_gross_usd"] >= abs(basis) - 1e-9
        assert pnl == pytest.approx(r["pnl_realised"] + r["pnl_unrealised"] + r["pnl_funding"], rel=1e-12, abs=1e-9)
        assert r["fees_usd"] >= 0 and r["mm_fills"] >= 0 and r["mm_volume_tao"] >= 0 and r["hedge_volume_tao"] >= 0
    fees = [r["fees_usd"] for r in rows]
    assert all(b >= a for a, b in zip(fees, fees[1:]))


def assert_metrics_match_file(online: dict, path: Path) -> None:
    # the section-5 metrics a telemetry file carries; the microstructure metrics (v2) are the engine's alone
    offline = run_metrics(load_telemetry(path))
    assert set(offline) == set(METRIC_KEYS) and set(online) == set(METRIC_KEYS) | set(MICROSTRUCTURE_KEYS)
    for key in MICROSTRUCTURE_KEYS:
        assert math.isfinite(online[key]), key
    for key in ("num_ticks", "kill_switch", "time_to_kill"):
        assert online[key] == offline[key], key
    for key, value in offline.items():
        if key not in ("num_ticks", "kill_switch", "time_to_kill"):
            assert online[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def _risk_for_run(cfg, per_run: dict, i: int) -> dict:
    risk = dict(cfg.engine.risk)
    for dotted, values in per_run.items():
        if dotted.startswith("engine.risk."):
            risk[dotted.rsplit(".", 1)[1]] = float(values[i])
    return risk


# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def kill_batch(tmp_path_factory):
    """The volatile batch with per-run knobs, some runs killed: (result, {seed: path})."""
    directory = tmp_path_factory.mktemp("kill_batch")
    result, files = run_to(directory, (*KILL_BASE, f"ticks={KILL_TICKS}"), seeds=KILL_SEEDS, per_run=KILL_KNOBS)
    return result, files


@pytest.mark.parametrize("ticks, every, last_steps", [
    (2000, 80, [1840, 1920, 1999]),   # the last tick after the last multiple
    (2001, 80, [1840, 1920, 2000]),   # the last tick is a multiple: kept once
    (5, 10, [0, 4]),
])
def test_series_ticks_end_on_the_last_tick(ticks, every, last_steps):
    assert series_ticks(ticks, every)[-3:].tolist() == last_steps[-3:]
    assert len(series_ticks(10, 0)) == 0


def test_series_end_on_each_runs_final_values(kill_batch):
    result, _ = kill_batch
    killed = result.metrics["kill_switch"].astype(bool)
    assert killed.any() and not killed.all()
    np.testing.assert_array_equal(result.series["pnl_total"][-1], result.metrics["final_pnl"])


def test_a_batch_in_chunks_equals_the_batch_in_one_call(kill_batch, tmp_path):
    whole, files = kill_batch
    chunked, chunk_files = run_to(tmp_path, (*KILL_BASE, f"ticks={KILL_TICKS}", "execution.chunk_runs=3"),
                                  seeds=KILL_SEEDS, per_run=KILL_KNOBS)
    for key in whole.metrics:
        np.testing.assert_array_equal(chunked.metrics[key], whole.metrics[key])
    for key in whole.series:
        np.testing.assert_array_equal(chunked.series[key], whole.series[key])
    assert chunked.rows.runs == tuple(range(len(KILL_SEEDS)))
    assert all(chunk_files[seed].read_bytes() == files[seed].read_bytes() for seed in KILL_SEEDS)


def test_same_config_and_seed_give_identical_files(tmp_path):
    over = ("market=volatile", "ticks=150", "runs=3", "seed=5")
    r1, f1 = run_to(tmp_path / "a", over)
    r2, f2 = run_to(tmp_path / "b", over)
    assert list(f1) == [5, 6, 7]
    for seed in f1:
        assert f1[seed].read_bytes() == f2[seed].read_bytes()
    for i in range(3):
        assert r1.run_metrics(i) == r2.run_metrics(i)
    # and different seeds give different paths
    assert f1[5].read_bytes() != f1[6].read_bytes()


def test_batch_equals_single_runs_with_kills_and_per_run_knobs(kill_batch, tmp_path):
    result, files = kill_batch
    killed = [bool(result.metrics["kill_switch"][i]) for i in range(len(KILL_SEEDS))]
    assert any(killed) and not all(killed), "the scenario must mix killed and surviving runs"
    assert any(0 < result.metrics["time_to_kill"][i] < KILL_TICKS - 1 for i in range(len(KILL_SEEDS)) if killed[i])
    for i, seed in enumerate(KILL_SEEDS):
        # a single run with the scalar values of run i's knobs
        scalars = tuple(f"{k}={v[i]!r}" for k, v in KILL_KNOBS.items())
        single, single_files = run_to(tmp_path, (*KILL_BASE, f"ticks={KILL_TICKS}", f"seed={seed}", "runs=1",
                                                 *scalars), name="single")
        assert single.run_metrics(0) == result.run_metrics(i)
        assert single_files[seed].read_bytes() == files[seed].read_bytes()


def test_batch_from_config_equals_single_runs(tmp_path):
    # runs=4 seed=20 is seeds 20..23; the aggressive profile in the jumpy market
    over = ("+profile=aggressive", "market=jumpy", "ticks=200")
    batch, files = run_to(tmp_path / "batch", (*over, "runs=4", "seed=20"))
    assert list(files) == [20, 21, 22, 23]
    for i, seed in enumerate(files):
        single, single_files = run_to(tmp_path / "single", (*over, "runs=1", f"seed={seed}"))
        assert single.run_metrics(0) == batch.run_metrics(i)
        assert single_files[seed].read_bytes() == files[seed].read_bytes()


def test_batch_with_per_run_venue_fees_and_kills_equals_single_runs(tmp_path):
    # per-run maker fees (a venue knob given per run, (venues, runs)) in the batch where runs 4 and 5 are killed:
    # the spec's batch = single-runs property must hold for every per-run knob.
    fees = [[2.0, 1.5, 2.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0], [2.0, 1.5, 2.0, 2.0, 2.0],
            [3.0, 3.0, 3.0, 3.0, 3.0], [2.0, 1.5, 2.0, 2.0, 2.0], [0.5, 0.5, 0.5, 0.5, 0.5],
            [1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.0, 2.0, 2.0, 2.0]]
    knobs = {"engine.risk.daily_loss_limit": KILL_KNOBS["engine.risk.daily_loss_limit"],
             "engine.venues.maker_fee_bps": fees}
    over = (*KILL_BASE, f"ticks={KILL_TICKS}")
    batch, files = run_to(tmp_path / "batch", over, seeds=KILL_SEEDS, per_run=knobs)
    for i, seed in enumerate(KILL_SEEDS):
        fee_list = "[" + ",".join(repr(f) for f in fees[i]) + "]"
        single, single_files = run_to(tmp_path / "single", (*over, f"seed={seed}", "runs=1",
                                                            f"engine.risk.daily_loss_limit={knobs['engine.risk.daily_loss_limit'][i]!r}",
                                                            f"engine.venues.maker_fee_bps={fee_list}"))
        assert single.run_metrics(0) == batch.run_metrics(i)
        assert single_files[seed].read_bytes() == files[seed].read_bytes()


def test_rows_self_consistent(kill_batch):
    result, files = kill_batch
    cfg = compose(*KILL_BASE)
    vol = dict(cfg.engine.volatility)
    regimes = set()
    for i, seed in enumerate(KILL_SEEDS):
        rows = read_rows(files[seed])
        check_rows(rows, _risk_for_run(cfg, KILL_KNOBS, i), vol, KILL_TICKS)
        regimes |= {r["risk_regime"] for r in rows}
    # the batch exercises every regime, so the regime check above is not vacuous
    assert regimes == {"Normal", "Warning", "HardLimit"}


def test_rows_self_consistent_aggressive_default(tmp_path):
    result, files = run_to(tmp_path, ("+profile=aggressive", "ticks=200", "runs=2", "seed=7"))
    cfg = compose("+profile=aggressive")
    for seed, path in files.items():
        check_rows(read_rows(path), dict(cfg.engine.risk), dict(cfg.engine.volatility), 200)


def test_no_hedge_volume_is_positive_zero(tmp_path):
    # a tick without any hedge has hedge_volume_tao 0.0; it must not be written as -0.0 on ticks whose
    # pnl_total is negative (that sign leaks from pnl and makes a single run's file differ from the same run
    # inside a batch where another run hedged on that tick). Hedging off: band 1e9; 20 TAO held so pnl < 0 often.
    result, files = run_to(tmp_path, ("ticks=100", "runs=2", "seed=3", "engine.hedge.band_base=1e9",
                                      "engine.initial_q_tao=20"))
    rows = [r for path in files.values() for r in read_rows(path)]
    assert any(r["pnl_total"] < 0 for r in rows)
    for path in files.values():
        text = path.read_text()
        assert '"hedge_volume_tao": -0.0' not in text
        assert '"mm_volume_tao": -0.0' not in text


def test_online_metrics_equal_metrics_from_telemetry(kill_batch):
    result, files = kill_batch
    for i, seed in enumerate(KILL_SEEDS):
        assert_metrics_match_file(result.run_metrics(i), files[seed])


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_pool_batch_equals_single_runs(kill_batch, tmp_path, threads):
    # the kill batch again on the thread pool (serial_below=0), on one and two threads: the same files and
    # metrics as the serial batch, so results depend neither on the thread count nor on the path taken
    result, files = kill_batch
    pool, pool_files = run_to(tmp_path, (*KILL_BASE, f"ticks={KILL_TICKS}", f"execution.threads={threads}",
                                         "execution.serial_below=0"), seeds=KILL_SEEDS, per_run=KILL_KNOBS)
    for i, seed in enumerate(KILL_SEEDS):
        assert pool.run_metrics(i) == result.run_metrics(i)
        assert pool_files[seed].read_bytes() == files[seed].read_bytes()


def test_batch_order_does_not_matter(kill_batch, tmp_path):
    # the same runs in reverse order (seeds and knobs together) give each run the same path
    result, files = kill_batch
    knobs = {k: v[::-1] for k, v in KILL_KNOBS.items()}
    rev, rev_files = run_to(tmp_path, (*KILL_BASE, f"ticks={KILL_TICKS}", "execution.serial_below=0"),
                            seeds=KILL_SEEDS[::-1], per_run=knobs)
    n = len(KILL_SEEDS)
    for i, seed in enumerate(KILL_SEEDS):
        assert rev.run_metrics(n - 1 - i) == result.run_metrics(i)
        assert rev_files[seed].read_bytes() == files[seed].read_bytes()


def test_telemetry_every_downsamples_and_keeps_the_kill_row(kill_batch, tmp_path):
    # telemetry.every=7 writes ticks 0, 7, 14, ... and the firing tick; each row equals the full file's row
    result, files = kill_batch
    sparse, sparse_files = run_to(tmp_path, (*KILL_BASE, f"ticks={KILL_TICKS}", "telemetry.every=7"),
                                  seeds=KILL_SEEDS, per_run=KILL_KNOBS)
    saw_kill = False
    for i, seed in enumerate(KILL_SEEDS):
        full = read_rows(files[seed])
        rows = read_rows(sparse_files[seed])
        expected = [r for r in full if r["t"] % 7 == 0 or r["kill_switch"] or r["t"] == KILL_TICKS - 1]
        assert rows == expected
        saw_kill |= rows[-1]["kill_switch"] and rows[-1]["t"] % 7 != 0
        assert sparse.run_metrics(i) == result.run_metrics(i)
    assert saw_kill, "a run killed between two sampled ticks must keep its firing row"


def test_config_hash_ignores_speed_only_settings():
    base = ("market=volatile", "ticks=150")
    digest = config_hash(compose_config(list(base), environ={}))
    assert config_hash(compose_config([*base, "execution.threads=1", "execution.serial_below=99"],
                                      environ={})) == digest
    assert config_hash(compose_config([*base, "engine.hedge.band_base=3.5"], environ={})) != digest
    assert config_hash(compose_config([*base, "seed=9", "runs=4"], environ={})) == digest  # the path's seed is apart


# --------------------------------------------------------------------------------------------------
# Hypothesis: the invariants over seeds, markets and a couple of knobs (few examples, small ticks).
# --------------------------------------------------------------------------------------------------

# no shrinking (a failure is reported as found, in bounded time) and no example database in the repository
HYP = settings(max_examples=6, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
               suppress_health_check=[HealthCheck.too_slow])


@HYP
@given(seed=st.integers(0, 2**31 - 1), market=st.sampled_from(["default", "volatile", "jumpy", "venue_outage"]),
       loss=st.floats(5.0, 300.0), band=st.floats(1.0, 10.0), q0=st.sampled_from([0.0, -15.0, 25.0]))
def test_hypothesis_batch_single_rows_metrics(seed, market, loss, band, q0):
    ticks = 120
    seeds = [seed, seed + 1, seed + 2]
    knobs = {"engine.risk.daily_loss_limit": [loss, 1e12, loss * 3],
             "engine.hedge.band_base": [band, band, 5.625]}
    over = (f"market={market}", f"ticks={ticks}", f"engine.initial_q_tao={q0!r}")
    cfg = compose(*over)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        batch, files = run_to(tmp / "batch", over, seeds=seeds, per_run=knobs)
        for i, s in enumerate(seeds):
            rows = read_rows(files[s])
            check_rows(rows, _risk_for_run(cfg, knobs, i), dict(cfg.engine.volatility), ticks)
            assert_metrics_match_file(batch.run_metrics(i), files[s])
            single, single_files = run_to(tmp / "single", over, seeds=[s],
                                          per_run={k: [v[i]] for k, v in knobs.items()})
            assert single.run_metrics(0) == batch.run_metrics(i)
            assert single_files[s].read_bytes() == files[s].read_bytes()


@HYP
@given(seed=st.integers(0, 2**31 - 1), market=st.sampled_from(["default", "volatile", "jumpy"]),
       threads=st.sampled_from([1, 2]), runs=st.integers(2, 6))
def test_hypothesis_thread_pool_equals_serial(seed, market, threads, runs):
    over = (f"market={market}", "ticks=100", f"runs={runs}", f"seed={seed}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ra, fa = run_to(tmp / "a", (*over, f"execution.threads={threads}", "execution.serial_below=0"))
        rb, fb = run_to(tmp / "b", (*over, "execution.serial_below=1000"))
        for i in range(runs):
            assert ra.run_metrics(i) == rb.run_metrics(i)
        for s in fa:
            assert fa[s].read_bytes() == fb[s].read_bytes()


def test_engine_imports_nothing_of_tracking_experiments_or_files():
    # the engine does no I/O and knows nothing above it: importing it loads only itself, the core layer and
    # numpy / numba (checked in a fresh interpreter, where nothing else is imported yet)
    import subprocess
    import sys

    code = ("import sys, paraphina.engine.simulate; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('paraphina', 'mlflow', 'pandas', 'hydra', 'omegaconf', 'optuna', 'matplotlib'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "paraphina.engine.kernel" in loaded
    assert all(m.split(".")[:2] in (["paraphina", "engine"], ["paraphina", "core"]) or m == "paraphina"
               for m in loaded), loaded


# --------------------------------------------------------------------------------------------------
# Version 2: the microstructure metrics, adverse selection, toxicity over a session (seeded, fast).
# --------------------------------------------------------------------------------------------------

POOL = Threads(threads=0, serial_below=1)


def sim(overrides, runs, ticks, seed=0, record=None):
    """(params, result) of `runs` runs from seed `seed` of the composed config."""
    plain = to_plain(compose(*overrides))
    p = build_params(plain["engine"], plain["market"], runs)
    return p, simulate(p, ticks, np.arange(seed, seed + runs), POOL, record=record)


def test_mm_is_adversely_selected_in_toxic_flow():
    # market=toxic_flow (informed, clustered flow that moves the price): the MM's fills lose on their 30 s
    # markout on average (per traded notional over all runs) and in most runs: at least 32 of 48 (a sign test,
    # P(>= 32 of 48 | no effect) = 0.014; the run figures are heavy-tailed, so no t-test)
    _, res = sim(("market=toxic_flow",), 48, 1500, seed=100)
    m, notional = res.metrics["markout_30s_bps"], res.calibration["mm_notional"]
    assert np.all(np.isfinite(m)) and notional.min() > 0
    assert np.sum(m * notional) / np.sum(notional) < 0
    assert (m < 0).sum() >= 32 and np.median(m) < 0


def test_markouts_worse_with_more_informed_flow():
    # the same seeds with the alpha tilt off (kappa 0) and strong (kappa 1e5: kappa x std(alpha) about 0.5):
    # more informed flow, worse markouts on average (paired by seed)
    base = ("market.flow.jump=0.2", "market.flow.cross=0.25", "market.flow.decay=0.5")
    _, off = sim((*base, "market.flow.informed=0"), 48, 1500, seed=7)
    _, on = sim((*base, "market.flow.informed=1e5"), 48, 1500, seed=7)
    diff = on.metrics["markout_30s_bps"] - off.metrics["markout_30s_bps"]
    assert diff.mean() < -3 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_microstructure_metrics_finite_and_consistent():
    # default market, every row recorded: mm_fill_rate = fills / quoted sides in [0, 1] (a side fills at most
    # once a tick), net_edge_bps = final_pnl / MM notional x 1e4, hedge_cost_usd >= 0, zero without hedging
    runs, ticks = 12, 1500
    _, res = sim(("ticks=5",), runs, ticks, seed=40, record=RowRequest(runs=tuple(range(runs)), every=1))
    m, cal = res.metrics, res.calibration
    for key in MICROSTRUCTURE_KEYS:
        assert np.all(np.isfinite(m[key])), key
    assert np.all((m["mm_fill_rate"] >= 0) & (m["mm_fill_rate"] <= 1)) and m["mm_fill_rate"].max() > 0
    assert np.all(m["hedge_cost_usd"] >= 0)
    notional = cal["mm_notional"]
    assert np.all(notional > 0)
    np.testing.assert_allclose(m["net_edge_bps"], m["final_pnl"] / notional * 1e4, rtol=1e-12)
    for i in range(runs):
        rows = res.rows.of(i)
        assert np.all(rows["mm_fills"] <= rows["mm_quoted_sides"])
        assert m["mm_fill_rate"][i] == pytest.approx(rows["mm_fills"].sum() / rows["mm_quoted_sides"].sum(),
                                                     rel=1e-12)
        assert cal["quoted_sides"][i] == rows["mm_quoted_sides"].sum()
        # MM notional: the volume at about the fair value (within 1 %)
        assert notional[i] == pytest.approx(float(np.sum(rows["mm_volume_tao"] * rows["fair_value"])), rel=1e-2)
        hedged = rows["hedge_volume_tao"].sum()
        assert (m["hedge_cost_usd"][i] > 0) == (hedged > 0)
    # hedging off: no hedge cost at all
    _, res = sim(("engine.hedge.band_base=1e9",), 4, 500, seed=40)
    assert np.all(res.metrics["hedge_cost_usd"] == 0.0)


def test_spread_capture_at_least_the_quoted_floor_when_no_quote_crosses_the_mid():
    # gamma 0 and basis / funding weights 0: the reservation is the venue's mid, so every bid sits below it and
    # every ask above it, at least edge_local_min + edge_vol_mult x vol_ratio_min bps away (times spread_mult
    # >= 1). Each fill captures that much of its notional: spread_capture_bps >= that floor, run by run
    over = ("engine.venues.gamma=[0,0,0,0,0]", "engine.mm.basis_weight=0", "engine.mm.funding_weight=0")
    cfg = compose(*over)
    floor = (cfg.engine.mm.edge_local_min_bps + cfg.engine.mm.edge_vol_mult_bps * cfg.engine.volatility.vol_ratio_min)
    _, res = sim(over, 16, 1000, seed=3)
    cap = res.metrics["spread_capture_bps"]
    assert np.all(res.calibration["mm_notional"] > 0)
    assert np.all(cap >= floor * (1 - 1e-9)) and floor > 0
    # the default MM (skewed quotes) still captures a positive spread on average
    _, res = sim(("ticks=5",), 16, 1000, seed=3)
    assert res.metrics["spread_capture_bps"].mean() > 0


def test_no_venue_stays_disabled_in_a_calm_market():
    # toxicity is not absorbing (v2): in market=calm, with a markout score sensitive enough to disable venues
    # now and then (2 bps of adverse markout = a score of 1), every venue that is Disabled at some tick is
    # Healthy or in Warning again later (bar spells still open in the last 500 ticks), and no venue is Disabled
    # most of the time
    runs, ticks = 6, 4000
    _, res = sim(("market=calm", "engine.toxicity.markout_tox_scale_bps=2"), runs, ticks, seed=50,
                 record=RowRequest(runs=tuple(range(runs)), every=1))
    disabled_spells = 0
    for i in range(runs):
        status = res.rows.of(i)["venue_status"]
        for v in range(status.shape[1]):
            d = status[:, v] == 2
            assert d.mean() < 0.5
            starts = np.flatnonzero(d[1:] & ~d[:-1]) + 1
            for s in starts[starts < ticks - 500]:
                disabled_spells += 1
                assert not d[s:].all(), (i, v, s)
    assert disabled_spells > 0, "the check needs Disabled spells to look at"
