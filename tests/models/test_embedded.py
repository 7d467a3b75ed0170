"""The embedded pretrained checkpoint: cached once, safe under concurrent first use, RNG-neutral."""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from rftbench.embedded import checkpoint_path, pretrained_checkpoint
from rftbench.models import load_checkpoint

WORKER = """
import sys, time
import rftbench.embedded as embedded

trained = []
real = embedded._pretrain
embedded._pretrain = lambda *a, **k: (trained.append(1), real(*a, **k))[1]
start = float(sys.argv[1])
while time.time() < start:
    pass
path = embedded.pretrained_checkpoint("small_cnn", epochs=2, seed=0)
print("RESULT", path, len(trained))
"""


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


def test_first_use_leaves_the_callers_random_state_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RFTBENCH_CACHE", str(tmp_path))
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    expected = _draws()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    path = pretrained_checkpoint("small_cnn", epochs=1, seed=0)  # pretrains: seeds and draws inside
    assert _draws() == expected
    assert path == checkpoint_path("small_cnn", epochs=1, seed=0) and load_checkpoint(path).num_classes == 5
    stamp = path.stat().st_mtime_ns
    assert pretrained_checkpoint("small_cnn", epochs=1, seed=0) == path and path.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.name + ".json",
                                                                 path.name + ".lock"])  # no temporary left


@pytest.mark.slow
def test_concurrent_first_use_pretrains_once(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    cache = tmp_path / "cache"
    start = time.time() + 10  # every worker imports first, then all ask at the same instant
    env = {**os.environ, "RFTBENCH_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, str(script), str(start)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    results = []
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
        results.append(next(line.split()[1:] for line in out.splitlines() if line.startswith("RESULT")))
    assert len({path for path, _ in results}) == 1
    assert sum(int(n) for _, n in results) == 1  # one process pretrained; the others waited for its file
    model = load_checkpoint(results[0][0])
    assert model.num_classes == 5
    assert not [p.name for p in cache.iterdir() if ".tmp" in p.name]
