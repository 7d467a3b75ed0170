"""Plain progress of an evaluation: the sweep's eps points and AutoAttack's attacks with counts
that match the returned record, a signal's notice said at once, and nothing else when off."""
import os
import re
import signal

import numpy as np
import pytest

from eval_helpers import source_setup
from rftbench import progress
from rftbench.evaluation.state import EvaluationInterrupted
from rftbench.evaluation.evaluate import evaluate_model

KW = dict(device="cpu", dataset_name="digits", split="test")
BS = 8
SWEEP = re.compile(r"sweep [\d/]+: batch (\d+)/\d+ eps (\d+)/(\d+) = \S+: (\d+)/(\d+) robust")
AA = re.compile(r"autoattack [\d/]+: chunk (\d+)/\d+ (\S+) \((\d+)/(\d+)\): (\d+)/(\d+) left robust")


@pytest.fixture(scope="module")
def setup(embedded_cache):
    # 16 samples in blocks and batches of 8; AutoAttack on all 16 in chunks of 8
    return source_setup(eval__n_samples=16, threat__eps=0.07, eval__num_points=3, eval__restarts=1,
                        eval__checks__probe_samples=8, data__eval_batch_size=BS,
                        eval__autoattack__batch_size=BS, eval__autoattack__enabled=True,
                        eval__autoattack__n_samples=16, eval__autoattack__version="custom",
                        eval__autoattack__attacks=["apgd-ce", "apgd-t"])


@pytest.fixture
def plain_progress():
    previous = progress.configure(mode="plain", min_interval_s=0.0)  # every line, none rate-limited
    yield
    progress.restore(previous)


def test_sweep_and_autoattack_lines_match_the_record(setup, plain_progress, capsys):
    cfg, model, test = setup
    s = evaluate_model(model, test, cfg, **KW).samples()
    # a task's closing line repeats its latest detail: count only the updates
    lines = [line for line in capsys.readouterr().err.splitlines() if "(done in" not in line]
    last = len(cfg.eps_grid()) - 1
    sweep = [m for m in map(SWEEP.search, lines) if m and int(m[2]) == int(m[3]) == last]
    # one line per batch at the last eps point; its robust count is that batch's last column
    expected = [int(s.sweep_flags[b:b + BS, -1].sum()) for b in range(0, len(s.indices), BS)]
    assert [int(m[4]) for m in sweep] == expected
    assert [int(m[5]) for m in sweep] == [len(s.indices[b:b + BS]) for b in range(0, len(s.indices), BS)]
    eps_points = {int(m[2]) for m in map(SWEEP.search, lines) if m}
    assert eps_points == set(range(1, last + 1))  # every eps point is named
    # the chunk's own advance repeats its last attack's line: drop consecutive repeats
    found = [(m[1], m[2], int(m[5])) for m in map(AA.search, lines) if m]
    aa = [(name, left) for i, (c, name, left) in enumerate(found) if i == 0 or found[i - 1] != (c, name, left)]
    # left robust after attack k: not clean-wrong (1) and not broken by attacks 0..k (2..2+k)
    broken = s.aa_broken_by
    expected_aa = [(name, int(((chunk == 0) | (chunk > 2 + k)).sum()))
                   for chunk in (broken[c:c + BS] for c in range(0, len(broken), BS))
                   for k, name in enumerate(s.aa_attacks)]
    assert aa == expected_aa


def test_empty_phases_print_no_line(setup, plain_progress, capsys):
    cfg, model, test = setup
    cfg = cfg.model_copy(deep=True)
    cfg.eval.checks.probe_samples = 0
    evaluate_model(model, test, cfg, with_autoattack=False, **KW)
    err = capsys.readouterr().err
    assert "sweep" in err
    assert "checks probe" not in err and "autoattack" not in err


def _interrupt_after_first_block(done, total):
    if done == 1:
        os.kill(os.getpid(), signal.SIGINT)  # the real signal: its handler announces at once


def test_signal_notice_is_printed_at_once(setup, plain_progress, capsys, tmp_path):
    cfg, model, test = setup
    with pytest.raises(EvaluationInterrupted):
        evaluate_model(model, test, cfg, state_path=tmp_path / "s.json", on_block=_interrupt_after_first_block,
                       with_autoattack=False, **KW)
    lines = capsys.readouterr().err.splitlines()
    notice = [i for i, line in enumerate(lines) if "SIGINT received" in line]
    stopped = [i for i, line in enumerate(lines) if "stopped after" in line]
    assert notice and stopped and notice[0] < stopped[-1]


def test_mode_off_prints_only_the_notice(setup, capsys, tmp_path):
    cfg, model, test = setup
    previous = progress.configure(mode="off")
    try:
        with pytest.raises(EvaluationInterrupted):
            evaluate_model(model, test, cfg, state_path=tmp_path / "s.json", on_block=_interrupt_after_first_block,
                           with_autoattack=False, **KW)
    finally:
        progress.restore(previous)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGINT received" in lines[0]
