"""File formats: telemetry JSONL, research-row datasets and PNG charts, read and written."""
