"""The market-making engine: one compiled numba kernel (a function per spec step) run for every run of a batch."""
