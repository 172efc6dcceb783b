"""The paper workflow (workflow/Snakefile): the smoke profile end to end, dry runs of the real profiles, resume."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PAPER = yaml.safe_load((ROOT / "workflow" / "paper.yaml").read_text())


def _snakemake(profile, tmp, *extra, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", MPLBACKEND="Agg")
    cfg = [f"results={tmp}/results", f"runs={tmp}/runs", f"figures={tmp}/figures"]
    cmd = [SNAKEMAKE, "-s", "workflow/Snakefile", "--configfile", f"config/{profile}", "--config", *cfg, "-c2", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    r = _snakemake("paper-smoke.yaml", tmp, "-q", check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return tmp


def test_smoke_profile_produces_every_table(smoke):
    tables = smoke / "results" / "tables"
    for key in PAPER["tables"]:
        for protocol in ("standard", "release"):
            df = pd.read_csv(tables / f"table_{key}_{protocol}.csv")
            t = PAPER["tables"][key]
            assert len(df) == len(t["rows"]) * len(t["columns"]) * len(t["metrics"]), key
            assert (df["n"] > 0).all(), df[df["n"] == 0]                 # every cell computed
            assert df["mean"].between(0, 1e7).all()
    md = (tables / "tables.md").read_text()
    assert md.count("### Table") == 2 * len(PAPER["tables"]) and "+-" in md   # the UIU-Net rows have two seeds here
    assert "0.7825" in md and "*Protocol:*" in md                             # the paper's values beside ours
    budget = pd.read_csv(tables / "budget.csv")                              # what every job cost, from the files it wrote
    assert (budget.job == "train").sum() == len(list((smoke / "results" / "runs").glob("*/log.csv"))) and (budget.minutes > 0).all()
    assert "*Cost:*" in md and "CPU-hours in all" in md
    claims = pd.read_csv(tables / "claims.csv")                              # every comparison of C1-C5, scored
    assert set(claims.claim) == {"C1", "C2", "C3", "C4", "C5"} and claims.verdict.isin(["holds", "does not hold", "inconclusive", "no usable run"]).all()
    scored = claims[claims.verdict != "no usable run"]
    assert len(scored) and scored[["lo", "hi"]].notna().all().all() and (scored.lo <= scored.hi).all()
    assert "| **C6**" in (tables / "claims.md").read_text()


def test_smoke_profile_produces_every_figure(smoke):
    for k in (6, 7, 8, 9, 10):
        f = smoke / "figures" / f"fig{k}.png"
        assert f.stat().st_size > 10_000, f
    seq = pd.read_csv(smoke / "results" / "sequences" / "sequences.csv")          # 3 sequences x the 2 seeds of UIU-Net
    assert len(seq) == 6 and set(seq["seed"]) == {0, 1} and (seq["frames"] == 12).all() and (seq["targets"] > 0).all()
    frames = pd.read_csv(smoke / "results" / "sequences" / "per_frame.csv")       # what claim C6 resamples
    assert len(frames) == 6 * 12 and frames.groupby(["seed", "sequence"]).targets.sum().tolist() == seq.sort_values(["seed", "sequence"]).targets.tolist()


def test_smoke_runs_record_their_settings(smoke):
    run = json.loads((smoke / "results" / "runs" / "uiunet-sirst-s1" / "run.json").read_text())
    assert (run["config"]["model"], run["config"]["seed"], run["finished"]) == ("uiunet_nano", 1, True)
    m = json.loads((smoke / "results" / "evals" / "uiunet-sirst-s1" / "sirst_407_20-release" / "metrics.json").read_text())
    assert (m["protocol"], m["threshold"], m["kind"]) == ("release", 0.22, "learned")


def test_a_finished_workflow_has_nothing_left_to_do(smoke):
    r = _snakemake("paper-smoke.yaml", smoke, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr


def test_a_fresh_clone_redoes_no_training(smoke, tmp_path):
    """A clone has no workflow metadata and gives files new times (git writes evals/ before runs/): a copy of the
    finished results elsewhere, every training made newer than its evaluation, plans evaluations again but no
    training; `--touch` (the README's step after cloning) leaves nothing to do."""
    for d in ("results", "figures"): shutil.copytree(smoke / d, tmp_path / d)
    for f in (tmp_path / "results" / "runs").glob("*/run.json"): os.utime(f)
    plan = _snakemake("paper-smoke.yaml", tmp_path, "-n").stdout
    assert "rule evaluate:" in plan and "rule train:" not in plan, plan[-2000:]
    _snakemake("paper-smoke.yaml", tmp_path, "--touch")
    r = _snakemake("paper-smoke.yaml", tmp_path, "-n")
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-2000:]


def test_epochs_scale_shortens_a_slow_model(tmp_path):
    "The cpu profile trains MDvsFA-cGAN on a quarter of the epochs of its training set (at least one)."
    prof = yaml.safe_load((ROOT / "config" / "paper-cpu.yaml").read_text())
    scale = prof["models"]["mdvsfa_cgan"]["epochs_scale"]
    r = _snakemake("paper-cpu.yaml", tmp_path, "-n", "-p")
    for data in ("sirst", "md500", "md6200"):
        cmd = next(c for c in r.stdout.split("papermill ")[1:] if f"name: mdvsfa_cgan-{data}-s0" in c.replace("\\n", " ").replace("\n", " "))
        assert f"epochs: {max(1, round(prof['data'][data]['epochs'] * scale))}," in cmd, cmd
        assert "epochs_scale:" not in cmd                                  # a workflow setting, not a runner parameter
    assert "epochs: 40," in next(c for c in r.stdout.split("papermill ")[1:] if "name: uiunet-sirst-s0" in c)


@pytest.mark.parametrize("profile,trainings,tests", [("paper-cpu.yaml", 28, 2), ("paper-gpu.yaml", 28, 2), ("paper-replication.yaml", 84, 4)])
def test_dry_run_lists_the_profile(tmp_path, profile, trainings, tests):
    r = _snakemake(profile, tmp_path, "-n")
    counts = dict(l.split()[:2] for l in r.stdout.splitlines() if l.split()[:1] and l.split()[0] in ("train", "evaluate", "model_driven"))
    assert int(counts["train"]) == trainings and int(counts["evaluate"]) == trainings and int(counts["model_driven"]) == tests


def test_replication_trainings_select_on_a_holdout_and_stop_by_the_rule(tmp_path):
    """The replication profile: 3 seeds of every learned row (28 table cells), each selecting on a split that is not a
    test split, stopped by the plateau rule (patience scaled with a slow model's epochs), in the plateau recipe."""
    r = _snakemake("paper-replication.yaml", tmp_path, "-n", "-p")
    cmds = [yaml.safe_load(c.split("-y ", 1)[1].split(" > ")[0].replace("'\"'\"'", "'")[1:-1])
            for c in r.stdout.replace("\n", " ").split("papermill ")[1:] if c.startswith("--log-output --no-progress-bar nbs/train.ipynb")]
    assert len(cmds) == 84 and {c["seed"] for c in cmds} == {0, 1, 2}
    assert all(c["val_split"] and "test" not in c["val_split"] and c["patience"] >= 1 and c["recipe"] == "plateau" for c in cmds)
    cgan = next(c for c in cmds if c["name"] == "mdvsfa_cgan-sirst-s0"); ui = next(c for c in cmds if c["name"] == "uiunet-sirst-s0")
    assert (cgan["epochs"], cgan["patience"], ui["epochs"], ui["patience"]) == (25, 3, 100, 12)
    assert ui["train_split"] == "paper_train:fit" and ui["val_split"] == "paper_train:holdout"


@pytest.mark.parametrize("kept_in", ["runs", "snapshots"])
def test_an_interrupted_training_resumes(tmp_path, kept_in):
    """A run stopped after its first epoch (as a killed job leaves it) is resumed, not restarted, by the workflow: from
    runs/, or from the copy committed under the profile's snapshots/ when runs/ was lost (that copy is removed once done)."""
    env = dict(os.environ, MPLBACKEND="Agg")
    run = "uiunet-sirst-s0"
    subprocess.run([str(Path(sys.executable).parent / "papermill"), "nbs/train.ipynb", str(tmp_path / "t.ipynb"), "-p", "dataset", "synthetic",
                    "-p", "train_split", "train", "-p", "model", "uiunet_nano", "-p", "epochs", "2", "-p", "stop_after", "1", "-p", "name", run,
                    "-p", "out_dir", str(tmp_path / "runs"), "-p", "results_dir", str(tmp_path / "scratch"), "-p", "recipe", "standard",
                    "-p", "loss", "softiou", "-p", "lr", "0.001", "-p", "batch_size", "2", "-p", "img_size", "32", "-p", "val_every", "1",
                    "-y", "data_kwargs: {n: 6, size: 64}"], cwd=ROOT, env=env, check=True, capture_output=True)
    if kept_in == "snapshots":
        (tmp_path / "snapshots").mkdir(parents=True)
        (tmp_path / "runs" / run).rename(tmp_path / "snapshots" / run)
    prof = yaml.safe_load((ROOT / "config" / "paper-smoke.yaml").read_text())
    prof["data"]["sirst"]["epochs"] = 2
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(prof))
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    subprocess.run([SNAKEMAKE, "-s", "workflow/Snakefile", "--configfile", str(tmp_path / "p.yaml"), "--config", f"results={tmp_path}/results",
                    f"runs={tmp_path}/runs", f"figures={tmp_path}/figures", f"snapshots={tmp_path}/snapshots", "-c1", f"{tmp_path}/results/runs/{run}/run.json"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    log = (tmp_path / "runs" / "logs" / f"train-{run}.log").read_text()
    assert f"resumed {tmp_path}/runs/{run}/last.safetensors at epoch 1" in log
    assert json.loads((tmp_path / "results" / "runs" / run / "run.json").read_text())["epochs_done"] == 2
    assert not (tmp_path / "snapshots" / run).exists()
