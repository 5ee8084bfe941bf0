"""Per-run random streams, drawn in blocks of ticks.

Each run owns two generators (normals, uniforms) seeded from its own seed, so a run's path is the
same whether it runs alone or inside a batch, and whatever the block size.
"""
from __future__ import annotations

import numpy as np


class RunStreams:
    """The random streams of the live runs of a batch."""

    def __init__(self, seeds: np.ndarray, n_normals: int, n_uniforms: int):
        self.n_normals = n_normals
        self.n_uniforms = n_uniforms
        self.normal_gens = []
        self.uniform_gens = []
        for seed in np.asarray(seeds, dtype=np.int64):
            normal_seq, uniform_seq = np.random.SeedSequence(int(seed)).spawn(2)
            self.normal_gens.append(np.random.Generator(np.random.SFC64(normal_seq)))
            self.uniform_gens.append(np.random.Generator(np.random.SFC64(uniform_seq)))

    def draw(self, n_ticks: int) -> tuple[np.ndarray, np.ndarray]:
        """Normals (ticks, n_normals, runs) and uniforms (ticks, n_uniforms, runs) for the next ticks."""
        runs = len(self.normal_gens)
        normals = np.empty((runs, n_ticks, self.n_normals))
        uniforms = np.empty((runs, n_ticks, self.n_uniforms))
        for i in range(runs):
            self.normal_gens[i].standard_normal(out=normals[i])
            self.uniform_gens[i].random(out=uniforms[i])
        return np.ascontiguousarray(normals.transpose(1, 2, 0)), np.ascontiguousarray(uniforms.transpose(1, 2, 0))

    def subset(self, keep: np.ndarray) -> None:
        """Keep only the streams of runs `keep` (indices into the current live runs)."""
        self.normal_gens = [self.normal_gens[i] for i in keep]
        self.uniform_gens = [self.uniform_gens[i] for i in keep]
