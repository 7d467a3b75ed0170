"""Tracking: everything that talks to the MLflow store; knows nothing of training or results.

- ``store``: ``Tracker``, ``start_run``, ``client_for``, ``default_tracking_uri`` (the MLflow
  store a run logs to);
- ``spool``: ``start_spooled_run`` and ``SpoolingTracker`` (logging through an on-disk spool
  while the store is slow or away);
- ``recovery``: liveness tags, heartbeats and failure files, and ``end_unfinished`` (stale runs
  ended as FAILED / KILLED);
- ``conventions``: what MLflow users expect on a run beyond rftbench's own tags and metrics (the
  record's numbers under the split's prefix, leaderboard tags, the logged PyTorch model, dataset
  inputs).

The submodules are imported by name; this package imports nothing on its own.
"""
