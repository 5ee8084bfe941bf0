"""`python -m paraphina.calibrate`: every profile on the default market against the targets of ENGINE_SPEC
section 9 (version 2), then the microstructure facts per market scenario and the profiles' kill-probability order."""
from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from scipy import stats

from paraphina.config.commands import hydra_command, task_overrides
from paraphina.config.loading import compose_config
from paraphina.core.errors import ParaphinaError
from paraphina.engine.simulate import BatchResult
from paraphina.experiments.cli import print_horizon_note
from paraphina.runner.batch import run_batch

FIGURES = (  # the rows of the target table: (key in `experiment.targets` and `figures`, label, unit)
    ("fill_rate", "MM fills per quoted side per second", "%"),
    ("half_spread_ratio", "quoted half-spread / book half-spread", "x"),
    ("spread_capture_bps", "spread capture", "bps"),
    ("adverse_share", "adverse selection: -30 s markout / spread capture", "x"),
    ("net_edge_bps", "net edge per MM notional, after fees and hedging", "bps"),
    ("daily_sharpe", "session PnL mean / std", "x"),
    ("frac_normal", "regime Normal", "%"),
    ("frac_warning", "regime Warning", "%"),
    ("frac_hard", "regime HardLimit", "%"),
    ("calm_sigma_bps", "calm sigma (per sqrt(s), jumps apart)", "bps"),
    ("big_jumps_per_day", "jumps of 2 % or more per day", "/day"),
    ("stressed_disabled", "venues Disabled in the stressed regime", "%"),
    ("calm_disabled", "venues Disabled in the calm regime", "%"),
    ("tracking_error", "fair-value tracking in calm: median |ln(fair / S)|", "%"),
)


def figures(cfg: DictConfig, result: BatchResult) -> dict[str, float]:
    """Every figure of the target table for one batch."""
    m, c = result.metrics, result.calibration
    notional = c["mm_notional"]
    traded = notional.sum() > 0
    capture = float(m["spread_capture_bps"] @ notional / notional.sum()) if traded else 0.0
    markout = float(m["markout_30s_bps"] @ notional / notional.sum()) if traded else 0.0
    pnl = m["final_pnl"]
    jumps = cfg.market.jumps
    big = cfg.experiment.big_jump
    p_big = stats.norm.sf(big, jumps.mean, jumps.std) + stats.norm.cdf(-big, jumps.mean, jumps.std) if jumps.std > 0 \
        else float(abs(jumps.mean) >= big)
    every = np.concatenate([result.rows.of(j) for j in range(len(result.rows.runs))])
    calm = every["market_stressed"] == 0.0
    error = np.abs(np.log(every["fair_value"][calm] / every["true_fair"][calm]))
    return {
        "fill_rate": float(m["mm_fill_rate"] @ c["quoted_sides"] / max(c["quoted_sides"].sum(), 1.0)),
        "half_spread_ratio": float(c["quoted_half_bps"].sum() / max(c["book_half_bps"].sum(), 1e-12)),
        "spread_capture_bps": float(capture),
        "adverse_share": float(-markout / capture) if capture else float("nan"),
        "net_edge_bps": float(pnl.sum() / notional.sum() * 1e4) if traded else 0.0,
        "daily_sharpe": float(pnl.mean() / pnl.std(ddof=1)) if pnl.std(ddof=1) > 0 else float("nan"),
        "frac_normal": float(m["frac_normal"].mean()),
        "frac_warning": float(m["frac_warning"].mean()),
        "frac_hard": float(m["frac_hard"].mean()),
        "calm_sigma_bps": float(np.sqrt(c["calm_r2"].sum() / max(c["calm_ticks"].sum(), 1.0)) * 1e4),
        "big_jumps_per_day": float(c["jumps"].sum() / m["num_ticks"].sum() * 86400.0 / cfg.engine.tick_ms * 1000.0
                                   * p_big),
        "stressed_disabled": float(c["stressed_disabled"].sum() / max(c["stressed_venue_ticks"].sum(), 1.0)),
        "calm_disabled": float(c["calm_disabled"].sum() / max(c["calm_venue_ticks"].sum(), 1.0)),
        "tracking_error": float(np.median(error)) if error.size else float("nan"),
        "kill_prob": float(m["kill_switch"].mean()),
        "warning_from_delta": float(c["warning_from_delta"].sum()),
        "warning_from_pnl": float(c["warning_from_pnl"].sum()),
    }


def measure(cfg: DictConfig) -> dict[str, float]:
    result, _ = run_batch(cfg, rows_every=cfg.experiment.probe_every)
    return figures(cfg, result)


def shown(value: float, unit: str) -> str:
    return f"{value:.1%}" if unit == "%" else f"{value:.4g}"


def calibrate(base: DictConfig) -> None:
    """Print the target table of `base` (conf/calibrate.yaml and the command line); each profile and scenario
    is composed again from the command line's overrides."""
    overrides = task_overrides()
    exp = base.experiment
    if not exp.profiles or not exp.scenarios:
        raise ParaphinaError("experiment.profiles and experiment.scenarios must each name at least one, e.g. "
                             "experiment.profiles=[balanced] 'experiment.scenarios=[default]'")
    for key, _, _ in FIGURES:
        target = exp.targets[key]
        if not (len(target) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in target)
                and target[0] <= target[1]):
            raise ParaphinaError(f"experiment.targets.{key}={list(target)} must be [low, high], two numbers with "
                                 f"low <= high")
    # every config is composed, so checked, before any is measured
    profiles = {p: compose_config([f"runs={exp.seeds}", f"+profile={p}", *overrides], "calibrate")
                for p in exp.profiles}
    scenarios = {s: compose_config([f"runs={exp.scenario_seeds}", f"market={s}", *overrides], "calibrate")
                 for s in exp.scenarios}
    print_horizon_note(base)
    print(f"calibration: market={base.market.scenario}  {exp.seeds} seeds x {base.ticks} ticks per profile")
    measured = {p: measure(cfg) for p, cfg in profiles.items()}
    lines = []
    for key, label, unit in FIGURES:
        low, high = exp.targets[key]
        values = [measured[p][key] for p in exp.profiles]
        lines.append([label, f"{shown(low, unit)}-{shown(high, unit)}",
                      *(f"{shown(v, unit)} {'ok' if low <= v <= high else 'FAIL'}" for v in values)])
    table = pd.DataFrame(lines, columns=["figure", "target", *exp.profiles])
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    for p in exp.profiles:
        delta, pnl = measured[p]["warning_from_delta"], measured[p]["warning_from_pnl"]
        print(f"  [{'ok' if delta > 0 and pnl > 0 else 'FAIL'}] {p}: Warning ticks from delta {delta:,.0f}, "
              f"from PnL {pnl:,.0f} (both must occur)")
    kills = [measured[p]["kill_prob"] for p in exp.profiles]
    ordered = all(a < b for a, b in zip(kills, kills[1:]))
    print(f"  [{'ok' if ordered else 'FAIL'}] kill probability in the order {' < '.join(exp.profiles)}: "
          + ", ".join(f"{k:.3f}" for k in kills))
    print(f"\nmicrostructure per scenario ({exp.scenario_seeds} seeds x {base.ticks} ticks, the balanced centre)")
    rows = []
    for scenario, cfg in scenarios.items():
        f = measure(cfg)
        rows.append({"scenario": scenario, "fill rate": f"{f['fill_rate']:.1%}",
                     "capture bps": f"{f['spread_capture_bps']:.2f}", "adverse share": f"{f['adverse_share']:.2f}",
                     "net edge bps": f"{f['net_edge_bps']:.2f}", "sharpe": f"{f['daily_sharpe']:.2f}",
                     "Disabled in stress": f"{f['stressed_disabled']:.1%}", "kill prob": f"{f['kill_prob']:.3f}"})
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(rows).to_string(index=False))


main = hydra_command("calibrate", calibrate)

if __name__ == "__main__":
    main()
