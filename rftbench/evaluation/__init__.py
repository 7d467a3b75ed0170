"""Evaluation: a trained model and its splits in, a per-sample record out; never imports the trainer.

- ``evaluate``: :func:`~rftbench.evaluation.evaluate.evaluate_model` (the pruned eps sweep,
  AutoAttack at the target eps, expected robustness, the sanity checks) and ``quick_robustness``
  (the per-epoch validation number the trainer and pruners see);
- ``records``: ``EvaluationRecord``, the JSON record built from per-sample arrays (``summarize``);
- ``metrics``: robustness curves and expected robustness over an eps distribution
  (``EPS_DISTRIBUTIONS``, a plugin registry);
- ``checks``: the sanity checks that flag a record;
- ``state``: the resumable evaluation state (blocks written as they finish);
- ``sample_summary``: the per-sample summary a record carries to the leaderboard (``summary_tag``).

The submodules are imported by name; this package imports nothing on its own.
"""
