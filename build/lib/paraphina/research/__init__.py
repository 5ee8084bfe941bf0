"""File-level research tools: telemetry JSONL, research-row datasets and their summaries."""
