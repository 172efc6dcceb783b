"""The learner on tiny CPU runs: exact resume, NaN stop, run records, refusals."""
import json

import pytest
import torch

from uiunet.data import get_dataset
from uiunet.checkpoint import read_run_checkpoint as read_checkpoint
from uiunet.learner import Learner, NonFiniteLossError, seed_everything
from uiunet.models import create_model, load_run
from uiunet.recipes import recipe_transforms


def _learner(out, val=True, seed=0, recipe="release", train_ds=None, **kw):
    seed_everything(seed)
    tr_tf, ev_tf = recipe_transforms(recipe, "synthetic", img_size=48)
    tr = train_ds or get_dataset("synthetic", "train", n=9, size=64, transform=tr_tf, seed=seed)
    va = get_dataset("synthetic", "val", n=3, size=64, transform=ev_tf) if val else None
    cfg = dict(model="uiunet_nano", dataset="synthetic", train_split="train")
    return Learner(create_model("uiunet_nano"), tr, va, out_dir=out, recipe=recipe, seed=seed, progress=False, config=cfg, **kw)


def test_resume_is_bit_exact(tmp_path):
    full = _learner(tmp_path / "full", recipe="standard")
    full.fit(3)
    _learner(tmp_path / "cut", recipe="standard").fit(3, stop_after=1)   # "interrupted" after epoch 1
    resumed = _learner(tmp_path / "cut", recipe="standard", seed=0)
    resumed.fit(3, resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in full.history]
    # and the training did move the weights (so the equality above means something)
    fresh = create_model("uiunet_nano").state_dict()
    assert not torch.equal(fresh["outconv.weight"], a["outconv.weight"])


def test_different_seed_gives_different_weights(tmp_path):
    a = _learner(tmp_path / "a", val=False, seed=0, recipe="standard"); a.fit(1)
    b = _learner(tmp_path / "b", val=False, seed=1, recipe="standard"); b.fit(1)
    assert not torch.equal(a.model.state_dict()["outconv.weight"], b.model.state_dict()["outconv.weight"])


def test_run_records_best_and_last(tmp_path):
    learn = _learner(tmp_path / "r")
    learn.fit(2)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    best_iou = max(r["val_iou"] for r in learn.history)
    best_epoch = [r["epoch"] for r in learn.history if r["val_iou"] == best_iou][-1]  # ties: the later epoch
    assert run["selected"] == "best.safetensors" and run["best"]["epoch"] == best_epoch
    assert run["last"]["epoch"] == 2 and run["finished"] is True
    _, st = read_checkpoint(tmp_path / "r" / "best.safetensors")
    assert st["epoch"] == best_epoch and st["config"]["recipe"] == "release"
    log = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,train_loss,lr") and len(log) == 3 and "val_iou" in log[0]
    model, _ = load_run(tmp_path / "r", which="last")
    assert torch.equal(model.state_dict()["outconv.weight"], learn.model.state_dict()["outconv.weight"].cpu())


def test_no_validation_selects_last_epoch(tmp_path):
    _learner(tmp_path / "n", val=False).fit(1)
    run = json.loads((tmp_path / "n" / "run.json").read_text())
    assert run["selected"] == "last.safetensors" and "last epoch" in run["model_rule"]
    assert not (tmp_path / "n" / "best.safetensors").exists()


class _PoisonAt:
    "A dataset whose images become NaN from epoch `at` on."
    def __init__(self, ds, at): self.ds, self.at, self.epoch = ds, at, 0
    def __len__(self): return len(self.ds)
    def set_epoch(self, e): self.epoch = e; self.ds.set_epoch(e)
    def __getitem__(self, i):
        it = self.ds[i]
        return {**it, "image": it["image"] * float("nan")} if self.epoch >= self.at else it


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    tr_tf, _ = recipe_transforms("release", "synthetic", img_size=48)
    ds = _PoisonAt(get_dataset("synthetic", "train", n=6, size=64, transform=tr_tf), at=2)
    learn = _learner(tmp_path / "nan", val=False, train_ds=ds)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2.*last good epoch \(1\)"):
        learn.fit(3)
    _, st = read_checkpoint(tmp_path / "nan" / "last.safetensors")
    assert st["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in learn.model.parameters())


def test_refuses_to_overwrite_or_resume_a_different_run(tmp_path):
    _learner(tmp_path / "x", val=False).fit(1)
    with pytest.raises(FileExistsError, match="resume=True"):
        _learner(tmp_path / "x", val=False).fit(1)
    other = _learner(tmp_path / "x", val=False, seed=5)
    with pytest.raises(ValueError, match="seed"):
        other.fit(1, resume=True)


def test_too_few_images_for_a_batch(tmp_path):
    tr_tf, _ = recipe_transforms("release", "synthetic", img_size=48)
    ds = get_dataset("synthetic", "train", n=2, size=64, transform=tr_tf)
    with pytest.raises(ValueError, match="no full batch of 3"):
        _learner(tmp_path / "s", val=False, train_ds=ds).fit(1)


# --- issue 15: honest resumes, no epoch lost to a bad validation image -----------------------------------

@pytest.mark.parametrize("setting,value", [("img_size", 64), ("lr", 1e-4), ("loss", "bce"), ("limit", 5), ("val_split", "test")])
def test_resume_with_another_setting_is_refused(tmp_path, setting, value):
    def learner(**cfg):
        learn = _learner(tmp_path / "r", recipe="standard", precision="fp32")
        learn.config.update({**dict(img_size=48, limit=None, val_split="val"), **cfg})   # as the train runner records them
        if "lr" in cfg: learn.lr = learn.config["lr"]
        return learn
    learner().fit(2, stop_after=1)
    before = (tmp_path / "r" / "last.safetensors").read_bytes()
    with pytest.raises(ValueError, match=rf"{setting}=.* \(this run: {value!r}\)") as e:
        learner(**{setting: value}).fit(2, resume=True)
    assert "r/last.safetensors: cannot resume" in str(e.value)
    assert (tmp_path / "r" / "last.safetensors").read_bytes() == before   # nothing written over
    learner().fit(2, resume=True)                                          # the run's own settings still resume


def test_resume_with_other_input_channels_is_a_clear_refusal(tmp_path):
    _learner(tmp_path / "c", recipe="standard", precision="fp32").fit(2, stop_after=1)
    seed_everything(0)
    tr = get_dataset("synthetic", "train", n=9, size=64, in_channels=1, transform=recipe_transforms("standard", "synthetic", 48)[0])
    learn = Learner(create_model("uiunet_nano", in_channels=1), tr, None, out_dir=tmp_path / "c", recipe="standard", progress=False,
                    precision="fp32", config=dict(model="uiunet_nano", dataset="synthetic", train_split="train", in_channels=1))
    learn.config.pop("in_channels")   # even unrecorded, the weights do not fit: refused with the file and the shapes
    with pytest.raises(ValueError, match=r"c/last.safetensors does not fit UIUNet.*stage1.rebnconvin.conv_s1.weight \(8, 3, 3, 3\) \(model: \(8, 1, 3, 3\)\)"):
        learn.fit(2, resume=True)


def test_a_corrupt_validation_image_loses_no_epoch(tmp_path):
    import shutil
    import cv2
    own = tmp_path / "own"
    for d in ("images", "masks"): (own / d).mkdir(parents=True)
    for k in range(6):
        cv2.imwrite(str(own / "images" / f"f{k}.png"), (torch.rand(48, 48) * 255).byte().numpy())
        cv2.imwrite(str(own / "masks" / f"f{k}.png"), ((torch.rand(48, 48) > 0.99) * 255).byte().numpy())
    (own / "train.txt").write_text("f0\nf1\nf2\nf3\n"); (own / "val.txt").write_text("f4\nf5\n")
    tr_tf, ev_tf = recipe_transforms("standard", "synthetic", 32)
    def learner():
        seed_everything(0)
        return Learner(create_model("uiunet_nano"), get_dataset(own, "train", transform=tr_tf), get_dataset(own, "val", transform=ev_tf),
                       out_dir=tmp_path / "run", recipe="standard", batch_size=2, progress=False, precision="fp32",
                       config=dict(model="uiunet_nano", dataset=str(own), train_split="train"))
    learn = learner()
    (own / "images" / "f5.png").write_bytes(b"not a png")                          # broken while the run is going
    with pytest.raises(ValueError, match=r"cannot decode image file .*f5\.png"): learner()   # a new run checks its files first
    with pytest.raises(RuntimeError, match=r"validation after epoch 1 failed.*f5\.png.*kept in .*run/last\.safetensors"):
        learn.fit(2)
    _, st = read_checkpoint(tmp_path / "run" / "last.safetensors")
    assert st["epoch"] == 1                                                         # the trained epoch is there
    shutil.copy(own / "images" / "f4.png", own / "images" / "f5.png")               # fix the data, resume
    learn = learner(); learn.fit(2, resume=True)
    assert [r["epoch"] for r in learn.history] == [1, 2] and "val_iou" in learn.history[-1]
