"""Run a papermill runner's code cells in this process, with parameters given as key=value (Python literals):
for a machine without papermill. Usage: python nbrun.py NOTEBOOK key=value ..."""
import ast, json, sys
nb = json.load(open(sys.argv[1]))
params = {}
for a in sys.argv[2:]:
    k, v = a.split('=', 1)
    try: params[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError): params[k] = v
g = {'__name__': '__main__', 'display': print}
for i, c in enumerate(nb['cells']):
    if c['cell_type'] != 'code': continue
    src = ''.join(c['source'])
    src = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('%', '!')))
    exec(compile(src, f'{sys.argv[1]}[{i}]', 'exec'), g)
    if 'parameters' in c.get('metadata', {}).get('tags', []): g.update(params)
