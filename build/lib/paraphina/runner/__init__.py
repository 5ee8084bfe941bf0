"""Running the engine from a composed config: batches, telemetry files, printed summaries."""
