"""Common corruptions: the library's own output for the seed of (seed, sample, corruption,
severity); small and grayscale images through the documented round trip; cached; bad input refused."""
import numpy as np
import pytest
import torch
from imagecorruptions import corrupt

from rftbench.errors import DataError
from rftbench.evaluation.corruptions import CorruptionCache, corrupt_batch, corruption_seed


def _library(img_chw, name, sev, seed):
    """The library called directly under numpy's global seed (and seed= where it takes one)."""
    a = np.rint(img_chw.numpy().astype(np.float64) * 255).astype(np.uint8).transpose(1, 2, 0)
    np.random.seed(seed)
    kw = {"seed": seed} if name in ("impulse_noise", "glass_blur") else {}
    return corrupt(a, severity=sev, corruption_name=name, **kw)


@pytest.mark.parametrize("name", ["gaussian_noise", "impulse_noise", "glass_blur", "fog", "frost", "contrast"])
def test_rgb_32px_images_are_the_library_s_output_for_the_same_seed(name):
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = corrupt_batch(x, [5, 9, 11], name, 3, seed=7)
    for k, i in enumerate([5, 9, 11]):
        ref = _library(x[k], name, 3, corruption_seed(7, i, name, 3)).astype(np.float32) / 255
        np.testing.assert_array_equal(out[k].numpy(), ref.transpose(2, 0, 1))
    # per sample: alone or in another batch, the same copy; another seed, another copy
    assert torch.equal(corrupt_batch(x[1:2], [9], name, 3, seed=7), out[1:2])
    if name not in ("contrast", "fog", "frost"):  # these draw nothing per pixel at this size (or identical crops)
        assert not torch.equal(corrupt_batch(x[1:2], [9], name, 3, seed=8), out[1:2])


def test_small_grayscale_images_go_through_the_documented_round_trip():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    out = corrupt_batch(x, [0, 1], "fog", 2, seed=0)
    assert out.shape == x.shape and out.dtype == x.dtype
    big = torch.from_numpy(np.repeat(x.numpy(), 3, 1)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    ref = _library(big[1], "fog", 2, corruption_seed(0, 1, "fog", 2)).astype(np.float32) / 255  # 32x32x3
    ref = ref.reshape(16, 2, 16, 2, 3).mean(axis=(1, 3)).mean(axis=2)
    np.testing.assert_allclose(out[1, 0].numpy(), ref, atol=1e-6)  # float32 means in another order


def test_the_cache_returns_the_same_images_and_hash(tmp_path):
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    cache = CorruptionCache(tmp_path)
    a, ha = cache.get(x, [3, 4], "gaussian_noise", 5, 0)
    b, hb = cache.get(x, [3, 4], "gaussian_noise", 5, 0)
    assert (cache.misses, cache.hits) == (1, 1) and torch.equal(a, b) and ha == hb
    _, hc = cache.get(x, [3, 4], "gaussian_noise", 5, 1)  # another seed: another entry
    assert cache.misses == 2 and hc != ha


def test_images_outside_the_unit_range_are_refused():
    with pytest.raises(DataError, match=r"need images in \[0, 1\].*normalisation into the model"):
        corrupt_batch(torch.full((1, 3, 32, 32), -0.5), [0], "fog", 1, seed=0)
