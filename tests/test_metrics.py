"""uiunet.metrics: IoU, nIoU, Pd/Fa, ROC and detections, checked by hand and against an independent reference."""
import math

import cv2
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from sklearn.metrics import roc_auc_score

from conftest import data_dir, needs_dataset
from uiunet.metrics import (SegMetrics, binarize, components, detections, evaluate, match_targets,
                            minmax_normalize, roc_from_hist, roc_hist)

EIGHT = np.ones((3, 3), bool)


def img(*squares, h=16, w=16, v=1.0):
    "float32 map with value v on each square (y, x, size)"
    a = np.zeros((h, w), np.float32)
    for y, x, s in squares:
        a[y:y + s, x:x + s] = v
    return a


def one(p, m, **kw):
    return evaluate([p], [m], **kw)


# ---------------------------------------------------------------- an independent reference (scipy, plain loops)
def reference(probs, masks, thr=0.5, niou_thr=None, niou_empty=0.0, normalize=False):
    niou_thr = thr if niou_thr is None else niou_thr
    inter = union = targets = detected = false_px = pixels = 0
    terms = []
    for p, m in zip(probs, masks):
        p = np.asarray(p, np.float64)
        if normalize:
            p = (p - p.min()) / (p.max() - p.min()) if p.max() > p.min() else np.zeros_like(p)
        m = np.asarray(m, bool)
        pred, pn = p > thr, p > niou_thr
        inter += int((pred & m).sum()); union += int((pred | m).sum())
        u = (pn | m).sum()
        terms.append((pn & m).sum() / u if u else niou_empty)
        lg, ng = ndi.label(m, EIGHT)
        lp, npr = ndi.label(pred, EIGHT)
        cg = ndi.center_of_mass(m, lg, range(1, ng + 1))
        cp = ndi.center_of_mass(pred, lp, range(1, npr + 1))
        area = ndi.sum(pred, lp, range(1, npr + 1))
        taken, matched = set(), 0
        for g in cg:                                      # each target in turn: first free component within 3 px
            for j, c in enumerate(cp):
                if j not in taken and math.dist(g, c) < 3:
                    taken.add(j); matched += area[j]; detected += 1
                    break
        targets += ng
        false_px += int(pred.sum() - matched)
        pixels += p.size
    return dict(iou=inter / union if union else math.nan, niou=float(np.mean(terms)), pd=detected / targets,
                fa=false_px / pixels, targets=targets, detected=detected, false_px=false_px)


def random_set(n=40, seed=0):
    "images of varied sizes with small targets, predictions shifted/missed/extra; float32 probabilities"
    rng = np.random.default_rng(seed)
    probs, masks = [], []
    for _ in range(n):
        h, w = rng.integers(20, 70, 2)
        m = np.zeros((h, w), bool)
        p = rng.random((h, w)).astype(np.float32) * 0.45
        for _ in range(rng.integers(0, 6)):
            s = int(rng.integers(1, 5))
            y, x = rng.integers(0, h - s), rng.integers(0, w - s)
            m[y:y + s, x:x + s] = True
            if rng.random() < 0.85:
                dy, dx = rng.integers(-4, 5, 2)
                y2, x2 = np.clip(y + dy, 0, h - s), np.clip(x + dx, 0, w - s)
                p[y2:y2 + s, x2:x2 + s] = rng.uniform(0.3, 1.0)
        if rng.random() < 0.7:
            p[rng.random((h, w)) < 0.01] = rng.uniform(0.5, 1.0)  # speckle false alarms
        probs.append(p); masks.append(m)
    return probs, masks


KEYS = ("iou", "niou", "pd", "fa", "targets", "detected", "false_px")


@pytest.mark.parametrize("kw,ref", [
    (dict(), dict()),
    (dict(threshold=0.3), dict(thr=0.3)),
    (dict(niou_empty=1), dict(niou_empty=1.0)),
    (dict(protocol="release"), dict(thr=0.22, niou_thr=0.2007, normalize=True)),
])
def test_matches_independent_reference(kw, ref):
    probs, masks = random_set()
    got, want = evaluate(probs, masks, roc_bins=0, **kw), reference(probs, masks, **ref)
    # the set exercises every branch: missed and detected targets, false alarms, empty masks with empty predictions
    assert want["targets"] > 50 and 0 < want["pd"] < 1 and want["false_px"] > 0
    if not ref or "niou_empty" in ref:
        assert any(not m.any() and not (p > 0.5).any() for p, m in zip(probs, masks))
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


# ---------------------------------------------------------------- cases worked out by hand (16x16 = 256 pixels)
T = img((5, 5, 3), (12, 12, 1))       # a 3x3 target and a one-pixel target
S = img((5, 5, 3))
E = np.zeros((16, 16), np.float32)


def test_perfect_and_empty_prediction():
    r = one(T, T)
    assert (r["iou"], r["niou"], r["pd"], r["fa"], r["targets"], r["detected"]) == (1, 1, 1, 0, 2, 2)
    r = one(E, T)
    assert (r["iou"], r["niou"], r["pd"], r["fa"], r["pred_objects"]) == (0, 0, 0, 0, 0)


@pytest.mark.parametrize("shift,iou,pd,false_px", [
    (0, 1, 1, 0), (1, 6 / 12, 1, 0), (2, 3 / 15, 1, 0),   # centroids 0, 1, 2 px apart: detected
    (3, 0, 0, 9), (4, 0, 0, 9)])                         # 3 px is not < 3: missed, all 9 px false alarm
def test_shifted_prediction(shift, iou, pd, false_px):
    r = one(img((5, 5 + shift, 3)), S)
    assert r["iou"] == pytest.approx(iou) and r["pd"] == pd and r["false_px"] == false_px
    assert r["fa"] == pytest.approx(false_px / 256)


def test_two_targets_closer_than_3px():
    TT = img((5, 5, 1), (5, 7, 1))               # 2 px apart, two 8-connected components
    assert one(TT, TT)["pd"] == 1
    r = one(img((5, 6, 1)), TT)                  # one pixel between them detects only the first
    assert (r["targets"], r["detected"], r["false_px"]) == (2, 1, 0)
    # first free component in raster order, not the nearest: (x7, y4) is taken before (x3, y5)
    r = one(img((4, 7, 1), (5, 3, 1)), img((5, 5, 1), (5, 9, 1)))
    assert (r["targets"], r["detected"], r["false_px"]) == (2, 1, 1)


def test_far_false_alarm():
    r = one(img((5, 5, 3), (0, 14, 2)), S)
    assert (r["pd"], r["false_px"], r["pred_objects"]) == (1, 4, 2)
    assert r["iou"] == pytest.approx(9 / 13) and r["fa_e6"] == pytest.approx(4 / 256 * 1e6)


def test_image_without_target_and_niou_rule():
    r = evaluate([T, E], [T, E])
    assert (r["iou"], r["niou"], r["pd"], r["empty_images"], r["niou_empty"]) == (1, 0.5, 1, 1, 0)
    assert evaluate([T, E], [T, E], niou_empty=1)["niou"] == 1
    r = evaluate([T, img((0, 0, 2))], [T, E], niou_empty=1)   # a prediction on an empty image: IoU 0, all Fa
    assert (r["niou"], r["false_px"], r["iou"]) == (0.5, 4, pytest.approx(10 / 14))
    r = one(E, E)
    assert math.isnan(r["iou"]) and math.isnan(r["pd"]) and r["niou"] == 0 and r["fa"] == 0
    with pytest.raises(ValueError, match="0 or 1"):
        SegMetrics(niou_empty=0.5)


def test_images_of_different_sizes():
    r = evaluate([T, img((0, 0, 2), h=20, w=12)], [T, img((10, 6, 3), h=20, w=12)])
    assert r["pixels"] == 496 and r["fa"] == pytest.approx(4 / 496)
    assert r["pd"] == pytest.approx(2 / 3) and r["iou"] == pytest.approx(10 / 23)
    assert [(q["height"], q["width"], q["niou_term"]) for q in r["per_image"]] == [(16, 16, 1), (20, 12, 0)]


# ---------------------------------------------------------------- threshold semantics: positive iff p > t
def test_threshold_equality():
    H = img((5, 5, 3), v=0.5)
    assert one(H, S)["iou"] == 0 and one(H, S, threshold=0.4999)["iou"] == 1
    up = np.nextafter(np.float32(0.5), np.float32(1))
    assert one(img((5, 5, 3), v=up), S)["iou"] == 1
    z = torch.where(torch.from_numpy(S) > 0, 0.0, -5.0)[None, None]      # logit exactly 0 -> p = 0.5 -> negative
    mask = torch.from_numpy(S)[None, None]
    assert evaluate(torch.sigmoid(z), mask)["pred_px"] == 0
    assert evaluate(torch.sigmoid(z + 1e-3), mask)["iou"] == 1


def test_binarize_exact_for_any_real_threshold():
    for t in (0.22, 0.2007, 0.1, 1 / 3):
        base = np.float32(t)
        p = base + np.arange(-3, 4, dtype=np.float32) * np.spacing(base)
        assert (binarize(p, t) == (p.astype(np.float64) > t)).all(), t


def test_roc_bins_agree_with_binarize_at_every_threshold():
    bins = 1000
    base = (np.arange(bins + 1) / bins).astype(np.float32)
    p = np.clip(np.concatenate([np.nextafter(base, np.float32(-1)), base, np.nextafter(base, np.float32(2))]), 0, 1)
    m = np.random.default_rng(0).random(p.size) < 0.5
    h = roc_hist(p, m, bins)
    above = np.cumsum(h[:, ::-1], 1)[:, ::-1]
    for k in range(bins + 1):
        pred = binarize(p, k / bins)
        got = above[:, k + 1] if k < bins else np.zeros(2)
        assert (got == [(pred & ~m).sum(), (pred & m).sum()]).all(), k


# ---------------------------------------------------------------- building blocks
def test_component_labels_in_raster_order_like_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        b = rng.random((int(rng.integers(5, 90)), int(rng.integers(5, 90)))) < 0.3
        lab, n = ndi.label(b, EIGHT)
        c = components(b)
        assert (c.labels == lab).all() and len(c.area) == n
        np.testing.assert_allclose(c.centroid[:, ::-1], ndi.center_of_mass(b, lab, range(1, n + 1)))


def test_match_targets():
    assert match_targets([[0, 0]], [[2.99, 0]]).tolist() == [0]
    assert match_targets([[0, 0]], [[0, 3]]).tolist() == [-1]
    assert match_targets([[5, 5], [9, 5]], [[7, 4], [3, 5]]).tolist() == [0, -1]
    assert match_targets([[5, 5], [9, 5]], [[3, 5], [7, 4]]).tolist() == [0, 1]
    assert match_targets(np.zeros((0, 2)), [[1, 1]]).tolist() == []
    assert match_targets([[1, 1]], np.zeros((0, 2))).tolist() == [-1]


def test_detections_boxes_are_the_enclosing_rectangles():
    probs, _ = random_set(10, seed=3)
    for p in probs:
        d = detections(p, 0.5)
        lab, n = ndi.label(p > 0.5, EIGHT)
        boxes = [[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndi.find_objects(lab)]
        assert d["boxes"].tolist() == boxes
        np.testing.assert_allclose(d["scores"], ndi.maximum(p, lab, range(1, n + 1)))
        np.testing.assert_array_equal(d["areas"], np.bincount(lab.ravel())[1:])
    assert detections(E)["boxes"].shape == (0, 4)


# ---------------------------------------------------------------- streaming, ROC, release protocol
def test_streaming_over_batches_equals_evaluate():
    probs, masks = random_set(12, seed=1)
    whole = evaluate(probs, masks, pdfa_thresholds=[0.3, 0.5, 0.7])
    sm = SegMetrics(pdfa_thresholds=[0.3, 0.5, 0.7])
    sm.update(probs[0], masks[0])                                              # one (H, W) map
    sm.update([torch.from_numpy(p)[None] for p in probs[1:5]], masks[1:5])     # list of (1, H, W) tensors + arrays
    sm.update(probs[5:], [m.astype(np.uint8) for m in masks[5:]])              # uint8 0/1 masks
    assert sm.compute() == whole
    # same-size images as batches (B,1,H,W) tensors and (B,H,W) arrays
    P = np.stack([p[:20, :20] for p in probs]); M = np.stack([m[:20, :20] for m in masks])
    ref = evaluate(list(P), list(M))
    sm = SegMetrics().update(torch.from_numpy(P[:5])[:, None], torch.from_numpy(M[:5]).float()[:, None])
    assert sm.update(P[5:], M[5:]).compute() == ref
    sm.reset()
    with pytest.raises(ValueError, match="no images"):
        sm.compute()


def test_roc_sanity():
    probs, masks = random_set(12, seed=2)
    perfect = evaluate([m.astype(np.float32) for m in masks], masks)
    assert perfect["auc"] == 1.0
    const = evaluate([np.full(m.shape, 0.5, np.float32) for m in masks], masks)
    assert const["auc"] == pytest.approx(0.5)
    # values at bin centres: the 1001-threshold ROC is the exact ROC, so its AUC is scikit-learn's
    q = [((np.floor(p * 1000) + 0.5) / 1000).astype(np.float32) for p in probs]
    r = evaluate(q, masks)
    sk = roc_auc_score(np.concatenate([m.ravel() for m in masks]), np.concatenate([p.ravel() for p in q]))
    assert r["auc"] == pytest.approx(sk, abs=1e-12)
    roc = r["roc"]
    assert len(roc["thresholds"]) == 1001 and roc["thresholds"][500] == 0.5
    assert np.all(np.diff(roc["tpr"]) <= 0) and np.all(np.diff(roc["fpr"]) <= 0) and roc["tpr"][-1] == 0
    # thr, fpr, tpr at one threshold equal a direct count
    m_all = np.concatenate([m.ravel() for m in masks]); p_all = np.concatenate([p.ravel() for p in q])
    k = 420
    assert roc["tpr"][k] == pytest.approx(((p_all > k / 1000) & m_all).sum() / m_all.sum())
    assert roc["fpr"][k] == pytest.approx(((p_all > k / 1000) & ~m_all).sum() / (~m_all).sum())
    assert math.isnan(roc_from_hist(roc_hist(E, E > 0, 10))[3])            # no positive pixel: no ROC


def test_pdfa_curve_equals_separate_evaluations():
    probs, masks = random_set(15, seed=4)
    ts = [0.2, 0.5, 0.8]
    cur = evaluate(probs, masks, pdfa_thresholds=ts)["pdfa_curve"]
    assert cur["thresholds"] == ts
    for t, pd_, fa in zip(ts, cur["pd"], cur["fa"]):
        r = evaluate(probs, masks, threshold=t, roc_bins=0)
        assert (r["pd"], r["fa"]) == (pytest.approx(pd_), pytest.approx(fa))
    # Pd need not fall with the threshold: at 0.2 the background noise merges into large components whose
    # centroids are far from the targets
    assert cur["pd"][0] < cur["pd"][1]


def test_release_protocol_differs_from_standard():
    low = img((5, 5, 3), v=0.3) + 0.01          # all values low: target .31, background .01
    low[8, 8] = 0.01 + 0.3 * 0.21               # normalises to .21: above 0.2007 (nIoU) but not 0.22 (IoU)
    std, rel = one(low, S), one(low, S, protocol="release")
    assert std["iou"] == 0 and std["pd"] == 0 and std["protocol"] == "standard"
    assert rel["iou"] == pytest.approx(1) and rel["niou"] == pytest.approx(0.9) and rel["pd"] == 1
    assert (rel["protocol"], rel["threshold"], rel["niou_threshold"], rel["normalize"]) == ("release", 0.22, 0.2007, True)
    # logits are fine under the release protocol (min-max normalised), not under the standard one
    assert one(low * 10 - 3, S, protocol="release")["iou"] == pytest.approx(1)
    with pytest.raises(ValueError, match="must lie in"):
        one(low * 10 - 3, S)
    assert (minmax_normalize(np.full((3, 3), 0.4)) == 0).all()


def test_result_records_options_and_is_plain_python():
    r = evaluate([T, E], [T, E], names=["a", "b"], roc_bins=0)
    for k in ("threshold", "niou_threshold", "niou_empty", "protocol", "normalize", "positive", "connectivity", "max_dist"):
        assert k in r
    assert r["positive"] == "p > threshold" and r["connectivity"] == 8 and r["max_dist"] == 3
    assert [q["name"] for q in r["per_image"]] == ["a", "b"]
    assert {type(v) for q in r["per_image"] for v in q.values()} <= {int, float, str}


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("probs,masks,msg", [
    ([S, S[:, :15]], [S, S], r"image 1 \(item 1 of this update\): prediction has shape \(16, 15\) but its mask has shape \(16, 16\)"),
    ([S, S * 2], [S, S], r"image 1 \(item 1 of this update\): prediction values must lie in \[0, 1\], got min 0, max 2"),
    ([S - 0.5], [S], r"image 0 .*got min -0.5"),
    ([np.where(S > 0, np.nan, 0.0)], [S], r"image 0 \(item 0 of this update\): prediction contains 9 NaN"),
    ([np.where(S > 0, np.inf, 0.0)], [S], r"image 0 .*infinite"),
    ([], [], "no predictions: got an empty list"),
    ([S], [], "no masks: got an empty list"),
    ([S], [S, S], "1 predictions but 2 masks"),
    ([S], [S * 255], "mask values must be 0/1 or bool"),
    (torch.zeros(2, 3, 16, 16), torch.zeros(2, 3, 16, 16), r"expected \(B,1,H,W\)"),
    ([np.zeros((2, 16, 16))], [S], r"prediction 0: expected a 2-D map"),
])
def test_bad_input_names_the_item(probs, masks, msg):
    with pytest.raises(ValueError, match=msg):
        evaluate(probs, masks)


def test_failed_update_counts_nothing():
    sm = SegMetrics().update([S], [S], names=["000001"])
    with pytest.raises(ValueError, match=r"image 2 \(item 1 of this update, '000002'\): prediction contains 9 NaN"):
        sm.update([S, np.where(S > 0, np.nan, 0.0)], [S, S], names=["000001b", "000002"])
    assert len(sm.rows) == 1 and sm.compute()["images"] == 1


# ---------------------------------------------------------------- real masks
@needs_dataset("nudt-sirst")
def test_nudt_sirst_test_masks():
    root = data_dir("nudt-sirst")
    stems = (root / "test.txt").read_text().split()
    assert len(stems) == 664
    masks = [cv2.imread(str(root / "masks" / f"{s}.png"), cv2.IMREAD_GRAYSCALE) > 127 for s in stems]
    r = evaluate([m.astype(np.float32) for m in masks], masks, names=stems)
    assert (r["iou"], r["niou"], r["pd"], r["fa"], r["auc"], r["empty_images"]) == (1, 1, 1, 0, 1, 0)
    assert r["targets"] == sum(ndi.label(m, EIGHT)[1] for m in masks)
    assert r["pixels"] == 664 * 256 * 256
    # perturbed predictions on a subset agree with the independent reference
    rng = np.random.default_rng(0)
    sub = masks[::8]
    probs = [np.clip(cv2.GaussianBlur(np.roll(m, tuple(rng.integers(-3, 4, 2)), (0, 1)).astype(np.float32), (5, 5), 1) * 2.5
                     + rng.random(m.shape, dtype=np.float32) * 0.3, 0, 1) for m in sub]
    got, want = evaluate(probs, sub, roc_bins=0), reference(probs, sub)
    assert 0 < want["pd"] < 1
    for k in KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
