"""03_search's papermill parameters are a thin, typed mirror of `SearchConfig`: every field is a parameter with the
field's default (None where `SearchConfig.resolve` decides it for the machine and the data) and a matching type, and
there is no parameter that is not a field. A field added to one and not the other fails here."""
import ast, json
from dataclasses import MISSING, fields
from pathlib import Path

import pytest

from secondsight.run import RESOLVED, SearchConfig

NB = Path(__file__).resolve().parents[1] / 'nbs' / '03_search.ipynb'
SAME = {'list': 'tuple'}   # papermill passes a list (-y) where the config keeps a tuple

def parameters_cell(path:Path)->dict:
    "name -> (type name, default) of the notebook's `parameters` cell"
    cells = [c for c in json.loads(path.read_text())['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    assert len(cells) == 1, f"{path.name} has {len(cells)} cells tagged 'parameters'"
    tree = ast.parse(''.join(cells[0]['source']))
    out = {}
    for node in tree.body:
        assert isinstance(node, ast.AnnAssign), f"{path.name}: every parameter is typed (`name: type = value`): {ast.unparse(node)}"
        out[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
    return out

def field_type(f)->str:
    "The field's type without its None alternative ('int|None' -> 'int')"
    return [t.strip() for t in str(f.type).split('|') if t.strip() != 'None'][0]

def check_mirror(path:Path):
    params, flds = parameters_cell(path), {f.name: f for f in fields(SearchConfig)}
    assert sorted(set(flds) - set(params)) == [], "fields that papermill cannot set"
    assert sorted(set(params) - set(flds)) == [], "parameters that are not fields of SearchConfig"
    for name, (kind, default) in params.items():
        f = flds[name]
        want = None if name in RESOLVED else f.default
        assert f.default is not MISSING and default == want, f"{name}: the notebook's default {default!r}, the config's {want!r}"
        assert SAME.get(kind, kind) == field_type(f), f"{name}: the notebook says {kind}, the config {f.type}"

def test_parameters_mirror_the_config(): check_mirror(NB)

def test_resolve_takes_the_notebook_defaults(tmp_path):
    "The notebook's defaults, resolved, give the config's own defaults (plus what resolve decides)"
    p = {k: v for k, (_, v) in parameters_cell(NB).items()} | dict(dataset='demo', device='cpu', out_dir=str(tmp_path))
    cfg = SearchConfig.resolve(**p)
    assert cfg == SearchConfig(dataset='demo', device='cpu', out_dir=str(tmp_path))

@pytest.mark.parametrize('old, new, error', [
    ('n_embed: int = 100', '', 'fields that papermill cannot set'),
    ('seed: int = 0', 'seed: int = 0\nextra: int = 3', 'parameters that are not fields'),
    ('seed: int = 0', 'seed: int = 1', "seed: the notebook's default 1"),
    ('seed: int = 0', 'seed: float = 0', 'seed: the notebook says float'),
])
def test_the_check_finds_a_mismatch(tmp_path, old, new, error):
    "A parameters cell that lost a field, gained one, or changed a default or a type fails the check"
    nb = json.loads(NB.read_text())
    cell = next(c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', []))
    source = ''.join(cell['source'])
    assert old in source
    cell['source'] = '\n'.join(l for l in source.replace(old, new).split('\n') if l.strip())
    (tmp_path / 'a.ipynb').write_text(json.dumps(nb))
    with pytest.raises(AssertionError, match=error): check_mirror(tmp_path / 'a.ipynb')


def test_papermill_int_sessions(tmp_path):
    "papermill reads `-p sessions 1` as the int 1: the run takes it as session 1, as it takes '1-2'"
    cfg = SearchConfig.resolve(dataset='demo', device='cpu', out_dir=str(tmp_path), sessions=1)
    assert cfg.sessions == '1'
