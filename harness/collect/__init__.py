"""Collectors: after a run, turn the testbed's telemetry into case files (data.csv, logs.csv, manifest.json)."""
