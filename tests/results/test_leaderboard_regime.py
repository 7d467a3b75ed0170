"""The leaderboard knows the fine-tuning regime: a default grouping key, read from the run's tag,
its params, or (runs from before regimes) model.finetune."""
from types import SimpleNamespace

from rftbench.results.leaderboard import DEFAULT_GROUP_BY, _run_row


def _run(params, tags=None):
    tags = {"rftbench.flagged": "False", **(tags or {})}
    return SimpleNamespace(info=SimpleNamespace(run_id="r", run_name="n", experiment_id="0", end_time=1),
                           data=SimpleNamespace(params=params, metrics={}, tags=tags))


def test_regime_is_a_default_group_and_a_column():
    assert DEFAULT_GROUP_BY[-1] == "regime" and "objective" in DEFAULT_GROUP_BY
    row = _run_row(_run({}, {"rftbench.regime": "lora(rank=8,alpha=16,dropout=0)", "rftbench.trainable_params": "1234"}))
    assert row["regime"] == "lora(rank=8,alpha=16,dropout=0)" and row["trainable_params"] == 1234
    assert _run_row(_run({"model.regime.name": "partial", "model.regime.params.blocks": "2"}))["regime"] == "partial(blocks=2)"
    assert _run_row(_run({"model.finetune": "linear_probe"}))["regime"] == "linear_probe"
    assert _run_row(_run({}))["regime"] == "full"
