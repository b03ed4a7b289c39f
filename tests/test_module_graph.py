"""The package's structure as the README states it: modules import one way (no import circles, counting imports inside
functions), no module takes another's private names, the test doubles stay out of the modules a run imports, and no
module grows past 800 lines. `python tests/test_module_graph.py` prints the import graph."""
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'secondsight'
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.name.startswith('_'))

def imports(path:Path)->list[tuple[str, str]]:
    "(module, name) for every `from .module import name` / `from secondsight.module import name` in the file, at any depth"
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or '').startswith('secondsight.')):
            mod = node.module if node.level == 1 else node.module.split('.', 1)[1]
            out += [(mod, a.name) for a in node.names]
    return out

def graph(pkg:Path=PKG)->dict[str, set]:
    return {p.stem: {m for m, _ in imports(p)} for p in sorted(pkg.glob('*.py')) if not p.name.startswith('_')}

def circles(g:dict)->list[list[str]]:
    "Every import circle, as the modules along it"
    found = []
    def walk(m, path):
        for t in sorted(g.get(m, ())):
            if t in path: found.append(path[path.index(t):])
            elif t not in seen: walk(t, path + [t])
        seen.add(m)
    seen = set()
    for m in sorted(g): walk(m, [m])
    return found

def test_the_checks_find_a_circle():
    assert circles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == [['a', 'b', 'c']]
    assert circles({'a': {'b'}, 'b': set()}) == []

def test_no_import_circles(): assert circles(graph()) == []

def test_no_private_names_across_modules():
    assert [(p.stem, m, n) for p in PKG.glob('*.py') for m, n in imports(p) if n.startswith('_') and not n.startswith('__')] == []

def test_test_doubles_stay_out_of_a_run():
    "Only the test module itself knows `secondsight.testing`"
    assert [m for m, deps in graph().items() if 'testing' in deps] == []

@pytest.mark.parametrize('module', MODULES)
def test_module_size(module):
    n = len((PKG / f'{module}.py').read_text().splitlines())
    assert n <= 800, f"secondsight/{module}.py has {n} lines: split it into modules with one job each (a notebook each)"

if __name__ == '__main__':
    for m, deps in graph().items(): print(f"{m:10s} <- {', '.join(sorted(deps)) or '(nothing)'}")
