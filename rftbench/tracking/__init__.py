"""Tracking: everything that talks to the MLflow store; knows nothing of training or results.

- ``store``: ``Tracker``, ``start_run``, ``client_for``, ``default_tracking_uri`` (the MLflow
  store a run logs to);
- ``spool``: ``start_spooled_run`` and ``SpoolingTracker`` (logging through an on-disk spool
  while the store is slow or away);
- ``recovery``: liveness tags, heartbeats and failure files, and ``end_unfinished`` (stale runs
  ended as FAILED / KILLED);
- ``conventions``: what a run logs besides the trainer's metrics (the record's metrics and
  leaderboard tags, the logged PyTorch model, dataset inputs).

The submodules are imported by name; this package imports nothing on its own.
"""
