"""Exp11 research vs world-model alignment: the runs of a research dataset against their tier's budgets.

    python -m paraphina.experiments.exp11 dataset=X [profile=balanced label_contains=exp13 by_label=true]

`profile=`, `label_contains=` and `source_run=` are the original tool's spellings of `filter.*`.
"""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.config.loading import PROFILE_ENV, compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import DATASET_SOURCE_TAG, SOURCE_RUN_TAG
from paraphina.experiments import alignment
from paraphina.experiments.cli import print_table
from paraphina.experiments.records import ExperimentRecorder, store_uri

CONFIG_NAME = "exp11"
TABLE_COLUMNS = ("profile", "label", "tier", "runs", "pnl_mean", "dd_mean", "kill_prob", "pnl_ok", "dd_ok", "kill_ok",
                 "pnl_margin", "dd_margin", "kill_margin", "score", "verdict")


def config_for(cfg: DictConfig, **filters: str | None) -> DictConfig:
    """The default Exp11 config on `cfg`'s store, paths, world model and dataset (e.g. Exp13's), with `filters` set."""
    out = compose_config([], CONFIG_NAME, environ={})
    out.tracking, out.world_model, out.paths, out.dataset = cfg.tracking, cfg.world_model, cfg.paths, cfg.dataset
    out.filter.update(filters)
    return out


def group_keys(cfg: DictConfig) -> list[str]:
    return ["profile", "label"] if cfg.by_label else ["profile"]


def run(cfg: DictConfig) -> pd.DataFrame:
    """Load the dataset named by `dataset` (MLflow, or a JSONL file) and record its alignment."""
    dataset = cfg.get("dataset")
    if not dataset:
        existing = ""
        try:
            from paraphina.tracking.datasets import list_datasets

            names = list_datasets(store_uri(cfg))
            existing = f"; datasets there: {', '.join(names) or 'none yet'}"
        except ParaphinaError:
            pass
        raise ParaphinaError(f"exp11 needs dataset=NAME (an MLflow dataset) or dataset=FILE.jsonl{existing}")
    return align(cfg, alignment.load_rows(cfg, str(dataset), cfg.filter.source_run), str(dataset))


def align(cfg: DictConfig, rows: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The alignment table of research rows, recorded as an Exp11 parent with one child per group; its
    attrs["notes"] say which profiles were skipped for want of a tier, repeated runs and mixed run lengths."""
    rows_filter = cfg.filter
    tiers = alignment.load_tiers(cfg)
    source = f"dataset '{dataset}'" + (f" (run {rows_filter.source_run})" if rows_filter.source_run else "")
    rows = alignment.filter_rows(rows, source, tiers, rows_filter.profile, rows_filter.label_contains)
    rows, notes = alignment.drop_untiered(rows, tiers, source)
    repeated = alignment.repeated_runs_note(rows, source)
    notes += ([repeated] if repeated else []) + alignment.mixed_ticks_notes(rows, source)
    table = alignment.group_checks(rows, tiers, alignment.check_rules(cfg), cfg.by_label)
    across = alignment.cross_tiers(rows, tiers, alignment.check_rules(cfg))
    keys = group_keys(cfg)
    tags = {DATASET_SOURCE_TAG: dataset}
    if rows_filter.source_run:
        tags[SOURCE_RUN_TAG] = rows_filter.source_run
    with ExperimentRecorder(cfg, extra_tags=tags) as recorder:
        for _, row in table.iterrows():
            name = "-".join(str(row[k]) or "unlabelled" for k in keys)
            recorder.log_point(name, {k: row[k] for k in [*keys, "tier"]}, alignment.record_metrics(row),
                               tags=alignment.record_tags(row, [*keys, "tier"]))
        verdicts = alignment.verdict_rows(table, keys)
        recorder.finish(tables={"exp11_alignment": table, "exp11_verdicts": verdicts, "exp11_cross_tiers": across},
                        metrics={"groups": len(table), "runs": int(table["runs"].sum()),
                                 **{f"groups_{v}": int((table["verdict"] == v).sum()) for v in alignment.VERDICTS}},
                        texts={"exp11_notes.txt": "\n".join(notes or ["(none)"]) + "\n"})
    table.attrs["notes"] = notes
    table.attrs["cross_tiers"] = across
    table.attrs["run_id"] = recorder.parent_id
    return table


def report(cfg: DictConfig, table: pd.DataFrame, dataset: str) -> None:
    """Print the alignment table, the verdicts and the notes."""
    keys = group_keys(cfg)
    print_table(table, [c for c in TABLE_COLUMNS if c != "label" or "label" in keys],
                title=f"=== Exp11 alignment: dataset {dataset}, {int(table['runs'].sum())} runs "
                      f"(margins positive = safe side) ===")
    print("\n" + alignment.format_verdicts(alignment.verdict_rows(table, keys), keys, cfg.world_model.confidence,
                                    alignment.check_rules(cfg)))
    print(alignment.alarm_text(table, keys, alignment.check_rules(cfg).alpha))
    across = table.attrs.get("cross_tiers")
    if across is not None and across.shape[1] > 2:
        print_table(across, title="\nevery profile against every tier (overall verdict; violated! = a Holm alarm)")
    for note in table.attrs.get("notes", []):
        print(f"note: {note}")


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    report(cfg, run(cfg), str(cfg.dataset))


main = hydra_command(CONFIG_NAME, command, ignored_env=(PROFILE_ENV,))

if __name__ == "__main__":
    main()
