"""nbs/model_driven.ipynb end to end through papermill on three synthetic images (nbdev-test skips it)."""
import json

import pandas as pd
import papermill as pm

from conftest import ROOT


def test_model_driven_runner_writes_the_common_metrics(tmp_path):
    pm.execute_notebook(str(ROOT / "nbs" / "model_driven.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False,
                        parameters=dict(dataset="synthetic", split="test", methods="top_hat,lcm,pstnn", limit=3,
                                        out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results")))
    for name in ("top_hat", "lcm", "pstnn"):
        res = tmp_path / "results" / "model-driven" / "synthetic-test" / name
        m = json.loads((res / "metrics.json").read_text())
        assert (m["dataset"], m["split"], m["method"], m["images"], m["protocol"]) == ("synthetic", "test", name, 3, "standard")
        assert "mean +" in m["selection"] and m["params"] and m["source"] and m["kind"] == "model-driven"
        for k in ("iou", "niou", "pd", "auc"):
            assert 0 <= m[k] <= 1, (name, k, m[k])
        assert m["fa"] >= 0 and m["seconds_per_image"] > 0 and m["counts"]["targets"] > 0
        per = pd.read_csv(res / "per_image.csv")
        assert len(per) == 3
        # the summary is the pooled per-image counts
        assert per["inter"].sum() / per["union"].sum() == m["iou"]
        assert per["detected"].sum() == m["counts"]["detected"]
        assert len(pd.read_csv(res / "roc.csv")) == 1001
        assert len(list((tmp_path / "runs" / "model-driven" / "synthetic-test" / name / "masks").glob("*.png"))) == 3
    # the list of methods was honoured
    assert sorted(p.name for p in (tmp_path / "results" / "model-driven" / "synthetic-test").iterdir()) == ["lcm", "pstnn", "top_hat"]

    # the same keys as a learned model's evaluation (nbs/evaluate.ipynb): one schema for every method
    from uiunet.evaluation import SETTINGS
    assert set(SETTINGS) <= set(m) and {"machine", "precision", "recipe", "input_size"} <= set(m)
