"""Subsets that represent the split: the evaluation subset is class-stratified and stored in an
interleaved order, so AutoAttack's and the probe's prefixes cover every class, also on a
class-ordered split; the record says which subset each number used."""
import numpy as np
import pytest
import torch

from eval_helpers import source_setup
from rftbench.data import TensorImageDataset, class_counts, indices_sha256, stratified_subset_indices
from rftbench.evaluation.evaluate import evaluate_model


def test_stratified_sample_and_every_prefix_is_balanced():
    labels = np.repeat(np.arange(6), [40, 25, 12, 8, 8, 7])  # sorted: a class-ordered split
    idx = stratified_subset_indices(labels, 30, seed=0)
    assert len(set(idx)) == 30 and set(class_counts(labels[idx])) == {str(c) for c in range(6)}
    counts = class_counts(labels[idx])
    assert counts["0"] > counts["5"]  # the rest proportional to class size
    smallest = min(counts.values())
    for n in range(1, 31):
        c = np.bincount(labels[idx[:n]], minlength=6)
        assert len(np.unique(labels[idx[:n]])) == min(n, 6)  # a prefix covers as many classes as it can
        if n <= 6 * smallest:  # round robin: counts differ by at most one while every class lasts
            assert c.max() - c.min() <= 1
    assert np.array_equal(idx, stratified_subset_indices(labels, 30, seed=0))
    assert not np.array_equal(idx, stratified_subset_indices(labels, 30, seed=1))
    few = stratified_subset_indices(labels, 4, seed=0)  # fewer samples than classes: 4 distinct classes
    assert len(np.unique(labels[few])) == 4
    every = stratified_subset_indices(labels, 1000, seed=0)
    assert sorted(every) == list(range(100)) and len(np.unique(labels[every[:6]])) == 6


@pytest.fixture(scope="module")
def ordered(embedded_cache):
    cfg, model, test = source_setup(eval__n_samples=40, threat__eps=0.1, eval__num_points=3,
                                    eval__checks__probe_samples=5, data__eval_batch_size=8,
                                    eval__autoattack__enabled=True, eval__autoattack__n_samples=10,
                                    eval__autoattack__batch_size=8, eval__autoattack__version="custom",
                                    eval__autoattack__attacks=["apgd-ce"])
    order = torch.argsort(test.labels, stable=True)
    sorted_split = TensorImageDataset(test.images[order], test.labels[order])  # like an ImageFolder tree
    return cfg, model, sorted_split


def test_autoattack_and_probe_cover_every_class_of_a_class_ordered_split(ordered):
    cfg, model, split = ordered
    labels = split.labels.numpy()
    assert len(np.unique(labels[:10])) == 1  # the first samples of the split: one class only
    rec = evaluate_model(model, split, cfg, device="cpu", dataset_name="digits", split="test")
    s = rec.samples()
    assert len(np.unique(s.labels[:10])) == 5 and len(np.unique(s.labels[:5])) == 5
    sub = rec["subsets"]
    assert sub["autoattack"]["classes_covered"] == sub["autoattack"]["classes_in_split"] == 5
    assert sub["autoattack"]["per_class"] == {str(c): 2 for c in range(5)} and sub["autoattack"]["n"] == 10
    assert sub["probe"]["per_class"] == {str(c): 1 for c in range(5)} and sub["probe"]["missing_classes"] == []
    assert sub["evaluation"]["per_class"] == class_counts(labels[s.indices]) and sub["evaluation"]["n"] == 40
    # which subset each number used, by hash
    assert sub["autoattack"]["indices_sha256"] == indices_sha256(s.indices[:10])
    assert sub["probe"]["indices_sha256"] == indices_sha256(s.indices[:5])
    assert sub["evaluation"]["indices_sha256"] == rec["subset"]["indices_sha256"] == indices_sha256(s.indices)
    assert "autoattack" in sub["autoattack"]["used_by"] and "checks.monotone" in sub["probe"]["used_by"]
    assert rec["subset"]["stratified"] is True and rec["autoattack"]["n_samples"] == 10
