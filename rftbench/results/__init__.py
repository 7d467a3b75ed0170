"""Results: finished runs read back from MLflow alone; never imports training or experiments.

- ``leaderboard``: ``build_leaderboard`` (groups by definition, ranks, flags);
- ``stats``: the leaderboard's statistics (paired tests and intervals over per-sample summaries);
- ``export``: the leaderboard rendered as markdown / CSV / LaTeX / JSON (``render``);
- ``report``: the HTML report of an experiment (curves, compute, training accuracy);
- ``modelcard``: RobustBench-style model cards;
- ``phenomenon``: the phenomenon table (``runs_frame``) behind ``benchmarks/phenomenon_figure.py``.

The submodules are imported by name; this package imports nothing on its own.
"""
