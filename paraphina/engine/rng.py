"""Per-run random streams, drawn in blocks of ticks.

Each run owns one generator seeded from its own seed, and every tick takes the same number of uniforms from
it in tick order, so a run's path is the same whether it runs alone or inside a batch, and whatever the block
size. Normals are made from pairs of those uniforms by Box-Muller, for the whole batch at once: numpy's
ziggurat, called per run, costs about one and a half times as much per normal as a uniform draw and its share
of the batch transform.
"""
from __future__ import annotations

import numpy as np

TWO_PI = 2.0 * np.pi


def box_muller(uniforms: np.ndarray, angle: np.ndarray, trig: np.ndarray) -> np.ndarray:
    """Standard normals from uniforms in [0, 1), in place: columns (axis 1) u1 then u2, 2p in all, become
    sqrt(-2 ln(1 - u1)) cos(2 pi u2) then sqrt(-2 ln(1 - u1)) sin(2 pi u2).

    The radius is computed in double precision (1 - u1 is exact and never 0); the angle, its cos and its sin in
    single precision, whose vectorised trigonometry is several times faster than double's: a normal is exact
    to a few 1e-7 of its size. `angle` and `trig` are float32 scratch arrays with p columns.
    """
    p = uniforms.shape[1] // 2
    radius, u2 = uniforms[:, :p], uniforms[:, p:]
    np.multiply(u2, TWO_PI, out=angle, casting="same_kind")
    np.subtract(1.0, radius, out=radius)
    np.log(radius, out=radius)
    radius *= -2.0
    np.sqrt(radius, out=radius)
    np.cos(angle, out=trig)
    np.sin(angle, out=angle)
    np.multiply(radius, angle, out=u2)
    radius *= trig
    return uniforms


class _DrawBuffers:
    """Reused arrays for a block of draws: run-major staging (runs, ticks, k), its tick-major copy, scratch.

    A generator only fills contiguous output, so each run draws into its own staging row and the block is
    then transposed to (ticks, k, runs), where the normals replace their uniforms. Keeping the arrays across
    blocks spares the page faults of fresh multi-MB allocations, which cost about as much as the transpose.
    """

    def __init__(self, runs: int, n_ticks: int, n_pairs: int, n_uniforms: int):
        self.n_pairs = n_pairs
        self.staging = np.empty((runs, n_ticks, 2 * n_pairs + n_uniforms))
        self.tick_major = np.empty((n_ticks, 2 * n_pairs + n_uniforms, runs))
        self.angle = np.empty((n_ticks, n_pairs, runs), np.float32)
        self.trig = np.empty((n_ticks, n_pairs, runs), np.float32)

    def fits(self, runs: int, n_ticks: int) -> bool:
        """Whether a block of `n_ticks` for `runs` runs fits (fewer ticks use a leading slice)."""
        return self.staging.shape[0] == runs and self.staging.shape[1] >= n_ticks

    def fill(self, fills: list, n_ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Each run's `fill(out=...)` into its staging row; (normals, uniforms) of the block, tick-major."""
        staging = self.staging[:, :n_ticks]
        for i, fill in enumerate(fills):
            fill(out=staging[i])
        draws = self.tick_major[:n_ticks]
        np.copyto(draws, staging.transpose(1, 2, 0))
        p = self.n_pairs
        normals = box_muller(draws[:, :2 * p], self.angle[:n_ticks], self.trig[:n_ticks])
        return normals, draws[:, 2 * p:]


class RunStreams:
    """The random streams of the live runs of a batch.

    The arrays `draw` returns are reused: they hold the block until the next call to `draw`.
    """

    def __init__(self, seeds: np.ndarray, n_normals: int, n_uniforms: int):
        self.n_pairs = (n_normals + 1) // 2
        self.n_uniforms = n_uniforms
        self.fills = [np.random.Generator(np.random.SFC64(int(seed))).random
                      for seed in np.asarray(seeds, dtype=np.int64)]
        self._buffers: _DrawBuffers | None = None

    def draw(self, n_ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Normals (ticks, n_normals rounded up to even, runs) and uniforms (ticks, n_uniforms, runs)."""
        runs = len(self.fills)
        if self._buffers is None or not self._buffers.fits(runs, n_ticks):
            self._buffers = _DrawBuffers(runs, n_ticks, self.n_pairs, self.n_uniforms)
        return self._buffers.fill(self.fills, n_ticks)

    def subset(self, keep: np.ndarray) -> None:
        """Keep only the streams of runs `keep` (indices into the current live runs)."""
        self.fills = [self.fills[i] for i in keep]
