"""Every code cell of every notebook, the `#| slow` and `#| cuda` cells that `nbdev_test` skips included, uses only
names that the notebook defines or imports (pyflakes): a name dropped from an import cell fails here, not in a user's
papermill run on a GPU."""
import io, json
from pathlib import Path

import pytest
from pyflakes.api import check
from pyflakes.reporter import Reporter

NBS = sorted((Path(__file__).parents[1] / 'nbs').glob('*.ipynb'))

def notebook_code(path:Path)->str:
    "The notebook's code cells as one module, in order (magics and `from __future__` lines left out)."
    cells = [c for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']
    keep = lambda l: not l.lstrip().startswith(('%', '!', 'from __future__'))
    return '\n\n'.join('\n'.join(l for l in ''.join(c['source']).splitlines() if keep(l)) for c in cells)

def undefined_names(code:str, name:str)->list:
    out, err = io.StringIO(), io.StringIO()
    check(code, name, Reporter(out, err))
    assert not err.getvalue(), err.getvalue()
    problems = [l for l in out.getvalue().splitlines() if 'undefined name' in l or 'unable to detect undefined names' in l]
    return problems

def test_the_check_finds_a_missing_import():
    assert undefined_names("from dataclasses import asdict\nx = replace(1)\n", 'nb')          # the bug this guards against
    assert undefined_names("from os import *\nx = 1\n", 'nb')                                    # star imports hide names
    assert not undefined_names("from dataclasses import replace\nx = replace\n", 'nb')

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_notebook_uses_only_defined_names(path):
    problems = undefined_names(notebook_code(path), path.name)
    assert not problems, f"{path.name}: " + '; '.join(problems) + " (import the name in the notebook's import cell)"
