"""The fine-tuned model goes through MLflow's logged-model API (the run page's "Logged models"
lists it) and ``runs:/RUN_ID/mlflow_model`` still loads it."""
import os
import tempfile

import torch

from conftest import tiny_config
from rftbench.experiments.experiment import run_experiment
from rftbench.tracking.conventions import MODEL_ARTIFACT
from rftbench.tracking.store import client_for


def test_the_model_is_a_logged_model_of_its_run_and_loads_from_the_runs_uri(workdir):
    import mlflow.pytorch
    from mlflow.artifacts import download_artifacts
    from mlflow.entities import LoggedModelStatus

    res = run_experiment(tiny_config(train__epochs=1), evaluate=False)
    client = client_for()
    run = client.get_run(res.run_id)
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [(m.name, m.source_run_id, m.status) for m in models] == [
        (MODEL_ARTIFACT, res.run_id, LoggedModelStatus.READY)]
    assert [o.model_id for o in run.outputs.model_outputs] == [models[0].model_id]  # what the run page lists
    assert MODEL_ARTIFACT not in {a.path for a in client.list_artifacts(res.run_id)}  # not a second copy
    uri = os.environ["MLFLOW_TRACKING_URI"]  # this test's store (mlflow's global URI may be another test's)
    local = download_artifacts(f"runs:/{res.run_id}/{MODEL_ARTIFACT}", dst_path=tempfile.mkdtemp(), tracking_uri=uri)
    loaded = mlflow.pytorch.load_model(local)
    also = mlflow.pytorch.load_model(client.download_artifacts(res.run_id, MODEL_ARTIFACT, tempfile.mkdtemp()))
    x = torch.rand(4, 1, 16, 16)
    with torch.no_grad():
        want = res.train.model.eval()(x)
        # the same weights through torch.export's graph: float32 rounding of other kernels only
        torch.testing.assert_close(loaded(x), want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(also(x), want, rtol=1e-5, atol=1e-6)
