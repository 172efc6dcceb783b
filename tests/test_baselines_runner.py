"""nbs/baselines.ipynb end to end through papermill on three synthetic images (nbdev-test skips it)."""
import json

import pandas as pd
import papermill as pm

from conftest import ROOT


def test_baselines_runner_writes_metrics(tmp_path):
    pm.execute_notebook(str(ROOT / "nbs" / "baselines.ipynb"), str(tmp_path / "out.ipynb"), kernel_name="python3",
                        cwd=str(ROOT), progress_bar=False,
                        parameters=dict(dataset="synthetic", split="test", methods="top_hat,lcm,pstnn", limit=3,
                                        out_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results")))
    for name in ("top_hat", "lcm", "pstnn"):
        res = tmp_path / "results" / "baselines" / "synthetic-test" / name
        m = json.loads((res / "metrics.json").read_text())
        assert (m["dataset"], m["split"], m["method"], m["images"], m["protocol"]) == ("synthetic", "test", name, 3, "standard")
        assert "mean +" in m["threshold_rule"] and m["params"] and m["reference"]
        for k in ("iou", "niou", "pd", "auc"):
            assert 0 <= m[k] <= 1, (name, k, m[k])
        assert m["fa"] >= 0 and m["time_per_image_s"] > 0 and m["counts"]["targets"] > 0
        per = pd.read_csv(res / "per_image.csv")
        assert len(per) == 3 and (per["time_s"] > 0).all()
        # the summary is the pooled per-image counts
        assert per["inter"].sum() / per["union"].sum() == m["iou"]
        assert per["detected"].sum() == m["counts"]["detected"]
        assert len(pd.read_csv(res / "roc.csv")) == 1001
        assert len(list((tmp_path / "runs" / "baselines" / "synthetic-test" / name / "masks").glob("*.png"))) == 3
    # the list of methods was honoured
    assert sorted(p.name for p in (tmp_path / "results" / "baselines" / "synthetic-test").iterdir()) == ["lcm", "pstnn", "top_hat"]
