"""The demo at toy size: one run per schedule, a leaderboard read back from MLflow, a figure."""
from rftbench.experiments.demo import run_demo
from rftbench.tracking.store import client_for


def test_demo_runs_each_schedule_and_ranks_by_expected_robustness(workdir):
    res = run_demo(workdir=workdir, epochs=1, aa_samples=8, quiet=True,
                   schedules={"none": {}, "epsilon_scheduling": {"start": 0.2, "end": 0.6}})
    assert set(res.results) == {"none", "epsilon_scheduling"}
    assert res.figure.is_file() and res.figure.stat().st_size > 1000
    client = client_for()
    for name, r in res.results.items():
        run = client.get_run(r.run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["rftbench.schedule"] == name
        assert run.data.metrics["eval/expected_robustness"] == r.record["expected_robustness"]["value"]
    t = res.leaderboard.table
    ers = t["er_mean"].tolist()
    assert ers == sorted(ers, reverse=True) and t["rank"].tolist() == [1, 2]
    # plain fine-tuning never ran the attack; the scheduled run attacked only part of training
    by_name = {s.split("(")[0]: row for s, (_, row) in zip(t["schedule"], t.iterrows())}
    assert by_name["none"]["attack_fraction"] == 0.0
    assert 0.0 < by_name["epsilon_scheduling"]["attack_fraction"] < 1.0
    assert res.report.is_file() and "epsilon_scheduling" in res.report.read_text()
