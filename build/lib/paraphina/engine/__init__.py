"""The vectorised market-making engine: state arrays of shape (runs, venues), one pass for a batch."""
