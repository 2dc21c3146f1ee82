"""Tiny models and scripts for the ProgressiveUnfreeze tests (scripts run in subprocesses)."""
