"""Optuna searches (Exp03, Exp09): trials asked in rounds, a round of every study ONE engine batch (the engine is
vectorised over runs); the studies' shared storage lets a rerun resume them and more processes join as workers."""
from __future__ import annotations

import copy
import itertools
import math
import os
import re
import shlex
import socket
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import optuna
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial, TrialState
from tqdm import tqdm

from paraphina.config.loading import (CONF_DIR, check_knob, compose_config, explain_hydra_error, override_parser,
                                      set_values, validate)
from paraphina.core.errors import ParaphinaError
from paraphina.experiments import grid
from paraphina.experiments.cli import first_difference, flat_config, print_table
from paraphina.experiments.profiles import profiles_batch
from paraphina.experiments.records import (ExperimentRecorder, parent_metrics, per_seed_table, point_summaries,
                                           store_uri, sweeps_dir)
from paraphina.core.names import COMMAND_TAG, FEASIBLE_TAG, PARENT_TAG, STUDY_TAG, STUDY_UIDS_TAG, TRIAL_TAG
from paraphina.tracking.runs import flatten_params
from paraphina.tracking.store import all_runs, describe, sqlite_path, tracking_client
from paraphina.runner.batch import run_many
from paraphina.tracking.studies import Heartbeat, SharedStorage, TrialBeats, open_shared_storage, quiet_heartbeat
from paraphina.world_model.tiers import RiskTier, budget_margins, tier_score, tiers_from_mapping

UID_ATTR = "paraphina.uid"
DEFINITION_ATTR = "paraphina.definition"
RESULT_ATTR = "paraphina.result"
RETRY_ATTR = "retry_of"
WORKER_ATTR = "worker"                  # host:pid of the worker that asked a trial
WORKERS_ATTR = "paraphina.workers"      # how many workers have joined a study (each one's sampler stream)
RUN_COMMAND = "python -m paraphina.run"


@dataclass(frozen=True)
class Dimension:
    """One searched knob: its name, the config key it sets, its range, and its values for the grid sampler."""

    name: str
    key: str
    low: float
    high: float
    log: bool
    values: tuple[float, ...]

    def suggest(self, trial: Trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


# What a trial tells Optuna: summary columns and their directions.
SCORE = {"score": "maximize"}
PARETO = {"pnl_mean": "maximize", "dd_mean": "minimize", "kill_prob": "minimize"}


@dataclass
class Target:
    """One study of a search: a profile's config (the base of its trials) and the tier that judges it."""

    profile: str
    tier: RiskTier
    study_name: str
    overrides: list[str]          # `python -m paraphina.run` overrides composing `base`
    base: DictConfig
    # `base` with the latest trial's knobs applied: every trial sets the same keys, so a trial's config is had
    # by applying its overrides here, without copying `base` (~7 ms) for each trial.
    work: DictConfig


@dataclass
class Asked:
    """A trial of the current round, until it is told."""

    target: Target
    study: optuna.Study
    trial: Trial
    knobs: dict[str, float]
    told: bool = False


@dataclass
class StudyOutcome:
    target: Target
    table: pd.DataFrame           # completed trials: knobs, objective, aggregates, constraints
    best: pd.DataFrame            # the best trial, or the Pareto front (best PnL first)
    commands: list[str]           # the rerun command of the first `show_top` rows of `best`
    note: str                     # why `best` may not meet the budgets


@dataclass
class SearchOutcome:
    search: Search
    studies: list[StudyOutcome]
    storage: str

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([s.table for s in self.studies], ignore_index=True)


# --- settings -----------------------------------------------------------------------------------


def search_space(space: Mapping, cfg: DictConfig, sampler: str) -> list[Dimension]:
    """The dimensions of `experiment.space` (`name: {key, low, high, log, values}`), each checked against cfg."""
    if not space:
        raise ParaphinaError("experiment.space is empty; give at least one knob to search")
    dims = []
    for name, spec in space.items():
        where = f"experiment.space.{name}"
        grid.check_numeric_knob(cfg, spec.key, where)
        values = tuple(spec["values"])
        low = min(values, default=None) if spec.low is None else spec.low
        high = max(values, default=None) if spec.high is None else spec.high
        if low is None or high is None or not low < high:
            raise ParaphinaError(f"{where}: low={low} must be below high={high}")
        check_knob(spec.key, [low], f"{where}.low")
        if spec.log and low <= 0:
            raise ParaphinaError(f"{where}: a log range needs low > 0, got {low:g}")
        if sampler == "grid" and not values:
            raise ParaphinaError(f"sampler=grid needs {where}.values, the grid's values of {name}")
        outside = [v for v in values if not low <= v <= high]
        if sampler == "grid" and outside:
            raise ParaphinaError(f"{where}.values {outside} lie outside [low, high] = [{low:g}, {high:g}]")
        dims.append(Dimension(str(name), spec.key, low, high, spec.log, values))
    return dims


def _trial_budget(experiment: DictConfig, dims: Sequence[Dimension], sampler: str) -> int:
    """`n_trials` per study; null means the grid's size (so a TPE search gets the grid's budget)."""
    grid_size = math.prod(len(d.values) for d in dims) if all(d.values for d in dims) else None
    if experiment.n_trials is None:
        if grid_size is None:
            raise ParaphinaError("experiment.n_trials=null means the grid's size, but some knob has no values; "
                                 "set experiment.n_trials=N")
        return grid_size
    if sampler == "grid" and experiment.n_trials > grid_size:
        raise ParaphinaError(f"experiment.n_trials={experiment.n_trials} exceeds the grid's {grid_size} points; "
                             f"use at most {grid_size} or another sampler")
    return experiment.n_trials


def _hydra_value(value: object) -> str:
    """A config value as Hydra override text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w\-./]*", value) else "'" + value.replace("'", "\\'") + "'"
    return repr(value)


def run_overrides(cfg: DictConfig, skip: Sequence[str] = ()) -> list[str]:
    """The overrides that turn `python -m paraphina.run` (with +profile=<cfg's> when cfg has it applied) into
    cfg's engine, market and ticks; a market scenario becomes its group override (`market=volatile`)."""
    sections = (*grid.PER_RUN_SECTIONS, "ticks")
    mine = flat_config(cfg, sections)
    # cfg is the centre unless composed with +profile (its profile_name names the default profile either way):
    # measure against whichever of the two it is, so a profile's own knobs never become overrides of the others'.
    # Both are composed without the environment, so what a PARAPHINA_* variable set becomes an override too.
    plain, profiled = compose_config([], environ={}), compose_config([f"+profile={cfg.profile_name}"], environ={})

    def agreement(other: DictConfig) -> int:
        return sum(mine.get(key) == text for key, text in flat_config(other, sections).items())

    with_profile = agreement(profiled) >= agreement(plain)
    reference = [f"+profile={cfg.profile_name}"] if with_profile else []
    composed = profiled if with_profile else plain
    group = []
    scenario = cfg.market.scenario
    if scenario != composed.market.scenario and (CONF_DIR / "market" / f"{scenario}.yaml").is_file():
        group = [f"market={scenario}"]
        composed = compose_config(reference + group, environ={})
    theirs = flat_config(composed, sections)
    return group + [f"{key}={_hydra_value(OmegaConf.select(cfg, key))}" for key, text in mine.items()
                    if text != theirs.get(key) and key not in skip]


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Set the values of key=value overrides in a composed config in place, and validate.

    The result is the config `compose_config(<cfg's overrides> + overrides)` gives for value overrides (the
    tests check it), at ~1 ms instead of ~20 ms: a search sets every trial's knobs, and the knobs are plain
    numbers no other value interpolates. The config's schema rejects unknown keys and wrong types as compose does.
    """
    try:
        set_values(cfg, override_parser().parse_overrides(list(overrides)))
    except Exception as exc:  # Hydra and OmegaConf raise many types; all mean a bad override here
        raise ParaphinaError(explain_hydra_error(exc)) from exc
    validate(cfg)


def with_overrides(base: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A copy of `base` with `overrides` applied (see `apply_overrides`)."""
    cfg = copy.deepcopy(base)
    apply_overrides(cfg, overrides)
    return cfg


def _varying_keys(cfg: DictConfig, dims: Sequence[Dimension], targets: Sequence[Target]) -> list[str]:
    """The searched keys, and every engine/market key on which a target differs from the batch's config (cfg)."""
    mine = flat_config(cfg, grid.PER_RUN_SECTIONS)
    keys = [d.key for d in dims]
    for target in targets:
        for key, text in flat_config(target.base, grid.PER_RUN_SECTIONS).items():
            if text != mine.get(key) and key not in keys:
                value = OmegaConf.select(target.base, key)
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ParaphinaError(f"{key} of profile {target.profile} is {value!r}, not a number")
                keys.append(key)
    return keys


@dataclass
class Search:
    """Everything a search needs, checked before any storage is opened or any trial runs."""

    cfg: DictConfig
    dims: list[Dimension]
    sampler: str
    objective: dict[str, str]
    budgets: bool
    n_trials: int
    batch_size: int
    targets: list[Target]
    varying: list[str]            # config keys given per run in a round's engine batch
    grid: list[dict[str, float]]  # the grid sampler's points in the order they are run (its seed's shuffle)

    @classmethod
    def prepare(cls, cfg: DictConfig, targets: Sequence[tuple[str, str]]) -> Search:
        """Check the settings and compose each (profile, tier) target; a bad one stops with one line."""
        experiment = cfg.experiment
        multi = experiment.multi_objective
        sampler = str(experiment.sampler or ("nsga2" if multi else "tpe"))
        dims = search_space(experiment.space, cfg, sampler)
        n_trials = _trial_budget(experiment, dims, sampler)
        tiers = tiers_from_mapping(cfg.world_model.tiers)
        unknown = [tier for _, tier in targets if tier not in tiers]
        if unknown:
            raise ParaphinaError(f"no risk tier {', '.join(unknown)}; tiers: {', '.join(tiers)}")
        base = run_overrides(cfg, skip=[d.key for d in dims])
        profiles = profiles_batch([p for p, _ in targets], base, "config", seeds=1)
        suffix = "-pareto" if multi else ""
        composed = [Target(p, tiers[t], f"{experiment.study.name}-{p}{suffix}", [f"+profile={p}", *base],
                           profiles.configs[p], copy.deepcopy(profiles.configs[p])) for p, t in targets]
        for target in composed:  # the range ends compose for every target, before any trial runs
            for end in ("low", "high"):
                with_overrides(target.base, [f"{d.key}={getattr(d, end)!r}" for d in dims])
        points = list(itertools.product(*(d.values for d in dims))) if sampler == "grid" else []
        order = np.random.default_rng(experiment.seed).permutation(len(points))
        return cls(cfg, dims, sampler, PARETO if multi else SCORE, experiment.budgets, n_trials, experiment.batch_size,
                   composed, _varying_keys(cfg, dims, composed),
                   [{d.name: float(v) for d, v in zip(dims, points[i])} for i in order])

    @property
    def knob_names(self) -> set[str]:
        return {d.name for d in self.dims}

    def knob_overrides(self, knobs: Mapping[str, float]) -> list[str]:
        return [f"{d.key}={knobs[d.name]!r}" for d in self.dims]

    def command(self, target: Target, knobs: Mapping[str, float]) -> list[str]:
        """The `python -m paraphina.run` overrides that rerun a trial: its config, its seeds."""
        return [*target.overrides, *self.knob_overrides(knobs), f"runs={self.cfg.seeds}", f"seed={self.cfg.seed}"]

    def definition(self, target: Target) -> dict[str, str]:
        """What a study's trials depend on; a resumed study must match it (n_trials, batch_size may change)."""
        grid_sampler = self.sampler == "grid"
        used = ("values",) if grid_sampler else ("low", "high", "log")
        return flatten_params({
            "sampler": self.sampler, "objective": list(self.objective), "budgets": self.budgets,
            **({"grid_seed": self.cfg.experiment.seed} if grid_sampler else {}),  # it orders the points
            "tier": asdict(target.tier), "ticks": self.cfg.ticks, "seeds": self.cfg.seeds, "seed": self.cfg.seed,
            "overrides": target.overrides,
            "space": {d.name: {"key": d.key, **{k: getattr(d, k) for k in used}} for d in self.dims}})


# --- storage and studies ------------------------------------------------------------------------


def default_journal(cfg: DictConfig) -> Path:
    """The journal beside the SQLite tracking store in use (mlruns/optuna.journal by default), so a study's
    resume state and its MLflow records live together; for a tracking server, the one in `paths.store`."""
    db_path = sqlite_path(store_uri(cfg))
    return (db_path.parent if db_path is not None else Path(cfg.paths.store)) / "optuna.journal"


def print_storage_note(cfg: DictConfig) -> None:
    """A first line when runs go to a tracking server but the studies to this machine's journal: workers on
    other machines would each run their own studies."""
    uri = store_uri(cfg)
    if cfg.experiment.study.storage is None and uri.startswith(("http://", "https://")):
        print(f"note: runs go to {uri} but the studies to this machine's journal "
              f"{default_journal(cfg)}; for workers on other machines set "
              f"experiment.study.storage=postgresql://USER:PASSWORD@HOST/DATABASE")


def open_storage(cfg: DictConfig, knob_names: set[str]) -> SharedStorage:
    """The search's Optuna storage (`experiment.study.storage`, else the default journal), its heartbeat checked
    (a grace period of a few beats); a trial whose worker died is failed by the heartbeat and asked again."""
    settings = cfg.experiment.study
    interval, grace = settings.heartbeat_interval, settings.grace_period
    if not 0 < interval < grace:
        raise ParaphinaError(f"experiment.study.heartbeat_interval={interval} and grace_period={grace} need "
                             f"0 < heartbeat_interval < grace_period (seconds), e.g. 5 and 60")
    if not settings.wait_interval > 0:
        raise ParaphinaError(f"experiment.study.wait_interval={settings.wait_interval} must be a positive number "
                             f"of seconds, e.g. 1")
    return open_shared_storage(settings.storage or default_journal(cfg),
                               Heartbeat(interval, grace), lambda study, trial: retry(study, trial, knob_names))


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, names: set[str]) -> None:
    """Ask a failed trial's knobs again, so that it neither counts nor gets lost (once per failure)."""
    if set(trial.params) == names:
        study.enqueue_trial(dict(trial.params), user_attrs={RETRY_ATTR: trial.number})


def requeue(study: optuna.Study, trial: Trial | optuna.trial.FrozenTrial, names: set[str]) -> None:
    """Fail a trial asked but never told (an interrupt, or a worker killed while asking) and ask its knobs again.
    Called under the storage's lock, as the heartbeat's failures are: a trial told meanwhile, or failed by another
    worker (which asked it again), is left as it is."""
    frozen = study.trials[trial.number]
    if not frozen.state.is_finished():
        study.tell(trial.number, state=TrialState.FAIL)
        retry(study, frozen, names)


def open_study(search: Search, target: Target, shared: SharedStorage) -> optuna.Study:
    """Create the target's study or join it, under the storage's lock: check its definition, count this worker
    (RUNNING trials may be live workers'; the heartbeat fails those of dead ones)."""
    label = shared.label
    try:
        study = optuna.create_study(study_name=target.study_name, storage=shared.storage, load_if_exists=True,
                                    directions=list(search.objective.values()))
    except Exception as exc:  # storages raise many types
        raise ParaphinaError(f"cannot open study {target.study_name} in {label}: {describe(exc)}") from exc
    definition = search.definition(target)
    stored = study.user_attrs.get(DEFINITION_ATTR)
    if stored is None and study.trials:
        raise ParaphinaError(f"study {target.study_name} in {label} was not made by paraphina; "
                             f"choose another experiment.study.name")
    if stored is None:
        study.set_user_attr(DEFINITION_ATTR, definition)
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
    elif (diff := first_difference({"study": stored, "command": definition})) is not None:
        key = diff[0]
        raise ParaphinaError(f"study {target.study_name} in {label} was run with {key}={stored.get(key)}, this command "
                             f"gives {definition.get(key)}; rerun with the study's settings or start another study "
                             f"with experiment.study.name=NAME")
    joined = int(study.user_attrs.get(WORKERS_ATTR, 0))
    study.set_user_attr(WORKERS_ATTR, joined + 1)
    # A grid's trials are its points, enqueued one by one (`Driver._ask_trial`): no sampler draws them.
    # Other samplers get a stream of their own per study (the profiles would otherwise be searched in
    # lockstep) and per worker, counting a resumed run as a new worker (the same seed would replay the trials
    # of the first worker).
    seed = zlib.crc32(f"{search.cfg.experiment.seed}:{target.study_name}:{joined}".encode())
    if search.sampler == "tpe":
        study.sampler = optuna.samplers.TPESampler(seed=seed)
    elif search.sampler == "nsga2":
        study.sampler = optuna.samplers.NSGAIISampler(population_size=max(2, search.batch_size), seed=seed)
    return study


def _completed(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def drop_orphans(recorder: ExperimentRecorder, studies: Sequence[optuna.Study]) -> None:
    """Delete the parent's children whose trial failed (a worker stopped or killed between logging and telling).
    Children are listed before trials, so a child a live worker logs meanwhile finds its trial RUNNING and stays."""
    client = tracking_client(recorder.session.uri)
    children = all_runs(client, [recorder.session.experiment_id], f"tags.`{PARENT_TAG}` = '{recorder.parent_id}'")
    kept = {(s.study_name, str(t.number)) for s in studies
            for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))}
    for run in children:
        if (run.data.tags.get(STUDY_TAG), run.data.tags.get(TRIAL_TAG)) not in kept:
            client.delete_run(run.info.run_id)


# --- rounds -------------------------------------------------------------------------------------


class Driver:
    """One worker: asks each study for a round of trials, runs the round as one engine batch, tells and records
    each trial; when the studies' budgets are asked, it waits for the other workers' trials (retrying those of
    dead workers) until every study has its trials."""

    def __init__(self, search: Search, studies: Sequence[optuna.Study], recorder: ExperimentRecorder,
                 shared: SharedStorage):
        self.search, self.studies, self.recorder, self.shared = search, list(studies), recorder, shared
        self.wait_interval = float(search.cfg.experiment.study.wait_interval)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def run(self) -> None:
        total = self.search.n_trials * len(self.studies)
        with (tqdm(total=total, initial=self._done(), desc=f"{self.search.cfg.experiment.id} trials",
                   unit="trial") as bar,
              TrialBeats(self.shared) as beats):
            while self._round(beats):
                bar.update(self._done() - bar.n)

    def _done(self) -> int:
        return sum(len(_completed(s)) for s in self.studies)

    def _round(self, beats: TrialBeats) -> bool:
        """One round (or a wait for other workers); False when every study has its trials."""
        asked: list[Asked] = []
        try:
            if not self._ask(asked, beats):
                return False
            if asked:
                self._evaluate(asked)
            else:
                time.sleep(self.wait_interval)
            return True
        except BaseException as exc:
            try:
                with self.shared.lock():
                    for a in asked:
                        if not a.told:
                            requeue(a.study, a.trial, self.search.knob_names)
            except Exception:  # the storage itself failed: the heartbeat fails what is left RUNNING
                pass
            if isinstance(exc, KeyboardInterrupt):  # the command's stop line says what is kept
                exc.add_note(f"{self._done()} completed trials are saved in the studies "
                             f"{', '.join(s.study_name for s in self.studies)}; run the same command again to resume")
            raise
        finally:
            beats.drop(a.trial._trial_id for a in asked)

    def _ask(self, asked: list[Asked], beats: TrialBeats) -> bool:
        """Under the storage's lock: fail the stale trials of dead workers (their retries are queued), then ask
        each study for its round, up to its budget less its completed and running trials. Appends to `asked`;
        False when nothing is asked nor running anywhere (every study has its trials)."""
        search, running = self.search, 0
        with self.shared.lock(), quiet_heartbeat():
            for target, study in zip(search.targets, self.studies):
                optuna.storages.fail_stale_trials(study)
                busy = self._running(study)
                running += len(busy)
                for _ in range(min(search.batch_size, search.n_trials - len(_completed(study)) - len(busy))):
                    trial = self._ask_trial(study)
                    beats.add(trial._trial_id)  # Optuna's own heartbeat thread beats by this id too
                    knobs = {d.name: d.suggest(trial) for d in search.dims}
                    trial.set_user_attr(WORKER_ATTR, self.worker)  # last: the trial is asked whole
                    asked.append(Asked(target, study, trial, knobs))
        return bool(asked or running)

    def _ask_trial(self, study: optuna.Study) -> Trial:
        """The next trial: a waiting one (a retry) first; on a grid, else the first point no trial has done or
        runs. Optuna's GridSampler counts a failed trial's point as done, so the point of a trial asked in part
        (its worker stopped between two knobs) would never run; here it runs again."""
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if self.search.grid and not waiting:
            taken = [t.params for t in study.get_trials(deepcopy=False,
                                                        states=(TrialState.COMPLETE, TrialState.RUNNING))]
            study.enqueue_trial(next(p for p in self.search.grid if p not in taken))
        return study.ask()

    def _running(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        """The study's running trials, once those of workers killed while asking are failed and asked again.

        A worker asks, beats and names itself on a trial under the storage's lock, so a running trial seen under
        the lock without a worker's name was asked by a worker that died there, maybe before its first beat,
        which the heartbeat never fails on PostgreSQL.
        """
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        for trial in running:
            if WORKER_ATTR not in trial.user_attrs:
                requeue(study, trial, self.search.knob_names)
        return [t for t in running if WORKER_ATTR in t.user_attrs]

    def _evaluate(self, asked: list[Asked]) -> None:
        search, cfg = self.search, self.search.cfg
        points = []
        for a in asked:  # each trial's config as `python -m paraphina.run` composes it; the batch takes its knobs
            apply_overrides(a.target.work, search.knob_overrides(a.knobs))
            points.append({key: float(OmegaConf.select(a.target.work, key)) for key in search.varying})
        axes = [grid.Axis(key, key, ()) for key in search.varying]
        per_run, seeds, point_index = grid.point_batch(points, axes, cfg.seeds, cfg.seed)
        batch = run_many(cfg, seeds, per_run, desc=f"round: {len(asked)} trials x {cfg.seeds} seeds")
        summary = point_summaries(batch, point_index, [a.knobs for a in asked], cfg.world_model.confidence)
        for i, a in enumerate(asked):
            metrics = summary.iloc[i].drop(labels=list(a.knobs)).astype(float).to_dict()
            self._tell(a, metrics, per_seed_table(batch, np.flatnonzero(point_index == i), a.knobs))

    def _tell(self, a: Asked, metrics: dict[str, float], per_seed: pd.DataFrame) -> None:
        """Record the trial as a child run first, then tell it: a child whose trial was never told is dropped.

        A trial another worker failed meanwhile (this one was judged dead: no beat within the grace period)
        refuses the tell; its retry is recorded instead, and this child is dropped as an orphan.
        """
        search, tier = self.search, a.target.tier
        metrics["score"] = float(tier_score(tier, metrics["pnl_mean"], metrics["pnl_std"], metrics["dd_mean"],
                                            metrics["kill_prob"]))
        # the tier's budgets as Optuna constraints (<= 0 feasible): the negated budget margins
        margins = budget_margins(tier, metrics["pnl_mean"], metrics["dd_mean"], metrics["kill_prob"])
        constraints = {"kill_prob": -float(margins["kill_margin"]), "drawdown": -float(margins["dd_margin"]),
                       "pnl": -float(margins["pnl_margin"])} if search.budgets else {}
        values = [metrics[c] for c in search.objective]
        if not all(math.isfinite(v) for v in values):
            raise ParaphinaError(f"trial {a.trial.number} of {a.study.study_name} gave a non-finite objective {values}")
        tags = {STUDY_TAG: a.study.study_name, TRIAL_TAG: str(a.trial.number), "profile": a.target.profile,
                COMMAND_TAG: f"{RUN_COMMAND} {shlex.join(search.command(a.target, a.knobs))}"}
        logged = dict(metrics) | {f"constraint_{k}": v for k, v in constraints.items()}
        if constraints:
            feasible = all(v <= 0 for v in constraints.values())
            tags[FEASIBLE_TAG] = str(feasible).lower()
            logged["feasible"] = float(feasible)
        params = {d.key: a.knobs[d.name] for d in search.dims}  # one name per knob: its config key
        run_id = self.recorder.log_point(f"{a.study.study_name}-t{a.trial.number}", params, logged, per_seed, tags)
        try:
            a.trial.set_user_attr(RESULT_ATTR, {"metrics": metrics, "run_id": run_id})
            for name, value in constraints.items():
                a.trial.set_constraint(name, value)
            a.study.tell(a.trial, values if len(values) > 1 else values[0])
        except optuna.exceptions.UpdateFinishedTrialError:
            pass
        a.told = True


# --- outcome ------------------------------------------------------------------------------------


def study_outcome(search: Search, target: Target, study: optuna.Study) -> StudyOutcome:
    """The study's completed trials (every run of the command so far), its best trial(s) and their commands."""
    rows = []
    for t in _completed(study):
        constraints = {f"constraint_{k}": v for k, v in t.constraints.items()}
        feasible = {"feasible": all(v <= 0 for v in t.constraints.values())} if constraints else {}
        result = t.user_attrs[RESULT_ATTR]
        rows.append({"profile": target.profile, "trial": t.number, **t.params, **result["metrics"], **feasible,
                     **constraints, "run_id": result["run_id"]})
    table = pd.DataFrame(rows)
    first, direction = next(iter(search.objective.items()))
    ascending = direction == "minimize"
    front = {t.number for t in study.best_trials}  # Optuna's best (Pareto front), of the feasible trials if constrained
    note = "" if front else f"no trial met the {target.tier.name} tier's budgets; the trials by {first} shown"
    best = table[table["trial"].isin(front)] if front else table
    best = best.sort_values(first, ascending=ascending, ignore_index=True)
    if len(search.objective) == 1:
        best = best.head(1)
    commands = [search.command(target, {d.name: float(row[d.name]) for d in search.dims})
                for _, row in best.head(search.cfg.experiment.show_top).iterrows()]
    compose_config(commands[0])  # the printed commands compose as they stand, through the CLI's own path
    commands = [f"{RUN_COMMAND} {shlex.join(overrides)}" for overrides in commands]
    table = table.sort_values(first, ascending=ascending, ignore_index=True)
    return StudyOutcome(target, table, best, commands, note)


def run_search(cfg: DictConfig, targets: Sequence[tuple[str, str]],
               plots: Callable[[SearchOutcome, Path], list[Path]]) -> SearchOutcome:
    """Create or resume one study per (profile, tier) target, run their trials in rounds, record and summarise;
    `plots(outcome, folder)` draws the PNGs attached to the parent with the trial tables."""
    search = Search.prepare(cfg, targets)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shared = open_storage(cfg, search.knob_names)
    # the studies and their parent run are created once, under the lock, however many workers start
    with shared.loss_stops_the_command(), shared.lock():
        studies = [open_study(search, t, shared) for t in search.targets]
        uids = ",".join(s.user_attrs[UID_ATTR] for s in studies)
        recorder = ExperimentRecorder(cfg, {STUDY_UIDS_TAG: uids}, resume_tag=STUDY_UIDS_TAG)
    with recorder:
        with shared.loss_stops_the_command():
            Driver(search, studies, recorder, shared).run()
            drop_orphans(recorder, studies)
            outcome = SearchOutcome(search, [study_outcome(search, t, s) for t, s in zip(search.targets, studies)],
                                    shared.label)
        experiment_id = cfg.experiment.id
        metrics = {}
        for s in outcome.studies:
            metrics[f"trials.{s.target.profile}"] = float(len(s.table))
            if len(s.best) and len(search.objective) == 1:
                metrics[f"best_score.{s.target.profile}"] = float(s.best["score"].iloc[0])
                metrics |= parent_metrics(s.best.head(1), cfg.tracking.parent_metrics, by="profile")
        recorder.finish(tables={f"{experiment_id}_trials": outcome.table,
                                f"{experiment_id}_best": pd.concat([s.best for s in outcome.studies],
                                                                   ignore_index=True)},
                        plots=plots(outcome, recorder.tmp), metrics=metrics)
    return outcome


def print_outcome(outcome: SearchOutcome) -> None:
    """Per study: the trials by score (or the Pareto front), and the command that reruns the best (or each front) trial."""
    search = outcome.search
    show = search.cfg.experiment.show_top
    multi = len(search.objective) > 1
    columns = ["trial", *[d.name for d in search.dims], "score", "pnl_mean", "pnl_std", "dd_mean", "kill_prob",
               "feasible"]
    for s in outcome.studies:
        shown = (f"Pareto front of {len(s.best)} trials, best PnL first" if multi
                 else f"best {min(show, len(s.table))} trials by score")
        print_table(s.best.head(show) if multi else s.table.head(show), columns,
                    title=f"\nstudy {s.target.study_name}: {len(s.table)} of {search.n_trials} trials ({search.sampler}, "
                          f"tier {s.target.tier.name}, storage {outcome.storage}); {shown}")
        if s.note:
            print(f"note: {s.note}")
        if multi:
            for trial, command in zip(s.best["trial"], s.commands):
                print(f"  #{trial}: {command}")
        else:
            best = s.best.iloc[0]
            print(f"best trial #{best['trial']}: "
                  + ", ".join(f"{c} {best[c]:,.3f}" for c in ("score", "pnl_mean", "dd_mean", "kill_prob"))
                  + f"\n  {s.commands[0]}")
    print(f"\ntables and plots in {sweeps_dir(search.cfg)}")
