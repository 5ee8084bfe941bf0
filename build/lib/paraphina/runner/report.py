"""Console output of the engine CLI: the run header and the summary of one run or a batch."""
from __future__ import annotations

from omegaconf import DictConfig

from paraphina.engine.simulate import BatchResult
from paraphina.runner.aggregates import QUANTILES, aggregate_metrics


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
    a = aggregate_metrics(result, confidence)
    quantiles = "  ".join(f"p{int(q * 100)} {a[f'pnl_p{int(q * 100)}']:,.2f}" for q in QUANTILES)
    kills, n = round(a["kill_prob"] * a["runs"]), int(a["runs"])
    return "\n".join([
        f"  final PnL      mean {a['pnl_mean']:,.2f}  std {a['pnl_std']:,.2f} USD",
        f"                 {quantiles}",
        f"  max drawdown   mean {a['dd_mean']:,.2f} USD",
        f"  regimes        Normal {a['frac_normal']:.1%}  Warning {a['frac_warning']:.1%}  HardLimit {a['frac_hard']:.1%}",
        f"  kill prob      {a['kill_prob']:.3f}  ({kills} of {n}; {confidence:.0%} interval "
        f"{a['kill_prob_low']:.3f}-{a['kill_prob_high']:.3f})",
    ])


def engine_time(result: BatchResult, ticks: int) -> str:
    """The kernel's time for the batch, and apart from it the time to load the compiled kernel."""
    runs = len(result.seeds)
    seconds = result.kernel_seconds
    shown = f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"
    rate = runs * ticks / seconds if seconds > 0 else float("inf")
    return (f"  engine         {shown} for {runs} x {ticks} run-ticks ({rate:,.0f} run-ticks/s; "
            f"compiled kernel loaded in {result.load_seconds:.2f} s)")
