"""Benchmarks run by ``fluoronav bench NAME``: one module per benchmark.

Each module defines ``DESCRIPTION`` (one line), ``add_arguments(parser)`` and
``run(args) -> dict`` returning the figures; the command prints them (as JSON
with ``--json``). Every benchmark measures a baseline in the same run.
"""
