"""Per-venue position ledger (faithful): VWAP entry, realised PnL on reductions and flips."""
from __future__ import annotations

import numpy as np


def apply_fill(q: np.ndarray, entry: np.ndarray, dq: np.ndarray, price: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply signed fills `dq` at `price` to positions `q` with entry prices `entry`.

    Returns (new q, new entry, realised PnL of each position, before fees). A fill on the side of the
    position moves the entry to the VWAP, a fill from flat enters at the fill price; a fill against it realises
    (price - entry) * closed for a long, (entry - price) * closed for a short; a flip re-enters the
    remainder at the fill price; a position closed to zero has entry 0. Callers run it under
    np.errstate(invalid="ignore", divide="ignore"), as `simulate` does for a whole batch: entering the
    state per call cost more than a tenth of the ledger's time.
    """
    new_q = q + dq
    direction = q * dq
    abs_q, abs_dq = np.abs(q), np.abs(dq)
    # in-place steps on fresh arrays: the same operations as one expression, without a temporary per step
    realised = np.minimum(abs_dq, abs_q)
    realised *= price - entry
    realised *= np.sign(q)
    realised *= direction < 0.0  # only a fill against the position realises
    vwap = q * entry
    vwap += dq * price
    vwap /= new_q  # 0/0 where a position closes: replaced below, warning ignored by callers
    # a zero fill leaves the entry exactly as it was (a batch applies zero fills to runs without fills)
    new_entry = np.where(direction > 0.0, vwap, np.where(abs_dq > abs_q, price, entry))
    new_entry[new_q == 0.0] = 0.0
    return new_q, new_entry, realised


def apply_fills(q: np.ndarray, entry: np.ndarray, idx: np.ndarray, dq: np.ndarray, price: np.ndarray
                ) -> np.ndarray:
    """Apply the fills `dq` at `price` to the positions at flat indices `idx` of `q` and `entry`, in place.

    Returns the realised PnL of every position (zero where nothing filled), as apply_fill does. For sparse
    fills: when a tick's fills touch a small share of a large batch's positions, gathering them costs
    less than apply_fill on every position; positions without a fill would come out unchanged anyway.
    """
    q_flat, entry_flat = q.reshape(-1), entry.reshape(-1)
    new_q, new_entry, realised = apply_fill(q_flat[idx], entry_flat[idx], dq, price)
    q_flat[idx] = new_q
    entry_flat[idx] = new_entry
    out = np.zeros_like(q)
    out.reshape(-1)[idx] = realised
    return out
