import pytest
import torch

from rftbench.config import DataConfig
from rftbench.data import build_splits, eval_subset_indices, indices_sha256, stratified_split
from rftbench.errors import CheckpointError, UnknownNameError
from rftbench.models import create_model, load_checkpoint, save_checkpoint, weights_sha256


def test_digits_splits_are_disjoint_pixel_space_and_stratified(embedded_cache):
    model = create_model("small_cnn", 5, pretrained=False)
    s = build_splits(DataConfig(name="digits"), model.spec, seed=0)
    assert s.num_classes == 5
    x, y = s.train[0]
    assert x.shape == (1, 16, 16) and 0.0 <= x.min() and x.max() <= 1.0
    assert len(s.train) + len(s.val) + len(s.test) == sum(1 for _ in range(len(s.train) + len(s.val) + len(s.test)))
    tr = {tuple(s.train.images[i].flatten()[:20].tolist()) for i in range(len(s.train))}
    assert set(s.train.labels.tolist()) == set(range(5))
    assert s.info["n_val"] > 0 and s.info["val_carved_from_train"]
    assert tr  # non-empty


def test_stratified_split_keeps_class_proportions():
    labels = [0] * 100 + [1] * 50
    kept, carved = stratified_split(labels, 0.2, seed=3)
    assert len(carved) == 30 and sorted([labels[i] for i in carved]).count(1) == 10
    assert set(kept).isdisjoint(carved) and len(kept) + len(carved) == 150
    assert (kept == stratified_split(labels, 0.2, seed=3)[0]).all()


def test_eval_subset_is_seeded_and_hashed():
    a, b = eval_subset_indices(1000, 100, 7), eval_subset_indices(1000, 100, 7)
    assert (a == b).all() and len(set(a.tolist())) == 100
    assert indices_sha256(a) == indices_sha256(b) != indices_sha256(eval_subset_indices(1000, 100, 8))


def test_pretrained_builtin_and_checkpoint_roundtrip(tmp_path, embedded_cache):
    m = create_model("small_cnn", 5, pretrained=True)
    x = torch.rand(4, 1, 16, 16)
    p = save_checkpoint(m, tmp_path / "m.safetensors")
    m2 = load_checkpoint(p)
    m.eval(), m2.eval()
    assert torch.equal(m(x), m2(x))
    assert weights_sha256(m) == weights_sha256(m2)
    via_registry = create_model(f"file:{p}", 5)
    via_registry.eval()
    assert torch.equal(via_registry(x), m(x))


def test_bad_model_names_and_corrupt_checkpoint(tmp_path):
    with pytest.raises(UnknownNameError, match="small_cnn"):
        create_model("small_cnm", 5)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(bad)
    html = tmp_path / "dl.pt"
    html.write_text("<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(CheckpointError, match="HTML page"):
        create_model("small_cnn", 5, weights=str(html))
