"""Build the documentation site from the notebooks.

    python .ci/site.py              # _site/index.html and one page per notebook
    python .ci/site.py --quarto     # nbdev-docs (needs the `quarto` command) into _docs/

nbdev's own builder, `nbdev-docs`, renders with Quarto. Quarto is not on PyPI as a wheel: the `quarto-cli`
package is a source distribution that downloads Quarto's binaries from GitHub while it installs, which fails on a
machine that reaches only package registries. Without `--quarto` this script builds the same pages offline from
the same inputs: `nbdev-proc-nbs` processes the notebooks as nbdev-docs does (directives applied, an API entry
rendered by `show_doc` for every exported symbol, front matter), and nbconvert turns each processed notebook into
HTML, with the saved outputs (tables, figures) of the page notebooks, a sidebar of every page, the images the
pages link to (figures/, results/) copied beside them, and links into the site made local.

Each page carries a check that a browser runs on load: it writes, on <body>, how many images failed to load
(`data-broken-images`) and how many error outputs the page shows (`data-error-cells`); tests/test_docs.py reads
them from headless Chromium.
"""
import argparse
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import yaml
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

ROOT = Path(__file__).resolve().parents[1]
SITE_URL = 'https://uiunet.github.io/uiunet/'
CHECK = """<script>
window.addEventListener('load', () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.getAttribute('src'));
  const errors = document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"], .jp-OutputArea-output.error, .output_error').length;
  document.body.setAttribute('data-broken-images', String(broken.length));
  document.body.setAttribute('data-broken-list', broken.join(' '));
  document.body.setAttribute('data-error-cells', String(errors));
  document.body.setAttribute('data-images', String(document.images.length));
});
</script>"""
STYLE = """<style>
body { margin: 0; } .uiunet-nav { position: fixed; top: 0; left: 0; bottom: 0; width: 15rem; overflow-y: auto; padding: 1rem;
  font: 14px/1.5 sans-serif; background: #f6f7f9; border-right: 1px solid #ddd; } .uiunet-nav a { display: block; color: #234; text-decoration: none; }
.uiunet-nav a.here { font-weight: bold; } .uiunet-desc { color: #555; font-style: italic; } .uiunet-nav h2 { font-size: 15px; margin: .8rem 0 .3rem; } main.uiunet-page { margin-left: 17rem; max-width: 60rem; }
</style>"""


CELL_KEYS = {'cell_type', 'id', 'metadata', 'source', 'outputs', 'execution_count', 'attachments'}

def read(p: Path):
    "A processed notebook (nbdev leaves keys of its own on cells, which nbformat refuses)."
    raw = json.loads(Path(p).read_text())
    for c in raw['cells']:
        for k in set(c) - CELL_KEYS: del c[k]
        c['metadata'] = {k: v for k, v in c.get('metadata', {}).items() if k == 'tags'}   # and timing records of its own
    return nbformat.reads(json.dumps(raw), as_version=4)


def front_matter(nb) -> dict:
    "The YAML front matter nbdev writes into the first (raw) cell of a processed notebook: title, output-file, ..."
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        return {k: str(v) for k, v in (yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}).items()}
    return {}


def pages(proc: Path) -> list:
    "(processed notebook, html name, title) of every page, in the notebooks' order; the index first."
    out = []
    for p in sorted(proc.glob('*.ipynb')):
        fm = front_matter(read(p))
        name = 'index.html' if p.stem == 'index' else fm.get('output-file', p.stem + '.html')
        title = fm.get('title', p.stem)
        out.append((p, name, title))
    return sorted(out, key=lambda x: x[1] != 'index.html')


def prepare(nb):
    "The processed notebook as a page: front matter dropped, directives stripped, inputs of `echo: false` cells hidden."
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'raw' and c.source.lstrip().startswith('---'))]
    for c in nb.cells:
        if c.cell_type != 'code': continue
        if re.search(r'^\s*#\|\s*(echo:\s*false|hide)\b', c.source, re.M): c.metadata.setdefault('tags', []).append('hide-input')
        c.source = re.sub(r'^\s*#\|.*\n?', '', c.source, flags=re.M)
        for o in c.get('outputs', []):   # nbdev's quarto-only attributes on its markdown
            d = o.get('data', {})
            if 'text/markdown' in d: d['text/markdown'] = re.sub(r'\{target="_blank"[^}]*\}', '', d['text/markdown'])
    return nb


def localise(html: str, site: Path, nbs: Path) -> str:
    "Links to the published site made relative; images and files of ../figures and ../results copied into the site."
    html = html.replace(SITE_URL, '')
    def copy(m):
        rel = m.group(2)
        src = (nbs / rel).resolve()
        if src.is_file() and ROOT in src.parents:
            dst = site / src.relative_to(ROOT); dst.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst)
            return m.group(1) + src.relative_to(ROOT).as_posix() + m.group(3)
        return m.group(0)
    return re.sub(r'((?:src|href)=")(\.\./(?:figures|results)/[^"#?]+)(")', copy, html)


def render(proc: Path, site: Path) -> list:
    "Write one HTML page per processed notebook into `site`; return (name, title, error outputs) of each."
    if site.exists(): shutil.rmtree(site)
    site.mkdir(parents=True)
    ps, done = pages(proc), []
    exporter = HTMLExporter(template_name='lab', exclude_input_prompt=True, exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'hide-input'}, enabled=True), enabled=True)
    for p, name, title in ps:
        raw = read(p); fm = front_matter(raw); nb = prepare(raw)
        errors = sum(o.get('output_type') == 'error' for c in nb.cells for o in c.get('outputs', []))
        body, _ = exporter.from_notebook_node(nb, resources=dict(metadata=dict(name=title)))
        nav = ''.join(f'<a href="{n}"{" class=here" if n == name else ""}>{t}</a>' for _, n, t in ps)
        body = body.replace('</head>', STYLE + '</head>', 1)
        head = f'<h1>{html.escape(title)}</h1>' + (f'<p class="uiunet-desc">{html.escape(fm["description"])}</p>' if fm.get('description') else '')
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + f'<nav class="uiunet-nav"><h2>uiunet</h2>{nav}</nav><main class="uiunet-page">{head}', body, count=1)
        body = body.replace('</body>', '</main>' + CHECK + '</body>', 1)
        (site / name).write_text(localise(body, site, ROOT / 'nbs'))
        done.append(dict(page=name, title=title, error_outputs=errors))
    (site / 'pages.json').write_text(json.dumps(done, indent=1))
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--quarto', action='store_true', help='nbdev-docs with Quarto (must be installed)')
    ap.add_argument('--out', default=str(ROOT / '_site'))
    ap.add_argument('--no-proc', action='store_true', help='render the _proc/ of an earlier build again (page layout only)')
    a = ap.parse_args()
    bin_ = Path(sys.executable).parent
    if a.quarto:
        if not shutil.which('quarto'): sys.exit('quarto is not installed (pip install quarto-cli needs github.com); build without --quarto')
        sys.exit(subprocess.run([str(bin_ / 'nbdev-docs')], cwd=ROOT).returncode)
    if not a.no_proc: subprocess.run([str(bin_ / 'nbdev-proc-nbs'), '--force'], cwd=ROOT, check=True)
    done = render(ROOT / '_proc', Path(a.out))
    bad = [d['page'] for d in done if d['error_outputs']]
    print(f"{len(done)} pages in {a.out}" + (f"; pages with error outputs: {', '.join(bad)}" if bad else ''))
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
