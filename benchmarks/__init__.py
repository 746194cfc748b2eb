"""dictopt side by side with what users would use instead: ``python benchmarks/run.py``.

``harness`` holds the shared machinery (timing, peak memory, JSON, README table); each module of
``compare`` is one comparison, with its side functions (each run in a fresh process) and a
``compare(mode)`` that runs them and returns a :class:`benchmarks.harness.Result`.
"""
