"""The documentation site (.ci/site.py): built from the notebooks, then opened in headless Chromium, which must
render the index and module pages with every image loaded and no error output. Needs Debian's `chromium`
(apt-get install chromium); skips without it."""
import json
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run([sys.executable, str(ROOT / ".ci" / "site.py"), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _open(page, shot=None):
    "The page's DOM after load in headless Chromium (and a screenshot of it)."
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=15000", "--window-size=1280,1400"]
    dom = subprocess.run(args + ["--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    if shot: subprocess.run(args + [f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    body = re.search(r"<body([^>]*)>", dom)
    assert body, f"{page}: Chromium rendered no body"
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body.group(1))), dom


def test_every_notebook_is_a_page(site):
    done = json.loads((site / "pages.json").read_text())
    names = {d["page"] for d in done}
    assert len(done) == len(list((ROOT / "nbs").glob("*.ipynb"))) and {"index.html", "loss.html", "paper.html", "results.html"} <= names
    assert not [d for d in done if d["error_outputs"]]


@needs_chromium
@pytest.mark.parametrize("page,has", [("index.html", "Does the paper hold?"), ("loss.html", "DeepSupervisionLoss"),
                                      ("metrics.html", "SegMetrics"), ("paper.html", "Table I")])
def test_pages_render_in_chromium(site, page, has):
    """Each page renders with its sidebar and its content, every image it shows loaded, no error output; the API
    reference of a module page comes from show_doc (its signature block)."""
    facts, dom = _open(site / page, shot=site / "index.png" if page == "index.html" else None)
    assert facts.get("broken-images") == "0", (page, facts.get("broken-list"))
    assert facts.get("error-cells") == "0" and has in dom and 'class="uiunet-nav"' in dom
    if page == "paper.html": assert int(facts["images"]) >= 5              # Figures 6-10 of a profile
    if page == "loss.html": assert "loss.py#L" in dom                      # show_doc's link to the source
