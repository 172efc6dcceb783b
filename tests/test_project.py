"""Project plumbing: environment.yml agrees with pyproject.toml, README agrees with nbs/index.ipynb."""
import re
import subprocess
import sys
import tomllib

import yaml  # installed with papermill

from conftest import ROOT

# conda and PyPI spell a few packages differently
CONDA_TO_PYPI = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "pytorch-cuda"}


def _name(spec: str) -> str:
    return re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()


def _pyproject_deps():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    proj = cfg["project"]
    return {_name(d) for d in proj["dependencies"]} | {_name(d) for d in proj["optional-dependencies"]["dev"]}


def _environment_deps():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    specs = []
    for dep in env["dependencies"]:
        specs += dep["pip"] if isinstance(dep, dict) else [dep]
    names = {CONDA_TO_PYPI.get(_name(s), _name(s)) for s in specs if not s.startswith("-e")}
    return names - CONDA_ONLY


def test_environment_matches_pyproject():
    env, pyp = _environment_deps(), _pyproject_deps()
    assert env == pyp, f"only in environment.yml: {sorted(env - pyp)}; only in pyproject.toml: {sorted(pyp - env)}"


def test_environment_parser_sees_every_dependency():
    # guard against the parser above silently reading nothing
    assert {"torch", "nbdev", "papermill", "safetensors", "opencv-python-headless"} <= _environment_deps()


def test_readme_is_generated_from_index(tmp_path):
    out = tmp_path / "README.md"
    subprocess.run([sys.executable, str(ROOT / ".ci" / "readme.py"), "--out", str(out)], check=True, cwd=ROOT)
    assert out.read_text() == (ROOT / "README.md").read_text(), "README.md is stale: run `python .ci/readme.py`"


def test_readme_opens_with_two_commands():
    text = (ROOT / "README.md").read_text()
    head = text[: text.find("## ", text.find("bash .ci/test"))]
    assert "bash .ci/main" in head and "bash .ci/test" in head
    assert "bash .ci/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_links_to_files_that_exist():
    "Every relative link or image in README.md (figures/, results/, nbs/ ...) points at a tracked path."
    text = (ROOT / "README.md").read_text()
    links = [l for l in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", l) and not l.startswith("#")]
    assert any(l.startswith("figures/") for l in links), "the README shows no figure"
    missing = [l for l in links if not (ROOT / l).exists()]
    assert not missing, f"README.md links to missing paths: {missing}"
