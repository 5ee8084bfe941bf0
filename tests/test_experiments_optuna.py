"""Exp03 and Exp09 on Optuna against a temporary MLflow store and journal: grid, TPE, resume, constraints, errors.

Every test composes its own config with a SQLite store and an Optuna journal in tmp_path, few ticks and
two seeds, and sends sweeps/ output to tmp_path too.
"""
from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from conftest import compose_for_test, copy_store
from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.experiments import exp03, exp09, study
from paraphina.experiments.grid import Axis
from paraphina.experiments.records import ExperimentRecorder
from paraphina.experiments.sweep import run_sweep
from paraphina.runner.batch import run_batch

TINY_GRID = ("experiment.space.eta.values=[0.05,0.2]", "experiment.space.vol_ref.values=[0.0001,0.0002,0.0004]")


@pytest.fixture(autouse=True)
def tmp_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sweeps/ (and any default path) under tmp_path instead of the checkout."""
    monkeypatch.chdir(tmp_path)  # paths.root
    return tmp_path


@pytest.fixture
def store(tmp_path: Path, empty_store: Path) -> str:
    """The store `compose` records to, made already (a copy of the session's empty one)."""
    return copy_store(empty_store, tmp_path / "mlflow.db")


def compose(tmp_path: Path, config: str, *overrides: str):
    """The search's config with its store and study journal in tmp_path, unless `overrides` set them."""
    return compose_for_test(["ticks=60", "seeds=2", *overrides], config,
                            [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
                             f"experiment.study.storage={tmp_path}/optuna.journal"])


def load(tmp_path: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(JournalFileBackend(str(tmp_path / "optuna.journal")))
    return optuna.load_study(study_name=name, storage=storage)


def children(tmp_path: Path, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an experiment in the temporary store."""
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    kinds = [r.data.tags.get("paraphina.kind") for r in runs]
    return ([r for r, k in zip(runs, kinds) if k == "experiment"], [r for r, k in zip(runs, kinds) if k == "point"])


def test_default_exp03_space_is_the_16_point_grid(tmp_path: Path) -> None:
    search = study.Search.prepare(compose(tmp_path, "exp03"), [("balanced", "balanced")])
    assert search.sampler == "grid" and search.n_trials == 16
    assert [d.values for d in search.dims] == [(0.05, 0.1, 0.2, 0.4), (7.5e-5, 1.5e-4, 3.0e-4, 6.0e-4)]
    assert search.targets[0].study_name == "exp03-grid-60x2-balanced"


@pytest.mark.usefixtures("store")
def test_grid_sampler_reproduces_the_grid_sweep(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "exp03", *TINY_GRID, "experiment.batch_size=4")
    outcome = exp03.run(cfg)
    table = outcome.table
    expected = set(itertools.product([0.05, 0.2], [0.0001, 0.0002, 0.0004]))
    assert len(table) == 6 and set(zip(table["eta"], table["vol_ref"])) == expected
    assert sorted(table["trial"]) == list(range(6))
    # the same points run as a plain grid sweep give the same numbers (common seeds, per-run knobs)
    axes = [Axis(d.name, d.key, d.values) for d in outcome.search.dims]
    sweep = run_sweep(cfg, axes, None).set_index(["eta", "vol_ref"])
    for row in table.itertuples():
        assert row.pnl_mean == pytest.approx(sweep.loc[(row.eta, row.vol_ref), "pnl_mean"], rel=1e-12)
    parents, points = children(tmp_path, cfg.experiment.name)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(points) == 6
    best = outcome.studies[0].best.iloc[0]
    assert parents[0].info.run_name == "exp03-grid-60x2-balanced"
    assert {k: v for k, v in parents[0].data.metrics.items() if k.endswith(".balanced")} == {
        "trials.balanced": 6.0, "best_score.balanced": best["score"], "pnl_mean.balanced": best["pnl_mean"],
        "pnl_std.balanced": best["pnl_std"], "dd_mean.balanced": best["dd_mean"], "kill_prob.balanced": best["kill_prob"]}
    assert all(set(r.data.params) == {"engine.mm.size_eta", "engine.volatility.vol_ref"} for r in points)  # one name a knob
    assert {(float(r.data.params["engine.mm.size_eta"]), float(r.data.params["engine.volatility.vol_ref"]))
            for r in points} == expected
    assert (tmp_path / "sweeps" / "exp03" / "exp03_heatmap_pnl_mean.png").is_file()


@pytest.mark.usefixtures("store")
def test_tpe_runs_n_trials_and_refuses_changed_settings(tmp_path: Path) -> None:
    tpe = ("experiment.sampler=tpe", "experiment.n_trials=5", "experiment.batch_size=2")
    outcome = exp03.run(compose(tmp_path, "exp03", *tpe))
    assert len(outcome.table) == 5 and outcome.studies[0].target.study_name == "exp03-tpe-60x2-balanced"
    assert outcome.table["eta"].between(0.05, 0.4).all() and outcome.table["vol_ref"].between(7.5e-5, 6.0e-4).all()
    assert (tmp_path / "sweeps" / "exp03" / "exp03_tpe_pnl_mean.png").is_file()
    with pytest.raises(ParaphinaError, match="space.eta.high=0.4, this command gives 0.3") as error:
        exp03.run(compose(tmp_path, "exp03", *tpe, "experiment.space.eta.high=0.3"))
    assert "\n" not in str(error.value)


@pytest.mark.usefixtures("store")
def test_interrupted_study_resumes_without_loss_or_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    overrides = (*TINY_GRID, "experiment.batch_size=4", "experiment.study.heartbeat_interval=1",
                 "experiment.study.grace_period=2")
    cfg = compose(tmp_path, "exp03", *overrides)
    name = "exp03-grid-60x2-balanced"
    original = ExperimentRecorder.log_point
    logged = []

    def interrupt_at_third(self, *args, **kwargs):  # the 3rd trial is logged to MLflow, then Ctrl-C before its tell
        run_id = original(self, *args, **kwargs)
        logged.append(run_id)
        if len(logged) == 3:
            raise KeyboardInterrupt
        return run_id

    monkeypatch.setattr(ExperimentRecorder, "log_point", interrupt_at_third)
    with pytest.raises(KeyboardInterrupt) as stop:
        exp03.run(cfg)
    assert re.fullmatch("2 completed trials are saved in the studies exp03-grid-60x2-balanced; run the same "
                        "command again to resume", *stop.value.__notes__)
    monkeypatch.setattr(ExperimentRecorder, "log_point", original)
    first = load(tmp_path, name)
    states = {t.number: t.state for t in first.trials}
    assert states == {0: TrialState.COMPLETE, 1: TrialState.COMPLETE, 2: TrialState.FAIL, 3: TrialState.FAIL,
                      4: TrialState.WAITING, 5: TrialState.WAITING}
    kept = {t.number: t.params for t in first.trials if t.state == TrialState.COMPLETE}
    (parent,), points = children(tmp_path, cfg.experiment.name)
    assert parent.info.status == "KILLED" and len(points) == 3   # trial 2's child is an orphan until resumed
    # a process killed while asking leaves its trial RUNNING with no worker named (here the retry of trial 2,
    # asked and never told); the resumed run fails it and asks its knobs again
    killed = first.ask()
    for d in study.search_space(cfg.experiment.space, cfg, "grid"):
        d.suggest(killed)
    assert killed.number == 4 and killed.user_attrs[study.RETRY_ATTR] == 2

    outcome = exp03.run(compose(tmp_path, "exp03", *overrides))
    resumed = load(tmp_path, name)
    complete = [t for t in resumed.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and [t.number for t in complete][:2] == [0, 1]
    assert {t.number: t.params for t in complete[:2]} == kept
    assert set(tuple(sorted(t.params.items())) for t in complete) == {
        (("eta", e), ("vol_ref", v)) for e, v in itertools.product([0.05, 0.2], [0.0001, 0.0002, 0.0004])}
    assert not [t for t in resumed.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len(outcome.table) == 6
    (again,), points = children(tmp_path, cfg.experiment.name)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    numbers = sorted(int(r.data.tags[study.TRIAL_TAG]) for r in points)
    assert numbers == sorted(t.number for t in complete)   # one child per completed trial, none twice
    assert all(r.info.status == "FINISHED" for r in points)


@pytest.mark.usefixtures("store")
def test_a_grid_point_asked_in_part_when_the_worker_stopped_is_run_later(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a kill) after a grid trial's first knob is set leaves a running trial holding part of a point:
    the next run fails it and still runs every point of the grid, none twice."""
    overrides = (*TINY_GRID, "experiment.batch_size=2")
    suggest, knobs_set = study.Dimension.suggest, []

    def interrupt_at_the_fourth_knob(self: study.Dimension, trial):  # trial 1's second knob
        knobs_set.append(self.name)
        if len(knobs_set) == 4:
            raise KeyboardInterrupt
        return suggest(self, trial)

    monkeypatch.setattr(study.Dimension, "suggest", interrupt_at_the_fourth_knob)
    with pytest.raises(KeyboardInterrupt):
        exp03.run(compose(tmp_path, "exp03", *overrides))
    monkeypatch.setattr(study.Dimension, "suggest", suggest)
    partial = load(tmp_path, "exp03-grid-60x2-balanced").trials[1]
    assert partial.state == TrialState.RUNNING and list(partial.params) == ["eta"]

    exp03.run(compose(tmp_path, "exp03", *overrides))
    trials = load(tmp_path, "exp03-grid-60x2-balanced").trials
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert trials[1].state == TrialState.FAIL
    assert sorted(complete) == sorted((("eta", e), ("vol_ref", v))
                                      for e, v in itertools.product([0.05, 0.2], [0.0001, 0.0002, 0.0004]))


@pytest.mark.usefixtures("store")
def test_one_engine_batch_per_round_and_constraints_visible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = study.run_many

    def spy(cfg, seeds, per_run, desc, series=False):
        calls.append((len(seeds), dict(per_run)))
        return original(cfg, seeds, per_run, desc, series)

    monkeypatch.setattr(study, "run_many", spy)
    cfg = compose(tmp_path, "exp09", "experiment.profiles=[conservative,aggressive]", "experiment.n_trials=2",
                  "experiment.batch_size=2", "world_model.tiers.conservative.max_drawdown_abs=0.001")
    outcome = exp09.run(cfg)
    assert [n for n, _ in calls] == [2 * 2 * 2]   # 2 profiles x 2 trials x 2 seeds in ONE engine batch
    per_run = calls[0][1]
    limits = [compose(tmp_path, "exp09", f"+profile={p}").engine.risk.delta_hard_limit_usd_base
              for p in ("conservative", "aggressive")]
    assert list(per_run["engine.risk.delta_hard_limit_usd_base"]) == [limits[0]] * 4 + [limits[1]] * 4
    for profile in ("conservative", "aggressive"):
        trials = load(tmp_path, f"exp09-60x2-{profile}").get_trials(states=(TrialState.COMPLETE,))
        assert len(trials) == 2
        for t in trials:
            assert set(t.constraints) == {"kill_prob", "drawdown", "pnl"}
            assert "constraints:drawdown" in t.system_attrs
            assert (t.constraints["drawdown"] > 0) == (profile == "conservative")
    _, points = children(tmp_path, cfg.experiment.name)
    assert len(points) == 4
    for run in points:
        m, tags = run.data.metrics, run.data.tags
        infeasible = any(m[f"constraint_{k}"] > 0 for k in ("kill_prob", "drawdown", "pnl"))
        assert tags[study.FEASIBLE_TAG] == str(not infeasible).lower() and m["feasible"] == float(not infeasible)
        assert tags["profile"] == "conservative" or not m["constraint_drawdown"] > 0
    conservative = next(s for s in outcome.studies if s.target.profile == "conservative")
    assert "no trial met" in conservative.note


@pytest.mark.usefixtures("store")
def test_multi_objective_pareto_front(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "exp09", "experiment.profiles=[balanced]", "experiment.multi_objective=true",
                  "experiment.n_trials=4", "experiment.batch_size=4")
    outcome = exp09.run(cfg)
    s = load(tmp_path, "exp09-60x2-balanced-pareto")
    assert len(s.directions) == 3 and outcome.search.sampler == "nsga2"
    front = outcome.studies[0].best
    assert 1 <= len(front) <= 4 and len(outcome.studies[0].commands) == len(front)
    assert (tmp_path / "sweeps" / "exp09" / "exp09_pareto.png").is_file()


def test_a_profile_s_own_knobs_never_become_overrides_of_the_others(tmp_path: Path) -> None:
    # the centre under the name of a profile that sets knobs (as an installed balanced preset would): measured
    # against the centre, not against that profile, so no profile's knobs are forced back to the centre's
    centre = compose(tmp_path, "exp09", "profile_name=aggressive")
    assert study.run_overrides(centre) == ["ticks=60"]
    applied = compose(tmp_path, "exp09", "+profile=aggressive", "engine.mm.size_eta=0.07")
    assert sorted(study.run_overrides(applied)) == ["engine.mm.size_eta=0.07", "ticks=60"]   # relative to it


def test_a_knob_set_by_the_environment_is_an_override_of_the_trials(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial's rerun command, and the study's definition a resume must match, carry what PARAPHINA_* set."""
    monkeypatch.setenv("PARAPHINA_HEDGE_BAND_BASE", "7")
    cfg = compose_config([f"paths.root={tmp_path}", "ticks=60", "seeds=2"], "exp03")
    assert cfg.engine.hedge.band_base == 7.0
    search = study.Search.prepare(cfg, [("balanced", "balanced")])
    assert "engine.hedge.band_base=7.0" in search.targets[0].overrides
    assert "engine.hedge.band_base=7.0" in search.command(search.targets[0], {"eta": 0.1, "vol_ref": 1e-4})


@pytest.mark.usefixtures("store")
def test_trial_config_is_the_cli_config_and_the_command_reruns_it(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "exp03", "experiment.sampler=tpe", "experiment.n_trials=2", "experiment.batch_size=2",
                  "+profile=aggressive")
    outcome = exp03.run(cfg)
    search, (result,) = outcome.search, outcome.studies
    knobs = {d.name: float(result.best[d.name].iloc[0]) for d in search.dims}
    fast = study.with_overrides(result.target.base, search.knob_overrides(knobs))
    full = compose_config([*result.target.overrides, *search.knob_overrides(knobs)], environ={})
    assert fast == full
    command = result.commands[0].split()
    assert command[:4] == ["python", "-m", "paraphina.run", "+profile=aggressive"]
    rerun, _ = run_batch(compose_config(command[3:], environ={}))
    assert np.mean(rerun.metrics["final_pnl"]) == pytest.approx(result.best["pnl_mean"].iloc[0], rel=1e-12)


def test_a_search_range_below_a_knobs_sign_stops(tmp_path: Path) -> None:
    cfg = compose(tmp_path, "exp09", "experiment.space.loss_limit.low=-100")
    with pytest.raises(ParaphinaError) as error:
        study.search_space(cfg.experiment.space, cfg, "tpe")
    assert str(error.value) == ("experiment.space.loss_limit.low=-100.0 must be positive "
                                "(engine.risk.daily_loss_limit is the session loss in USD that fires the kill switch)")


@pytest.mark.parametrize("override, message", [
    ("experiment.space.eta.key=engine.mm.size_etaa", "not a numeric knob"),
    ("experiment.space.eta.hgih=0.5", "unknown config key"),
    ("experiment.space.eta.low=0.0x5", "bad value for 'experiment.space.eta.low'"),
    ("experiment.space.eta.key=engine.venues.names", "not a numeric knob"),
    ("experiment.sampler=tpee", "expected one of \\[grid, tpe, nsga2\\]"),
    ("experiment.seed=-1", "experiment.seed=-1 must be at least 0"),
])
def test_search_space_typo_stops_before_any_trial(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ParaphinaError, match=message) as error:
        exp03.run(compose(tmp_path, "exp03", override))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()
