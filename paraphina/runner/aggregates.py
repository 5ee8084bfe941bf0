"""Aggregates of a batch (or of some of its runs): the numbers the console, the MLflow parent runs and
the experiments' grid points all report, computed in one place."""
from __future__ import annotations

import numpy as np

from paraphina.core.names import MICROSTRUCTURE_KEYS, REGIME_NAMES
from paraphina.engine.simulate import BatchResult
from paraphina.world_model.verdicts import DD_QUANTILE, clopper_pearson

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def aggregate_metrics(result: BatchResult, confidence: float, rows: np.ndarray | None = None) -> dict[str, float]:
    """Batch aggregates: final PnL distribution, drawdowns, kill probability with its exact (Clopper-Pearson)
    interval at `confidence`, regimes, the mean microstructure facts."""
    idx = slice(None) if rows is None else rows
    m = {k: np.asarray(v)[idx] for k, v in result.metrics.items()}
    pnl, n = m["final_pnl"], len(m["final_pnl"])
    kills = int(m["kill_switch"].sum())
    low, high = clopper_pearson(kills, n, (1.0 - confidence) / 2.0)
    out = {"runs": float(n), "pnl_mean": float(pnl.mean()), "pnl_std": float(pnl.std(ddof=1)) if n > 1 else 0.0,
           "dd_mean": float(m["max_drawdown"].mean()), "dd_worst": float(m["max_drawdown"].max()),
           "dd_min": float(m["max_drawdown"].min()), "dd_p95": float(np.quantile(m["max_drawdown"], DD_QUANTILE)),
           "dd_std": float(m["max_drawdown"].std(ddof=1)) if n > 1 else 0.0,
           "kill_prob": kills / n, "kill_prob_low": low, "kill_prob_high": high,
           "frac_normal": float(m["frac_normal"].mean()), "frac_warning": float(m["frac_warning"].mean()),
           "frac_hard": float(m["frac_hard"].mean()), "max_abs_delta_usd": float(m["max_abs_delta_usd"].max()),
           "max_abs_basis_usd": float(m["max_abs_basis_usd"].max())}
    for key in MICROSTRUCTURE_KEYS:
        out[f"{key}_mean"] = float(m[key].mean())
    final = np.asarray(result.final_regime)[idx]
    for code, regime in enumerate(REGIME_NAMES):
        out[f"final_{regime.lower()}_frac"] = float((final == code).mean())
    for q, v in zip(QUANTILES, np.quantile(pnl, QUANTILES)):
        out[f"pnl_p{int(q * 100)}"] = float(v)
    return out
