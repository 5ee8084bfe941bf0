"""The market-making engine: one compiled numba kernel per run (a function per spec step), run over a batch."""
