"""Exp10 design vs validation: the latest Exp07 presets and Exp08 validation runs against the tier budgets.

Per tier, the gap validation - design of PnL, drawdown and kill probability: a preset picked as the best of many
on its design seeds looks better there than on fresh seeds (winner's curse), so a negative PnL gap and positive
drawdown and kill gaps are expected.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.errors import ParaphinaError
from paraphina.core.names import PARENT_TAG
from paraphina.experiments import alignment
from paraphina.experiments.cli import print_table
from paraphina.experiments.records import ExperimentRecorder, latest_points, store_uri
from paraphina.tracking.store import tracking_client

PER_SEED_ARTIFACT = "per_seed.csv"
NO_VALIDATION = "no validation records"
NO_DESIGN = "no Exp07 preset"
SEED_OVERLAP = "validation seeds overlap the design seeds"
FIXES = {NO_VALIDATION: "python -m paraphina.experiments.exp08 validates the profiles",
         NO_DESIGN: "python -m paraphina.experiments.exp07 selects a preset per tier",
         SEED_OVERLAP: "rerun python -m paraphina.experiments.exp08 with experiment.seed_offset past the design seeds, "
                       "or the gap cannot show the winner's curse"}
GAP_METRICS = ("pnl_mean", "dd_mean", "kill_prob")
"""Validation minus design, per tier: the winner's-curse gap."""
TABLE_COLUMNS = ("tier", "design_kill_ok", "design_dd_ok", "design_pnl_ok", "design_score", "val_runs", "val_kill_ok",
                 "val_dd_ok", "val_pnl_ok", "val_kill_margin", "val_dd_margin", "val_pnl_margin", "alignment_score",
                 "val_verdict", *(f"gap_{m}" for m in GAP_METRICS), "status")


def validation_runs(cfg: DictConfig) -> tuple[dict[str, pd.DataFrame], str | None]:
    """Per profile, the per-seed runs of the latest Exp08 invocation ({} and None when there is none)."""
    try:
        points, info = latest_points(cfg, "exp08")
    except ParaphinaError:
        return {}, None
    client = tracking_client(store_uri(cfg))
    out: dict[str, list[pd.DataFrame]] = {}
    with tempfile.TemporaryDirectory(prefix="paraphina-exp10-") as tmp:
        for run_id, tags in zip(points.get("run_id", []), info["child_tags"]):
            profile = tags.get("profile")
            if profile is None:
                continue
            try:
                path = client.download_artifacts(run_id, PER_SEED_ARTIFACT, str(Path(tmp) / run_id))
            except Exception as exc:
                raise ParaphinaError(f"exp08 run {run_id} ({profile}) has no {PER_SEED_ARTIFACT} artifact; rerun "
                                     f"python -m paraphina.experiments.exp08") from exc
            out.setdefault(profile, []).append(pd.read_csv(path))
    return {p: pd.concat(tables, ignore_index=True) for p, tables in out.items()}, info["run_id"]


def design_seeds(cfg: DictConfig, source_runs: Iterable[str | None]) -> set[int]:
    """The seeds the presets were chosen on: those of the grid invocations their points belong to (none known
    for presets recorded without their point)."""
    client = tracking_client(store_uri(cfg))
    parents = {client.get_run(run_id).data.tags.get(PARENT_TAG) for run_id in set(source_runs) if run_id}
    seeds: set[int] = set()
    for parent in parents - {None}:
        params = client.get_run(parent).data.params
        if "seed" in params and "seeds" in params:
            first = int(params["seed"])
            seeds.update(range(first, first + int(params["seeds"])))
    return seeds


def run(cfg: DictConfig) -> pd.DataFrame:
    tiers = alignment.load_tiers(cfg)
    design, design_run = alignment.latest_presets(cfg)
    validation, validation_run = validation_runs(cfg)
    chosen_on = design_seeds(cfg, design["source_run_id"])
    rows, val_checks = [], []
    for name, tier in tiers.items():
        row: dict = {"tier": name}
        status = []
        preset = design[design["tier"] == name]
        if preset.empty:
            status.append(NO_DESIGN)
        else:
            p = preset.iloc[0]
            row.update(design_run=p["run_name"], design_relaxed=bool(p["relaxed"]))
            point = alignment.point_checks(tier, p["pnl_mean"], p["pnl_std"], p["dd_mean"], p["kill_prob"])
            row.update({f"design_{k}": v for k, v in point.items()})
        runs = validation.get(name)
        if runs is None or runs.empty:
            status.append(NO_VALIDATION)
        else:
            if chosen_on & set(runs["seed"].astype(int)):
                status.append(SEED_OVERLAP)
            checks = alignment.run_checks(tier, runs, alignment.check_rules(cfg))
            val_checks.append(checks)
            row.update({f"val_{k}": v for k, v in checks.items() if k != "tier"})
            row["alignment_score"] = row.pop("val_score")
            if "design_pnl_mean" in row:
                row.update({f"gap_{m}": row[f"val_{m}"] - row[f"design_{m}"] for m in GAP_METRICS})
        row["status"] = "; ".join(status) or "ok"
        rows.append(row)
    table = pd.DataFrame(rows)
    counts = ("val_runs", "val_kills", *(f"val_{b.prefix}_runs_needed" for b in alignment.BUDGETS))
    table = table.astype({c: "Int64" for c in counts if c in table})
    verdicts = alignment.verdict_rows(alignment.checks_frame(val_checks), ["tier"]) if val_checks else None
    tags = {"paraphina.source.exp07": design_run}
    if validation_run:
        tags["paraphina.source.exp08"] = validation_run
    with ExperimentRecorder(cfg, extra_tags=tags) as recorder:
        for _, row in table.iterrows():
            recorder.log_point(f"tier-{row['tier']}", {"tier": row["tier"]}, alignment.record_metrics(row),
                               tags={**alignment.record_tags(row, ["tier"]), "status": row["status"]})
        recorder.finish(tables={"exp10_alignment": table,
                                **({"exp10_verdicts": verdicts} if verdicts is not None else {})},
                        metrics={"tiers_validated": len(val_checks)})
    table.attrs["verdicts"] = verdicts
    table.attrs["run_id"] = recorder.parent_id
    return table


def report(cfg: DictConfig, table: pd.DataFrame) -> None:
    print_table(table, TABLE_COLUMNS,
                title="=== Exp10 design (exp07) vs validation (exp08), margins positive = safe ===")
    verdicts = table.attrs.get("verdicts")
    if verdicts is not None:
        print("\nValidation verdicts:")
        print(alignment.format_verdicts(verdicts, ["tier"], cfg.world_model.confidence,
                                        alignment.check_rules(cfg)))
    for _, row in table.iterrows():
        for problem in row["status"].split("; ") if row["status"] != "ok" else []:
            print(f"note: tier {row['tier']}: {problem} ({FIXES[problem]})")


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    report(cfg, run(cfg))


main = hydra_command("exp10", command)

if __name__ == "__main__":
    main()
