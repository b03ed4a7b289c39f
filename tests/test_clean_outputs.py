"""tools/clean_outputs.py on a small notebook written here: figures shrink to palette PNGs, stderr noise goes, machine
paths are reported, and a second run changes nothing (so `make check-clean` can tell whether it ran)."""
import base64, importlib.util, io, json
from pathlib import Path

import numpy as np
from PIL import Image

spec = importlib.util.spec_from_file_location('clean_outputs', Path(__file__).parents[1] / 'tools' / 'clean_outputs.py')
co = importlib.util.module_from_spec(spec); spec.loader.exec_module(co)

def png_b64(arr):
    buf = io.BytesIO(); Image.fromarray(arr).save(buf, format='PNG'); return base64.b64encode(buf.getvalue()).decode()

def write_nb(path, text_out):
    rng = np.random.default_rng(0)
    plot = np.full((200, 300, 4), 255, np.uint8); plot[50:150, 100:200, :3] = rng.integers(0, 4, (100, 100, 3)) * 60  # few colours
    cell = dict(cell_type='code', id='c1', metadata={}, execution_count=None, source=['x'], outputs=[
        dict(output_type='stream', name='stderr', text=['100%|##########| 3/3 [00:01<00:00]\n']),
        dict(output_type='stream', name='stdout', text=[text_out]),
        dict(output_type='display_data', metadata={}, data={'image/png': png_b64(plot), 'text/plain': ['<Figure>']})])
    path.write_text(json.dumps(dict(cells=[cell], metadata={}, nbformat=4, nbformat_minor=5)))

def test_shrinks_drops_noise_and_is_idempotent(tmp_path):
    p = tmp_path / 'a.ipynb'; write_nb(p, 'done\n')
    before = p.stat().st_size
    assert co.clean(p) == []
    outs = json.loads(p.read_text())['cells'][0]['outputs']
    assert [o.get('name') for o in outs] == ['stdout', None]                       # stderr dropped, the rest kept
    im = Image.open(io.BytesIO(base64.b64decode(outs[1]['data']['image/png'])))
    assert im.mode == 'P' and im.size == (300, 200) and p.stat().st_size < before
    assert np.asarray(im.convert('RGB'))[0, 0].tolist() == [255, 255, 255]         # white page, not black
    once = p.read_text(); co.clean(p); assert p.read_text() == once

def test_reports_machine_paths(tmp_path):
    p = tmp_path / 'b.ipynb'; write_nb(p, 'run folder /work/main/data/cache/x\n')
    found = co.clean(p)
    assert len(found) == 1 and '/work/main/data/cache/x' in found[0] and 'b.ipynb' in found[0]


def test_show_doc_outputs_are_left_to_the_docs_build(tmp_path):
    p = tmp_path / 'd.ipynb'; write_nb(p, 'kept\n')
    nb = json.loads(p.read_text())
    nb['cells'].append(dict(cell_type='code', id='c2', metadata={}, execution_count=None, source=['show_doc(f)'],
                            outputs=[dict(output_type='display_data', metadata={}, data={'text/markdown': ['### f']})]))
    p.write_text(json.dumps(nb))
    co.clean(p)
    cells = json.loads(p.read_text())['cells']
    assert cells[1]['outputs'] == [] and len(cells[0]['outputs']) == 2     # show_doc output dropped, the rest kept
