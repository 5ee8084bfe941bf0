"""World model: risk tiers, budget checks with statistical verdicts, preset selection and safety tuning."""
