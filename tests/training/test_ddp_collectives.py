"""The small collectives DDP training relies on, on two real gloo ranks started by torchrun: every
rank stops at the earliest non-finite loss of any rank, ranks > 0 get rank 0's run directory,
and a rank learns that a peer's process is gone."""
import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, os, sys, time
from rftbench.training import distributed as ddp

info = ddp.init_distributed("cpu")
out = {"rank": info.rank, "world": info.world}
mine = {0: (9, float("inf")), 1: (7, float("-inf"))}[info.rank]  # both diverged, rank 1 first
out["earliest"] = ddp.earliest_bad(mine)
out["earliest_none"] = ddp.earliest_bad(None if info.rank == 0 else (3, float("nan")))
out["nothing"] = ddp.earliest_bad(None)
if info.rank == 0:
    ddp.send_to_ranks("/shared/run/dir")
    out["lost_before"] = ddp.lost_peers()
else:
    out["received"] = ddp.receive_from_main()
ddp.any_rank(False)  # both past the checks above
if info.rank == 1:
    print(json.dumps(out), flush=True)
    os._exit(0)
deadline = time.time() + 30
while not ddp.lost_peers() and time.time() < deadline:
    time.sleep(0.1)
out["lost_after"] = ddp.lost_peers()
print(json.dumps(out), flush=True)
"""


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="peers are checked by pid on this host")
def test_two_ranks_agree_on_divergence_share_the_run_dir_and_see_a_peer_go(tmp_path):
    script = tmp_path / "collectives.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    outs = {o["rank"]: o for o in map(json.loads, [ln for ln in res.stdout.splitlines() if ln.startswith("{")])}
    for o in outs.values():
        assert o["world"] == 2
        assert o["earliest"] == [7, float("-inf")]  # rank 1's, on both ranks
        assert o["earliest_none"][0] == 3  # rank 0 found nothing itself, stops all the same
        assert o["nothing"] is None
    assert outs[1]["received"] == "/shared/run/dir"
    assert outs[0]["lost_before"] == []
    assert len(outs[0]["lost_after"]) == 1 and outs[0]["lost_after"][0].startswith("rank 1 (pid ")
