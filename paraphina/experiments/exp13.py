"""Exp13 auto research harness: profiles x seeds with telemetry -> research rows -> summary -> alignment -> report.

    python -m paraphina.experiments.exp13 [ticks=1000 runs_per_profile=1 profiles=[balanced] target=decisive]

Every profile runs the same seeds in one engine batch. The Exp11 alignment of this invocation's rows is recorded
as an Exp11 invocation, so Exp12 can tune from it. PARAPHINA_RISK_PROFILE is ignored: the profiles are explicit.
"""
from __future__ import annotations

import functools
import os
import time
from typing import Sequence
from datetime import datetime, timezone

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.loading import PROFILE_ENV
from paraphina.core.errors import ParaphinaError
from paraphina.config.experiments import Target
from paraphina.core.names import DATASET_SOURCE_TAG, EXPERIMENT_TAG, KIND_TAG, RESEARCH_TABLE_KIND
from paraphina.experiments import alignment, exp11
from paraphina.experiments.cli import print_horizon_note
from paraphina.experiments.profiles import profiles_batch
from paraphina.experiments.sequential_runs import (ProfileRuns, SequentialPlan, announced_plans, check_plans,
                                                   sequential_rounds)
from paraphina.experiments.records import ExperimentRecorder, sweeps_dir
from paraphina.runner.aggregates import aggregate_metrics
from paraphina.runner.batch import config_hash, run_batch
from paraphina.runner.recording import run_params, seed_children, seed_table, table_artifact
from paraphina.runner.telemetry import removed_unless_done
from paraphina.tracking.runs import RunRecord
from paraphina.world_model.summary import format_summary
from paraphina.world_model.verdicts import is_decided

CONFIG_NAME = "exp13"


# --- options -----------------------------------------------------------------------------------


def check(cfg: DictConfig) -> None:
    """What the schema cannot say: every profile has a tier and a plan the first round fits (check_plans), the
    cap covers the first round, and `dataset` names an MLflow dataset."""
    cap = cfg.experiment.decisive.max_runs_per_profile
    if cfg.target == Target.decisive and cap < cfg.runs_per_profile:
        raise ParaphinaError(f"experiment.decisive.max_runs_per_profile={cap} is below "
                             f"runs_per_profile={cfg.runs_per_profile}")
    check_plans(cfg, cfg.profiles, cfg.runs_per_profile if cfg.target == Target.decisive else 0)
    if not cfg.dataset:
        raise ParaphinaError("exp13 needs dataset=NAME: the MLflow research dataset its rows join")
    if alignment.is_dataset_file(cfg.dataset):
        raise ParaphinaError(f"dataset={cfg.dataset} looks like a file; exp13 records into an MLflow dataset "
                             f"(e.g. dataset={os.path.basename(cfg.dataset).removesuffix('.jsonl')}); "
                             f"python -m paraphina.research.transfer exports it to JSONL")


# --- engine runs -------------------------------------------------------------------------------


def run_round(cfg: DictConfig, recorder: ExperimentRecorder, overrides: list[str], profiles: list[str],
              seeds: int, offset: int, telemetry: bool, measured: dict[str, ProfileRuns]) -> dict:
    """One engine batch of profiles x seeds (seed + offset, ...), each run recorded as a research row: a child run
    each, or for as many seeds as `tracking.seed_children` says make a table, one run per profile holding them."""
    batch = profiles_batch(profiles, overrides, CONFIG_NAME, seeds=seeds, base_seed=cfg.seed + offset)
    started = time.perf_counter()
    paths: list = []
    if telemetry:
        run_cfg = batch.cfg.copy()
        run_cfg.telemetry.mode = "jsonl"
        run_cfg.telemetry.path = str(telemetry_dir(cfg, recorder) / "{profile}_s{seed}.jsonl.gz")
        result, paths = run_batch(run_cfg, batch.seeds, batch.per_run, profiles=batch.run_profiles())
    else:
        result = batch.run(f"exp13 {len(profiles)} profiles x {seeds} seeds")
    engine_s = time.perf_counter() - started
    started = time.perf_counter()
    session = recorder.session
    for profile in profiles:
        rows = batch.rows(profile)
        labels = [f"{cfg.label_prefix}_{profile}_r{int(result.seeds[i]) - cfg.seed:03d}" for i in rows]
        pcfg = batch.configs[profile]
        chash, flat, config_yaml = config_hash(pcfg), run_params(pcfg), OmegaConf.to_yaml(pcfg)
        measured[profile].add(result.metrics, rows)
        if seed_children(cfg, len(rows)):
            for i, label in zip(rows, labels):
                record = session.run_record(pcfg, result, i, chash, flat, batch.per_run,
                                            telemetry=paths[i] if paths else None, plot=False, name=label,
                                            config_yaml=config_yaml)
                record.tags.update({"label": label, EXPERIMENT_TAG: cfg.experiment.id})
                session.writer.log(record, recorder.parent_id)
            continue
        table = seed_table(pcfg, result, chash, rows, labels, [paths[i] if paths else None for i in rows],
                           batch.per_run, labels)
        name = f"{labels[0]}-r{labels[-1].rsplit('_r', 1)[1]}"   # the profile's runs as one run, its rows a table
        session.writer.log(RunRecord(
            name=name, params=flat, texts={"config.yaml": config_yaml},
            tags={**session.base_tags(pcfg, chash), KIND_TAG: RESEARCH_TABLE_KIND, EXPERIMENT_TAG: cfg.experiment.id,
                  "runs": str(len(rows))},
            metrics=aggregate_metrics(result, cfg.world_model.confidence, rows),
            artifacts=[table_artifact(table, recorder.tmp / name)]), recorder.parent_id)
    return {"runs": len(result.seeds), "engine_s": engine_s, "record_s": time.perf_counter() - started,
            "telemetry": len(paths)}


def telemetry_dir(cfg: DictConfig, recorder: ExperimentRecorder):
    return sweeps_dir(cfg) / "telemetry" / recorder.parent_id


def apply_sequential(table: pd.DataFrame, plans: dict[str, SequentialPlan]) -> pd.DataFrame:
    """The alignment table with each profile's verdicts replaced by its sequential ones (the fixed-n bounds
    stay, as a description). A finished plan cannot be extended, so no runs-needed count is shown, and the
    fixed-n alarms do not apply to a sample that stopped when decided, so they are dropped."""
    table = table.drop(columns=[f"{b.prefix}_alarm" for b in alignment.BUDGETS], errors="ignore")
    table.attrs.pop("cross_tiers", None)  # fixed-n checks too, on the same optionally stopped sample
    for i, profile in zip(table.index, table["profile"]):
        verdicts = plans[profile].verdicts
        for b in alignment.BUDGETS:
            table.loc[i, [f"{b.prefix}_verdict", f"{b.prefix}_runs_needed"]] = verdicts[b.prefix], pd.NA
        table.loc[i, "verdict"] = alignment.overall_verdict(verdicts.values())
    return table


# --- report ------------------------------------------------------------------------------------


def verdict_cell(row: pd.Series, prefix: str, plan_ended: bool) -> str:
    verdict = row[f"{prefix}_verdict"]
    needed = alignment.needed_text(verdict, row[f"{prefix}_runs_needed"], plan_ended)
    if not needed:
        return verdict
    return f"{verdict} (plan ended)" if plan_ended else f"{verdict} (needs {needed})"


def verdict_matrix(table: pd.DataFrame, plan_ended: bool) -> pd.DataFrame:
    """Per profile: runs, and the verdict on each budget (with the runs needed when inconclusive, or that the
    sequential plan ended)."""
    return pd.DataFrame({
        "profile": table["profile"],
        "runs": table["runs"],
        **{f"{b.estimate} {b.op} budget": [verdict_cell(r, b.prefix, plan_ended) for _, r in table.iterrows()]
           for b in alignment.BUDGETS},
        "overall": table["verdict"],
    })


def conclusion(table: pd.DataFrame, plans: dict[str, SequentialPlan]) -> str:
    """One line saying what the verdicts mean and what would decide the open ones."""
    bad = table.loc[table["verdict"] == "violated", "profile"].tolist()
    open_ = table.loc[table["verdict"] == "inconclusive", "profile"].tolist()
    parts = []
    if bad:
        parts.append(f"VIOLATED: {', '.join(bad)} break a budget (see Exp12 to tune them)")
    if open_ and plans:
        ended = ", ".join(f"{p} at {plans[p].design.cap} runs" for p in open_)
        parts.append(f"UNDECIDED: {', '.join(open_)} (the sequential plan ended at its last look: {ended}; it "
                     f"was powered for a true kill probability of experiment.decisive.planned_fraction x the "
                     f"budget; plan again on fresh seeds with a fraction nearer the observed rate)")
    elif open_:
        needs = [int(v) for b in alignment.BUDGETS for v, verdict in zip(table[f"{b.prefix}_runs_needed"],
                                                                          table[f"{b.prefix}_verdict"])
                 if not is_decided(verdict) and not pd.isna(v)]
        hint = f"up to {max(needs)} runs per profile would decide them" if needs else "more runs would decide them"
        parts.append(f"UNDECIDED: {', '.join(open_)} ({hint}; rerun with target=decisive)")
    return "; ".join(parts) or "all profiles keep every budget"


def markdown_report(header: list[str], matrix: pd.DataFrame, details: pd.DataFrame, summary: str, end: str,
                    confidence: float, plan_ended: bool, note: str) -> str:
    def table_md(df: pd.DataFrame) -> str:
        cols = list(df.columns)
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.astype(object).itertuples(index=False)]
        return "\n".join(lines)

    shown = alignment.shown_verdicts(details, ["profile"], confidence, plan_ended)
    return "\n".join([
        "# Exp13 end-to-end report", "", *[f"- {line}" for line in header], "",
        "## Verdict per profile and budget", "", table_md(matrix), "", f"**{end}**", "",
        "## Budget checks", "", table_md(shown), "",
        note[0].upper() + note[1:], "",
        "## Research summary", "", "```", summary, "```", "",
    ])


# --- the experiment ----------------------------------------------------------------------------


def run(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """Run, record, summarise, align and report; `overrides` are those `cfg` was composed from (every profile
    gets them). Returns the alignment table, report text and run ids."""
    check(cfg)
    overrides = list(overrides)
    measured = {p: ProfileRuns() for p in cfg.profiles}
    tags = {DATASET_SOURCE_TAG: cfg.dataset}
    with ExperimentRecorder(cfg, extra_tags=tags) as recorder, removed_unless_done([telemetry_dir(cfg, recorder)]):
        plans = announced_plans(cfg, list(cfg.profiles)) if cfg.target == Target.decisive else {}
        n = cfg.runs_per_profile
        rounds = [run_round(cfg, recorder, overrides, cfg.profiles, n, 0, True, measured)]
        print(f"round 1: {len(cfg.profiles)} profile(s) x {n} seed(s): engine {rounds[0]['engine_s']:.2f} s, "
              f"{rounds[0]['runs']} research rows recorded in {rounds[0]['record_s']:.2f} s", flush=True)
        if plans:  # the rounds the sequential plans add, recorded as research rows too
            rounds += sequential_rounds(cfg, plans, measured, functools.partial(
                run_round, cfg, recorder, overrides, telemetry=cfg.experiment.decisive.telemetry, measured=measured))

        rows = alignment.load_rows(cfg, cfg.dataset, recorder.parent_id)
        summary = format_summary(rows, int(cfg.experiment.summary_top), cfg.world_model.utility_dd_weight)
        cfg11 = exp11.config_for(cfg, source_run=recorder.parent_id)
        table = exp11.align(cfg11, rows, cfg.dataset)
        if plans:
            table = apply_sequential(table, plans)
        details = alignment.verdict_rows(table, ["profile"])
        matrix = verdict_matrix(table, bool(plans))
        end = conclusion(table, plans)
        total = sum(r["runs"] for r in rounds)
        header = [
            f"dataset `{cfg.dataset}`: {total} research rows, labels `{cfg.label_prefix}_<profile>_rNNN`",
            f"{len(cfg.profiles)} profile(s) x {cfg.runs_per_profile} seed(s)"
            f"{' in the first round' if len(rounds) > 1 else ''} from seed {cfg.seed}, {cfg.ticks} ticks, "
            f"market {cfg.market.scenario}, target {cfg.target} ({len(rounds)} round(s))",
            f"telemetry: {sum(r['telemetry'] for r in rounds)} JSONL file(s) in {telemetry_dir(cfg, recorder)}",
            f"MLflow: exp13 run {recorder.parent_id}, exp11 run {table.attrs['run_id']} ({recorder.session.uri})",
            f"generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%SZ')}",
        ]
        note = alignment.PLAN_ENDED_NOTE if plans else alignment.runs_needed_note(alignment.check_rules(cfg))
        report_md = markdown_report(header, matrix, details, summary, end, cfg.world_model.confidence, bool(plans),
                                    note)
        recorder.finish(
            tables={"exp13_alignment": table, "exp13_verdicts": details, "exp13_report": matrix},
            texts={"exp13_report.md": report_md},
            metrics={"runs": total, "rounds": len(rounds), "engine_s": sum(r["engine_s"] for r in rounds),
                     "record_s": sum(r["record_s"] for r in rounds),
                     **{f"profiles_{v}": int((table["verdict"] == v).sum()) for v in alignment.VERDICTS}})
    return {"table": table, "matrix": matrix, "summary": summary, "report_md": report_md, "conclusion": end,
            "header": header, "run_id": recorder.parent_id, "exp11_run_id": table.attrs["run_id"],
            "cfg11": cfg11, "rows": rows}


def report(result: dict) -> None:
    """Print the research summary, the Exp11 alignment and the end-to-end report."""
    cfg11 = result["cfg11"]
    print(f"\n=== Research summary ({len(result['rows'])} runs of this invocation) ===")
    print(result["summary"].removeprefix("=== Global summary ===\n") + "\n")
    exp11.report(cfg11, result["table"], str(cfg11.dataset))
    print("\n=== Exp13 end-to-end report ===")
    for line in result["header"][:-1]:
        print(line.replace("`", ""))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(result["matrix"].to_string(index=False))
    print(result["conclusion"])


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    started = time.perf_counter()
    print_horizon_note(cfg)
    result = run(cfg, task_overrides())
    report(result)
    print(f"done in {time.perf_counter() - started:.1f} s; report: {sweeps_dir(cfg) / 'exp13_report.md'}")


main = hydra_command(CONFIG_NAME, command, ignored_env=(PROFILE_ENV,))

if __name__ == "__main__":
    main()
