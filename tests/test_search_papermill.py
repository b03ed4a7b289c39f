"""nbs/03_search.ipynb through papermill: a small demo run into a temporary folder writes the output layout, and
invalid parameters fail with clear errors before any work."""
import json
from pathlib import Path

import papermill as pm
import pytest

NB = Path(__file__).resolve().parents[1] / 'nbs' / '03_search.ipynb'


def run(tmp_path, **params):
    out_nb = tmp_path / 'out.ipynb'                 # never into nbs/ (nbdev would export it)
    return pm.execute_notebook(str(NB), str(out_nb), parameters=params, cwd=str(NB.parent), kernel_name='python3',
                               progress_bar=False)


def test_small_demo_run(tmp_path, monkeypatch):
    "No out_dir, no data set: the demo (no NSD mirror here) into runs/demo/subj01 under $SECONDSIGHT_RUNS, kept."
    monkeypatch.setenv('SECONDSIGHT_RUNS', str(tmp_path / 'runs'))
    monkeypatch.delenv('SECONDSIGHT_DATA', raising=False)
    out = tmp_path / 'runs' / 'demo' / 'subj01'
    nb = run(tmp_path, n_images=2, n_iter=2, n_samples=8, n_branches=2)
    printed = ''.join(o.get('text', '') for c in nb.cells for o in c.get('outputs', []) if o.get('output_type') == 'stream')
    assert 'data set: demo' in printed and 'results kept in' in printed
    cfg = json.loads((out / 'config.json').read_text())
    assert (cfg['n_iter'], cfg['n_samples'], cfg['n_branches'], cfg['n_images']) == (2, 8, 2, 2)
    results = sorted((out / 'images').glob('*/result.json'))
    assert len(results) == 2
    r = json.loads(results[0].read_text())
    assert r['stages'] == ['random', 'library', 'lowlevel', 'initial', 'iter_01', 'iter_02', 'final']
    for k in ('brain_corr', 'true_corr', 'pixcorr', 'ssim'): assert set(r[k]) == set(r['stages'])
    for f in ('seen.png', 'samples.npz', 'figure.png', 'final.png'): assert (results[0].parent / f).is_file()


@pytest.mark.parametrize('params, message', [
    (dict(n_branches=9, n_samples=4), "SearchConfig.n_branches=9 is invalid: expected at most n_samples=4"),
    (dict(subj=9), "SearchConfig.subj=9 is invalid"),
    (dict(dataset='nsd', data_root='/no/such/nsd'), "an existing folder holding an NSD mirror"),
    (dict(n_iter=3, n_samples=10, n_branches=2, strength_start=0.5, strength_drop=0.6), "strengths in (0, 1]"),
])
def test_invalid_parameters(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as e: run(tmp_path, out_dir=str(tmp_path / 'run'), **params)
    assert message in str(e.value)
    assert not (tmp_path / 'run').exists()          # failed before any work
