"""tools/clean_outputs.py on small notebooks written here: plots shrink to palette PNGs and photos to JPEGs (which the
docs build shows), stderr noise goes, machine paths are reported, sizes are reported and checked, and a second run
changes nothing (so `make check-clean` can tell whether it ran); then every notebook of nbs/, saved as JupyterLab saves
it, comes back from `make check-clean`'s cleaners as it went in."""
import base64, importlib.util, io, json, shutil, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).parents[1]
spec = importlib.util.spec_from_file_location('clean_outputs', ROOT / 'tools' / 'clean_outputs.py')
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


def photo_b64(h=200, w=300):
    "A photo-like figure: smooth colours and sensor noise (thousands of colours, which a palette bands)."
    rng = np.random.default_rng(0); y, x = np.mgrid[0:h, 0:w]
    im = np.stack([128 + 100 * np.sin(x / 17 + c) * np.cos(y / 23 - c) for c in range(3)], -1) + rng.normal(0, 6, (h, w, 3))
    return png_b64(im.clip(0, 255).astype(np.uint8))

def test_photos_become_jpegs_that_the_docs_build_shows(tmp_path):
    p = tmp_path / 'p.ipynb'; write_nb(p, 'ok\n')
    nb = json.loads(p.read_text()); photo = photo_b64()
    nb['cells'][0]['outputs'][2] = dict(output_type='display_data', metadata={'image/png': {'width': 300}},
                                        data={'image/png': photo, 'text/plain': ['<Figure>']})
    p.write_text(json.dumps(nb))
    co.clean(p)
    o = json.loads(p.read_text())['cells'][0]['outputs'][1]
    assert set(o['data']) == {'image/jpeg', 'text/plain'} and o['metadata'] == {'image/jpeg': {'width': 300}}
    assert len(o['data']['image/jpeg']) < len(photo) / 5
    im = Image.open(io.BytesIO(base64.b64decode(o['data']['image/jpeg'])))
    assert im.format == 'JPEG' and im.size == (300, 200)
    once = p.read_text(); co.clean(p); assert p.read_text() == once             # a JPEG is not encoded again
    sys.path.insert(0, str(ROOT / 'tools'))
    import build_docs, nbformat
    html, _ = build_docs._exporter().from_notebook_node(nbformat.read(p, as_version=4), resources={'site': {}})
    assert f'src="data:image/jpeg;base64,{o["data"]["image/jpeg"]}"' in html        # the offline docs show it

def test_wide_figures_are_capped_and_old_palettes_shrink():
    wide = np.full((100, 2200, 3), 255, np.uint8); wide[40:60, :, 0] = np.linspace(0, 255, 2200)   # 256 reds
    mime, b64 = co.shrink_figure('image/png', png_b64(wide))
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert mime == 'image/png' and im.size == (co.MAX_WIDTH, 50) and im.mode == 'P' and im.getcolors(co.COLOURS)
    buf = io.BytesIO(); Image.fromarray(wide[:, :1000]).quantize(256, dither=Image.Dither.NONE).save(buf, format='PNG')
    p256 = base64.b64encode(buf.getvalue()).decode()                              # as the old cleaner stored figures
    assert len(co.shrink_figure('image/png', p256)[1]) < len(p256)
    assert co.shrink_figure(mime, b64) == (mime, b64)                              # done once

def test_sizes_are_reported_and_checked(tmp_path, capsys):
    for n in 'ab': write_nb(tmp_path / f'{n}.ipynb', 'x\n')
    co.main([str(tmp_path), '--max-bytes', '1000000'])
    out, err = capsys.readouterr()
    assert 'a.ipynb' in out and 'b.ipynb' in out and '(figures ' in out and 'at most 1,000,000' in out and err == ''
    total = sum(p.stat().st_size for p in tmp_path.glob('*.ipynb'))
    co.main([str(tmp_path), '--max-bytes', '100'])                               # over: a warning, exit status 0
    out, err = capsys.readouterr()
    assert f'-> {total:>9,} bytes: over the 100 allowed' in out and err.startswith('warning: ') and 'more than 100 bytes' in err
    with pytest.raises(SystemExit, match='more than 100 bytes'): co.main([str(tmp_path / 'a.ipynb'), '--max-bytes', '100', '--strict'])

def test_written_as_jupyter_writes(tmp_path):
    "Sources and text as lists of lines, keys sorted, streams of one name joined, the project's kernel: as a JupyterLab save leaves them."
    p = tmp_path / 'j.ipynb'
    cell = dict(cell_type='code', id='c1', metadata={}, execution_count=None, source='a = 1\nprint(a)', outputs=[
        dict(output_type='stream', name='stdout', text='1\n'), dict(output_type='stream', name='stdout', text='2\n3\n'),
        dict(output_type='execute_result', execution_count=None, metadata={}, data={'text/plain': 'one line'})])
    p.write_text(json.dumps(dict(cells=[cell], metadata={'kernelspec': {'name': 'other', 'display_name': 'Other'}}, nbformat=4, nbformat_minor=5)))
    co.clean(p)
    nb = json.loads(p.read_text())
    c = nb['cells'][0]
    assert c['source'] == ['a = 1\n', 'print(a)'] and c['outputs'][0]['text'] == ['1\n', '2\n', '3\n']
    assert c['outputs'][1]['data'] == {'text/plain': ['one line']} and nb['metadata']['kernelspec'] == co.KERNELSPEC
    assert p.read_text() == json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + '\n'   # nbdev's and nbformat's layout


# ------------------------------------------------------------------------------------- a Jupyter save, then the cleaners
NBS = sorted((ROOT / 'nbs').glob('*.ipynb'))
LANGUAGE_INFO = {'codemirror_mode': {'name': 'ipython', 'version': 3}, 'file_extension': '.py', 'mimetype': 'text/x-python',
                 'name': 'python', 'nbconvert_exporter': 'python', 'pygments_lexer': 'ipython3', 'version': '3.11.7'}

def jupyter_save(path):
    "A no-op save in JupyterLab 4: the kernel's metadata added, and the notebook written by nbformat (text as lists of lines)."
    import nbformat
    nb = nbformat.read(path, as_version=4)
    nb.metadata['kernelspec'] = {'display_name': 'Python 3 (secondsight)', 'language': 'python', 'name': 'python3'}  # `make install`'s kernel
    nb.metadata['language_info'] = dict(LANGUAGE_INFO)
    nbformat.write(nb, path)

def check_clean(folder):
    "What `make check-clean` runs over nbs/, on a folder: tools/clean_outputs.py, then nbdev_clean."
    for p in sorted(folder.glob('*.ipynb')): co.clean(p)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(folder)], cwd=ROOT, check=True)

def test_a_jupyter_save_of_every_notebook_is_undone_by_the_cleaners(tmp_path):
    "Open a notebook of nbs/ in JupyterLab, save it unchanged: `make check-clean` must give back the bytes it gives without the save."
    cleaned, saved = tmp_path / 'cleaned', tmp_path / 'saved'
    for d in (cleaned, saved):
        d.mkdir()
        for p in NBS: shutil.copy(p, d / p.name)
    for p in saved.glob('*.ipynb'): jupyter_save(p)
    assert json.loads((saved / NBS[0].name).read_text())['metadata']['language_info']['name'] == 'python'   # the save happened
    check_clean(cleaned); check_clean(saved)
    differ = [p.name for p in NBS if (saved / p.name).read_bytes() != (cleaned / p.name).read_bytes()]
    assert len(NBS) > 5 and differ == [], f'a Jupyter save survives the cleaners in {differ}'
