"""Per-venue position ledger (faithful): VWAP entry, realised PnL on reductions and flips."""
from __future__ import annotations

from numba import njit


@njit(cache=True)
def apply_fill(q, entry, dq, price):
    """A signed fill `dq` at `price` on a position `q` entered at `entry`: (new q, new entry, realised PnL).

    A fill on the side of the position moves the entry to the VWAP; a fill from flat enters at the fill price;
    a fill against it realises (price - entry) per TAO closed for a long, (entry - price) for a short; a flip
    re-enters the remainder at the fill price; a position closed to zero has entry 0. Fees are booked apart.
    """
    new_q = q + dq
    if dq == 0.0:
        return q, entry, 0.0
    if new_q == 0.0:
        new_entry = 0.0
    elif q * dq > 0.0:
        new_entry = (q * entry + dq * price) / new_q
    elif abs(dq) > abs(q):
        new_entry = price
    else:
        new_entry = entry
    realised = 0.0
    if q * dq < 0.0:
        closed = min(abs(dq), abs(q))
        realised = closed * (price - entry) * (1.0 if q > 0.0 else -1.0)
    return new_q, new_entry, realised
