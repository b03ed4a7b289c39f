"""evaluate_run end to end on real 03_search runs of the demo (made here with the real runner, tiny settings):
files and tables, unfinished images, bad inputs, two subjects and their mean, and the notebook through papermill."""
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import papermill as pm
from papermill.exceptions import strip_color
import pytest

from secondsight import metrics as M
from secondsight.data import load_subject
from secondsight.demo import TrueBrain
from secondsight.run import SearchConfig, run_subject, read_run

NB = Path(__file__).resolve().parents[1] / 'nbs' / '04_metrics.ipynb'
CHEAP = dict(weights='random', convention=M.scale_nets('mindeye2', 0.5), clip_arch='ViT-S-32', progress=False)


def make_run(root, subj, n_images=3):
    cfg = SearchConfig(subj=subj, dataset='demo', out_dir=str(root), n_iter=1, n_samples=10, n_branches=2, n_images=n_images)
    run_subject(cfg, progress=False)
    return Path(root)


@pytest.fixture(scope='module')
def run1(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp('runs') / 'subj01', 1)


def copy(run, tmp_path):
    return Path(shutil.copytree(run, tmp_path / run.name))


def test_evaluate_run_writes_tables_and_figures(run1, tmp_path):
    d = copy(run1, tmp_path)
    ev = M.evaluate_run(d, 1, **CHEAP)
    stages = json.loads(next((d / 'images').glob('*/result.json')).read_text())['stages']
    t = ev.tables[1]
    assert list(t.index) == [*stages, M.SEEN] and (t['n'] == 3).all()
    assert ev.mean is None
    out = d / 'metrics'
    for f in ('per_image.csv', 'table.csv', 'table.md', 'metrics_per_stage.png', 'brain_corr_per_roi.png', 'grid.png', 'evaluation.json'):
        assert (out / f'subj01_{f}').is_file(), f
    csv = pd.read_csv(out / 'subj01_table.csv', index_col='stage')
    np.testing.assert_allclose(csv[list(M.METRICS)].values, t[list(M.METRICS)].values.astype(float), atol=1e-12, equal_nan=True)
    per = pd.read_csv(out / 'subj01_per_image.csv')
    assert len(per) == 3 * (len(stages) + 1) and {'gnet:V1', 'hybrid:nsdgeneral', 'true:higher_vis'} <= set(per.columns)
    md = (out / 'subj01_table.md').read_text()
    assert 'RANDOM WEIGHTS: NOT COMPARABLE TO PUBLISHED NUMBERS' in md and 'mindeye2@0.5x-nets' in md and 'ViT-S-32' in md
    assert 'MindEye2' in md and 'BOI-v2' in md
    settings = json.loads((out / 'subj01_evaluation.json').read_text())
    assert settings['weights'] == 'random' and settings['n_images'] == 3
    # per-image values are the mean's parts, and the ceiling equals the seen image's prediction
    assert per[per.stage == 'final']['PixCorr'].mean() == pytest.approx(t.loc['final', 'PixCorr'])
    s = load_subject(1, 'demo', progress=False)
    seen = s.images(np.asarray(settings['nsd_ids']))
    betas = s.test_betas()[[list(s.test_nsd_ids).index(i) for i in settings['nsd_ids']]]
    ceil = M.brain_correlation(betas, TrueBrain(s).predict(seen), s.roi_masks)
    assert t.loc[M.SEEN, 'true:nsdgeneral'] == pytest.approx(ceil['nsdgeneral'].mean(), abs=1e-9)


def test_pretrained_weights_missing_is_an_error(run1, tmp_path, monkeypatch):
    import torch
    d = copy(run1, tmp_path)
    monkeypatch.setenv('SECONDSIGHT_WEIGHTS', str(tmp_path / 'empty_weights'))
    old = torch.hub.get_dir(); torch.hub.set_dir(str(tmp_path / 'empty_hub'))
    try:
        with pytest.raises(M.MetricWeightsError, match="weights='random'"):
            M.evaluate_run(d, 1, progress=False, allow_download=False)
    finally:
        torch.hub.set_dir(old)
    assert not (d / 'metrics').exists()
    with pytest.raises(ValueError, match="expected 'pretrained' or 'random'"): M.evaluate_run(d, 1, weights='imagenet')


def test_unfinished_images_are_skipped_with_a_warning(run1, tmp_path):
    d = copy(run1, tmp_path)
    first = sorted((d / 'images').iterdir())[0]
    (first / 'result.json').unlink()  # as if the runner was killed while writing this image
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ev = M.evaluate_run(d, 1, metrics=('PixCorr', 'SSIM'), encoders=('true',), figures=False, progress=False, weights='random')
    assert any('unfinished' in str(x.message) for x in w)
    assert ev.settings[1]['unfinished'] == [int(first.name)] and ev.settings[1]['n_images'] == 2


def test_bad_runs_fail_clearly(run1, tmp_path):
    d = copy(run1, tmp_path)
    with pytest.raises(ValueError, match='subj=1 but the run is evaluated for subj=2'): M.evaluate_run(d, 2, **CHEAP)
    with pytest.raises(ValueError, match="Unknown encoder 'alexnet'"):
        M.evaluate_run(d, 1, encoders=('alexnet',), metrics=('PixCorr',), **dict(CHEAP, progress=False))
    folders = sorted((d / 'images').iterdir())
    (folders[1] / 'final.png').unlink()
    with pytest.raises(FileNotFoundError, match=r"\['final'\] PNGs are missing"): read_run(d)
    shutil.copy(folders[1] / 'seen.png', folders[1] / 'final.png')
    r = json.loads((folders[2] / 'result.json').read_text()); r['stages'] = r['stages'][:-1]
    (folders[2] / 'result.json').write_text(json.dumps(r))
    with pytest.raises(ValueError, match='one run folder must use one schedule'): read_run(d)
    with pytest.raises(ValueError, match='2 run folders but 1 subjects'): M.evaluate_run([d, d], [1], **CHEAP)


def test_two_subjects_and_their_mean(run1, tmp_path):
    d1 = copy(run1, tmp_path)
    d2 = make_run(tmp_path / 'subj02', 2, n_images=2)
    ev = M.evaluate_run([d1, d2], [1, 2], encoders=('true',), figures=False, **CHEAP)
    assert set(ev.tables) == {1, 2}
    t1, t2, m = ev.tables[1], ev.tables[2], ev.mean
    np.testing.assert_allclose(m.loc['final', 'PixCorr'], (t1.loc['final', 'PixCorr'] + t2.loc['final', 'PixCorr']) / 2)
    assert m.loc['final', 'n'] == 5 and m.loc['final', 'subjects'] == 2
    for f in ('mean_table.csv', 'mean_table.md'): assert (tmp_path / 'metrics' / f).is_file()
    assert (d2 / 'metrics' / 'subj02_table.md').is_file()


def test_notebook_through_papermill(run1, tmp_path):
    d = copy(run1, tmp_path)
    pm.execute_notebook(str(NB), str(tmp_path / 'out.ipynb'), parameters=dict(out_dir=str(d)), cwd=str(NB.parent),
                        kernel_name='python3', progress_bar=False)
    assert (d / 'metrics' / 'subj01_table.md').is_file()
    with pytest.raises(pm.PapermillExecutionError, match="Unknown metric convention 'mindeye'") as e:
        pm.execute_notebook(str(NB), str(tmp_path / 'bad.ipynb'), parameters=dict(out_dir=str(d), convention='mindeye'),
                            cwd=str(NB.parent), kernel_name='python3', progress_bar=False)
    assert "Unknown metric convention 'mindeye'" in strip_color(e.value.traceback[0])     # the message first


def test_notebook_without_metric_weights(run1, tmp_path, monkeypatch):
    "04 through papermill with no metric network on disk: pretrained weights requested fail with the one-line MetricWeightsError first."
    d = copy(run1, tmp_path)
    monkeypatch.setenv('SECONDSIGHT_WEIGHTS', str(tmp_path / 'no_weights')); monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'no_hub'))
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(NB), str(tmp_path / 'out.ipynb'), parameters=dict(out_dir=str(d), weights='pretrained'),
                            cwd=str(NB.parent), kernel_name='python3', progress_bar=False)
    assert e.value.ename == 'MetricWeightsError' and "weights='random'" in strip_color(e.value.traceback[0]), e.value.traceback[0]
    assert not (d / 'metrics').exists()


def test_models_dir_reaches_the_metric_networks(run1, tmp_path):
    "evaluate_run's models_dir is the weights folder the metric networks load from (here a stand-in EffNet-B1 checkpoint)."
    import torch, torchvision.models as tvm
    from secondsight.core import seeded
    d, w = copy(run1, tmp_path), tmp_path / 'weights'
    w.mkdir()
    torch.save(seeded(lambda: tvm.efficientnet_b1().state_dict(), 1), w / 'efficientnet_b1-c27df63c.pth')
    ev = M.evaluate_run(d, 1, encoders={}, metrics=('PixCorr', 'EffNet-B'), models_dir=w, allow_download=False,
                        progress=False, figures=False)
    assert ev.settings[1]['networks']['effnet'] == 'EffNet-B: torchvision efficientnet_b1 IMAGENET1K_V2'
    assert M.SEEN not in ev.tables[1].index and np.isfinite(ev.tables[1]['EffNet-B']).all()  # no encoders: no ceiling row
