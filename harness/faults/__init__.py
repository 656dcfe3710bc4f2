"""Fault catalog (``harness.faults.catalog``) and, per fault id, its injector module."""
