"""The papermill runners, end to end on tiny synthetic parameters (nbdev-test skips them)."""
import json

import pandas as pd
import papermill as pm
import pytest

from conftest import ROOT


def _run(nb, out, **params):
    return pm.execute_notebook(str(ROOT / "nbs" / nb), str(out), parameters=params, kernel_name="python3",
                               cwd=str(ROOT), progress_bar=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runners")
    _run("train.ipynb", tmp / "train.ipynb", dataset="synthetic", train_split="train", val_split="val",
         model="uiunet_nano", epochs=2, img_size=64, recipe="standard", limit=6, name="tiny",
         out_dir=str(tmp / "runs"), results_dir=str(tmp / "results"))
    return tmp


def test_train_runner_writes_run_and_results(trained):
    run, res = trained / "runs" / "tiny", trained / "results" / "tiny"
    assert {"last.safetensors", "best.safetensors", "log.csv", "run.json"} <= {p.name for p in run.iterdir()}
    assert {"run.json", "log.csv", "learning_curves.png"} <= {p.name for p in res.iterdir()}
    cfg = json.loads((res / "run.json").read_text())
    assert cfg["config"]["model"] == "uiunet_nano" and cfg["config"]["epochs"] == 2 and cfg["epochs_done"] == 2
    log = pd.read_csv(res / "log.csv")
    assert list(log["epoch"]) == [1, 2] and log["val_iou"].between(0, 1).all()
    assert (log["data_s"] >= 0).all() and (log["data_s"] < log["seconds"]).all()
    from uiunet.device import resolve_precision
    assert cfg["config"]["precision"] == resolve_precision("auto", "cpu")  # the default, resolved and recorded
    assert cfg["machines"][0]["from_epoch"] == 1 and cfg["machines"][0]["processor"]
    assert (res / "learning_curves.png").stat().st_size > 5000


def test_train_runner_passes_the_plateau_rule_on(tmp_path):
    """The runner's `patience` and `cuts` reach the learner: recorded in the config, and the run ends where the rule
    says (stopped by it, with that epoch's decision 'stop', or at the epoch cap with no 'stop' before). The rule
    itself is tested in nbs/24_learner.ipynb."""
    from uiunet.learner import plateau_action
    _run("train.ipynb", tmp_path / "train.ipynb", dataset="synthetic", train_split="train", val_split="val",
         model="uiunet_nano", epochs=4, img_size=32, batch_size=2, recipe="standard", limit=4, name="plateau", precision="fp32",
         patience=1, cuts=1, out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    run = json.loads((tmp_path / "results" / "plateau" / "run.json").read_text())
    rows = pd.read_csv(tmp_path / "results" / "plateau" / "log.csv").to_dict("records")
    assert (run["config"]["patience"], run["config"]["cuts"], run["finished"]) == (1, 1, True)
    decisions = [plateau_action(rows[:k], 1, 1) for k in range(1, len(rows) + 1)]
    if run.get("stopped"): assert run["stopped"]["epoch"] == len(rows) and decisions[-1] == "stop" and "stop" not in decisions[:-1]
    else: assert len(rows) == 4 and "stop" not in decisions


@pytest.mark.parametrize("protocol", ["standard", "release"])
def test_evaluate_runner_writes_metrics(trained, protocol):
    res = trained / "results" / f"ev-{protocol}"
    _run("evaluate.ipynb", trained / f"eval-{protocol}.ipynb", run=str(trained / "runs" / "tiny"), dataset="synthetic",
         split="test", protocol=protocol, limit=3, name=f"ev-{protocol}", out_dir=str(trained / "runs"),
         results_dir=str(trained / "results"), figure_images=2)
    m = json.loads((res / "metrics.json").read_text())
    assert (m["dataset"], m["split"], m["protocol"], m["images"]) == ("synthetic", "test", protocol, 3)
    assert m["threshold"] == (0.5 if protocol == "standard" else 0.22)
    assert "best validation IoU" in m["selection"] and 0 <= m["iou"] <= 1 and 0 <= m["auc"] <= 1
    from uiunet.device import resolve_precision
    assert m["precision"] == resolve_precision("auto", "cpu") and m["machine"]["processor"] and m["machine"]["threads"] >= 1
    per = pd.read_csv(res / "per_image.csv")
    assert len(per) == 3
    roc = pd.read_csv(res / "roc.csv")
    assert roc["fpr"].between(0, 1).all() and len(roc) > 100
    assert {"detections.png", "roc.png", "pdfa.csv"} <= {p.name for p in res.iterdir()}
    masks = list((trained / "runs" / f"ev-{protocol}" / "masks").glob("*.png"))
    assert len(masks) == 3


def test_evaluate_runner_takes_an_authors_checkpoint(tmp_path):
    "An authors'-format .pth (written by save_official) is scored through load_official, release protocol."
    import torch
    from uiunet.models import create_model, save_official
    torch.manual_seed(0)
    save_official(create_model("uiunet").eval(), tmp_path / "uiunet.pth")
    _run("evaluate.ipynb", tmp_path / "eval.ipynb", run=str(tmp_path / "uiunet.pth"), dataset="synthetic", split="test",
         protocol="release", limit=2, name="pth", out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"),
         figure_images=1)
    m = json.loads((tmp_path / "results" / "pth" / "metrics.json").read_text())
    assert m["selection"] == "authors' checkpoint uiunet.pth" and m["recipe"] == "release" and m["kind"] == "learned"
    assert m["input_size"] == "320x320 resize" and m["counts"]["pixels"] == 2 * 320 * 320


def test_summarize_runs_runner_summarises_runs_and_their_evaluations(trained, tmp_path):
    "nbs/summarize_runs.ipynb reads run folders and the evaluations naming them; it writes a summary and a figure."
    import shutil
    res = tmp_path / "results"
    shutil.copytree(trained / "results" / "tiny", res / "tiny")
    _run("evaluate.ipynb", tmp_path / "eval.ipynb", run=str(trained / "runs" / "tiny"), dataset="synthetic",
         split="test", protocol="standard", limit=2, name="ev-tiny", out_dir=str(tmp_path / "runs"),
         results_dir=str(res), figure_images=1)
    _run("summarize_runs.ipynb", tmp_path / "cpu.ipynb", runs=["tiny"], results_dir=str(res),
         figures_dir=str(tmp_path / "figures"), name="summary")
    s = pd.read_csv(res / "summary" / "summary.csv")
    log = pd.read_csv(res / "tiny" / "log.csv")
    m = json.loads((res / "ev-tiny" / "metrics.json").read_text())
    assert len(s) == 1 and s.loc[0, "run"] == "tiny" and s.loc[0, "epochs"] == "2/2" and s.loc[0, "evaluation"] == "ev-tiny"
    assert s.loc[0, "best_val_iou"] == pytest.approx(log["val_iou"].max())
    assert s.loc[0, "hours"] == pytest.approx(log["seconds"].sum() / 3600)
    assert (s.loc[0, "iou"], s.loc[0, "pd"], s.loc[0, "test"]) == (pytest.approx(m["iou"]), pytest.approx(m["pd"]), "test (2)")
    assert (tmp_path / "figures" / "summary.png").stat().st_size > 5000


def test_summarize_runs_runner_names_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "results" / "empty").mkdir(parents=True)
    with pytest.raises(pm.PapermillExecutionError, match=r"empty/run\.json: not found"):
        _run("summarize_runs.ipynb", tmp_path / "cpu.ipynb", runs=["empty"], results_dir=str(tmp_path / "results"),
             figures_dir=str(tmp_path / "figures"))


def test_benchmark_runner_writes_its_tables(tmp_path):
    "nbs/benchmark.ipynb on tiny settings: train steps and latencies in both precisions, and the data-loading share."
    _run("benchmark.ipynb", tmp_path / "bench.ipynb", models=["uiunet_nano"], train_shapes={"uiunet_nano": [2, 64]},
         steps=1, rounds=2, infer_size=64, infer_repeats=1, compile_models=[], data_model="uiunet_nano",
         data_dataset="synthetic", data_limit=8, data_crop=64, data_batch=4, results_dir=str(tmp_path / "results"))
    out = tmp_path / "results" / "speed"
    from uiunet.device import resolve_precision
    auto = resolve_precision("auto", "cpu")
    train = pd.read_csv(out / "train_steps.csv")
    assert set(train["setting"]) == {"fp32 eager", f"{auto} (learner)"} and (train["steps"] == 2).all() and (train["seconds"] > 0).all()
    assert train.loc[train["setting"] == "fp32 eager", "speedup"].tolist() == [1.0]
    infer = pd.read_csv(out / "inference.csv")
    assert infer["variant"].iloc[0] == "plain fp32 (release)" and infer["max_abs_dp"].iloc[0] == 0
    import importlib.util
    if importlib.util.find_spec("onnxruntime"):  # the ONNX Runtime row: float32, so within 1e-4 of the plain forward
        onnx = infer[infer["variant"] == "onnxruntime fp32 (CPU)"]
        assert len(onnx) == 1 and onnx["max_abs_dp"].iloc[0] < 1e-4 and onnx["ms"].iloc[0] > 0
    assert (infer["equal_mask_pixels"] > 0.99).all() and (infer["max_abs_dp"] < 0.05).all()
    facts = json.loads((out / "speed.json").read_text())
    assert facts["machine"]["processor"] and facts["precision_auto"] == auto
    d = facts["data_loading"]
    assert d["images"] == 8 and 0 <= d["data_share"] < 1 and d["data_s"] <= d["epoch_s"]


# --- issue 15: the evaluate runner takes every weights form, never overwrites, names folders after datasets ---

@pytest.fixture(scope="module")
def weights_files(trained):
    "The tiny run's weights in every form the package writes: exported, authors' safetensors and .pt (plain state_dicts)."
    import torch
    from uiunet.models import export_weights, load_run
    out = trained / "weights"; out.mkdir(exist_ok=True)
    export_weights(trained / "runs" / "tiny", out / "exported.safetensors")
    model, _ = load_run(trained / "runs" / "tiny")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "plain.safetensors"))
    torch.save(model.state_dict(), out / "plain.pt")
    return out


@pytest.mark.parametrize("form", ["run", "best", "exported", "plain.safetensors", "plain.pt", "tag"])
def test_evaluate_runner_takes_every_weights_form(trained, weights_files, form):
    src = {"run": trained / "runs" / "tiny", "best": trained / "runs" / "tiny" / "best.safetensors",
           "exported": weights_files / "exported.safetensors", "plain.safetensors": weights_files / "plain.safetensors",
           "plain.pt": weights_files / "plain.pt", "tag": "uiunet_nano:sirst"}[form]
    extra = dict(model="uiunet_nano", recipe="standard") if form.startswith("plain") else {}
    _run("evaluate.ipynb", trained / f"ev-{form}.ipynb", run=str(src), dataset="synthetic", split="test", limit=2,
         name=f"form-{form}", out_dir=str(trained / "runs"), results_dir=str(trained / "results"), figure_images=1, **extra)
    m = json.loads((trained / "results" / f"form-{form}" / "metrics.json").read_text())
    assert m["method"] == "uiunet_nano" and m["images"] == 2 and m["source"] == str(src)
    if form != "tag":   # every form of the same weights gives the same numbers
        ref = json.loads((trained / "results" / "ev-standard" / "metrics.json").read_text())
        per = pd.read_csv(trained / "results" / f"form-{form}" / "per_image.csv")
        ref_per = pd.read_csv(trained / "results" / "ev-standard" / "per_image.csv").iloc[:2]
        assert list(per["inter"]) == list(ref_per["inter"]) and list(per["union"]) == list(ref_per["union"])


def test_evaluate_runner_never_overwrites_other_settings(trained):
    args = dict(run=str(trained / "runs" / "tiny"), dataset="synthetic", split="test", name="once", out_dir=str(trained / "runs"),
                results_dir=str(trained / "results"), figure_images=1)
    _run("evaluate.ipynb", trained / "once.ipynb", limit=3, **args)
    f = trained / "results" / "once" / "metrics.json"; before = f.read_text()
    masks = sorted(p.name for p in (trained / "runs" / "once" / "masks").iterdir())
    for change in (dict(limit=2), dict(limit=3, threshold=0.3)):
        with pytest.raises(pm.PapermillExecutionError, match="holds an evaluation with other settings"):
            _run("evaluate.ipynb", trained / "twice.ipynb", **{**args, **change})
        assert f.read_text() == before and sorted(p.name for p in (trained / "runs" / "once" / "masks").iterdir()) == masks
    _run("evaluate.ipynb", trained / "again.ipynb", limit=2, overwrite=True, **args)   # asked for: replaced, no stale masks
    assert json.loads(f.read_text())["images"] == 2 and len(list((trained / "runs" / "once" / "masks").iterdir())) == 2


def test_runners_name_folders_after_a_dataset_path(trained, tmp_path):
    import cv2, numpy as np
    own = tmp_path / "deep" / "path" / "mydata"
    for d in ("images", "masks"): (own / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(own / "images" / f"a{k}.png"), (rng.random((40, 40)) * 255).astype(np.uint8))
        m = np.zeros((40, 40), np.uint8); m[10:13, 20:23] = 255; cv2.imwrite(str(own / "masks" / f"a{k}.png"), m)
    (own / "test.txt").write_text("a0\na1\n")
    _run("evaluate.ipynb", tmp_path / "ev.ipynb", run=str(trained / "runs" / "tiny"), dataset=str(own), split="test",
         out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), figure_images=1)
    _run("model_driven.ipynb", tmp_path / "md.ipynb", dataset=str(own), split="test", methods="top_hat",
         out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"))
    names = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert names == ["eval-tiny-mydata-test-standard", "model-driven"], names
    assert (tmp_path / "results" / "model-driven" / "mydata-test" / "top_hat" / "metrics.json").exists()
    assert json.loads((tmp_path / "results" / names[0] / "metrics.json").read_text())["dataset"] == "mydata"


def test_explore_runner_draws_its_static_figure(tmp_path):
    "nbs/explore.ipynb headless: the chosen image at a few thresholds, saved, and its scores over thresholds."
    nb = _run("explore.ipynb", tmp_path / "explore.ipynb", dataset="synthetic", split="test", image="syn_test_00002",
              thresholds=[0.2, 0.5], figure=str(tmp_path / "explore.png"))
    assert (tmp_path / "explore.png").stat().st_size > 5000
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "on synthetic test: 50 images; image 2: syn_test_00002" in text


def test_model_report_runner_reports_beyond_iou(tmp_path):
    "nbs/model_report.ipynb: metrics, (Fa, Pd) at every threshold, target-free windows and score spread of packaged weights."
    th = [0.01, 0.5, 0.99]
    _run("model_report.ipynb", tmp_path / "r.ipynb", models={"uiunet_nano:sirst": ["synthetic", "test"]}, thresholds=th, limit=3,
         data_kwargs={"n": 3, "size": 96}, results_dir=str(tmp_path / "results"), figures_dir=str(tmp_path / "figures"))
    (r,) = json.loads((tmp_path / "results" / "model-report" / "report.json").read_text())
    assert (r["weights"], r["images"], r["precision"]) == ("uiunet_nano:sirst", 3, "fp32")
    assert r["pdfa"]["thresholds"] == th and r["pdfa"]["pd"][1] == r["pd"]                # the curve passes through the 0.5 result
    assert r["pdfa"]["fa"][1] * 1e6 == pytest.approx(r["fa_e6"])
    assert r["target_free"]["scenes"] + r["target_free"]["skipped"] == 3 and 0 <= r["target_free"]["with_detection"] <= r["target_free"]["scenes"]
    assert r["spread"]["pixels"] == 3 * 96 * 96 and r["spread"]["confident"] <= r["spread"]["detections"]
    assert r["spread"]["false_candidates"] <= r["spread"]["candidates"] and r["spread"]["low"] == 0.01
    assert len(pd.read_csv(tmp_path / "results" / "model-report" / "pdfa.csv")) == len(th)
    assert (tmp_path / "figures" / "model-report.png").stat().st_size > 5_000


@pytest.mark.parametrize("name,kwargs,keys", [("tbcnet", {"scm_epochs": 1}, {"train_sem", "train_seg"}),
                                              ("mdvsfa_cgan", {}, {"train_d", "train_g1", "train_g2"})])
def test_train_runner_uses_the_models_own_procedure(tmp_path, name, kwargs, keys):
    "TBC-Net and MDvsFA-cGAN train by their own procedures through the same runner (unit checks: nbs/11, nbs/14-18)."
    mk = {"width": 8} if name == "mdvsfa_cgan" else {}
    pm.execute_notebook(str(ROOT / "nbs" / "train.ipynb"), str(tmp_path / "t.ipynb"), kernel_name="python3", cwd=str(ROOT),
                        progress_bar=False, parameters=dict(dataset="synthetic", train_split="train", val_split="val",
                        model=name, model_kwargs=mk, epochs=2, img_size=32, batch_size=2, recipe="standard", limit=4,
                        name="p", out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "res"), learner_kwargs=kwargs))
    run = json.loads((tmp_path / "res" / "p" / "run.json").read_text())
    assert run["config"]["learner"] in ("TBCLearner", "MDvsFALearner") and run["epochs_done"] == 2
    assert keys <= set(pd.read_csv(tmp_path / "res" / "p" / "log.csv").columns)
