"""Weights export, packaged-weights loading and one-image prediction."""
import numpy as np
import pytest
import torch

import uiunet.models as M
from conftest import data_dir, needs_dataset
from uiunet.data import get_dataset
from uiunet.inference import predict_image
from uiunet.models import export_weights
from uiunet.evaluation import predict_dataset
from uiunet.learner import Learner, seed_everything
from uiunet.recipes import recipe_transforms


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inference")
    seed_everything(0)
    tr, ev = recipe_transforms("cpu", "synthetic", 64)
    cfg = dict(model="uiunet_nano", dataset="synthetic", train_split="train", val_split="val")
    learn = Learner(M.create_model("uiunet_nano"), get_dataset("synthetic", "train", n=6, size=64, transform=tr),
                    get_dataset("synthetic", "val", n=2, size=64, transform=ev), out_dir=tmp / "run", recipe="cpu",
                    progress=False, config=cfg)
    learn.fit(2)
    facts = export_weights(tmp / "run", tmp / "nano-test.safetensors")
    return tmp, facts, learn


def test_export_records_the_run(weights):
    tmp, facts, learn = weights
    best = learn.best["epoch"]
    assert facts["model"] == "uiunet_nano" and facts["recipe"] == "cpu" and facts["epoch"] == best
    assert facts["val"]["iou"] == next(r["val_iou"] for r in learn.history if r["epoch"] == best)
    from uiunet.checkpoint import weights_facts
    assert weights_facts(tmp / "nano-test.safetensors") == facts


def test_packaged_weights_load_through_create_model(weights, monkeypatch):
    tmp, facts, learn = weights
    import uiunet.models.registry as R
    monkeypatch.setattr(R, "weights_dir", lambda: tmp)
    monkeypatch.setitem(M.PRETRAINED, "uiunet_nano", {"test": "nano-test.safetensors"})
    m = M.create_model("uiunet_nano", pretrained="test")
    assert m.pretrained_cfg == facts
    from uiunet.checkpoint import read_run_checkpoint as read_checkpoint
    ckpt, _ = read_checkpoint(tmp / "run" / "best.safetensors")
    assert torch.equal(m.state_dict()["outconv.weight"], ckpt["model.outconv.weight"])
    with pytest.raises(ValueError, match="available: 'test'"):
        M.create_model("uiunet_nano", pretrained="sirst")


def test_predict_image_matches_the_evaluation_path(weights):
    _, facts, learn = weights
    m = learn.model.eval()
    m.pretrained_cfg = facts
    img = get_dataset("synthetic", "test", n=1, size=80).raw(0)[0]
    out = predict_image(m, img)
    _, p_ref, _ = next(predict_dataset(m, get_dataset("synthetic", "test", n=1, size=80,
                                                      transform=recipe_transforms("cpu", "synthetic")[1])))
    assert out["prob"].shape == (80, 80) and np.allclose(out["prob"], p_ref, atol=1e-6)
    assert np.array_equal(out["binary"], out["prob"] > 0.5)
    assert len(out["detections"]["boxes"]) == int(out["binary"].any()) * len(out["detections"]["areas"])


@needs_dataset("sirst")
def test_predict_image_on_a_sirst_file(weights):
    _, facts, learn = weights
    m = learn.model.eval(); m.pretrained_cfg = facts
    out = predict_image(m, data_dir("sirst") / "images" / "Misc_111.png", recipe="release")
    assert out["prob"].shape == (220, 325) and np.isfinite(out["prob"]).all()
