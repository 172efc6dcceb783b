"""The `uiunet` command (issue 17): predictions on folders and videos, scoring saved maps against the evaluate
runner's numbers, the ONNX round trip, help and exit codes, the dataset listing."""
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from conftest import ROOT, data_dir, needs_dataset
from uiunet.cli import main
from uiunet.data import get_dataset, synth_scene
from uiunet.evaluation import predict_dataset, protocol_transform
from uiunet.inference import predict_image
from uiunet.models import load_weights

torch.set_num_threads(1)
SCORES = ("iou", "niou", "pd", "fa", "fa_e6", "images", "protocol", "threshold", "niou_threshold", "limit", "dataset", "split")


def uiunet(*args):
    "Run the command in-process; stdout and stderr are kept apart."
    return CliRunner().invoke(main, [str(a) for a in args])


# --- help, exit codes, the console script ---------------------------------------------------------------

@pytest.mark.parametrize("cmd", [[], ["predict"], ["evaluate"], ["export"], ["export", "onnx"], ["datasets"]])
def test_every_command_has_help(cmd):
    r = uiunet(*cmd, "--help")
    assert r.exit_code == 0 and r.output.startswith("Usage: uiunet")


@pytest.mark.parametrize("args", [["nonsense"], ["predict", "x"], ["predict", "x", "--out", "o", "--precision", "fp64"],
                                  ["predict", "x", "--out", "o", "--threshold", "2"], ["evaluate", "."], ["export", "onnx"],
                                  ["predict", "no/such/folder", "--out", "o"], ["predict", "x", "--out", "o", "--device", "tpu"],
                                  ["datasets", "--bogus"]])
def test_bad_usage_exits_2(args, tmp_path):
    r = uiunet(*args)
    assert r.exit_code == 2, r.output
    assert "Usage:" in r.output or "Error:" in r.output


def test_unknown_weights_are_bad_usage(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    r = uiunet("predict", tmp_path, "--out", tmp_path / "o", "--weights", "uiunet_nano:nope")
    assert r.exit_code == 2 and "unknown pretrained tag 'nope'" in r.output


def test_console_script_is_registered_and_runs_as_a_module():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"uiunet": "uiunet.cli:main"}
    r = subprocess.run([sys.executable, "-m", "uiunet.cli", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "predict" in r.stdout and "datasets" in r.stdout


# --- uiunet predict -----------------------------------------------------------------------------------------

@needs_dataset("sirst")
def test_predict_a_folder_of_sirst_images_with_bad_files(tmp_path):
    "Real images with a corrupt PNG and a text file among them: the images are done, the two named, exit 1; a rerun skips."
    images = data_dir("sirst") / "images"
    src = tmp_path / "in"; src.mkdir()
    stems = ["Misc_1", "Misc_70", "Misc_111", "Misc_200"]
    for s in stems: shutil.copy(images / f"{s}.png", src)
    (src / "Misc_5.png").write_bytes((images / "Misc_5.png").read_bytes()[:2000])   # truncated
    (src / "README.txt").write_text("frames of the night of the 3rd")
    out = tmp_path / "out"
    r = uiunet("predict", src, "--out", out, "--precision", "fp32", "-q")
    assert r.exit_code == 1, r.output
    assert r.stdout.strip().splitlines()[-1].startswith("4 done, 0 skipped, 2 failed")
    assert f"failed: {src / 'Misc_5.png'}: cannot decode" in r.stderr and f"failed: {src / 'README.txt'}" in r.stderr
    for d in ("prob", "mask", "overlay"): assert sorted(p.stem for p in (out / d).glob("*.png")) == sorted(stems)
    net, info = load_weights("uiunet_nano:sirst", device="cpu")
    ref = predict_image(net, src / "Misc_70.png", precision="fp32")
    prob = cv2.imread(str(out / "prob" / "Misc_70.png"), cv2.IMREAD_UNCHANGED)
    assert prob.dtype == np.uint16 and np.abs(prob / 65535 - ref["prob"]).max() < 1e-4   # the optimized model, 16-bit steps
    det = pd.read_csv(out / "detections.csv")
    assert list(det.columns) == ["file", "name", "frame", "target", "x0", "y0", "x1", "y1", "cx", "cy", "area", "score"]
    assert set(det["name"]) <= set(stems) and det["frame"].isna().all() and (det["x1"] > det["x0"]).all()
    mine = det[det["name"] == "Misc_70"]
    assert len(mine) == len(ref["detections"]["areas"]) and (mine["area"].to_numpy() == ref["detections"]["areas"]).all()
    assert json.loads((out / "predict.json").read_text())["source"] == "uiunet_nano:sirst"
    again = uiunet("predict", src, "--out", out, "--precision", "fp32", "-q")
    assert again.exit_code == 1 and again.stdout.strip().splitlines()[-1].startswith("0 done, 4 skipped, 2 failed")
    assert pd.read_csv(out / "detections.csv").equals(det)
    (src / "Misc_5.png").unlink(); (src / "README.txt").unlink()
    assert uiunet("predict", src, "--out", out, "--precision", "fp32", "-q").exit_code == 0


def test_predict_a_video(tmp_path):
    "A 10-frame video written with cv2.VideoWriter: a map and a mask per frame, an overlay video, frames in detections.csv."
    frames = [synth_scene(100 + k, size=(64, 96))[0] for k in range(10)]
    vw = cv2.VideoWriter(str(tmp_path / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (96, 64))
    for f in frames: vw.write(cv2.cvtColor((f * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    vw.release()
    out = tmp_path / "out"
    r = uiunet("predict", tmp_path / "clip.mp4", "--out", out, "--precision", "fp32", "-q")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().splitlines()[-1].startswith("1 done, 0 skipped, 0 failed: 10 images and frames")
    assert sorted(p.name for p in (out / "prob" / "clip").iterdir()) == [f"{k:06d}.png" for k in range(10)]
    assert len(list((out / "mask" / "clip").iterdir())) == 10
    cap = cv2.VideoCapture(str(out / "overlay" / "clip.mp4"))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10
    log, det = pd.read_csv(out / "inputs.csv"), pd.read_csv(out / "detections.csv")
    assert log[["name", "kind", "frames", "height", "width"]].values.tolist() == [["clip", "video", 10, 64, 96]]
    assert len(det) == log["targets"].iloc[0] and det["frame"].between(0, 9).all()
    again = uiunet("predict", tmp_path / "clip.mp4", "--out", out, "--precision", "fp32", "-q")
    assert again.exit_code == 0 and again.stdout.startswith("0 done, 1 skipped, 0 failed")


# --- uiunet evaluate ------------------------------------------------------------------------------------------

def test_evaluate_gives_the_evaluate_runners_numbers(tmp_path):
    "The maps the runner scores, saved as .npy, give its metrics.json numbers exactly; its saved masks give its IoU, Pd and Fa."
    import papermill as pm
    pm.execute_notebook(str(ROOT / "nbs" / "evaluate.ipynb"), str(tmp_path / "eval.ipynb"), kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False, parameters=dict(run="uiunet_nano:sirst", dataset="synthetic", split="test", limit=3,
                        precision="fp32", name="ev", out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), figure_images=1))
    ref = json.loads((tmp_path / "results" / "ev" / "metrics.json").read_text())
    net, info = load_weights("uiunet_nano:sirst", device="cpu")
    tf, crop = protocol_transform("standard", info["recipe"], info["dataset"])
    ds = torch.utils.data.Subset(get_dataset("synthetic", "test", transform=tf), range(3))
    maps = tmp_path / "maps"; maps.mkdir()
    for name, p, _ in predict_dataset(net, ds, crop=crop, precision="fp32"): np.save(maps / f"{name}.npy", p)
    r = uiunet("evaluate", maps, "--dataset", "synthetic", "--split", "test", "--limit", 3, "--out", tmp_path / "mine")
    assert r.exit_code == 0, r.output
    assert f"IoU {ref['iou']:.4f}" in r.output
    mine = json.loads((tmp_path / "mine" / "metrics.json").read_text())
    assert set(mine) == set(ref)                                                        # the one metrics.json schema
    assert {k: mine[k] for k in SCORES + ("auc", "counts")} == {k: ref[k] for k in SCORES + ("auc", "counts")}
    assert pd.read_csv(tmp_path / "mine" / "per_image.csv").drop(columns="index").equals(
        pd.read_csv(tmp_path / "results" / "ev" / "per_image.csv").drop(columns="index"))
    r = uiunet("evaluate", tmp_path / "runs" / "ev" / "masks", "--dataset", "synthetic", "--split", "test", "--limit", 3,
               "--out", tmp_path / "masks-eval")                                        # the runner's binary masks: any method
    masks = json.loads((tmp_path / "masks-eval" / "metrics.json").read_text())
    assert r.exit_code == 0 and {k: masks[k] for k in SCORES} == {k: ref[k] for k in SCORES}
    assert masks["kind"] == "saved maps" and masks["method"] == "masks"


def test_evaluate_names_missing_and_extra_maps(tmp_path):
    maps = tmp_path / "maps"; maps.mkdir()
    for n in ("syn_test_00000", "syn_test_00002", "holiday"): np.save(maps / f"{n}.npy", np.zeros((256, 256), np.float32))
    r = uiunet("evaluate", maps, "--dataset", "synthetic", "--split", "test", "--limit", 3, "--out", tmp_path / "e")
    assert r.exit_code == 1
    assert "no map for 1 image(s) of the split: syn_test_00001; 1 map(s) match no image of the split: holiday" in r.output
    assert uiunet("evaluate", maps, "--dataset", "nosuchdata", "--split", "test").exit_code == 2


# --- uiunet export onnx -----------------------------------------------------------------------------------------

def test_onnx_round_trip(tmp_path):
    "Export the packaged weights; onnxruntime on the CPU gives the model's maps at sizes and batches the trace never saw."
    from uiunet.export import onnx_facts, onnx_session
    r = uiunet("export", "onnx", tmp_path / "nano.onnx", "--weights", "uiunet_nano:sirst")
    assert r.exit_code == 0, r.output
    assert "torchscript exporter" in r.output and "max |dp|" in r.output
    sess = onnx_session(tmp_path / "nano.onnx")
    assert [i.shape for i in sess.get_inputs()] == [["batch", 3, "height", "width"]]
    net, _ = load_weights("uiunet_nano:sirst", device="cpu")
    x = torch.randn(3, 3, 75, 203, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(): ref = net.predict(x).numpy()
    got = sess.run(None, {"image": x.numpy()})[0]
    assert got.shape == (3, 1, 75, 203) and np.abs(got - ref).max() < 1e-4
    facts = onnx_facts(tmp_path / "nano.onnx")
    assert (facts["model"], facts["recipe"], facts["dataset"]) == ("uiunet_nano", "standard", "sirst")
    assert float(facts["max_abs_diff"]) < 1e-4 and "0.43913" in facts["normalisation"]


# --- uiunet datasets ----------------------------------------------------------------------------------------------

def test_datasets_lists_a_root(tmp_path):
    own = tmp_path / "thermal"
    for d in ("images", "masks"): (own / d).mkdir(parents=True)
    for k in range(2):
        im, mk = synth_scene(k, size=(32, 48))
        cv2.imwrite(str(own / "images" / f"f{k}.png"), (im * 255).astype(np.uint8)); cv2.imwrite(str(own / "masks" / f"f{k}.png"), mk * 255)
    (own / "test.txt").write_text("f0\nf1\n"); (own / "train.txt").write_text("f0\n")
    r = uiunet("datasets", "--root", tmp_path)
    assert r.exit_code == 0
    assert f"data root: {tmp_path.absolute()} (--root)" in r.output
    assert "thermal (your own): 2 images, 2 masks" in r.output and "splits: test 2, train 1" in r.output
    assert "synthetic (built in, made on the fly): train 200, val 50, test 50" in r.output
    assert "not found: SIRST: get it from github.com/YimianDai/sirst" in r.output


@needs_dataset("sirst")
def test_datasets_lists_the_real_data_and_its_oddities(monkeypatch):
    monkeypatch.setenv("UIUNET_DATA", str(data_dir("sirst").parent))
    r = uiunet("datasets")
    text = " ".join(r.output.split())                                                  # lines are wrapped at 100 columns
    assert r.exit_code == 0 and "(UIUNET_DATA)" in text
    assert "sirst: 427 images, 427 masks" in text and "train 256, val 85, test 86" in text
    assert "paper_train (rule)" in text and "Misc_111: the published mask is 592x400" in text


def test_main_job_runs_end_to_end(tmp_path):
    """`uiunet main` (the README's first command, after setup) trains and evaluates in the current folder, prints an epoch
    line per epoch and closes with what it trained, its test scores and where its files are."""
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    r = subprocess.run([str(Path(sys.executable).parent / "uiunet"), "main", "--epochs", "2", "--limit", "8", "--name", "quick"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert r.stdout.count("epoch=") == 2 and "trained: uiunet_nano on 8 synthetic scenes per epoch, 2 epochs" in r.stdout
    assert "test (8 scenes, standard protocol): IoU" in r.stdout and "files: results/quick/" in r.stdout
    assert json.loads((tmp_path / "results" / "quick" / "metrics.json").read_text())["images"] == 8
    assert (tmp_path / "runs" / "quick" / "last.safetensors").exists()
