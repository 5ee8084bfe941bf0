"""Per-run random streams, drawn in blocks of ticks.

Each run owns two generators (normals, uniforms) seeded from its own seed, so a run's path is the
same whether it runs alone or inside a batch, and whatever the block size.
"""
from __future__ import annotations

import numpy as np


class _DrawBuffers:
    """Reused arrays for one kind of draw: run-major staging (runs, ticks, k) and its tick-major copy.

    A generator only fills contiguous output, so each run draws into its own staging row and the
    block is then transposed to (ticks, k, runs). Keeping both arrays across blocks spares the page
    faults of fresh multi-MB allocations, which cost about as much as the transpose itself.
    """

    def __init__(self, runs: int, n_ticks: int, k: int):
        self.staging = np.empty((runs, n_ticks, k))
        self.tick_major = np.empty((n_ticks, k, runs))

    def fits(self, runs: int, n_ticks: int) -> bool:
        """Whether a block of `n_ticks` for `runs` runs fits (fewer ticks use a leading slice)."""
        return self.staging.shape[0] == runs and self.staging.shape[1] >= n_ticks

    def fill(self, fills: list, n_ticks: int) -> np.ndarray:
        """Each run's `fill(out=...)` into its staging row, then the (n_ticks, k, runs) view of the copy."""
        staging = self.staging[:, :n_ticks]
        for i, fill in enumerate(fills):
            fill(out=staging[i])
        tick_major = self.tick_major[:n_ticks]
        np.copyto(tick_major, staging.transpose(1, 2, 0))
        return tick_major


class RunStreams:
    """The random streams of the live runs of a batch.

    The arrays `draw` returns are reused: they hold the block until the next call to `draw`.
    """

    def __init__(self, seeds: np.ndarray, n_normals: int, n_uniforms: int):
        self.n_normals = n_normals
        self.n_uniforms = n_uniforms
        self.normal_fills = []
        self.uniform_fills = []
        for seed in np.asarray(seeds, dtype=np.int64):
            normal_seq, uniform_seq = np.random.SeedSequence(int(seed)).spawn(2)
            self.normal_fills.append(np.random.Generator(np.random.SFC64(normal_seq)).standard_normal)
            self.uniform_fills.append(np.random.Generator(np.random.SFC64(uniform_seq)).random)
        self._normals: _DrawBuffers | None = None
        self._uniforms: _DrawBuffers | None = None

    def draw(self, n_ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Normals (ticks, n_normals, runs) and uniforms (ticks, n_uniforms, runs) for the next ticks."""
        runs = len(self.normal_fills)
        if self._normals is None or not self._normals.fits(runs, n_ticks):
            self._normals = _DrawBuffers(runs, n_ticks, self.n_normals)
            self._uniforms = _DrawBuffers(runs, n_ticks, self.n_uniforms)
        return self._normals.fill(self.normal_fills, n_ticks), self._uniforms.fill(self.uniform_fills, n_ticks)

    def subset(self, keep: np.ndarray) -> None:
        """Keep only the streams of runs `keep` (indices into the current live runs)."""
        self.normal_fills = [self.normal_fills[i] for i in keep]
        self.uniform_fills = [self.uniform_fills[i] for i in keep]
