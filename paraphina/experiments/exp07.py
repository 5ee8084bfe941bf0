"""Exp07 optimal presets: per risk tier, the best point of the latest Exp04 grid within the tier's budgets.

    python -m paraphina.experiments.exp07 [experiment.top_n=3]

A tier that no point satisfies is relaxed to the closest points, with a warning, rather than left empty. With
experiment.install=true each tier's best preset replaces conf/profile/<tier>.yaml (refused for a relaxed one).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.config.loading import CONF_DIR
from paraphina.core.names import PROFILE_KNOBS
from paraphina.core.errors import ParaphinaError
from paraphina.core.stops import uninterrupted
from paraphina.experiments.cli import print_table
from paraphina.experiments.grid import PER_RUN_SECTIONS
from paraphina.experiments.profiles import profile_yaml
from paraphina.experiments.records import ExperimentRecorder, latest_points, sweeps_dir
from paraphina.world_model.presets import METRIC_COLUMNS, select_presets
from paraphina.world_model.tiers import tiers_from_mapping

MARGIN_COLUMNS = ("kill_margin", "dd_margin", "pnl_margin")
RELAXED = "outside the tier's budgets, its kill headroom or the regime envelope (the warning names which)"


def candidates(cfg: DictConfig, source: str, extra: tuple[str, ...] = ()) -> tuple[pd.DataFrame, str]:
    """The latest grid of `source` (one row per point: its full profile knobs and its metrics, and `extra` metrics)
    and the source parent's run id. Knobs the grid varied come from each point's params, the rest from the parent."""
    points, parent = latest_points(cfg, source)
    varied = [c for c in points.columns if c.startswith(tuple(f"{s}." for s in PER_RUN_SECTIONS))
              and c not in PROFILE_KNOBS.values() and points[c].nunique() > 1]
    if varied:
        raise ParaphinaError(f"the latest {source} grid varies {', '.join(varied)}, which a profile does not set: its "
                             f"presets could not reproduce their points; sweep only profile knobs "
                             f"({', '.join(PROFILE_KNOBS.values())})")
    table = pd.DataFrame({"source_run": points["run_name"], "source_run_id": points["run_id"]})
    for knob, key in PROFILE_KNOBS.items():
        if key in points.columns:
            table[knob] = points[key].astype(float)
        elif key in parent["params"]:
            table[knob] = float(parent["params"][key])
        else:
            raise ParaphinaError(f"the latest {source} records lack '{key}'; rerun python -m "
                                 f"paraphina.experiments.{source}")
    metrics = (*METRIC_COLUMNS, *extra)
    missing = [c for c in metrics if c not in points.columns]
    if missing:
        raise ParaphinaError(f"the latest {source} points lack metric(s) {', '.join(missing)}")
    for column in metrics:
        table[column] = points[column].astype(float)
    # Grid order rather than the store's, so ties in selection go to the smallest knobs.
    return table.sort_values(list(PROFILE_KNOBS), kind="stable", ignore_index=True), parent["run_id"]


def run(cfg: DictConfig) -> pd.DataFrame:
    """Select, record a child per tier and rank, write the presets CSV and one profile YAML per tier."""
    tiers = tiers_from_mapping(cfg.world_model.tiers)
    source = cfg.experiment.source
    envelope = {k: tuple(v) for k, v in cfg.world_model.regime_envelope.items()} if cfg.experiment.envelope else {}
    table, source_parent = candidates(cfg, source, tuple(envelope))
    presets, warnings = select_presets(table, tiers, cfg.experiment.top_n, cfg.experiment.kill_headroom, envelope)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    best = presets[presets["rank"] == 1]
    for _, shared in best.groupby("source_run_id", sort=False):
        if len(shared) > 1:
            print(f"note: tiers {', '.join(shared['tier'])} share the preset {shared['source_run'].iloc[0]}: on this "
                  f"grid the tiers allowing more risk gain no score from it", file=sys.stderr)
    with ExperimentRecorder(cfg, {f"source.{source}": source_parent}) as recorder:
        texts = {}
        for row in presets.to_dict("records"):
            name = f"preset-{row['tier']}" + ("" if row["rank"] == 1 else f"-{row['rank']}")
            knobs = {knob: row[knob] for knob in PROFILE_KNOBS}
            recorder.log_point(name, knobs,
                               {k: row[k] for k in (*METRIC_COLUMNS, *envelope, "score", *MARGIN_COLUMNS)},
                               tags={"tier": row["tier"], "relaxed": str(row["relaxed"]).lower(),
                                     "rank": str(row["rank"]), "source_run": row["source_run_id"]})
            if row["rank"] == 1:
                comment = (f"Exp07 preset for tier {row['tier']}: {source} point {row['source_run']}, "
                           f"score {row['score']:.2f}" + (f", RELAXED: {RELAXED}" if row["relaxed"] else ""))
                texts[f"{row['tier']}.yaml"] = profile_yaml(row["tier"], knobs, comment)
        folder = Path(cfg.experiment.install_dir or CONF_DIR / "profile")
        staged = stage_profiles(presets, texts, folder) if cfg.experiment.install else []
        try:
            recorder.finish(tables={"exp07_presets": presets}, texts=texts)
        except BaseException:
            for path, _ in staged:
                path.unlink(missing_ok=True)
            raise
    install_profiles(staged)
    return presets


def stage_profiles(presets: pd.DataFrame, texts: dict[str, str], folder: Path) -> list[tuple[Path, Path]]:
    """Write each tier's rank-1 preset beside <folder>/<tier>.yaml; (staged, live) pairs for install_profiles.
    A relaxed preset, a missing folder or a failed write stops it with nothing live touched."""
    best = presets[presets["rank"] == 1]
    relaxed = best.loc[best["relaxed"], "tier"].tolist()
    if relaxed:
        raise ParaphinaError(f"not installed: the preset of tier(s) {', '.join(relaxed)} is relaxed ({RELAXED}); "
                             f"widen the source grid or tune with python -m paraphina.experiments.exp12")
    if not folder.is_dir():
        raise ParaphinaError(f"not installed: no folder {folder}; create it or set experiment.install_dir")
    pairs = [(folder / f".{name}.new", folder / name) for name in texts]
    try:
        for (staged, _), text in zip(pairs, texts.values()):
            staged.write_text(text)
    except OSError as exc:
        for staged, _ in pairs:
            staged.unlink(missing_ok=True)
        raise ParaphinaError(f"not installed: cannot write in {folder} ({exc.strerror})") from exc
    return pairs


def install_profiles(pairs: list[tuple[Path, Path]]) -> None:
    """Move the staged profiles over the live ones once the Exp07 run that chose them is recorded, as one
    block a stop signal does not cut (renames within one folder do not fail half-way for want of space)."""
    with uninterrupted():
        for staged, live in pairs:
            os.replace(staged, live)
    for _, live in pairs:
        print(f"installed {live}")


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    presets = run(cfg)
    envelope = list(cfg.world_model.regime_envelope) if cfg.experiment.envelope else []
    print_table(presets, ["tier", "rank", "relaxed", "source_run", "score", *METRIC_COLUMNS, *envelope,
                          *MARGIN_COLUMNS],
                title=f"Exp07 presets per risk tier (from the latest {cfg.experiment.source} grid)")
    print(f"presets and ready profiles (<tier>.yaml) in {sweeps_dir(cfg)}")


main = hydra_command("exp07", command)

if __name__ == "__main__":
    main()
