"""uiunet.baselines: every method finds one bright target on a smooth background, survives a flat image,
keeps the input size; the building blocks against plain references."""
import math

import numpy as np
import pytest

from conftest import needs_dataset
from uiunet.baselines import (adaptive_threshold, from_patches, get_baseline, grid_pad, list_baselines, pstnn_prox,
                              rpca_ialm, svt, to_patches, toy_scene)

METHODS = list_baselines()
# LCM takes the maximum of the central cell (up to 9 x 9): its score is a plateau around the target,
# whose highest point may sit a few pixels off the target's centre
SPREAD = {'lcm': 4}


def test_registry_lists_the_required_methods():
    assert {'top_hat', 'max_median', 'lcm', 'mpcm', 'ipi', 'pstnn', 'ript'} <= set(METHODS)
    with pytest.raises(ValueError, match='unknown baseline'):
        get_baseline('no_such_method')


@pytest.mark.parametrize('name', METHODS)
@pytest.mark.parametrize('center', [(30, 41), (12, 20)])
def test_target_is_the_maximum(name, center):
    s, b = get_baseline(name)(toy_scene((64, 64), center=center))
    y, x = np.unravel_index(np.argmax(s), s.shape)
    tol = SPREAD.get(name, 1)
    assert abs(y - center[0]) <= tol and abs(x - center[1]) <= tol, (name, y, x)
    assert b[center] and s.max() == 1.0
    assert b.sum() <= 100          # the segmentation is the target's neighbourhood, not the background


@pytest.mark.parametrize('name', METHODS)
@pytest.mark.parametrize('value', [0.0, 0.4])
def test_flat_image(name, value):
    s, b = get_baseline(name)(np.full((61, 77), value, np.float32))
    assert s.shape == (61, 77) and s.dtype == np.float32
    assert not np.isnan(s).any() and s.min() >= 0 and s.max() <= 1
    assert not b.any()


@pytest.mark.parametrize('name', METHODS)
def test_odd_size_and_channel_first_input(name):
    img = toy_scene((61, 77), center=(20, 50))
    s = get_baseline(name).score(img[None])        # (1, H, W) like a dataset item
    assert s.shape == (61, 77)
    assert np.array_equal(s, get_baseline(name).score(img))


def test_score_is_invariant_to_brightness_scale_for_contrast_ratios():
    img = toy_scene()
    for name in ('top_hat', 'max_median', 'mpcm', 'ipi'):   # linear in the image up to the division by the max
        np.testing.assert_allclose(get_baseline(name).score(img), get_baseline(name).score(0.5 * img), atol=1e-5)


def test_adaptive_threshold_rule():
    s = np.zeros((20, 20)); s[3, 4] = 1; s[10, 10] = 0.05
    t = s.mean() + 3 * s.std()
    assert np.array_equal(adaptive_threshold(s, 3), s > t)


def test_patch_round_trip_and_median_reconstruction():
    rng = np.random.default_rng(0)
    g = grid_pad(rng.random((53, 67)), 20, 5)
    assert (g.shape[0] - 20) % 5 == 0 and (g.shape[1] - 20) % 5 == 0
    p = to_patches(g, 20, 5)
    np.testing.assert_array_equal(from_patches(p, g.shape, 20, 5), g)
    # a value added to one patch only changes pixels covered by 1 or 2 patches (median of few values)
    p2 = p.copy(); p2[0] += 1
    out = from_patches(p2, g.shape, 20, 5)
    assert np.allclose(out[10:20, 10:20], g[10:20, 10:20])   # interior of patch 0: covered by >= 4 patches


def test_svt_matches_full_svd():
    X = np.random.default_rng(1).normal(size=(30, 80))
    U, S, Vt = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(svt(X, 2.0), (U * np.maximum(S - 2, 0)) @ Vt, atol=1e-8)


def test_rpca_recovers_low_rank_plus_sparse():
    rng = np.random.default_rng(3)
    L0 = rng.normal(size=(80, 2)) @ rng.normal(size=(2, 60))
    S0 = np.zeros(L0.shape); S0.flat[rng.choice(L0.size, 50, replace=False)] = rng.choice([-8, 8], 50)
    B, T, n = rpca_ialm(L0 + S0, 1 / math.sqrt(80))
    np.testing.assert_allclose(T, S0, atol=1e-3)
    np.testing.assert_allclose(B, L0, atol=1e-3)


def test_pstnn_prox_on_a_rank_one_tensor():
    rng = np.random.default_rng(4)
    a, b, c = rng.normal(size=5), rng.normal(size=4), rng.normal(size=3)
    X = np.einsum('i,j,k->ijk', a, b, c)             # every Fourier slice has rank <= 1
    np.testing.assert_allclose(pstnn_prox(X, 100.0, N=1), X, atol=1e-10)   # the largest value is never shrunk


@needs_dataset('sirst')
def test_on_a_sirst_image_local_contrast_finds_the_target():
    from uiunet.data import get_dataset
    it = get_dataset('sirst', 'paper_test', in_channels=1)[0]
    img, m = it['image'][0].numpy(), it['mask'][0].numpy() > 0
    for name in ('top_hat', 'lcm', 'pstnn'):
        s, b = get_baseline(name)(img)
        assert m.ravel()[np.argmax(s)], name     # brightest score on the target (Misc_408 has a clear one)
        assert (b & m).sum() > 0.5 * m.sum(), name
