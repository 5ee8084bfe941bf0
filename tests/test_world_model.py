"""World model: tier score and margins, statistical verdicts, Exp07 selection and the Exp12 rule, on hand-worked values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.world_model.power import kill_runs_needed
from paraphina.world_model.presets import select_presets
from paraphina.world_model.safety import budget_ratio, risk_scale, tune_preset
from paraphina.world_model.stats import (
    check_drawdown,
    check_kill,
    check_pnl,
    check_tier,
    mean_interval,
    t_quantile,
    verdict,
    wilson_interval,
)
from paraphina.world_model.tiers import RiskTier, budget_margins, tier_score, tiers_from_mapping

# ENGINE_SPEC section 7, as conf/world_model delivers it.
SPEC_TIERS = {
    "conservative": dict(max_kill_prob=0.01, max_drawdown_abs=2000, min_final_pnl_mean=0,
                         lambda_std=0.5, lambda_dd=0.5, lambda_kill=200),
    "balanced": dict(max_kill_prob=0.05, max_drawdown_abs=4000, min_final_pnl_mean=0,
                     lambda_std=0.3, lambda_dd=0.3, lambda_kill=100),
    "aggressive": dict(max_kill_prob=0.15, max_drawdown_abs=8000, min_final_pnl_mean=-500,
                       lambda_std=0.1, lambda_dd=0.1, lambda_kill=50),
}
TIERS = tiers_from_mapping(SPEC_TIERS)
BALANCED = TIERS["balanced"]


# --- tiers -----------------------------------------------------------------------------------


def test_tiers_from_config_mapping_including_dictconfig():
    tiers = tiers_from_mapping(OmegaConf.create(SPEC_TIERS))
    assert list(tiers) == ["conservative", "balanced", "aggressive"]
    assert tiers["aggressive"] == RiskTier("aggressive", 0.15, 8000.0, -500.0, 0.1, 0.1, 50.0)


@pytest.mark.parametrize(
    "knobs, message",
    [
        ({**SPEC_TIERS["balanced"], "max_kill": 0.1}, "unknown key(s) max_kill"),
        ({k: v for k, v in SPEC_TIERS["balanced"].items() if k != "lambda_dd"}, "missing key(s) lambda_dd"),
        ({**SPEC_TIERS["balanced"], "lambda_std": "high"}, "lambda_std must be a finite number"),
        ({**SPEC_TIERS["balanced"], "max_kill_prob": 1.5}, "max_kill_prob must be within [0, 1]"),
    ],
)
def test_tier_rejects_bad_knobs_with_one_line(knobs, message):
    with pytest.raises(ParaphinaError) as err:
        RiskTier.from_mapping("balanced", knobs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_tier_score_hand_example_scalar_and_vectorised():
    # 1000 - (0.3*500 + 0.3*1000 + 100*0.02) = 1000 - (150 + 300 + 2) = 548
    assert tier_score(BALANCED, 1000.0, 500.0, 1000.0, 0.02) == pytest.approx(548.0, abs=1e-12)
    scores = tier_score(BALANCED, pd.Series([1000.0, 0.0]), np.array([500.0, 0.0]), np.array([1000.0, 0.0]),
                        np.array([0.02, 0.0]))
    np.testing.assert_allclose(scores, [548.0, 0.0])


def test_margins_are_positive_when_safe_and_boundary_is_ok():
    m = budget_margins(BALANCED, pnl_mean=100.0, dd_mean=4000.0, kill_prob=0.06)
    assert m["kill_margin"] == pytest.approx(-0.01) and not m["kill_ok"]
    assert m["dd_margin"] == 0.0 and m["dd_ok"]  # exactly on the budget passes
    assert m["pnl_margin"] == 100.0 and m["pnl_ok"]
    m = budget_margins(TIERS["aggressive"], pnl_mean=-600.0, dd_mean=1000.0, kill_prob=0.15)
    assert (m["pnl_margin"], m["pnl_ok"]) == (-100.0, False)
    assert (m["dd_margin"], m["dd_ok"]) == (7000.0, True)
    assert (m["kill_margin"], m["kill_ok"]) == (0.0, True)


# --- intervals -------------------------------------------------------------------------------


def test_wilson_hand_values():
    # 0 of n: (0, z^2/(n+z^2)); 0 of 10 -> 3.841459/13.841459
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.2775328, abs=1e-7))
    # n of n: (n/(n+z^2), 1); 10 of 10 -> 10/13.841459
    assert wilson_interval(10, 10) == (pytest.approx(0.7224672, abs=1e-7), 1.0)
    # 1 of 2: centre 1/2, half = z*sqrt(1/8 + z^2/16)/(1 + z^2/2) = 1.184276/2.920729 = 0.405469
    low, high = wilson_interval(1, 2)
    assert (low, high) == (pytest.approx(0.0945312, abs=1e-7), pytest.approx(0.9054688, abs=1e-7))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(7, 7)[1] == 1.0


@pytest.mark.parametrize("successes, n", [(-1, 3), (4, 3), (1.5, 3), (True, 3)])
def test_wilson_rejects_bad_counts(successes, n):
    with pytest.raises(ParaphinaError):
        wilson_interval(successes, n)


@pytest.mark.parametrize(
    "df, expected",
    [(1, 12.7062047362), (2, 4.3026527297), (3, 3.1824463053), (9, 2.2621571628), (30, 2.0422724563),
     (999, 1.9623414611), (1000, 1.9623390808), (10**6, 1.9599663)],
)
def test_t_quantile_table_values(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_t_quantile_matches_scipy_across_df_and_levels():
    stats = pytest.importorskip("scipy.stats")
    for p in (0.6, 0.9, 0.95, 0.99, 0.9995):
        for df in [*range(1, 40), 120, 998, 999, 1000, 1001, 5000, 10**7]:
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), abs=1e-9)


def test_mean_interval_edges():
    assert mean_interval([3.0]) == (-math.inf, math.inf)
    assert mean_interval([0.1, 0.1, 0.1]) == (0.1, 0.1)
    # mean 2, s = 1, n = 3 (df 2): 2 -+ t_{.975,2} / sqrt(3) = 2 -+ 4.3026527 / 1.7320508
    low, high = mean_interval([1.0, 2.0, 3.0])
    assert (low, high) == (pytest.approx(2 - 4.3026527 / math.sqrt(3)), pytest.approx(2 + 4.3026527 / math.sqrt(3)))
    with pytest.raises(ParaphinaError):
        mean_interval([])
    with pytest.raises(ParaphinaError):
        mean_interval([1.0, math.nan])


# --- verdicts --------------------------------------------------------------------------------


def test_verdict_boundary_counts_as_ok_only_on_the_safe_end():
    assert verdict(0.1, 0.3, 0.3, "max") == "ok"
    assert verdict(0.1, 0.3, 0.1, "max") == "inconclusive"
    assert verdict(0.1, 0.3, 0.05, "max") == "violated"
    assert verdict(0.1, 0.3, 0.1, "min") == "ok"
    assert verdict(0.1, 0.3, 0.3, "min") == "inconclusive"
    assert verdict(0.1, 0.3, 0.35, "min") == "violated"


def test_zero_kills_in_two_runs_cannot_show_one_percent():
    check = check_kill(0, 2, 0.01)
    assert (check.estimate, check.margin, check.verdict) == (0.0, 0.01, "inconclusive")
    # runs needed is the power plan: 80 % power to show ok at a true rate of 0.5 %, 2470 runs
    assert check.runs_needed == 2470
    # 0 of n is ok once the exact upper bound 1 - 0.025^(1/n) <= 0.01, i.e. n >= ln 0.025 / ln 0.99 = 367.04
    assert check_kill(0, 368, 0.01).verdict == "ok"
    assert check_kill(0, 367, 0.01).verdict == "inconclusive"


def test_small_n_is_not_read_as_violated():
    # Wilson read 1 kill in 1 run as violated for any budget up to 0.2; the exact bound 0.025 does not
    assert check_kill(1, 1, 0.2).verdict == "inconclusive"
    assert check_kill(1, 1, 0.02).verdict == "violated"  # exact low bound 0.025 > 0.02


def test_all_killed_is_violated_and_budget_on_the_exact_bound_is_ok():
    check = check_kill(10, 10, 0.15)
    assert (check.verdict, check.runs_needed, check.low, check.high) == ("violated", None,
                                                                         pytest.approx(0.025 ** 0.1), 1.0)
    on_bound = check_kill(0, 10, 0.5).high
    assert on_bound == pytest.approx(1 - 0.025 ** 0.1) and check_kill(0, 10, on_bound).verdict == "ok"


def test_budget_zero_has_no_plan_and_a_rate_on_the_budget_gets_the_power_plan():
    check = check_kill(0, 5, 0.0)
    assert (check.verdict, check.runs_needed) == ("inconclusive", None)
    check = check_kill(1, 10, 0.1)
    assert (check.verdict, check.runs_needed) == ("inconclusive", kill_runs_needed(0.1, 0.025).runs)


def test_mean_checks_hand_example():
    # mean 2000, s = sqrt(2)*1000, n = 2: high = 2000 + 12.706*1000 -> inconclusive against 4000.
    # Decided once t_{n-1}/sqrt(n) <= 2000/1414.2 = 1.4142: n=4 gives 3.1824/2 = 1.591, n=5 gives 2.7764/2.2361 = 1.2416.
    check = check_drawdown([1000.0, 3000.0], 4000.0)
    assert (check.verdict, check.runs_needed, check.margin, check.direction) == ("inconclusive", 5, 2000.0, "max")
    check = check_pnl([-100.0, -100.0, -100.0], -100.0)
    assert (check.low, check.high, check.verdict) == (-100.0, -100.0, "ok")
    assert check_drawdown([5.0], 1.0).runs_needed is None  # one run: no std to extrapolate
    assert check_pnl([-10.0, 10.0], 0.0).runs_needed is None  # mean on the budget


def test_check_tier_order_and_length_mismatch():
    checks = check_tier(TIERS["conservative"], [100.0, 300.0, 200.0], [50.0, 60.0, 70.0], [False, False, True])
    assert [c.name for c in checks] == ["kill_prob", "drawdown", "pnl"]
    assert checks[0].estimate == pytest.approx(1 / 3) and checks[0].n == 3
    with pytest.raises(ParaphinaError):
        check_tier(TIERS["conservative"], [1.0, 2.0], [1.0], [False, False])


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), budget=st.integers(0, 1000).map(lambda k: k / 1000))
def test_kill_verdicts_follow_the_exact_bounds_and_runs_needed_the_power_plan(n, data, budget):
    # Budgets on a 0.001 grid, as configs write them. The verdict is ok / violated exactly when scipy's
    # beta quantiles (the exact bounds) are on one side of the budget; an undecided check gets the power
    # plan's count (at least one more run than it has)
    kills = data.draw(st.integers(0, n))
    check = check_kill(kills, n, budget)
    low = 0.0 if kills == 0 else scipy_stats.beta.ppf(0.025, kills, n - kills + 1)
    high = 1.0 if kills == n else scipy_stats.beta.ppf(0.975, kills + 1, n - kills)
    assert (check.low, check.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert check.verdict == verdict(check.low, check.high, budget, "max")
    if check.verdict == "inconclusive" and 0 < budget < 1:
        assert check.runs_needed == max(kill_runs_needed(budget, 0.025).runs, n + 1)
    else:
        assert check.runs_needed is None


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-1000, 1000), min_size=2, max_size=12),
       budget=st.integers(-8000, 8000).map(lambda k: k / 8), as_pnl=st.booleans())
def test_runs_needed_is_the_smallest_deciding_count_for_means(values, budget, as_pnl):
    check = (check_pnl if as_pnl else check_drawdown)(values, budget)
    if check.runs_needed is None:
        assert check.verdict != "inconclusive" or check.estimate == budget
        return
    s, m = float(np.std(values, ddof=1)), check.runs_needed

    def decided(k: int) -> bool:
        half = t_quantile(0.975, k - 1) * s / math.sqrt(k)
        return verdict(check.estimate - half, check.estimate + half, budget, check.direction) != "inconclusive"

    assert m > len(values) and decided(m) and not decided(m - 1)


# --- Exp07 presets ---------------------------------------------------------------------------

GRID = pd.DataFrame(
    {
        "q0": [0, 25, 50, -25],
        "pnl_mean": [1000.0, 2000.0, 3000.0, 1000.0],
        "pnl_std": [400.0, 1000.0, 2000.0, 400.0],
        "dd_mean": [1500.0, 3000.0, 7000.0, 1500.0],
        "kill_prob": [0.0, 0.04, 0.10, 0.0],
    }
)


def test_select_presets_hand_table():
    # conservative: only q0 0 and -25 pass, both score 1000-(200+750) = 50 -> input order picks q0 0
    # balanced:     q0 25 scores 2000-(300+900+4) = 796 > q0 0 at 430; q0 50 fails dd and kill
    # aggressive:   all pass; q0 50 scores 3000-(200+700+5) = 2095, the best
    presets, warnings = select_presets(GRID, TIERS)
    assert warnings == []
    assert presets[["tier", "rank", "q0", "score", "relaxed"]].to_dict("records") == [
        {"tier": "conservative", "rank": 1, "q0": 0, "score": 50.0, "relaxed": False},
        {"tier": "balanced", "rank": 1, "q0": 25, "score": 796.0, "relaxed": False},
        {"tier": "aggressive", "rank": 1, "q0": 50, "score": 2095.0, "relaxed": False},
    ]
    assert presets.loc[0, "dd_margin"] == 500.0 and presets.loc[0, "kill_ok"]
    assert set(GRID.columns) <= set(presets.columns)
    two, _ = select_presets(GRID, {"conservative": TIERS["conservative"]}, top_n=2)
    assert two["q0"].tolist() == [0, -25] and two["rank"].tolist() == [1, 2]


def test_select_presets_relaxes_with_a_warning():
    strict = RiskTier("strict", max_kill_prob=0.0, max_drawdown_abs=1000.0, min_final_pnl_mean=500.0,
                      lambda_std=0.0, lambda_dd=0.0, lambda_kill=0.0)
    # failed budgets: q0 0 and -25 fail drawdown only; q0 25 and 50 fail kill and drawdown.
    # Fewest failures first, then score (pnl_mean here): 0, -25 (tie, input order), then 50 over 25.
    presets, warnings = select_presets(GRID, {"strict": strict}, top_n=3)
    assert presets["q0"].tolist() == [0, -25, 50]
    assert presets["relaxed"].all() and presets["rank"].tolist() == [1, 2, 3]
    assert presets["dd_ok"].tolist() == [False, False, False] and presets["kill_ok"].tolist() == [True, True, False]
    assert warnings == [
        "tier 'strict': no grid point meets all budgets; relaxed to the closest "
        "(selected point(s) fail: kill_prob, drawdown)"
    ]
    _, warnings = select_presets(GRID, {"strict": strict})
    assert warnings[0].endswith("(selected point(s) fail: drawdown)")


@pytest.mark.parametrize(
    "table, message",
    [
        (GRID.drop(columns="kill_prob"), "lacks column(s) kill_prob"),
        (GRID.assign(score=1.0), "already has column(s) score"),
        (GRID.iloc[:0], "empty"),
        (GRID.assign(dd_mean=[1.0, np.nan, 1.0, 1.0]), "finite numbers"),
    ],
)
def test_select_presets_rejects_bad_tables(table, message):
    with pytest.raises(ParaphinaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_presets(table, TIERS)


# --- Exp12 safety tuner ----------------------------------------------------------------------

PRESET = {"band_base": 5.625, "mm_size_eta": 0.1, "init_q_tao": 30.0, "delta_hard_limit_usd_base": 100000.0,
          "daily_loss_limit": 5000.0, "vol_ref": 0.028125}
SCALE_RULES = {"threshold": 1.05, "floor": 0.1}  # the hand cases below assume these rules (conf/exp12.yaml's)
TUNE_RULES = {**SCALE_RULES, "loss_tighten_threshold": 1.10}


def test_hand_case_rules_are_the_configured_ones():
    rules = compose_config([], "exp12", environ={}).experiment
    assert TUNE_RULES == {key: rules[key] for key in TUNE_RULES}


def test_risk_scale_hand_cases():
    assert risk_scale(1.5, 0.8, **SCALE_RULES) == pytest.approx(2 / 3)
    assert risk_scale(1.2, 2.0, **SCALE_RULES) == 0.5  # the larger overshoot wins
    assert risk_scale(1.05, 1.05, **SCALE_RULES) == 1.0  # at the threshold: untouched
    assert risk_scale(0.5, 20.0, **SCALE_RULES) == 0.1  # 1/20 floored at 0.1
    assert risk_scale(math.inf, 0.0, **SCALE_RULES) == 0.1
    assert budget_ratio(0.0, 0.0) == 0.0 and budget_ratio(0.01, 0.0) == math.inf


def test_tune_preset_scales_and_tightens_the_loss_limit():
    # dd 6000 / 4000 = 1.5 -> scale 2/3; kill 0.04/0.05 = 0.8; loss 5000 > 4000*1.1 -> 4000
    tuned = tune_preset(PRESET, BALANCED, dd_mean=6000.0, kill_prob=0.04, **TUNE_RULES)
    assert tuned == {
        "band_base": pytest.approx(3.75), "mm_size_eta": pytest.approx(0.1 * 2 / 3), "init_q_tao": pytest.approx(20.0),
        "delta_hard_limit_usd_base": pytest.approx(200000 / 3), "daily_loss_limit": 4000.0, "vol_ref": 0.028125,
        "risk_scale": pytest.approx(2 / 3), "dd_ratio": 1.5, "kill_ratio": pytest.approx(0.8),
    }


def test_tune_preset_floor_and_unchanged_loss_limit():
    # kill 1.0 / 0.05 = 20 -> 0.05, floored to 0.1; loss 4400 == 4000*1.1 is not above it -> unchanged
    tuned = tune_preset({**PRESET, "daily_loss_limit": 4400.0}, BALANCED, dd_mean=1000.0, kill_prob=1.0, **TUNE_RULES)
    assert tuned["risk_scale"] == 0.1 and tuned["kill_ratio"] == 20.0 and tuned["dd_ratio"] == 0.25
    assert tuned["band_base"] == pytest.approx(0.5625) and tuned["delta_hard_limit_usd_base"] == pytest.approx(10000.0)
    assert tuned["daily_loss_limit"] == 4400.0
    calm = tune_preset(PRESET, TIERS["aggressive"], dd_mean=1000.0, kill_prob=0.0, **TUNE_RULES)  # 5000 <= 8000*1.1
    assert calm["risk_scale"] == 1.0 and calm["daily_loss_limit"] == 5000.0 and calm["band_base"] == 5.625


def test_tune_preset_needs_every_tuned_knob():
    with pytest.raises(ParaphinaError, match="lacks init_q_tao"):
        tune_preset({k: v for k, v in PRESET.items() if k != "init_q_tao"}, BALANCED, 0.0, 0.0, **TUNE_RULES)
