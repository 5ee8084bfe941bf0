"""Composing conf/ into a validated config, with the original environment variables as overrides: a typo, a
wrong type or an unknown profile stops with one line before anything runs."""
from __future__ import annotations

import copy
import functools
import math
import os
import re
import typing
from argparse import ArgumentTypeError
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from paraphina.config import experiments
from paraphina.core.cli import MAX_PORT, finite_float
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import DD_STATISTICS, REGIME_FRACTIONS, TELEMETRY_PLACEHOLDERS

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = next(p for p in (PACKAGE_DIR / "conf", PACKAGE_DIR.parent / "conf") if p.is_dir())
"""The configs an installed copy ships as paraphina/conf, else the checkout's conf/."""

# The original engine's environment variables and the config keys they set (ENGINE_SPEC section 6).
NUMERIC_ENV_KEYS: dict[str, str] = {
    "PARAPHINA_INIT_Q_TAO": "engine.initial_q_tao",
    "PARAPHINA_HEDGE_BAND_BASE": "engine.hedge.band_base",
    "PARAPHINA_HEDGE_MAX_STEP": "engine.hedge.hedge_max_step",
    "PARAPHINA_MM_SIZE_ETA": "engine.mm.size_eta",
    "PARAPHINA_VOL_REF": "engine.volatility.vol_ref",
    "PARAPHINA_DAILY_LOSS_LIMIT": "engine.risk.daily_loss_limit",
}
TEXT_ENV_KEYS: dict[str, str] = {
    "PARAPHINA_TELEMETRY_MODE": "telemetry.mode",
    "PARAPHINA_TELEMETRY_PATH": "telemetry.path",
}
PROFILE_ENV = "PARAPHINA_RISK_PROFILE"
CHOICES: dict[str, tuple[str, ...]] = {
    "world_model.dd_statistic": DD_STATISTICS, "telemetry.mode": ("off", "jsonl"),
    "tracking.child_config": ("parent", "full"),
}
MINIMUMS: dict[str, int] = {
    "seed": 0, "seeds": 1, "tracking.series_points": 1, "execution.chunk_runs": 1, "execution.threads": 0,
    "execution.serial_below": 0, "execution.result_copies": 1, "telemetry.every": 1, "world_model.session_ticks": 1,
    # the experiments' seeds and counts, where the config has them
    "experiment.seed": 0, "experiment.n_trials": 1, "experiment.batch_size": 1, "experiment.show_top": 1,
    "experiment.top_n": 1, "experiment.summary_top": 1, "runs_per_profile": 1,
    "experiment.decisive.max_runs_per_profile": 1, "experiment.decisive.looks": 1, "experiment.batch_sizes": 1,
    "experiment.thread_counts": 1, "experiment.repeats": 1, "experiment.seeds": 1, "experiment.batch_runs": 1,
    "experiment.seed_offset": 0, "experiment.probe_every": 1, "experiment.single_repeats": 1, "experiment.port": 1,
    "tracking.end_attempts": 1, "tracking.seed_children_below": 0,
}
"""Smallest values of counts; a list (the benchmark's batch sizes) is checked value by value."""
MAX_COUNT = 2**53
"""The largest count or seed: every count, and a seed plus its run's index, stays exact in the engine's int64 and
float64 arithmetic."""
POSITIVE_KEYS: dict[str, str] = {
    "engine.tick_ms": "milliseconds a tick lasts",
    "market.outage.mean_ticks": "ticks an outage lasts on average",
    "market.s0": "the starting price in USD",
    "engine.risk.daily_loss_limit": "the session loss in USD that fires the kill switch",
    "engine.risk.delta_hard_limit_usd_base": "the delta hard limit in USD that the volatility ratio scales",
    "engine.volatility.vol_ref": "the reference volatility that the volatility ratio divides by",
    "engine.toxicity.vol_tox_scale": "the excess of local over effective volatility that makes a venue toxic",
    "engine.toxicity.markout_tox_scale_bps": "the adverse markout in bps that makes a venue toxic",
}
NON_NEGATIVE_KEYS: dict[str, str] = {
    "market.vol_scale": "the factor on both regimes' volatility; 0 gives a still market",
    "engine.mm.size_eta": "the quote size's shrinkage with inventory; 0 keeps the base size",
    "engine.hedge.band_base": "the inventory band in TAO the hedge leaves alone; 0 hedges all of it",
    "engine.hedge.hedge_max_step": "the most TAO one hedge order may take; 0 never hedges",
}
"""Engine and market knobs with a sign, and what they mean (for the message): checked in the config and in
the values a grid or a search gives them per run."""

COMPOSED_KEPT = 64
"""Compositions kept for reuse: a command composes a few (its profiles, its steps), a long study one per trial."""

DATASET_NAME = re.compile(r"\w[\w.-]*")
"""A research dataset's name: a tag value that MLflow's search filter can quote, so what goes in reads back."""


def override_key(override: str) -> str:
    """The config key an override sets: `+profile=x` -> `profile`, `engine.a.b=1` -> `engine.a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def env_overrides(environ: Mapping[str, str], user_overrides: Sequence[str]) -> list[str]:
    """Overrides from the original environment variables, for keys the user did not set (Hydra wins)."""
    given = {override_key(o) for o in user_overrides}
    result: list[str] = []
    profile = environ.get(PROFILE_ENV)
    if profile and "profile" not in given:
        result.append(f"+profile={profile.strip()}")
    for var, key in NUMERIC_ENV_KEYS.items():
        raw = environ.get(var)
        if raw is None or key in given:
            continue
        try:
            result.append(f"{key}={finite_float(raw)!r}")
        except ArgumentTypeError:
            raise ParaphinaError(f"{var}={raw!r} is not a finite number; set it to a number such as 5.0 or "
                                 "unset it") from None
    for var, key in TEXT_ENV_KEYS.items():
        raw = environ.get(var)
        if raw is not None and key not in given:
            quoted = raw.replace("\\", "\\\\").replace("'", "\\'")
            result.append(f"{key}='{quoted}'")
    return result


def available(group: str) -> list[str]:
    """The options of a config group (the YAML files of conf/<group>/)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def check_profile(name: str) -> None:
    """A profile name must be one of conf/profile/ (research rows of another name match no risk tier)."""
    if name not in available("profile"):
        raise ParaphinaError(f"unknown profile '{name}'; choose one of: {', '.join(available('profile'))}")


def is_dataset_file(dataset: str) -> bool:
    """`dataset=` names a JSONL file (ends in .jsonl or has a folder part) rather than an MLflow dataset."""
    return dataset.endswith(".jsonl") or os.sep in dataset


def check_dataset_name(name: str) -> None:
    """Refuse, where a name comes in, a dataset name that MLflow searches could not find again."""
    if not DATASET_NAME.fullmatch(name):
        raise ParaphinaError(f"dataset name {name!r} cannot be searched for in MLflow; use only letters, digits, "
                             "'_', '-' and '.', e.g. research_dataset_v004")


def explain_hydra_error(exc: BaseException) -> str:
    """Turn a Hydra/OmegaConf composition error into one line that says what to fix, from the error's fields."""
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override {exc.override}: {exc.message.splitlines()[0]}"
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"unknown {group or 'config'} '{name}'; choose one of: {', '.join(exc.options or available(group))}"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    first = (str(getattr(cause, "msg", None) or cause).strip().splitlines() or [type(cause).__name__])[0]
    key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and key:
        return f"unknown config key '{key}'; check its spelling (the command with --cfg job lists every key)"
    expected = _expected_kind(cause, key)
    if key and expected:
        return f"bad value for '{key}': {getattr(cause, 'value', None)!r} is not {expected}"
    if key:
        return f"bad value for '{key}': {first}"
    return " ".join(str(cause).split())


def _expected_kind(cause: BaseException, key: str | None) -> str | None:
    """What a value of the schema field an OmegaConf validation error is about must be, in words (and the
    forms it takes, for a flag), or None when the schema does not say."""
    owner, name = getattr(cause, "object_type", None), getattr(cause, "key", None)
    try:
        hint = typing.get_type_hints(owner)[name]
    except Exception:  # no dataclass behind the node, or no such field: nothing to add
        return None
    hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)  # Optional[X] -> X
    return {bool: f"true or false ({key}=true or {key}=false)", int: "a whole number",
            float: "a number"}.get(hint)


def compose_config(overrides: Sequence[str] = (), config_name: str = "config",
                   environ: Mapping[str, str] | None = None) -> DictConfig:
    """Compose conf/ with the environment's and the caller's overrides; resolve; validate; raise ParaphinaError.

    Hydra composes the config groups an override list chooses (its defaults list), then sets the list's
    `key=value` overrides on the result. The first step is kept per process, so a composition whose groups were
    composed before (the benchmark's batch sizes, a test's temp store) costs a copy and Hydra's second
    step, a tenth of the time; an edited file of conf/, an override that interpolates (`${...}` may read the clock
    or the environment) or one that fails (for Hydra's own message) composes afresh."""
    environ = os.environ if environ is None else environ
    overrides = list(overrides)
    reject_appended_keys(overrides)
    full = (*env_overrides(environ, overrides), *overrides)
    if not any("${" in override for override in full):
        try:
            parsed = override_parser().parse_overrides(list(full))
            values = [o for o in parsed if _is_value_override(o)]
            job, hydra_node = _composed(tuple(o.input_line for o in parsed if o not in values), config_name,
                                        files_state(CONF_DIR))
            cfg = copy.deepcopy(job)
            set_values(cfg, values)
            return _finished(cfg, hydra_node)
        except (OverrideParseException, OmegaConfBaseException):
            pass   # Hydra's own composition below names the problem as a command's does
    job, hydra_node = _compose(full, config_name)
    return _finished(job, hydra_node)


def _is_value_override(override: Override) -> bool:
    """A plain `key=value` of the job's config: Hydra sets it after composing the groups, as `set_values` does
    (group choices, `+`/`~` edits, sweeps and the `hydra.` settings take part in the composition itself)."""
    key = override.key_or_group
    group = "." not in key and (key == experiments.SCHEMA_GROUP or (CONF_DIR / key).is_dir())
    return not (group or key.startswith("hydra") or override.package is not None or override.is_sweep_override()
                or override.is_delete() or override.is_add() or override.is_force_add())


def set_values(cfg: DictConfig, overrides: Sequence[Override]) -> None:
    """Set value overrides on a composed config in place, as Hydra sets a command line's on its composition."""
    for override in overrides:
        OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)


@functools.lru_cache(maxsize=COMPOSED_KEPT)
def _composed(chosen: tuple[str, ...], config_name: str, conf_state: tuple) -> tuple[DictConfig, DictConfig]:
    """`_compose`, kept: `conf_state` takes part in the cache's key only, so an edited conf/ composes afresh."""
    return _compose(chosen, config_name)


def _compose(full: Sequence[str], config_name: str) -> tuple[DictConfig, DictConfig]:
    """Hydra's composition: the job's config, unresolved, and Hydra's node apart (`${hydra:...}` reads it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    experiments.register(config_name)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="paraphina"):
            cfg = compose(config_name=config_name, overrides=list(full), return_hydra_config=True)
    except Exception as exc:  # Hydra and OmegaConf raise many types; all are the user's input here
        raise ParaphinaError(explain_hydra_error(exc)) from exc
    finally:
        GlobalHydra.instance().clear()
    hydra_node = OmegaConf.masked_copy(cfg, "hydra")
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra_node


def _finished(cfg: DictConfig, hydra_node: DictConfig) -> DictConfig:
    """A composed job config resolved, every value as in a job of Hydra's app runner, and validated.

    `${hydra:...}` values (e.g. Exp11's `${hydra:runtime.choices.profile}`) read the composition's own Hydra
    node; the app runner's Hydra config, if any, is left as it was."""
    from hydra.core.hydra_config import HydraConfig

    current = HydraConfig.instance()
    previous, current.cfg = current.cfg, hydra_node
    try:
        resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ParaphinaError(explain_hydra_error(exc)) from exc
    finally:
        current.cfg = previous
    validate(cfg)
    return cfg


def files_state(folder: Path) -> tuple[tuple[str, int, int, int], ...]:
    """What the YAML files under `folder` are now, in a millisecond: each one's path, inode, size and mtime."""
    stats = ((str(path), path.stat()) for path in folder.rglob("*.yaml"))
    return tuple(sorted((name, st.st_ino, st.st_size, st.st_mtime_ns) for name, st in stats))


def resolve(cfg: DictConfig) -> None:
    """Resolve every interpolation in place: one that cannot resolve fails now, naming its key, not mid-run."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException:
        OmegaConf.to_container(cfg, resolve=True)  # the same error with the key it happened at
        raise


def reject_appended_keys(overrides: Iterable[str]) -> None:
    """`+engine.typo=1` slips past structured configs: only config groups, and axes of a sweep's grid (whose
    names are free), may be appended."""
    groups = {"profile"}
    for o in overrides:
        key = override_key(o)
        if o.startswith("+") and key.split("/")[0] not in groups and not key.startswith("experiment.grid."):
            raise ParaphinaError(f"unknown config key '{key}' in '{o}'; only '+profile=...' and "
                                 f"'+experiment.grid.NAME={{key: ..., values: [...]}}' may be appended")


@functools.lru_cache(maxsize=1)
def override_parser() -> OverridesParser:
    """Hydra's parser of command-line overrides (built once: building it takes ~50 ms)."""
    return OverridesParser.create()


MAX_PLANNED_FRACTION = 0.9   # at 0.99 of a 1 % budget the runs-needed search alone takes half a minute
RANGES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("ticks", lambda v: v <= 0, "must be a positive number of ticks, e.g. ticks=2000"),
    ("runs", lambda v: v < 1, "must be at least 1, e.g. runs=64"),
    *((key, lambda v: v > MAX_COUNT, f"must be at most 2**53 = {MAX_COUNT}") for key in ("ticks", "runs")),
    ("world_model.confidence", lambda v: not 0 < v < 1, "must be between 0 and 1, e.g. 0.95"),
    ("tracking.reachability_timeout_s", lambda v: not v > 0, "must be a positive number of seconds"),
    ("tracking.end_wait_s", lambda v: v < 0, "must not be negative (seconds between tries to end a run)"),
    ("experiment.port", lambda v: v > MAX_PORT, f"must be a port number, at most {MAX_PORT}"),
    ("world_model.power", lambda v: not 0 < v < 1, "must lie strictly between 0 and 1, e.g. 0.8"),
    ("world_model.planned_fraction", lambda v: not 0 < v <= MAX_PLANNED_FRACTION,
     f"must lie in (0, {MAX_PLANNED_FRACTION}]: a kill rate nearer its budget needs millions of runs to show ok"),
    ("world_model.min_n", lambda v: v < 2, "must be at least 2 (a t interval needs two runs)"),
    ("experiment.kill_headroom", lambda v: not 0 < v <= 1,
     "must lie in (0, 1]: the share of a tier's kill budget a preset's design estimate may use"),
    ("engine.venues.tick_size", lambda v: min(v) <= 0, "must all be positive"),
    *((f"market.flow.{key}", lambda v: not v > 0, "must be positive") for key in ("decay", "order_median_usd")),
    *((f"market.flow.{key}", lambda v: v < 0, "must not be negative")
      for key in ("jump", "cross", "informed", "order_sigma", "impact_perm", "reach_k_bps", "stressed_mult")),
    *((key, lambda v: min(v) < 0, "must not be negative (orders per second, bps)")
      for key in ("market.flow.rate", "market.spread.half_bps")),
    ("market.depth.mean_usd", lambda v: min(v) <= 0, "must all be positive"),
    ("market.flow.touch_fill_prob", lambda v: not 0 <= v <= 1, "must be a probability in [0, 1]"),
    ("market.flow.imbalance", lambda v: not -1 < v < 1, "must be between -1 and 1"),
)
"""Settings with a range, the test a value out of it fails, and the message's rule (an absent setting passes);
checked after the venue lists' lengths."""


def unusable_values(tree: Any, key: str = "") -> Iterator[str]:
    """What is wrong with the NaN or infinite numbers and the missing values (`???`) of a plain config tree."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for name, value in items:
        where = f"{key}[{name}]" if isinstance(tree, list) else f"{key}.{name}" if key else str(name)
        if isinstance(value, float) and not math.isfinite(value):
            yield f"{where}={value} must be a finite number"
        elif value == MISSING:
            yield f"{where} has no value (a ~ override removed its group, or its file leaves it out); keep the group"
        yield from unusable_values(value, where)


def validate(cfg: DictConfig) -> None:
    """Checks the schema cannot express: finite numbers, positive counts, venue list lengths, known modes and
    profiles."""
    for problem in unusable_values(OmegaConf.to_container(cfg)):
        raise ParaphinaError(problem)
    for key, minimum in MINIMUMS.items():
        value = OmegaConf.select(cfg, key)
        if value is None:
            continue
        values = list(value) if OmegaConf.is_list(value) else [value]
        if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = "a non-empty list of whole numbers" if OmegaConf.is_list(value) else "a whole number"
            raise ParaphinaError(f"{key}={values if OmegaConf.is_list(value) else value} must be {kind}")
        if min(values) < minimum:
            raise ParaphinaError(f"{key}={value} must be at least {minimum}")
        if max(values) > MAX_COUNT:
            raise ParaphinaError(f"{key}={max(values)} must be at most 2**53 = {MAX_COUNT}")
    for key in (*POSITIVE_KEYS, *NON_NEGATIVE_KEYS):
        check_knob(key, [OmegaConf.select(cfg, key)])
    for key, choices in CHOICES.items():
        if OmegaConf.select(cfg, key) not in choices:
            raise ParaphinaError(f"{key}={OmegaConf.select(cfg, key)!r} is not one of {', '.join(choices)}")
    for name, bounds in cfg.world_model.regime_envelope.items():
        if name not in REGIME_FRACTIONS:
            raise ParaphinaError(f"world_model.regime_envelope.{name} is not a regime fraction; use "
                                 f"{', '.join(REGIME_FRACTIONS)}")
        if len(bounds) != 2 or not 0.0 <= bounds[0] <= bounds[1] <= 1.0:
            raise ParaphinaError(f"world_model.regime_envelope.{name}={list(bounds)} must be [low, high] with "
                                 f"0 <= low <= high <= 1, e.g. [0.04, 0.12]")
    experiment = cfg.get("experiment")
    if (isinstance(experiment, DictConfig) and "grid" in experiment
            and not issubclass(OmegaConf.get_type(experiment) or dict, experiments.GridSettings)):
        raise ParaphinaError("experiment.grid: this command sweeps no grid (exp02 and exp04 do); drop the "
                             "+experiment.grid override")
    unknown = [key for key in cfg.tracking.child_params if OmegaConf.select(cfg, key, default=KeyError) is KeyError]
    if unknown:
        raise ParaphinaError(f"tracking.child_params names unknown config keys: {', '.join(unknown)}")
    if cfg.telemetry.mode == "jsonl":
        check_telemetry_path(cfg.telemetry.path)
    if cfg.dataset is not None and not is_dataset_file(cfg.dataset):
        check_dataset_name(cfg.dataset)
    if cfg.risk_tier not in cfg.world_model.tiers:
        raise ParaphinaError(f"profile '{cfg.profile_name}' has no risk tier; tiers: {', '.join(cfg.world_model.tiers)}")
    n_venues = len(cfg.engine.venues.names)
    for section in ("engine.venues", "market.basis", "market.spread", "market.depth", "market.funding", "market.flow"):
        node = OmegaConf.select(cfg, section)
        for key, value in node.items():
            if OmegaConf.is_list(value) and len(value) != n_venues:
                raise ParaphinaError(f"{section}.{key} has {len(value)} values but there are {n_venues} venues")
    if min(cfg.engine.venues.base_order_size) < 0 or min(cfg.engine.venues.max_order_size) < 0:
        raise ParaphinaError("engine.venues.base_order_size and max_order_size must not be negative (TAO; 0 = no quotes)")
    for key, outside, rule in RANGES:
        value = OmegaConf.select(cfg, key)
        if value is not None and outside(value):
            raise ParaphinaError(f"{key}={list(value) if OmegaConf.is_list(value) else value} {rule}")
    ratio = branching_ratio(cfg.market.flow, cfg.engine.tick_ms / 1000.0)
    if ratio >= 1:
        raise ParaphinaError(f"market.flow branching ratio jump (1 + cross) dt / (1 - exp(-decay dt)) = {ratio:.3g} "
                             "must be below 1 for a stationary flow; lower market.flow.jump or cross, or raise "
                             "market.flow.decay")


def check_telemetry_path(path: str | None) -> None:
    """A telemetry path must be given, and its `{placeholders}` must be ones the runs fill."""
    if not path:
        raise ParaphinaError("telemetry.mode=jsonl needs telemetry.path=FILE (or PARAPHINA_TELEMETRY_PATH)")
    unknown = [name for name in re.findall(r"\{([^{}]*)\}", path) if name not in TELEMETRY_PLACEHOLDERS]
    if unknown:
        known = ", ".join(f"{{{name}}}" for name in TELEMETRY_PLACEHOLDERS)
        raise ParaphinaError(f"telemetry.path '{path}' has the unknown placeholder {{{unknown[0]}}}; "
                             f"a path may hold {known}")


def check_knob(key: str, values: Sequence[float], where: str | None = None) -> None:
    """Values a knob takes (the config's, or a grid's or a search's per run) must have the knob's sign;
    `where` names the setting they came from (default: the key itself)."""
    shown = f"{where or key}={values[0] if len(values) == 1 else list(values)}"
    subject = "it" if where is None else key
    if key in POSITIVE_KEYS and not all(v > 0 for v in values):
        raise ParaphinaError(f"{shown} must be positive ({subject} is {POSITIVE_KEYS[key]})")
    if key in NON_NEGATIVE_KEYS and not all(v >= 0 for v in values):
        raise ParaphinaError(f"{shown} must not be negative ({subject} is {NON_NEGATIVE_KEYS[key]})")


def branching_ratio(flow: DictConfig, dt: float) -> float:
    """Orders one market order triggers on average, both sides, in the engine's tick recursion:
    jump (1 + cross) dt / (1 - exp(-decay dt)); the flow is stationary below 1. It tends to the
    continuous-time ratio jump (1 + cross) / decay as the tick dt shrinks."""
    return flow.jump * (1.0 + flow.cross) * dt / -math.expm1(-flow.decay * dt)


def to_plain(cfg: DictConfig) -> dict:
    """The resolved config as plain Python containers (without Hydra's own node)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return data
