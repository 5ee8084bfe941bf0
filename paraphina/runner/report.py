"""Console output of the engine CLI: the run header and the summary of one run or a batch."""
from __future__ import annotations

import numpy as np
from omegaconf import DictConfig

from paraphina.engine.simulate import BatchResult
from paraphina.world_model.stats import wilson_interval

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def header(cfg: DictConfig, chash: str) -> str:
    return (f"paraphina  profile={cfg.profile_name}  market={cfg.market.scenario}  ticks={cfg.ticks}  "
            f"seed={cfg.seed}  runs={cfg.runs}  config={chash}")


def run_summary(result: BatchResult, i: int = 0) -> str:
    """One run: final PnL, drawdown, regime fractions, kill switch and its tick."""
    m = result.run_metrics(i)
    kill = f"FIRED at tick {m['time_to_kill']}" if m["kill_switch"] else "not fired"
    return "\n".join([
        f"  final PnL      {m['final_pnl']:>12,.2f} USD   (min {m['min_pnl']:,.2f}, max {m['max_pnl']:,.2f})",
        f"  max drawdown   {m['max_drawdown']:>12,.2f} USD",
        f"  regimes        Normal {m['frac_normal']:.1%}  Warning {m['frac_warning']:.1%}  "
        f"HardLimit {m['frac_hard']:.1%}",
        f"  max |delta|    {m['max_abs_delta_usd']:>12,.2f} USD   max |basis| {m['max_abs_basis_usd']:,.2f} USD",
        f"  kill switch    {kill}   ({m['num_ticks']} ticks run)",
    ])


def batch_summary(result: BatchResult, confidence: float) -> str:
    """A batch: the distribution of final PnL, mean drawdown and the kill probability with its interval."""
    pnl = result.metrics["final_pnl"]
    kills = int(result.metrics["kill_switch"].sum())
    n = len(pnl)
    low, high = wilson_interval(kills, n, confidence)
    qs = np.quantile(pnl, QUANTILES)
    quantiles = "  ".join(f"p{int(q * 100)} {v:,.2f}" for q, v in zip(QUANTILES, qs))
    return "\n".join([
        f"  final PnL      mean {pnl.mean():,.2f}  std {pnl.std(ddof=1) if n > 1 else 0.0:,.2f} USD",
        f"                 {quantiles}",
        f"  max drawdown   mean {result.metrics['max_drawdown'].mean():,.2f} USD",
        f"  regimes        Normal {result.metrics['frac_normal'].mean():.1%}  "
        f"Warning {result.metrics['frac_warning'].mean():.1%}  HardLimit {result.metrics['frac_hard'].mean():.1%}",
        f"  kill prob      {kills / n:.3f}  ({kills} of {n}; {confidence:.0%} interval {low:.3f}-{high:.3f})",
    ])
