"""Configuration: the structured schema of conf/, composing it, and the original environment overrides."""
