"""A parameter record of the composed config with some fields set, for tests that call step functions."""
from __future__ import annotations

import copy

import numpy as np

from paraphina.engine.params import build_params


def record(plain_cfg: dict, **fields) -> np.void:
    """Run 0's record of the engine and market of `plain_cfg`, with `fields` (record field names) set."""
    p = build_params(copy.deepcopy(plain_cfg["engine"]), copy.deepcopy(plain_cfg["market"]), 1)
    for name, value in fields.items():
        p.table[name] = value
    return p.table[0]
