"""World-model alignment Exp10-Exp13 against hand-made MLflow records in a temporary SQLite store.

Expected numbers are computed by hand from the spec's formulas (tier table of ENGINE_SPEC section 7,
Wilson and Student t intervals), not by calling the code under test.
"""
from __future__ import annotations

import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from omegaconf import OmegaConf

from conftest import compose_for_test
from paraphina.config.loading import compose_config
from paraphina.experiments import alignment, exp10, exp11, exp12, exp13, sequential_runs
from paraphina.formats.dataset import append_rows, make_row
from paraphina.tracking.datasets import load_dataset, row_to_record
from paraphina.tracking.runs import RunRecord, RunWriter
from paraphina.tracking.store import prepare_store, tracking_client
from paraphina.world_model.power import kill_runs_needed
from paraphina.world_model.verdicts import TOO_FEW

NAMES = {"exp07": "exp07_optimal_presets", "exp08": "exp08_profile_validation", "exp11": "exp11_research_alignment",
         "exp13": "exp13_auto_research_harness"}


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, made_store: str) -> str:
    """A fresh store in tmp_path (a copy of the session's empty one); sweeps/<exp>/ copies go to tmp_path too."""
    monkeypatch.chdir(tmp_path)  # paths.root
    return made_store


def compose(name: str, uri: str, *overrides: str):
    return compose_for_test(overrides, name, [f"tracking.uri={uri}"])


def command(module, uri: str, *overrides: str) -> None:
    """What the experiment's command line runs, on its composed config (tests of the command line call `main`)."""
    module.command(compose(module.__name__.rsplit(".", 1)[1], uri, *overrides))


def record_parent(uri: str, experiment_id: str, children: list[RunRecord]) -> str:
    """A finished parent run of an experiment (as ExperimentRecorder writes it) with the given children."""
    name = NAMES[experiment_id]
    writer = RunWriter(uri, prepare_store(uri, [name])[name])
    parent = writer.start_parent(RunRecord(name=experiment_id, tags={"paraphina.kind": "experiment",
                                                                      "paraphina.experiment": experiment_id}))
    for child in children:
        writer.log(child, parent)
    writer.finish(parent)
    return parent


def metrics_row(pnl: float, dd: float, kill: bool) -> dict:
    return {"num_ticks": 100, "final_pnl": pnl, "max_pnl": max(pnl, 0.0), "min_pnl": min(pnl, 0.0), "max_drawdown": dd,
            "frac_normal": 1.0, "frac_warning": 0.0, "frac_hard": 0.0, "kill_switch": kill,
            "time_to_kill": 50 if kill else None, "max_abs_delta_usd": 1.0, "max_abs_basis_usd": 1.0}


def research_rows(runs: dict[str, list[tuple[float, float, bool]]], label: str = "day1") -> list[dict]:
    rows = []
    for profile, values in runs.items():
        for i, (pnl, dd, kill) in enumerate(values):
            rows.append(make_row(metrics_row(pnl, dd, kill), profile=profile, label=f"{label}_{profile}_r{i:03d}",
                                 timestamp_utc=f"2025-01-01T00:00:{len(rows):02d}Z"))
    return rows


def record_dataset(uri: str, name: str, rows: list[dict]) -> None:
    writer = RunWriter(uri, prepare_store(uri, ["research"])["research"])
    for i, row in enumerate(rows):
        writer.log(row_to_record(row, name, f"row{i}"))


def children_of(uri: str, parent: str) -> dict[str, object]:
    client = tracking_client(uri)
    runs = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    return {r.info.run_name: r for r in runs}


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    """Exact bounds, each one-sided at 2.5 %, from scipy's beta quantiles (independent of world_model)."""
    return (0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1)),
            1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k)))


def kill_plan(budget: float) -> int:
    """Runs for 80 % power to show ok at half the budget (the power plan every kill check prints)."""
    return kill_runs_needed(budget, 0.025).runs


# --- Exp11 -------------------------------------------------------------------------------------


def test_runs_needed_follow_the_configured_power_and_planned_rate(uri, capsys):
    record_dataset(uri, "plan", research_rows({"conservative": CONSERVATIVE}))
    command(exp11, uri, "dataset=plan", "world_model.power=0.9", "world_model.planned_fraction=0.2")
    out = capsys.readouterr().out
    table = exp11.run(compose("exp11", uri, "dataset=plan", "world_model.power=0.9",
                              "world_model.planned_fraction=0.2")).set_index("profile")
    # 90 % power to read ok at a true rate of 0.2 % against the 1 % budget, by the exact binomial test
    expected = kill_runs_needed(0.01, 0.025, 0.9, 0.002).runs
    assert table.loc["conservative", "kill_runs_needed"] == expected != kill_plan(0.01)
    assert "90% power (world_model.power)" in out and "0.2 of the budget" in out

CONSERVATIVE = [(100.0, 1500.0, False), (300.0, 2500.0, False), (-50.0, 1000.0, True), (250.0, 3000.0, False)]
BALANCED = [(10.0, 100.0, False), (20.0, 300.0, False)]


def test_exp11_flags_margins_scores_and_verdicts_match_a_hand_computation(uri, capsys):
    record_dataset(uri, "hand", research_rows({"conservative": CONSERVATIVE, "balanced": BALANCED}))
    command(exp11, uri, "dataset=hand")
    out = capsys.readouterr().out
    cfg = compose("exp11", uri, "dataset=hand")
    table = exp11.run(cfg).set_index("profile")

    c = table.loc["conservative"]
    std = math.sqrt((50**2 + 150**2 + 200**2 + 100**2) / 3)  # deviations from the mean 150
    assert (c["runs"], c["kills"]) == (4, 1)
    assert c["pnl_mean"] == pytest.approx(150.0) and c["pnl_std"] == pytest.approx(std)
    assert c["dd_mean"] == pytest.approx(2000.0) and c["kill_prob"] == pytest.approx(0.25)
    assert (c["pnl_ok"], c["dd_ok"], c["kill_ok"]) == (True, True, False)  # dd exactly on its budget passes
    assert c["pnl_margin"] == pytest.approx(150.0) and c["dd_margin"] == pytest.approx(0.0)
    assert c["kill_margin"] == pytest.approx(0.01 - 0.25)
    assert c["score"] == pytest.approx(150 - (0.5 * std + 0.5 * 2000 + 200 * 0.25))
    low, high = clopper_pearson(1, 4)
    # 1 kill in 4 runs cannot show a 1 % budget broken at 2.5 % error (Wilson said "violated")
    assert (c["kill_low"], c["kill_high"]) == pytest.approx((low, high)) and low < 0.01
    assert c["kill_verdict"] == "inconclusive" and c["kill_runs_needed"] == kill_plan(0.01)
    # 4 runs are below world_model.min_n (10): the means are not judged, and the mean drawdown sits on its budget
    assert c["dd_verdict"] == TOO_FEW and pd.isna(c["dd_runs_needed"])
    half = stats.t.ppf(0.975, 3) * std / 2
    assert (c["pnl_low"], c["pnl_high"]) == pytest.approx((150 - half, 150 + half))
    assert c["pnl_verdict"] == TOO_FEW
    # runs for 80 % power of the one-sided t test at the observed mean and spread (noncentral t), from min_n on
    needed = next(m for m in range(10, 1000)
                  if stats.nct.sf(stats.t.ppf(0.975, m - 1), m - 1, 150 / std * math.sqrt(m)) >= 0.8)
    assert c["pnl_runs_needed"] == needed
    assert c["dd_p95"] == pytest.approx(np.quantile([1500.0, 2500.0, 1000.0, 3000.0], 0.95))
    assert math.isinf(c["dd_p95_high"])  # 4 runs cannot bound the 95th percentile from above
    assert c["verdict"] == "inconclusive"

    b = table.loc["balanced"]
    bstd = statistics.stdev([10.0, 20.0])
    assert b["score"] == pytest.approx(15 - (0.3 * bstd + 0.3 * 200 + 100 * 0))
    assert (b["pnl_margin"], b["dd_margin"], b["kill_margin"]) == pytest.approx((15.0, 3800.0, 0.05))
    assert b["kill_verdict"] == "inconclusive" and b["kill_runs_needed"] == kill_plan(0.05)

    # the records: a parent tagged with the dataset (not with `dataset`, which marks research rows) and a child
    # per group carrying the same numbers; the printed table and verdicts.
    parent = table.attrs["run_id"]
    run = tracking_client(uri).get_run(parent)
    assert run.data.tags["paraphina.dataset"] == "hand" and "dataset" not in run.data.tags
    child = children_of(uri, parent)["conservative"]
    assert child.data.metrics["score"] == pytest.approx(c["score"]) and child.data.metrics["kill_ok"] == 0.0
    assert child.data.tags["kill_verdict"] == "inconclusive" and child.data.tags["tier"] == "conservative"
    assert load_dataset(uri, "hand").shape[0] == 6  # alignment runs did not join the dataset
    assert "kill_prob <= 0.01" in out and f"{needed}" in out


def test_exp11_filters_and_groups_by_label(uri):
    rows = research_rows({"conservative": CONSERVATIVE, "balanced": BALANCED})
    rows += research_rows({"balanced": [(40.0, 500.0, True)]}, label="exp13")
    record_dataset(uri, "mixed", rows)
    cfg = compose("exp11", uri, "dataset=mixed", "filter.profile=balanced", "filter.label_contains=day1",
                  "by_label=true")
    table = exp11.run(cfg)
    assert table["label"].tolist() == ["day1_balanced_r000", "day1_balanced_r001"]
    assert table["pnl_mean"].tolist() == [10.0, 20.0] and (table["runs"] == 1).all()
    assert table["dd_verdict"].tolist() == [TOO_FEW] * 2  # one run is below world_model.min_n
    assert table["dd_runs_needed"].isna().all()
    exp13_only = exp11.run(compose("exp11", uri, "dataset=mixed", "label_contains=exp13"))
    assert exp13_only[["profile", "runs", "kills"]].values.tolist() == [["balanced", 1, 1]]


def test_exp11_interval_edges_zero_all_kills_and_budget_on_the_boundary(uri, tmp_path, capsys):
    runs = {"conservative": [(0.0, 100.0, False)] * 5,     # 0 of 5 kills; pnl and dd constant, pnl on its budget
            "balanced": [(5.0, 10.0, True), (7.0, 20.0, False)],   # 1 of 2 with max_kill_prob 0.5: on the budget
            "aggressive": [(1.0, 1.0, True)] * 4}           # 4 of 4 kills
    rows = research_rows(runs)
    record_dataset(uri, "edges", rows)
    jsonl = tmp_path / "edges.jsonl"
    append_rows(jsonl, rows)
    tiers = "world_model.tiers.balanced.max_kill_prob=0.5"
    few = "world_model.min_n=2"  # judge the means of these few hand-made runs
    for dataset in ("edges", str(jsonl)):  # an MLflow dataset and the original JSONL file give the same checks
        command(exp11, uri, f"dataset={dataset}", tiers, few)
        out = capsys.readouterr().out
        table = exp11.run(compose("exp11", uri, f"dataset={dataset}", tiers, few)).set_index("profile")

        c = table.loc["conservative"]
        assert (c["kill_low"], c["kill_high"]) == pytest.approx((0.0, 1 - 0.025 ** (1 / 5)))
        assert c["kill_verdict"] == "inconclusive"
        assert c["kill_runs_needed"] == kill_plan(0.01)
        # zero width on the budget: neither side is shown strictly, so it stays undecided (the point check passes)
        assert (c["pnl_low"], c["pnl_high"], c["pnl_verdict"]) == (0.0, 0.0, "inconclusive")
        assert c["pnl_ok"] and c["pnl_margin"] == 0.0 and c["dd_verdict"] == "ok"

        a = table.loc["aggressive"]
        assert a["kill_low"] == pytest.approx(0.025 ** (1 / 4)) and a["kill_high"] == 1.0
        assert a["kill_verdict"] == "violated" and a["verdict"] == "violated"

        b = table.loc["balanced"]
        assert b["kill_prob"] == 0.5 and b["kill_ok"] and b["kill_margin"] == 0.0
        assert b["kill_verdict"] == "inconclusive" and b["kill_runs_needed"] == kill_plan(0.5)
        assert "kill_prob <= 0.5" in out and f"{kill_plan(0.01)}" in out


def test_exp11_bad_inputs_say_what_is_wrong(uri, capsys):
    record_dataset(uri, "hand", research_rows({"conservative": CONSERVATIVE, "mystery": BALANCED}))
    record_dataset(uri, "odd", research_rows({"mystery": BALANCED}))

    def error(*args: str) -> str:
        with pytest.raises(SystemExit) as exc:
            exp11.main([*args, f"tracking.uri={uri}"])
        assert exc.value.code == 2
        return capsys.readouterr().err

    missing = error("dataset=nope")
    assert "no dataset 'nope'" in missing and "hand, odd" in missing
    assert "needs dataset=NAME" in error()
    assert "profile 'mystery' has no risk tier" in error("dataset=hand", "filter.profile=mystery")
    assert "unknown profile 'mystery'; choose one of" in error("dataset=hand", "profile=mystery")
    assert "no run in dataset 'odd' has a profile with a risk tier" in error("dataset=odd")
    msg = error("dataset=hand", "profile=balanced")
    assert "no runs of profile 'balanced'" in msg and "profiles there: conservative, mystery" in msg
    assert "no label contains 'zzz' among the 4 run(s) of profile 'conservative'" in error(
        "dataset=hand", "profile=conservative", "label_contains=zzz")
    assert "no such dataset file" in error("dataset=missing/file.jsonl")
    # a profile without a tier among others is reported by name and skipped
    command(exp11, uri, "dataset=hand")
    assert "profile 'mystery' (2 run(s) in dataset 'hand') has no risk tier; skipped" in capsys.readouterr().out


def test_the_original_flags_are_aliases_of_the_typed_settings():
    cfg = compose_config(["dataset=X", "profile=balanced", "label_contains=exp13", "source_run=r1"], "exp11")
    assert (cfg.dataset, cfg.filter.profile, cfg.filter.label_contains, cfg.filter.source_run) == (
        "X", "balanced", "exp13", "r1")
    assert compose_config(["filter.profile=aggressive"], "exp11").filter.profile == "aggressive"
    assert compose_config([], "exp11").filter.profile is None
    cfg = compose_config(["ticks=1000", "runs_per_profile=1", "dataset=research_dataset_v004",
                          "profiles=[conservative,aggressive]", "target=decisive", "label_prefix=daily"], "exp13")
    assert (cfg.ticks, cfg.runs_per_profile, cfg.dataset) == (1000, 1, "research_dataset_v004")
    assert list(cfg.profiles) == ["conservative", "aggressive"]
    assert (cfg.target, cfg.label_prefix) == ("decisive", "daily")


# --- Exp12 -------------------------------------------------------------------------------------

PRESETS = {  # tier: band_base, mm_size_eta, vol_ref, daily_loss_limit, init_q_tao, delta_hard_limit_usd_base
    "conservative": (2.62125, 0.0466, 0.028125, 5000.0, 10.0, 46600.0),
    "balanced": (5.625, 0.1, 0.028125, 4000.0, -20.0, 100000.0),
    "aggressive": (4.86, 0.0864, 0.028125, 2000.0, 0.0, 86400.0),
}
KNOBS = ("band_base", "mm_size_eta", "vol_ref", "daily_loss_limit", "init_q_tao", "delta_hard_limit_usd_base")


def record_exp07(uri: str, metrics: dict[str, tuple[float, float, float, float]] | None = None) -> str:
    metrics = metrics or {t: (100.0, 50.0, 500.0, 0.0) for t in PRESETS}
    children = []
    for tier, values in PRESETS.items():
        pnl_mean, pnl_std, dd_mean, kill_prob = metrics[tier]
        children.append(RunRecord(name=f"preset-{tier}", tags={"tier": tier, "relaxed": "false"},
                                  params={k: str(v) for k, v in zip(KNOBS, values)},
                                  metrics={"pnl_mean": pnl_mean, "pnl_std": pnl_std, "dd_mean": dd_mean,
                                           "kill_prob": kill_prob, "score": 0.0}))
    return record_parent(uri, "exp07", children)


def exp11_child(tier: str, label: str, runs: int, kills: int, dd_mean: float) -> RunRecord:
    return RunRecord(name=f"{tier}-{label}", params={"profile": tier, "label": label, "tier": tier},
                     tags={"profile": tier, "tier": tier},
                     metrics={"runs": runs, "kills": kills, "dd_mean": dd_mean, "kill_prob": kills / runs})


def test_exp12_tunes_by_the_rule_with_loss_tightening_and_the_floor(uri, capsys, tmp_path):
    record_exp07(uri)
    record_parent(uri, "exp11", [
        exp11_child("conservative", "a", 10, 0, 2500.0),                  # dd ratio 1.25 -> scale 0.8
        exp11_child("balanced", "a", 3, 2, 1000.0),                       # pooled: 4 runs, 3 kills, dd 1250
        exp11_child("balanced", "b", 1, 1, 2000.0),                       # kill ratio 0.75/0.05 = 15 -> floor 0.1
    ])                                                                     # aggressive: no alignment record
    command(exp12, uri)
    out = capsys.readouterr().out
    tuned, report = exp12.run(compose("exp12", uri))
    tuned, report = tuned.set_index("tier"), report.set_index("tier")

    c = tuned.loc["conservative"]
    assert c["dd_ratio"] == pytest.approx(1.25) and c["kill_ratio"] == 0.0 and c["risk_scale"] == pytest.approx(0.8)
    assert c["band_base"] == pytest.approx(2.62125 * 0.8) and c["mm_size_eta"] == pytest.approx(0.0466 * 0.8)
    assert c["init_q_tao"] == pytest.approx(8.0) and c["delta_hard_limit_usd_base"] == pytest.approx(46600 * 0.8)
    assert c["daily_loss_limit"] == 2000.0  # 5000 > 1.10 x 2000: tightened to the drawdown budget
    assert c["vol_ref"] == 0.028125  # not an exposure knob
    assert report.loc["conservative", "loss_limit_tightened"]

    b = tuned.loc["balanced"]
    assert b["kill_ratio"] == pytest.approx(0.75 / 0.05) and b["dd_ratio"] == pytest.approx(1250 / 4000)
    assert b["risk_scale"] == 0.1  # 1/15 is below the floor
    assert b["band_base"] == pytest.approx(0.5625) and b["init_q_tao"] == pytest.approx(-2.0)
    assert b["delta_hard_limit_usd_base"] == pytest.approx(10000.0)
    assert b["daily_loss_limit"] == 4000.0  # within 1.10 x 4000: kept

    a = tuned.loc["aggressive"]
    assert a["risk_scale"] == 1.0 and math.isnan(a["dd_ratio"])
    assert [a[k] for k in KNOBS] == list(PRESETS["aggressive"])
    assert "no Exp11 alignment" in report.loc["aggressive", "note"]
    assert report.loc["conservative", "band_base_before"] == 2.62125
    assert report.loc["conservative", "band_base_after"] == pytest.approx(2.097)

    profile = OmegaConf.load(tmp_path / "sweeps" / "exp12" / "profile" / "conservative.yaml")
    assert profile.profile_name == "conservative" and profile.engine.risk.daily_loss_limit == 2000.0
    assert profile.engine.hedge.band_base == pytest.approx(2.097)
    assert (tmp_path / "sweeps" / "exp12" / "profile" / "conservative.yaml").read_text().startswith(
        "# @package _global_")
    assert (tmp_path / "sweeps" / "exp12" / "exp12_tuning_report.csv").exists()
    assert "daily_loss_limit" in out and "5,000 -> 2,000" in out and "risk_scale 0.8" in out


# --- Exp10 -------------------------------------------------------------------------------------


def exp08_child(profile: str, runs: list[tuple[float, float, bool]]) -> RunRecord:
    per_seed = pd.DataFrame({"seed": range(len(runs)), "band_base": 1.0, "final_pnl": [r[0] for r in runs],
                             "max_drawdown": [r[1] for r in runs], "kill_switch": [r[2] for r in runs]})
    return RunRecord(name=profile, tags={"profile": profile},
                     metrics={"runs": len(runs), "pnl_mean": float(per_seed["final_pnl"].mean())},
                     texts={"per_seed.csv": per_seed.to_csv(index=False)})


def test_exp10_design_vs_validation_and_a_tier_without_validation(uri, capsys):
    record_exp07(uri, {"conservative": (100.0, 40.0, 2500.0, 0.0), "balanced": (50.0, 10.0, 100.0, 0.1),
                       "aggressive": (-600.0, 10.0, 100.0, 0.1)})
    command(exp10, uri)  # exp08 never ran: every tier says so, no crash
    out = capsys.readouterr().out
    assert out.count("note: tier") == 3 and out.count("no validation records") == 6  # table and notes

    record_parent(uri, "exp08", [exp08_child("conservative", CONSERVATIVE),
                                 exp08_child("aggressive", [(10.0, 100.0, False), (30.0, 300.0, False)])])
    command(exp10, uri, "world_model.min_n=2")
    out = capsys.readouterr().out
    table = exp10.run(compose("exp10", uri, "world_model.min_n=2")).set_index("tier")

    c = table.loc["conservative"]
    assert (c["design_pnl_ok"], c["design_dd_ok"], c["design_kill_ok"]) == (True, False, True)
    assert c["design_dd_margin"] == -500.0 and c["design_score"] == pytest.approx(100 - (20 + 1250 + 0))
    std = math.sqrt(75000 / 3)
    assert (c["val_runs"], c["val_kill_prob"], c["val_dd_mean"]) == (4, 0.25, 2000.0)
    assert (c["val_pnl_ok"], c["val_dd_ok"], c["val_kill_ok"]) == (True, True, False)
    assert c["alignment_score"] == pytest.approx(150 - (0.5 * std + 0.5 * 2000 + 200 * 0.25))
    assert c["val_kill_verdict"] == "inconclusive" and c["status"] == "ok"
    # the winner's-curse gap, validation - design: pnl 150 - 100, drawdown 2000 - 2500, kill 0.25 - 0
    assert (c["gap_pnl_mean"], c["gap_dd_mean"], c["gap_kill_prob"]) == pytest.approx((50.0, -500.0, 0.25))

    b = table.loc["balanced"]
    assert b["status"] == "no validation records" and pd.isna(b["alignment_score"])
    assert b["design_kill_ok"] == False and b["design_kill_margin"] == pytest.approx(-0.05)  # noqa: E712

    a = table.loc["aggressive"]
    assert a["design_pnl_ok"] == False and a["val_pnl_ok"] == True  # noqa: E712
    assert a["val_pnl_verdict"] == "ok"  # t interval [20 +- 12.706 * 14.14 / 1.414] stays above -500
    assert a["val_kill_verdict"] == "inconclusive" and a["val_kill_runs_needed"] == kill_plan(0.15)
    assert "note: tier balanced: no validation records" in out and "kill_prob <= 0.15" in out


# --- Exp13 -------------------------------------------------------------------------------------


def test_exp13_minimal_command_end_to_end_then_exp12_from_its_alignment(uri, tmp_path, capsys):
    exp13.main(["ticks=50", "runs_per_profile=1", "dataset=research_dataset_v004", f"tracking.uri={uri}"])
    out = capsys.readouterr().out
    for part in ("=== Research summary (3 runs", "=== Exp11 alignment", "=== Exp13 end-to-end report",
                 "kill_prob <= budget", "conservative", "balanced", "aggressive"):
        assert part in out

    rows = load_dataset(uri, "research_dataset_v004")
    assert sorted(rows["label"]) == ["exp13_aggressive_r000", "exp13_balanced_r000", "exp13_conservative_r000"]
    assert (rows["num_ticks"] == 50).all()
    assert all(Path(p).exists() and Path(p).parent.parent == tmp_path / "sweeps" / "exp13" / "telemetry"
               for p in rows["telemetry_path"])
    conservative = rows.set_index("profile").loc["conservative"]
    shipped = compose_config(["+profile=conservative"], environ={}).engine
    assert conservative["band_base"] == shipped.hedge.band_base
    assert conservative["daily_loss_limit"] == shipped.risk.daily_loss_limit

    client = tracking_client(uri)
    parent = client.search_runs([client.get_experiment_by_name(NAMES["exp13"]).experiment_id],
                                "tags.`paraphina.kind` = 'experiment'")[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["paraphina.dataset"] == "research_dataset_v004"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"exp13_report.md", "tables"}
    report = Path(client.download_artifacts(parent.info.run_id, "exp13_report.md", str(tmp_path)))
    assert "| conservative | 1 |" in report.read_text()
    children = children_of(uri, parent.info.run_id)
    assert set(children) == set(rows["label"])
    assert [a.path for a in client.list_artifacts(children["exp13_balanced_r000"].info.run_id, "telemetry")] == [
        "telemetry/balanced_s0.jsonl.gz"]
    alignment_run = client.search_runs([client.get_experiment_by_name(NAMES["exp11"]).experiment_id],
                                       "tags.`paraphina.kind` = 'experiment'")[0]
    assert alignment_run.data.tags["paraphina.source_run"] == parent.info.run_id

    # the daily workflow: Exp12 tunes the Exp07 presets from the alignment Exp13 just recorded
    record_exp07(uri)
    tuned, _ = exp12.run(compose("exp12", uri))
    assert set(tuned["tier"]) == {"conservative", "balanced", "aggressive"}
    assert (tuned["runs"] == 1).all()


def test_exp13_records_a_profile_s_many_seeds_as_one_run_with_a_table(uri):
    args = ["ticks=40", "runs_per_profile=3", "profiles=[conservative,aggressive]", "dataset=tables",
            f"tracking.uri={uri}"]
    exp13.main([*args, "tracking.seed_children_below=3"])
    client = tracking_client(uri)
    runs = client.search_runs([client.get_experiment_by_name(NAMES["exp13"]).experiment_id], "tags.dataset = 'tables'")
    assert sorted(r.info.run_name for r in runs) == ["exp13_aggressive_r000-r002", "exp13_conservative_r000-r002"]
    assert {r.data.tags["paraphina.kind"] for r in runs} == {"research_table"}
    as_tables = load_dataset(uri, "tables")
    assert sorted(as_tables["label"]) == sorted(f"exp13_{p}_r{i:03d}" for p in ("aggressive", "conservative")
                                                for i in range(3))
    exp13.main(args)   # the same rows as child runs replace the tables' rows
    as_children = load_dataset(uri, "tables")
    kept = [c for c in as_tables.columns if c not in ("timestamp_utc", "telemetry_path")]
    pd.testing.assert_frame_equal(as_children[kept].sort_values("label").reset_index(drop=True),
                                  as_tables[kept].sort_values("label").reset_index(drop=True))


def test_exp13_decisive_stops_at_the_cap_and_overrides_reach_every_profile(uri, capsys):
    exp13.main(["ticks=30", "runs_per_profile=1", "profiles=[conservative,aggressive]", "target=decisive",
                "experiment.decisive.max_runs_per_profile=5", "experiment.decisive.looks=5", "seed=7",
                "engine.risk.daily_loss_limit=3500", "label_prefix=dec", "dataset=dec", f"tracking.uri={uri}"])
    out = capsys.readouterr().out
    rows = load_dataset(uri, "dec")
    counts = rows["profile"].value_counts().to_dict()
    assert set(counts) <= {"conservative", "aggressive"} and max(counts.values()) <= 5
    assert (rows["daily_loss_limit"] == 3500.0).all()  # the command's override reached every profile
    assert "target decisive" in out and "sequential plan ended at its last look" in out
    assert "inconclusive (plan ended)" in out and "needs ?" not in out   # 5 runs cannot show a 1 % budget kept
    plan = out.index("sequential kill-probability test against a 1 % budget: 5 looks")
    assert plan < out.index("round 1:")  # the plan is printed before any of its runs
    assert "look 1 of 5: conservative at 1 runs" in out
    assert sorted(rows.loc[rows["profile"] == "conservative", "label"])[:2] == ["dec_conservative_r000",
                                                                                 "dec_conservative_r001"]
    assert (rows["telemetry_path"].isna() != rows["label"].str.endswith("r000")).all()  # first round only


@pytest.mark.parametrize("args, message", [
    (["profiles=[conservative,nope]"], "profile(s) nope have no risk tier"),
    (["dataset=runs/research_dataset_v004.jsonl"], "looks like a file"),
    (["runs_per_profile=0"], "runs_per_profile=0 must be at least 1"),
    (["experiment.decisive.looks=0"], "experiment.decisive.looks=0 must be at least 1"),
    (["target=decisive", "runs_per_profile=200"], "past the sequential plan's last look for aggressive (145 runs)"),
    (["target=decisive", "experiment.decisive.power=1.5"], "power must be a number strictly between 0 and 1"),
    (["experiment.decisive.planned_fraction=1"], "planned_fraction=1.0 must lie strictly between 0 and 1"),
    (["experiment.decisive.spending=linear"], "spending='linear' is not one of obrien_fleming, pocock"),
    (["target=forever"], "expected one of [fixed, decisive]"),
    (["runs_per_profile=two"], "runs_per_profile"),
])
def test_exp13_bad_inputs_stop_before_running(uri, capsys, args, message):
    with pytest.raises(SystemExit):
        exp13.main(["ticks=10", *args, f"tracking.uri={uri}"])
    assert message in capsys.readouterr().err


def test_decisive_plans_fit_the_cap_and_a_stopped_kill_test_keeps_its_verdict(uri):
    cfg = compose("exp13", uri, "experiment.decisive.max_runs_per_profile=1000")
    plans = sequential_runs.plan_profiles(cfg, ["conservative", "aggressive"])
    # the aggressive tier's 15 % budget fits its power plan; the conservative 1 % needs more than 1000 runs,
    # so its looks are spread over the cap and its power falls short of 80 %, which the plan states
    assert plans["aggressive"].design.power >= 0.8 and plans["aggressive"].design.cap < 1000
    assert plans["conservative"].design.looks == (200, 400, 600, 800, 1000)
    assert plans["conservative"].design.power < 0.8
    nearer = sequential_runs.plan_profiles(compose("exp13", uri, "experiment.decisive.planned_fraction=0.7"), ["aggressive"])
    assert nearer["aggressive"].design.true_rate == pytest.approx(0.105)  # powered for 70 % of the 15 % budget
    assert nearer["aggressive"].design.power >= 0.8 and nearer["aggressive"].design.cap > 3 * plans["aggressive"].design.cap
    tier = alignment.load_tiers(cfg)["aggressive"]
    plan = plans["aggressive"]
    look = plan.design.looks[0]
    runs = sequential_runs.ProfileRuns([100.0] * look, [50.0] * look, [False] * look)
    plan.verdicts = {"kill": "ok", "dd": "inconclusive", "pnl": "inconclusive"}
    runs.kill_switch[:] = [True] * look  # kills after a stop: the stopped verdict stands
    assert sequential_runs.look_verdicts(cfg, plan, tier, runs) == {"kill": "ok", "dd": "ok", "pnl": "ok"}


def test_exp11_checks_every_profile_against_every_tier(uri, tmp_path, capsys):
    # conservative: 0 kills in 400 runs (exact upper bound 0.0092 < 1 %), steady PnL and drawdown;
    # aggressive: 12 kills in 60 (lower bound 0.107): beyond the conservative and balanced budgets, and
    # undecided against its own 15 %
    runs = {"conservative": [(100.0 + i % 3, 500.0 + i % 5, False) for i in range(400)],
            "aggressive": [(300.0 + i % 7, 1500.0 + i % 4, i % 5 == 0) for i in range(60)]}
    jsonl = tmp_path / "tiers.jsonl"
    append_rows(jsonl, research_rows(runs))
    command(exp11, uri, f"dataset={jsonl}")
    out = capsys.readouterr().out
    across = exp11.run(compose("exp11", uri, f"dataset={jsonl}")).attrs["cross_tiers"].set_index("profile")
    assert list(across.columns) == ["conservative", "balanced", "aggressive"]
    assert list(across.index) == ["conservative", "aggressive"]
    assert across.loc["conservative"].tolist() == ["ok", "ok", "ok"]
    assert across.loc["aggressive", "conservative"] == "violated!"   # a Holm alarm: the tiers discriminate
    assert across.loc["aggressive", "balanced"] == "violated!"
    assert across.loc["aggressive", "aggressive"] == "inconclusive"
    assert "every profile against every tier" in out


def test_exp11_notes_repeated_runs_and_mixed_lengths(uri, capsys):
    rows = research_rows({"balanced": BALANCED})
    longer = research_rows({"balanced": [(1.0, 1.0, False)]}, label="long")
    longer[0]["num_ticks"] = 2000
    again = [{**row, "timestamp_utc": "2025-01-02T00:00:00Z"} for row in rows]  # the same runs, recorded later
    record_dataset(uri, "twice", rows + again + longer)
    command(exp11, uri, "dataset=twice")
    out = capsys.readouterr().out
    assert "2 run(s) in dataset 'twice' repeat another run" in out
    assert "profile 'balanced' in dataset 'twice' mixes runs of 100, 2000 ticks" in out

    killed = research_rows({"conservative": [(1.0, 1.0, False), (-5.0, 9.0, True)]}, label="kill")
    killed[1]["num_ticks"] = 40  # the kill switch ended it at tick 40 of 100: the same horizon, not a mix
    record_dataset(uri, "killed", killed)
    command(exp11, uri, "dataset=killed")
    assert "mixes runs" not in capsys.readouterr().out


def test_exp10_and_exp12_name_the_missing_step(uri, capsys):
    def error(module) -> str:
        with pytest.raises(SystemExit):
            module.main([f"tracking.uri={uri}"])
        return capsys.readouterr().err

    assert "no finished exp07 records" in error(exp10) and "exp07 first" in error(exp12)
    record_exp07(uri)
    assert "no finished exp11 records" in error(exp12)


@pytest.mark.parametrize("value, budget, shown", [
    (0.0123456, "kill_prob <= 0.01", "0.012"), (1234.56, "dd_mean <= 5000", "1,234.6"),
    (math.inf, "dd_p95 <= 5000", "inf"), (-math.inf, "pnl_mean >= 0", "-inf"), (math.inf, "kill_prob <= 0.01", "inf"),
    (math.nan, "dd_mean <= 5000", "nan"),
])
def test_estimates_read_as_their_budget_does(value, budget, shown):
    assert alignment.estimate_text(value, budget) == shown
