"""`python -m paraphina.calibrate`: measure the default market against ENGINE_SPEC section 9.

Runs every profile over N seeds in one engine batch each, with every run's rows recorded every
`experiment.probe_every` ticks, and prints the per-profile table the README shows plus a pass/fail line
per acceptance criterion.
"""
from __future__ import annotations


import numpy as np
import pandas as pd

from paraphina.config.loading import compose_config
from paraphina.config.commands import command_overrides
from paraphina.core.cli import cli_errors
from paraphina.engine.simulate import TickRows
from paraphina.runner.batch import run_batch


class CalibrationProbe:
    """What section 9 asks about, from the recorded rows of every run of a batch."""

    def __init__(self, rows: TickRows) -> None:
        runs = [rows.of(j) for j in range(len(rows.runs))]
        every = np.concatenate(runs)
        self.quoted = float(every["mm_quoted_sides"].sum())
        self.filled = float(every["mm_fills"].sum())
        self.hedge_runs = sum(bool((r["hedge_volume_tao"] > 0).any()) for r in runs)
        self.spread_up_ticks = int((every["spread_mult"] > 1.0).sum())
        self.sigma_above_ref_ticks = int((every["vol_ratio"] > 1.0).sum())
        calm = every["market_stressed"] == 0.0
        error = np.abs(np.log(every["fair_value"] / every["y_mid"]))
        self.calm_errors = error[calm & np.isfinite(error)]


def profile_table(cfg_overrides: list[str], profiles: list[str], seeds: int) -> tuple[pd.DataFrame, dict]:
    rows, probes = [], {}
    for profile in profiles:
        cfg = compose_config([f"+profile={profile}", f"runs={seeds}", *cfg_overrides], "calibrate")
        result, _ = run_batch(cfg, rows_every=cfg.experiment.probe_every)
        probe = CalibrationProbe(result.rows)
        m = result.metrics
        rows.append({"profile": profile, "runs": seeds, "pnl_mean": m["final_pnl"].mean(),
                     "pnl_std": m["final_pnl"].std(ddof=1), "dd_mean": m["max_drawdown"].mean(),
                     "kill_prob": m["kill_switch"].mean(), "frac_normal": m["frac_normal"].mean(),
                     "frac_warning": m["frac_warning"].mean(), "frac_hard": m["frac_hard"].mean()})
        probes[profile] = probe
    return pd.DataFrame(rows).set_index("profile"), probes


def jump_check(cfg_overrides: list[str], scenario: str, seeds: int) -> int:
    cfg = compose_config([f"market={scenario}", f"runs={seeds}", *cfg_overrides], "calibrate")
    result, _ = run_batch(cfg, rows_every=cfg.experiment.probe_every)
    return CalibrationProbe(result.rows).sigma_above_ref_ticks


@cli_errors
def main(argv: list[str] | None = None) -> None:
    overrides = command_overrides(argv, "calibrate", __doc__)
    base = compose_config(overrides, "calibrate")
    exp = base.experiment
    print(f"calibration: market={base.market.scenario}  {exp.seeds} seeds x {base.ticks} ticks per profile")
    table, probes = profile_table(overrides, list(exp.profiles), exp.seeds)
    with pd.option_context("display.float_format", "{:,.3f}".format, "display.width", 140):
        print(table.to_string())
    low, high = exp.fill_rate_range
    checks = []
    for profile, probe in probes.items():
        rate = probe.filled / max(probe.quoted, 1.0)
        checks.append((f"{profile}: MM fill rate per quoted side {rate:.1%}", low <= rate <= high))
        checks.append((f"{profile}: hedges fired in {probe.hedge_runs} of {exp.seeds} runs", probe.hedge_runs > 0))
    checks.append(("Warning occurs on some ticks", table["frac_warning"].max() > 0))
    checks.append(("HardLimit occurs on some ticks", table["frac_hard"].max() > 0))
    spread_up = sum(p.spread_up_ticks for p in probes.values())
    checks.append((f"vol controls move: spread_mult > 1 on {spread_up} run-ticks", spread_up > 0))
    agg, cons = table.loc["aggressive", "kill_prob"], table.loc["conservative", "kill_prob"]
    checks.append((f"aggressive kill probability {agg:.3f} strictly between 0 and 1", 0 < agg < 1))
    checks.append((f"conservative kill probability {cons:.3f} not above aggressive's", cons <= agg))
    checks.append(("final PnL spreads across seeds", bool((table["pnl_std"] > 0).all())))
    calm = np.concatenate([p.calm_errors for p in probes.values()])
    median = float(np.median(calm))
    checks.append((f"calm tracking: median |ln(fair / y_mid)| {median:.5f}", median < exp.max_calm_tracking_error))
    for scenario in exp.jump_scenarios:
        ticks = jump_check(overrides, scenario, exp.seeds)
        checks.append((f"{scenario}: sigma_eff above vol_ref on {ticks} run-ticks", ticks > 0))
    for text, ok in checks:
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")


if __name__ == "__main__":
    main()
