"""MLflow tracking: where runs are stored, how they are written fast, and research datasets read back from them."""
