"""World model: tier score and margins, statistical verdicts, Exp07 selection and the Exp12 rule, on hand-worked values."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from omegaconf import OmegaConf

from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.world_model.power import quantile_min_runs, runs_to_decide
from paraphina.world_model.presets import select_presets
from paraphina.world_model.safety import budget_ratio, risk_scale, tune_preset
from paraphina.world_model.verdicts import (
    TOO_FEW,
    CheckRules,
    check_kill_exact,
    check_mean,
    check_quantile,
    is_decided,
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


# --- verdict rules and runs needed ----------------------------------------------------------


def test_rules_from_the_config_level_and_per_look():
    rules = CheckRules.from_confidence(0.95, 10, "p95")
    assert (rules.alpha, rules.min_n, rules.dd_statistic) == (pytest.approx(0.025), 10, "p95")
    assert rules.per_look(5).alpha == pytest.approx(0.005) and rules.per_look(5).min_n == 10


@pytest.mark.parametrize("args, message", [((1.0, 10, "mean"), "confidence"), ((0.95, 1, "mean"), "min_n"),
                                           ((0.95, 10, "median"), "dd_statistic")])
def test_rules_reject_bad_settings(args, message):
    with pytest.raises(ParaphinaError, match=message):
        CheckRules.from_confidence(*args)


def test_decided_verdicts():
    assert [is_decided(v) for v in ("ok", "violated", "inconclusive", TOO_FEW)] == [True, True, False, False]


def test_zero_kills_in_two_runs_need_the_power_plan_not_the_rule_of_three():
    check = check_kill_exact(0, 2, 0.01)
    plan = runs_to_decide(check, [False, False])
    assert (check.verdict, plan.runs) == ("inconclusive", 2470)
    assert "rule-of-three minimum" in plan.assumption and "not an estimate" in plan.assumption
    assert runs_to_decide(check_kill_exact(0, 5, 0.0), [False] * 5).runs is None  # a zero budget cannot read ok
    # a plan below the runs already made still asks for one more run
    assert runs_to_decide(check_kill_exact(150, 3000, 0.05), [False] * 3000).runs == 3001


def test_mean_runs_needed_at_the_observed_mean_and_spread():
    values = [1000.0, 3000.0]  # mean 2000, std 1414.2 against 4000: effect 1.4142
    check = check_mean("drawdown", values, 4000.0, "max")
    plan = runs_to_decide(check, values)
    assert check.verdict == TOO_FEW
    # independently: the smallest n >= min_n whose one-sided t test at 2.5 % has 80 % power (noncentral t)
    effect = 2000.0 / float(np.std(values, ddof=1))
    power = [scipy_stats.nct.sf(scipy_stats.t.ppf(0.975, n - 1), n - 1, effect * math.sqrt(n)) for n in range(2, 40)]
    expected = next(n for n, pw in zip(range(2, 40), power) if n >= 10 and pw >= 0.8)
    assert plan.runs == expected == 10
    assert runs_to_decide(check_mean("pnl", [5.0], 0.0, "min"), [5.0]).runs is None  # one run: no spread


def test_p95_runs_needed_until_its_interval_has_an_upper_end():
    drawdowns = list(np.linspace(100.0, 5000.0, 20))
    check = check_quantile("drawdown", drawdowns, 4000.0)
    assert math.isinf(check.high) and runs_to_decide(check, drawdowns).runs == 72  # 0.95^72 <= 0.025 < 0.95^71
    assert quantile_min_runs(0.95) == 72 and 0.95 ** 72 <= 0.025 < 0.95 ** 71
    many = list(np.linspace(3000.0, 5000.0, 100))
    wide = check_quantile("drawdown", many, 4900.0)
    assert wide.verdict == "inconclusive" and runs_to_decide(wide, many).runs is None


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


def test_select_presets_keeps_headroom_below_the_kill_budget():
    # headroom 0.5: balanced admits kill <= 0.025, so q0 25 (0.04) drops and q0 0 wins at 1000-(120+450) = 430;
    # aggressive admits <= 0.075, so q0 50 (0.10) drops and q0 25 wins at 2000-(100+300+2) = 1598
    presets, warnings = select_presets(GRID, TIERS, kill_headroom=0.5)
    assert warnings == []
    assert presets[["tier", "q0", "score"]].to_dict("records") == [
        {"tier": "conservative", "q0": 0, "score": 50.0},
        {"tier": "balanced", "q0": 0, "score": 430.0},
        {"tier": "aggressive", "q0": 25, "score": 1598.0},
    ]
    assert presets["kill_ok"].all()  # reported against the budget itself
    tight = {"aggressive": TIERS["aggressive"]}
    _, warnings = select_presets(GRID.assign(kill_prob=[0.1, 0.1, 0.1, 0.1]), tight, kill_headroom=0.5)
    assert warnings == ["tier 'aggressive': no grid point meets all budgets (kill probability within 0.5 of its "
                        "budget); relaxed to the closest (selected point(s) fail: kill_prob)"]
    for bad in (0.0, 1.5):
        with pytest.raises(ParaphinaError, match="kill_headroom"):
            select_presets(GRID, TIERS, kill_headroom=bad)


def test_select_presets_stays_inside_the_regime_envelope():
    # Warning share of each point; the envelope [0.04, 0.12] (ends included) keeps q0 0 and 50 only:
    # conservative keeps q0 0, balanced falls back from q0 25 to q0 0, aggressive keeps q0 50
    grid = GRID.assign(frac_warning=[0.04, 0.20, 0.12, 0.01])
    presets, warnings = select_presets(grid, TIERS, envelope={"frac_warning": (0.04, 0.12)})
    assert warnings == [] and presets["in_envelope"].all()
    assert presets[["tier", "q0"]].to_dict("records") == [
        {"tier": "conservative", "q0": 0}, {"tier": "balanced", "q0": 0}, {"tier": "aggressive", "q0": 50}]
    outside = grid.assign(frac_warning=0.5)
    presets, warnings = select_presets(outside, {"conservative": TIERS["conservative"]},
                                       envelope={"frac_warning": (0.04, 0.12)})
    assert presets["relaxed"].all() and not presets["in_envelope"].any()
    assert warnings[0].endswith("(selected point(s) fail: regime envelope)")
    with pytest.raises(ParaphinaError, match=r"lacks column\(s\) frac_hard"):
        select_presets(grid, TIERS, envelope={"frac_hard": (0.005, 0.03)})


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
