"""Results: finished runs read back from MLflow alone; never imports training or experiments.

- ``leaderboard``: ``build_leaderboard`` (groups by definition, ranks, flags);
- ``stats``: the leaderboard's statistics (means over seeds, t-intervals, per-sample bootstrap CIs);
- ``export``: the leaderboard as text in a format (``to_format``) or as rich tables (``render``);
- ``report``: ``rftbench report``, one static HTML page of an experiment's leaderboard;
- ``modelcard``: RobustBench-style model cards;
- ``phenomenon``: the paper's phenomenon as numbers (``runs_frame``: schedule x target eps over
  seeds), behind ``benchmarks/phenomenon_figure.py``.

The submodules are imported by name; this package imports nothing on its own.
"""
