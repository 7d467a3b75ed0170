"""Experiments: one run end to end, the demo and grids, on top of every stage below.

- ``experiment``: ``run_experiment`` (validate, build the task, train, evaluate, log the
  record) and the evaluate-only paths;
- ``validation``: ``validate_names`` (every registry name of a config, before anything is built);
- ``demo``: ``rftbench demo`` (a small experiment, its leaderboard and report);
- ``sweep``: grids: one YAML spec expanded into validated configs, run with ``run_grid``;
- ``gridrun``: idempotent grid points (run identities, claims in MLflow, ``run_point``);
- ``inputs_check``: ``check_inputs`` (every dataset and model of a grid, before it runs).

``rftbench.launch`` (launchers) and ``rftbench.tuning`` (Optuna studies) sit in this layer
too, as their own packages. The submodules are imported by name; this package imports nothing
on its own.
"""
