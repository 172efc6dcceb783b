"""Project plumbing: environment.yml agrees with pyproject.toml, README agrees with nbs/index.ipynb, the package's
import graph (no circle, no hidden imports; uiunet.data's four modules import one another one way)."""
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
    assert "uiunet main" in head and "bash .ci/test" in head
    assert "bash .ci/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_is_short():
    "The README says what the project is, how to start and what the paper's claims came to; the rest is on the site."
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; move detail into a page notebook (nbs/results.ipynb, nbs/paper.ipynb, ...)"


def test_readme_links_to_files_that_exist():
    "Every relative link or image in README.md (figures/, results/, nbs/ ...) points at a tracked path."
    text = (ROOT / "README.md").read_text()
    links = [l for l in re.findall(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", l) and not l.startswith("#")]
    assert any(l.startswith("figures/") for l in links), "the README shows no figure"
    missing = [l for l in links if not (ROOT / l).exists()]
    assert not missing, f"README.md links to missing paths: {missing}"


# --- package structure (issue 14): no import circle, no hidden imports, the learner knows no model ----------
import ast


def _module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(mod, node, is_pkg):
    "Absolute names of the uiunet modules an import node refers to."
    if isinstance(node, ast.Import): names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = mod.split(".")[: len(mod.split(".")) - node.level + (1 if is_pkg else 0)]
            base = ".".join(parts + ([base] if base else []))
        names = [base] + [f"{base}.{a.name}" for a in node.names]
    return [n for n in names if n == "uiunet" or n.startswith("uiunet.")]


def _import_graph():
    files = {p: _module_name(p) for p in (ROOT / "uiunet").rglob("*.py") if p.name != "_modidx.py"}
    known = set(files.values())
    graph, nested = {}, []
    for path, mod in files.items():
        tree, edges = ast.parse(path.read_text()), set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)): continue
            targets = [t for t in _resolve(mod, node, path.name == "__init__.py") if t in known]
            if node.col_offset > 0: nested += [f"{mod} imports {t} inside a function" for t in targets]
            for t in targets:
                edges.add(t)
                parts = t.split(".")  # importing a.b.c first runs the packages a.b (unless we are inside it)
                edges |= {".".join(parts[:i]) for i in range(2, len(parts)) if not mod.startswith(".".join(parts[:i]))}
        graph[mod] = edges - {mod}
    return graph, nested


def test_no_function_level_import_of_the_package():
    _, nested = _import_graph()
    assert not nested, nested


def test_modules_import_without_a_circle():
    graph, _ = _import_graph()
    state, stack = {}, []
    def visit(m):
        state[m] = 1; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1: raise AssertionError("import circle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state: visit(n)
        state[m] = 2; stack.pop()
    for m in sorted(graph):
        if m not in state: visit(m)
    assert {"uiunet.learner", "uiunet.models.registry", "uiunet.evaluation", "uiunet.data.datasets"} <= set(graph)


def test_the_learner_and_the_registry_import_no_model():
    graph, _ = _import_graph()
    def reach(m, seen=None):
        seen = set() if seen is None else seen
        for n in graph.get(m, ()):
            if n not in seen: seen.add(n); reach(n, seen)
        return seen
    assert not {m for m in reach("uiunet.learner") if m.startswith("uiunet.models")}
    assert not {m for m in reach("uiunet.models.registry") if m.startswith("uiunet.models")}
    assert not {m for m in reach("uiunet.evaluation") if m.startswith("uiunet.models")}


def test_registries_are_complete_after_any_import():
    "list_models, the pretrained table and the training procedures do not depend on what was imported first."
    code = ("import {m}; from uiunet.models import list_models, PRETRAINED; from uiunet.learner import LEARNERS; "
            "print(len(list_models()), sorted(PRETRAINED), sorted(LEARNERS))")
    outs = {subprocess.run([sys.executable, "-c", code.format(m=m)], capture_output=True, text=True, check=True, cwd=ROOT).stdout
            for m in ("uiunet.learner", "uiunet.models.registry", "uiunet.data", "uiunet.evaluation", "uiunet.model_driven")}
    assert len(outs) == 1 and outs.pop().startswith("11 ['uiunet_nano', 'uiunet_tiny'] ['mdvsfa_cgan', 'tbcnet']")


# --- the data package: four modules, imported one way, no import cycle --------------------------------------
import os

DATA_MODULES = ["io", "transforms", "datasets", "synthetic"]        # in dependency order
MAY_IMPORT = {"io": set(), "transforms": set(), "datasets": {"io", "transforms"}, "synthetic": {"io", "transforms", "datasets"}}


def _fresh_python(code: str) -> str:
    "stdout of `code` run by a fresh interpreter that imports uiunet from this checkout."
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_data_modules_import_without_a_cycle():
    for order in (DATA_MODULES, DATA_MODULES[::-1]):
        code = "".join(f"import uiunet.data.{m}\n" for m in order) + "import uiunet.data as d; print(len(d.__all__))"
        assert int(_fresh_python(code)) >= 60, order
    out = _fresh_python("import uiunet.data.datasets as d\n"        # the synthetic scenes registered by the package
                        "ds = d.get_dataset('synthetic', 'train', n=2); print(type(ds).__name__, len(ds), tuple(ds[1]['image'].shape))")
    assert out.strip() == "SyntheticDataset 2 (3, 256, 256)"


def test_data_modules_import_one_way_and_at_top_level():
    "Each module imports only the modules before it (io and transforms none), and never inside a function."
    for m in DATA_MODULES:
        tree = ast.parse((ROOT / "uiunet" / "data" / f"{m}.py").read_text())
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert id(node) in top, f"uiunet/data/{m}.py imports .{node.module} inside a function (line {node.lineno})"
                assert node.level == 1 and node.module in MAY_IMPORT[m], f"uiunet/data/{m}.py may not import {'.' * node.level}{node.module}"
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "uiunet" for n in names), f"uiunet/data/{m}.py: absolute uiunet import (line {node.lineno})"
