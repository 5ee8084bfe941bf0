"""Exp02, Exp04, Exp05, Exp07, Exp08 and the Exp06 suite on tiny grids against temporary SQLite stores.

Each test checks what reached MLflow (parent and linked children, params and metrics equal to the
returned tables), not only what the function returned. CSV and PNG copies go to sweeps/ (git-ignored).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import DictConfig, OmegaConf

from conftest import compose_for_test, copy_store
from paraphina.config.loading import CONF_DIR, compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.experiments import exp02, exp04, exp05, exp06, exp07, exp08, exp10, exp11
from paraphina.experiments.cli import flat_config
from paraphina.core.names import PROFILE_KNOBS
from paraphina.experiments.profiles import profile_yaml, profiles_batch
from paraphina.experiments.records import ExperimentRecorder, latest_points, sweeps_dir
from paraphina.runner.batch import run_batch, run_many
from paraphina.tracking.runs import PARENT_TAG
from paraphina.tracking.store import tracking_client
from paraphina.world_model.tiers import tier_score, tiers_from_mapping

TINY = ["ticks=30", "seeds=2"]
GRIDS = {
    "exp02": ["experiment.grid.q0.values=[0,25]", "experiment.grid.band.values=[2.5,10]"],
    "exp04": ["experiment.grid.q0.values=[0,25]", "experiment.grid.loss_limit.values=[2000,4000]",
              "experiment.grid.band.values=[200]"],
}
METRICS = ["pnl_mean", "pnl_std", "dd_mean", "dd_worst", "kill_prob", "kill_prob_high", "frac_hard",
           "max_abs_delta_usd"]


@pytest.fixture(autouse=True)
def no_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """The original PARAPHINA_* variables would change every composed config; keep them out."""
    import os

    for name in [n for n in os.environ if n.startswith("PARAPHINA_")]:
        monkeypatch.delenv(name)


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def overrides(uri: str, *extra: str) -> list[str]:
    return [*TINY, f"tracking.uri={uri}", *extra]


def compose(name: str, uri: str, *extra: str) -> DictConfig:
    """The config of `overrides(uri, *extra)`."""
    return compose_for_test([*TINY, *extra], name, [f"tracking.uri={uri}"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> str:
    return copy_store(empty_store, tmp_path_factory.mktemp("mlruns") / "mlflow.db")


@pytest.fixture(scope="module")
def grids(store: str) -> dict[str, pd.DataFrame]:
    """Exp02 and Exp04 run once on 2 x 2 grids into the module's store (Exp05 and Exp07 read them)."""
    return {name: module.run(compose(name, store, *GRIDS[name]))
            for name, module in (("exp02", exp02), ("exp04", exp04))}


def assert_children_match(uri: str, experiment_id: str, table: pd.DataFrame, keys: dict[str, str]) -> pd.DataFrame:
    """The latest parent of `experiment_id` has one FINISHED child per table row, params and metrics equal; a
    child names a knob by its config key only (`keys`: the table's name of a knob -> its key)."""
    cfg = compose(experiment_id, uri)
    children, parent = latest_points(cfg, experiment_id)
    client = tracking_client(uri)
    assert client.get_run(parent["run_id"]).info.status == "FINISHED"
    assert len(children) == len(table)
    for run_id in children["run_id"]:
        run = client.get_run(run_id)
        assert run.data.tags[PARENT_TAG] == parent["run_id"] and run.info.status == "FINISHED"
        assert [a.path for a in client.list_artifacts(run_id)] == ["per_seed.csv"]
        assert set(keys.values()) <= set(run.data.params) and not set(keys) & set(run.data.params)
    merged = table.rename(columns=keys).merge(children, on=list(keys.values()), suffixes=("", "_recorded"))
    assert len(merged) == len(table)
    for column in METRICS:
        np.testing.assert_allclose(merged[f"{column}_recorded"], merged[column], rtol=1e-12, atol=1e-12)
    return children


def parent_artifacts(uri: str, run_id: str) -> set[str]:
    client = tracking_client(uri)
    return {f.path for folder in ("", "tables", "plots") for f in client.list_artifacts(run_id, folder or None)
            if not f.is_dir}


def test_multirun_jobs_of_an_experiment_keep_their_own_tables(tmp_path: Path, empty_store: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`exp02 -m seed=1,2`: both jobs wrote sweeps/exp02/exp02_hedge_band.csv, the second over the first."""
    monkeypatch.chdir(tmp_path)
    uri = copy_store(empty_store, tmp_path / "mlflow.db")
    exp02.main(["-m", "seed=1,2", *overrides(uri, *GRIDS["exp02"])])
    tables = sorted(tmp_path.glob("sweeps/multirun/*/*/exp02/exp02_hedge_band.csv"))
    assert [path.parent.parent.name for path in tables] == ["0", "1"]
    assert not pd.read_csv(tables[0]).equals(pd.read_csv(tables[1]))   # seeds 1 and 2


def test_exp02_records_points_and_heatmaps(store: str, grids: dict[str, pd.DataFrame]) -> None:
    table = grids["exp02"]
    assert sorted(zip(table["q0"], table["band"])) == [(0, 2.5), (0, 10), (25, 2.5), (25, 10)]
    assert_children_match(store, "exp02", table, {"q0": "engine.initial_q_tao", "band": "engine.hedge.band_base"})
    parent = latest_points(compose("exp02", store), "exp02")[1]["run_id"]
    run = tracking_client(store).get_run(parent)
    assert run.info.run_name == "exp02-grid-30x2"  # named by what it is
    assert {k: v for k, v in run.data.metrics.items() if k.startswith(("pnl_mean.", "kill_prob."))} == {
        "pnl_mean.min": table["pnl_mean"].min(), "pnl_mean.max": table["pnl_mean"].max(),
        "kill_prob.min": table["kill_prob"].min(), "kill_prob.max": table["kill_prob"].max()}
    assert parent_artifacts(store, parent) >= {"config.yaml", "tables/exp02_hedge_band.csv",
                                               "plots/exp02_heatmap_pnl_mean.png", "plots/exp02_heatmap_dd_mean.png"}
    out = sweeps_dir(compose("exp02", store))
    assert (out / "exp02_heatmap_pnl_mean.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_exp04_records_points(store: str, grids: dict[str, pd.DataFrame]) -> None:
    keys = {"q0": "engine.initial_q_tao", "loss_limit": "engine.risk.daily_loss_limit", "band": "engine.hedge.band_base"}
    assert_children_match(store, "exp04", grids["exp04"], keys)


def test_exp05_ranks_latest_records_by_tier_score(store: str, grids: dict[str, pd.DataFrame],
                                                  capsys: pytest.CaptureFixture) -> None:
    cfg = compose("exp05", store, "experiment.top_n=3")
    top = exp05.run(cfg)
    assert "exp03: left out of the report: no finished exp03 records" in capsys.readouterr().out
    assert list(top) == ["exp02", "exp04"]
    tier = tiers_from_mapping(cfg.world_model.tiers)["balanced"]
    for name, table in top.items():
        source = grids[name]
        scores = np.sort(tier_score(tier, source["pnl_mean"], source["pnl_std"], source["dd_mean"],
                                    source["kill_prob"]).to_numpy())[::-1][:3]
        np.testing.assert_allclose(table["score"], scores, rtol=1e-12)
        assert list(table["rank"]) == [1, 2, 3]
    client = tracking_client(store)
    report = client.search_runs([client.get_experiment_by_name(cfg.experiment.name).experiment_id])[0]
    assert report.info.status == "FINISHED" and report.data.tags["tier"] == "balanced"
    exp02_parent = latest_points(cfg, "exp02")[1]["run_id"]
    assert report.data.tags["source.exp02"] == exp02_parent
    assert parent_artifacts(store, report.info.run_id) >= {"tables/exp05_top.csv", "tables/exp05_exp02_ranked.csv",
                                                           "tables/exp05_exp04_ranked.csv"}


def test_exp07_on_the_exp04_grid(store: str, grids: dict[str, pd.DataFrame]) -> None:
    cfg = compose("exp07", store)
    presets = exp07.run(cfg)
    assert list(presets["tier"]) == ["conservative", "balanced", "aggressive"]
    children, _ = latest_points(cfg, "exp07")
    assert sorted(children["run_name"]) == ["preset-aggressive", "preset-balanced", "preset-conservative"]
    for row in presets.itertuples():
        child = children[children["run_name"] == f"preset-{row.tier}"].iloc[0]
        assert child["score"] == pytest.approx(row.score)
        assert all(child[knob] == getattr(row, knob) for knob in PROFILE_KNOBS)


def test_exp10_says_when_validation_reuses_the_design_seeds(made_store: str, capsys) -> None:
    uri = made_store
    exp04.run(compose("exp04", uri, *GRIDS["exp04"]))   # design seeds 0, 1
    exp07.run(compose("exp07", uri))
    reused = overrides(uri, "experiment.seed_offset=1")   # seeds 1, 2: seed 1 was a design seed
    exp08.run(compose_config(reused, "exp08"), reused)
    table = exp10.run(compose("exp10", uri)).set_index("tier")
    assert (table["status"] == exp10.SEED_OVERLAP).all()
    fresh = overrides(uri)   # the default offset: seeds 1000000, 1000001
    exp08.run(compose_config(fresh, "exp08"), fresh)
    assert (exp10.run(compose("exp10", uri))["status"] == "ok").all()


def test_exp08_validates_profiles_in_one_batch(store: str) -> None:
    given = overrides(store)
    cfg = compose_config(given, "exp08")
    table = exp08.run(cfg, given)
    assert list(table["profile"]) == ["conservative", "balanced", "aggressive"]
    assert (table["runs"] == 2).all()
    children = assert_children_match(store, "exp08", table, {knob: PROFILE_KNOBS[knob] for knob in
                                                            ("band_base", "mm_size_eta", "daily_loss_limit")})
    client = tracking_client(store)
    for row in children.itertuples():
        assert client.get_run(row.run_id).data.tags["profile"] == row.run_name
    parent = client.get_run(latest_points(cfg, "exp08")[1]["run_id"])
    assert parent.info.run_name == "exp08-profiles-30x2"
    by_profile = table.set_index("profile")
    assert {k: v for k, v in parent.data.metrics.items() if k.startswith("dd_mean.")} == {
        f"dd_mean.{p}": by_profile.loc[p, "dd_mean"] for p in ("conservative", "balanced", "aggressive")}
    conservative = children[children["run_name"] == "conservative"].iloc[0]
    shipped = compose_config(["+profile=conservative"], environ={}).engine
    assert conservative["engine.hedge.band_base"] == shipped.hedge.band_base
    assert conservative["engine.risk.delta_hard_limit_usd_base"] == shipped.risk.delta_hard_limit_usd_base
    # fresh seeds: the batch starts at seed + experiment.seed_offset, apart from the design seeds, and says so
    parent = client.get_run(client.get_run(conservative["run_id"]).data.tags[PARENT_TAG])
    assert (parent.data.tags["paraphina.seed_offset"], parent.data.tags["first_seed"]) == ("1000000", "1000000")
    fresh = profiles_batch(["conservative"], given, "exp08", seeds=2, base_seed=1_000_000).run("fresh seeds")
    assert table.loc[0, "pnl_mean"] == pytest.approx(float(np.mean(fresh.metrics["final_pnl"])), rel=1e-12)
    design = profiles_batch(["conservative"], given, "exp08", seeds=2, base_seed=0).run("design seeds")
    assert float(np.mean(design.metrics["final_pnl"])) != pytest.approx(table.loc[0, "pnl_mean"])


def test_exp08_decisive_runs_each_profile_through_its_plan_on_fresh_seeds(store: str, capsys) -> None:
    given = overrides(store, "target=decisive", "experiment.profiles=[conservative,aggressive]",
                      "experiment.decisive.max_runs_per_profile=6", "experiment.decisive.looks=3")
    table = exp08.run(compose_config(given, "exp08"), given).set_index("profile")
    out = capsys.readouterr().out
    assert "sequential kill-probability test against a 1 % budget: 3 looks" in out
    assert set(table["runs"]) <= {2, 4, 6}   # a profile stops at one of its looks
    for profile, row in table.iterrows():
        assert row["kill_verdict"] in ("ok", "violated", "inconclusive")
        # its runs are the seeds 1000000, 1000001, ... of that profile alone, as one batch gives them
        alone = profiles_batch([profile], given, "exp08", seeds=int(row["runs"]), base_seed=1_000_000).run("alone")
        assert row["pnl_mean"] == pytest.approx(float(np.mean(alone.metrics["final_pnl"])), rel=1e-12)
    children = assert_children_match(store, "exp08", table.reset_index(), {"band_base": PROFILE_KNOBS["band_base"]})
    client = tracking_client(store)
    tags = client.get_run(children[children["run_name"] == "aggressive"].iloc[0]["run_id"]).data.tags
    assert tags["kill_verdict"] == table.loc["aggressive", "kill_verdict"]
    bad = overrides(store, "target=decisive", "experiment.profiles=[original_balanced]")
    with pytest.raises(ParaphinaError, match="original_balanced have no risk tier to plan against"):
        exp08.run(compose_config(bad, "exp08"), bad)


def test_profiles_batch_equals_separate_runs() -> None:
    given = ["ticks=40", "seeds=3"]
    batch = profiles_batch(["conservative", "aggressive"], given, "exp08")
    assert "engine.hedge.band_base" in batch.per_run and "engine.volatility.vol_ref" not in batch.per_run
    assert batch.run_profiles() == ["conservative"] * 3 + ["aggressive"] * 3
    together = run_many(batch.cfg, batch.seeds, batch.per_run, desc="test")
    for name in batch.profiles:
        alone, _ = run_batch(batch.configs[name].copy(), seeds=batch.seeds[batch.rows(name)])
        np.testing.assert_allclose(together.metrics["final_pnl"][batch.rows(name)], alone.metrics["final_pnl"],
                                   rtol=1e-9)
    with pytest.raises(ParaphinaError, match="unknown profile 'nope'"):
        profiles_batch(["balanced", "nope"], given)


def record_exp04_points(uri: str, points: dict[str, tuple[float, float, float, float, float, float]],
                        *extra: str) -> None:
    """A finished Exp04 invocation by hand: name -> (q0, loss_limit, pnl_mean, pnl_std, dd_mean, kill_prob)."""
    cfg = compose("exp04", uri, *extra)
    with ExperimentRecorder(cfg) as recorder:
        for name, (q0, loss, pnl_mean, pnl_std, dd_mean, kill_prob) in points.items():
            recorder.log_point(name, {"engine.initial_q_tao": q0, "engine.risk.daily_loss_limit": loss,
                                      "q0": q0, "loss_limit": loss},
                               {"pnl_mean": pnl_mean, "pnl_std": pnl_std, "dd_mean": dd_mean, "kill_prob": kill_prob})
        recorder.finish()


def test_exp07_envelope_keeps_presets_within_the_regime_fractions(made_store: str, capsys) -> None:
    uri = made_store
    record_exp04_points(uri, {"A": (0, 2000, 100, 50, 500, 0.0)})
    with pytest.raises(ParaphinaError, match="lack metric.s. frac_normal, frac_warning, frac_hard"):
        exp07.run(compose("exp07", uri, "experiment.envelope=true"))
    time.sleep(0.01)
    cfg = compose("exp04", uri)
    with ExperimentRecorder(cfg) as recorder:   # sweeps a non-profile knob
        for name, sigma in (("lo", 2e-5), ("hi", 1e-3)):
            recorder.log_point(name, {"engine.volatility.sigma_min": sigma},
                               {"pnl_mean": 1.0, "pnl_std": 1.0, "dd_mean": 1.0, "kill_prob": 0.0})
        recorder.finish()
    with pytest.raises(ParaphinaError, match="varies engine.volatility.sigma_min, which a profile does not set"):
        exp07.run(compose("exp07", uri))
    time.sleep(0.01)
    with ExperimentRecorder(cfg) as recorder:
        for name, q0, pnl, warning in (("calm", 0, 900.0, 0.05), ("busy", 25, 1000.0, 0.30)):
            recorder.log_point(name, {"engine.initial_q_tao": q0, "q0": q0},
                               {"pnl_mean": pnl, "pnl_std": 10.0, "dd_mean": 100.0, "kill_prob": 0.0,
                                "frac_normal": 0.94 - warning, "frac_warning": warning, "frac_hard": 0.01})
        recorder.finish()
    best = exp07.run(compose("exp07", uri)).set_index("tier")["source_run"]
    assert set(best) == {"busy"}                                    # the best score everywhere ...
    inside = exp07.run(compose("exp07", uri, "experiment.envelope=true")).set_index("tier")
    assert set(inside["source_run"]) == {"calm"} and inside["in_envelope"].all()   # ... is in Warning 30 % of a day
    assert ("note: tiers conservative, balanced, aggressive share the preset calm: on this grid the tiers allowing "
            "more risk gain no score from it") in capsys.readouterr().err


def test_exp07_picks_the_presets_budgets_and_score_imply(made_store: str, capsys: pytest.CaptureFixture) -> None:
    uri = made_store
    record_exp04_points(uri, {"old": (0, 9000, 1e6, 1.0, 1.0, 0.0)})  # an older invocation: must be ignored
    time.sleep(0.01)
    record_exp04_points(uri, {
        "A": (0, 2000, 100, 50, 1500, 0.04),     # balanced: passes, score -369
        "B": (25, 4000, 600, 100, 3000, 0.10),   # aggressive only: score 285 (best there)
        "C": (-25, 2000, 50, 10, 500, 0.02),     # fails only conservative's kill budget: closest, score -209
        "D": (50, 8000, -1000, 500, 9000, 0.5),  # fails everything
        "E": (-50, 6000, 200, 20, 800, 0.03),    # balanced: passes, score -49 (best there)
    }, "engine.hedge.band_base=3.5", "engine.mm.size_eta=0.07")
    cfg = compose("exp07", uri, "experiment.kill_headroom=1")   # the budgets themselves
    presets = exp07.run(cfg).set_index("tier")
    assert presets["source_run"].to_dict() == {"conservative": "C", "balanced": "E", "aggressive": "B"}
    assert presets["relaxed"].to_dict() == {"conservative": True, "balanced": False, "aggressive": False}
    np.testing.assert_allclose(presets["score"].to_numpy(), [-209.0, -49.0, 285.0])
    assert presets.loc["conservative", "kill_margin"] == pytest.approx(-0.01)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'conservative'" in warnings[0] and "kill_prob" in warnings[0]

    children, _ = latest_points(cfg, "exp07")
    client = tracking_client(uri)
    child = children[children["run_name"] == "preset-conservative"].iloc[0]
    assert client.get_run(child["run_id"]).data.tags["relaxed"] == "true"
    centre = compose_config([], environ={}).engine
    expected = {"band_base": 3.5, "mm_size_eta": 0.07, "vol_ref": centre.volatility.vol_ref,
                "daily_loss_limit": 2000.0, "init_q_tao": -25.0,
                "delta_hard_limit_usd_base": centre.risk.delta_hard_limit_usd_base}
    assert {k: child[k] for k in PROFILE_KNOBS} == expected
    assert child["score"] == pytest.approx(-209.0) and child["dd_margin"] == pytest.approx(1500.0)

    written = (sweeps_dir(cfg) / "conservative.yaml").read_text()
    assert written.startswith("# @package _global_\n")
    profile = OmegaConf.load(sweeps_dir(cfg) / "conservative.yaml")
    shipped = OmegaConf.load(CONF_DIR / "profile" / "conservative.yaml")
    assert set(flat_config(profile)) == set(flat_config(shipped))  # the same keys: it can replace the profile
    assert profile.profile_name == "conservative" and profile.engine.initial_q_tao == -25.0
    assert written == profile_yaml("conservative", expected, written.splitlines()[1][2:])


def test_exp07_installs_presets_as_live_profiles_all_or_none(tmp_path: Path, made_store: str) -> None:
    uri, live = made_store, tmp_path / "profile"
    live.mkdir()
    (live / "balanced.yaml").write_text("# the old live profile\n")
    points = {"A": (0, 2000, 100, 50, 1500, 0.04), "B": (25, 4000, 600, 100, 3000, 0.10),
              "C": (-25, 2000, 50, 10, 500, 0.02)}  # conservative has no point within budgets: relaxed
    record_exp04_points(uri, points)
    install = ["experiment.install=true", f"experiment.install_dir={live}"]
    with pytest.raises(ParaphinaError, match=r"not installed: the preset of tier\(s\) conservative is relaxed"):
        exp07.run(compose("exp07", uri, *install))
    assert sorted(p.name for p in live.iterdir()) == ["balanced.yaml"]  # nothing written, not even balanced
    assert (live / "balanced.yaml").read_text() == "# the old live profile\n"

    time.sleep(0.01)
    record_exp04_points(uri, {**points, "C": (-25, 2000, 50, 10, 500, 0.0)})  # now within conservative's
    cfg = compose("exp07", uri, *install)
    exp07.run(cfg)
    assert sorted(p.name for p in live.iterdir()) == ["aggressive.yaml", "balanced.yaml", "conservative.yaml"]
    for tier in ("conservative", "balanced", "aggressive"):
        assert (live / f"{tier}.yaml").read_text() == (sweeps_dir(cfg) / f"{tier}.yaml").read_text()
    assert OmegaConf.load(live / "conservative.yaml").engine.initial_q_tao == -25.0


def test_grid_typo_stops_before_anything_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    uri = sqlite_uri(tmp_path)
    for bad, named in (("experiment.grid.q0.valuez=[1]", "unknown config key 'experiment.grid.q0.valuez'"),
                       ("experiment.grid.q0.key=engine.initial_q_taoo", "'engine.initial_q_taoo', which is not"),
                       ("experiment.grid.q0.key=market.vol_scale", "experiment.grid.q0.values=[-50.0, -25.0, 0.0, "
                        "25.0, 50.0] must not be negative (market.vol_scale is the factor")):
        with pytest.raises(SystemExit) as stop:
            exp02.main(overrides(uri, bad))
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and named in err[0]
    assert not (tmp_path / "mlflow.db").exists()


def test_an_appended_axis_sweeps_its_key(tmp_path: Path, made_store: str,
                                        capsys: pytest.CaptureFixture) -> None:
    uri = made_store
    axis = "+experiment.grid.delta={key: engine.risk.delta_hard_limit_usd_base, values: [40000, 90000]}"
    table = exp04.run(compose("exp04", uri, *GRIDS["exp04"], axis))
    assert len(table) == 2 * 2 * 1 * 2 and sorted(set(table["delta"])) == [40000.0, 90000.0]
    points, _ = latest_points(compose("exp04", uri), "exp04")
    assert sorted(set(points["engine.risk.delta_hard_limit_usd_base"].astype(float))) == [40000.0, 90000.0]
    capsys.readouterr()   # the sweep's own progress bar, drawn when it runs past the bar's delay
    for bad, named in (("+experiment.grid.eta={key: engine.mm.size_eta}", "grid axis 'eta' must be {key: "),
                       ("+experiment.grid.eta={key: engine.mm.size_eta, values: [fast]}", "values must be finite numbers"),
                       ("+experiment.grid.eta={key: engine.mm.size_etaa, values: [1]}", "'engine.mm.size_etaa', which"),
                       ("+engine.mm.size_etaa=1", "only '+profile=...' and '+experiment.grid.NAME="),
                       ("+experiment.grid.b={key: engine.hedge.band_base, values: [1]}",
                        "grid axes 'band' and 'b' both set engine.hedge.band_base; keep one"),
                       ("+experiment.grid.s={key: seed, values: [1]}", "must name an engine or market knob"),
                       ("+experiment.grid.m={key: engine.mm, values: [1]}", "engine.mm is not a numeric knob"),
                       ("+experiment.grid.e={key: engine.mm.size_eta, values: 3}", "values=3 must be a list"),
                       ("+experiment.grid.e={key: engine.mm.size_eta, values: [nan]}",
                        "experiment.grid.e.values[0]=nan must be a finite number")):
        # the error the command line prints in one line (cli_errors: test_cli), without a Hydra app run per case
        with pytest.raises(ParaphinaError) as error:
            exp04.run(compose("exp04", sqlite_uri(tmp_path / "bad"), bad))
        assert "\n" not in str(error.value) and named in str(error.value), error.value
    with pytest.raises(SystemExit) as stop:   # and one of them from the command line
        exp04.main(overrides(sqlite_uri(tmp_path / "bad"), "+experiment.grid.e={key: engine.mm.size_eta, values: 3}"))
    assert stop.value.code == 2 and capsys.readouterr().err.strip().count("\n") == 0
    assert not (tmp_path / "bad").exists()   # stopped before the store was touched
    with pytest.raises(SystemExit):
        exp08.main(overrides(sqlite_uri(tmp_path / "bad"), axis))
    assert "this command sweeps no grid" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        exp07.main(overrides(sqlite_uri(tmp_path / "bad"), "experiment.kill_headroom=2"))
    assert "experiment.kill_headroom=2.0 must lie in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("bad, message", [
    ("dry_run=perhaps", "error: bad value for 'dry_run': 'perhaps' is not true or false (dry_run=true or "
                        "dry_run=false)"),
    ("seeds=two", "error: bad value for 'seeds': 'two' is not a whole number"),
    ("tracking.enabled=maybe", "error: bad value for 'tracking.enabled': 'maybe' is not true or false "
                               "(tracking.enabled=true or tracking.enabled=false)"),
])
def test_exp06_wrong_types_are_one_line_and_run_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                         bad: str, message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        exp06.main(overrides(sqlite_uri(tmp_path), bad))
    assert stop.value.code == 2
    assert capsys.readouterr().err == message + "\n"
    assert not (tmp_path / "mlflow.db").exists()


def test_exp06_dry_run_plans_and_runs_nothing(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path)
    given = overrides(uri, "dry_run=true", "skip=[exp03]",
                      "experiment.suite.exp05.entry=paraphina.experiments.no_such_step:run")
    plan = exp06.run(compose_config(given, "exp06"), given).set_index("step")
    assert plan["status"].to_dict() == {"baseline": "planned", "exp02": "planned", "exp03": "skipped",
                                        "exp04": "planned", "exp05": "invalid", "exp07": "planned",
                                        "exp08": "planned"}
    assert "cannot import paraphina.experiments.no_such_step" in plan.loc["exp05", "error"]
    assert plan.loc["exp02", "ticks"] == 30 and plan.loc["exp08", "seeds"] == 2
    assert not (tmp_path / "mlflow.db").exists()


def test_exp06_unknown_step_lists_valid_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for bad in ("steps=[exp02,exp99]", "skip=[baseline,nope]"):
        with pytest.raises(SystemExit) as stop:
            exp06.main(overrides(sqlite_uri(tmp_path), bad))
        assert stop.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "valid steps: baseline, exp02, exp03, exp04, exp05, exp07, exp08" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_exp06_failed_step_is_reported_and_the_rest_run(made_store: str, capsys: pytest.CaptureFixture) -> None:
    uri = made_store
    given = overrides(uri, "steps=[baseline,exp02,exp04,exp08]", "skip=[baseline]",
                      'experiment.suite.exp02.overrides=["experiment.grid.q0.values=[0]"]',
                      'experiment.suite.exp04.overrides=["experiment.grid.q0.valuez=[1]"]')
    with pytest.raises(SystemExit) as stop:
        exp06.main(given)
    assert stop.value.code == 1
    out, err = capsys.readouterr()
    status = {line.split()[0]: line.split()[1] for line in out.split("Exp06 status")[1].strip().splitlines()[1:]}
    assert status == {"baseline": "skipped", "exp02": "ok", "exp03": "skipped", "exp04": "failed",
                      "exp05": "skipped", "exp07": "skipped", "exp08": "ok"}
    assert "unknown config key 'experiment.grid.q0.valuez'" in out
    assert err.strip().splitlines()[-1] == "error: 1 step(s) failed: exp04"

    cfg = compose("exp06", uri)
    assert len(latest_points(cfg, "exp02")[0]) == 5 and len(latest_points(cfg, "exp08")[0]) == 3
    with pytest.raises(ParaphinaError, match="no finished exp04 records"):
        latest_points(cfg, "exp04")
    suite = latest_points(cfg, "exp06")[1]["run_id"]
    assert "tables/exp06_status.csv" in parent_artifacts(uri, suite)


def test_steps_that_read_records_make_no_store_where_there_is_none(tmp_path: Path) -> None:
    """Exp07 before Exp04, or Exp11 on a dataset, in a fresh folder: the one-line error, and no new store (an
    MLflow client makes its database, printing its INFO lines, as soon as it opens one)."""
    uri = sqlite_uri(tmp_path / "store")
    with pytest.raises(ParaphinaError, match="no finished exp04 records .* run python -m paraphina.experiments.exp04"):
        exp07.run(compose("exp07", uri))
    with pytest.raises(ParaphinaError, match="no dataset 'nope' .* datasets there: none yet"):
        exp11.run(compose("exp11", uri, "dataset=nope"))
    assert not (tmp_path / "store").exists()
