"""The packaged weights (issues 6 and 18): they load with no network, they are the committed run's selected
checkpoint, and they reproduce the test numbers that results/ and the README quote. (The README's quickstart on a
SIRST test image is checked in nbs/26_inference.)"""
import json

import numpy as np
import pytest
import torch

from conftest import ROOT, data_dir, needs_dataset
from uiunet import models as M
from uiunet.checkpoint import read_run_checkpoint as read_checkpoint

torch.set_num_threads(1)

# (model, tag) -> (run folder under results/, evaluation folder under results/); the dataset and test split come
# from the registry (`register_pretrained(..., test=)`) and the weights' metadata
SHIPPED = {("uiunet_nano", "sirst"): ("sirst-nano-idx427-softiou-e200", "eval-sirst-nano-idx427-e200-test"),
           ("uiunet_nano", "sirst-5050"): ("sirst-nano-5050-softiou", "eval-sirst-nano-5050-test"),
           ("uiunet_tiny", "sirst"): ("sirst-tiny-idx427-softiou-e400", "eval-sirst-tiny-idx427-test"),
           ("uiunet_tiny", "sirst-5050"): ("sirst-tiny-5050-softiou-e400", "eval-sirst-tiny-5050-test"),
           ("uiunet_tiny", "nudt-sirst"): ("nudt-tiny-5050-softiou-e120", "eval-nudt-tiny-test")}


def test_every_packaged_weights_file_is_checked_here():
    assert {(name, tag) for name, tags in M.PRETRAINED.items() for tag in tags} == set(SHIPPED)
    assert set(M.pretrained_tests()) == {f"{n}:{t}" for n, t in SHIPPED}  # each has the test split it was scored on


@pytest.mark.parametrize("name,tag", list(SHIPPED))
def test_packaged_weights_are_the_selected_checkpoint(name, tag):
    run_name = SHIPPED[name, tag][0]
    path = M.pretrained_file(name, tag)
    assert path.parent == M.weights_dir() and path.stat().st_size < 60e6
    m = M.create_model(name, pretrained=tag)
    run = json.loads((ROOT / "results" / run_name / "run.json").read_text())
    ckpt, state = read_checkpoint(ROOT / "results" / run_name / run["selected"])
    sd = m.state_dict()
    assert set(sd) == {k[6:] for k in ckpt if k.startswith("model.")}
    assert all(torch.equal(sd[k[6:]], v) for k, v in ckpt.items() if k.startswith("model."))
    cfg = m.pretrained_cfg
    assert (cfg["model"], cfg["dataset"], cfg["recipe"], cfg["epoch"]) == (name, run["config"]["dataset"], "standard", state["epoch"])
    assert cfg["train_split"] == run["config"]["train_split"] and cfg["val_split"] == run["config"]["val_split"]


@pytest.mark.slow  # a whole test split per tag: 20 s to 6 min on one CPU core
@pytest.mark.parametrize("name,tag", list(SHIPPED))
def test_packaged_weights_reproduce_the_published_test_numbers(name, tag):
    from uiunet.data import get_dataset
    from uiunet.evaluation import validate
    from uiunet.recipes import recipe_transforms
    eval_name = SHIPPED[name, tag][1]
    dataset, split = M.pretrained_tests()[f"{name}:{tag}"]
    if data_dir(dataset) is None: pytest.skip(needs_dataset(dataset).kwargs["reason"])
    want = json.loads((ROOT / "results" / eval_name / "metrics.json").read_text())
    m = M.create_model(name, pretrained=tag)
    ds = get_dataset(dataset, split, transform=recipe_transforms("standard", dataset)[1])
    got = validate(m, ds, "cpu", precision="fp32")  # the committed numbers were computed in float32
    assert (want["dataset"], want["split"], want["images"]) == (dataset, split, len(ds))
    for k in ("iou", "niou", "pd", "fa"):
        assert got[k] == pytest.approx(want[k], rel=1e-6, abs=1e-12), k


@pytest.mark.slow  # SIRST test predicted twice: about 1.5 min
@needs_dataset("sirst")
def test_bfloat16_scores_the_shipped_weights_like_float32():
    # issue 13: on SIRST idx_427 test, bf16 and fp32 inference give IoU, nIoU, Pd within 0.002 and masks agreeing on 99.99% of pixels
    from uiunet.data import get_dataset
    from uiunet.evaluation import predict_dataset
    from uiunet.recipes import recipe_transforms
    from uiunet.metrics import SegMetrics
    m = M.create_model("uiunet_nano", pretrained="sirst")
    ds = get_dataset("sirst", "test", transform=recipe_transforms("standard", "sirst")[1])
    runs = {p: list(predict_dataset(m, ds, "cpu", precision=p)) for p in ("fp32", "bf16")}
    scores = {p: SegMetrics(threshold=0.5).update([q for _, q, _ in r], [y for _, _, y in r]).compute() for p, r in runs.items()}
    for k in ("iou", "niou", "pd"):
        assert abs(scores["bf16"][k] - scores["fp32"][k]) <= 0.002, k
    same = sum(int(((a > 0.5) == (b > 0.5)).sum()) for (_, a, _), (_, b, _) in zip(runs["fp32"], runs["bf16"]))
    total = sum(a.size for _, a, _ in runs["fp32"])
    assert same / total >= 0.9999
    assert max(float(np.abs(a - b).max()) for (_, a, _), (_, b, _) in zip(runs["fp32"], runs["bf16"])) > 0  # bf16 really ran
