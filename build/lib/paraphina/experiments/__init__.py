"""The research experiments Exp02-Exp13, each `python -m paraphina.experiments.expNN [overrides]`."""
