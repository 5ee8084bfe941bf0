"""Per-run random streams inside the kernel: numpy's SFC64, inlined, with ziggurat normals.

Each run owns one SFC64 generator seeded as `numpy.random.SFC64(seed)` seeds it, so its uniforms are numpy's
stream bit for bit and a batch equals its single runs by construction, whatever the thread count. The state
is a tuple of four uint64 that the kernel carries in registers: an inlined generator costs a fraction of a
draw through numba's `np.random.Generator` support. Normals use the Marsaglia-Tsang ziggurat (256 layers, the
layout of numpy's), one uint64 per normal on 99 % of draws, several times cheaper than Box-Muller.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, uint64

DOUBLE_UNIT = 1.0 / 9007199254740992.0  # 2**-53: uint64 >> 11 -> double in [0, 1), as numpy makes it
ZIGGURAT_R = 3.6541528853610088          # start of the tail of the 256-layer normal ziggurat
ZIGGURAT_AREA = 0.00492867323399         # area of each layer


def ziggurat_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marsaglia and Tsang's tables (J. Stat. Softw. 5(8), 2000) for 52-bit magnitudes: (k, w, f)."""
    m = 2.0 ** 52
    dn = tn = ZIGGURAT_R
    k, w, f = np.zeros(256, np.uint64), np.zeros(256), np.zeros(256)
    q = ZIGGURAT_AREA / math.exp(-0.5 * dn * dn)
    k[0] = int(dn / q * m)
    w[0], w[255] = q / m, dn / m
    f[0], f[255] = 1.0, math.exp(-0.5 * dn * dn)
    for i in range(254, 0, -1):
        dn = math.sqrt(-2.0 * math.log(ZIGGURAT_AREA / dn + math.exp(-0.5 * dn * dn)))
        k[i + 1] = int(dn / tn * m)
        tn = dn
        f[i] = math.exp(-0.5 * dn * dn)
        w[i] = dn / m
    return k, w, f


ZIG_K, ZIG_W, ZIG_F = ziggurat_tables()


def seed_states(seeds: np.ndarray) -> np.ndarray:
    """(runs, 4) uint64 SFC64 states (a, b, c, counter), one per seed, as numpy seeds them."""
    states = np.empty((len(seeds), 4), np.uint64)
    for i, seed in enumerate(np.asarray(seeds, dtype=np.int64)):
        states[i] = np.random.SFC64(int(seed)).state["state"]["state"]
    return states


@njit(cache=True, inline="always")
def next_u64(s):
    """One SFC64 step: (output, next state) from the state s = (a, b, c, counter)."""
    a, b, c, counter = s
    out = a + b + counter
    return out, (b ^ (b >> uint64(11)), c + (c << uint64(3)), ((c << uint64(24)) | (c >> uint64(40))) + out,
                 counter + uint64(1))


@njit(cache=True, inline="always")
def uniform(s):
    """(a double in [0, 1), next state), as numpy's Generator.random() makes it."""
    bits, s = next_u64(s)
    return float(bits >> uint64(11)) * DOUBLE_UNIT, s


@njit(cache=True)
def normal_slow_path(s, magnitude, x, layer):
    """The ziggurat's rare cases: the tail beyond R (layer 0), sampled by Marsaglia's method until accepted,
    or the wedge of a layer, accepted under the density or else a fresh draw."""
    while True:
        if layer == 0:
            while True:
                u1, s = uniform(s)
                u2, s = uniform(s)
                xx = -math.log1p(-u1) / ZIGGURAT_R
                if -2.0 * math.log1p(-u2) > xx * xx:
                    return (-(ZIGGURAT_R + xx) if (magnitude >> uint64(8)) & uint64(1) else ZIGGURAT_R + xx), s
        u, s = uniform(s)
        if (ZIG_F[layer - 1] - ZIG_F[layer]) * u + ZIG_F[layer] < math.exp(-0.5 * x * x):
            return x, s
        x, s, accepted, magnitude, layer = normal_fast_path(s)
        if accepted:
            return x, s


@njit(cache=True, inline="always")
def normal_fast_path(s):
    """One ziggurat try: (x, state, accepted, bits, layer); accepted on about 99 % of draws."""
    r, s = next_u64(s)
    layer = np.intp(r & uint64(0xff))
    r >>= uint64(8)
    magnitude = (r >> uint64(1)) & uint64(0x000fffffffffffff)
    x = float(magnitude) * ZIG_W[layer]
    if r & uint64(1):
        x = -x
    return x, s, magnitude < ZIG_K[layer], magnitude, layer


@njit(cache=True, inline="always")
def normal(s):
    """(a standard normal, next state)."""
    x, s, accepted, bits, layer = normal_fast_path(s)
    if accepted:
        return x, s
    return normal_slow_path(s, bits, x, layer)
