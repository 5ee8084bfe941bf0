"""Paraphina: research and calibration harness for a multi-venue perpetual-futures market maker."""
