"""Exp12 safety tuner: shrink the latest Exp07 presets where the latest Exp11 alignment shows too much risk.

    python -m paraphina.experiments.exp12 [experiment.threshold=1.05 experiment.floor=0.1]

The rule is world_model.safety.tune_preset; the tuned profiles are written as sweeps/exp12/profile/<tier>.yaml.
"""
from __future__ import annotations

import pandas as pd
from omegaconf import DictConfig

from paraphina.config.commands import hydra_command
from paraphina.core.names import PROFILE_KNOBS
from paraphina.core.errors import ParaphinaError
from paraphina.experiments import alignment
from paraphina.experiments.cli import print_table
from paraphina.experiments.profiles import profile_yaml
from paraphina.experiments.records import ExperimentRecorder, latest_points, sweeps_dir
from paraphina.world_model.safety import tune_preset

REPORT_KNOBS = ("band_base", "mm_size_eta", "init_q_tao", "delta_hard_limit_usd_base", "daily_loss_limit")
RATIOS = ("risk_scale", "dd_ratio", "kill_ratio")
NO_ALIGNMENT = "no Exp11 alignment for this tier: exposure not scaled (the loss-limit rule still applies)"


def measured_risk(cfg: DictConfig) -> tuple[dict[str, dict[str, float]], str]:
    """Per tier, the runs, drawdown mean and kill probability of the latest Exp11 invocation (groups pooled)."""
    groups, info = latest_points(cfg, "exp11")
    out: dict[str, dict[str, float]] = {}
    needed = ("tier", "runs", "kills", "dd_mean")
    if groups.empty or any(c not in groups for c in needed):
        raise ParaphinaError(f"the latest exp11 run {info['run_id']} has no alignment groups; rerun "
                             f"python -m paraphina.experiments.exp11 dataset=NAME")
    for tier, g in groups.groupby("tier", sort=False):
        runs = float(g["runs"].sum())
        out[str(tier)] = {"runs": runs, "dd_mean": float((g["dd_mean"] * g["runs"]).sum() / runs),
                          "kill_prob": float(g["kills"].sum() / runs)}
    return out, info["run_id"]


def tune(cfg: DictConfig, preset: pd.Series, tier, risk: dict | None) -> tuple[dict, dict]:
    """(tuned knobs by research name plus ratios, report row) for one tier."""
    ex = cfg.experiment
    knobs = {k: float(preset[k]) for k in PROFILE_KNOBS}
    measured = (0.0, 0.0) if risk is None else (risk["dd_mean"], risk["kill_prob"])
    result = tune_preset(knobs, tier, *measured,
                         loss_tighten_threshold=ex.loss_tighten_threshold, threshold=ex.threshold, floor=ex.floor)
    tuned = {k: float(v) for k, v in result.items()}
    if risk is None:
        tuned.update(dd_ratio=float("nan"), kill_ratio=float("nan"))
    return tuned, {"tier": tier.name, **{k: tuned[k] for k in RATIOS},
                   **{f"{k}_{end}": v[k] for k in REPORT_KNOBS for end, v in (("before", knobs), ("after", tuned))},
                   "loss_limit_tightened": tuned["daily_loss_limit"] < knobs["daily_loss_limit"],
                   "note": NO_ALIGNMENT if risk is None else ""}


def run(cfg: DictConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    ex = cfg.experiment
    if not (0 < ex.floor <= 1) or ex.threshold <= 0 or ex.loss_tighten_threshold <= 0:
        raise ParaphinaError(f"need 0 < floor <= 1 and positive thresholds, got floor={ex.floor}, "
                             f"threshold={ex.threshold}, loss_tighten_threshold={ex.loss_tighten_threshold}")
    tiers = alignment.load_tiers(cfg)
    presets, exp07_run = alignment.latest_presets(cfg)
    risk, exp11_run = measured_risk(cfg)
    missing = [c for c in PROFILE_KNOBS if c not in presets]
    if missing:
        raise ParaphinaError(f"exp07 run {exp07_run} presets lack {', '.join(missing)}; rerun exp07")
    tuned_rows, report_rows, files = [], [], {}
    for name, tier in tiers.items():
        preset = presets[presets["tier"] == name]
        if preset.empty:
            continue
        tuned, report = tune(cfg, preset.iloc[0], tier, risk.get(name))
        tuned_rows.append({"tier": name, "preset_run": preset.iloc[0]["run_name"],
                           **{k: tuned[k] for k in (*PROFILE_KNOBS, *RATIOS)},
                           **{k: risk.get(name, {}).get(k) for k in ("runs", "dd_mean", "kill_prob")}})
        report_rows.append(report)
        comment = (f"Tuned by exp12 for tier {name} from exp07 preset {preset.iloc[0]['run_name']} (run {exp07_run}) "
                   f"and exp11 run {exp11_run}:\nrisk_scale {tuned['risk_scale']:.4g}, dd_ratio "
                   f"{tuned['dd_ratio']:.4g}, kill_ratio {tuned['kill_ratio']:.4g}. "
                   f"Copy to conf/profile/{name}.yaml to adopt it.")
        files[name] = profile_yaml(name, {k: tuned[k] for k in PROFILE_KNOBS}, comment)
    if not tuned_rows:
        raise ParaphinaError(f"exp07 run {exp07_run} has no preset for any tier ({', '.join(tiers)})")
    tuned_table, report_table = pd.DataFrame(tuned_rows), pd.DataFrame(report_rows)
    profile_dir = sweeps_dir(cfg) / "profile"
    profile_dir.mkdir(parents=True, exist_ok=True)
    tags = {"paraphina.source.exp07": exp07_run, "paraphina.source.exp11": exp11_run}
    with ExperimentRecorder(cfg, extra_tags=tags) as recorder:
        for row, report in zip(tuned_rows, report_rows):
            name = row["tier"]
            (profile_dir / f"{name}.yaml").write_text(files[name])
            recorder.log_point(f"tuned-{name}", {k: row[k] for k in PROFILE_KNOBS} | {"tier": name},
                               alignment.record_metrics({k: v for k, v in report.items() if k != "tier"}),
                               tags={"tier": name}, texts={f"profile/{name}.yaml": files[name]})
        recorder.finish(tables={"exp12_tuned_presets": tuned_table, "exp12_tuning_report": report_table},
                        metrics={"tiers_tuned": int((report_table["risk_scale"] < 1).sum()),
                                 "loss_limits_tightened": int(report_table["loss_limit_tightened"].sum())})
    tuned_table.attrs["profile_dir"] = profile_dir
    return tuned_table, report_table


def changes_text(cfg: DictConfig, report: pd.DataFrame, profile_dir) -> str:
    """The proposed changes, one block per tier."""
    ex = cfg.experiment
    lines = []
    for _, r in report.iterrows():
        changed = [k for k in REPORT_KNOBS if r[f"{k}_after"] != r[f"{k}_before"]]
        if r["note"]:
            head = f"{r['tier']}: {r['note']}"
        else:
            reasons = [f"{what} ratio {r[col]:.3g}" + (f" > {ex.threshold:g}" if r[col] > ex.threshold else "")
                       for what, col in (("drawdown", "dd_ratio"), ("kill", "kill_ratio"))]
            head = f"{r['tier']}: risk_scale {r['risk_scale']:.4g} ({', '.join(reasons)})"
        lines.append(head if changed else f"{head}; unchanged")
        for k in changed:
            why = f"  (above {ex.loss_tighten_threshold:g} x the drawdown budget: tightened to it)" \
                if k == "daily_loss_limit" else ""
            lines.append(f"  {k:<26} {r[f'{k}_before']:>12,.6g} -> {r[f'{k}_after']:,.6g}{why}")
    lines.append(f"ready profile files: {profile_dir}/<tier>.yaml (copy to conf/profile/ to adopt)")
    return "\n".join(lines)


def command(cfg: DictConfig) -> None:
    """What the command line runs: the experiment, then its tables on the console."""
    tuned, report = run(cfg)
    print_table(tuned, ["tier", *PROFILE_KNOBS, *RATIOS], title="=== Exp12 tuned presets ===")
    print("\n" + changes_text(cfg, report, tuned.attrs["profile_dir"]))


main = hydra_command("exp12", command)

if __name__ == "__main__":
    main()
