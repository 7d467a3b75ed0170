"""A model card is refused with what the record shows was missing, not a fixed hint."""
import pytest

from eval_helpers import source_setup
from rftbench.errors import LeaderboardError
from rftbench.experiments.experiment import evaluate_config
from rftbench.results.modelcard import certification_gaps, export_model_card


def test_refusal_names_the_autoattack_samples_that_were_missing(workdir):
    cfg, _, _ = source_setup(eval__n_samples=16, eval__num_points=2, eval__checks__probe_samples=4,
                             eval__autoattack__enabled=True, eval__autoattack__version="standard",
                             eval__autoattack__n_samples=8)
    rec, run_id = evaluate_config(cfg)
    assert rec["autoattack"]["version"] == "standard" and not rec["certified"]
    n_aa, n_total = rec["autoattack"]["n_samples"], rec["subset"]["n_total"]
    assert (n_aa, n_total) == (8, 16)
    with pytest.raises(LeaderboardError) as err:
        export_model_card(run_id, workdir / "card")
    msg = str(err.value)
    assert f"AutoAttack ran on {n_aa} of the {n_total} samples" in msg
    assert f"eval.autoattack.n_samples={n_total}" in msg
    assert "version=standard" not in msg and "not certified" in msg
    assert not (workdir / "card").exists()


def test_gaps_follow_the_record(workdir):
    cfg, _, _ = source_setup(eval__n_samples=32, eval__num_points=2, eval__checks__probe_samples=4)
    rec, _ = evaluate_config(cfg, log=False)  # AutoAttack off
    assert certification_gaps(rec.data) == ["AutoAttack did not run (evaluate with eval.autoattack.enabled=true)"]
    shard, _ = evaluate_config(cfg, log=False, shard=(0, 2))
    gaps = certification_gaps(shard.data)
    assert len(gaps) == 2 and gaps[1].startswith("AutoAttack did not run") and gaps[0].startswith("it is shard 0/2") and "rftbench evaluate merge" in gaps[0]
    val, _ = evaluate_config(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"split": "val"})}), log=False)
    assert any("'val' split" in g for g in certification_gaps(val.data))
