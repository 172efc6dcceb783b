"""uiunet.data: split counts, the paper split, decoding and binarization, Misc_111, transforms, the synthetic
generator, bad input and the input contracts (pixel values, masks, split lists, mask naming), the package's import graph. Real-data tests skip when the dataset is missing."""
import ast
import os
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, data_dir, needs_dataset
from uiunet.data import (NORM_STATS, clean_pair, crop_to, decode_image, get_dataset, image_array, local_scr, pad_item,
                         read_image, read_mask, read_split, release_transform, standard_transform, synth_scene, to_unit)


# ---------------------------------------------------------------- a tiny dataset of our own
@pytest.fixture
def own(tmp_path):
    "A 4-pair dataset in the project layout: 16-bit images, 0/255 masks (one empty), CRLF split lists."
    d = tmp_path / "own"
    (d / "images").mkdir(parents=True); (d / "masks").mkdir()
    for k in range(4):
        im, mk = synth_scene(k, size=(40, 70), n_targets=(0, 0) if k == 3 else (1, 2), n_clutter=(0, 0))
        assert (mk.sum() > 0) == (k != 3)
        cv2.imwrite(str(d / "images" / f"f{k}.png"), (im * 65535).astype(np.uint16))
        cv2.imwrite(str(d / "masks" / f"f{k}.png"), mk * 255)
    (d / "train.txt").write_bytes(b"f0\r\nf1\r\nf3\r\n")
    (d / "test.txt").write_text("f2\n")
    return d


# ---------------------------------------------------------------- split counts and the paper split
@needs_dataset("sirst")
def test_sirst_split_counts():
    want = {"train": 256, "val": 85, "test": 86, "trainval": 341, "5050_train": 213, "5050_test": 214,
            "paper_train": 407, "paper_test": 20}
    assert {s: len(get_dataset("sirst", s)) for s in want} == want


@needs_dataset("sirst")
def test_sirst_paper_split():
    test, train = get_dataset("sirst", "paper_test").names, get_dataset("sirst", "paper_train").names
    assert test == [f"Misc_{k}" for k in range(408, 428)]
    assert set(test).isdisjoint(train) and len(set(test) | set(train)) == 427
    assert train[:3] == ["Misc_1", "Misc_2", "Misc_3"]            # numeric order
    assert len(set(test) & set(get_dataset("sirst", "trainval").names)) == 17


@needs_dataset("sirst")
def test_sirst_5050_holdout_for_validation():
    full = get_dataset("sirst", "5050_train").names
    fit, held = get_dataset("sirst", "5050_train:fit").names, get_dataset("sirst", "5050_train:holdout").names
    assert (len(fit), len(held)) == (170, 43) and set(fit).isdisjoint(held) and set(fit) | set(held) == set(full)
    assert set(held).isdisjoint(get_dataset("sirst", "5050_test").names)
    assert held == [s for s in full if s in set(held)]                # list order kept, reproducible
    assert held == get_dataset("sirst", "5050_train:holdout").names


@needs_dataset("sirst")
def test_split_order_follows_list_file():
    listed = read_split(data_dir("sirst") / "idx_427" / "test.txt")
    assert get_dataset("sirst", "test").names == listed


@needs_dataset("nudt-sirst")
def test_nudt_counts_with_crlf_lists():
    assert b"\r\n" in (data_dir("nudt-sirst") / "50_50" / "train.txt").read_bytes()   # the official CRLF lists
    tr, te = get_dataset("nudt-sirst", "train"), get_dataset("nudt-sirst", "test")
    assert (len(tr), len(te)) == (663, 664)
    assert all(n.isdigit() and len(n) == 6 for n in tr.names + te.names) and set(tr.names).isdisjoint(te.names)


@needs_dataset("nudt-sirst")
def test_norm_stats_reproduce_basicirstd_nudt():
    from uiunet.data import norm_stats
    mean, std = norm_stats("nudt-sirst", ("train", "test"))
    assert abs(mean * 255 - 107.80905) < 1e-3 and abs(std * 255 - 33.02275) < 1e-3    # BasicIRSTD's constants
    assert np.allclose((mean, std), NORM_STATS["nudt-sirst"], atol=5e-5)


# ---------------------------------------------------------------- MDvsFA
@needs_dataset("mdvsfa")
def test_mdvsfa_splits_follow_the_lists():
    listed = read_split(data_dir("mdvsfa") / "train.txt")
    assert get_dataset("mdvsfa", "train").names == listed and len(get_dataset("mdvsfa", "test")) == 100


@needs_dataset("mdvsfa")
def test_mdvsfa_train_clean_rule_on_the_pairs_present():
    first = read_split(data_dir("mdvsfa") / "train.txt")[:2000]      # the 2,000 pairs of the shared copy
    clean = get_dataset("mdvsfa", "train_clean").names
    assert len(set(clean) & set(first)) == 1941                         # 59 of 2,000 removed
    assert {"000308_1", "000324_1"}.isdisjoint(clean)                   # negative / zero local contrast
    assert "000000_1" in clean
    sub = get_dataset("mdvsfa", "train_500").names
    assert len(sub) == 500 == len(set(sub)) and set(sub) <= set(clean)
    assert sub == sorted(sub, key=clean.index) and sub == get_dataset("mdvsfa", "train_500").names


def test_clean_pair_rule():
    g = np.full((16, 16), 0.2, np.float32); g[::2] += 0.02
    m = np.zeros((16, 16), np.uint8); m[7:9, 7:9] = 1
    assert clean_pair(g + 0.1 * m, m)
    assert not clean_pair(g - 0.1 * m, m)                              # darker than its surroundings
    assert not clean_pair(g + 0.005 * m, m)                            # SCR below 1
    assert not clean_pair(g, np.zeros_like(m))                         # empty mask
    assert not clean_pair(np.full((16, 16), 0.3, np.float32), m)       # flat image
    b = np.zeros_like(m); b[15, 3:5] = 1
    assert not clean_pair(g + 0.1 * b, b)                              # target on the border
    assert clean_pair(np.stack([g + 0.1 * m] * 3, -1), m)              # colour input is reduced to grey


# ---------------------------------------------------------------- Misc_111
@pytest.fixture
def sirst_without_corrections(tmp_path):
    "A data root whose sirst/ links to the real files except corrections/ (a SIRST v1 download)."
    d = tmp_path / "sirst"; d.mkdir()
    for entry in data_dir("sirst").iterdir():
        if entry.name != "corrections": (d / entry.name).symlink_to(entry)
    return tmp_path


@needs_dataset("sirst")
def test_misc111_with_correction():
    ds = get_dataset("sirst", "test")
    assert "Misc_111" in ds.names and len(ds) == 86
    it = ds[ds.names.index("Misc_111")]
    assert it["size"] == (220, 325) and it["mask"].shape == (1, 220, 325) and int(it["mask"].sum()) == 37


@needs_dataset("sirst")
def test_misc111_without_correction_is_left_out_with_a_warning(sirst_without_corrections):
    root = sirst_without_corrections
    with pytest.warns(UserWarning, match=r"Misc_111.*592x400.*325x220") as rec:
        ds = get_dataset("sirst", "test", root=root)
    assert len(ds) == 85 and "Misc_111" not in ds.names and len(rec) == 1
    with pytest.warns(UserWarning, match="Left out Misc_111"):
        assert len(get_dataset("sirst", "5050_test", root=root)) == 213
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                   # splits without Misc_111: no warning
        assert len(get_dataset("sirst", "trainval", root=root)) == 341


@needs_dataset("sirst")
def test_misc111_strict_is_an_error(sirst_without_corrections):
    with pytest.raises(ValueError, match="Misc_111"):
        get_dataset("sirst", "test", root=sirst_without_corrections, strict=True)


# ---------------------------------------------------------------- decoding, colour rule, binarization
def test_palette_goes_through_its_palette(tmp_path):
    idx = np.array([[0, 1, 2]], np.uint8)
    p = Image.fromarray(idx, "P"); p.putpalette([0, 0, 0, 200, 200, 200, 10, 20, 30] + [0] * 759); p.save(tmp_path / "p.png")
    assert np.allclose(read_image(tmp_path / "p.png", 3)[:, 0, 1] * 255, 200)       # not the index 1
    assert np.allclose(read_image(tmp_path / "p.png", 3)[:, 0, 2] * 255, [10, 20, 30])
    assert np.isclose(read_image(tmp_path / "p.png", 1)[0, 0, 2] * 255, 0.299 * 10 + 0.587 * 20 + 0.114 * 30, atol=1e-3)


@needs_dataset("sirst")
def test_sirst_palette_images_match_pil():
    pal = [p for p in sorted((data_dir("sirst") / "images").glob("*.png")) if Image.open(p).mode == "P"]
    assert len(pal) == 37
    for p in pal:
        ref = np.asarray(Image.open(p).convert("RGB"))
        got = read_image(p, 3)
        assert np.array_equal(np.round(got * 255).astype(np.uint8).transpose(1, 2, 0), ref), p.name


def test_colour_rule(tmp_path):
    rgb = np.zeros((2, 3, 3), np.uint8); rgb[..., 0], rgb[..., 1], rgb[..., 2] = 255, 100, 0   # R, G, B
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])                                     # OpenCV writes BGR
    assert np.allclose(read_image(tmp_path / "c.png", 1)[0] * 255, 0.299 * 255 + 0.587 * 100, atol=1e-3)
    assert np.allclose(read_image(tmp_path / "c.png", 3)[:, 0, 0] * 255, [255, 100, 0])
    grey = np.arange(6, dtype=np.uint8).reshape(2, 3) * 40
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    cv2.imwrite(str(tmp_path / "g3.png"), np.stack([grey] * 3, -1))                          # grey stored as RGB
    g1, g3 = read_image(tmp_path / "g.png", 3), read_image(tmp_path / "g3.png", 3)
    assert np.array_equal(g1, g3) and np.array_equal(g1[0], g1[2]) and np.allclose(g1[1] * 255, grey)
    assert np.array_equal(read_image(tmp_path / "g3.png", 1)[0], g1[0])                    # exactly, no luma rounding
    assert decode_image(tmp_path / "g.png")[1] == 1 and decode_image(tmp_path / "g3.png")[1] == 3
    cv2.imwrite(str(tmp_path / "g16.png"), np.array([[0, 65535, 32768]], np.uint16))
    assert np.allclose(read_image(tmp_path / "g16.png", 1)[0], [[0, 1, 32768 / 65535]])


def test_masks_binarized(tmp_path):
    m = np.array([[0, 1, 0], [1, 1, 0]], np.uint8)
    Image.fromarray(m.astype(bool)).save(tmp_path / "one_bit.png")
    assert Image.open(tmp_path / "one_bit.png").mode == "1"
    cv2.imwrite(str(tmp_path / "m01.png"), m); cv2.imwrite(str(tmp_path / "m255.png"), m * 255)
    cv2.imwrite(str(tmp_path / "m16.png"), m.astype(np.uint16) * 65535)
    for f in ("one_bit.png", "m01.png", "m255.png", "m16.png"):
        assert np.array_equal(read_mask(tmp_path / f), m), f


@needs_dataset("sirst")
def test_real_one_bit_masks_become_0_1():
    ds = get_dataset("sirst", "train")
    p = data_dir("sirst") / "masks" / f"{ds.names[0]}_pixels0.png"
    assert Image.open(p).mode == "1"
    m = ds[0]["mask"]
    assert m.dtype == torch.float32 and set(m.unique().tolist()) == {0.0, 1.0}
    assert np.array_equal(m[0].numpy(), np.asarray(Image.open(p)).astype(np.float32))


def test_items_and_empty_masks(own):
    ds = get_dataset(own, "train", in_channels=1)
    assert ds.names == ["f0", "f1", "f3"]
    it = ds[2]
    assert it["image"].shape == (1, 40, 70) and it["size"] == (40, 70) and it["name"] == "f3"
    assert it["mask"].sum() == 0                                         # an empty mask is valid
    assert abs(float(it["image"].max()) - float(synth_scene(3, size=(40, 70), n_targets=(0, 0), n_clutter=(0, 0))[0].max())) < 1e-4
    assert get_dataset("own", "test", root=own.parent).names == ["f2"]    # by name under a root


# ---------------------------------------------------------------- bad input
def test_missing_root_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setenv("UIUNET_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("sirst", "train")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "sirst" / "images") in msg and "UIUNET_DATA" in msg
    assert "does not exist" in msg and "github.com/YimianDai/sirst" in msg
    with pytest.raises(FileNotFoundError, match="mydata"):
        get_dataset("mydata", "train", root=tmp_path)


def test_missing_file_in_split_is_named(own):
    (own / "a.txt").write_text("f0\nf7\n")
    with pytest.raises(FileNotFoundError, match=r"f7"):
        get_dataset(own, "a")
    (own / "masks" / "f1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"mask of split entry 'f1'.*masks"):
        get_dataset(own, "train")
    with pytest.raises(FileNotFoundError, match="nosplit.txt"):
        get_dataset(own, "nosplit")


def test_undecodable_file_is_named(own):
    (own / "images" / "f2.png").write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"cannot decode image file .*f2\.png"):
        get_dataset(own, "test")
    data = (own / "images" / "f0.png").read_bytes()
    (own / "images" / "f0.png").write_bytes(data[:40])                   # valid header, truncated data
    ds = get_dataset(own, "train")
    with pytest.raises(ValueError, match=r"f0\.png"):
        ds[0]


def test_size_mismatch_without_correction(own):
    cv2.imwrite(str(own / "masks" / "f2.png"), np.zeros((10, 10), np.uint8))
    with pytest.warns(UserWarning, match="f2"):
        assert len(get_dataset(own, "test")) == 0
    with pytest.raises(ValueError, match="f2"):
        get_dataset(own, "test", strict=True)
    (own / "corrections").mkdir(); cv2.imwrite(str(own / "corrections" / "f2.png"), np.ones((40, 70), np.uint8))
    assert get_dataset(own, "test")[0]["mask"].sum() == 40 * 70


# ---------------------------------------------------------------- input contracts (issue 15)
def _warned(fn, *args):
    "(result, messages of the warnings) of fn(*args)."
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(w.message) for w in rec]


def test_pixel_contract_integers():
    assert np.array_equal(to_unit(np.array([0, 51, 255], np.uint8)), np.array([0, 51, 255], np.float32) / 255)
    assert np.array_equal(to_unit(np.array([0, 4096, 65535], np.uint16)), np.array([0, 4096, 65535], np.float32) / 65535)
    got, msgs = _warned(to_unit, np.array([0, 100, 4095], np.uint16), "cam_0001.png")
    assert np.array_equal(got, np.array([0, 100, 4095], np.float32) / 4095)
    assert len(msgs) == 1 and "cam_0001.png" in msgs[0] and "12-bit" in msgs[0] and "4095" in msgs[0]
    _, msgs = _warned(to_unit, np.zeros((2, 2), np.uint16), "black.png")
    assert not msgs                                                       # all black: 0 either way, no warning
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint32):
        with pytest.raises(ValueError, match=rf"frame\.tif: unsupported pixel type {np.dtype(dt)}: pass uint8"):
            to_unit(np.zeros((2, 2), dt), "frame.tif")
    with pytest.raises(ValueError, match=r"arr: unsupported boolean pixels.*pass uint8"):
        to_unit(np.zeros((2, 2), bool), "arr")


def test_pixel_contract_floats():
    a = np.array([[0.0, 0.5], [1.0, 0.25]])
    for dt in (np.float16, np.float32, np.float64):
        got = to_unit(a.astype(dt))
        assert got.dtype == np.float32 and np.array_equal(got, a.astype(dt).astype(np.float32))
    with pytest.raises(ValueError, match=r"x: 3 of 4 pixels are NaN or infinite: replace them"):
        to_unit(np.array([np.nan, np.inf, -np.inf, 0.5]), "x")
    with pytest.raises(ValueError, match=r"x: float image with maximum 254 looks like 0\.\.255 data: divide by 255"):
        to_unit(np.array([0.0, 17.0, 254.0]), "x")
    with pytest.raises(ValueError, match=r"x: float pixels span \[0, 1000\], outside \[0, 1\]: scale the image"):
        to_unit(np.array([0.0, 1000.0]), "x")
    with pytest.raises(ValueError, match=r"x: float pixels span \[-2\.5, 0\.5\].*normalisation"):
        to_unit(np.array([-2.5, 0.5]), "x")


def test_pixel_contract_same_for_files(tmp_path, own):
    "The readers apply the contract and name the file; a dataset's item names its image file."
    cv2.imwrite(str(tmp_path / "twelve.png"), np.array([[0, 4095, 2000]], np.uint16))
    img, msgs = _warned(read_image, tmp_path / "twelve.png", 1)
    assert np.allclose(img[0], [[0, 1, 2000 / 4095]]) and str(tmp_path / "twelve.png") in msgs[0]
    cv2.imwrite(str(tmp_path / "f255.tif"), np.array([[0, 128, 255]], np.float32))
    cv2.imwrite(str(tmp_path / "fnan.tif"), np.array([[0, np.nan, 0.5]], np.float32))
    cv2.imwrite(str(tmp_path / "fbig.tif"), np.array([[-1, 300]], np.float32))
    cv2.imwrite(str(tmp_path / "ok.tif"), np.array([[0, 0.25, 1]], np.float32))
    with pytest.raises(ValueError, match=r"f255\.tif: float image with maximum 255 looks like 0\.\.255 data: divide by 255"):
        read_image(tmp_path / "f255.tif")
    with pytest.raises(ValueError, match=r"fnan\.tif: 1 of 3 pixels are NaN"):
        read_image(tmp_path / "fnan.tif")
    with pytest.raises(ValueError, match=r"fbig\.tif: float pixels span \[-1, 300\]"):
        read_image(tmp_path / "fbig.tif")
    assert np.array_equal(read_image(tmp_path / "ok.tif", 1)[0], [[0, 0.25, 1]])
    im = synth_scene(0, size=(40, 70), n_clutter=(0, 0))[0]
    cv2.imwrite(str(own / "images" / "f0.png"), np.round(im * 4095).astype(np.uint16))   # 12-bit data in the dataset
    it, msgs = _warned(lambda: get_dataset(own, "train")[0])
    assert np.allclose(it["image"][0].numpy(), im, atol=1e-6 + 0.5 / 4095)
    assert any(str(own / "images" / "f0.png") in m and "12-bit" in m for m in msgs)


def test_image_array_layouts():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    want = rgb.astype(np.float32) / 255
    rgba = np.dstack([rgb, np.zeros((6, 9), np.uint8)])
    for x in (rgb, rgb.transpose(2, 0, 1), rgba, rgba.transpose(2, 0, 1), torch.from_numpy(rgb).permute(2, 0, 1),
              torch.from_numpy(want), torch.from_numpy(want).permute(2, 0, 1).requires_grad_(),
              (rgb.astype(np.uint16) * 257)):
        got = image_array(x)
        assert got.shape == (6, 9, 3) and got.dtype == np.float32 and got.flags.c_contiguous, type(x)
        assert np.allclose(got, want, atol=1e-7)
    grey = rgb[..., 0]
    for x in (grey, grey[..., None], grey[None], torch.from_numpy(grey), torch.from_numpy(want[..., 0]).half()):
        got = image_array(x)
        assert got.shape == (6, 9) and np.allclose(got, want[..., 0], atol=1e-3)
    assert image_array(np.zeros((3, 240, 338), np.uint8)).shape == (240, 338, 3)   # channel-first, not 338 channels
    assert image_array(np.zeros((240, 338, 3), np.uint8)).shape == (240, 338, 3)
    assert image_array(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)            # both ends 3/4: channel-last


def test_image_array_refuses_what_is_not_one_image():
    for shape in ((2, 6, 9), (6, 9, 2), (6, 9, 5), (9,), (1, 3, 6, 9), (0, 9), (2, 3, 4, 5, 6)):
        with pytest.raises(ValueError, match=r"image: an array of shape .* is not one image: pass \(H, W\) grey, or \(H, W, C\) "
                                             r"or \(C, H, W\) with C = 1 \(grey\), 3 \(RGB\) or 4"):
            image_array(np.zeros(shape, np.uint8), "image")
    with pytest.raises(ValueError, match="one image at a time"):
        image_array(torch.zeros(1, 3, 6, 9))
    with pytest.raises(ValueError, match="in_image: float image with maximum 200 looks like 0..255 data"):
        image_array(np.full((3, 6, 9), 200.0, np.float32), "in_image")
    with pytest.raises(ValueError, match="image: unsupported boolean pixels"):
        image_array(torch.ones(6, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="image: unsupported pixel type int64"):
        image_array(torch.ones(6, 9, dtype=torch.int64))


def test_jpeg_mask_is_cut_at_half_range_with_a_warning(tmp_path, own):
    m = np.zeros((40, 70), np.uint8); m[5, 5] = 1; m[20:23, 30:33] = 1; m[30:35, 60:65] = 1   # 1, 3x3, 5x5 px targets
    for q in (50, 75, 95):
        cv2.imwrite(str(tmp_path / f"m{q}.jpg"), m * 255, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ((cv2.imread(str(tmp_path / f"m{q}.jpg"), 0) > 0) & (m == 0)).sum() > 10     # non-zero: spurious targets
        got, msgs = _warned(read_mask, tmp_path / f"m{q}.jpg")
        assert np.array_equal(got, m), q
        assert len(msgs) == 1 and str(tmp_path / f"m{q}.jpg") in msgs[0] and "spurious" in msgs[0] and "PNG" in msgs[0]
    (tmp_path / "named.png").write_bytes((tmp_path / "m75.jpg").read_bytes())                 # a JPEG by content
    assert _warned(read_mask, tmp_path / "named.png")[1]
    cv2.imwrite(str(tmp_path / "m01.jpg"), m)                                                  # a 0/1 mask as JPEG
    with pytest.raises(ValueError, match=r"m01\.jpg holds values only up to .*export the mask again as PNG"):
        read_mask(tmp_path / "m01.jpg")
    (own / "masks" / "f0.png").unlink(); cv2.imwrite(str(own / "masks" / "f0.jpg"), m * 255)
    it, msgs = _warned(lambda: get_dataset(own, "train")[0])                                   # in a dataset
    assert np.array_equal(it["mask"][0].numpy(), m) and any(str(own / "masks" / "f0.jpg") in s for s in msgs)


def test_mask_kinds_read_as_before(tmp_path):
    "0/1, 0/255, 1-bit and palette masks: every non-zero pixel is target, and no warning."
    m = np.array([[0, 1, 0], [1, 1, 0]], np.uint8)
    Image.fromarray(m.astype(bool)).save(tmp_path / "one_bit.png")
    cv2.imwrite(str(tmp_path / "m01.png"), m); cv2.imwrite(str(tmp_path / "m255.png"), m * 255)
    p = Image.fromarray(m, "P"); p.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762); p.save(tmp_path / "pal.png")
    q = Image.fromarray(m * 2, "P"); q.putpalette([0, 0, 0, 9, 9, 9, 128, 0, 0] + [0] * 759); q.save(tmp_path / "pal2.png")
    cv2.imwrite(str(tmp_path / "m.bmp"), m * 255); cv2.imwrite(str(tmp_path / "m.tif"), m * 255)
    for f in ("one_bit.png", "m01.png", "m255.png", "pal.png", "pal2.png", "m.bmp", "m.tif"):
        got, msgs = _warned(read_mask, tmp_path / f)
        assert np.array_equal(got, m) and not msgs, f


def test_split_list_with_utf8_bom(own):
    (own / "bom.txt").write_bytes(b"\xef\xbb\xbff0\r\nf1.png\r\n")
    assert read_split(own / "bom.txt") == ["f0", "f1"]
    assert get_dataset(own, "bom").names == ["f0", "f1"]                      # the first stem is found
    (own / "cat.txt").write_bytes(b"\xef\xbb\xbff0\n" + b"\xef\xbb\xbff3\n")          # two such lists concatenated
    assert get_dataset(own, "cat").names == ["f0", "f3"]


def test_split_list_utf16_and_other_encodings(own):
    for text, enc in (("f0\r\nf3\n", "utf-16"), ("\ufefff0\r\nf3\n", "utf-16-be"), ("f0\nf3\n", "utf-32")):
        (own / "u.txt").write_bytes(text.encode(enc))                            # each with its byte-order mark
        assert get_dataset(own, "u").names == ["f0", "f3"], enc
    (own / "u16.txt").write_bytes("f0\nf3\n".encode("utf-16-le"))             # no byte-order mark
    with pytest.raises(ValueError, match=r"split list .*u16\.txt holds NUL bytes: UTF-16 without a byte-order mark\? Save it as UTF-8"):
        get_dataset(own, "u16")
    (own / "latin.txt").write_bytes("f0\nf\xe4\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"split list .*latin\.txt is not UTF-8 text \(byte 4\): save it as UTF-8"):
        get_dataset(own, "latin")


def test_empty_split_list_is_an_error(own):
    for content in (b"", b"\n\r\n   \n", b"# only a comment\n"):
        (own / "empty.txt").write_bytes(content)
        with pytest.raises(ValueError, match=rf"split list {str(own / 'empty.txt')} lists no stems.*one image stem a line"):
            get_dataset(own, "empty")


def test_duplicate_stems_are_an_error(own):
    (own / "dup.txt").write_text("f0\nf1\nf0.png\nf3\nf1\n")
    with pytest.raises(ValueError, match=r"dup\.txt lists 2 stem\(s\) more than once: f0, f1; list each image once"):
        get_dataset(own, "dup")
    (own / "many.txt").write_text("\n".join([f"s{k}" for k in range(12)] * 2))
    with pytest.raises(ValueError, match=r"lists 12 stem\(s\) more than once: s0, .*s9 \.\.\."):
        read_split(own / "many.txt")


def test_sirst_style_masks_suggest_mask_suffix(own):
    for k in range(4):                                                        # masks renamed to <stem>_pixels0.png
        (own / "masks" / f"f{k}.png").rename(own / "masks" / f"f{k}_pixels0.png")
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(own, "train")
    msg = str(e.value)
    assert "mask of split entry 'f0' not found" in msg and str(own / "masks" / "f0") in msg
    assert "f0_pixels0.png" in msg and "mask_suffix='_pixels0'" in msg and "3 of the split's 3 stems" in msg
    assert get_dataset(own, "train", mask_suffix="_pixels0").names == ["f0", "f1", "f3"]


def test_mask_suffix_hints_only_when_it_pairs_more(own, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"need mask_suffix=''"):          # masks share the stems
        get_dataset(own, "train", mask_suffix="_pixels0")
    cv2.imwrite(str(own / "images" / "f1x.png"), np.zeros((40, 70), np.uint8))
    (own / "masks" / "f1.png").rename(own / "masks" / "f1x.png")               # f1's mask really missing; f1x is a stem
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(own, "train")
    assert "mask_suffix=" not in str(e.value) and str(e.value).endswith(".jpeg).")     # no misleading hint


# ---------------------------------------------------------------- transforms
def test_transforms_are_deterministic_per_seed_epoch_index():
    for tf in (release_transform(True), standard_transform(True, "synthetic")):
        a, b = (get_dataset("synthetic", "train", n=3, transform=tf) for _ in range(2))
        assert all(torch.equal(a[i]["image"], b[i]["image"]) and torch.equal(a[i]["mask"], b[i]["mask"]) for i in range(3))
        b.set_epoch(1)
        assert not all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(3))
        b.set_epoch(0)
        assert torch.equal(a[1]["image"], b[1]["image"])                  # resumable: epoch 0 again
        c = get_dataset("synthetic", "train", n=3, transform=tf, seed=5)
        assert not all(torch.equal(a[i]["image"], c[i]["image"]) for i in range(3))


def test_transforms_same_in_dataloader_workers():
    ds = get_dataset("synthetic", "train", n=4, size=64, transform=standard_transform(True, "synthetic", crop=32))
    seq = torch.stack([ds[i]["image"] for i in range(4)])
    par = torch.cat([b["image"] for b in torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)])
    assert torch.equal(seq, par)


def test_release_transform_shapes_and_normalisation(own):
    tr = get_dataset(own, "train", transform=release_transform(True))[0]
    te = get_dataset(own, "train", transform=release_transform(False))[0]
    assert tr["image"].shape == (3, 288, 288) and te["image"].shape == (3, 320, 320) and te["size"] == (40, 70)
    assert set(te["mask"].unique().tolist()) <= {0.0, 1.0}
    assert torch.allclose(te["image"].amax((1, 2)), torch.full((3,), (1 - 0.485) / 0.229))  # grey file: first channel


def test_standard_transform_crops_pads_and_crops_back(own):
    tr = get_dataset(own, "train", transform=standard_transform(True, "synthetic", pos_prob=1.0))
    assert [tr[i]["image"].shape for i in range(3)] == [(3, 256, 256)] * 3   # small images padded then cropped
    assert tr[0]["mask"].sum() > 0 and tr[1]["mask"].sum() > 0               # pos_prob 1: target inside
    big = get_dataset("synthetic", "train", n=6, size=(300, 400), transform=standard_transform(True, "synthetic", pos_prob=1.0))
    assert all(big[i]["mask"].sum() > 0 and big[i]["image"].shape == (3, 256, 256) for i in range(6))
    te = get_dataset(own, "test", transform=standard_transform(False, "synthetic"))[0]
    assert te["image"].shape == (3, 64, 96) and te["size"] == (40, 70)
    raw = get_dataset(own, "test")[0]["image"]
    mean, std = NORM_STATS["synthetic"]
    assert torch.allclose(crop_to(te["image"], te["size"]) * std + mean, raw, atol=1e-6)


def test_pad_and_crop_to_round_trip():
    for h, w in ((97, 131), (32, 64), (1, 33)):
        item = {"image": torch.rand(3, h, w), "mask": torch.ones(1, h, w), "size": (h, w)}
        p = pad_item(item, 32)
        assert p["image"].shape[1] % 32 == 0 and p["image"].shape[2] % 32 == 0 and p["size"] == (h, w)
        assert torch.equal(crop_to(p["image"], p["size"]), item["image"])
        assert p["mask"].sum() == h * w                                      # padding is zero
    batch = {"size": [torch.tensor([97, 50]), torch.tensor([131, 60])]}
    crops = crop_to(torch.zeros(2, 1, 128, 160), batch["size"])
    assert [c.shape for c in crops] == [(1, 97, 131), (1, 50, 60)]


# ---------------------------------------------------------------- generator
def test_generator_is_deterministic_and_exact():
    a, b = synth_scene(7), synth_scene(7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(synth_scene(8)[0], a[0])
    img, m = a
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1 and set(np.unique(m)) <= {0, 1}
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    assert 1 <= n - 1 <= 3 and (stats[1:, 2:4] <= 9).all()                 # 1-3 targets, each at most 9 px across


def test_generator_scr_is_controlled():
    got = [local_scr(*synth_scene(k, size=128, scr=(4.0, 4.0), n_targets=(1, 1), target_size=(3, 9), p_dark=0.0))
           for k in range(30)]
    assert 3.0 < np.median(got) < 5.0


def test_synthetic_splits_differ_and_defaults():
    tr, va = get_dataset("synthetic", "train"), get_dataset("synthetic", "val")
    assert (len(tr), len(va), len(get_dataset("synthetic", "test"))) == (200, 50, 50)
    assert not torch.equal(tr[0]["image"], va[0]["image"])
    assert torch.equal(tr[3]["image"], get_dataset("synthetic", "train", n=5)[3]["image"])  # scene i independent of n
    with pytest.raises(ValueError, match="pass n"):
        get_dataset("synthetic", "extra")


def test_cache_gives_the_same_items():
    tf = standard_transform(True, "synthetic", crop=64)
    c = get_dataset("synthetic", "val", n=3, size=96, cache=True, transform=tf)
    n = get_dataset("synthetic", "val", n=3, size=96, transform=tf)
    for _ in range(2):
        assert all(torch.equal(c[i]["image"], n[i]["image"]) for i in range(3))
    assert len(c._store) == 3


# ---------------------------------------------------------------- the package: four modules, no import cycle
DATA_MODULES = ["io", "transforms", "datasets", "synthetic"]        # in dependency order
MAY_IMPORT = {"io": set(), "transforms": set(), "datasets": {"io", "transforms"}, "synthetic": {"io", "transforms", "datasets"}}


def _fresh_python(code: str) -> str:
    "stdout of `code` run by a fresh interpreter that imports uiunet from this checkout."
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_data_modules_import_without_a_cycle():
    for order in (DATA_MODULES, DATA_MODULES[::-1]):
        code = "".join(f"import uiunet.data.{m}\n" for m in order) + "import uiunet.data as d; print(len(d.__all__))"
        assert int(_fresh_python(code)) >= 60, order
    out = _fresh_python("import uiunet.data.datasets as d\n"        # the synthetic scenes registered by the package
                        "ds = d.get_dataset('synthetic', 'train', n=2); print(type(ds).__name__, len(ds), tuple(ds[1]['image'].shape))")
    assert out.strip() == "SyntheticDataset 2 (3, 256, 256)"


def test_data_modules_import_one_way_and_at_top_level():
    "Each module imports only the modules before it (io and transforms none), and never inside a function."
    for m in DATA_MODULES:
        tree = ast.parse((ROOT / "uiunet" / "data" / f"{m}.py").read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert id(node) in top, f"uiunet/data/{m}.py imports .{node.module} inside a function (line {node.lineno})"
                assert node.level == 1 and node.module in MAY_IMPORT[m], f"uiunet/data/{m}.py may not import {'.' * node.level}{node.module}"
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "uiunet" for n in names), f"uiunet/data/{m}.py: absolute uiunet import (line {node.lineno})"
