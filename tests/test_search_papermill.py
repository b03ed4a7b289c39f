"""nbs/03_search.ipynb through papermill: a small demo run into the default results folder writes the output layout,
the user's command works as typed in the repository root, and invalid parameters fail with clear errors before any work."""
import json, os, subprocess, sys
from pathlib import Path

import papermill as pm
from papermill.exceptions import strip_color
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
    assert cfg['loop'] == cfg['search_loop']['name'] == 'ours'                      # the default loop, resolved
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
    (dict(loop='fast'), "SearchConfig.loop='fast' is invalid: expected one of ('ours', 'master', 'preprint', 'boi-v2')"),
    (dict(n_sample=4), "'n_sample' is not a parameter of the run: expected one of"),   # papermill itself only warns
])
def test_invalid_parameters(tmp_path, params, message):
    with pytest.raises(pm.PapermillExecutionError) as e: run(tmp_path, out_dir=str(tmp_path / 'run'), **params)
    assert message in str(e.value)
    assert message in strip_color(e.value.traceback[0])   # the one-line message first, above the traceback (message_first)
    assert not (tmp_path / 'run').exists()          # failed before any work


def test_the_users_command_from_the_repository_root(tmp_path):
    """`papermill nbs/03_search.ipynb OUT -p subj 2 ... -p loop master` as typed in the repository root (no --cwd): the data
    set is chosen and announced on the terminal, and the results (of the named loop) are kept under runs/<dataset>/subj02
    ($SECONDSIGHT_RUNS here)."""
    root = NB.parents[1]
    env = dict(os.environ, SECONDSIGHT_RUNS=str(tmp_path / 'runs'))
    env.pop('SECONDSIGHT_DATA', None)
    cmd = [str(Path(sys.executable).parent / 'papermill'), 'nbs/03_search.ipynb', str(tmp_path / 'out.ipynb'), '-p', 'subj', '2',
           '-p', 'n_images', '1', '-p', 'n_iter', '1', '-p', 'n_samples', '4', '-p', 'n_branches', '2', '-p', 'loop', 'master']
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'data set: demo' in r.stderr and 'results kept in' in r.stderr          # said on the terminal itself
    assert len(list((tmp_path / 'runs' / 'demo' / 'subj02' / 'images').glob('*/result.json'))) == 1
    assert json.loads((tmp_path / 'runs' / 'demo' / 'subj02' / 'config.json').read_text())['loop'] == 'master'
