"""An evaluate-only MLflow run spans its evaluation: created RUNNING before the first block,
ended after the last, so MLflow's duration is the evaluation's; a shard run logs its time."""
import time

from eval_helpers import source_setup
from rftbench.experiments.experiment import evaluate_config
from rftbench.tracking.store import client_for


def _runs_now(experiment: str) -> list[tuple[str, str]]:
    client = client_for()
    exp = client.get_experiment_by_name(experiment)
    return [(r.info.status, r.data.tags["rftbench.kind"]) for r in client.search_runs([exp.experiment_id])]


def test_the_run_is_running_while_evaluating_and_spans_the_evaluation(workdir):
    cfg, _, _ = source_setup(eval__n_samples=32, eval__num_points=2, eval__checks__probe_samples=4)
    seen, blocks = [], []

    def on_block(done, total):
        blocks.append(time.time())
        seen.append(_runs_now(cfg.experiment))

    t0 = time.time()
    rec, run_id = evaluate_config(cfg, on_block=on_block)
    t1 = time.time()
    assert blocks and all(s == [("RUNNING", "evaluation")] for s in seen)
    info = client_for().get_run(run_id).info
    assert info.status == "FINISHED"
    # MLflow's times are whole milliseconds: the run starts before the first block and ends after the last
    assert t0 * 1000 - 1 <= info.start_time <= blocks[0] * 1000 + 1
    assert blocks[-1] * 1000 - 1 <= info.end_time <= t1 * 1000 + 1
    assert (info.end_time - info.start_time) / 1000 >= rec["timings"]["total_s"] - 0.002


def test_a_shard_run_logs_its_evaluation_time_and_no_leaderboard_metric(workdir):
    cfg, _, _ = source_setup(eval__n_samples=32, eval__num_points=2, eval__checks__probe_samples=4)
    rec, run_id = evaluate_config(cfg, shard=(1, 2))
    run = client_for().get_run(run_id)
    assert run.data.tags["rftbench.kind"] == "evaluation-shard" and run.data.tags["rftbench.shard"] == "1/2"
    assert run.data.metrics == {"eval/time_s": rec["timings"]["total_s"]}
    assert (run.info.end_time - run.info.start_time) / 1000 >= rec["timings"]["total_s"] - 0.002
