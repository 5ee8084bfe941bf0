"""Names shared by the engine, config, telemetry, research rows and MLflow, each defined once; KNOB_CONFIG_KEYS
is the one table that maps a research knob's name to the config key that sets it."""
from __future__ import annotations

# Run-level metrics (ENGINE_SPEC section 5): engine results, telemetry summaries, research rows, MLflow metrics.
METRIC_KEYS: tuple[str, ...] = ("num_ticks", "final_pnl", "max_pnl", "min_pnl", "max_drawdown", "frac_normal",
                                "frac_warning", "frac_hard", "kill_switch", "time_to_kill", "max_abs_delta_usd",
                                "max_abs_basis_usd")
# Microstructure facts of a run (ENGINE_SPEC section 5, version 2): engine results and MLflow metrics; a
# telemetry file does not carry them.
MICROSTRUCTURE_KEYS: tuple[str, ...] = ("mm_fill_rate", "spread_capture_bps", "markout_30s_bps", "net_edge_bps",
                                        "hedge_cost_usd")
REGIME_NAMES: tuple[str, ...] = ("Normal", "Warning", "HardLimit")   # risk regime codes 0, 1, 2
REGIME_FRACTIONS: tuple[str, ...] = ("frac_normal", "frac_warning", "frac_hard")   # a session's share per regime
STATUS_NAMES: tuple[str, ...] = ("Healthy", "Warning", "Disabled")   # venue status codes 0, 1, 2

# Research name of each knob -> the config key that sets it.
KNOB_CONFIG_KEYS: dict[str, str] = {
    "band_base": "engine.hedge.band_base",
    "mm_size_eta": "engine.mm.size_eta",
    "vol_ref": "engine.volatility.vol_ref",
    "daily_loss_limit": "engine.risk.daily_loss_limit",
    "init_q_tao": "engine.initial_q_tao",
    "vol_scale": "market.vol_scale",
    "delta_hard_limit_usd_base": "engine.risk.delta_hard_limit_usd_base",
}
ROW_KNOBS: tuple[str, ...] = ("band_base", "mm_size_eta", "vol_ref", "daily_loss_limit", "init_q_tao", "vol_scale")
"""The knobs a research row carries (the original dataset format), in its column order."""
PROFILE_KNOBS: dict[str, str] = {knob: KNOB_CONFIG_KEYS[knob] for knob in (
    "band_base", "mm_size_eta", "vol_ref", "daily_loss_limit", "init_q_tao", "delta_hard_limit_usd_base")}
"""The knobs a profile sets (ENGINE_SPEC section 6, conf/profile/*.yaml) and their config keys."""

TELEMETRY_PLACEHOLDERS: tuple[str, ...] = ("seed", "profile", "job")
"""What `{name}` in a telemetry path may name: each run's seed, its profile, the job of a Hydra multirun."""

PARENT_ENV = "PARAPHINA_MULTIRUN_PARENT"   # the parent run id of a multirun, for its jobs

# MLflow tags and the values of KIND_TAG.
PARENT_TAG = "mlflow.parentRunId"
KIND_TAG = "paraphina.kind"
EXPERIMENT_TAG = "paraphina.experiment"
DATASET_TAG = "dataset"                      # a research row's dataset
DATASET_SOURCE_TAG = "paraphina.dataset"     # the dataset a batch parent or an experiment read or wrote
SOURCE_RUN_TAG = "paraphina.source_run"
DD_STATISTICS = ("mean", "p95")   # what a drawdown budget can judge (world_model.dd_statistic)
PART_SUFFIX = ".part"   # a telemetry file being written: <name>.<pid>@<host>.part until its batch completes
SEED_OFFSET_TAG = "paraphina.seed_offset"    # Exp08: its seeds start this far past the design seeds
TOOL_TAG = "paraphina.tool"
IMPORT_TAG = "dataset_import"
STUDY_TAG = "paraphina.study"
TRIAL_TAG = "paraphina.trial"
STUDY_UIDS_TAG = "paraphina.study_uids"
FEASIBLE_TAG = "paraphina.feasible"
COMMAND_TAG = "paraphina.command"
HOST_TAG = "paraphina.host"                  # the machine and process that wrote a run: a RUNNING run whose
PID_TAG = "paraphina.pid"                    # process is gone was stopped (kill -9) and is marked KILLED
PID_STARTED_TAG = "paraphina.pid_started"    # that process's boot id and start ticks: a reused pid differs
ROW_KEY_TAG = "paraphina.row_key"            # a research row's key: a rerun replaces the row, never doubles it
ENGINE_RUN_KIND = "engine_run"
MULTIRUN_KIND = "multirun"
EXPERIMENT_KIND = "experiment"
POINT_KIND = "point"
RESEARCH_ROW_KIND = "research_row"
RESEARCH_TABLE_KIND = "research_table"       # a batch recorded as one run, its seeds' rows in a table
DATASET_IMPORT_KIND = "dataset_import"
