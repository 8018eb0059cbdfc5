"""Workflows: each composes score → cut → recover → measure (or split → fine-tune, dissect, …)
from the floors below and returns a JSON-ready record. The CLI and the benchmarks run these, so
their numbers are made the same way; nothing below this floor trains, recovers or reports on its
own initiative.
"""
