"""The benchmark harness behind ``benchmarks/run.py``: servers, load generators, report."""
