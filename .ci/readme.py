"""Generate README.md from nbs/index.ipynb (nbdev-readme needs quarto; this needs only nbconvert).

    python .ci/readme.py            # writes README.md
    python .ci/readme.py --out F    # writes F (the test compares it with README.md)
"""
import argparse
import re
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
DIRECTIVE = re.compile(r"^\s*#\|.*\n?", re.M)


def _output_text(out) -> str:
    "Markdown (or plain text) of one cell output."
    data = out.get("data", {})
    if "text/markdown" in data: return "".join(data["text/markdown"])
    if "text/plain" in data: return "".join(data["text/plain"])
    return "".join(out.get("text", ""))


def render(nb_path: Path = ROOT / "nbs" / "index.ipynb") -> str:
    "Markdown of the index notebook: hidden cells dropped, nbdev directives stripped."
    nb = nbformat.read(nb_path, as_version=4)
    keep = []
    for cell in nb.cells:
        if cell.cell_type == "code" and re.search(r"^\s*#\|\s*hide\b", cell.source, re.M):
            continue
        if cell.cell_type == "code" and re.search(r"^\s*#\|\s*echo:\s*false", cell.source, re.M):
            # only the cell's (markdown or text) output goes into the README
            cell = nbformat.v4.new_markdown_cell("\n".join(_output_text(o) for o in cell.get("outputs", [])))
        cell.source = DIRECTIVE.sub("", cell.source)
        keep.append(cell)
    nb.cells = keep
    body, _ = MarkdownExporter(exclude_input_prompt=True, exclude_output_prompt=True).from_notebook_node(nb)
    body = re.sub(r"\n{3,}", "\n\n", body).strip() + "\n"
    body = re.sub(r"\]\(\.\./(figures|results)/", r"](\1/", body)   # links from nbs/ made relative to the root
    return "<!-- generated from nbs/index.ipynb by `python .ci/readme.py`: edit the notebook, not this file -->\n\n" + body


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "README.md"))
    Path(ap.parse_args().out).write_text(render())
