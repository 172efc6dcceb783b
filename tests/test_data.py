"""uiunet.data: split counts, the paper split, decoding and binarization, Misc_111, transforms, the synthetic
generator, bad input, the package's import graph. Real-data tests skip when the dataset is missing."""
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
from uiunet.data import (NORM_STATS, clean_pair, crop_to, decode_image, get_dataset, local_scr, pad_item,
                         read_image, read_mask, read_split, release_transform, standard_transform, synth_scene)


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
